-- Group commit: many transfers opened on one shard in one transaction and one round trip.
-- Every wallet the batch touches is locked once, up front, in id order, so concurrent batches never deadlock;
-- then each transfer is decided in turn by sp_open_transfer and gets its own outcome (one transfer's
-- insufficient funds never fails its neighbours). Arrays are parallel: element i describes transfer i.
CREATE OR REPLACE FUNCTION sp_open_transfers(
    p_merchant text[], p_key text[], p_fingerprint text[], p_id text[], p_source text[], p_destination text[],
    p_amount bigint[], p_currency text[], p_description text[], p_request_id text[], p_created bigint[],
    p_cross boolean[], p_ok_body text[], p_fail_body text[], p_event_id text[], p_event_body text[])
RETURNS TABLE (idx integer, outcome text, status integer, body text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY (p_source || p_destination) AND kind = 'wallet' ORDER BY id FOR UPDATE;
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
