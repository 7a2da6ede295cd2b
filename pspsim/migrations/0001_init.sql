-- The PSP simulator's own truth: what it really did, independent of anything shardpay stores.

-- One row per (endpoint, Idempotency-Key): the first answer, replayed to every later call with the key.
-- The row lock taken by INSERT .. ON CONFLICT DO UPDATE serialises concurrent calls with one key.
CREATE TABLE idem_keys (
    endpoint    text NOT NULL,
    key         text NOT NULL,
    fingerprint bytea NOT NULL,
    calls       integer NOT NULL DEFAULT 1,
    status      integer,
    body        bytea,
    created     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, key)
);

-- Saved cards: only what a PSP may keep in clear (last4, brand) and how the test card behaves.
CREATE TABLE payment_methods (
    id        text PRIMARY KEY,
    last4     text NOT NULL,
    brand     text NOT NULL,
    behaviour text NOT NULL,
    created   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hosted_sessions (
    id             text PRIMARY KEY,
    token          text NOT NULL UNIQUE,
    amount         bigint NOT NULL,
    currency       text NOT NULL,
    return_url     text NOT NULL,
    reference      text NOT NULL,
    payment_method text REFERENCES payment_methods (id),
    created        timestamptz NOT NULL DEFAULT now(),
    completed      timestamptz
);

-- Every charge, refund and payout. A pending one carries the outcome it will settle to at settle_at.
CREATE TABLE movements (
    id              text PRIMARY KEY,
    type            text NOT NULL CHECK (type IN ('charge', 'refund', 'payout')),
    reference       text NOT NULL,
    idempotency_key text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    status          text NOT NULL,
    failure_code    text,
    payment_method  text,
    charge          text REFERENCES movements (id),
    destination     text,
    refunded        bigint NOT NULL DEFAULT 0,
    planned_status  text,
    planned_code    text,
    settle_at       timestamptz,
    dispute_at      timestamptz,
    disputed        boolean NOT NULL DEFAULT false,
    created         timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz,
    UNIQUE (type, idempotency_key)
);
CREATE INDEX movements_settled_at ON movements (settled_at) WHERE settled_at IS NOT NULL;
CREATE INDEX movements_due ON movements (settle_at) WHERE status = 'pending';
CREATE INDEX movements_dispute_due ON movements (dispute_at) WHERE dispute_at IS NOT NULL AND NOT disputed;
CREATE INDEX movements_charge ON movements (charge) WHERE charge IS NOT NULL;

-- Webhooks, delivered from here so that a restart loses none. state: pending, delivered, dropped, dead.
CREATE TABLE events (
    seq          bigserial PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    type         text NOT NULL,
    body         bytea NOT NULL,
    copies       integer NOT NULL DEFAULT 1,
    state        text NOT NULL DEFAULT 'pending',
    due_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    last_status  integer,
    last_error   text,
    created      timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX events_due ON events (due_at) WHERE state = 'pending';

-- The fault knobs in force (one row), so that a restart of the simulator keeps a drill's faults.
CREATE TABLE faults (
    id   integer PRIMARY KEY CHECK (id = 1),
    body jsonb NOT NULL
);

-- How the settlement file of a day lies, until reset or replaced.
CREATE TABLE settlement_faults (
    day  date PRIMARY KEY,
    body jsonb NOT NULL
);
