#!/usr/bin/env bash
# Live ingest of a real capture: `switchboard serve --shards 1 --ami` following
# `ami-sim --replay CAPTURE --speed max` (the capture's event stream, byte for byte, as
# fast as the engine reads) over loopback. The capture is played PASSES times in a row
# (each pass ends with every call hung up, as in the in-memory benchmark). Reports the
# wall time until the engine has read every event, and the CPU time of the engine's
# AMI thread and router thread per event (from /proc/PID/task/TID/stat): on this
# 2-core host ami-sim writes on the same cores, so CPU per event is the steadier figure.
#
#   bench-results/2026-11-21-ami-ingest/replay.sh [ENGINE]   (from the repository root)
#   CAPTURE=asterisk22-sip-systemname.txt PASSES=50 RUNS=3 bench-results/.../replay.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
capture=proto/tests/fixtures/ami/${CAPTURE:-asterisk22-local.txt}
passes=${PASSES:-30}
runs=${RUNS:-3}
engine=${1:-target/release/switchboard}
[ $# -ge 1 ] || cargo build --release -q -p switchboard
cargo build --release -q -p ami-sim
stream=$(mktemp)
sim_log=$(mktemp)
engine_log=$(mktemp)
trap 'rm -f "$stream" "$sim_log" "$engine_log"' EXIT
# The capture whole (banner, login answer, events), then its events PASSES-1 times more.
first_event=$(grep -b -m1 -a '^Event: ' "$capture" | cut -d: -f1)
cat "$capture" >"$stream"
for _ in $(seq 2 "$passes"); do tail -c +"$((first_event + 1))" "$capture" >>"$stream"; done
events=$(( $(grep -c -a '^Event: ' "$capture") * passes ))
ami_port=${AMI_PORT:-15041}
port=${PORT:-18098}
for run in $(seq "$runs"); do
    target/release/ami-sim --listen "127.0.0.1:$ami_port" --replay "$stream" --speed max \
        --max-queue 1GiB >"$sim_log" 2>&1 &
    sim=$!
    until grep -q "^listening on" "$sim_log"; do sleep 0.05; done
    "$engine" serve --listen "127.0.0.1:$port" --shards 1 --ami "127.0.0.1:$ami_port" \
        --ami-user admin --ami-secret amp111 >"$engine_log" 2>&1 &
    pid=$!
    until grep -q "^listening on" "$engine_log"; do sleep 0.05; done
    thread() { for t in /proc/$pid/task/*; do [ "$(cat "$t/comm")" = "$1" ] && basename "$t"; done; true; }
    ami=""; until [ -n "$ami" ]; do ami=$(thread ami); done
    router=$(thread router)
    received() {
        curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "switchboard_ami_messages_total" {print $2}'
    }
    ticks() { awk '{print $14 + $15}' "/proc/$pid/task/$1/stat"; }
    t0=$(date +%s.%N)
    n=0
    # The login answer and the resync lists come first; then the capture's events.
    until [ "$n" -ge "$events" ]; do sleep 0.02; n=$(received); done
    t1=$(date +%s.%N)
    a=$(ticks "$ami"); r=$(ticks "$router"); hz=$(getconf CLK_TCK)
    awk -v c="$(basename "$capture")" -v p="$passes" -v n="$n" -v a="$a" -v r="$r" -v hz="$hz" \
        -v t0="$t0" -v t1="$t1" 'BEGIN {
        w = t1 - t0
        printf "%s x%d: %d messages in %.2f s (%.0f/s); AMI thread %.0f ns/event (%.0f events/s per core), router %.0f ns/event\n",
            c, p, n, w, n / w, a * 1e9 / hz / n, n * hz / a, r * 1e9 / hz / n
    }'
    kill -9 "$pid" "$sim"
    wait "$pid" "$sim" 2>/dev/null || true
done | tee "$here/replay.txt"
