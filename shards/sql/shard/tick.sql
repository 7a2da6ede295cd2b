-- One call per shard for every money step at once: a tick (shards/tick.py groups them, shards/ledger.py calls
-- this). Each call has a fixed cost (about 1.2 ms of backend CPU on the benchmark machine, against 100 to 200 µs
-- per transfer it carries), so everything bound for a shard while its last tick commits goes in one:
--
--   k_*  claims: an idempotency key taken on its home shard by a write whose effect lives elsewhere
--   l_*  lookups: a wallet's merchant and currency (a cross-shard transfer checks its destination first)
--   f_*  leg 3: settle transit into interchange, or refund the source
--   c_*  leg 2: credit the destination at most once per transfer
--   o_*  leg 1 or a whole same-shard transfer
--
-- and answers one row per item: (r_kind, r_idx, r_outcome, r_status, r_body), r_kind 'k', 'l', 'f', 'c' or
-- 'o' and r_idx the item's place in its kind's arrays. A claim answers r_outcome = 'claimed' (the key is this
-- request's, now or since an earlier try) or 'key_reused' (another request's); a lookup answers r_outcome =
-- the wallet's merchant and r_body = its currency (both NULL for no such wallet); legs 3 and 2 answer
-- r_outcome = their result; leg 1 answers r_outcome, r_status and r_body.
--
-- Locks, all up front and each class in id order: the transfers leg 3 finishes, then every wallet the tick
-- changes (opened sources and destinations, credited destinations, refunded sources). Every other function
-- that locks both takes transfers before accounts, so ticks, single steps and recovery never deadlock.
--
-- The sections run in the order legs 3, 2, 1: money coming back or in is on the wallets before leg 1 checks
-- the balances it debits. Each is skipped when it has no items; a single step is a tick of one item.
--
-- Plans: plan_cache_mode = force_generic_plan, because with array parameters the plan cache otherwise re-plans
-- every statement for every call (it estimates each custom plan cheaper than the generic one), and planning a
-- statement of five CTEs cost more than the batch it applied; enable_seqscan = off, because every row read
-- here is found by key, but a generic plan made while a table is new and nearly empty (a fresh shard) scans it
-- whole and keeps doing so as it grows until the next ANALYZE replaces the plan.
--
-- A repeatable file (shards/migrate.py): re-applied whenever its text changes.

CREATE OR REPLACE FUNCTION sp_tick(
    k_merchant text[], k_key text[], k_fingerprint text[],
    l_wallet text[],
    f_transfer_id text[], f_inbound text[], f_body text[], f_event_id text[], f_event_body text[],
    c_transfer_id text[], c_merchant text[], c_destination text[], c_amount bigint[], c_currency text[],
    o_merchant text[], o_key text[], o_fingerprint text[], o_id text[], o_source text[], o_destination text[],
    o_amount bigint[], o_currency text[], o_description text[], o_request_id text[], o_created bigint[],
    o_cross boolean[], o_ok_body text[], o_fail_body text[], o_event_id text[], o_event_body text[])
RETURNS TABLE (r_kind text, r_idx integer, r_outcome text, r_status integer, r_body text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    one record;
    finishing boolean := cardinality(f_transfer_id) > 0;
    crediting boolean := cardinality(c_transfer_id) > 0;
    opening boolean := cardinality(o_id) > 0;
BEGIN
    IF finishing THEN
        PERFORM 1 FROM transfers WHERE id = ANY (f_transfer_id) ORDER BY id FOR UPDATE;
    END IF;
    IF finishing OR crediting OR opening THEN
        PERFORM 1 FROM accounts
        WHERE id = ANY (o_source || o_destination || c_destination || ARRAY(
                  SELECT t.source FROM transfers t JOIN unnest(f_transfer_id, f_inbound) AS x (id, inbound)
                  ON t.id = x.id WHERE x.inbound IS DISTINCT FROM 'applied' AND t.saga_state = 'debited'))
          AND kind = 'wallet'
        ORDER BY id FOR UPDATE;
    END IF;

    IF cardinality(k_key) > 0 THEN
        -- In key order, so two ticks claiming the same keys wait on each other instead of deadlocking.
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body, claim)
        SELECT u.merchant_id, u.key, u.fingerprint, 0, '', true
        FROM unnest(k_merchant, k_key, k_fingerprint) AS u (merchant_id, key, fingerprint)
        ORDER BY u.merchant_id, u.key
        ON CONFLICT (merchant_id, key) DO NOTHING;
        -- A statement of its own, so it sees the row whichever transaction inserted it.
        RETURN QUERY
        SELECT 'k'::text, (u.ord - 1)::integer,
               CASE WHEN i.fingerprint IS DISTINCT FROM u.fingerprint THEN 'key_reused' ELSE 'claimed' END,
               NULL::integer, NULL::text
        FROM unnest(k_merchant, k_key, k_fingerprint) WITH ORDINALITY AS u (merchant_id, key, fingerprint, ord)
        LEFT JOIN idempotency_keys i ON i.merchant_id = u.merchant_id AND i.key = u.key
        ORDER BY u.ord;
    END IF;

    IF cardinality(l_wallet) > 0 THEN
        RETURN QUERY
        SELECT 'l'::text, (u.ord - 1)::integer, a.merchant_id, NULL::integer, a.currency
        FROM unnest(l_wallet) WITH ORDINALITY AS u (id, ord)
        LEFT JOIN accounts a ON a.id = u.id AND a.kind = 'wallet'
        ORDER BY u.ord;
    END IF;

    IF finishing THEN
        RETURN QUERY
        WITH x AS (
            SELECT (u.ord - 1)::integer AS i, u.id, u.inbound, u.body, u.event_id, u.event_body
            FROM unnest(f_transfer_id, f_inbound, f_body, f_event_id, f_event_body)
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
        SELECT 'f'::text, x.i, coalesce(d.status, (SELECT t.status FROM transfers t WHERE t.id = x.id), 'missing'),
               NULL::integer, NULL::text
        FROM x LEFT JOIN done d ON d.id = x.id
        ORDER BY x.i;
    END IF;

    IF crediting THEN
        WITH x AS (
            SELECT (u.ord - 1)::integer AS i, u.transfer_id, u.merchant_id, u.destination, u.amount, u.currency
            FROM unnest(c_transfer_id, c_merchant, c_destination, c_amount, c_currency)
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

        -- A statement of its own, so it sees this tick's rows and every row a conflict made it wait for
        -- (a concurrent fence from recovery: its answer, not 'applied', is what this leg reports).
        RETURN QUERY
        SELECT 'c'::text, (u.ord - 1)::integer, t.status, NULL::integer, NULL::text
        FROM unnest(c_transfer_id) WITH ORDINALITY AS u (transfer_id, ord)
        LEFT JOIN inbound_transfers t ON t.transfer_id = u.transfer_id
        ORDER BY u.ord;
    END IF;

    IF NOT opening THEN
        RETURN;
    END IF;
    IF sp_open_batch_is_clear(o_merchant, o_key, o_source, o_destination, o_amount, o_currency, o_cross) THEN
        RETURN QUERY
        WITH x AS (
            SELECT (u.ord - 1)::integer AS i, u.*
            FROM unnest(o_merchant, o_key, o_fingerprint, o_id, o_source, o_destination, o_amount, o_currency,
                        o_description, o_request_id, o_created, o_cross, o_ok_body, o_event_id, o_event_body)
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
        SELECT 'o'::text, x.i, 'applied'::text, 201, x.ok_body FROM x ORDER BY x.i;
        RETURN;
    END IF;

    FOR i IN 1 .. cardinality(o_id) LOOP
        SELECT * INTO one FROM sp_open_transfer(
            o_merchant[i], o_key[i], o_fingerprint[i], o_id[i], o_source[i], o_destination[i], o_amount[i],
            o_currency[i], o_description[i], o_request_id[i], o_created[i], o_cross[i], o_ok_body[i],
            o_fail_body[i], o_event_id[i], o_event_body[i]);
        r_kind := 'o';
        r_idx := i - 1;
        r_outcome := one.outcome;
        r_status := one.status;
        r_body := one.body;
        RETURN NEXT;
    END LOOP;
END $$;
