#!/usr/bin/env bash
# Install the HA topology's servers from Debian's packages, those that are missing (idempotent): PostgreSQL 15
# (its binaries; Patroni runs them), Patroni, etcd, HAProxy, Redis with Sentinel, RabbitMQ. Nothing is started
# here: `shardpay ha up` (make run-ha) starts every server itself, on its own ports, under SHARDPAY_HA_DIR.
set -euo pipefail

log() { printf '[ha-install] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# command-or-path:package
wanted=(
    /usr/lib/postgresql/15/bin/initdb:postgresql-15
    patroni:patroni
    etcd:etcd-server
    haproxy:haproxy
    redis-server:redis-server
    redis-sentinel:redis-sentinel
    /usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server
)
missing=()
for pair in "${wanted[@]}"; do
    cmd=${pair%%:*} package=${pair#*:}
    if [[ $cmd == /* ]]; then [ -x "$cmd" ] && continue; else command -v "$cmd" >/dev/null && continue; fi
    missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
log "installing ${missing[*]}"
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
