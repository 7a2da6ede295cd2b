-- The control database: merchants, their API keys, and the hash-slot -> shard map.
CREATE TABLE IF NOT EXISTS merchants (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    webhook_url    text,
    webhook_secret text NOT NULL,
    rate           integer NOT NULL CHECK (rate > 0),
    burst          integer NOT NULL CHECK (burst > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored only as SHA-256 digests; the key itself is shown once, at creation.
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash    bytea PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants (id),
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_merchant ON api_keys (merchant_id);

CREATE TABLE IF NOT EXISTS slot_map (
    slot  integer PRIMARY KEY CHECK (slot >= 0),
    shard integer NOT NULL CHECK (shard >= 0)
);
