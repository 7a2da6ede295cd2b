-- Set-based batches: each batch function applies its whole batch in a handful of statements instead of a
-- PL/pgSQL call with six to nine statements per transfer (measured with make bench, and per call with backend CPU from /proc).
-- Locks are taken as before: every row a batch will change, once, up front, in id order.
--
-- Each batch function runs with plan_cache_mode = force_generic_plan: with array parameters the plan cache
-- otherwise re-plans these statements for every call (it estimates each custom plan cheaper than the generic
-- one), and planning a statement of five CTEs cost more than the batch it applied. And with enable_seqscan =
-- off: every row these functions read they find by key, but a generic plan made while a table is new and
-- nearly empty (a fresh shard) joins it by scanning it whole, and keeps doing so as it grows until the next
-- ANALYZE replaces the plan.

-- Leg 2 for many transfers on their destination shard: at most one inbound row per transfer; 'applied' credits
-- the wallet (interchange -> destination), 'aborted' if the wallet cannot take it (gone, other merchant or
-- currency) or recovery fenced the transfer off first. A transfer already recorded gets its recorded status.
CREATE OR REPLACE FUNCTION sp_credit_inbounds(p_transfer_id text[], p_merchant text[], p_destination text[],
                                              p_amount bigint[], p_currency text[])
RETURNS TABLE (idx integer, result text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY (p_destination) AND kind = 'wallet' ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH x AS (
        SELECT (u.ord - 1)::integer AS i, u.transfer_id, u.merchant_id, u.destination, u.amount, u.currency
        FROM unnest(p_transfer_id, p_merchant, p_destination, p_amount, p_currency)
             WITH ORDINALITY AS u (transfer_id, merchant_id, destination, amount, currency, ord)
    ), ins AS (
        INSERT INTO inbound_transfers (transfer_id, merchant_id, destination, amount, currency, status)
        SELECT x.transfer_id, x.merchant_id, x.destination, x.amount, x.currency,
               CASE WHEN EXISTS (SELECT 1 FROM accounts a
                                 WHERE a.id = x.destination AND a.kind = 'wallet'
                                   AND a.merchant_id = x.merchant_id AND a.currency = x.currency)
                    THEN 'applied' ELSE 'aborted' END
        FROM x ORDER BY x.i
        ON CONFLICT (transfer_id) DO NOTHING
        RETURNING inbound_transfers.transfer_id, inbound_transfers.destination, inbound_transfers.amount,
                  inbound_transfers.currency, inbound_transfers.status
    ), applied AS MATERIALIZED (
        SELECT nextval('ledger_txn_seq') AS txn, ins.* FROM ins WHERE ins.status = 'applied'
    ), credited AS (
        UPDATE accounts a SET available = a.available + c.total
        FROM (SELECT p.destination, sum(p.amount) AS total FROM applied p GROUP BY p.destination) c
        WHERE a.id = c.destination
    ), entries AS (
        INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref)
        SELECT p.txn, e.account_id, e.amount, p.currency, 'transfer_in', p.transfer_id
        FROM applied p
        CROSS JOIN LATERAL (VALUES ('sys_interchange_' || p.currency, -p.amount),
                                   (p.destination, p.amount)) AS e (account_id, amount)
    )
    SELECT x.i, coalesce(ins.status, (SELECT t.status FROM inbound_transfers t WHERE t.transfer_id = x.transfer_id))
    FROM x LEFT JOIN ins ON ins.transfer_id = x.transfer_id
    ORDER BY x.i;
END $$;

CREATE OR REPLACE FUNCTION sp_credit_inbound(p_transfer_id text, p_merchant text, p_destination text,
                                             p_amount bigint, p_currency text) RETURNS text
LANGUAGE sql AS $$
    SELECT result FROM sp_credit_inbounds(ARRAY[p_transfer_id], ARRAY[p_merchant], ARRAY[p_destination],
                                          ARRAY[p_amount], ARRAY[p_currency]);
$$;

-- Leg 3 for many transfers on their source shard: settle transit into interchange ('applied'), or give the
-- money back to the source (anything else). A transfer no longer 'debited' is left as it is and answers its
-- status; an unknown one answers 'missing'. Locks: the transfers, then the sources a compensation credits.
CREATE OR REPLACE FUNCTION sp_finish_transfers(p_transfer_id text[], p_inbound text[], p_body text[],
                                               p_event_id text[], p_event_body text[])
RETURNS TABLE (idx integer, result text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    PERFORM 1 FROM transfers WHERE id = ANY (p_transfer_id) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM accounts
    WHERE id IN (SELECT t.source FROM transfers t JOIN unnest(p_transfer_id, p_inbound) AS x (id, inbound)
                 ON t.id = x.id WHERE x.inbound <> 'applied' AND t.saga_state = 'debited')
    ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH x AS (
        SELECT (u.ord - 1)::integer AS i, u.id, u.inbound, u.body, u.event_id, u.event_body
        FROM unnest(p_transfer_id, p_inbound, p_body, p_event_id, p_event_body)
             WITH ORDINALITY AS u (id, inbound, body, event_id, event_body, ord)
    ), done AS (
        UPDATE transfers t
        SET status = CASE WHEN x.inbound = 'applied' THEN 'succeeded' ELSE 'failed' END,
            saga_state = CASE WHEN x.inbound = 'applied' THEN 'done' ELSE 'compensated' END,
            updated_at = now()
        FROM x
        WHERE t.id = x.id AND t.saga_state = 'debited'
        RETURNING x.i, t.id, t.merchant_id, t.source, t.amount, t.currency, t.idempotency_key, t.status,
                  x.inbound = 'applied' AS settled, x.body, x.event_id, x.event_body
    ), numbered AS MATERIALIZED (
        SELECT nextval('ledger_txn_seq') AS txn, done.* FROM done
    ), entries AS (
        INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref)
        SELECT n.txn, e.account_id, e.amount, n.currency,
               CASE WHEN n.settled THEN 'transfer_settle' ELSE 'transfer_reversal' END, n.id
        FROM numbered n
        CROSS JOIN LATERAL (VALUES ('sys_transit_' || n.currency, -n.amount),
                                   (CASE WHEN n.settled THEN 'sys_interchange_' || n.currency ELSE n.source END,
                                    n.amount)) AS e (account_id, amount)
    ), refunds AS (
        UPDATE accounts a SET available = a.available + r.total
        FROM (SELECT d.source, sum(d.amount) AS total FROM done d WHERE NOT d.settled GROUP BY d.source) r
        WHERE a.id = r.source
    ), keys AS (
        UPDATE idempotency_keys k SET status = 201, body = d.body, final = true
        FROM done d
        WHERE k.merchant_id = d.merchant_id AND k.key = d.idempotency_key
    ), events AS (
        INSERT INTO outbox (event_id, merchant_id, type, body)
        SELECT d.event_id, d.merchant_id, 'transfer.' || d.status, d.event_body FROM done d ORDER BY d.i
    )
    SELECT x.i, coalesce(d.status, (SELECT t.status FROM transfers t WHERE t.id = x.id), 'missing')
    FROM x LEFT JOIN done d ON d.id = x.id
    ORDER BY x.i;
END $$;

CREATE OR REPLACE FUNCTION sp_finish_transfer(p_transfer_id text, p_inbound text, p_body text,
                                              p_event_id text, p_event_body text) RETURNS text
LANGUAGE sql AS $$
    SELECT result FROM sp_finish_transfers(ARRAY[p_transfer_id], ARRAY[p_inbound], ARRAY[p_body],
                                           ARRAY[p_event_id], ARRAY[p_event_body]);
$$;

-- Leg 1 (or a whole same-shard transfer) for many transfers. When every transfer of the batch is fresh and
-- valid and every source can pay all its debits in the batch, no transfer's outcome depends on its
-- neighbours: the batch is applied in one statement. Otherwise (a replay, a reused or repeated key, a missing
-- wallet, a currency mismatch, or a source that cannot pay everything) each transfer is decided in turn by
-- sp_open_transfer, as before, so one insufficient-funds transfer never fails its neighbours.
CREATE OR REPLACE FUNCTION sp_open_transfers(
    p_merchant text[], p_key text[], p_fingerprint text[], p_id text[], p_source text[], p_destination text[],
    p_amount bigint[], p_currency text[], p_description text[], p_request_id text[], p_created bigint[],
    p_cross boolean[], p_ok_body text[], p_fail_body text[], p_event_id text[], p_event_body text[])
RETURNS TABLE (idx integer, outcome text, status integer, body text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    r record;
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY (p_source || p_destination) AND kind = 'wallet' ORDER BY id FOR UPDATE;

    IF sp_open_batch_is_clear(p_merchant, p_key, p_source, p_destination, p_amount, p_currency, p_cross) THEN
        RETURN QUERY
        WITH x AS (
            SELECT (u.ord - 1)::integer AS i, u.*
            FROM unnest(p_merchant, p_key, p_fingerprint, p_id, p_source, p_destination, p_amount, p_currency,
                        p_description, p_request_id, p_created, p_cross, p_ok_body, p_event_id, p_event_body)
                 WITH ORDINALITY AS u (merchant_id, key, fingerprint, id, source, destination, amount, currency,
                                       description, request_id, created, crossed, ok_body, event_id, event_body,
                                       ord)
        ), numbered AS MATERIALIZED (
            SELECT nextval('ledger_txn_seq') AS txn, x.* FROM x ORDER BY x.i
        ), moved AS (
            UPDATE accounts a SET available = a.available + m.net
            FROM (SELECT z.id, sum(z.delta) AS net
                  FROM (SELECT x.source AS id, -x.amount AS delta FROM x
                        UNION ALL
                        SELECT x.destination, x.amount FROM x WHERE NOT x.crossed) z
                  GROUP BY z.id) m
            WHERE a.id = m.id
        ), entries AS (
            INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref)
            SELECT n.txn, e.account_id, e.amount, n.currency,
                   CASE WHEN n.crossed THEN 'transfer_out' ELSE 'transfer' END, n.id
            FROM numbered n
            CROSS JOIN LATERAL (VALUES (n.source, -n.amount),
                                       (CASE WHEN n.crossed THEN 'sys_transit_' || n.currency ELSE n.destination END,
                                        n.amount)) AS e (account_id, amount)
        ), events AS (
            INSERT INTO outbox (event_id, merchant_id, type, body)
            SELECT x.event_id, x.merchant_id, 'transfer.succeeded', x.event_body FROM x WHERE NOT x.crossed
            ORDER BY x.i
        ), opened AS (
            INSERT INTO transfers (id, merchant_id, source, destination, amount, currency, description, status,
                                   saga_state, idempotency_key, request_id, created)
            SELECT x.id, x.merchant_id, x.source, x.destination, x.amount, x.currency, x.description,
                   CASE WHEN x.crossed THEN 'processing' ELSE 'succeeded' END,
                   CASE WHEN x.crossed THEN 'debited' END, x.key, x.request_id, x.created
            FROM x ORDER BY x.i
        ), keys AS (
            INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body, final)
            SELECT x.merchant_id, x.key, x.fingerprint, 201, x.ok_body, NOT x.crossed FROM x ORDER BY x.i
        )
        SELECT x.i, 'applied'::text, 201, x.ok_body FROM x ORDER BY x.i;
        RETURN;
    END IF;

    FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
        SELECT * INTO r FROM sp_open_transfer(
            p_merchant[i], p_key[i], p_fingerprint[i], p_id[i], p_source[i], p_destination[i], p_amount[i],
            p_currency[i], p_description[i], p_request_id[i], p_created[i], p_cross[i], p_ok_body[i],
            p_fail_body[i], p_event_id[i], p_event_body[i]);
        idx := i - 1;
        outcome := r.outcome;
        status := r.status;
        body := r.body;
        RETURN NEXT;
    END LOOP;
END $$;

-- True when a batch of transfers can be applied as a set (see sp_open_transfers): no key stored or repeated,
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
