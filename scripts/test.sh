#!/usr/bin/env bash
# scripts/test.sh - THE test command of Switchboard (CI runs it through .ci/run).
#
#   scripts/test.sh
#
# Runs, in order, stopping at the first failure:
#   1. cargo fmt --all -- --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. cargo build --release --workspace --bins
#   4. cargo test --workspace --release
#   5. Autobahn|Testsuite conformance of target/release/switchboard
#      (conformance/install.sh first if the suite is not installed; root needed then)
#   6. the codecs' fuzz targets, FUZZ_SECONDS each (default 15; cargo-fuzz is
#      installed if missing)
#
# Why `cargo test --release`: the end-to-end tests (tests/) start the real binaries, and
# in release they start exactly the binaries step 3 built and step 5 checks (the e2e
# harness's own `cargo build` of the binaries is then a no-op); the whole run compiles
# the dependency tree once (one profile) instead of twice, which matters on a 2-core CI
# machine; and timing-sensitive e2e tests (fan-out, many connections) behave like
# production. The price: debug_assert! and integer-overflow checks are off in the unit
# tests, so invariants that must be checked by the tests use assert!.
#
# Environment: extra arguments for the conformance run in AUTOBAHN_ARGS (e.g.
# AUTOBAHN_ARGS=--strict); SKIP_CONFORMANCE=1 skips step 5 (local use only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export AUTOBAHN_HOME="${AUTOBAHN_HOME:-/opt/switchboard-autobahn}"

T0=$(date +%s)
STEP_T0=$T0
STEP=""
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
finish() {
  local rc=$? now
  now=$(date +%s)
  [ -z "$STEP" ] || echo "    ($STEP: $(fmt_secs $((now - STEP_T0))))"
  echo
  if [ "$rc" = 0 ]; then
    echo "==> all steps passed in $(fmt_secs $((now - T0)))"
  else
    echo "==> FAILED at step '$STEP' (exit $rc) after $(fmt_secs $((now - T0)))" >&2
  fi
}
trap finish EXIT
step() {
  local now
  now=$(date +%s)
  [ -z "$STEP" ] || echo "    ($STEP: $(fmt_secs $((now - STEP_T0))))"
  STEP="$1" STEP_T0=$now
  echo
  echo "==> [$STEP] $2"
}

step "1/6 fmt" "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "2/6 clippy" "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "3/6 build" "cargo build --release --workspace --bins"
cargo build --release --workspace --bins

step "4/6 test" "cargo test --workspace --release"
# tests/tests/ami_sim_panoramisk.rs drives a third-party AMI client (Python panoramisk,
# installed by .ci/run); install it here if it is missing (it fails, never skips, without).
PANORAMISK_PY="${SWITCHBOARD_PANORAMISK_PYTHON:-/opt/switchboard-panoramisk/bin/python}"
if ! "$PANORAMISK_PY" -c 'import panoramisk' 2>/dev/null && [ -z "${SWITCHBOARD_PANORAMISK_PYTHON:-}" ]; then
  echo "    panoramisk missing: python3 -m venv /opt/switchboard-panoramisk && pip install panoramisk==1.4"
  python3 -m venv /opt/switchboard-panoramisk &&
    /opt/switchboard-panoramisk/bin/python -m pip install -q --disable-pip-version-check panoramisk==1.4 ||
    echo "    (could not install it: the panoramisk e2e test will fail)"
fi
cargo test --workspace --release

if [ "${SKIP_CONFORMANCE:-0}" = 1 ]; then
  step "5/6 conformance" "skipped (SKIP_CONFORMANCE=1)"
else
  step "5/6 conformance" "conformance/autobahn.sh ${AUTOBAHN_ARGS:-}"
  if [ ! -x "$AUTOBAHN_HOME/env/py2/bin/wstest" ]; then
    echo "    Autobahn|Testsuite missing in $AUTOBAHN_HOME: running conformance/install.sh"
    conformance/install.sh
  fi
  # The binary step 3 built, wherever the target directory is (CARGO_TARGET_DIR, config).
  target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  # shellcheck disable=SC2086 # AUTOBAHN_ARGS is a list of options
  SWITCHBOARD_BIN="$target_dir/release/switchboard" conformance/autobahn.sh ${AUTOBAHN_ARGS:-}
fi

step "6/6 fuzz" "scripts/fuzz.sh ${FUZZ_SECONDS:-15}"
scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
