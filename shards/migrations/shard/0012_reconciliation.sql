-- Reconciliation against the PSP's settlement file (shardpay/services/reconcile/). Functions are in
-- shards/sql/shard/settlement.sql.

-- When each order, payout and refund became final, set once by its finishing function: "the day" a record is
-- reconciled on. updated_at cannot serve: a refund touches its order's row long after the order was final.
-- Rows already final take their updated_at, the best there is for them.
ALTER TABLE payment_orders ADD COLUMN IF NOT EXISTS final_at timestamptz;
ALTER TABLE payouts ADD COLUMN IF NOT EXISTS final_at timestamptz;
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS final_at timestamptz;
UPDATE payment_orders SET final_at = updated_at WHERE status <> 'processing' AND final_at IS NULL;
UPDATE payouts SET final_at = updated_at WHERE status <> 'processing' AND final_at IS NULL;
UPDATE refunds SET final_at = updated_at WHERE status <> 'processing' AND final_at IS NULL;
CREATE INDEX IF NOT EXISTS payment_orders_final_at ON payment_orders (final_at) WHERE final_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS payouts_final_at ON payouts (final_at) WHERE final_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS refunds_final_at ON refunds (final_at) WHERE final_at IS NOT NULL;

-- The PSP's fee on a settled line, booked once per movement (shardpay's own id and its type: a movement the PSP
-- files twice, or again under another id of its own, is charged once), with the ledger transaction that booked
-- it: psp_fees -fee, psp_clearing +fee (the PSP kept it out of what it owes).
CREATE TABLE IF NOT EXISTS settlement_fees (
    reference     text NOT NULL,
    type          text NOT NULL CHECK (type IN ('charge', 'refund', 'payout')),
    psp_reference text NOT NULL,
    amount        bigint NOT NULL CHECK (amount > 0),
    currency      text NOT NULL,
    day           date NOT NULL,
    txn_id        bigint NOT NULL,
    booked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reference, type)
);

-- A record whose settlement line came in the file of another day than the one it became final on in shardpay (the
-- two sides of midnight, a late webhook, a record the reconciliation completed the day after): that day's run
-- found it, so the run of the day it became final does not call it missing at the PSP.
CREATE TABLE IF NOT EXISTS settlement_seen (
    reference     text NOT NULL,
    type          text NOT NULL,
    day           date NOT NULL,
    psp_reference text NOT NULL,
    PRIMARY KEY (reference, type)
);
