#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ are installed and running on this machine (idempotent).
# Installs missing servers from Debian's packages, starts stopped ones, and waits until each answers.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
install() {
    if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for NAME SECONDS CMD...
    local name=$1 seconds=$2; shift 2
    for _ in $(seq 1 $((seconds * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    log "$name did not come up within ${seconds}s"; return 1
}

postgres() {
    command -v pg_ctlcluster >/dev/null || install postgresql postgresql-client
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        log "starting PostgreSQL $version"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    wait_for PostgreSQL 30 pg_isready -h 127.0.0.1 -p 5432 -q
    # Local development trusts loopback connections as user postgres (the default DSNs); check we can log in.
    psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null \
        || { log "cannot log in to PostgreSQL as postgres on 127.0.0.1 (set SHARDPAY_PG)"; return 1; }
    restart_settings "$version"
    reload_settings
}

# Server settings that need a restart, applied once with ALTER SYSTEM; SHARDPAY_PG_TUNE=0 skips this.
# - max_connections 500: every process keeps a small pool per shard (gateway workers, relay, consumers,
#   recovery, tests), and Debian's default of 100 is too few for a local stack plus its test suite.
# - shared_buffers 1GB (Debian's default is 128MB): with the default, backends wrote most dirty pages out
#   themselves and make bench ran 548 transfers/s; with 1GB (and max_wal_size below) 621-659.
# Durability is untouched: fsync, synchronous_commit and full_page_writes stay on (make bench checks them).
restart_settings() {
    [ "${SHARDPAY_PG_TUNE:-1}" = 1 ] || return 0
    local changed=0 name want have
    for pair in max_connections=500 shared_buffers=1GB; do
        name=${pair%%=*} want=${pair#*=}
        have=$(psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT pg_size_bytes(current_setting('$name')) >= pg_size_bytes('$want')")
        [ "$have" = t ] && continue
        log "raising PostgreSQL $name to $want"
        psql -h 127.0.0.1 -U postgres -d postgres -Atqc "ALTER SYSTEM SET $name = '$want'" >/dev/null
        changed=1
    done
    [ "$changed" = 1 ] || return 0
    log "restarting PostgreSQL for the new settings"
    as_root pg_ctlcluster --skip-systemctl-redirect "$1" main restart
    wait_for PostgreSQL 30 pg_isready -h 127.0.0.1 -p 5432 -q
}

# Settings a reload applies. The outbox, transfers and idempotency tables take an update per row on the hot path:
# without autovacuum their dead rows and index entries pile up and throughput halves within minutes (measured
# with make bench), and some machines ship autovacuum = off (a CI setting). max_wal_size 4GB (Debian: 1GB) keeps
# checkpoints, and the full-page images after each, from coming every few seconds under load.
reload_settings() {
    [ "${SHARDPAY_PG_TUNE:-1}" = 1 ] || return 0
    local changed=0
    if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SHOW autovacuum')" != on ]; then
        log "turning PostgreSQL autovacuum on"
        psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'ALTER SYSTEM SET autovacuum = on' >/dev/null
        changed=1
    fi
    if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT pg_size_bytes(current_setting('max_wal_size')) >= pg_size_bytes('4GB')")" != t ]; then
        log "raising PostgreSQL max_wal_size to 4GB"
        psql -h 127.0.0.1 -U postgres -d postgres -Atqc "ALTER SYSTEM SET max_wal_size = '4GB'" >/dev/null
        changed=1
    fi
    [ "$changed" = 1 ] || return 0
    psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT pg_reload_conf()' >/dev/null
}

redis() {
    command -v redis-server >/dev/null || install redis-server
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    fi
    wait_for Redis 15 redis-cli -h 127.0.0.1 -p 6379 ping
}

rabbitmq() {
    command -v rabbitmq-server >/dev/null || install rabbitmq-server
    if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
        log "starting RabbitMQ"
        as_root rabbitmq-server -detached || true
    fi
    wait_for RabbitMQ 90 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672'
}

postgres
redis
rabbitmq
log "PostgreSQL, Redis and RabbitMQ are up"
