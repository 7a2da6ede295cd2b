-- Consumers of the event stream: merchant webhook deliveries and per-minute money analytics.

-- One row per event a merchant was (or will be) told about; the primary key makes delivery idempotent.
-- 'retrying' is the only non-final state: 'delivered' and 'skipped' are never overwritten.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_id     text PRIMARY KEY,
    merchant_id  text NOT NULL,
    event_type   text NOT NULL,
    status       text NOT NULL CHECK (status IN ('retrying', 'delivered', 'skipped', 'dead')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status  integer,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_merchant ON webhook_deliveries (merchant_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_open ON webhook_deliveries (updated_at)
    WHERE status IN ('retrying', 'dead');

-- Money moved per merchant, currency and minute (of the event's creation, not of its processing).
CREATE TABLE IF NOT EXISTS analytics_minute (
    merchant_id text NOT NULL,
    currency    text NOT NULL,
    minute      timestamptz NOT NULL,
    volume      bigint NOT NULL CHECK (volume >= 0),
    count       bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (merchant_id, currency, minute)
);
CREATE INDEX IF NOT EXISTS analytics_minute_by_time ON analytics_minute (merchant_id, minute);

-- Events already counted; written in the same transaction as the analytics_minute change.
CREATE TABLE IF NOT EXISTS analytics_processed (
    event_id     text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS analytics_processed_at ON analytics_processed (processed_at);
