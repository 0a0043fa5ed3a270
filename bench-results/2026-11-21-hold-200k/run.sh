#!/usr/bin/env bash
# 200,000 idle WebSocket connections held by `switchboard serve --shards 12`, opened by
# one loadgen process, with an independent /proc reading of the engine during the
# plateau to check loadgen's user_bytes_per_conn against.
#
#   bench-results/2026-11-21-hold-200k/run.sh   (from the repository root, release build)
#
# Writes hold.json, svg/, loadgen.txt, independent.txt, engine.log here (or in $OUT). Stops by itself: the hold
# lasts --duration, then loadgen closes everything and the engine is ended by pid.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
# OUT: where the results go (default: this folder). N, SHARDS, RATE: the run's size.
here=$(mkdir -p "${OUT:-$(dirname "$0")}" && cd "${OUT:-$(dirname "$0")}" && pwd)
n=${N:-200000}
# 12 x 20,000 slots: SO_REUSEPORT spreads connections by hash, not evenly, so 10 x 20,000
# would refuse a few hundred of 200,000 (measured: 166 given up after retries).
shards=${SHARDS:-12}
port=${PORT:-18090}
sb="$root/target/release/switchboard"
lg="$root/target/release/loadgen"

. "$root/bench-results/lib.sh"
wait_time_wait

"$sb" serve --listen "127.0.0.1:$port" --shards "$shards" >"$here/engine.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until grep -q "^listening on" "$here/engine.log"; do sleep 0.1; done

rss_anon() { awk '/^RssAnon:/ {print $2 * 1024}' "/proc/$pid/status"; }
smaps_anon() { awk '/^Anonymous:/ {print $2 * 1024}' "/proc/$pid/smaps_rollup"; }
connections() {
    # /metrics itself is one connection more; 0 when it cannot be read.
    local n
    n=$( { exec 3<>"/dev/tcp/127.0.0.1/$port" &&
        printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 &&
        awk '/^switchboard_connections\{/ {s += $2} END {print s - 1}' <&3; } 2>/dev/null)
    echo "${n:-0}"
}

before_status=$(rss_anon)
before_smaps=$(smaps_anon)
"$lg" hold --target "http://127.0.0.1:$port" --transport ws --connections "$n" \
    --duration 30s --target-pid "$pid" --connect-rate "${RATE:-10k}" \
    --json "$here/hold.json" --svg "$here/svg" --quiet >"$here/loadgen.txt" 2>&1 &
lg_pid=$!
# The plateau: the engine itself counts n connections; read /proc 5 s into it.
until [ "$(connections)" -ge "$n" ]; do
    kill -0 $lg_pid 2>/dev/null || { echo "loadgen ended before the plateau" >&2; cat "$here/loadgen.txt"; exit 1; }
    sleep 0.5
done
sleep 5
at_status=$(rss_anon)
at_smaps=$(smaps_anon)
open=$(connections)
wait $lg_pid || echo "loadgen exit status $?"
{
    echo "independent /proc reading of pid $pid during the plateau ($open connections by /metrics)"
    echo "RssAnon (status):        before $before_status  plateau $at_status  per conn $(( (at_status - before_status) / n ))"
    echo "Anonymous (smaps_rollup): before $before_smaps  plateau $at_smaps  per conn $(( (at_smaps - before_smaps) / n ))"
} | tee "$here/independent.txt"
cat "$here/loadgen.txt"
