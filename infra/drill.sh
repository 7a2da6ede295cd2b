#!/usr/bin/env bash
# Failover drills against a local stack (`make run`). Each fault is reversible:
#   infra/drill.sh shard-down N | shard-up N   one shard refuses connections (others keep serving)
#   infra/drill.sh redis-down   | redis-up     Redis stopped: idempotency rests on PostgreSQL alone
#   infra/drill.sh rabbit-down  | rabbit-up    RabbitMQ stopped: events wait in the outbox, nothing is lost
#   infra/drill.sh kill NAME                   SIGKILL a child of `shardpay run` (gateway, relay,
#                                              notifications, analytics, recovery); the supervisor restarts it
set -euo pipefail
prefix=${SHARDPAY_DB_PREFIX:-shardpay}
pg=${SHARDPAY_PG:-postgresql://postgres@127.0.0.1:5432}

sql() { psql "$pg/postgres" -Atqc "$1"; }

case "${1:-}" in
    shard-down)
        db="${prefix}_shard_${2:?shard number}"
        sql "ALTER DATABASE \"$db\" WITH ALLOW_CONNECTIONS false"
        sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$db'" >/dev/null
        echo "shard $2 ($db) is down" ;;
    shard-up)
        db="${prefix}_shard_${2:?shard number}"
        sql "ALTER DATABASE \"$db\" WITH ALLOW_CONNECTIONS true"
        echo "shard $2 ($db) is up" ;;
    redis-down) redis-cli -h 127.0.0.1 -p 6379 shutdown nosave || true; echo "redis is down" ;;
    redis-up) redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no; echo "redis is up" ;;
    rabbit-down) rabbitmqctl stop_app >/dev/null; echo "rabbitmq is down" ;;
    rabbit-up) rabbitmqctl start_app >/dev/null; echo "rabbitmq is up" ;;
    kill)
        case "${2:?child name}" in
            gateway) pattern="shardpay serve" ;;
            relay) pattern="shardpay relay" ;;
            notifications|analytics) pattern="shardpay consume $2" ;;
            recovery) pattern="shardpay recover" ;;
            *) echo "unknown child $2" >&2; exit 2 ;;
        esac
        pkill -KILL -f -- "-m $pattern" && echo "killed $2" ;;
    *) sed -n '2,8p' "$0"; exit 2 ;;
esac
