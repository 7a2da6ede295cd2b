-- The baseline for loadtest/bench.py (see transfer.sql): what one shard's same-shard transfer touches,
-- in the classic shape, in its own database (shardpay_bench_pgbench). :wallets and :balance come from psql -v.
DROP TABLE IF EXISTS accounts, entries, transfers, idempotency_keys, outbox;
CREATE TABLE accounts (
    id        bigint PRIMARY KEY,
    available bigint NOT NULL CHECK (available >= 0)
);
CREATE TABLE entries (
    id         bigserial PRIMARY KEY,
    txn_id     bigint NOT NULL,
    account_id bigint NOT NULL REFERENCES accounts (id),
    amount     bigint NOT NULL CHECK (amount <> 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_account ON entries (account_id, id DESC);
CREATE INDEX entries_txn ON entries (txn_id);
CREATE SEQUENCE IF NOT EXISTS txn_seq;
CREATE TABLE transfers (
    id          text PRIMARY KEY,
    source      bigint NOT NULL,
    destination bigint NOT NULL,
    amount      bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE idempotency_keys (
    key        text PRIMARY KEY,
    status     integer NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    body         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
INSERT INTO accounts (id, available) SELECT g, :balance FROM generate_series(1, :wallets) g;
VACUUM ANALYZE accounts;
