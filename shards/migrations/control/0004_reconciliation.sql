-- Reconciliation runs (shardpay reconcile): one row per run that completed, and its records that did not match.
-- A run is written in one transaction at its end, so a run that failed or read a malformed file leaves nothing.
CREATE TABLE IF NOT EXISTS reconcile_runs (
    id           bigserial PRIMARY KEY,
    day          date NOT NULL,
    trigger      text NOT NULL CHECK (trigger IN ('cli', 'daily')),
    source       text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    lines        bigint NOT NULL DEFAULT 0,
    records      bigint NOT NULL DEFAULT 0,
    counts       jsonb NOT NULL DEFAULT '{}',
    totals       jsonb NOT NULL DEFAULT '{}',
    fees         jsonb NOT NULL DEFAULT '{}',
    fixed        bigint NOT NULL DEFAULT 0,
    needs_review bigint NOT NULL DEFAULT 0,
    exit_status  smallint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS reconcile_runs_day ON reconcile_runs (day, id);
CREATE INDEX IF NOT EXISTS reconcile_runs_finished ON reconcile_runs (finished_at);

-- Every record of a run that is not plainly matched (and matched ones whose record was final on another day),
-- both sides' values side by side.
CREATE TABLE IF NOT EXISTS reconcile_items (
    run_id        bigint NOT NULL REFERENCES reconcile_runs (id),
    reference     text NOT NULL,
    type          text NOT NULL,
    category      text NOT NULL,
    fixed         boolean NOT NULL DEFAULT false,
    shard         integer NOT NULL,
    lines         integer NOT NULL,
    line_no       integer,
    psp_reference text,
    psp_amount    bigint,
    psp_currency  text,
    psp_fee       bigint,
    psp_status    text,
    settled_at    timestamptz,
    our_amount    bigint,
    our_currency  text,
    our_status    text,
    final_at      timestamptz,
    fee_booked    boolean NOT NULL DEFAULT false,
    note          text,
    PRIMARY KEY (run_id, reference, type)
);
