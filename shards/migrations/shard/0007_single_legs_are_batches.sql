-- A single saga leg 2 or 3 is now a batch of one (shards/ledger.py calls sp_credit_inbounds and
-- sp_finish_transfers with one element), so the per-transfer functions, which 0006 had turned into wrappers
-- around the batch ones, go: one implementation of each leg.
DROP FUNCTION IF EXISTS sp_credit_inbound(text, text, text, bigint, text);
DROP FUNCTION IF EXISTS sp_finish_transfer(text, text, text, text, text);
