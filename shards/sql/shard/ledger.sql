-- The ledger's own rules, as they run now: entries are immutable, and every shard has its system accounts.
-- A repeatable file (shards/migrate.py): re-applied, with every other file of this folder, whenever its text
-- changes.

-- Entries are never updated, deleted or truncated; a correction is a new ledger transaction.
CREATE OR REPLACE FUNCTION ledger_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are immutable (% refused)', TG_OP USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER ledger_entries_no_change BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_immutable();

-- Funding (an operator's adjustments), transit (a cross-shard transfer between legs 1 and 3), interchange
-- (what other shards owe this one), psp_clearing (what the PSP owes: credited payment orders take from it, paid
-- payouts and succeeded refunds give back), payouts_in_flight and refunds_in_flight (money that left a wallet and
-- that the PSP has not confirmed yet) and psp_fees, per currency. They keep no running balance: summed from
-- their entries.
CREATE OR REPLACE FUNCTION sp_ensure_system_accounts(p_currencies text[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO accounts (id, kind, currency)
    SELECT 'sys_' || k || '_' || c, k, c
    FROM unnest(p_currencies) AS c,
         unnest(ARRAY['funding', 'transit', 'interchange', 'psp_clearing', 'payouts_in_flight', 'refunds_in_flight',
                      'psp_fees']) AS k
    ON CONFLICT (id) DO NOTHING;
$$;

-- One ledger transaction of two entries: p_amount from p_from to p_to (either may be a wallet, whose running
-- balance the caller updates under its own lock). Returns the transaction id.
CREATE OR REPLACE FUNCTION sp_post(p_from text, p_to text, p_amount bigint, p_currency text, p_kind text,
                                   p_ref text, p_memo text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    txn bigint := nextval('ledger_txn_seq');
BEGIN
    INSERT INTO ledger_entries (txn_id, account_id, amount, currency, kind, ref, memo) VALUES
        (txn, p_from, -p_amount, p_currency, p_kind, p_ref, p_memo),
        (txn, p_to, p_amount, p_currency, p_kind, p_ref, p_memo);
    RETURN txn;
END $$;
