-- Money in and out through the PSP: payments and their orders, payouts, refunds, and the work the executors do
-- at the PSP for them. Functions are in shards/sql/shard/{payments,payouts,refunds,work}.sql.

-- New system accounts per currency (sp_ensure_system_accounts makes them): what the PSP owes this shard
-- (psp_clearing: credited orders take from it, paid payouts and refunds give back), money on its way out
-- (payouts_in_flight, refunds_in_flight: debited from a wallet, not yet confirmed by the PSP) and the PSP's fees.
ALTER TABLE accounts DROP CONSTRAINT IF EXISTS accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN (
    'wallet', 'funding', 'transit', 'interchange', 'psp_clearing', 'payouts_in_flight', 'refunds_in_flight',
    'psp_fees'));

-- A payment, on its idempotency key's home shard (so it is stored with its idempotency record, in one
-- transaction). Its orders live on their destination wallets' shards (payment_orders, below), so that an order's
-- outcome and its credit are one local transaction; `orders` keeps them as created, from which any worker can
-- put an order on its shard again if the gateway stopped before it did (`materialized` says it is done).
CREATE TABLE IF NOT EXISTS payments (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL,
    payment_method  text NOT NULL,
    status          text NOT NULL CHECK (status IN ('processing', 'succeeded', 'partially_failed', 'failed')),
    orders          jsonb NOT NULL,
    order_count     integer NOT NULL CHECK (order_count BETWEEN 1 AND 50),
    materialized    boolean NOT NULL DEFAULT false,
    idempotency_key text NOT NULL,
    request_id      text NOT NULL,
    created         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_unmaterialized ON payments (created_at) WHERE NOT materialized;

-- The home shard's copy of each order's final outcome, written once per order: the payment's status follows it,
-- and the payment's final event is emitted when the last order's outcome arrives.
CREATE TABLE IF NOT EXISTS payment_results (
    order_id   text PRIMARY KEY,
    payment_id text NOT NULL,
    status     text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payment_results_payment ON payment_results (payment_id);

-- A payment order, on its destination wallet's shard. While 'processing' its amount is in the wallet's pending;
-- 'succeeded' credits the wallet from psp_clearing, 'failed' moves nothing. `reported`: its outcome has reached
-- the payment's home shard (payment_results).
CREATE TABLE IF NOT EXISTS payment_orders (
    id             text PRIMARY KEY,
    payment_id     text NOT NULL,
    merchant_id    text NOT NULL,
    destination    text NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    currency       text NOT NULL,
    reference      text,
    payment_method text NOT NULL,
    status         text NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    failure_code   text,
    psp_charge_id  text,
    refunded       bigint NOT NULL DEFAULT 0,
    reported       boolean NOT NULL DEFAULT false,
    request_id     text NOT NULL,
    created        bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_within_capture CHECK (refunded >= 0 AND refunded <= amount)
);
CREATE INDEX IF NOT EXISTS payment_orders_unreported ON payment_orders (updated_at)
    WHERE status <> 'processing' AND NOT reported;

-- A payout, on its source wallet's shard: the amount left the wallet for payouts_in_flight when it was created;
-- 'paid' moves it on to psp_clearing, 'failed' gives it back to the wallet.
CREATE TABLE IF NOT EXISTS payouts (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL,
    source          text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    destination     text NOT NULL,
    status          text NOT NULL CHECK (status IN ('processing', 'paid', 'failed')),
    failure_code    text,
    psp_payout_id   text,
    idempotency_key text NOT NULL,
    request_id      text NOT NULL,
    created         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A refund of a payment order, on the order's shard (the shard of the wallet the order credited): the amount left
-- that wallet for refunds_in_flight when it was created; 'succeeded' moves it to psp_clearing, 'failed' gives it
-- back. The order's `refunded` counts every refund not failed, so refunds never exceed what it captured.
CREATE TABLE IF NOT EXISTS refunds (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL,
    payment_order   text NOT NULL,
    wallet          text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    failure_code    text,
    psp_refund_id   text,
    idempotency_key text NOT NULL,
    request_id      text NOT NULL,
    created         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS refunds_order ON refunds (payment_order);

-- The executors' queue: one row per order, payout or refund that still needs the PSP, deleted in the transaction
-- that makes it final. Due rows are claimed with SKIP LOCKED, and a claim pushes next_attempt_at past the call's
-- deadline (a lease): a worker that dies mid-call leaves the row to be claimed again once it is due. `psp_state`
-- is what is known of the PSP's side: 'new' (never sent), 'unknown' (a call may have reached it: ask before
-- calling again), 'pending' (it said pending: a webhook or a lookup settles it). `dead_reason`: the work could
-- not finish after its retries and waits for an operator (shardpay dlq list | replay).
CREATE TABLE IF NOT EXISTS psp_work (
    id              text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('charge', 'payout', 'refund')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    psp_state       text NOT NULL DEFAULT 'new' CHECK (psp_state IN ('new', 'unknown', 'pending')),
    last_error      text,
    dead_reason     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS psp_work_due ON psp_work (next_attempt_at) WHERE dead_reason IS NULL;
CREATE INDEX IF NOT EXISTS psp_work_dead ON psp_work (updated_at) WHERE dead_reason IS NOT NULL;

-- Pending money (payment orders on their way in) can never go below zero either.
ALTER TABLE accounts DROP CONSTRAINT IF EXISTS wallet_pending_never_negative;
ALTER TABLE accounts ADD CONSTRAINT wallet_pending_never_negative CHECK (pending >= 0);
