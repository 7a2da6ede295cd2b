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

-- Funding (an operator's adjustments), transit (a cross-shard transfer between legs 1 and 3) and interchange
-- (what other shards owe this one) per currency. They keep no running balance: summed from their entries.
CREATE OR REPLACE FUNCTION sp_ensure_system_accounts(p_currencies text[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO accounts (id, kind, currency)
    SELECT 'sys_' || k || '_' || c, k, c
    FROM unnest(p_currencies) AS c, unnest(ARRAY['funding', 'transit', 'interchange']) AS k
    ON CONFLICT (id) DO NOTHING;
$$;
