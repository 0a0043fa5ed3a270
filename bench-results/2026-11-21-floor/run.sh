#!/usr/bin/env bash
# The floor: 20,000 bare idle loopback TCP pairs (kernel bytes per pair) and a raw
# io_uring send loop delivering one 100-byte-payload WebSocket frame to 20,000 sockets,
# 20 rounds (CPU per delivery). Every engine figure is read as a ratio to these.
#
#   bench-results/2026-11-21-floor/run.sh   (from the repository root, release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/bench-results/lib.sh"
wait_time_wait
"$root/target/release/loadgen" floor --connections 20000 --rounds 20 --payload 100 \
    --json "$here/floor.json" --svg "$here/svg" --quiet | tee "$here/loadgen.txt"
