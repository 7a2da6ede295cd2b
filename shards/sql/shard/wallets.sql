-- Wallets: creation (with its idempotency record and event) and an operator's credit from the funding account.
-- A repeatable file (shards/migrate.py).

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

-- An operator's adjustment: funding -> wallet, idempotent by the operator's key (p_scope is the operator's
-- namespace, so an operator's key never meets a merchant's). The stored response is p_body with the wallet's
-- new available balance. Outcomes: applied | replay | key_reused | claimed (as sp_idempotent_replay) |
-- wallet_missing (nothing stored: the same answer again on a retry).
CREATE OR REPLACE FUNCTION sp_credit_wallet(
    p_scope text, p_key text, p_fingerprint text, p_wallet text, p_amount bigint, p_ref text, p_memo text,
    p_body text, p_event_id text, p_event_body text,
    OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    w   accounts%ROWTYPE;
    txn bigint;
BEGIN
    SELECT r.outcome, r.status, r.body INTO outcome, status, body FROM sp_idempotent_replay(p_scope, p_key, p_fingerprint) r;
    IF outcome IS NOT NULL THEN RETURN; END IF;
    UPDATE accounts SET available = available + p_amount WHERE id = p_wallet AND kind = 'wallet' RETURNING * INTO w;
    IF NOT FOUND THEN outcome := 'wallet_missing'; RETURN; END IF;
    txn := nextval('ledger_txn_seq');
    INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref, memo) VALUES
        (txn, 'sys_funding_' || w.currency, -p_amount, w.currency, 'adjustment', p_ref, p_memo),
        (txn, p_wallet, p_amount, w.currency, 'adjustment', p_ref, p_memo);
    INSERT INTO outbox (event_id, merchant_id, type, body) VALUES (p_event_id, w.merchant_id, 'wallet.credited', p_event_body);
    body := (p_body::jsonb || jsonb_build_object('currency', w.currency, 'available', w.available))::text;
    INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
    VALUES (p_scope, p_key, p_fingerprint, 200, body);
    outcome := 'applied'; status := 200;
END $$;
