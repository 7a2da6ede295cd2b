-- A merchant may hold several API keys (`shardpay keys create|list|revoke`): each gets an id of its own, which
-- names it in the CLI and keys its rate-limit bucket, and an optional name. Keys made before this migration get
-- an id derived from their digest. The partial index serves the gateways' revocation feed (revoked_at > $1).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS id text;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS name text;
UPDATE api_keys SET id = 'key_' || encode(substring(key_hash FROM 1 FOR 12), 'hex') WHERE id IS NULL;
ALTER TABLE api_keys ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_id ON api_keys (id);
CREATE INDEX IF NOT EXISTS api_keys_revoked ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
