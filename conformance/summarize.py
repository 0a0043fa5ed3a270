#!/usr/bin/env python3
"""Summarise an Autobahn|Testsuite fuzzingclient report (index.json).

Called by conformance/autobahn.sh; standard library only. Prints the counts of
OK / NON-STRICT / FAILED / INFORMATIONAL / UNIMPLEMENTED / missing cases and of
close-behaviour problems, lists the id of every case that is not OK, writes the
same as JSON (--out) and exits:

  0  every expected case has a result and none FAILED (with --strict: and none is
     NON-STRICT and every close was clean)
  1  FAILED or missing cases, a server that died, a wstest timeout (or, with
     --strict, NON-STRICT cases / UNCLEAN or FAILED close behaviour)
  2  no case produced a result although wstest ended on its own and the server is
     still up (an infrastructure problem: bad URL, suite broken, ...)

wstest writes index.json only when the whole run is over, so after a timeout there
are no results at all; the "Running test case ID ..." lines of wstest.log then tell
how far the run got and which case was running (most likely the one that hung).
"""

import argparse
import json
import os
import re
import sys
import textwrap

BEHAVIOURS = ["OK", "NON-STRICT", "FAILED", "INFORMATIONAL", "UNIMPLEMENTED"]
CLOSE_PROBLEMS = ("UNCLEAN", "FAILED")


def case_key(case_id):
    return [int(x) if x.isdigit() else x for x in case_id.split(".")]


def load_results(report_dir, agent):
    path = os.path.join(report_dir, "index.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        index = json.load(f)
    if agent in index:
        return index[agent]
    # A single agent under another name (e.g. a spec written by hand): take it.
    return next(iter(index.values())) if len(index) == 1 else {}


def summarise(results, expected):
    groups = {b: [] for b in BEHAVIOURS}
    close_problems = {}
    close_wrong_code = []
    for cid in sorted(results, key=case_key):
        r = results[cid]
        behaviour = r.get("behavior")
        # Anything unexpected (e.g. a missing field) counts as FAILED, never as OK.
        groups[behaviour if behaviour in groups else "FAILED"].append(cid)
        close = r.get("behaviorClose")
        if close in CLOSE_PROBLEMS:
            close_problems[cid] = close
        elif close == "WRONG CODE":
            close_wrong_code.append(cid)
    missing = sorted(set(expected) - set(results), key=case_key)
    return groups, missing, close_problems, close_wrong_code


def started_cases(report_dir):
    """Case ids in the order wstest started them (from wstest.log)."""
    log = os.path.join(report_dir, "wstest.log")
    if not os.path.exists(log):
        return []
    with open(log, errors="replace") as f:
        return re.findall(r"^Running test case ID (\S+) ", f.read(), re.M)


def show(label, ids):
    if not ids:
        return
    text = " ".join(ids)
    print(
        textwrap.fill(
            text,
            width=100,
            initial_indent="autobahn:   %s (%d): " % (label, len(ids)),
            subsequent_indent="autobahn:       ",
            break_on_hyphens=False,
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report-dir", required=True, help="wstest outdir (holds index.json)")
    ap.add_argument("--agent", default="switchboard")
    ap.add_argument("--expected", required=True, help="JSON list of the case ids that should have run")
    ap.add_argument("--out", required=True, help="where to write summary.json")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--target", default="")
    ap.add_argument("--url", default="")
    ap.add_argument("--cases", default="*")
    ap.add_argument("--exclude", default="")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--wstest-rc", type=int, default=0)
    ap.add_argument("--server-status", default="none", help="alive | none | <exit status>")
    a = ap.parse_args()

    with open(a.expected) as f:
        expected = [str(c) for c in json.load(f)]
    results = load_results(a.report_dir, a.agent)
    groups, missing, close_problems, close_wrong = summarise(results or {}, expected)
    timed_out = a.wstest_rc in (124, 137)
    server_died = a.server_status not in ("alive", "none")

    problems = []
    if groups["FAILED"]:
        problems.append("%d FAILED" % len(groups["FAILED"]))
    if missing:
        problems.append("%d missing" % len(missing))
    if server_died:
        problems.append("server died (status %s)" % a.server_status)
    if timed_out:
        problems.append("wstest timed out")
    if a.strict and groups["NON-STRICT"]:
        problems.append("%d NON-STRICT (--strict)" % len(groups["NON-STRICT"]))
    if a.strict and close_problems:
        problems.append("%d unclean/failed closes (--strict)" % len(close_problems))
    started = started_cases(a.report_dir)
    last_started = started[-1] if started else None
    if not results and not (timed_out or server_died):
        result, code = "error", 2
    elif problems:
        result, code = "fail", 1
    else:
        result, code = "pass", 0

    print(
        "autobahn: %d OK, %d NON-STRICT, %d FAILED, %d INFORMATIONAL, %d UNIMPLEMENTED, "
        "%d missing; %d close problems (of %d cases, %ds)"
        % (
            len(groups["OK"]),
            len(groups["NON-STRICT"]),
            len(groups["FAILED"]),
            len(groups["INFORMATIONAL"]),
            len(groups["UNIMPLEMENTED"]),
            len(missing),
            len(close_problems),
            len(expected),
            a.elapsed,
        )
    )
    show("FAILED", groups["FAILED"])
    show("missing (no result: server down, crashed or hung?)", missing)
    show("NON-STRICT", groups["NON-STRICT"])
    show("close UNCLEAN/FAILED", ["%s=%s" % kv for kv in sorted(close_problems.items(), key=lambda kv: case_key(kv[0]))])
    show("close WRONG CODE (informational)", close_wrong)
    show("INFORMATIONAL", groups["INFORMATIONAL"])
    show("UNIMPLEMENTED", groups["UNIMPLEMENTED"])

    summary = {
        "result": result,
        "problems": problems,
        "strict": a.strict,
        "target": a.target,
        "url": a.url,
        "cases": a.cases,
        "exclude": a.exclude,
        "expected": len(expected),
        "counts": {
            **{b: len(groups[b]) for b in BEHAVIOURS},
            "missing": len(missing),
            "close_unclean_or_failed": len(close_problems),
            "close_wrong_code": len(close_wrong),
        },
        "non_ok": {
            "NON-STRICT": groups["NON-STRICT"],
            "FAILED": groups["FAILED"],
            "INFORMATIONAL": groups["INFORMATIONAL"],
            "UNIMPLEMENTED": groups["UNIMPLEMENTED"],
            "missing": missing,
            "close_unclean_or_failed": close_problems,
            "close_wrong_code": close_wrong,
        },
        "elapsed_s": a.elapsed,
        "cases_started": len(set(started)),
        "last_case_started": last_started,
        "wstest_exit": a.wstest_rc,
        "wstest_timed_out": timed_out,
        "server_status": a.server_status,
        "report_dir": a.report_dir,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")

    if result == "error":
        log = os.path.join(a.report_dir, "wstest.log")
        why = ""
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                m = re.findall(r"^.*(?:Connection|refused|Error).*$", f.read(), re.M)
            why = ": " + m[0].strip() if m else ""
        print("autobahn: ERROR no case produced a result%s (see %s)" % (why, log))
    elif problems:
        if missing and last_started:
            print(
                "autobahn: wstest started %d of %d cases; the last one started was %s"
                % (len(set(started)), len(expected), last_started)
            )
        print("autobahn: FAIL: " + ", ".join(problems))
    else:
        print("autobahn: PASS" + (" (--strict)" if a.strict else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
