//! Actions: each one's reply bytes (fields in order, ActionID echoed) and its effect on
//! the model and on later events; lists show the current state with the right
//! ListItems; the error texts Asterisk uses.

use ami_sim::pbx::{AsteriskVersion, CallSpec, Event, Pbx, PbxConfig, Scenario};

const T0: u64 = 1_795_249_000_000_000;
const S: u64 = 1_000_000;

fn pbx() -> Pbx {
    Pbx::new(
        PbxConfig {
            generate: false,
            ..PbxConfig::default()
        },
        1,
        T0,
    )
}

fn text(b: &[bytes::Bytes]) -> Vec<String> {
    b.iter()
        .map(|m| String::from_utf8(m.to_vec()).expect("utf8"))
        .collect()
}

fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
}

/// Events due up to `t`, as text.
fn events(p: &mut Pbx, t: u64) -> Vec<String> {
    let mut out: Vec<Event> = Vec::new();
    p.advance(t, &mut out);
    out.iter()
        .map(|e| String::from_utf8(e.bytes.to_vec()).expect("utf8"))
        .collect()
}

fn names(evs: &[String]) -> Vec<&str> {
    evs.iter()
        .map(|e| field(e, "Event").unwrap_or(""))
        .collect()
}

/// An answered internal call, bridged by `T0 + 20 s`; returns (caller, callee) names.
fn bridged_call(p: &mut Pbx) -> (String, String, Vec<String>) {
    let spec = CallSpec {
        talk_s: Some(600.0),
        ring_s: Some(3.0),
        caller_hangs_up: Some(true),
        ..CallSpec::default()
    };
    p.start_call(T0 + S, Scenario::InternalAnswered, spec);
    let evs = events(p, T0 + 20 * S);
    let enters: Vec<&String> = evs
        .iter()
        .filter(|e| e.starts_with("Event: BridgeEnter"))
        .collect();
    assert_eq!(enters.len(), 2, "bridged: {:?}", names(&evs));
    let callee = field(enters[0], "Channel").expect("callee").to_string();
    let caller = field(enters[1], "Channel").expect("caller").to_string();
    (caller, callee, evs)
}

#[test]
fn hangup_ends_the_whole_call() {
    let mut p = pbx();
    let (caller, _, _) = bridged_call(&mut p);
    let r = text(&p.action(
        T0 + 20 * S,
        "Hangup",
        &[("Channel", &caller), ("Cause", "17")],
        Some("h1"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: h1\r\nMessage: Channel Hungup\r\n\r\n"]
    );
    let evs = events(&mut p, T0 + 20 * S);
    let n: Vec<&str> = names(&evs)
        .into_iter()
        .filter(|n| {
            !matches!(
                *n,
                "VarSet" | "Newexten" | "DeviceStateChange" | "QueueMemberStatus" | "Cdr"
            )
        })
        .collect();
    // asterisk22-local.txt: a Hangup action on the dialplan side of a bridged call.
    assert_eq!(
        n,
        [
            "BridgeLeave",
            "BridgeLeave",
            "BridgeDestroy",
            "SoftHangupRequest",
            "Hangup",
            "Hangup"
        ]
    );
    let hangup = evs
        .iter()
        .rfind(|e| e.starts_with("Event: Hangup"))
        .expect("Hangup");
    assert_eq!(field(hangup, "Channel"), Some(caller.as_str()));
    assert_eq!(
        (field(hangup, "Cause"), field(hangup, "Cause-txt")),
        (Some("17"), Some("User busy"))
    );
    assert!(evs.iter().any(|e| e.starts_with("Event: Cdr")));
    let s = p.stats();
    assert_eq!((s.channels_now, s.bridges_now, s.calls_up), (0, 0, 0));
    assert!(
        events(&mut p, T0 + 3600 * S).is_empty(),
        "nothing more for a call that ended"
    );
    assert_eq!(p.next_due(), None);
}

#[test]
fn hangup_errors() {
    let mut p = pbx();
    assert_eq!(
        text(&p.action(
            T0,
            "Hangup",
            &[("Channel", "PJSIP/999-00000000")],
            Some("h2")
        )),
        ["Response: Error\r\nActionID: h2\r\nMessage: No such channel\r\n\r\n"]
    );
    assert_eq!(
        text(&p.action(T0, "Hangup", &[], None)),
        ["Response: Error\r\nMessage: No channel specified\r\n\r\n"]
    );
}

#[test]
fn originate_creates_a_call_and_answers_later_with_originate_response() {
    let mut p = pbx();
    let r = text(&p.action(
        T0,
        "Originate",
        &[
            ("Channel", "PJSIP/110"),
            ("Context", "from-internal"),
            ("Exten", "111"),
            ("Priority", "1"),
            ("CallerID", "\"Desk\" <110>"),
            ("Async", "true"),
        ],
        Some("o1"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: o1\r\nMessage: Originate successfully queued\r\n\r\n"]
    );
    let evs = events(&mut p, T0 + 60 * S);
    let resp = evs
        .iter()
        .find(|e| e.starts_with("Event: OriginateResponse"))
        .expect("OriginateResponse");
    let keys: Vec<&str> = resp
        .split("\r\n")
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        [
            "Event",
            "Privilege",
            "ActionID",
            "Response",
            "Channel",
            "Context",
            "Exten",
            "Reason",
            "Uniqueid",
            "CallerIDNum",
            "CallerIDName"
        ]
    );
    assert_eq!(
        (
            field(resp, "ActionID"),
            field(resp, "Response"),
            field(resp, "Reason")
        ),
        (Some("o1"), Some("Success"), Some("4"))
    );
    assert!(field(resp, "Channel").is_some_and(|c| c.starts_with("PJSIP/110-")));
    // Then the dialplan runs: the originated phone dials 111.
    let n = names(&evs);
    let at = n
        .iter()
        .position(|x| *x == "OriginateResponse")
        .expect("pos");
    assert!(
        n[at..].contains(&"DialBegin") && n[at..].contains(&"BridgeEnter"),
        "{n:?}"
    );
}

#[test]
fn originate_failures_carry_their_reason() {
    let mut p = pbx();
    // No such endpoint: Failure, Reason 0, Uniqueid <unknown>, no channel.
    p.action(
        T0,
        "Originate",
        &[
            ("Channel", "PJSIP/999"),
            ("Exten", "101"),
            ("Context", "from-internal"),
        ],
        Some("f0"),
    );
    // Rings longer than its Timeout: Failure, Reason 3.
    p.action(
        T0,
        "Originate",
        &[
            ("Channel", "PJSIP/112"),
            ("Exten", "101"),
            ("Timeout", "100"),
            ("Context", "from-internal"),
        ],
        Some("f3"),
    );
    let evs = events(&mut p, T0 + 60 * S);
    let resp = |id: &str| {
        evs.iter()
            .find(|e| e.starts_with("Event: OriginateResponse") && field(e, "ActionID") == Some(id))
            .cloned()
            .expect(id)
    };
    let f0 = resp("f0");
    assert_eq!(
        (
            field(&f0, "Response"),
            field(&f0, "Reason"),
            field(&f0, "Uniqueid"),
            field(&f0, "Channel")
        ),
        (
            Some("Failure"),
            Some("0"),
            Some("<unknown>"),
            Some("PJSIP/999")
        )
    );
    let f3 = resp("f3");
    assert_eq!(
        (
            field(&f3, "Response"),
            field(&f3, "Reason"),
            field(&f3, "Channel")
        ),
        (Some("Failure"), Some("3"), Some("PJSIP/112"))
    );
    assert_eq!(p.stats().channels_now, 0);
    assert_eq!(
        text(&p.action(T0, "Originate", &[("Exten", "101")], Some("f9"))),
        ["Response: Error\r\nActionID: f9\r\nMessage: Channel not specified\r\n\r\n"]
    );
}

#[test]
fn redirect_moves_the_channel_and_drops_its_peer() {
    let mut p = pbx();
    let (caller, callee, _) = bridged_call(&mut p);
    let r = text(&p.action(
        T0 + 20 * S,
        "Redirect",
        &[
            ("Channel", &caller),
            ("Context", "from-internal"),
            ("Exten", "601"),
            ("Priority", "1"),
        ],
        Some("r1"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: r1\r\nMessage: Redirect successful\r\n\r\n"]
    );
    let evs = events(&mut p, T0 + 20 * S);
    let n = names(&evs);
    let hang = evs
        .iter()
        .find(|e| e.starts_with("Event: Hangup"))
        .expect("the peer hangs up");
    assert_eq!(field(hang, "Channel"), Some(callee.as_str()));
    let join = evs
        .iter()
        .find(|e| e.starts_with("Event: QueueCallerJoin"))
        .expect("joins the queue");
    assert_eq!(
        (field(join, "Channel"), field(join, "Queue")),
        (Some(caller.as_str()), Some("support"))
    );
    assert!(
        n.iter().position(|x| *x == "BridgeDestroy")
            < n.iter().position(|x| *x == "QueueCallerJoin")
    );
    // The queue shows the caller.
    let list = text(&p.action(
        T0 + 20 * S,
        "QueueStatus",
        &[("Queue", "support")],
        Some("q"),
    ));
    assert!(list.iter().any(
        |m| m.starts_with("Event: QueueEntry") && field(m, "Channel") == Some(caller.as_str())
    ));
    assert_eq!(
        text(&p.action(
            T0,
            "Redirect",
            &[("Channel", "PJSIP/1-1"), ("Exten", "101")],
            Some("r2")
        )),
        ["Response: Error\r\nActionID: r2\r\nMessage: Channel does not exist: PJSIP/1-1\r\n\r\n"]
    );
}

#[test]
fn blind_transfer_moves_the_peer_to_the_new_extension() {
    let mut p = pbx();
    let (caller, callee, _) = bridged_call(&mut p);
    let r = text(&p.action(
        T0 + 20 * S,
        "BlindTransfer",
        &[
            ("Channel", &caller),
            ("Context", "from-internal"),
            ("Exten", "115"),
        ],
        Some("b1"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: b1\r\nMessage: Transfer succeeded\r\n\r\n"]
    );
    let evs = events(&mut p, T0 + 40 * S);
    let bt = evs
        .iter()
        .find(|e| e.starts_with("Event: BlindTransfer"))
        .expect("BlindTransfer");
    assert_eq!(
        (
            field(bt, "TransfererChannel"),
            field(bt, "TransfereeChannel")
        ),
        (Some(caller.as_str()), Some(callee.as_str()))
    );
    assert_eq!(
        (
            field(bt, "Extension"),
            field(bt, "IsExternal"),
            field(bt, "Result")
        ),
        (Some("115"), Some("Yes"), Some("Success"))
    );
    let dial = evs
        .iter()
        .find(|e| e.starts_with("Event: DialBegin"))
        .expect("the transferee dials");
    assert_eq!(field(dial, "Channel"), Some(callee.as_str()));
    assert!(field(dial, "DestChannel").is_some_and(|c| c.starts_with("PJSIP/115-")));
    // Not bridged any more: the same transfer is invalid now.
    let hangup_all = p.action(T0 + 40 * S, "Hangup", &[("Channel", &callee)], None);
    assert_eq!(
        text(&hangup_all),
        ["Response: Success\r\nMessage: Channel Hungup\r\n\r\n"]
    );
    events(&mut p, T0 + 40 * S);
    assert_eq!(
        text(&p.action(
            T0 + 40 * S,
            "BlindTransfer",
            &[("Channel", &callee), ("Exten", "101")],
            None
        )),
        ["Response: Error\r\nMessage: Channel specified does not exist\r\n\r\n"]
    );
}

#[test]
fn atxfer_consults_then_completes() {
    let mut p = pbx();
    let (caller, callee, _) = bridged_call(&mut p);
    let r = text(&p.action(
        T0 + 20 * S,
        "Atxfer",
        &[
            ("Channel", &caller),
            ("Context", "from-internal"),
            ("Exten", "116"),
        ],
        Some("a1"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: a1\r\nMessage: Atxfer successfully queued\r\n\r\n"]
    );
    let evs = events(&mut p, T0 + 60 * S);
    let n = names(&evs);
    for want in ["DTMFEnd", "Hold", "MusicOnHoldStart", "BridgeCreate"] {
        assert!(n.contains(&want), "{want} in {n:?}");
    }
    let hold = evs
        .iter()
        .find(|e| e.starts_with("Event: Hold"))
        .expect("Hold");
    assert_eq!(field(hold, "Channel"), Some(caller.as_str()));
    let moh = evs
        .iter()
        .find(|e| e.starts_with("Event: MusicOnHoldStart"))
        .expect("moh");
    assert_eq!(field(moh, "Channel"), Some(callee.as_str()));
    // The transferer hangs up: the transfer completes.
    p.action(T0 + 60 * S, "Hangup", &[("Channel", &caller)], Some("a2"));
    let evs = events(&mut p, T0 + 60 * S);
    let at = evs
        .iter()
        .find(|e| e.starts_with("Event: AttendedTransfer"))
        .expect("AttendedTransfer");
    assert_eq!(
        (field(at, "Result"), field(at, "DestType")),
        (Some("Success"), Some("Bridge"))
    );
    assert_eq!(field(at, "TransfereeChannel"), Some(callee.as_str()));
    assert!(names(&evs).contains(&"BridgeMerge"));
    assert_eq!(p.stats().channels_now, 2, "transferee and target talk");
}

#[test]
fn mixmonitor_start_and_stop() {
    let mut p = pbx();
    let (caller, _, _) = bridged_call(&mut p);
    let r = text(&p.action(
        T0 + 20 * S,
        "MixMonitor",
        &[("Channel", &caller), ("File", "rec.wav"), ("Options", "b")],
        Some("m1"),
    ));
    assert_eq!(r, ["Response: Success\r\nActionID: m1\r\n\r\n"]);
    let evs = events(&mut p, T0 + 20 * S);
    let v = evs
        .iter()
        .find(|e| field(e, "Variable") == Some("MIXMONITOR_FILENAME"))
        .expect("VarSet");
    assert_eq!(
        field(v, "Value"),
        Some("/var/spool/asterisk/monitor/rec.wav")
    );
    assert!(
        evs.iter().any(|e| e.starts_with("Event: MixMonitorStart")
            && field(e, "Channel") == Some(caller.as_str()))
    );
    let r = text(&p.action(
        T0 + 21 * S,
        "StopMixMonitor",
        &[("Channel", &caller)],
        Some("m2"),
    ));
    assert_eq!(r, ["Response: Success\r\nActionID: m2\r\n\r\n"]);
    assert_eq!(names(&events(&mut p, T0 + 21 * S)), ["MixMonitorStop"]);
    assert_eq!(
        text(&p.action(T0, "MixMonitor", &[("Channel", "nope")], Some("m3"))),
        ["Response: Error\r\nActionID: m3\r\nMessage: No such channel\r\n\r\n"]
    );
}

#[test]
fn queue_pause_changes_the_member_and_queue_status_shows_it() {
    let mut p = pbx();
    let r = text(&p.action(
        T0,
        "QueuePause",
        &[
            ("Interface", "PJSIP/105"),
            ("Paused", "true"),
            ("Queue", "support"),
            ("Reason", "lunch"),
        ],
        Some("p1"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: p1\r\nMessage: Interface paused successfully\r\n\r\n"]
    );
    let evs = events(&mut p, T0);
    let pause = evs
        .iter()
        .find(|e| e.starts_with("Event: QueueMemberPause"))
        .expect("QueueMemberPause");
    let keys: Vec<&str> = pause
        .split("\r\n")
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        [
            "Event",
            "Privilege",
            "Queue",
            "MemberName",
            "Interface",
            "StateInterface",
            "Membership",
            "Penalty",
            "CallsTaken",
            "LastCall",
            "LastPause",
            "LoginTime",
            "InCall",
            "Status",
            "Paused",
            "PausedReason",
            "Ringinuse",
            "Wrapuptime"
        ]
    );
    assert_eq!(
        (field(pause, "Paused"), field(pause, "PausedReason")),
        (Some("1"), Some("lunch"))
    );
    let list = text(&p.action(T0, "QueueStatus", &[("Queue", "support")], Some("s1")));
    assert_eq!(
        list[0],
        "Response: Success\r\nActionID: s1\r\nEventList: start\r\nMessage: Queue status will follow\r\n\r\n"
    );
    let member = list
        .iter()
        .find(|m| field(m, "Location") == Some("PJSIP/105"))
        .expect("member");
    assert_eq!(
        (
            field(member, "Paused"),
            field(member, "PausedReason"),
            field(member, "ActionID")
        ),
        (Some("1"), Some("lunch"), Some("s1"))
    );
    assert!(
        member.ends_with("ActionID: s1\r\n\r\n"),
        "list items end with the ActionID"
    );
    let done = list.last().expect("complete");
    assert_eq!(
        done,
        &format!(
            "Event: QueueStatusComplete\r\nActionID: s1\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
            list.len() - 2
        )
    );
    // A paused member is not rung: a queue call to support rings the others only.
    let pausing: Vec<&str> = ["PJSIP/106", "PJSIP/107"].to_vec();
    for i in pausing {
        p.action(T0, "QueuePause", &[("Interface", i), ("Paused", "1")], None);
    }
    p.start_call(
        T0 + S,
        Scenario::QueueAnswered,
        CallSpec {
            queue: Some(1),
            ..CallSpec::default()
        },
    );
    let evs = events(&mut p, T0 + 3 * S);
    let called: Vec<&str> = evs
        .iter()
        .filter(|e| e.starts_with("Event: AgentCalled"))
        .filter_map(|e| field(e, "Interface"))
        .collect();
    assert_eq!(called, ["PJSIP/108"]);
    let r = text(&p.action(
        T0 + 3 * S,
        "QueuePause",
        &[("Interface", "PJSIP/105"), ("Paused", "false")],
        Some("p2"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: p2\r\nMessage: Interface unpaused successfully\r\n\r\n"]
    );
    assert_eq!(
        text(&p.action(
            T0,
            "QueuePause",
            &[("Interface", "PJSIP/999"), ("Paused", "1")],
            Some("p3")
        )),
        ["Response: Error\r\nActionID: p3\r\nMessage: Interface not found\r\n\r\n"]
    );
    assert_eq!(
        text(&p.action(T0, "QueuePause", &[("Interface", "PJSIP/105")], Some("p4"))),
        [
            "Response: Error\r\nActionID: p4\r\nMessage: Need 'Interface' and 'Paused' parameters.\r\n\r\n"
        ]
    );
}

#[test]
fn queue_add_and_remove() {
    let mut p = pbx();
    let r = text(&p.action(
        T0,
        "QueueAdd",
        &[
            ("Queue", "sales"),
            ("Interface", "PJSIP/120"),
            ("Penalty", "1"),
            ("MemberName", "Temp"),
        ],
        Some("a"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: a\r\nMessage: Added interface to queue\r\n\r\n"]
    );
    let evs = events(&mut p, T0);
    let added = evs
        .iter()
        .find(|e| e.starts_with("Event: QueueMemberAdded"))
        .expect("QueueMemberAdded");
    assert_eq!(
        (
            field(added, "Membership"),
            field(added, "Penalty"),
            field(added, "MemberName")
        ),
        (Some("dynamic"), Some("1"), Some("Temp"))
    );
    let again = text(&p.action(
        T0,
        "QueueAdd",
        &[("Queue", "sales"), ("Interface", "PJSIP/120")],
        Some("b"),
    ));
    assert_eq!(
        again,
        [
            "Response: Error\r\nActionID: b\r\nMessage: Unable to add interface: Already there\r\n\r\n"
        ]
    );
    let list = text(&p.action(T0, "QueueStatus", &[("Queue", "sales")], None));
    assert!(
        list.iter()
            .any(|m| field(m, "Location") == Some("PJSIP/120"))
    );
    let r = text(&p.action(
        T0,
        "QueueRemove",
        &[("Queue", "sales"), ("Interface", "PJSIP/120")],
        Some("c"),
    ));
    assert_eq!(
        r,
        ["Response: Success\r\nActionID: c\r\nMessage: Removed interface from queue\r\n\r\n"]
    );
    assert!(
        events(&mut p, T0)
            .iter()
            .any(|e| e.starts_with("Event: QueueMemberRemoved"))
    );
    let r = text(&p.action(
        T0,
        "QueueRemove",
        &[("Queue", "sales"), ("Interface", "PJSIP/120")],
        Some("d"),
    ));
    assert_eq!(
        r,
        [
            "Response: Error\r\nActionID: d\r\nMessage: Unable to remove interface: Not there\r\n\r\n"
        ]
    );
    let r = text(&p.action(
        T0,
        "QueueAdd",
        &[("Queue", "nosuch"), ("Interface", "PJSIP/120")],
        Some("e"),
    ));
    assert_eq!(
        r,
        [
            "Response: Error\r\nActionID: e\r\nMessage: Unable to add interface to queue: No such queue\r\n\r\n"
        ]
    );
    let r = text(&p.action(T0, "QueueRemove", &[("Queue", "sales")], Some("f")));
    assert_eq!(
        r,
        [
            "Response: Error\r\nActionID: f\r\nMessage: Need 'Queue' and 'Interface' parameters.\r\n\r\n"
        ]
    );
}

#[test]
fn lists_report_the_current_state() {
    let mut p = pbx();
    let (caller, callee, _) = bridged_call(&mut p);
    let list = text(&p.action(T0 + 20 * S, "CoreShowChannels", &[], Some("c1")));
    assert_eq!(
        list[0],
        "Response: Success\r\nActionID: c1\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
    );
    assert_eq!(list.len(), 4);
    let item = &list[1];
    let keys: Vec<&str> = item
        .split("\r\n")
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    assert_eq!(&keys[..3], ["Event", "ActionID", "Channel"]);
    assert_eq!(
        &keys[keys.len() - 4..],
        ["Application", "ApplicationData", "Duration", "BridgeId"]
    );
    assert_eq!(
        field(item, "Channel"),
        Some(caller.as_str()),
        "creation order"
    );
    assert_eq!(field(&list[2], "Channel"), Some(callee.as_str()));
    assert!(field(item, "BridgeId").is_some_and(|b| b.len() == 36));
    assert_eq!(
        list[3],
        "Event: CoreShowChannelsComplete\r\nActionID: c1\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"
    );

    let st = text(&p.action(T0 + 20 * S, "Status", &[], Some("s1")));
    assert_eq!(
        st[0],
        "Response: Success\r\nActionID: s1\r\nEventList: start\r\nMessage: Channel status will follow\r\n\r\n"
    );
    assert!(st[1].starts_with("Event: Status\r\nPrivilege: Call\r\nChannel: "));
    assert!(st[1].ends_with("ActionID: s1\r\n\r\n"));
    assert_eq!(
        st[3],
        "Event: StatusComplete\r\nActionID: s1\r\nEventList: Complete\r\nListItems: 2\r\nItems: 2\r\n\r\n"
    );
    let one = text(&p.action(T0 + 20 * S, "Status", &[("Channel", &callee)], None));
    assert_eq!(one.len(), 3);
    assert_eq!(
        text(&p.action(T0, "Status", &[("Channel", "nope")], None)),
        ["Response: Error\r\nMessage: No such channel\r\n\r\n"]
    );

    let sum = text(&p.action(T0 + 20 * S, "QueueSummary", &[], Some("q1")));
    assert_eq!(
        sum[0],
        "Response: Success\r\nActionID: q1\r\nEventList: start\r\nMessage: Queue summary will follow\r\n\r\n"
    );
    assert_eq!(sum.len(), 4);
    let keys: Vec<&str> = sum[1]
        .split("\r\n")
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        [
            "Event",
            "Queue",
            "LoggedIn",
            "Available",
            "Callers",
            "HoldTime",
            "TalkTime",
            "LongestHoldTime",
            "ActionID"
        ]
    );
    assert_eq!(
        sum[3],
        "Event: QueueSummaryComplete\r\nActionID: q1\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"
    );

    let qs = text(&p.action(T0 + 20 * S, "QueueStatus", &[], Some("q2")));
    // 2 queues x (QueueParams + 4 members).
    assert_eq!(qs.len(), 1 + 10 + 1);
    let keys: Vec<&str> = qs[1]
        .split("\r\n")
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
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
}

#[test]
fn command_core_show_version_and_channels() {
    let mut p = pbx();
    let r = text(&p.action(
        T0,
        "Command",
        &[("Command", "core show version")],
        Some("v"),
    ));
    assert_eq!(
        r,
        [
            "Response: Success\r\nActionID: v\r\nMessage: Command output follows\r\nOutput: Asterisk 22.10.1 built by root @ buildhost on a x86_64 running Linux on 2025-11-13 11:46:02 UTC\r\n\r\n"
        ]
    );
    let mut p16 = Pbx::new(
        PbxConfig {
            generate: false,
            asterisk_version: AsteriskVersion::V16,
            ..PbxConfig::default()
        },
        1,
        T0,
    );
    let r = text(&p16.action(T0, "Command", &[("Command", "core show version")], None));
    assert!(
        r[0].contains("Output: Asterisk 16.28.0 built by"),
        "{}",
        r[0]
    );

    let (caller, _, _) = bridged_call(&mut p);
    let r = text(&p.action(
        T0 + 20 * S,
        "Command",
        &[("Command", "core show channels")],
        Some("c"),
    ));
    let lines: Vec<&str> = r[0]
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Output: "))
        .collect();
    assert_eq!(
        lines[0],
        "Channel              Location             State   Application(Data)             "
    );
    assert!(
        lines[1].starts_with(&caller[..caller.len().min(20)]),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[1].len(),
        20 + 1 + 20 + 1 + 7 + 1 + 30,
        "fixed-width columns"
    );
    assert_eq!(
        &lines[3..],
        ["2 active channels", "1 active call", "0 calls processed"]
    );

    let r = text(&p.action(
        T0,
        "Command",
        &[("Command", "core show nonsense")],
        Some("x"),
    ));
    assert_eq!(
        r,
        [
            "Response: Error\r\nActionID: x\r\nMessage: Command output follows\r\nOutput: No such command 'core show nonsense' (type 'core show help core show nonsense' for other possible commands)\r\n\r\n"
        ]
    );
}

#[test]
fn unknown_action_gets_asterisks_error() {
    let mut p = pbx();
    assert_eq!(
        text(&p.action(T0, "NoSuchThing", &[], Some("u-1"))),
        [
            "Response: Error\r\nActionID: u-1\r\nMessage: Invalid/unknown command: NoSuchThing. Use Action: ListCommands to show available commands.\r\n\r\n"
        ]
    );
}

#[test]
fn actions_are_case_insensitive_and_events_wait_for_advance() {
    let mut p = pbx();
    let (caller, _, _) = bridged_call(&mut p);
    let r = text(&p.action(T0 + 20 * S, "hangup", &[("channel", &caller)], None));
    assert_eq!(r, ["Response: Success\r\nMessage: Channel Hungup\r\n\r\n"]);
    assert_eq!(
        p.next_due(),
        Some(T0 + 20 * S),
        "the hangup's events are due now"
    );
    assert!(!events(&mut p, T0 + 20 * S).is_empty());
}
