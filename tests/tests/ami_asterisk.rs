//! The engine against a real Asterisk 16 (the private PBX of `switchboard_e2e::asterisk`:
//! Local channels, a queue `support` with two Local agents): calls driven on the PBX
//! reach browsers on `ami.calls` and `ami.queue.support` in order, a page that
//! subscribes mid-call gets the call in its snapshot, the action gateway originates,
//! transfers and hangs up real calls for a token that owns the endpoint (and nothing
//! else), and a PBX restart is
//! followed by a reconnect and a resynchronised state.
//!
//! Without Asterisk installed these tests print a note and pass, unless `CI` is set:
//! then they fail (`.ci/run` installs Asterisk and sets `CI`).

mod common;

use std::time::{Duration, Instant};

use common::ami::*;
use common::*;
use serde_json::{Value, json};
use switchboard_e2e::asterisk::*;
use switchboard_e2e::*;

const USER: &str = "switchboard";
const SECRET: &str = "s3cret-panel";

/// A private Asterisk and an engine following it (`None` without Asterisk outside CI).
fn setup(extra: &[&str]) -> Option<(Asterisk, Server)> {
    if !Asterisk::require() {
        return None;
    }
    let pbx = Asterisk::start(&[
        AmiUser::admin(USER, SECRET),
        AmiUser::admin("driver", "driver"),
    ]);
    let mut args = vec![
        "--ami-originate-context",
        CONTEXT,
        "--ami-transfer-context",
        CONTEXT,
    ];
    args.extend_from_slice(extra);
    let server = ami_engine(pbx.ami_addr(), USER, SECRET, &args);
    wait_live(&server);
    Some((pbx, server))
}

/// An AMI session of the test itself, to drive calls.
fn driver(pbx: &Asterisk) -> Ami {
    let mut ami = Ami::connect(pbx.ami_addr());
    ami.login("driver", "driver");
    ami
}

/// Reads `sub` until a message satisfies `f` (bounded); returns everything read.
fn until(sub: &mut Sub, what: &str, f: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = next_within(sub, left).unwrap_or_else(|| panic!("no {what}; got {got:#?}"));
        let done = f(&m);
        got.push(m);
        if done {
            return got;
        }
    }
}

/// Originates a two-party call (`call200`) and reads `calls` (subscribed to
/// `ami.calls`) until it is answered; returns what was read and its `Linkedid`.
fn answered_call(ami: &mut Ami, calls: &mut Sub) -> (Vec<Value>, String) {
    ami.originate_wait("c1", &format!("Local/call200@{CONTEXT}"));
    let got = until(calls, "an answered call", |m| kind_of(m) == "answered");
    let linkedid = got.last().unwrap()["data"]["linkedid"]
        .as_str()
        .unwrap()
        .to_string();
    (got, linkedid)
}

fn kind_of(m: &Value) -> &str {
    m["data"]["kind"].as_str().unwrap_or("")
}

#[test]
fn real_calls_reach_browsers_in_order_and_a_late_page_starts_from_the_snapshot() {
    let Some((pbx, server)) = setup(&[]) else {
        return;
    };
    let mut calls = Sub::ws(&server, "topic=ami.calls");
    let mut queue = Sub::sse(&server, "topic=ami.queue.support");
    let mut ami = driver(&pbx);

    // A two-party call: started, ringing, answered.
    let (mut got, linkedid) = answered_call(&mut ami, &mut calls);
    let kinds: Vec<&str> = got.iter().skip(1).map(kind_of).collect();
    assert_eq!(kinds.first(), Some(&"started"), "{got:#?}");
    assert!(kinds.contains(&"ringing"), "{kinds:?}");

    // A page opened mid-call gets the call in its snapshot, answered.
    let mut late = Sub::ws(&server, "topic=ami.calls&topic=ami.call.*");
    let snapshot = next_within(&mut late, Duration::from_secs(10)).expect("a snapshot");
    assert_eq!(snapshot["topic"], "ami.calls");
    assert_eq!(kind_of(&snapshot), "snapshot");
    let listed = snapshot["data"]["calls"].as_array().unwrap();
    let call = listed
        .iter()
        .find(|c| c["linkedid"] == linkedid.as_str())
        .unwrap_or_else(|| panic!("{linkedid} not in {snapshot}"));
    assert_eq!(call["state"], "answered", "{call}");
    let per_call = next_within(&mut late, Duration::from_secs(10)).expect("a call snapshot");
    assert_eq!(per_call["topic"], format!("ami.call.{linkedid}"));
    assert_eq!(per_call["data"]["call"]["linkedid"], linkedid.as_str());

    // A queue call: the caller waits, agent1 answers after 2 s.
    ami.originate_wait("q1", &format!("Local/300@{CONTEXT}"));
    let q = until(&mut queue, "a caller in the queue", |m| {
        m["data"]["queue"]["callers"]
            .as_array()
            .is_some_and(|c| c.len() == 1)
    });
    assert_eq!(kind_of(&q[0]), "snapshot", "{q:#?}");
    assert_eq!(
        q[0]["data"]["queue"]["members"].as_array().unwrap().len(),
        2
    );
    until(&mut queue, "the caller answered", |m| {
        m["data"]["queue"]["callers"]
            .as_array()
            .is_some_and(|c| c.is_empty())
    });

    // Everything hangs up: every call that started ends, last.
    pbx.cli("channel request hangup all");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(server.addr());
        if sample(&text, "switchboard_ami_calls") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "calls still live\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    got.extend(collect(&mut calls, Duration::from_millis(500)));
    let (_, ended) = check_call_stream(&got);
    assert!(ended.contains(&linkedid), "{got:#?}");
    assert_eq!(
        ended.len(),
        2,
        "the direct call and the queue call: {got:#?}"
    );
    let late_msgs = collect(&mut late, Duration::from_millis(300));
    assert!(
        late_msgs
            .iter()
            .any(|m| m["topic"] == "ami.calls" && kind_of(m) == "ended"),
        "{late_msgs:#?}"
    );
    assert_eq!(total(&server, "switchboard_ami_channels"), 0.0);
}

#[test]
fn the_gateway_originates_transfers_and_hangs_up_real_calls_for_the_owner_only() {
    let Some((pbx, server)) = setup(&["--auth", "required", "--jwt-secret", JWT_SECRET]) else {
        return;
    };
    let own = format!("Local/201@{CONTEXT}");
    let token = action_token(json!({
        "actions": ["Originate", "Hangup", "Redirect", "QueueStatus"],
        "endpoints": [own],
        "queues": [QUEUE],
    }));
    let mut ws = ws_connect(&server.ws_url(&format!("/ws?topic=ami.events&token={token}")));

    // Click-to-call: the user's endpoint answers, then the number is dialled.
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Originate","ref":"o1","endpoint":own,"number":"200"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["reason"], 4, "answered: {r}");

    // The user's own channel, as the OriginateResponse names it.
    let channel = r["event"]["Channel"].as_str().unwrap().to_string();
    assert!(channel.starts_with(&format!("{own}-")), "{r}");

    // Someone else's call cannot be touched.
    let mut ami = driver(&pbx);
    ami.originate_wait("x1", &format!("Local/call200@{CONTEXT}"));
    let other = loop {
        let v = ws.recv_json(Duration::from_secs(10)).expect("events");
        let event = &v["data"]["event"];
        if event["Event"] == "Newchannel"
            && event["Channel"]
                .as_str()
                .is_some_and(|c| c.starts_with("Local/call200@"))
        {
            break event["Channel"].as_str().unwrap().to_string();
        }
    };
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Hangup","ref":"h0","channel":other}),
    );
    assert_eq!(
        (r["ok"].clone(), r["code"].clone()),
        (json!(false), json!("forbidden"))
    );

    // The user's own: transferred (blind) to 205, which answers and hangs up.
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Redirect","ref":"t1","channel":channel,"exten":"205"}),
    );
    assert_eq!(r["ok"], true, "{r}");

    // A second click-to-call, hung up by the user.
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Originate","ref":"o2","endpoint":own,"number":"200"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let channel = r["event"]["Channel"].as_str().unwrap().to_string();
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Hangup","ref":"h1","channel":channel}),
    );
    assert_eq!(r["ok"], true, "{r}");

    let r = act(
        &mut ws,
        json!({"op":"action","action":"QueueStatus","ref":"s1","queue":QUEUE}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let members = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["Event"] == "QueueMember")
        .count();
    assert_eq!(members, 2, "{r}");
    // Nothing else reaches the PBX.
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Originate","ref":"o3","endpoint":own,"number":"200","application":"System","data":"touch /tmp/pwned"}),
    );
    assert_eq!(r["ok"], false, "{r}");
    pbx.cli("channel request hangup all");
}

#[test]
fn an_asterisk_restart_is_followed_by_a_reconnect_and_a_resynchronised_state() {
    let Some((mut pbx, server)) = setup(&[]) else {
        return;
    };
    let mut calls = Sub::sse(&server, "topic=ami.calls");
    let mut ami = driver(&pbx);
    let (mut got, linkedid) = answered_call(&mut ami, &mut calls);
    drop(ami);
    pbx.kill();
    wait_health(&server, 503);
    pbx.restart();
    wait_live(&server);
    // The call did not survive the PBX: it ends as lost, once.
    got.extend(until(&mut calls, "the lost call's end", |m| {
        kind_of(m) == "ended" && m["data"]["linkedid"] == linkedid.as_str()
    }));
    let ended = got.last().unwrap();
    assert_eq!(ended["data"]["reason"], "lost", "{ended}");
    let links: Vec<&Value> = got
        .iter()
        .filter(|m| kind_of(m) == "link")
        .map(|m| &m["data"]["connected"])
        .collect();
    assert_eq!(links.first(), Some(&&json!(false)), "{got:#?}");
    check_call_stream(&got);
    assert!(total(&server, "switchboard_ami_reconnects_total") >= 1.0);
    // And the new PBX's calls flow again.
    let mut ami = driver(&pbx);
    ami.originate_wait("c2", &format!("Local/call200@{CONTEXT}"));
    until(&mut calls, "a new call", |m| kind_of(m) == "started");
    pbx.cli("channel request hangup all");
}
