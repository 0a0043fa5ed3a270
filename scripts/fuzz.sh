#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] - runs every fuzz target of the codecs (proto/fuzz) for
# SECONDS each (default 30) with libFuzzer, and fails on the first finding (the input
# is kept under proto/fuzz/artifacts/<target>/). Stable Rust: the codecs have no
# unsafe, so no sanitizer is needed (-s none). Installs cargo-fuzz if it is missing.
set -euo pipefail
secs="${1:-30}"
cd "$(dirname "${BASH_SOURCE[0]}")/../proto/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
cargo fuzz build -O -s none
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${secs}s"
  if ! cargo fuzz run -O -s none "$target" "corpus/$target" -- \
      -max_total_time="$secs" -max_len=4096 -print_final_stats=1 >"/tmp/fuzz-$target.log" 2>&1; then
    grep -E -A20 "panicked|ERROR|SUMMARY" "/tmp/fuzz-$target.log" | head -40 >&2
    echo "fuzz: $target FAILED; input in proto/fuzz/artifacts/$target/ (log /tmp/fuzz-$target.log)" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units" "/tmp/fuzz-$target.log" | sed "s/^/fuzz: $target /"
done
