-- Two fixes to 0006's set-based saga legs, found by test_abort_racing_settle_ends_one_way_or_the_other_never_both
-- failing once in a full run (a wallet 50 short of its ledger entries).
--
-- 1. sp_credit_inbounds answered NULL for a transfer whose inbound row a concurrent fence committed while this
--    batch's INSERT waited on it: ON CONFLICT DO NOTHING skipped the row, and the fallback read of the stored
--    status ran in the same statement, whose snapshot predates the fence's commit. The statuses are now read
--    by a statement of their own, which sees this batch's rows and every row it waited for.
-- 2. sp_finish_transfers, given that NULL, wrote the reversal entries but gave no refund ("NOT NULL" is not
--    true). Anything but 'applied' now compensates in full, as 0002's sp_finish_transfer did, locks included.

CREATE OR REPLACE FUNCTION sp_credit_inbounds(p_transfer_id text[], p_merchant text[], p_destination text[],
                                              p_amount bigint[], p_currency text[])
RETURNS TABLE (idx integer, result text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY (p_destination) AND kind = 'wallet' ORDER BY id FOR UPDATE;
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
    )
    INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref)
    SELECT p.txn, e.account_id, e.amount, p.currency, 'transfer_in', p.transfer_id
    FROM applied p
    CROSS JOIN LATERAL (VALUES ('sys_interchange_' || p.currency, -p.amount),
                               (p.destination, p.amount)) AS e (account_id, amount);

    RETURN QUERY
    SELECT (u.ord - 1)::integer, t.status
    FROM unnest(p_transfer_id) WITH ORDINALITY AS u (transfer_id, ord)
    LEFT JOIN inbound_transfers t ON t.transfer_id = u.transfer_id
    ORDER BY u.ord;
END $$;

CREATE OR REPLACE FUNCTION sp_finish_transfers(p_transfer_id text[], p_inbound text[], p_body text[],
                                               p_event_id text[], p_event_body text[])
RETURNS TABLE (idx integer, result text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    PERFORM 1 FROM transfers WHERE id = ANY (p_transfer_id) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM accounts
    WHERE id IN (SELECT t.source FROM transfers t JOIN unnest(p_transfer_id, p_inbound) AS x (id, inbound)
                 ON t.id = x.id WHERE x.inbound IS DISTINCT FROM 'applied' AND t.saga_state = 'debited')
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
                  x.inbound IS NOT DISTINCT FROM 'applied' AS settled, x.body, x.event_id, x.event_body
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
