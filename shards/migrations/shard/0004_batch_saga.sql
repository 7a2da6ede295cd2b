-- Group commit for the saga's second and third legs, like sp_open_transfers for the first.

-- Leg 2 for many transfers on their destination shard: destination wallets locked once, in id order.
CREATE OR REPLACE FUNCTION sp_credit_inbounds(p_transfer_id text[], p_merchant text[], p_destination text[],
                                              p_amount bigint[], p_currency text[])
RETURNS TABLE (idx integer, result text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY (p_destination) AND kind = 'wallet' ORDER BY id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_transfer_id, 1), 0) LOOP
        idx := i - 1;
        result := sp_credit_inbound(p_transfer_id[i], p_merchant[i], p_destination[i], p_amount[i], p_currency[i]);
        RETURN NEXT;
    END LOOP;
END $$;

-- Leg 3 for many transfers on their source shard. Locks: the transfers first, then the source wallets that a
-- compensation will credit, each set in id order, the same order a single sp_finish_transfer takes them.
CREATE OR REPLACE FUNCTION sp_finish_transfers(p_transfer_id text[], p_inbound text[], p_body text[],
                                               p_event_id text[], p_event_body text[])
RETURNS TABLE (idx integer, result text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM transfers WHERE id = ANY (p_transfer_id) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM accounts
    WHERE id IN (SELECT t.source FROM transfers t JOIN unnest(p_transfer_id, p_inbound) AS x (id, inbound)
                 ON t.id = x.id WHERE x.inbound <> 'applied')
    ORDER BY id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_transfer_id, 1), 0) LOOP
        idx := i - 1;
        result := sp_finish_transfer(p_transfer_id[i], p_inbound[i], p_body[i], p_event_id[i], p_event_body[i]);
        RETURN NEXT;
    END LOOP;
END $$;
