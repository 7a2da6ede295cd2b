-- pgbench baseline for loadtest/bench.py: one transfer between two random accounts, the classic way, one
-- statement at a time (run with -M prepared): look the idempotency key up, lock both rows in id order, move
-- the money, write two ledger entries, the transfer, the outbox event and the idempotency record, commit --
-- what sp_open_transfer does for a same-shard transfer, minus the PL/pgSQL.
--
--   pgbench -n -M prepared -c C -j 2 -T S -D wallets=100000 -D replay_pct=0 -f transfer.sql shardpay_bench_pgbench
--
-- wallets=10 is the hot scenario; replay_pct=50 the retry storm, where a replay is the idempotency lookup only.
\set src random(1, :wallets)
\set d random(1, :wallets - 1)
\set dst CASE WHEN :d >= :src THEN :d + 1 ELSE :d END
\set amount random(1, 100)
\set roll random(1, 100)
\set probe random(1, 1000000)
\if :roll <= :replay_pct
SELECT status, body FROM idempotency_keys WHERE key = 'k' || :probe::bigint;
\else
BEGIN;
SELECT nextval('txn_seq') AS txn \gset
SELECT status, body FROM idempotency_keys WHERE key = 'k' || :txn::bigint;
SELECT id, available FROM accounts WHERE id IN (:src, :dst) ORDER BY id FOR UPDATE;
UPDATE accounts SET available = available - :amount WHERE id = :src;
UPDATE accounts SET available = available + :amount WHERE id = :dst;
INSERT INTO entries (txn_id, account_id, amount) VALUES (:txn, :src, -(:amount::bigint)), (:txn, :dst, :amount);
INSERT INTO transfers (id, source, destination, amount) VALUES ('tr_' || :txn::bigint, :src, :dst, :amount);
INSERT INTO outbox (event_id, body) VALUES ('evt_' || :txn::bigint, '{"type":"transfer.succeeded","amount":' || :amount::bigint || '}');
INSERT INTO idempotency_keys (key, status, body) VALUES ('k' || :txn::bigint, 201, '{"object":"transfer","status":"succeeded"}');
END;
\endif
