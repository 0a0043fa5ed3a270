#!/usr/bin/env bash
# The in-memory ingest of this commit against an earlier one (default: 0425882, before
# the work of this run), interleaved, three times per capture: the ratio of the two in
# one sitting is what a shared host measures well.
#
#   bench-results/2026-11-21-ami-ingest/compare.sh [BASE]   (from the repository root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
base=${1:-0425882}
cargo build --release -q -p switchboard --example ami_ingest
tree=$(mktemp -d)
git worktree add -q --detach "$tree/src" "$base"
trap 'git worktree remove --force "$tree/src"; rm -rf "$tree"' EXIT
(cd "$tree/src" && CARGO_TARGET_DIR="$root/target/compare-base" \
    cargo build --release -q -p switchboard --example ami_ingest)
old=target/compare-base/release/examples/ami_ingest
new=target/release/examples/ami_ingest
rate() { "$1" "$2" --passes "$3" | grep -o '[0-9]* events/s' | cut -d' ' -f1; }
{
    echo "base $base, new $(git rev-parse --short HEAD)"
    for c in asterisk22-local.txt:30 asterisk22-sip-systemname.txt:50 asterisk16-calls.bin:900; do
        f=${c%:*}
        passes=${c#*:}
        for run in 1 2 3; do
            o=$(rate "$old" "proto/tests/fixtures/ami/$f" "$passes")
            n=$(rate "$new" "proto/tests/fixtures/ami/$f" "$passes")
            awk -v f="$f" -v o="$o" -v n="$n" \
                'BEGIN { printf "%s: base %d, new %d events/s: %.2fx\n", f, o, n, n / o }'
        done
    done
} | tee "$here/compare-$base.txt"
