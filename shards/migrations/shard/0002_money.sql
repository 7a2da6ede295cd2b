-- The money-moving steps. Each is one server-side call, so each costs one round trip and one commit;
-- the application decides what to render, the database decides, under row locks, what happens.

CREATE OR REPLACE FUNCTION sp_ensure_system_accounts(p_currencies text[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO accounts (id, kind, currency)
    SELECT 'sys_' || k || '_' || c, k, c
    FROM unnest(p_currencies) AS c, unnest(ARRAY['funding', 'transit', 'interchange']) AS k
    ON CONFLICT (id) DO NOTHING;
$$;

-- A stored idempotency record for this merchant and key, judged against this request's fingerprint.
CREATE OR REPLACE FUNCTION sp_idempotent_replay(p_merchant text, p_key text, p_fingerprint text,
                                                OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    rec record;
BEGIN
    SELECT i.fingerprint, i.status, i.body INTO rec
    FROM idempotency_keys i WHERE i.merchant_id = p_merchant AND i.key = p_key;
    IF NOT FOUND THEN
        outcome := NULL;
    ELSIF rec.fingerprint <> p_fingerprint THEN
        outcome := 'key_reused';
    ELSE
        outcome := 'replay'; status := rec.status; body := rec.body;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION sp_create_wallet(
    p_merchant text, p_key text, p_fingerprint text, p_id text, p_currency text, p_reference text,
    p_metadata jsonb, p_created bigint, p_body text, p_event_id text, p_event_type text, p_event_body text,
    OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.outcome, r.status, r.body INTO outcome, status, body FROM sp_idempotent_replay(p_merchant, p_key, p_fingerprint) r;
    IF outcome IS NOT NULL THEN RETURN; END IF;
    INSERT INTO accounts (id, merchant_id, kind, currency, reference, metadata, created_at)
    VALUES (p_id, p_merchant, 'wallet', p_currency, p_reference, p_metadata, to_timestamp(p_created));
    INSERT INTO outbox (event_id, merchant_id, type, body) VALUES (p_event_id, p_merchant, p_event_type, p_event_body);
    INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
    VALUES (p_merchant, p_key, p_fingerprint, 201, p_body);
    outcome := 'applied'; status := 201; body := p_body;
END $$;

-- Open a transfer on the source wallet's shard. Same shard: the whole transfer, both wallets locked in id order.
-- Cross shard: the saga's first leg, source -> transit, leaving the transfer 'processing'.
-- Outcomes: applied | insufficient_funds | replay | key_reused | source_missing | destination_missing
-- | currency_mismatch. The last three store nothing: they are answered again, identically, on a retry.
CREATE OR REPLACE FUNCTION sp_open_transfer(
    p_merchant text, p_key text, p_fingerprint text, p_id text, p_source text, p_destination text,
    p_amount bigint, p_currency text, p_description text, p_request_id text, p_created bigint,
    p_cross boolean, p_ok_body text, p_fail_body text, p_event_id text, p_event_body text,
    OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    src accounts%ROWTYPE;
    dst accounts%ROWTYPE;
    r   accounts%ROWTYPE;
    txn bigint;
BEGIN
    SELECT x.outcome, x.status, x.body INTO outcome, status, body FROM sp_idempotent_replay(p_merchant, p_key, p_fingerprint) x;
    IF outcome IS NOT NULL THEN RETURN; END IF;

    -- Row locks always in id order, so two opposite transfers can never deadlock.
    FOR r IN SELECT * FROM accounts
             WHERE id IN (p_source, CASE WHEN p_cross THEN p_source ELSE p_destination END) AND kind = 'wallet'
             ORDER BY id FOR UPDATE
    LOOP
        IF r.id = p_source THEN src := r; END IF;
        IF r.id = p_destination THEN dst := r; END IF;
    END LOOP;

    IF src.id IS NULL OR src.merchant_id <> p_merchant THEN outcome := 'source_missing'; RETURN; END IF;
    IF NOT p_cross AND (dst.id IS NULL OR dst.merchant_id <> p_merchant) THEN
        outcome := 'destination_missing'; RETURN;
    END IF;
    IF src.currency <> p_currency OR (NOT p_cross AND dst.currency <> p_currency) THEN
        outcome := 'currency_mismatch'; RETURN;
    END IF;

    IF src.available < p_amount THEN
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
        VALUES (p_merchant, p_key, p_fingerprint, 402, p_fail_body);
        outcome := 'insufficient_funds'; status := 402; body := p_fail_body;
        RETURN;
    END IF;

    txn := nextval('ledger_txn_seq');
    UPDATE accounts SET available = available - p_amount WHERE id = p_source;
    IF p_cross THEN
        INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) VALUES
            (txn, p_source, -p_amount, p_currency, 'transfer_out', p_id),
            (txn, 'sys_transit_' || p_currency, p_amount, p_currency, 'transfer_out', p_id);
    ELSE
        UPDATE accounts SET available = available + p_amount WHERE id = p_destination;
        INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) VALUES
            (txn, p_source, -p_amount, p_currency, 'transfer', p_id),
            (txn, p_destination, p_amount, p_currency, 'transfer', p_id);
        INSERT INTO outbox (event_id, merchant_id, type, body)
        VALUES (p_event_id, p_merchant, 'transfer.succeeded', p_event_body);
    END IF;
    INSERT INTO transfers (id, merchant_id, source, destination, amount, currency, description, status,
                           saga_state, idempotency_key, request_id, created)
    VALUES (p_id, p_merchant, p_source, p_destination, p_amount, p_currency, p_description,
            CASE WHEN p_cross THEN 'processing' ELSE 'succeeded' END,
            CASE WHEN p_cross THEN 'debited' END, p_key, p_request_id, p_created);
    INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body, final)
    VALUES (p_merchant, p_key, p_fingerprint, 201, p_ok_body, NOT p_cross);
    outcome := 'applied'; status := 201; body := p_ok_body;
END $$;

-- The saga's second leg, on the destination's shard: interchange -> destination, at most once per transfer.
-- Returns 'applied', or 'aborted' if recovery fenced the transfer off first (or the wallet cannot take it).
CREATE OR REPLACE FUNCTION sp_credit_inbound(p_transfer_id text, p_merchant text, p_destination text,
                                             p_amount bigint, p_currency text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    txn bigint;
BEGIN
    INSERT INTO inbound_transfers (transfer_id, merchant_id, destination, amount, currency, status)
    VALUES (p_transfer_id, p_merchant, p_destination, p_amount, p_currency, 'applied')
    ON CONFLICT (transfer_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN (SELECT status FROM inbound_transfers WHERE transfer_id = p_transfer_id);
    END IF;
    UPDATE accounts SET available = available + p_amount
    WHERE id = p_destination AND kind = 'wallet' AND merchant_id = p_merchant AND currency = p_currency;
    IF NOT FOUND THEN
        UPDATE inbound_transfers SET status = 'aborted' WHERE transfer_id = p_transfer_id;
        RETURN 'aborted';
    END IF;
    txn := nextval('ledger_txn_seq');
    INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) VALUES
        (txn, 'sys_interchange_' || p_currency, -p_amount, p_currency, 'transfer_in', p_transfer_id),
        (txn, p_destination, p_amount, p_currency, 'transfer_in', p_transfer_id);
    RETURN 'applied';
END $$;

-- Recovery's fence: after this, the second leg can never apply. Returns what the destination shard holds.
CREATE OR REPLACE FUNCTION sp_fence_inbound(p_transfer_id text, p_merchant text, p_destination text,
                                            p_amount bigint, p_currency text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbound_transfers (transfer_id, merchant_id, destination, amount, currency, status)
    VALUES (p_transfer_id, p_merchant, p_destination, p_amount, p_currency, 'aborted')
    ON CONFLICT (transfer_id) DO NOTHING;
    RETURN (SELECT status FROM inbound_transfers WHERE transfer_id = p_transfer_id);
END $$;

-- The saga's last leg, on the source shard: settle transit into interchange ('applied'), or compensate
-- the source ('aborted'). Idempotent: a transfer no longer 'debited' is left as it is.
CREATE OR REPLACE FUNCTION sp_finish_transfer(p_transfer_id text, p_inbound text, p_body text,
                                              p_event_id text, p_event_body text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t   transfers%ROWTYPE;
    txn bigint;
BEGIN
    SELECT * INTO t FROM transfers WHERE id = p_transfer_id FOR UPDATE;
    IF NOT FOUND THEN RETURN 'missing'; END IF;
    IF t.saga_state IS DISTINCT FROM 'debited' THEN RETURN t.status; END IF;
    txn := nextval('ledger_txn_seq');
    IF p_inbound = 'applied' THEN
        INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) VALUES
            (txn, 'sys_transit_' || t.currency, -t.amount, t.currency, 'transfer_settle', t.id),
            (txn, 'sys_interchange_' || t.currency, t.amount, t.currency, 'transfer_settle', t.id);
        UPDATE transfers SET status = 'succeeded', saga_state = 'done', updated_at = now() WHERE id = t.id;
    ELSE
        UPDATE accounts SET available = available + t.amount WHERE id = t.source;
        INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref) VALUES
            (txn, 'sys_transit_' || t.currency, -t.amount, t.currency, 'transfer_reversal', t.id),
            (txn, t.source, t.amount, t.currency, 'transfer_reversal', t.id);
        UPDATE transfers SET status = 'failed', saga_state = 'compensated', updated_at = now() WHERE id = t.id;
    END IF;
    UPDATE idempotency_keys SET status = 201, body = p_body, final = true
    WHERE merchant_id = t.merchant_id AND key = t.idempotency_key;
    INSERT INTO outbox (event_id, merchant_id, type, body)
    VALUES (p_event_id, t.merchant_id,
            CASE WHEN p_inbound = 'applied' THEN 'transfer.succeeded' ELSE 'transfer.failed' END, p_event_body);
    RETURN CASE WHEN p_inbound = 'applied' THEN 'succeeded' ELSE 'failed' END;
END $$;

-- An operator's adjustment: funding -> wallet. Returns the new available balance, or NULL for no such wallet.
CREATE OR REPLACE FUNCTION sp_credit_wallet(p_wallet text, p_amount bigint, p_ref text, p_memo text,
                                            p_event_id text, p_event_body text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    w   accounts%ROWTYPE;
    txn bigint;
BEGIN
    UPDATE accounts SET available = available + p_amount WHERE id = p_wallet AND kind = 'wallet' RETURNING * INTO w;
    IF NOT FOUND THEN RETURN NULL; END IF;
    txn := nextval('ledger_txn_seq');
    INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref, memo) VALUES
        (txn, 'sys_funding_' || w.currency, -p_amount, w.currency, 'adjustment', p_ref, p_memo),
        (txn, p_wallet, p_amount, w.currency, 'adjustment', p_ref, p_memo);
    INSERT INTO outbox (event_id, merchant_id, type, body) VALUES (p_event_id, w.merchant_id, 'wallet.credited', p_event_body);
    RETURN w.available;
END $$;
