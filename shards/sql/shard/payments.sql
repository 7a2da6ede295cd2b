-- Payments and their orders: creation on the key's home shard, orders placed on their destination wallets'
-- shards, an order's outcome and its credit in one transaction, and the payment's status following its orders.
-- A repeatable file (shards/migrate.py).

-- A payment and its idempotency record, on the key's home shard, with its payment.created event. Its orders
-- (p_orders, as created) are placed on their shards next (sp_place_orders). Outcomes as sp_idempotent_replay's,
-- or 'applied'.
CREATE OR REPLACE FUNCTION sp_create_payment(
    p_merchant text, p_key text, p_fingerprint text, p_id text, p_payment_method text, p_orders jsonb,
    p_request_id text, p_created bigint, p_body text, p_event_id text, p_event_body text,
    OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.outcome, r.status, r.body INTO outcome, status, body
    FROM sp_idempotent_replay(p_merchant, p_key, p_fingerprint) r;
    IF outcome IS NOT NULL THEN RETURN; END IF;
    INSERT INTO payments (id, merchant_id, payment_method, status, orders, order_count, idempotency_key, request_id,
                          created)
    VALUES (p_id, p_merchant, p_payment_method, 'processing', p_orders, jsonb_array_length(p_orders), p_key,
            p_request_id, p_created);
    INSERT INTO outbox (event_id, merchant_id, type, body) VALUES (p_event_id, p_merchant, 'payment.created', p_event_body);
    INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
    VALUES (p_merchant, p_key, p_fingerprint, 201, p_body);
    outcome := 'applied'; status := 201; body := p_body;
END $$;

-- Place payment orders on this shard, their destination wallets' (each order once, by id): each amount joins its
-- wallet's pending and its charge is queued for the executors. An order whose wallet is not here, not its
-- merchant's or in another currency is refused whole (the gateway checked before the payment was stored, so this
-- is a bug, and nothing is placed). Returns how many orders were new.
CREATE OR REPLACE FUNCTION sp_place_orders(p_orders jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    placed integer;
BEGIN
    PERFORM 1 FROM accounts
    WHERE id IN (SELECT o ->> 'destination' FROM jsonb_array_elements(p_orders) AS o) AND kind = 'wallet'
    ORDER BY id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM jsonb_to_recordset(p_orders) AS x (destination text, merchant_id text, currency text)
               LEFT JOIN accounts a ON a.id = x.destination AND a.kind = 'wallet'
               WHERE a.merchant_id IS DISTINCT FROM x.merchant_id OR a.currency IS DISTINCT FROM x.currency) THEN
        RAISE EXCEPTION 'a payment order names no wallet of its merchant and currency on this shard'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    WITH x AS (
        SELECT * FROM jsonb_to_recordset(p_orders) AS x (
            id text, payment_id text, merchant_id text, destination text, amount bigint, currency text,
            reference text, payment_method text, request_id text, created bigint)
    ), ins AS (
        INSERT INTO payment_orders (id, payment_id, merchant_id, destination, amount, currency, reference,
                                    payment_method, status, request_id, created)
        SELECT x.id, x.payment_id, x.merchant_id, x.destination, x.amount, x.currency, x.reference,
               x.payment_method, 'processing', x.request_id, x.created
        FROM x ORDER BY x.id
        ON CONFLICT (id) DO NOTHING
        RETURNING payment_orders.id, payment_orders.destination, payment_orders.amount
    ), pending AS (
        UPDATE accounts a SET pending = a.pending + p.total
        FROM (SELECT ins.destination, sum(ins.amount) AS total FROM ins GROUP BY ins.destination) p
        WHERE a.id = p.destination
    ), work AS (
        INSERT INTO psp_work (id, kind) SELECT ins.id, 'charge' FROM ins
    )
    SELECT count(*) INTO placed FROM ins;
    IF placed > 0 THEN
        PERFORM pg_notify('psp_work', '');  -- wakes the executors at commit (shardpay/services/wakeups.py)
    END IF;
    RETURN placed;
END $$;

-- An order's outcome, once: 'succeeded' moves its amount from the wallet's pending to available, credited from
-- psp_clearing; 'failed' only takes it out of pending. With its event and the end of its work, in one
-- transaction. Whoever comes second (the executor's answer or the PSP's webhook) changes nothing: r_applied is
-- false and r_status the order's status as it stands ('missing' if there is no such order).
CREATE OR REPLACE FUNCTION sp_finish_order(p_id text, p_status text, p_charge_id text, p_failure_code text,
                                           p_event_id text, p_event_body text)
RETURNS TABLE (r_status text, r_applied boolean, r_payment_id text)
LANGUAGE plpgsql AS $$
DECLARE
    o payment_orders%ROWTYPE;
BEGIN
    SELECT * INTO o FROM payment_orders WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, false, NULL::text;
        RETURN;
    END IF;
    IF o.status <> 'processing' THEN
        RETURN QUERY SELECT o.status, false, o.payment_id;
        RETURN;
    END IF;
    PERFORM 1 FROM accounts WHERE id = o.destination FOR UPDATE;
    IF p_status = 'succeeded' THEN
        UPDATE accounts SET pending = pending - o.amount, available = available + o.amount WHERE id = o.destination;
        PERFORM sp_post('sys_psp_clearing_' || o.currency, o.destination, o.amount, o.currency, 'payment_order', o.id);
    ELSE
        UPDATE accounts SET pending = pending - o.amount WHERE id = o.destination;
    END IF;
    UPDATE payment_orders
    SET status = p_status, psp_charge_id = coalesce(p_charge_id, psp_charge_id), failure_code = p_failure_code,
        updated_at = now(), final_at = now()
    WHERE id = p_id;
    DELETE FROM psp_work WHERE id = p_id;
    INSERT INTO outbox (event_id, merchant_id, type, body)
    VALUES (p_event_id, o.merchant_id, 'payment_order.' || p_status, p_event_body);
    RETURN QUERY SELECT p_status, true, o.payment_id;
END $$;

-- On the payment's home shard: an order's outcome, recorded once. When it is the last of the payment's orders,
-- the payment takes its final status ('succeeded', 'failed', or 'partially_failed' for a mix) and r_completed is
-- true: the caller writes the payment's event in the same transaction. r_results: every recorded outcome so far,
-- as {order id: status}.
CREATE OR REPLACE FUNCTION sp_record_result(p_order_id text, p_payment_id text, p_status text)
RETURNS TABLE (r_completed boolean, r_status text, r_results jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    p payments%ROWTYPE;
    results jsonb;
    succeeded integer;
    total integer;
BEGIN
    SELECT * INTO p FROM payments WHERE id = p_payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no payment %', p_payment_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO payment_results (order_id, payment_id, status) VALUES (p_order_id, p_payment_id, p_status)
    ON CONFLICT (order_id) DO NOTHING;
    SELECT jsonb_object_agg(r.order_id, r.status), count(*) FILTER (WHERE r.status = 'succeeded'), count(*)
    INTO results, succeeded, total
    FROM payment_results r WHERE r.payment_id = p_payment_id;
    IF p.status <> 'processing' OR total < p.order_count THEN
        RETURN QUERY SELECT false, p.status, results;
        RETURN;
    END IF;
    p.status := CASE WHEN succeeded = total THEN 'succeeded' WHEN succeeded = 0 THEN 'failed'
                     ELSE 'partially_failed' END;
    UPDATE payments SET status = p.status, updated_at = now() WHERE id = p_payment_id;
    RETURN QUERY SELECT true, p.status, results;
END $$;
