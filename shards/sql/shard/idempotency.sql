-- The durable idempotency record: one row per (merchant, key) on the shard whose transaction stored it.
-- A repeatable file (shards/migrate.py).

-- A stored idempotency record for this merchant and key, judged against this request's fingerprint.
CREATE OR REPLACE FUNCTION sp_idempotent_replay(p_merchant text, p_key text, p_fingerprint text,
                                                OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    rec record;
BEGIN
    SELECT i.fingerprint, i.status, i.body INTO rec
    FROM idempotency_keys i WHERE i.merchant_id = p_merchant AND i.key = p_key;
    IF NOT FOUND THEN
        outcome := NULL;
    ELSIF rec.fingerprint <> p_fingerprint THEN
        outcome := 'key_reused';
    ELSE
        outcome := 'replay'; status := rec.status; body := rec.body;
    END IF;
END $$;
