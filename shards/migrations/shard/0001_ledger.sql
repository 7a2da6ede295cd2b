-- One shard: wallets and system accounts, the immutable ledger, transfers, idempotency records, the outbox.
-- Versioned migrations hold tables, indexes and data changes only, applied once each in order; every function
-- and trigger is a repeatable file under shards/sql/shard/, its current definition (shards/migrate.py).

CREATE TABLE IF NOT EXISTS accounts (
    id          text PRIMARY KEY,
    merchant_id text,
    kind        text NOT NULL CHECK (kind IN ('wallet', 'funding', 'transit', 'interchange')),
    currency    text NOT NULL,
    -- Running balances are kept for wallets only; system accounts are summed from their entries,
    -- so no system row is ever a lock hot spot.
    available   bigint NOT NULL DEFAULT 0,
    pending     bigint NOT NULL DEFAULT 0,
    reference   text,
    metadata    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wallet_never_negative CHECK (kind <> 'wallet' OR available >= 0),
    CONSTRAINT system_has_no_balance CHECK (kind = 'wallet' OR (available = 0 AND pending = 0))
);

CREATE SEQUENCE IF NOT EXISTS ledger_txn_seq;

CREATE TABLE IF NOT EXISTS ledger_entries (
    id         bigserial PRIMARY KEY,
    txn_id     bigint NOT NULL,
    account_id text NOT NULL REFERENCES accounts (id),
    amount     bigint NOT NULL CHECK (amount <> 0),
    currency   text NOT NULL,
    kind       text NOT NULL,
    ref        text NOT NULL,
    memo       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_entries_account ON ledger_entries (account_id, id DESC);
CREATE INDEX IF NOT EXISTS ledger_entries_txn ON ledger_entries (txn_id);

-- Entries are immutable: the triggers that refuse UPDATE, DELETE and TRUNCATE are in shards/sql/shard/ledger.sql.

CREATE TABLE IF NOT EXISTS transfers (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL,
    source          text NOT NULL,
    destination     text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    description     text,
    status          text NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    -- Cross-shard saga state, on the source shard: debited -> done | compensated.
    saga_state      text CHECK (saga_state IN ('debited', 'done', 'compensated')),
    idempotency_key text NOT NULL,
    request_id      text NOT NULL,
    created         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transfers_saga_open ON transfers (created_at) WHERE saga_state = 'debited';

-- The destination shard's half of a cross-shard transfer: one row per transfer, so the credit is applied
-- at most once, and a recovery worker can fence a transfer off ('aborted') before it compensates.
CREATE TABLE IF NOT EXISTS inbound_transfers (
    transfer_id text PRIMARY KEY,
    merchant_id text NOT NULL,
    destination text NOT NULL,
    amount      bigint NOT NULL,
    currency    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('applied', 'aborted')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The durable idempotency record, written in the same transaction as the effect it stands for.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    merchant_id text NOT NULL,
    key         text NOT NULL,
    fingerprint text NOT NULL,
    status      integer NOT NULL,
    body        text NOT NULL,
    final       boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE IF NOT EXISTS outbox (
    seq          bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    merchant_id  text NOT NULL,
    type         text NOT NULL,
    body         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
