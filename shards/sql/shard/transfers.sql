-- A transfer's first step on its source shard, decided alone: the whole transfer when both wallets live here,
-- leg 1 of the saga otherwise. sp_tick (tick.sql) applies a clear batch as a set and falls back to this one
-- transfer at a time. A repeatable file (shards/migrate.py).

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

-- True when a batch of transfers can be applied as a set (sp_tick's leg-1 section): no key stored or repeated,
-- every source (and same-shard destination) a wallet of the merchant in the transfer's currency, and every
-- source holding at least the sum of its debits in the batch (then every prefix of them fits too, in any order,
-- since credits only add). Called with the batch's wallets already locked.
CREATE OR REPLACE FUNCTION sp_open_batch_is_clear(p_merchant text[], p_key text[], p_source text[],
                                                  p_destination text[], p_amount bigint[], p_currency text[],
                                                  p_cross boolean[]) RETURNS boolean
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    RETURN NOT EXISTS (
               SELECT 1 FROM idempotency_keys k JOIN unnest(p_merchant, p_key) AS u (merchant_id, key)
               ON k.merchant_id = u.merchant_id AND k.key = u.key)
       AND (SELECT count(DISTINCT (u.merchant_id, u.key)) FROM unnest(p_merchant, p_key) AS u (merchant_id, key))
           = coalesce(array_length(p_key, 1), 0)
       AND NOT EXISTS (
               SELECT 1
               FROM unnest(p_merchant, p_source, p_destination, p_currency, p_cross)
                    AS u (merchant_id, source, destination, currency, crossed)
               LEFT JOIN accounts s ON s.id = u.source AND s.kind = 'wallet'
               LEFT JOIN accounts d ON d.id = u.destination AND d.kind = 'wallet' AND NOT u.crossed
               WHERE s.id IS NULL OR s.merchant_id IS DISTINCT FROM u.merchant_id OR s.currency <> u.currency
                  OR u.source = u.destination
                  OR (NOT u.crossed AND (d.id IS NULL OR d.merchant_id IS DISTINCT FROM u.merchant_id
                                         OR d.currency <> u.currency)))
       AND NOT EXISTS (
               SELECT 1
               FROM (SELECT u.source, sum(u.amount) AS total FROM unnest(p_source, p_amount) AS u (source, amount)
                     GROUP BY u.source) debits
               JOIN accounts a ON a.id = debits.source
               WHERE a.available < debits.total);
END $$;
