#!/usr/bin/env bash
# 10% of subscribers stop reading while 90% receive a steady stream (issue 5's check),
# once per slow-consumer policy: 1,000 WebSocket subscribers of one topic, 1,000 messages
# of 8 KiB at 20 msg/s. A stalled client is sent 8 MB, more than its socket buffers hold,
# so the engine's bound (`--max-queued-bytes 256KiB`, 8192 messages) is reached.
#
#   bench-results/2026-11-21-slow-10pct/run.sh   (from the repository root, release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/bench-results/lib.sh"
port=${PORT:-18094}
for policy in close drop; do
    wait_time_wait
    "$root/target/release/switchboard" serve --listen "127.0.0.1:$port" --shards 2 \
        --max-queued-bytes 256KiB --slow-policy "$policy" >"$here/engine-$policy.log" 2>&1 &
    pid=$!
    until grep -q "^listening on" "$here/engine-$policy.log"; do sleep 0.1; done
    "$root/target/release/loadgen" slow --target "http://127.0.0.1:$port" --target-pid "$pid" \
        --transport ws --subscribers 1000 --topics 1 --slow-fraction 0.1 \
        --rate 20 --messages 1000 --payload 8KiB \
        --json "$here/slow-$policy.json" --svg "$here/svg-$policy" --quiet | tee "$here/loadgen-$policy.txt" || true
    # What the engine itself counted.
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
    grep -E '^switchboard_(slow_consumer|dropped_messages|drop_resets|resets_sent|closed|send_queue)' <&3 >"$here/metrics-$policy.txt" || true
    exec 3<&-
    grep -E 'VmHWM|VmRSS|RssAnon' "/proc/$pid/status" >"$here/status-$policy.txt"
    kill "$pid"
    wait "$pid" || true
done
