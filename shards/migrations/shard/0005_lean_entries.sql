-- Leaner ledger writes on the hot path, measured with make bench (every transfer writes 2-6 entries).
--
-- The foreign key from ledger_entries to accounts is dropped. Its check took a FOR KEY SHARE lock on the
-- account row for every entry, and every cross-shard leg writes an entry against the shard's one transit or
-- interchange account per currency: all concurrent batches share-locked the same few rows, which turns
-- their row locks into multixacts. Entries are written only by the sp_* functions, each against a wallet it
-- has just locked or a system account sp_ensure_system_accounts created, and accounts are never deleted;
-- `shardpay audit` checks that every entry's account exists (rule entry_account).
--
-- The index on txn_id is dropped: nothing looks entries up by transaction (the audit's double-entry check
-- reads the whole table in one pass), and it was one more index insert per entry.
ALTER TABLE ledger_entries DROP CONSTRAINT IF EXISTS ledger_entries_account_id_fkey;
DROP INDEX IF EXISTS ledger_entries_txn;
