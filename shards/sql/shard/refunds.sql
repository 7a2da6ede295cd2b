-- Refunds of payment orders, on the order's shard (the shard of the wallet it credited). A repeatable file
-- (shards/migrate.py).

-- A refund of part or all of a succeeded order (p_amount NULL: all that is left of it). Under the order's row lock,
-- so that refunds, however many at once, never exceed what it captured: the amount leaves the wallet the order
-- credited for refunds_in_flight (402 if the wallet no longer holds it), joins the order's `refunded`, and the
-- PSP's work is queued, with the refund.created event and the idempotency record. p_body and p_event_body are
-- rendered without the amount when it was not given; it is filled in here ($.amount and $.data.object.amount).
-- Outcomes: applied | insufficient_funds (402, stored) | order_missing | order_not_refundable (not succeeded, or
-- nothing left) | amount_too_large (more than is left) | those of sp_idempotent_replay. r_amount: the amount.
CREATE OR REPLACE FUNCTION sp_create_refund(
    p_merchant text, p_key text, p_fingerprint text, p_id text, p_order text, p_amount bigint, p_request_id text,
    p_created bigint, p_body text, p_fail_body text, p_event_id text, p_event_body text,
    OUT outcome text, OUT status integer, OUT body text, OUT r_amount bigint)
LANGUAGE plpgsql AS $$
DECLARE
    o payment_orders%ROWTYPE;
    w accounts%ROWTYPE;
BEGIN
    SELECT r.outcome, r.status, r.body INTO outcome, status, body
    FROM sp_idempotent_replay(p_merchant, p_key, p_fingerprint) r;
    IF outcome IS NOT NULL THEN RETURN; END IF;
    SELECT * INTO o FROM payment_orders WHERE id = p_order FOR UPDATE;
    IF NOT FOUND OR o.merchant_id <> p_merchant THEN outcome := 'order_missing'; RETURN; END IF;
    r_amount := coalesce(p_amount, o.amount - o.refunded);
    IF o.status <> 'succeeded' OR o.refunded >= o.amount THEN outcome := 'order_not_refundable'; RETURN; END IF;
    IF r_amount > o.amount - o.refunded THEN outcome := 'amount_too_large'; RETURN; END IF;
    SELECT * INTO w FROM accounts WHERE id = o.destination AND kind = 'wallet' FOR UPDATE;
    IF w.available < r_amount THEN
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
        VALUES (p_merchant, p_key, p_fingerprint, 402, p_fail_body);
        outcome := 'insufficient_funds'; status := 402; body := p_fail_body;
        RETURN;
    END IF;
    UPDATE accounts SET available = available - r_amount WHERE id = o.destination;
    PERFORM sp_post(o.destination, 'sys_refunds_in_flight_' || o.currency, r_amount, o.currency, 'refund', p_id);
    UPDATE payment_orders SET refunded = refunded + r_amount, updated_at = now() WHERE id = p_order;
    INSERT INTO refunds (id, merchant_id, payment_order, wallet, amount, currency, status, idempotency_key,
                         request_id, created)
    VALUES (p_id, p_merchant, p_order, o.destination, r_amount, o.currency, 'processing', p_key, p_request_id,
            p_created);
    INSERT INTO psp_work (id, kind) VALUES (p_id, 'refund');
    PERFORM pg_notify('psp_work', '');  -- wakes the executors at commit (shardpay/services/wakeups.py)
    body := jsonb_set(jsonb_set(p_body::jsonb, '{amount}', to_jsonb(r_amount)), '{currency}', to_jsonb(o.currency))::text;
    INSERT INTO outbox (event_id, merchant_id, type, body)
    VALUES (p_event_id, p_merchant, 'refund.created',
            jsonb_set(p_event_body::jsonb, '{data,object}', body::jsonb)::text);
    INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
    VALUES (p_merchant, p_key, p_fingerprint, 201, body);
    outcome := 'applied'; status := 201;
END $$;

-- A refund's outcome, once: 'succeeded' moves the amount from refunds_in_flight to psp_clearing (the PSP sent it
-- back to the card from what it owes); 'failed' gives it back to the wallet and takes it out of the order's
-- `refunded`. With its event and the end of its work. A second outcome changes nothing (r_applied false).
CREATE OR REPLACE FUNCTION sp_finish_refund(p_id text, p_status text, p_psp_id text, p_failure_code text,
                                            p_event_id text, p_event_body text)
RETURNS TABLE (r_status text, r_applied boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r refunds%ROWTYPE;
BEGIN
    -- The order's row first, as sp_create_refund locks it: refunds of one order never deadlock each other.
    PERFORM 1 FROM payment_orders WHERE id = (SELECT payment_order FROM refunds WHERE id = p_id) FOR UPDATE;
    SELECT * INTO r FROM refunds WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, false;
        RETURN;
    END IF;
    IF r.status <> 'processing' THEN
        RETURN QUERY SELECT r.status, false;
        RETURN;
    END IF;
    IF p_status = 'succeeded' THEN
        PERFORM sp_post('sys_refunds_in_flight_' || r.currency, 'sys_psp_clearing_' || r.currency, r.amount,
                        r.currency, 'refund_sent', r.id);
    ELSE
        UPDATE accounts SET available = available + r.amount WHERE id = r.wallet AND kind = 'wallet';
        PERFORM sp_post('sys_refunds_in_flight_' || r.currency, r.wallet, r.amount, r.currency, 'refund_return', r.id);
        UPDATE payment_orders SET refunded = refunded - r.amount, updated_at = now() WHERE id = r.payment_order;
    END IF;
    UPDATE refunds
    SET status = p_status, psp_refund_id = coalesce(p_psp_id, psp_refund_id), failure_code = p_failure_code,
        updated_at = now(), final_at = now()
    WHERE id = p_id;
    DELETE FROM psp_work WHERE id = p_id;
    INSERT INTO outbox (event_id, merchant_id, type, body)
    VALUES (p_event_id, r.merchant_id, 'refund.' || p_status, p_event_body);
    RETURN QUERY SELECT p_status, true;
END $$;
