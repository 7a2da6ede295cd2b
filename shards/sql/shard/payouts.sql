-- Payouts: a wallet's money to a bank account through the PSP. A repeatable file (shards/migrate.py).

-- A payout leaves the wallet at once, under its row lock (never an overdraft, however many run at once): the amount
-- goes to payouts_in_flight, the PSP's work is queued, with the payout.created event and the idempotency record.
-- Outcomes: applied | insufficient_funds (402, stored) | source_missing | currency_mismatch (nothing stored) |
-- those of sp_idempotent_replay.
CREATE OR REPLACE FUNCTION sp_create_payout(
    p_merchant text, p_key text, p_fingerprint text, p_id text, p_source text, p_amount bigint, p_currency text,
    p_destination text, p_request_id text, p_created bigint, p_body text, p_fail_body text, p_event_id text,
    p_event_body text, OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    w accounts%ROWTYPE;
BEGIN
    SELECT r.outcome, r.status, r.body INTO outcome, status, body
    FROM sp_idempotent_replay(p_merchant, p_key, p_fingerprint) r;
    IF outcome IS NOT NULL THEN RETURN; END IF;
    SELECT * INTO w FROM accounts WHERE id = p_source AND kind = 'wallet' FOR UPDATE;
    IF NOT FOUND OR w.merchant_id <> p_merchant THEN outcome := 'source_missing'; RETURN; END IF;
    IF w.currency <> p_currency THEN outcome := 'currency_mismatch'; RETURN; END IF;
    IF w.available < p_amount THEN
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
        VALUES (p_merchant, p_key, p_fingerprint, 402, p_fail_body);
        outcome := 'insufficient_funds'; status := 402; body := p_fail_body;
        RETURN;
    END IF;
    UPDATE accounts SET available = available - p_amount WHERE id = p_source;
    PERFORM sp_post(p_source, 'sys_payouts_in_flight_' || p_currency, p_amount, p_currency, 'payout', p_id);
    INSERT INTO payouts (id, merchant_id, source, amount, currency, destination, status, idempotency_key,
                         request_id, created)
    VALUES (p_id, p_merchant, p_source, p_amount, p_currency, p_destination, 'processing', p_key, p_request_id,
            p_created);
    INSERT INTO psp_work (id, kind) VALUES (p_id, 'payout');
    PERFORM pg_notify('psp_work', '');  -- wakes the executors at commit (shardpay/services/wakeups.py)
    INSERT INTO outbox (event_id, merchant_id, type, body) VALUES (p_event_id, p_merchant, 'payout.created', p_event_body);
    INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
    VALUES (p_merchant, p_key, p_fingerprint, 201, p_body);
    outcome := 'applied'; status := 201; body := p_body;
END $$;

-- A payout's outcome, once: 'paid' moves the amount from payouts_in_flight to psp_clearing (the PSP paid it out of
-- what it owes); 'failed' gives it back to the wallet, a compensating ledger transaction. With its event and the
-- end of its work. A second outcome changes nothing (r_applied false).
CREATE OR REPLACE FUNCTION sp_finish_payout(p_id text, p_status text, p_psp_id text, p_failure_code text,
                                            p_event_id text, p_event_body text)
RETURNS TABLE (r_status text, r_applied boolean)
LANGUAGE plpgsql AS $$
DECLARE
    p payouts%ROWTYPE;
BEGIN
    SELECT * INTO p FROM payouts WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, false;
        RETURN;
    END IF;
    IF p.status <> 'processing' THEN
        RETURN QUERY SELECT p.status, false;
        RETURN;
    END IF;
    IF p_status = 'paid' THEN
        PERFORM sp_post('sys_payouts_in_flight_' || p.currency, 'sys_psp_clearing_' || p.currency, p.amount,
                        p.currency, 'payout_paid', p.id);
    ELSE
        UPDATE accounts SET available = available + p.amount WHERE id = p.source AND kind = 'wallet';
        PERFORM sp_post('sys_payouts_in_flight_' || p.currency, p.source, p.amount, p.currency, 'payout_return', p.id);
    END IF;
    UPDATE payouts
    SET status = p_status, psp_payout_id = coalesce(p_psp_id, psp_payout_id), failure_code = p_failure_code,
        updated_at = now(), final_at = now()
    WHERE id = p_id;
    DELETE FROM psp_work WHERE id = p_id;
    INSERT INTO outbox (event_id, merchant_id, type, body)
    VALUES (p_event_id, p.merchant_id, 'payout.' || p_status, p_event_body);
    RETURN QUERY SELECT p_status, true;
END $$;
