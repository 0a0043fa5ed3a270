#!/usr/bin/env bash
# 5,000 WebSocket subscribers over 50 topics, 600 messages of 100 bytes published at
# 20 msg/s: Switchboard (`serve --shards 2`), then Nchan (nginx + libnginx-mod-nchan, 2
# workers) through URL templates, in the same loadgen run.
#
#   bench-results/2026-11-21-fanout-5000/run.sh   (from the repository root, release build)
#
# Writes fanout.json (Switchboard), fanout.nchan.json, svg/, loadgen.txt here. Stops by
# itself (600 messages at 20/s: 30 s per server); both servers are ended by pid.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PORT:-18092}
nchan_port=${NCHAN_PORT:-18093}
sb="$root/target/release/switchboard"
lg="$root/target/release/loadgen"
nchan_dir=$(mktemp -d)
. "$root/bench-results/lib.sh"
wait_time_wait

"$sb" serve --listen "127.0.0.1:$port" --shards 2 >"$here/engine.log" 2>&1 &
pid=$!
workers=$("$root/loadgen/peers/nchan.sh" start "$nchan_port" "$nchan_dir" 2)
trap 'kill $pid 2>/dev/null || true; "$root/loadgen/peers/nchan.sh" stop "$nchan_dir" || true' EXIT
until grep -q "^listening on" "$here/engine.log"; do sleep 0.1; done

peer_pids=()
for w in $workers; do peer_pids+=(--peer-pid "$w"); done
"$lg" fanout --target "http://127.0.0.1:$port" --target-pid "$pid" \
    --subscribe-url "ws://127.0.0.1:$nchan_port/sub/{topic}" \
    --publish-url "http://127.0.0.1:$nchan_port/pub/{topic}" \
    --peer-name nchan "${peer_pids[@]}" \
    --transport ws --subscribers 5000 --topics 50 --rate 20 --messages 600 --payload 100 \
    --json "$here/fanout.json" --svg "$here/svg" --quiet | tee "$here/loadgen.txt"
