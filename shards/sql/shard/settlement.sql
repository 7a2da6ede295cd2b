-- The PSP's fees from its settlement file (shardpay reconcile). A repeatable file (shards/migrate.py).

-- Book the fee of each given settled line, once per movement (reference, type): a settlement_fees row and its
-- ledger transaction, psp_fees -fee and psp_clearing +fee (the PSP kept the fee out of what it owes). Lines
-- already booked (by an earlier run, or by a run racing this one: the primary key decides) and zero fees are
-- skipped. Rows are taken in reference order, so two bookers of overlapping lines never deadlock. Returns the
-- lines this call booked.
CREATE OR REPLACE FUNCTION sp_book_fees(p_reference text[], p_type text[], p_psp_reference text[], p_fee bigint[],
                                        p_currency text[], p_day date)
RETURNS TABLE (r_reference text, r_type text, r_fee bigint, r_currency text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sp_ensure_system_accounts(ARRAY(SELECT DISTINCT c FROM unnest(p_currency) AS c));
    RETURN QUERY
    WITH x AS (
        SELECT DISTINCT ON (l.reference, l.type) l.*
        FROM unnest(p_reference, p_type, p_psp_reference, p_fee, p_currency)
             AS l (reference, type, psp_reference, fee, currency)
        WHERE l.fee > 0
        ORDER BY l.reference, l.type
    ), booked AS MATERIALIZED (
        INSERT INTO settlement_fees (reference, type, psp_reference, amount, currency, day, txn_id)
        SELECT x.reference, x.type, x.psp_reference, x.fee, x.currency, p_day, nextval('ledger_txn_seq')
        FROM x ORDER BY x.reference, x.type
        ON CONFLICT (reference, type) DO NOTHING
        RETURNING settlement_fees.reference, settlement_fees.type, settlement_fees.amount,
                  settlement_fees.currency, settlement_fees.psp_reference, settlement_fees.txn_id
    ), entries AS (
        INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref, memo)
        SELECT b.txn_id, side.account, side.amount, b.currency, 'psp_fee', b.reference, b.psp_reference
        FROM booked b
        CROSS JOIN LATERAL (VALUES ('sys_psp_fees_' || b.currency, -b.amount),
                                   ('sys_psp_clearing_' || b.currency, b.amount)) AS side (account, amount)
    )
    SELECT b.reference, b.type, b.amount, b.currency FROM booked b;
END $$;
