#!/usr/bin/env bash
# make drills: the whole drill set on a fresh start of the HA topology. Starts `shardpay ha up` (unless one
# already serves under SHARDPAY_HA_DIR), waits until the gateways answer through HAProxy, runs
# `shardpay drill all` (the table on stdout, the JSON reports under <HA dir>/log/), then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=.venv/bin
url=$($bin/python -c 'from shardpay.ha import layout; print(layout.from_env().gateway_url)')
started=""
if ! curl -fsS -o /dev/null "$url/healthz" 2>/dev/null; then
    log=$(mktemp -t shardpay-ha-up.XXXXXX.log)
    echo "[drills] starting the HA topology (log: $log)" >&2
    $bin/shardpay ha up >"$log" 2>&1 &
    started=$!
    trap 'kill -INT "$started" 2>/dev/null; wait "$started" || true' EXIT
    for _ in $(seq 1 480); do
        curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && break
        kill -0 "$started" 2>/dev/null || { echo "[drills] shardpay ha up exited; see $log" >&2; exit 1; }
        sleep 0.5
    done
fi
$bin/shardpay drill all
