#!/usr/bin/env bash
# Instructions per AMI message of the in-memory ingest (parse, state, publish), counted
# by callgrind: deterministic, unlike the wall clock of a shared host. The run of
# `--passes HI` minus the run of `--passes LO`, divided by the messages of HI-LO passes
# (so the start-up, reading the capture, is not counted).
#
#   bench-results/2026-11-21-ami-ingest/instructions.sh [BINARY]   (from the repository root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
bin=${1:-target/release/examples/ami_ingest}
[ $# -ge 1 ] || cargo build --release -q -p switchboard --example ami_ingest
command -v valgrind >/dev/null || { echo "valgrind is needed (apt install valgrind)" >&2; exit 1; }
refs() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 |
        awk '/I *refs:/ {gsub(",", "", $NF); print $NF}'
}
for c in asterisk22-local.txt:1:3 asterisk22-sip-systemname.txt:1:3 asterisk16-calls.bin:10:40; do
    IFS=: read -r f lo hi <<<"$c"
    capture=proto/tests/fixtures/ami/$f
    per_pass=$("$bin" "$capture" --passes 1 | grep -o '[0-9]* messages' | cut -d' ' -f1)
    a=$(refs "$capture" --passes "$hi")
    b=$(refs "$capture" --passes "$lo")
    echo "$f: $(( (a - b) / ((hi - lo) * per_pass) )) instructions/message"
done
