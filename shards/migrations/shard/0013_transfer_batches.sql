-- A transfer batch, on its idempotency key's home shard: what each item became (its reference, its status, and its
-- transfer's id or its error), in order. The items themselves are transfers like any other, each idempotent by
-- its reference (their keys are 'ref:<reference>' in the merchant's key space).
CREATE TABLE IF NOT EXISTS transfer_batches (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL,
    results         jsonb NOT NULL,
    idempotency_key text NOT NULL,
    created         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
