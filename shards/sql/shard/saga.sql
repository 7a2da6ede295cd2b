-- The saga's fence, used by recovery alone; legs 2 and 3 are sections of sp_tick (tick.sql).
-- A repeatable file (shards/migrate.py).

-- Recovery's fence: after this, the second leg can never apply. Returns what the destination shard holds.
CREATE OR REPLACE FUNCTION sp_fence_inbound(p_transfer_id text, p_merchant text, p_destination text,
                                            p_amount bigint, p_currency text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbound_transfers (transfer_id, merchant_id, destination, amount, currency, status)
    VALUES (p_transfer_id, p_merchant, p_destination, p_amount, p_currency, 'aborted')
    ON CONFLICT (transfer_id) DO NOTHING;
    RETURN (SELECT status FROM inbound_transfers WHERE transfer_id = p_transfer_id);
END $$;
