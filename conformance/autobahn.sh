#!/usr/bin/env bash
# conformance/autobahn.sh - RFC 6455 conformance of the switchboard binary with the
# Autobahn|Testsuite fuzzing client (wstest -m fuzzingclient).
#
#   conformance/autobahn.sh [--cases LIST] [--strict] [--keep-report]
#
# Starts `$SWITCHBOARD_BIN serve --listen 127.0.0.1:0 --shards 2 --echo`, waits for its
# ready line `listening on http://127.0.0.1:PORT shards=N` on stdout, runs the suite
# against ws://127.0.0.1:PORT/echo, prints a summary, writes it to
# conformance/reports/summary.json and stops the server (always, also on failure).
# It builds nothing: build first (`cargo build --release -p switchboard`).
#
# Options:
#   --cases LIST      comma-separated case patterns (default "*" = 1.* to 10.*)
#   --exclude LIST    patterns to skip (default "12.*,13.*": permessage-deflate)
#   --strict          also fail on NON-STRICT cases and unclean/failed close behaviour
#   --keep-report     keep the per-case HTML/JSON report even when everything passed
#                     (it is always kept when something did not pass)
#   --timeout SECS    limit for the wstest run (default $AUTOBAHN_TIMEOUT or 1200)
#   -v, --verbose     stream wstest's output (it is always saved to wstest.log)
#
# Environment:
#   SWITCHBOARD_BIN      server binary (default <repo>/target/release/switchboard)
#   AUTOBAHN_TARGET_URL  test this ws:// URL instead of starting a server (used to
#                        validate the runner against `wstest -m echoserver`)
#   AUTOBAHN_HOME        suite installation (default /opt/switchboard-autobahn;
#                        conformance/install.sh creates it)
#   AUTOBAHN_REPORTS     report directory (default <repo>/conformance/reports)
#
# Exit: 0 all cases passed; 1 FAILED or missing cases (or, with --strict, NON-STRICT
# cases / unclean closes), the server died or the run timed out; 2 usage or
# infrastructure error (suite not installed, server did not start, nothing ran).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/conformance"
AUTOBAHN_HOME="${AUTOBAHN_HOME:-/opt/switchboard-autobahn}"
WSTEST="$AUTOBAHN_HOME/env/py2/bin/wstest"
PY2="$AUTOBAHN_HOME/env/py2/bin/python"
PY3=/usr/bin/python3
[ -x "$PY3" ] || PY3=python3
BIN="${SWITCHBOARD_BIN:-$ROOT/target/release/switchboard}"
TARGET_URL="${AUTOBAHN_TARGET_URL:-}"
REPORTS="${AUTOBAHN_REPORTS:-$HERE/reports}"
READY_TIMEOUT="${AUTOBAHN_READY_TIMEOUT:-15}"
TIMEOUT="${AUTOBAHN_TIMEOUT:-1200}"
CASES="*" EXCLUDE="12.*,13.*" STRICT=0 KEEP=0 VERBOSE=0
AGENT=switchboard

say() { echo "autobahn: $*" >&2; }
die() { say "ERROR: $*"; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --cases) [ $# -ge 2 ] || usage; CASES="$2"; shift 2 ;;
    --cases=*) CASES="${1#*=}"; shift ;;
    --exclude) [ $# -ge 2 ] || usage; EXCLUDE="$2"; shift 2 ;;
    --exclude=*) EXCLUDE="${1#*=}"; shift ;;
    --strict) STRICT=1; shift ;;
    --keep-report) KEEP=1; shift ;;
    --timeout) [ $# -ge 2 ] || usage; TIMEOUT="$2"; shift 2 ;;
    --timeout=*) TIMEOUT="${1#*=}"; shift ;;
    -v | --verbose) VERBOSE=1; shift ;;
    -h | --help) usage 0 ;;
    *) say "unknown argument: $1"; usage ;;
  esac
done
case "$TIMEOUT" in '' | *[!0-9]*) die "--timeout needs whole seconds, got '$TIMEOUT'" ;; esac

[ -x "$WSTEST" ] || die "$WSTEST not found: run conformance/install.sh (as root) first"

# --- cleanup: runs on every exit path ----------------------------------------------
SERVER_PID="" WSTEST_PID=""
# shellcheck disable=SC2317 # (invoked from the trap)
stop_pid() { # stop_pid PID: TERM, up to 5 s grace, then KILL; reap it if it is our child
  local pid="$1" _
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317
cleanup() {
  local rc=$?
  trap "" INT TERM # a second signal must not cut the cleanup short (it is bounded)
  trap - EXIT
  [ -z "$WSTEST_PID" ] || stop_pid "$WSTEST_PID"
  [ -z "$SERVER_PID" ] || stop_pid "$SERVER_PID"
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

mkdir -p "$REPORTS"
REPORTS="$(cd "$REPORTS" && pwd)"
OUTDIR="$REPORTS/autobahn"
rm -rf "$OUTDIR" "$REPORTS/summary.json"
mkdir -p "$OUTDIR"

# --- the server ---------------------------------------------------------------------
if [ -n "$TARGET_URL" ]; then
  case "$TARGET_URL" in ws://*) ;; *) die "AUTOBAHN_TARGET_URL must be a ws:// URL" ;; esac
  URL="$TARGET_URL"
  TARGET_DESC="$TARGET_URL (AUTOBAHN_TARGET_URL, no server started)"
  say "testing $URL (AUTOBAHN_TARGET_URL set: not starting a server)"
else
  [ -x "$BIN" ] || die "server binary $BIN not found or not executable (build it: cargo build --release -p switchboard, or set SWITCHBOARD_BIN)"
  SERVER_OUT="$REPORTS/server.stdout" SERVER_ERR="$REPORTS/server.stderr"
  "$BIN" serve --listen 127.0.0.1:0 --shards 2 --echo </dev/null >"$SERVER_OUT" 2>"$SERVER_ERR" &
  SERVER_PID=$!
  server_tail() { say "server stderr (last 20 lines of $SERVER_ERR):"; tail -n 20 "$SERVER_ERR" >&2 || true; }
  ready_re='^listening on http://[^ /]+:[0-9]+ shards=[0-9]+'
  deadline=$(($(date +%s) + READY_TIMEOUT))
  line=""
  while :; do
    line="$(grep -m1 -E "$ready_re" "$SERVER_OUT" || true)"
    [ -z "$line" ] || break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      rc=0; wait "$SERVER_PID" || rc=$?
      SERVER_PID=""
      server_tail; die "server exited (status $rc) before printing its ready line"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      server_tail
      die "no line matching '$ready_re' on the server's stdout within ${READY_TIMEOUT}s"
    fi
    sleep 0.05
  done
  hostport="$(printf '%s\n' "$line" | sed -E 's#^listening on http://([^ /]+) .*#\1#')"
  URL="ws://$hostport/echo"
  TARGET_DESC="$BIN (pid $SERVER_PID)"
  say "server pid $SERVER_PID ready: $line"
fi

# --- the spec and the list of cases it selects ----------------------------------------
SPEC="$OUTDIR/fuzzingclient.json"
"$PY3" - "$SPEC" "$URL" "$AGENT" "$CASES" "$EXCLUDE" "$OUTDIR" <<'EOF'
import json, sys
path, url, agent, cases, exclude, outdir = sys.argv[1:]
split = lambda s: [p.strip() for p in s.split(",") if p.strip()]
json.dump({"options": {"failByDrop": False}, "outdir": outdir,
           "servers": [{"agent": agent, "url": url}],
           "cases": split(cases), "exclude-cases": split(exclude),
           "exclude-agent-cases": {}}, open(path, "w"), indent=2)
EOF
# Resolve the patterns with the suite's own code, so that a case that never produces a
# result (server crashed, wstest timed out) is reported as missing.
"$PY2" - "$SPEC" >"$OUTDIR/expected.json" <<'EOF'
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
from autobahntestsuite.caseset import CaseSet
cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
print(json.dumps(cs.parseSpecCases(json.load(open(sys.argv[1])))))
EOF
n_expected="$("$PY3" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$OUTDIR/expected.json")"
[ "$n_expected" -gt 0 ] || die "--cases '$CASES' (excluding '$EXCLUDE') selects no test case"

# --- the run ----------------------------------------------------------------------------
say "running $n_expected cases (--cases '$CASES', excluding '$EXCLUDE') against $URL, limit ${TIMEOUT}s"
start=$(date +%s)
if [ "$VERBOSE" = 1 ]; then
  (cd "$OUTDIR" && exec timeout --signal=INT --kill-after=15 "$TIMEOUT" "$WSTEST" -m fuzzingclient -s "$SPEC" \
    > >(tee "$OUTDIR/wstest.log") 2>&1) &
else
  (cd "$OUTDIR" && exec timeout --signal=INT --kill-after=15 "$TIMEOUT" "$WSTEST" -m fuzzingclient -s "$SPEC" \
    >"$OUTDIR/wstest.log" 2>&1) &
fi
WSTEST_PID=$!
wstest_rc=0
wait "$WSTEST_PID" || wstest_rc=$?
WSTEST_PID=""
elapsed=$(($(date +%s) - start))
case "$wstest_rc" in
  124 | 137) say "WARNING: wstest hit the ${TIMEOUT}s limit (exit $wstest_rc)" ;;
  0) ;;
  *) say "WARNING: wstest exited with status $wstest_rc (see $OUTDIR/wstest.log)" ;;
esac

server_status="none"
if [ -n "$SERVER_PID" ]; then
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    server_status="alive"
  else
    rc=0; wait "$SERVER_PID" || rc=$?
    SERVER_PID=""
    server_status="$rc"
    say "ERROR: the server died during the run (exit status $rc)"
    server_tail
  fi
fi

# --- the summary ------------------------------------------------------------------------
STRICT_FLAG=""
[ "$STRICT" = 0 ] || STRICT_FLAG=--strict
set +e
"$PY3" "$HERE/summarize.py" \
  --report-dir "$OUTDIR" --agent "$AGENT" --expected "$OUTDIR/expected.json" \
  --out "$REPORTS/summary.json" --target "$TARGET_DESC" --url "$URL" \
  --cases "$CASES" --exclude "$EXCLUDE" --elapsed "$elapsed" --wstest-rc "$wstest_rc" \
  --server-status "$server_status" ${STRICT_FLAG:+"$STRICT_FLAG"}
result=$?
set -e
if [ "$result" = 0 ] && [ "$KEEP" = 0 ]; then
  # Everything passed: drop the bulky per-case report, keep the spec, logs and summary.
  find "$OUTDIR" -maxdepth 1 -type f \( -name '*.html' -o -name "${AGENT}_case_*.json" \) -delete
  say "summary in $REPORTS/summary.json (per-case report removed; --keep-report keeps it)"
else
  say "summary in $REPORTS/summary.json, report in $OUTDIR/index.html"
fi
exit "$result"
