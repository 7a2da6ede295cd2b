-- A claim: a key's durable record must be findable from the merchant and the key alone, so every key has a home
-- shard (ids.slot_for(merchant, key)). A write whose effect lives on another shard (a transfer from a wallet
-- there) first claims the key at home: a row with the request's fingerprint and no response, which the
-- response's own record on the effect's shard completes. The same key with other parameters then meets the
-- claim, wherever its own effect would live (422), even after Redis forgot the key.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS claim boolean NOT NULL DEFAULT false;
