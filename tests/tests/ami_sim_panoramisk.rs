//! A third-party AMI client library against `ami-sim`: Python's `panoramisk` (asyncio,
//! PyPI, pinned to 1.4) logs in (plain and MD5 challenge), runs QueueStatus and
//! CoreShowChannels, originates a call and hangs up a live channel, and receives live
//! events. The Python script below prints what it saw as JSON; this test checks it
//! against what a real Asterisk 22 sends (`proto/tests/fixtures/ami/`).
//!
//! The library lives in a virtualenv that `.ci/run` (and `scripts/test.sh`) install:
//! `/opt/switchboard-panoramisk` (`python3 -m venv` + `pip install panoramisk==1.4`), or
//! the interpreter named by `SWITCHBOARD_PANORAMISK_PYTHON`. Without it this test FAILS
//! (it never skips).

use std::path::PathBuf;
use std::time::Duration;

use switchboard_e2e::serde_json::Value;
use switchboard_e2e::*;

const DEFAULT_PYTHON: &str = "/opt/switchboard-panoramisk/bin/python";

const SCRIPT: &str = r#"
import asyncio, hashlib, json, sys
from importlib.metadata import version
from panoramisk import Manager

PORT = int(sys.argv[1])
out = {"panoramisk": version("panoramisk")}

def new_manager(**kw):
    # No keep-alive pings or reconnections during the test.
    return Manager(host="127.0.0.1", port=PORT, ping_delay=3600, ping_interval=3600,
                   reconnect_timeout=3600, **kw)

async def until(cond, secs, what):
    for _ in range(int(secs / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise SystemExit("timed out waiting for " + what)

async def plain():
    events = []
    m = new_manager(username="admin", secret="amp111")
    m.register_event("*", lambda mgr, ev: events.append(ev))
    await m.connect()
    await until(lambda: m.authenticated, 10, "the plain login")
    out["plain_login"] = True
    out["version"] = m.protocol.version

    qs = await asyncio.wait_for(m.send_action({"Action": "QueueStatus"}), 10)
    out["queuestatus"] = [{"event": x.event, "response": x.response, "actionid": x.actionid,
                           "queue": x.queue, "listitems": x.listitems} for x in qs]
    out["queuestatus_id"] = qs[0].actionid

    # Calls are generated: wait until one is up, then hang it up (a channel may end by
    # itself between the list and the Hangup: then take another).
    channel = None
    for _ in range(100):
        csc = await asyncio.wait_for(m.send_action({"Action": "CoreShowChannels"}), 10)
        items = [x for x in csc if x.event == "CoreShowChannel"]
        if not items:
            await asyncio.sleep(0.2)
            continue
        out["coreshowchannels"] = [{"event": x.event, "actionid": x.actionid,
                                    "channel": x.channel, "listitems": x.listitems}
                                   for x in csc]
        hung = await asyncio.wait_for(
            m.send_action({"Action": "Hangup", "Channel": items[0].channel}), 10)
        if hung.message == "No such channel":
            continue
        channel = items[0].channel
        out["hangup"] = {"channel": channel, "response": hung.response, "message": hung.message}
        break
    if channel is None:
        raise SystemExit("no channel hung up")
    await until(lambda: any(e.event == "Hangup" and e.channel == channel for e in events), 10,
                "the Hangup event")
    out["hangup_event"] = True

    # Originate, asynchronous: panoramisk waits for the OriginateResponse itself.
    orig = await asyncio.wait_for(m.send_action({
        "Action": "Originate", "Channel": "PJSIP/103", "Context": "from-internal",
        "Exten": "104", "Priority": "1", "Async": "true", "Timeout": "60000",
        "CallerID": "Panoramisk <555>"}), 90)
    out["originate"] = [{"event": x.event, "response": x.response, "message": x.message,
                         "actionid": x.actionid, "reason": x.reason} for x in orig]

    out["event_names"] = sorted({e.event for e in events})
    out["events"] = len(events)
    newchannel = next(e for e in events if e.event == "Newchannel")
    # panoramisk adds a "content" key of its own (a response body).
    out["newchannel_keys"] = [k for k in newchannel.keys() if k != "content"]
    m.close()

async def md5():
    m = new_manager()
    await m.connect()
    await until(lambda: m.protocol is not None, 10, "the connection")
    ch = await asyncio.wait_for(m.send_action({"Action": "Challenge", "AuthType": "MD5"}), 10)
    key = hashlib.md5((ch.challenge + "amp111").encode()).hexdigest()
    r = await asyncio.wait_for(m.send_action(
        {"Action": "Login", "AuthType": "MD5", "Username": "admin", "Key": key,
         "Events": "off"}), 10)
    out["md5_login"] = {"response": r.response, "message": r.message}
    ping = await asyncio.wait_for(m.send_action({"Action": "Ping"}), 10)
    out["ping"] = ping.ping
    m.close()

async def main():
    await asyncio.wait_for(plain(), 120)
    await asyncio.wait_for(md5(), 30)
    print(json.dumps(out))

asyncio.run(main())
"#;

fn python() -> PathBuf {
    let path = std::env::var_os("SWITCHBOARD_PANORAMISK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
    assert!(
        path.exists(),
        "the third-party AMI client (Python panoramisk) is not installed: no {}. Run .ci/run \
         (as root), or `python3 -m venv /opt/switchboard-panoramisk && \
         /opt/switchboard-panoramisk/bin/pip install panoramisk==1.4`, or point \
         SWITCHBOARD_PANORAMISK_PYTHON at an interpreter that has it.",
        path.display()
    );
    let probe = run_program(&path, &["-c", "import panoramisk"], Duration::from_secs(30));
    assert!(
        probe.status.success(),
        "the third-party AMI client (Python panoramisk) is not installed at {}: run .ci/run \
         (as root) or `python3 -m venv /opt/switchboard-panoramisk && \
         /opt/switchboard-panoramisk/bin/pip install panoramisk==1.4`, or point \
         SWITCHBOARD_PANORAMISK_PYTHON at an interpreter that has it.\n{}",
        path.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    path
}

#[test]
fn panoramisk_logs_in_lists_originates_hangs_up_and_receives_events() {
    let python = python();
    let server = Server::start_ami_sim(&["--calls-per-sec", "3", "--seed", "21"]);
    let port = server.port().to_string();
    let out = run_program(&python, &["-c", SCRIPT, &port], Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the panoramisk script failed ({:?}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["panoramisk"], "1.4");
    assert_eq!(v["plain_login"], true);
    assert_eq!(
        v["version"], "11.0.0",
        "the banner's AMI version as panoramisk read it"
    );

    // QueueStatus: the start response, items, the Complete event; one ActionID on all.
    let qs = v["queuestatus"].as_array().unwrap();
    let id = &v["queuestatus_id"];
    assert!(qs.iter().all(|m| &m["actionid"] == id), "{qs:?}");
    assert_eq!(qs[0]["response"], "Success");
    let last = qs.last().unwrap();
    assert_eq!(last["event"], "QueueStatusComplete");
    let items: Vec<&Value> = qs[1..qs.len() - 1].iter().collect();
    assert_eq!(last["listitems"], items.len().to_string());
    assert_eq!(
        items.iter().filter(|m| m["event"] == "QueueParams").count(),
        2
    );
    assert_eq!(
        items.iter().filter(|m| m["event"] == "QueueMember").count(),
        8
    );

    let csc = v["coreshowchannels"].as_array().unwrap();
    assert_eq!(csc.last().unwrap()["event"], "CoreShowChannelsComplete");
    let n = csc
        .iter()
        .filter(|m| m["event"] == "CoreShowChannel")
        .count();
    assert!(n >= 1);
    assert_eq!(csc.last().unwrap()["listitems"], n.to_string());

    assert_eq!(v["hangup"]["response"], "Success");
    assert_eq!(v["hangup"]["message"], "Channel Hungup");
    assert_eq!(v["hangup_event"], true);

    let orig = v["originate"].as_array().unwrap();
    assert_eq!(orig[0]["message"], "Originate successfully queued");
    let resp = orig.last().unwrap();
    assert_eq!(resp["event"], "OriginateResponse");
    assert_eq!(resp["actionid"], orig[0]["actionid"]);
    assert!(
        resp["response"] == "Success" || resp["response"] == "Failure",
        "{resp}"
    );

    // Live events with Asterisk 22's names and fields.
    let names: Vec<&str> = v["event_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "FullyBooted",
        "SuccessfulAuth",
        "Newchannel",
        "Newstate",
        "Hangup",
        "DialBegin",
    ] {
        assert!(names.contains(&expected), "no {expected} among {names:?}");
    }
    let keys: Vec<&str> = v["newchannel_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let lower: Vec<String> = keys.iter().map(|k| k.to_ascii_lowercase()).collect();
    assert_eq!(
        lower,
        [
            "event",
            "privilege",
            "channel",
            "channelstate",
            "channelstatedesc",
            "calleridnum",
            "calleridname",
            "connectedlinenum",
            "connectedlinename",
            "language",
            "accountcode",
            "context",
            "exten",
            "priority",
            "uniqueid",
            "linkedid"
        ],
        "Newchannel's fields (asterisk22-local.txt)"
    );

    assert_eq!(v["md5_login"]["response"], "Success");
    assert_eq!(v["md5_login"]["message"], "Authentication accepted");
    assert_eq!(v["ping"], "Pong");
}
