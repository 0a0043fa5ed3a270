#!/usr/bin/env bash
# AMI ingest throughput (issue 6): how many AMI events one core parses, applies to the
# PBX state model, maps to ami.* topics and publishes.
#
# 1. In memory: real Asterisk captures played by the `ami_ingest` example (the engine's
#    own parser, state model and publish path; `--encode` adds the router's encoding,
#    which the engine runs on another core).
# 2. Live: `switchboard serve --ami` following `ami-sim --events-per-sec RATE` over
#    loopback, with an SSE subscriber to ami.calls; the AMI thread's and the router's
#    CPU time (from /proc/PID/task/TID/stat) per event received.
#
#   bench-results/2026-11-21-ami-ingest/run.sh   (from the repository root)
#   RATE=100000 SECS=20 bench-results/2026-11-21-ami-ingest/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
cargo build --release -q -p switchboard -p ami-sim --bins --example ami_ingest
fixtures=proto/tests/fixtures/ami
{
    # Passes for about 700,000 events each (asterisk16-calls.bin has 792).
    for f in asterisk22-local.txt:30 asterisk22-sip-systemname.txt:50 asterisk16-calls.bin:900; do
        passes=${f#*:}
        f=${f%:*}
        for run in 1 2 3; do
            target/release/examples/ami_ingest "$fixtures/$f" --passes "$passes"
        done
        target/release/examples/ami_ingest "$fixtures/$f" --passes "$passes" --encode
        target/release/examples/ami_ingest "$fixtures/$f" --passes "$passes" --parse-only
    done
} | tee "$here/in-memory.txt"

rate=${RATE:-100000}
secs=${SECS:-20}
ami_port=${AMI_PORT:-15038}
port=${PORT:-18095}
# A stress PBX starts warm (tens of thousands of channels): its login lists pass the
# 4 MiB that Asterisk (and ami-sim by default) queue for one session, so it may queue more.
target/release/ami-sim --listen "127.0.0.1:$ami_port" --seed 1 --events-per-sec "$rate" \
    --max-queue 256MiB >"$here/ami-sim.log" 2>&1 &
sim=$!
until grep -q "^listening on" "$here/ami-sim.log"; do sleep 0.1; done
target/release/switchboard serve --listen "127.0.0.1:$port" --shards 1 \
    --ami "127.0.0.1:$ami_port" --ami-user admin --ami-secret amp111 >"$here/engine.log" 2>&1 &
pid=$!
until grep -q "^listening on" "$here/engine.log"; do sleep 0.1; done
# The subscriber joins once the PBX state is synced: the resync announces every call
# of the warm PBX on ami.calls at once (~4 MB for 6,500 calls), more than a
# subscriber may have queued (--max-queued-bytes, 4 MiB) while it starts reading.
until grep -q "ami: live" "$here/engine.log"; do sleep 0.1; done
curl -sN "http://127.0.0.1:$port/sse?topic=ami.calls" | wc -c >"$here/sse-bytes.txt" &
sub=$!
# CPU ticks (utime + stime) of the engine thread named $1.
ticks() {
    for t in /proc/$pid/task/*; do
        if [ "$(cat "$t/comm")" = "$1" ]; then
            awk '{print $14 + $15}' "$t/stat"
        fi
    done
}
messages() {
    curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "switchboard_ami_messages_total" {print $2}'
}
sleep 3
m0=$(messages); a0=$(ticks ami); r0=$(ticks router); t0=$(date +%s.%N)
sleep "$secs"
m1=$(messages); a1=$(ticks ami); r1=$(ticks router); t1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
awk -v m0="$m0" -v m1="$m1" -v a0="$a0" -v a1="$a1" -v r0="$r0" -v r1="$r1" \
    -v t0="$t0" -v t1="$t1" -v hz="$hz" -v rate="$rate" 'BEGIN {
    n = m1 - m0; wall = t1 - t0;
    ami = (a1 - a0) / hz; router = (r1 - r0) / hz;
    printf "ami-sim --events-per-sec %d, %.1f s: %d messages received, %.0f/s\n", rate, wall, n, n / wall;
    printf "AMI thread: %.2f s CPU, %.0f ns/event (%.0f events/s per core)\n", ami, ami * 1e9 / n, n / ami;
    printf "router thread: %.2f s CPU, %.0f ns/event\n", router, router * 1e9 / n;
}' | tee "$here/live.txt"
curl -s "http://127.0.0.1:$port/metrics" |
    grep -E '^switchboard_(ami|history|topics|subscriptions|connections\{.*sse)' >"$here/metrics.txt"
grep -E 'VmHWM|VmRSS|RssAnon' "/proc/$pid/status" >"$here/status.txt"
kill "$pid" "$sim"
wait "$pid" "$sim" "$sub" 2>/dev/null || true
echo "SSE subscriber to ami.calls: $(cat "$here/sse-bytes.txt") bytes received" | tee -a "$here/live.txt"
