#!/usr/bin/env bash
# Prints the Python 3.11 for the project's venv: of the python3.11 interpreters on PATH that can make a venv,
# the fastest at a short pure-Python loop. Builds differ a lot: Debian's python3.11 is compiled with PGO and
# LTO, a pyenv build by default with neither, and the gateway, relay and consumers ran about 20% faster end to
# end on Debian's (measured with make bench). PYTHON=... in the environment or on make's command line wins.
set -euo pipefail

best="" best_time=""
while read -r candidate; do
    "$candidate" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || continue
    seconds=$("$candidate" -c 'import time
t = time.perf_counter()
sum(i * i for i in range(1_000_000))
print(time.perf_counter() - t)')
    if [ -z "$best" ] || awk -v a="$seconds" -v b="$best_time" 'BEGIN { exit !(a < b) }'; then
        best=$candidate best_time=$seconds
    fi
done < <(which -a python3.11 2>/dev/null | while read -r p; do readlink -f "$p"; done | awk '!seen[$0]++')

if [ -z "$best" ]; then
    echo "no python3.11 with venv and ensurepip on PATH (Debian: apt-get install python3.11-venv)" >&2
    exit 1
fi
echo "$best"
