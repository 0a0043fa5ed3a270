//! The AMI ingest end to end (PROTOCOL.md "PBX topics"): the real engine follows a real
//! `ami-sim` PBX (simulated calls, or a replay of a real Asterisk capture) and browsers
//! subscribed over WebSocket and SSE see every call start and end in order, a snapshot
//! first and then live messages with no gap and no duplicate; the session survives PBX
//! restarts, garbage, stalls and refused logins without disturbing any browser
//! connection; and the action gateway runs what a token grants and refuses the rest.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::ami::*;
use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

const USER: &str = "admin";
const SECRET: &str = "amp111";

/// `switchboard serve` following the simulated PBX at `ami`.
fn engine(ami: SocketAddr, extra: &[&str]) -> Server {
    ami_engine(ami, USER, SECRET, extra)
}

fn fixture(name: &str) -> String {
    workspace_root()
        .join("proto/tests/fixtures/ami")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn calls_reach_ws_and_sse_subscribers_snapshot_first_then_every_start_and_end() {
    // Stress mode: a warm PBX (thousands of channels) with short calls.
    let pbx = Server::start_ami_sim(&["--seed", "11", "--events-per-sec", "300", "--no-noise"]);
    let server = engine(pbx.addr(), &[]);
    wait_live(&server);
    let mut ws = Sub::ws(&server, "topic=ami.calls");
    let mut sse = Sub::sse(&server, "topic=ami.calls");

    let from_ws = collect(&mut ws, Duration::from_secs(6));
    let from_sse = collect(&mut sse, Duration::from_millis(500));
    let (_, ended_ws) = check_call_stream(&from_ws);
    let (_, ended_sse) = check_call_stream(&from_sse);
    assert!(
        ended_ws.len() >= 5,
        "a busy PBX for 6 s: only {} calls ended",
        ended_ws.len()
    );
    // The same router order reaches both transports: the SSE stream (subscribed a
    // moment later) is a suffix of the WebSocket's, after its own snapshot.
    let seq = |m: &Value| m["seq"].as_u64().unwrap();
    let (start, end) = (seq(&from_sse[0]), seq(from_ws.last().unwrap()));
    let ws_part: Vec<Value> = from_ws[1..]
        .iter()
        .filter(|m| seq(m) > start && seq(m) <= end)
        .cloned()
        .map(strip_pos)
        .collect();
    let sse_part: Vec<Value> = from_sse[1..]
        .iter()
        .filter(|m| seq(m) <= end)
        .cloned()
        .map(strip_pos)
        .collect();
    assert!(!sse_part.is_empty());
    assert_eq!(ws_part, sse_part);
    assert!(!ended_sse.is_empty());

    // Queues: a snapshot per queue of the simulated office, then updates (subscribed
    // now and read at once: a stress PBX's queue holds a thousand callers, and a
    // subscriber that does not read its updates soon passes --max-queued-bytes).
    let mut queues = Sub::ws(&server, "topic=ami.queue.*");
    let qs = collect(&mut queues, Duration::from_millis(500));
    let snapshots: BTreeSet<&str> = qs
        .iter()
        .take_while(|m| m["data"]["kind"] == "snapshot")
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        snapshots,
        BTreeSet::from(["ami.queue.sales", "ami.queue.support"]),
        "{qs:?}"
    );
    for m in qs.iter().skip(2) {
        assert_eq!(m["data"]["kind"], "update", "{m}");
        assert!(m["data"]["queue"]["members"].is_array(), "{m}");
    }
    assert!(total(&server, "switchboard_ami_published_total") > 0.0);
}

#[test]
fn a_late_subscriber_gets_the_state_at_its_snapshot_and_exactly_what_followed() {
    let pbx = Server::start_ami_sim(&["--seed", "5", "--calls-per-sec", "8", "--no-noise"]);
    let server = engine(pbx.addr(), &[]);
    wait_live(&server);
    let mut early = Sub::ws(&server, "topic=ami.calls");
    std::thread::sleep(Duration::from_secs(3));
    let mut late = Sub::ws(&server, "topic=ami.calls");
    let late_msgs = collect(&mut late, Duration::from_secs(2));
    let early_msgs = collect(&mut early, Duration::from_millis(800));
    check_call_stream(&early_msgs);
    let (snapshot_calls, _) = check_call_stream(&late_msgs);

    // The calls live at the snapshot's seq, as the early subscriber saw them.
    let at = late_msgs[0]["seq"].as_u64().unwrap();
    let mut live: BTreeSet<String> = early_msgs[0]["data"]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["linkedid"].as_str().unwrap().to_string())
        .collect();
    for m in early_msgs.iter().skip(1) {
        if m["seq"].as_u64().unwrap() > at {
            break;
        }
        let id = m["data"]["linkedid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match m["data"]["kind"].as_str().unwrap() {
            "started" => {
                live.insert(id);
            }
            "ended" => {
                live.remove(&id);
            }
            _ => {}
        }
    }
    assert_eq!(
        snapshot_calls, live,
        "the snapshot is the state at seq {at}"
    );
    assert!(!live.is_empty(), "8 calls/s: some must be live");
    // And what followed the snapshot is exactly what the early subscriber got after it.
    let after: Vec<Value> = early_msgs
        .iter()
        .filter(|m| m["seq"].as_u64().unwrap() > at)
        .take(late_msgs.len() - 1)
        .cloned()
        .map(strip_pos)
        .collect();
    let late_live: Vec<Value> = late_msgs[1..].iter().cloned().map(strip_pos).collect();
    assert_eq!(after, late_live[..after.len()]);
}

#[test]
fn replaying_real_asterisk_captures_leaves_no_live_call_and_ends_every_call() {
    // Fast, but not so fast that the replay is over before the subscribers are there.
    for (capture, speed) in [
        ("asterisk22-local.txt", "20"),
        ("asterisk16-calls.bin", "20"),
    ] {
        let path = fixture(capture);
        let pbx = Server::start_ami_sim(&["--replay", &path, "--speed", speed]);
        let server = engine(pbx.addr(), &[]);
        let mut calls = Sub::ws(&server, "topic=ami.calls");
        let mut events = Sub::sse(&server, "topic=ami.events");
        wait_live(&server);
        // The replay is over when the engine stops publishing (keep-alive answers go on
        // arriving, but publish nothing).
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = -1.0;
        loop {
            std::thread::sleep(Duration::from_millis(700));
            let now = total(&server, "switchboard_ami_published_total");
            if now == last {
                break;
            }
            assert!(Instant::now() < deadline, "{capture}: still publishing");
            last = now;
        }
        let text = metrics(server.addr());
        assert_eq!(sample(&text, "switchboard_ami_channels"), 0.0, "{capture}");
        assert_eq!(sample(&text, "switchboard_ami_calls"), 0.0, "{capture}");
        let msgs = collect(&mut calls, Duration::from_millis(500));
        let (snapshot, ended) = check_call_stream(&msgs);
        let started: BTreeSet<String> = msgs
            .iter()
            .filter(|m| m["data"]["kind"] == "started")
            .map(|m| m["data"]["linkedid"].as_str().unwrap().to_string())
            .chain(snapshot)
            .collect();
        assert_eq!(started, ended, "{capture}: every call ended");
        assert!(ended.len() >= 9, "{capture}: {} calls", ended.len());
        // The firehose never carries security/system events or the default noise.
        let fire = collect(&mut events, Duration::from_millis(500));
        assert_eq!(fire[0]["data"]["kind"], "snapshot");
        let mut names = BTreeMap::<String, usize>::new();
        for m in &fire[1..] {
            if m["data"]["kind"] != "event" {
                continue;
            }
            let name = m["data"]["event"]["Event"].as_str().unwrap().to_string();
            *names.entry(name).or_default() += 1;
            let privilege = m["data"]["event"]["Privilege"].as_str().unwrap_or("");
            assert!(
                !privilege.contains("security") && !privilege.starts_with("system"),
                "{m}"
            );
        }
        for noise in [
            "VarSet",
            "Newexten",
            "RTCPSent",
            "RTCPReceived",
            "Cdr",
            "CEL",
        ] {
            assert!(!names.contains_key(noise), "{capture}: {noise} published");
        }
        assert!(names.contains_key("Newchannel") && names.contains_key("Hangup"));
    }
}

#[test]
fn pbx_restarts_garbage_stalls_and_refused_logins_never_disturb_browsers() {
    // Garbage between messages: skipped and counted; the session and the call stream
    // go on without a gap.
    let pbx = Server::start_ami_sim(&[
        "--seed",
        "2",
        "--events-per-sec",
        "300",
        "--fault",
        "garbage-every=500ms",
    ]);
    let server = engine(pbx.addr(), &[]);
    wait_live(&server);
    let mut browser = Sub::ws(&server, "topic=chat.room&topic=ami.calls");
    wait_metrics(&server, "garbage skipped", |t| {
        sample(t, "switchboard_ami_garbage_total") >= 3.0
    });
    publish(server.addr(), "chat.room", br#"{"text":"still here"}"#);
    let msgs = collect(&mut browser, Duration::from_secs(1));
    let (chat, calls): (Vec<Value>, Vec<Value>) =
        msgs.into_iter().partition(|m| m["topic"] == "chat.room");
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert_eq!(chat[0]["data"]["text"], "still here");
    let (_, ended) = check_call_stream(&calls);
    assert!(!ended.is_empty());
    let text = metrics(server.addr());
    assert_eq!(sample(&text, "switchboard_ami_reconnects_total"), 0.0);
    assert_eq!(sample(&text, "switchboard_ami_up"), 1.0);
    drop(pbx);
    drop(server);

    // Restart: the PBX goes away and comes back on the same port.
    let mut pbx = Server::start_ami_sim(&["--seed", "3", "--calls-per-sec", "2"]);
    let port = pbx.port().to_string();
    let server = engine(pbx.addr(), &[]);
    wait_live(&server);
    let mut calls = Sub::sse(&server, "topic=ami.calls");
    pbx.kill();
    wait_health(&server, 503);
    let (_, body) = ami_health(&server);
    assert!(body.contains("ami: down"), "{body}");
    assert_eq!(
        http_request(server.addr(), "GET", "/healthz", &[], b"").status,
        200
    );
    let listen = format!("127.0.0.1:{port}");
    let _pbx = Server::start_program(
        bin("ami-sim"),
        &[
            "--listen",
            &listen,
            "--seed",
            "4",
            "--start-epoch",
            "1795300000",
            "--calls-per-sec",
            "2",
        ],
    );
    wait_live(&server);
    let msgs = collect(&mut calls, Duration::from_secs(1));
    let links: Vec<bool> = msgs
        .iter()
        .filter(|m| m["data"]["kind"] == "link")
        .map(|m| m["data"]["connected"].as_bool().unwrap())
        .collect();
    assert_eq!(links, [false, true], "{msgs:?}");
    check_call_stream(&msgs);
    drop(server);

    // A stalled PBX: unanswered pings end the session.
    let pbx = Server::start_ami_sim(&["--seed", "6", "--fault", "stall=3s/4s"]);
    let server = engine(pbx.addr(), &[]);
    wait_metrics(&server, "a stall detected", |t| {
        sample(t, "switchboard_ami_failures_total{kind=\"stalled\"}") >= 1.0
    });
    drop(server);
    drop(pbx);

    // A stream that is not AMI at all: a wrong banner, or a line longer than any AMI
    // line. The session ends (its framing cannot be trusted) and is tried again.
    for (bytes, kind) in [
        (b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), "bad_banner"),
        (
            [&b"Asterisk Call Manager/5.0.4\r\n"[..], &[b'x'; 70 * 1024]].concat(),
            "garbage",
        ),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pbx_addr = listener.local_addr().unwrap();
        let hostile = std::thread::spawn(move || {
            use std::io::Write;
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let _ = s.write_all(&bytes);
                // Held open: the engine must notice by itself.
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let server = engine(pbx_addr, &[]);
        let name = format!("switchboard_ami_failures_total{{kind=\"{kind}\"}}");
        wait_metrics(&server, kind, |t| sample(t, &name) >= 2.0);
        hostile.join().unwrap();
        assert_eq!(ami_health(&server).0, 503);
    }

    // Refused logins: retried with backoff, for ever, while everything else works.
    let pbx = Server::start_ami_sim(&["--fault", "refuse-login"]);
    let server = engine(pbx.addr(), &[]);
    wait_metrics(&server, "two refused logins", |t| {
        sample(t, "switchboard_ami_failures_total{kind=\"login_rejected\"}") >= 2.0
    });
    assert_eq!(ami_health(&server).0, 503);
    publish(server.addr(), "chat.x", b"1");
    let text = metrics(server.addr());
    assert_eq!(sample(&text, "switchboard_ami_up"), 0.0);
    // One attempt per backoff step at most (each refusal also waits a second).
    assert!(sample(&text, "switchboard_ami_connect_attempts_total") < 20.0);
}

// ---- the action gateway --------------------------------------------------------------

fn gateway_engine(pbx: SocketAddr, extra: &[&str]) -> Server {
    let mut args = vec!["--auth", "required", "--jwt-secret", JWT_SECRET];
    args.extend_from_slice(extra);
    engine(pbx, &args)
}

#[test]
fn the_gateway_runs_granted_actions_and_refuses_everything_else() {
    let pbx = Server::start_ami_sim(&["--seed", "9", "--no-calls"]);
    let server = gateway_engine(pbx.addr(), &["--ami-action-burst", "20"]);
    wait_live(&server);
    let token = action_token(json!({
        "actions": ["Originate", "Hangup", "QueueStatus", "QueuePause"],
        "endpoints": ["PJSIP/101"],
        "queues": ["sales"],
    }));
    let mut ws = ws_connect(&server.ws_url(&format!("/ws?topic=ami.calls&token={token}")));

    // Click-to-call from the user's own phone.
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Originate","ref":"c1","number":"102"}),
    );
    assert_eq!(r["ref"], "c1", "{r}");
    assert_eq!(r["ok"], true, "{r}");

    // A queue the token grants, and one it does not.
    let r = act(
        &mut ws,
        json!({"op":"action","action":"QueueStatus","ref":"q1","queue":"sales"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["events"].as_array().is_some_and(|e| !e.is_empty()), "{r}");
    let r = act(
        &mut ws,
        json!({"op":"action","action":"QueueStatus","ref":"q2","queue":"support"}),
    );
    assert_eq!(
        (r["ok"].clone(), r["code"].clone()),
        (json!(false), json!("forbidden"))
    );

    // Everything a browser must never do.
    let refused = [
        json!({"op":"action","action":"Command","command":"core show channels"}),
        json!({"op":"action","action":"Originate","number":"102","application":"System","data":"id"}),
        json!({"op":"action","action":"Originate","number":"102\r\nAction: Command"}),
        json!({"op":"action","action":"Originate","number":"102","context":"default"}),
        json!({"op":"action","action":"Originate","endpoint":"PJSIP/105","number":"102"}),
        json!({"op":"action","action":"Hangup","channel":"PJSIP/105-00000001"}),
        json!({"op":"action","action":"Redirect","channel":"PJSIP/101-00000001","exten":"200"}),
        json!({"op":"action","action":"QueuePause","interface":"PJSIP/102","queue":"sales","paused":true}),
        json!({"op":"action","action":"Setvar","variable":"X","value":"1"}),
        json!({"op":"action"}),
    ];
    for (i, a) in refused.iter().enumerate() {
        let mut a = a.clone();
        a["ref"] = json!(format!("bad{i}"));
        let r = act(&mut ws, a.clone());
        assert_eq!(r["ok"], false, "{a} -> {r}");
        assert_eq!(r["ref"], a["ref"], "{r}");
        let code = r["code"].as_str().unwrap();
        assert!(matches!(code, "forbidden" | "invalid"), "{a} -> {r}");
        assert!(!r["error"].as_str().unwrap().is_empty());
    }

    // A channel of her own endpoint that does not exist: the PBX says so (the engine
    // does not refuse it for not having seen it: Asterisk may report a click-to-call's
    // channel before announcing it).
    let r = act(
        &mut ws,
        json!({"op":"action","action":"Hangup","ref":"gone","channel":"PJSIP/101-0000ffff"}),
    );
    assert_eq!(
        (r["ok"].clone(), r["code"].clone(), r["error"].clone()),
        (json!(false), json!("pbx_error"), json!("No such channel")),
        "{r}"
    );

    // Over HTTP: the same gateway, statuses by result.
    let bearer = format!("Bearer {token}");
    let body = br#"{"action":"QueueStatus","queue":"sales","ref":"h1"}"#;
    let r = http_request(
        server.addr(),
        "POST",
        "/ami/action",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ref"], "h1");
    let r = http_request(server.addr(), "POST", "/ami/action", &[], body);
    assert_eq!(r.status, 401);
    let r = http_request(
        server.addr(),
        "POST",
        "/ami/action",
        &[("Authorization", &bearer)],
        br#"{"action":"Command","command":"sip show peers"}"#,
    );
    assert!(matches!(r.status, 400 | 403), "{} {}", r.status, r.text());
    let no_grants = action_token(json!({}));
    let r = http_request(
        server.addr(),
        "POST",
        "/ami/action",
        &[("Authorization", &format!("Bearer {no_grants}"))],
        body,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(total(&server, "switchboard_ami_action_results_total") >= 14.0);
}

#[test]
fn the_gateway_limits_each_user_rate() {
    let pbx = Server::start_ami_sim(&["--seed", "9", "--no-calls"]);
    let server = gateway_engine(
        pbx.addr(),
        &["--ami-action-burst", "3", "--ami-action-rate", "0.1"],
    );
    wait_live(&server);
    let token = action_token(json!({"actions": ["QueueStatus"], "queues": ["*"]}));
    let mut ws = ws_connect(&server.ws_url(&format!("/ws?topic=chat.x&token={token}")));
    let mut codes = Vec::new();
    for i in 0..5 {
        let r = act(
            &mut ws,
            json!({"op":"action","action":"QueueStatus","ref":format!("r{i}")}),
        );
        codes.push(if r["ok"] == true {
            "ok".to_string()
        } else {
            r["code"].as_str().unwrap().to_string()
        });
    }
    assert_eq!(codes, ["ok", "ok", "ok", "rate_limited", "rate_limited"]);
}
