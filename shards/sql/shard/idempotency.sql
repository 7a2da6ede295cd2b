-- The durable idempotency record: one row per (merchant, key) on a shard, either the stored response of the write
-- whose transaction moved money there, or a claim (0010) on the key's home shard for a write whose effect, and
-- response, live on another shard. A repeatable file (shards/migrate.py).

-- A stored idempotency record for this merchant and key, judged against this request's fingerprint:
-- NULL (none), 'key_reused' (other parameters), 'replay' (with the stored response), or 'claimed' (this very
-- request claimed the key here; its response lives on the shard of its effect).
CREATE OR REPLACE FUNCTION sp_idempotent_replay(p_merchant text, p_key text, p_fingerprint text,
                                                OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
DECLARE
    rec record;
BEGIN
    SELECT i.fingerprint, i.status, i.body, i.claim INTO rec
    FROM idempotency_keys i WHERE i.merchant_id = p_merchant AND i.key = p_key;
    IF NOT FOUND THEN
        outcome := NULL;
    ELSIF rec.fingerprint <> p_fingerprint THEN
        outcome := 'key_reused';
    ELSIF rec.claim THEN
        outcome := 'claimed';
    ELSE
        outcome := 'replay'; status := rec.status; body := rec.body;
    END IF;
END $$;

-- A response stored under its key with nothing else in its transaction (a write whose effect lives outside the
-- shards, such as a checkout session registered at the PSP). Outcomes: 'applied', or sp_idempotent_replay's.
CREATE OR REPLACE FUNCTION sp_store_response(p_merchant text, p_key text, p_fingerprint text, p_status integer,
                                             p_body text, OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.outcome, r.status, r.body INTO outcome, status, body
    FROM sp_idempotent_replay(p_merchant, p_key, p_fingerprint) r;
    IF outcome IS NOT NULL THEN RETURN; END IF;
    INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body)
    VALUES (p_merchant, p_key, p_fingerprint, p_status, p_body);
    outcome := 'applied'; status := p_status; body := p_body;
END $$;

-- A transfer batch's record and its stored response, together (sp_store_response's outcomes).
CREATE OR REPLACE FUNCTION sp_store_batch(p_merchant text, p_key text, p_fingerprint text, p_id text, p_results jsonb,
                                          p_created bigint, p_body text,
                                          OUT outcome text, OUT status integer, OUT body text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.outcome, r.status, r.body INTO outcome, status, body FROM sp_store_response(p_merchant, p_key, p_fingerprint, 201, p_body) r;
    IF outcome = 'applied' THEN
        INSERT INTO transfer_batches (id, merchant_id, results, idempotency_key, created)
        VALUES (p_id, p_merchant, p_results, p_key, p_created);
    END IF;
END $$;
