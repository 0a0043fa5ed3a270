//! End-to-end tests of `ami-sim`, the simulated Asterisk PBX: the real binary on loopback,
//! driven by the harness's plain TCP AMI client (no AMI library), each test with its
//! own server. What a real Asterisk answers is taken from the captures in
//! `proto/tests/fixtures/ami/`.
//!
//! No timing assertions beyond lower bounds that cannot flake (the failed-login delay,
//! a stall, a fault period) and the upper bound of `slow-write` (the server cannot write
//! faster than the cap, whatever the machine does).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchboard_e2e::asterisk::{Ami, AmiMsg as Msg, md5_hex};
use switchboard_e2e::*;

const LONG: Duration = Duration::from_secs(20);

/// Connects and checks the banner of ami-sim's default version (Asterisk 22).
fn open(addr: SocketAddr) -> Ami {
    let a = Ami::connect(addr);
    assert_eq!(a.banner(), "Asterisk Call Manager/11.0.0");
    a
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("proto/tests/fixtures/ami").join(name)
}

fn ami_sim(args: &[&str]) -> Server {
    Server::start_ami_sim(args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// =====================================================================================
// Sessions
// =====================================================================================

#[test]
fn banner_per_asterisk_version() {
    for (v, banner) in [
        ("16", "Asterisk Call Manager/5.0.4"),
        ("18", "Asterisk Call Manager/7.0.3"),
        ("20", "Asterisk Call Manager/9.0.0"),
        ("22", "Asterisk Call Manager/11.0.0"),
    ] {
        let server = ami_sim(&["--asterisk-version", v, "--no-calls"]);
        let mut a = Ami::connect_raw(server.addr());
        assert_eq!(a.line(DEFAULT_TIMEOUT), banner);
        // The banner is one line, with no empty line after it: nothing else comes.
        assert!(a.next(Duration::from_millis(300)).is_none());
        assert!(a.pending().is_empty(), "{:?}", text(a.pending()));
        if v == "16" {
            a.login_events("admin", "amp111", Some("off"));
            a.action("Command", "c-1", &[("Command", "core show version")]);
            let r = a.response("c-1");
            assert_eq!(r.get("Message"), Some("Command output follows"));
            assert!(
                r.get("Output").unwrap().starts_with("Asterisk 16.28.0 "),
                "{}",
                r.raw
            );
        }
    }
    let default = ami_sim(&["--no-calls"]);
    open(default.addr());
}

#[test]
fn permission_denied_before_login_then_plain_login_and_fully_booted() {
    let server = ami_sim(&["--no-calls"]);
    let mut a = open(server.addr());
    for action in ["Ping", "Originate", "QueueStatus", "NoSuchThing"] {
        a.action(action, "x-1", &[]);
        let r = a.next(DEFAULT_TIMEOUT).unwrap();
        assert_eq!(
            r.raw,
            "Response: Error\r\nActionID: x-1\r\nMessage: Permission denied\r\n\r\n"
        );
    }
    a.send_raw("Action: Login\r\nActionID: kit-1\r\nUsername: admin\r\nSecret: amp111\r\n\r\n");
    // asterisk22-local.txt: the response, FullyBooted, SuccessfulAuth (security class).
    let r = a.next(DEFAULT_TIMEOUT).unwrap();
    assert_eq!(
        r.raw,
        "Response: Success\r\nActionID: kit-1\r\nMessage: Authentication accepted\r\n\r\n"
    );
    let fb = a.next(DEFAULT_TIMEOUT).unwrap();
    assert_eq!(fb.event(), Some("FullyBooted"));
    assert_eq!(
        fb.keys(),
        ["Event", "Privilege", "Uptime", "LastReload", "Status"]
    );
    assert_eq!(fb.get("Privilege"), Some("system,all"));
    assert_eq!(fb.get("Status"), Some("Fully Booted"));
    let sa = a.next(DEFAULT_TIMEOUT).unwrap();
    assert_eq!(sa.event(), Some("SuccessfulAuth"), "{}", sa.raw);
    assert_eq!(
        sa.keys(),
        [
            "Event",
            "Privilege",
            "EventTV",
            "Severity",
            "Service",
            "EventVersion",
            "AccountID",
            "SessionID",
            "LocalAddress",
            "RemoteAddress",
            "UsingPassword",
            "SessionTV"
        ]
    );
    assert_eq!(sa.get("AccountID"), Some("admin"));
    assert_eq!(
        sa.get("RemoteAddress"),
        Some(format!("IPV4/TCP/127.0.0.1/{}", a.local_addr().port()).as_str())
    );
    // Logged in now: Ping works; Logoff says goodbye and closes.
    a.action("Ping", "p-1", &[]);
    let p = a.response("p-1");
    assert_eq!(p.keys(), ["Response", "ActionID", "Ping", "Timestamp"]);
    assert_eq!(p.get("Ping"), Some("Pong"));
    let ts = p.get("Timestamp").unwrap();
    let (secs, micros) = ts.split_once('.').unwrap();
    assert!(
        secs.parse::<u64>().unwrap() > 1_700_000_000 && micros.len() == 6,
        "{ts}"
    );
    a.action("Logoff", "lo-1", &[]);
    let bye = a.response("lo-1");
    assert_eq!(
        bye.raw,
        "Response: Goodbye\r\nActionID: lo-1\r\nMessage: Thanks for all the fish.\r\n\r\n"
    );
    assert!(
        a.until_closed(DEFAULT_TIMEOUT).is_some(),
        "not closed after Logoff"
    );
}

#[test]
fn md5_login() {
    let server = ami_sim(&["--no-calls", "--user", "lab:s3cret"]);
    let mut a = open(server.addr());
    a.action("Challenge", "ch-1", &[("AuthType", "MD5")]);
    let c = a.response("ch-1");
    assert_eq!(c.keys(), ["Response", "ActionID", "Challenge"]);
    let challenge = c.get("Challenge").unwrap().to_string();
    assert!(challenge.bytes().all(|b| b.is_ascii_digit()), "{challenge}");
    let key = md5_hex(format!("{challenge}s3cret").as_bytes());
    a.action(
        "Login",
        "li-1",
        &[
            ("AuthType", "MD5"),
            ("Username", "lab"),
            ("Key", &key),
            ("Events", "off"),
        ],
    );
    let r = a.next(DEFAULT_TIMEOUT).unwrap();
    assert_eq!(
        r.raw,
        "Response: Success\r\nActionID: li-1\r\nMessage: Authentication accepted\r\n\r\n"
    );
    // Events: off: no FullyBooted (asterisk16-md5.bin), and Ping works.
    a.action("Ping", "p-1", &[]);
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().get("ActionID"),
        Some("p-1")
    );

    // A wrong key fails like a wrong secret.
    let mut b = open(server.addr());
    b.action("Challenge", "ch-2", &[("AuthType", "MD5")]);
    let c = b.response("ch-2");
    let wrong = md5_hex(format!("{}amp111", c.get("Challenge").unwrap()).as_bytes());
    b.action(
        "Login",
        "li-2",
        &[("AuthType", "MD5"), ("Username", "lab"), ("Key", &wrong)],
    );
    assert_eq!(
        b.response("li-2").get("Message"),
        Some("Authentication failed")
    );
    assert!(b.until_closed(DEFAULT_TIMEOUT).is_some());
}

#[test]
fn bad_login_waits_a_second_then_closes() {
    let server = ami_sim(&["--no-calls"]);
    let mut a = open(server.addr());
    let t = Instant::now();
    a.action(
        "Login",
        "bad-1",
        &[("Username", "admin"), ("Secret", "wrong")],
    );
    let rest = a
        .until_closed(DEFAULT_TIMEOUT)
        .expect("closed after a failed login");
    let elapsed = t.elapsed();
    // asterisk16-badlogin.bin, byte for byte, then the close.
    assert_eq!(
        text(&rest),
        "Response: Error\r\nActionID: bad-1\r\nMessage: Authentication failed\r\n\r\n"
    );
    assert!(
        elapsed >= Duration::from_secs(1),
        "answered after {elapsed:?}"
    );
}

#[test]
fn unknown_missing_too_long_too_many_bare_lf_lower_case() {
    let server = ami_sim(&["--no-calls"]);
    let mut a = open(server.addr());
    a.login_events("admin", "amp111", Some("off"));
    // asterisk16-edge.bin and asterisk16-md5.bin, message for message.
    a.send_raw("Action: NoSuchThing\r\nActionID: u-1\r\n\r\n");
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().raw,
        "Response: Error\r\nActionID: u-1\r\nMessage: Invalid/unknown command: NoSuchThing. \
         Use Action: ListCommands to show available commands.\r\n\r\n"
    );
    a.send_raw("ActionID: noaction-1\r\nFoo: bar\r\n\r\n");
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().raw,
        "Response: Error\r\nActionID: noaction-1\r\nMessage: Missing action in request\r\n\r\n"
    );
    let long = "x".repeat(3000);
    a.send_raw(&format!(
        "Action: Ping\r\nActionID: long-1\r\nX-Long: {long}\r\n\r\n"
    ));
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().raw,
        "Response: Error\r\nActionID: long-1\r\nMessage: Failed to parse message: line too long\r\n\r\n"
    );
    let mut many = String::from("Action: Ping\r\nActionID: many-1\r\n");
    for i in 0..140 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    a.send_raw(&many);
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().raw,
        "Response: Error\r\nActionID: many-1\r\nMessage: Too many lines in message or allocation failure\r\n\r\n"
    );
    // The session goes on: bare LF, no space after the colon, lower-case keys and
    // action names, duplicate ActionID (the first wins).
    a.send_raw("Action: Ping\nActionID: lf-1\n\n");
    a.send_raw("Action:Ping\r\nActionID: nospace-1\r\n\r\n");
    a.send_raw("action: ping\r\nactionid: lower-1\r\n\r\n");
    a.send_raw("Action: PING\r\nActionID: dup-1\r\nActionID: dup-2\r\n\r\n");
    for id in ["lf-1", "nospace-1", "lower-1", "dup-1"] {
        let r = a.next(DEFAULT_TIMEOUT).unwrap();
        assert_eq!(
            (r.get("ActionID"), r.get("Ping")),
            (Some(id), Some("Pong")),
            "{}",
            r.raw
        );
        assert_eq!(r.keys(), ["Response", "ActionID", "Ping", "Timestamp"]);
    }
    // No ActionID: none echoed.
    a.send_raw("Action: Ping\r\n\r\n");
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().keys(),
        ["Response", "Ping", "Timestamp"]
    );
}

#[test]
fn read_only_user_is_denied_originate_and_command() {
    let dir = std::env::temp_dir().join(format!("ami-sim-e2e-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        "[users.panel]\nsecret = \"panel\"\nread = \"call,agent\"\nwrite = \"agent\"\n",
    )
    .unwrap();
    let server = ami_sim(&[
        "--no-calls",
        "--user",
        "ro:ro:read=call:write=none",
        "--users",
        users.to_str().unwrap(),
    ]);
    // asterisk16-perm.bin.
    let mut a = open(server.addr());
    a.send_raw("Action: Login\r\nActionID: l\r\nUsername: ro\r\nSecret: ro\r\n\r\n");
    assert_eq!(
        a.response("l").get("Message"),
        Some("Authentication accepted")
    );
    a.action(
        "Originate",
        "o-1",
        &[
            ("Channel", "PJSIP/101"),
            ("Exten", "102"),
            ("Async", "true"),
        ],
    );
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().raw,
        "Response: Error\r\nActionID: o-1\r\nMessage: Permission denied\r\n\r\n"
    );
    a.action("Command", "c-3", &[("Command", "core show channels")]);
    assert_eq!(
        a.next(DEFAULT_TIMEOUT).unwrap().raw,
        "Response: Error\r\nActionID: c-3\r\nMessage: Permission denied\r\n\r\n"
    );
    // Lists without a write class are allowed.
    a.action("QueueSummary", "qs-1", &[]);
    assert_eq!(a.response("qs-1").get("EventList"), Some("start"));

    // The users file's user: agent actions yes, call control no.
    let mut p = open(server.addr());
    p.login_events("panel", "panel", None);
    p.action(
        "QueuePause",
        "qp-1",
        &[("Interface", "PJSIP/101"), ("Paused", "true")],
    );
    assert_eq!(p.response("qp-1").get("Response"), Some("Success"));
    p.action("Hangup", "h-1", &[("Channel", "PJSIP/101-00000000")]);
    assert_eq!(p.response("h-1").get("Message"), Some("Permission denied"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn login_timeout_and_unauthenticated_limit() {
    let server = ami_sim(&["--no-calls", "--auth-timeout", "1s", "--auth-limit", "2"]);
    let t = Instant::now();
    let mut a = open(server.addr());
    let mut b = open(server.addr());
    // A third session not logged in is closed at once, without a banner.
    let mut c = Ami::connect_raw(server.addr());
    assert_eq!(c.until_closed(DEFAULT_TIMEOUT), Some(Vec::new()));
    // Logging in frees a slot.
    b.login_events("admin", "amp111", Some("off"));
    let mut d = open(server.addr());
    // Not logged in after 1 s: closed without a word.
    assert_eq!(a.until_closed(DEFAULT_TIMEOUT), Some(Vec::new()));
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(d.until_closed(DEFAULT_TIMEOUT), Some(Vec::new()));
    // The logged-in one stays.
    b.action("Ping", "p", &[]);
    assert_eq!(b.response("p").get("Ping"), Some("Pong"));
}

// =====================================================================================
// Lists and actions
// =====================================================================================

/// Reads an event list after its `Response: Success` / `EventList: start`: the items
/// and the `...Complete` event.
fn read_list(a: &mut Ami, id: &str, complete: &str, will_follow: &str) -> (Vec<Msg>, Msg) {
    let r = a.response(id);
    assert_eq!(
        r.keys(),
        ["Response", "ActionID", "EventList", "Message"],
        "{}",
        r.raw
    );
    assert_eq!(r.get("Message"), Some(will_follow));
    let mut items = Vec::new();
    loop {
        let m = a.expect("list item", DEFAULT_TIMEOUT, |m| {
            m.get("ActionID") == Some(id)
        });
        if m.event() == Some(complete) {
            assert_eq!(
                &m.keys()[..4],
                ["Event", "ActionID", "EventList", "ListItems"]
            );
            assert_eq!(m.get("EventList"), Some("Complete"));
            assert_eq!(m.get("ListItems"), Some(items.len().to_string().as_str()));
            return (items, m);
        }
        assert!(m.event().is_some(), "{}", m.raw);
        // Items carry the ActionID, and no Privilege except Status items
        // (`Privilege: Call` in asterisk16-edge.bin).
        if complete == "StatusComplete" {
            assert_eq!(m.get("Privilege"), Some("Call"), "{}", m.raw);
        } else {
            assert!(m.get("Privilege").is_none(), "{}", m.raw);
        }
        items.push(m);
    }
}

#[test]
fn queue_status_and_core_show_channels_lists() {
    let server = ami_sim(&["--calls-per-sec", "5", "--seed", "3"]);
    let mut a = open(server.addr());
    a.login_events("admin", "amp111", Some("off"));
    a.action("QueueStatus", "qs-1", &[]);
    let (items, _) = read_list(
        &mut a,
        "qs-1",
        "QueueStatusComplete",
        "Queue status will follow",
    );
    let params: Vec<&Msg> = items
        .iter()
        .filter(|m| m.event() == Some("QueueParams"))
        .collect();
    let members: Vec<&Msg> = items
        .iter()
        .filter(|m| m.event() == Some("QueueMember"))
        .collect();
    assert_eq!(params.len(), 2, "the default PBX has two queues");
    assert_eq!(members.len(), 8, "four members each");
    // Field order of asterisk22-local.txt.
    assert_eq!(
        params[0].keys(),
        [
            "Event",
            "Queue",
            "Max",
            "Strategy",
            "Calls",
            "Holdtime",
            "TalkTime",
            "Completed",
            "Abandoned",
            "ServiceLevel",
            "ServicelevelPerf",
            "ServicelevelPerf2",
            "Weight",
            "ActionID"
        ]
    );
    assert_eq!(
        &members[0].keys()[..12],
        [
            "Event",
            "Queue",
            "Name",
            "Location",
            "StateInterface",
            "Membership",
            "Penalty",
            "CallsTaken",
            "LastCall",
            "LastPause",
            "LoginTime",
            "InCall"
        ]
    );
    a.action("QueueSummary", "qsum-1", &[]);
    let (items, _) = read_list(
        &mut a,
        "qsum-1",
        "QueueSummaryComplete",
        "Queue summary will follow",
    );
    assert!(items.iter().all(|m| m.event() == Some("QueueSummary")));

    // Wait for calls to be up, then list the channels.
    let deadline = Instant::now() + LONG;
    loop {
        a.action("CoreShowChannels", "csc-1", &[]);
        let (items, _) = read_list(
            &mut a,
            "csc-1",
            "CoreShowChannelsComplete",
            "Channels will follow",
        );
        if !items.is_empty() {
            for m in &items {
                assert_eq!(m.event(), Some("CoreShowChannel"));
                assert_eq!(
                    &m.keys()[..5],
                    [
                        "Event",
                        "ActionID",
                        "Channel",
                        "ChannelState",
                        "ChannelStateDesc"
                    ],
                    "{}",
                    m.raw
                );
                assert!(m.get("Channel").unwrap().starts_with("PJSIP/"));
            }
            break;
        }
        assert!(Instant::now() < deadline, "no channel up after {LONG:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    a.action("Status", "st-1", &[]);
    let (items, done) = read_list(
        &mut a,
        "st-1",
        "StatusComplete",
        "Channel status will follow",
    );
    assert!(items.iter().all(|m| m.event() == Some("Status")));
    assert_eq!(done.get("Items"), Some(items.len().to_string().as_str()));
    a.action("Command", "cmd-1", &[("Command", "core show channels")]);
    let r = a.response("cmd-1");
    assert_eq!(r.get("Message"), Some("Command output follows"));
    assert!(
        r.get("Output").unwrap().starts_with("Channel "),
        "{}",
        r.raw
    );
    assert!(
        r.raw.contains(" calls processed\r\n") || r.raw.contains(" call processed\r\n"),
        "{}",
        r.raw
    );
}

#[test]
fn every_simulated_action_is_answered_with_its_action_id() {
    let server = ami_sim(&["--no-calls"]);
    let mut a = open(server.addr());
    a.login_events("admin", "amp111", Some("off"));
    for (i, action) in [
        "Redirect",
        "Atxfer",
        "BlindTransfer",
        "MixMonitor",
        "StopMixMonitor",
        "QueueAdd",
        "QueueRemove",
        "QueuePause",
        "CoreSettings",
        "CoreStatus",
        "ListCommands",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("a-{i}");
        a.action(action, &id, &[("Channel", "PJSIP/nobody-00000000")]);
        let r = a.response(&id);
        assert_eq!(
            &r.keys()[..2],
            ["Response", "ActionID"],
            "{action}: {}",
            r.raw
        );
        assert!(
            !r.raw.contains("Invalid/unknown command") && !r.raw.contains("Permission denied"),
            "{action}: {}",
            r.raw
        );
    }
    a.action("CoreSettings", "cs", &[]);
    let r = a.response("cs");
    assert_eq!(r.get("AMIversion"), Some("11.0.0"), "{}", r.raw);
    assert_eq!(r.get("AsteriskVersion"), Some("22.10.1"), "{}", r.raw);
}

#[test]
fn originate_async_then_originate_response() {
    let server = ami_sim(&["--no-calls", "--seed", "5"]);
    let mut a = open(server.addr());
    a.login_events("admin", "amp111", None);
    a.action(
        "Originate",
        "o-1",
        &[
            ("Channel", "PJSIP/101"),
            ("Context", "from-internal"),
            ("Exten", "102"),
            ("Priority", "1"),
            ("CallerID", "\"Kit 157\" <2438>"),
            ("Timeout", "60000"),
            ("Async", "true"),
        ],
    );
    let r = a.response("o-1");
    assert_eq!(
        r.raw,
        "Response: Success\r\nActionID: o-1\r\nMessage: Originate successfully queued\r\n\r\n"
    );
    // The call's events, then OriginateResponse (ActionID first, as in the captures).
    let first = a.expect("Newchannel", LONG, |m| m.event() == Some("Newchannel"));
    assert!(
        first.get("Channel").unwrap().starts_with("PJSIP/101-"),
        "{}",
        first.raw
    );
    let or = a.expect("OriginateResponse", Duration::from_secs(70), |m| {
        m.event() == Some("OriginateResponse")
    });
    assert_eq!(
        &or.keys()[..4],
        ["Event", "Privilege", "ActionID", "Response"],
        "{}",
        or.raw
    );
    assert_eq!(or.get("ActionID"), Some("o-1"));
    assert!(
        matches!(or.get("Response"), Some("Success" | "Failure")),
        "{}",
        or.raw
    );
    assert!(or.get("Reason").is_some(), "{}", or.raw);
}

#[test]
fn hangup_of_a_live_channel_sends_its_hangup_events() {
    let server = ami_sim(&["--calls-per-sec", "4", "--seed", "11"]);
    let mut lister = open(server.addr());
    lister.login_events("admin", "amp111", Some("off"));
    let mut watcher = open(server.addr());
    watcher.login_events("admin", "amp111", Some("call"));
    // A channel listed may end by itself before the Hangup reaches it: then try another.
    let deadline = Instant::now() + LONG;
    let channel = loop {
        assert!(
            Instant::now() < deadline,
            "no channel hung up after {LONG:?}"
        );
        lister.action("CoreShowChannels", "c", &[]);
        let (items, _) = read_list(
            &mut lister,
            "c",
            "CoreShowChannelsComplete",
            "Channels will follow",
        );
        let Some(m) = items.first() else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let channel = m.get("Channel").unwrap().to_string();
        lister.action("Hangup", "h-1", &[("Channel", &channel), ("Cause", "16")]);
        let r = lister.response("h-1");
        if r.get("Message") == Some("No such channel") {
            continue;
        }
        assert_eq!(
            r.raw,
            "Response: Success\r\nActionID: h-1\r\nMessage: Channel Hungup\r\n\r\n"
        );
        break channel;
    };
    let h = watcher.expect("its Hangup", DEFAULT_TIMEOUT, |m| {
        m.event() == Some("Hangup") && m.get("Channel") == Some(channel.as_str())
    });
    assert_eq!(h.get("Privilege"), Some("call,all"));
    assert!(
        h.get("Cause").is_some() && h.get("Cause-txt").is_some(),
        "{}",
        h.raw
    );
    // It is gone.
    lister.action("Hangup", "h-2", &[("Channel", &channel)]);
    assert_eq!(
        lister.response("h-2").get("Message"),
        Some("No such channel")
    );
}

#[test]
fn event_masks_filter() {
    let server = ami_sim(&["--calls-per-sec", "10", "--seed", "2"]);
    let mut off = open(server.addr());
    off.login_events("admin", "amp111", Some("off"));
    let mut call = open(server.addr());
    call.login_events("admin", "amp111", Some("call"));
    let mut all = open(server.addr());
    all.login_events("admin", "amp111", Some("on"));

    let got_all = all.collect_for(Duration::from_secs(3));
    let classes_all: std::collections::BTreeSet<String> = got_all
        .iter()
        .filter_map(|m| m.get("Privilege").map(str::to_string))
        .collect();
    assert!(classes_all.contains("call,all"), "{classes_all:?}");
    assert!(
        classes_all.len() >= 3,
        "several classes with Events: on: {classes_all:?}"
    );

    let got_call = call.collect_for(Duration::from_millis(500));
    assert!(!got_call.is_empty(), "Events: call received nothing");
    for m in &got_call {
        assert!(
            m.get("Privilege").unwrap().split(',').any(|c| c == "call"),
            "{}",
            m.raw
        );
    }
    // Events: off: nothing but responses.
    let got_off = off.collect_for(Duration::from_millis(300));
    assert!(
        got_off.iter().all(|m| m.event().is_none()),
        "{:?}",
        got_off.first()
    );
    // The Events action turns them on, then off again.
    off.action("Events", "e-1", &[("EventMask", "agent")]);
    assert_eq!(
        off.response("e-1").raw,
        "Response: Success\r\nActionID: e-1\r\nEvents: On\r\n\r\n"
    );
    let got = off.collect_for(Duration::from_secs(3));
    assert!(
        got.iter().any(|m| m.event().is_some()),
        "no agent event in 3 s at 10 calls/s"
    );
    for m in got.iter().filter(|m| m.event().is_some()) {
        assert_eq!(m.get("Privilege"), Some("agent,all"), "{}", m.raw);
    }
    off.action("Events", "e-2", &[("EventMask", "off")]);
    assert_eq!(off.response("e-2").get("Events"), Some("Off"));
    off.collect_for(Duration::from_millis(100));
    let after = off.collect_for(Duration::from_millis(500));
    assert!(after.iter().all(|m| m.event().is_none()));

    // A user whose read classes exclude an event never gets it, whatever the mask.
    let server = ami_sim(&[
        "--calls-per-sec",
        "10",
        "--seed",
        "2",
        "--user",
        "ag:x:read=agent",
    ]);
    let mut ag = open(server.addr());
    ag.send_raw("Action: Login\r\nActionID: l\r\nUsername: ag\r\nSecret: x\r\nEvents: on\r\n\r\n");
    assert_eq!(
        ag.response("l").get("Message"),
        Some("Authentication accepted")
    );
    let got = ag.collect_for(Duration::from_secs(2));
    for m in got.iter().filter(|m| m.event().is_some()) {
        assert_eq!(m.get("Privilege"), Some("agent,all"), "{}", m.raw);
    }
}

#[test]
fn a_client_that_does_not_read_is_dropped_and_the_others_go_on() {
    // 5,000 events/s (~2 MB/s) with the default 4 MiB queue: the non-reader fills its
    // socket buffers and queue within seconds, while the reader survives the stalls a
    // busy test machine inflicts on its thread (over a second of buffering).
    let server = ami_sim(&["--events-per-sec", "5000", "--seed", "9"]);
    let mut reader = open(server.addr());
    reader.login_events("admin", "amp111", None);
    let mut sleeper = open(server.addr());
    sleeper.login_events("admin", "amp111", None);
    let port = sleeper.local_addr().port();
    // The sleeper stops reading; the reader keeps up. The sleeper is dropped once its
    // socket buffers and its queue are full (a write blocking 100 ms, or 4 MiB queued).
    let needle = format!("127.0.0.1:{port}: ");
    let deadline = Instant::now() + LONG;
    let dropped = loop {
        reader.collect_for(Duration::from_millis(100));
        let log = server.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(&needle) && (l.contains("dropped") || l.contains("blocked")))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the non-reading client was not dropped:\n{log}"
        );
    };
    // The reader still receives new events after that.
    reader.collect_for(Duration::from_millis(200));
    let more = reader.collect_for(Duration::from_millis(500));
    assert!(
        more.iter().filter(|m| m.event().is_some()).count() > 100,
        "the reading client stopped receiving after {dropped}"
    );
    // The sleeper finds its connection closed (after what the kernel had buffered).
    let closed = sleeper.until_closed(LONG);
    assert!(
        closed.is_some(),
        "the dropped client's socket is still open"
    );
}

// =====================================================================================
// Determinism, record, replay
// =====================================================================================

fn record(seed: &str, path: &std::path::Path) -> Vec<u8> {
    let mut server = ami_sim(&[
        "--seed",
        seed,
        "--calls-per-sec",
        "20",
        "--duration",
        "2s",
        "--record",
        path.to_str().unwrap(),
    ]);
    let status = server
        .wait_exit(LONG)
        .expect("ami-sim --duration 2s did not exit");
    assert!(status.success(), "{status:?}\n{}", server.log());
    std::fs::read(path).unwrap()
}

#[test]
fn same_seed_same_recording() {
    let dir = std::env::temp_dir().join(format!("ami-sim-e2e-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = record("42", &dir.join("a.rec"));
    let b = record("42", &dir.join("b.rec"));
    let c = record("43", &dir.join("c.rec"));
    let t = text(&a);
    assert!(
        t.starts_with("#ami-sim-record 1\n#banner Asterisk Call Manager/11.0.0\n"),
        "{}",
        &t[..200.min(t.len())]
    );
    assert!(t.contains("\n@0 "), "no FullyBooted frame");
    let events = t.matches("\r\nPrivilege: ").count();
    assert!(events > 200, "only {events} events in 2 s at 20 calls/s");
    assert!(a == b, "two runs with --seed 42 recorded different bytes");
    assert!(a != c, "--seed 43 recorded the same bytes as --seed 42");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replay_of_a_recording_serves_its_events() {
    let dir = std::env::temp_dir().join(format!("ami-sim-e2e-rr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r.rec");
    let rec = record("7", &path);
    // The recorded events, in order (every frame's payload), and the last frame's time.
    let mut expected = Vec::new();
    let mut last_us = 0u64;
    let mut pos = rec.iter().position(|&b| b == b'@').unwrap();
    while pos < rec.len() {
        let nl = pos + rec[pos..].iter().position(|&b| b == b'\n').unwrap();
        let head = std::str::from_utf8(&rec[pos + 1..nl]).unwrap();
        let (t, n) = head.split_once(' ').unwrap();
        last_us = t.parse().unwrap();
        let n: usize = n.parse().unwrap();
        expected.extend_from_slice(&rec[nl + 1..nl + 1 + n]);
        pos = nl + 1 + n;
    }
    assert!(last_us > 1_000_000, "the last event at {last_us} us");
    for speed in ["max", "2"] {
        let server = ami_sim(&["--replay", path.to_str().unwrap(), "--speed", speed]);
        let mut a = open(server.addr());
        let t = Instant::now();
        a.login_events("admin", "amp111", None);
        let deadline = Instant::now() + LONG;
        while a.pending().len() < expected.len() && a.fill(deadline) {}
        let elapsed = t.elapsed();
        assert_eq!(a.pending().len(), expected.len(), "--speed {speed}");
        assert!(
            a.pending() == expected,
            "--speed {speed}: the replayed stream differs from the recording"
        );
        if speed == "2" {
            // The recorded timing, twice as fast: the last event cannot come earlier.
            let min = Duration::from_micros(last_us / 2);
            assert!(elapsed >= min, "all of it within {elapsed:?} (< {min:?})");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The event stream of a capture after its login, computed independently of ami-sim:
/// split at every `\r\n\r\n`, skip up to the login response, keep `Event:` messages.
fn capture_events_after_login(capture: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let after_banner = capture.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut msgs = Vec::new();
    let mut pos = after_banner;
    while let Some(i) = capture[pos..].windows(4).position(|w| w == b"\r\n\r\n") {
        msgs.push(&capture[pos..pos + i + 4]);
        pos += i + 4;
    }
    let login = msgs
        .iter()
        .position(|m| m.windows(23).any(|w| w == b"Authentication accepted"))
        .unwrap();
    let events: Vec<u8> = msgs[login + 1..]
        .iter()
        .filter(|m| m.starts_with(b"Event: "))
        .flat_map(|m| m.iter().copied())
        .collect();
    let login_end: usize = after_banner + msgs[..=login].iter().map(|m| m.len()).sum::<usize>();
    (events, capture[login_end..].to_vec())
}

fn replay_and_read(capture: &std::path::Path, extra: &[&str], want: usize) -> Vec<u8> {
    let mut args = vec!["--replay", capture.to_str().unwrap(), "--speed", "max"];
    args.extend_from_slice(extra);
    let server = ami_sim(&args);
    let mut a = open(server.addr());
    a.send_raw("Action: Login\r\nActionID: me-1\r\nUsername: admin\r\nSecret: amp111\r\n\r\n");
    let r = a.next(DEFAULT_TIMEOUT).unwrap();
    assert_eq!(
        r.raw,
        "Response: Success\r\nActionID: me-1\r\nMessage: Authentication accepted\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.pending().len() < want && a.fill(deadline) {}
    // Nothing more comes after the stream.
    a.fill(Instant::now() + Duration::from_millis(300));
    a.take_pending()
}

#[test]
fn replay_of_a_real_capture_is_its_event_stream_byte_for_byte() {
    let path = fixture("asterisk22-local.txt");
    let capture = std::fs::read(&path).unwrap();
    let (events, all) = capture_events_after_login(&capture);
    assert!(events.len() > 5_000_000, "{}", events.len());
    let got = replay_and_read(&path, &[], events.len());
    assert_eq!(got.len(), events.len(), "bytes after login");
    if got != events {
        let at = got
            .iter()
            .zip(&events)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "differs at byte {at}: got {:?}, expected {:?}",
            text(&got[at.saturating_sub(80)..(at + 80).min(got.len())]),
            text(&events[at.saturating_sub(80)..(at + 80).min(events.len())])
        );
    }
    assert!(got.starts_with(b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 224\r\n"));

    // --replay-messages all: every byte of the capture after its login response.
    let got = replay_and_read(&path, &["--replay-messages", "all"], all.len());
    assert!(
        got == all,
        "--replay-messages all differs from the capture after login"
    );
}

// =====================================================================================
// Faults
// =====================================================================================

#[test]
fn fault_refuse_login() {
    let server = ami_sim(&["--no-calls", "--fault", "refuse-login"]);
    let mut a = open(server.addr());
    let t = Instant::now();
    a.action(
        "Login",
        "l-1",
        &[("Username", "admin"), ("Secret", "amp111")],
    );
    let rest = a.until_closed(DEFAULT_TIMEOUT).expect("closed");
    assert_eq!(
        text(&rest),
        "Response: Error\r\nActionID: l-1\r\nMessage: Authentication failed\r\n\r\n"
    );
    assert!(t.elapsed() >= Duration::from_secs(1));
}

#[test]
fn fault_disconnect_every() {
    let server = ami_sim(&["--calls-per-sec", "5", "--fault", "disconnect-every=1500ms"]);
    for _ in 0..2 {
        let mut a = open(server.addr());
        let t = Instant::now();
        a.login_events("admin", "amp111", None);
        let rest = a.until_closed(LONG).expect("not disconnected");
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert!(
            !text(&rest).contains("Goodbye"),
            "an abrupt close, not a Logoff"
        );
    }
}

#[test]
fn fault_garbage_every() {
    let server = ami_sim(&["--no-calls", "--fault", "garbage-every=300ms"]);
    let mut a = open(server.addr());
    a.login_events("admin", "amp111", None);
    let deadline = Instant::now() + DEFAULT_TIMEOUT;
    while !a
        .pending()
        .windows(22)
        .any(|w| w == b"~~ ami-sim garbage #2 ")
    {
        assert!(a.fill(deadline), "no garbage: {:?}", text(a.pending()));
    }
    let pos = a
        .pending()
        .windows(22)
        .position(|w| w == b"~~ ami-sim garbage #1 ")
        .unwrap();
    // Between two messages, one line that is no header, then an empty line.
    assert!(a.pending()[..pos].ends_with(b"\r\n\r\n"));
    assert!(a.pending()[pos..].starts_with(b"~~ ami-sim garbage #1 \x00\x7f\xfe\xff ~~\r\n\r\n"));
    // The session goes on.
    a.take_pending();
    a.action("Ping", "p", &[]);
    assert_eq!(a.response("p").get("Ping"), Some("Pong"));
}

#[test]
fn fault_stall() {
    // Stalled from 1 s to 2 s after login, and from 3 s to 4 s.
    let server = ami_sim(&["--no-calls", "--fault", "stall=1s/2s"]);
    let mut a = open(server.addr());
    a.login_events("admin", "amp111", Some("off"));
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        i += 1;
        let id = format!("p-{i}");
        let t = Instant::now();
        a.action("Ping", &id, &[]);
        assert_eq!(a.response(&id).get("Ping"), Some("Pong"));
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A Ping sent early in the stall waits for its end.
    assert!(
        worst >= Duration::from_millis(700),
        "longest Ping round trip {worst:?}"
    );
}

#[test]
fn fault_slow_write() {
    let server = ami_sim(&[
        "--calls-per-sec",
        "30",
        "--seed",
        "4",
        "--fault",
        "slow-write=2000",
    ]);
    let mut a = open(server.addr());
    a.send_raw("Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n");
    let t = Instant::now();
    let deadline = t + Duration::from_secs(3);
    let mut n = 0;
    while a.fill(deadline) {
        n = a.pending().len();
    }
    let secs = t.elapsed().as_secs_f64();
    // At most 2000 bytes/s (200 bytes per 100 ms slice, the first at once), and the
    // stream did flow.
    assert!(
        n as f64 <= 2000.0 * secs + 400.0,
        "{n} bytes in {secs:.2} s"
    );
    assert!(n >= 1000, "only {n} bytes in {secs:.2} s");
    assert!(!a.is_closed());
}

// =====================================================================================
// Helpers
// =====================================================================================

#[test]
fn md5_helper_matches_rfc_1321() {
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        md5_hex(b"942327271amp111"),
        "20faf2355ab676d923a0ddf11b6e7808"
    );
}
