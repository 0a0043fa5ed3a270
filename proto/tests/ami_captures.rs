//! The AMI codec against real Asterisk output: every capture in
//! `tests/fixtures/ami/` (bytes received from Asterisk 16.28 and 22.10, and what the
//! client sent) parsed completely, checked against the capture summaries and the
//! quirks the AMI notes describe, split at random, and written back byte for byte.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use switchboard_proto::ami::{
    Classes, Item, Message, MessageKind, OwnedItem, OwnedMessage, Parser, RequestError,
    write_banner,
};

// ------------------------------------------------------------------ fixtures

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/ami/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The captures of what a server sent, with their banner's AMI version.
const RECEIVED: [(&str, &str); 7] = [
    ("asterisk16-badlogin.bin", "5.0.4"),
    ("asterisk16-calls.bin", "5.0.4"),
    ("asterisk16-edge.bin", "5.0.4"),
    ("asterisk16-md5.bin", "5.0.4"),
    ("asterisk16-perm.bin", "5.0.4"),
    ("asterisk22-local.txt", "11.0.0"),
    ("asterisk22-sip-systemname.txt", "11.0.0"),
];

/// What a client sent, for replay.
const SENT: [&str; 2] = [
    "asterisk22-local.sent.txt",
    "asterisk22-sip-systemname.sent.txt",
];

/// A capture parsed in the client role.
struct Session {
    version: String,
    messages: Vec<OwnedMessage>,
    /// Each message's bytes as received.
    raws: Vec<Vec<u8>>,
    leftover: Vec<u8>,
}

impl Session {
    fn messages(&self) -> impl Iterator<Item = Message<'_>> {
        self.messages.iter().map(OwnedMessage::message)
    }

    fn events<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Message<'s>> + 's {
        self.messages()
            .filter(move |m| m.event() == Some(name.as_bytes()))
    }
}

/// Parses a whole capture in one buffer: the banner, then every message.
fn client_session(bytes: &[u8]) -> Session {
    let mut parser = Parser::client();
    let mut at = 0;
    let mut version = None;
    let mut messages = Vec::new();
    let mut raws = Vec::new();
    loop {
        let (n, item) = parser.parse(&bytes[at..]).expect("capture parses");
        at += n;
        match item {
            None => break,
            Some(Item::Banner(v)) => {
                assert!(version.is_none(), "one banner");
                assert_eq!(at, n, "the banner comes first");
                version = Some(v.to_owned());
            }
            Some(Item::Message(m)) => {
                raws.push(m.raw().to_vec());
                messages.push(m.into_owned());
            }
            Some(Item::Rejected(r)) => panic!("client role rejected {r:?}"),
        }
    }
    Session {
        version: version.expect("a banner"),
        messages,
        raws,
        leftover: bytes[at..].to_vec(),
    }
}

/// Parses a capture of a client's actions in the server role.
fn server_items(bytes: &[u8]) -> (Vec<OwnedItem>, usize) {
    let mut parser = Parser::server();
    let mut at = 0;
    let mut items = Vec::new();
    loop {
        let (n, item) = parser.parse(&bytes[at..]).expect("no error in server role");
        at += n;
        let Some(item) = item else { break };
        items.push(item.into_owned());
    }
    (items, bytes.len() - at)
}

/// Feeds `bytes` in pieces of random sizes in `1..=max_piece` (a read loop), and
/// returns every item with its raw bytes, and what is left.
fn split_run(
    mut parser: Parser,
    bytes: &[u8],
    seed: u64,
    max_piece: usize,
) -> (Vec<(OwnedItem, Vec<u8>)>, Vec<u8>) {
    let mut rng = XorShift(seed);
    let mut buf = Vec::new();
    let mut items = Vec::new();
    let mut fed = 0;
    while fed < bytes.len() {
        let piece = (rng.below(max_piece) + 1).min(bytes.len() - fed);
        buf.extend_from_slice(&bytes[fed..fed + piece]);
        fed += piece;
        let mut at = 0;
        loop {
            // A call without an item may still consume bytes (empty lines).
            let (n, item) = parser.parse(&buf[at..]).expect("parses");
            at += n;
            let Some(item) = item else { break };
            let raw = match item {
                Item::Message(m) => m.raw().to_vec(),
                _ => Vec::new(),
            };
            items.push((item.into_owned(), raw));
        }
        buf.drain(..at);
    }
    (items, buf)
}

/// Tiny deterministic xorshift64* PRNG.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("ASCII in the captures")
}

/// Reads a section of a capture summary: the `name count` lines under `title`.
fn summary_section(summary: &str, title: &str) -> BTreeMap<String, usize> {
    let mut lines = summary.lines().skip_while(|l| !l.starts_with(title));
    assert!(lines.next().is_some(), "section {title:?}");
    lines
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let (name, count) = l.trim().rsplit_once(' ').unwrap();
            (name.trim().to_owned(), count.parse().unwrap())
        })
        .collect()
}

/// The `responses: {'Success': 398, ...}` line of a capture summary.
fn summary_responses(summary: &str) -> BTreeMap<String, usize> {
    let line = summary
        .lines()
        .find_map(|l| l.strip_prefix("responses: {"))
        .unwrap();
    line.trim_end_matches('}')
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once(": ").unwrap();
            (k.trim_matches('\'').to_owned(), v.parse().unwrap())
        })
        .collect()
}

/// `events (23357 total, 70 types):` of a capture summary.
fn summary_event_total(summary: &str) -> (usize, usize) {
    let line = summary
        .lines()
        .find_map(|l| l.strip_prefix("events ("))
        .unwrap();
    let (total, rest) = line.split_once(" total, ").unwrap();
    let (types, _) = rest.split_once(" types").unwrap();
    (total.parse().unwrap(), types.parse().unwrap())
}

// ------------------------------------------------------------------ whole captures

#[test]
fn every_capture_parses_to_its_last_byte() {
    // Message counts: from the summaries for Asterisk 22 (events + responses), by
    // counting the empty lines that end a message for Asterisk 16.
    let expected_messages = [1, 793, 15, 17, 3, 23_759, 13_508];
    for ((name, version), count) in RECEIVED.iter().zip(expected_messages) {
        let bytes = fixture(name);
        let session = client_session(&bytes);
        assert_eq!(session.version, *version, "{name}");
        assert_eq!(session.messages.len(), count, "{name}");
        // Every capture ends with a complete message (the last is a Goodbye, the
        // badlogin error or the last event read before the socket closed).
        assert!(
            session.leftover.is_empty(),
            "{name}: {:?}",
            session.leftover
        );
        for m in session.messages() {
            assert_ne!(m.kind(), MessageKind::Other, "{name}: {m:?}");
            assert_ne!(m.kind(), MessageKind::Action, "{name}: {m:?}");
            assert!(m.fields().all(|f| f.has_colon()), "{name}: {m:?}");
            assert!(!m.is_follows());
        }
        // The raw bytes tile the capture: banner + messages + the stray empty lines.
        let tiled: usize = session.raws.iter().map(Vec::len).sum();
        let banner = format!("Asterisk Call Manager/{version}\r\n").len();
        let stray = bytes.len() - banner - tiled;
        let expected_stray = match *name {
            "asterisk16-calls.bin" => 4,          // 2 x "\r\n" after a TestEvent
            "asterisk22-local.txt" => 20,         // 10 Park responses
            "asterisk22-sip-systemname.txt" => 8, // 4 Park responses
            _ => 0,
        };
        assert_eq!(stray, expected_stray, "{name}");
        let mut out = Vec::new();
        write_banner(&mut out, version);
        assert!(
            bytes.starts_with(&out),
            "{name}: banner written as received"
        );
    }
}

#[test]
fn counts_match_the_capture_summaries() {
    for (capture, summary) in [
        ("asterisk22-local.txt", "asterisk22-local.summary.txt"),
        (
            "asterisk22-sip-systemname.txt",
            "asterisk22-sip-systemname.summary.txt",
        ),
    ] {
        let session = client_session(&fixture(capture));
        let summary = String::from_utf8(fixture(summary)).unwrap();

        let mut events = BTreeMap::<String, usize>::new();
        let mut responses = BTreeMap::<String, usize>::new();
        for m in session.messages() {
            match m.kind() {
                MessageKind::Event => *events.entry(text(m.name()).to_owned()).or_default() += 1,
                MessageKind::Response => {
                    *responses.entry(text(m.name()).to_owned()).or_default() += 1;
                }
                other => panic!("{capture}: {other:?}"),
            }
        }
        let (total, types) = summary_event_total(&summary);
        assert_eq!(events.values().sum::<usize>(), total, "{capture}");
        assert_eq!(events.len(), types, "{capture}");
        assert_eq!(events, summary_section(&summary, "events ("), "{capture}");
        assert_eq!(responses, summary_responses(&summary), "{capture}");
        assert_eq!(
            summary.lines().next().unwrap(),
            format!("banner: Asterisk Call Manager/{}", session.version)
        );
    }
}

#[test]
fn sent_actions_parse_in_the_server_role() {
    for (sent, summary, capture) in [
        (
            "asterisk22-local.sent.txt",
            "asterisk22-local.summary.txt",
            "asterisk22-local.txt",
        ),
        (
            "asterisk22-sip-systemname.sent.txt",
            "asterisk22-sip-systemname.summary.txt",
            "asterisk22-sip-systemname.txt",
        ),
    ] {
        let (items, leftover) = server_items(&fixture(sent));
        assert_eq!(leftover, 0, "{sent}");
        let summary = String::from_utf8(fixture(summary)).unwrap();
        let mut actions = BTreeMap::<String, usize>::new();
        let mut ids = Vec::new();
        for item in &items {
            let OwnedItem::Message(m) = item else {
                panic!("{sent}: rejected {item:?}")
            };
            let m = m.message();
            assert_eq!(m.kind(), MessageKind::Action);
            assert_eq!(m.action(), Some(m.name()));
            *actions.entry(text(m.name()).to_owned()).or_default() += 1;
            ids.push(text(m.action_id().unwrap()).to_owned());
        }
        assert_eq!(
            actions,
            summary_section(&summary, "actions sent:"),
            "{sent}"
        );
        // ActionIDs are kit-1, kit-2, ... in order.
        let expected: Vec<String> = (1..=items.len()).map(|i| format!("kit-{i}")).collect();
        assert_eq!(ids, expected, "{sent}");
        // Every response of the capture answers one of them.
        let ids: BTreeSet<String> = ids.into_iter().collect();
        let session = client_session(&fixture(capture));
        for m in session.messages() {
            if m.kind() == MessageKind::Response {
                assert!(ids.contains(text(m.action_id().unwrap())), "{m:?}");
            }
        }
        // The Originates carry what AMI.md says a gateway sends.
        let originate = items
            .iter()
            .find_map(|i| match i {
                OwnedItem::Message(m) if m.message().action() == Some(b"Originate") => Some(m),
                _ => None,
            })
            .unwrap()
            .message();
        assert_eq!(originate.get("Async"), Some(&b"true"[..]));
        assert!(originate.get("Variable").is_some());
    }
}

// ------------------------------------------------------------------ event shape

#[test]
fn events_have_privilege_second_except_action_list_items() {
    // Every Event: has Privilege: as its second field, except the items and the
    // completion of an action's event list, which carry the action's ActionID.
    let list_items: [(&str, &[&str]); 7] = [
        ("asterisk16-badlogin.bin", &[]),
        (
            "asterisk16-calls.bin",
            &["ChannelHungup", "ChannelsHungupListComplete"],
        ),
        ("asterisk16-edge.bin", &["StatusComplete"]),
        (
            "asterisk16-md5.bin",
            &[
                "CoreShowChannelsComplete",
                "QueueMember",
                "QueueParams",
                "QueueStatusComplete",
            ],
        ),
        ("asterisk16-perm.bin", &[]),
        (
            "asterisk22-local.txt",
            &[
                "ConfbridgeList",
                "ConfbridgeListComplete",
                "ConfbridgeListRooms",
                "ConfbridgeListRoomsComplete",
                "CoreShowChannel",
                "CoreShowChannelsComplete",
                "DBGetComplete",
                "DBGetResponse",
                "DeviceStateChange",
                "DeviceStateListComplete",
                "ListDialplan",
                "ParkedCall",
                "ParkedCallsComplete",
                "QueueMember",
                "QueueParams",
                "QueueStatusComplete",
                "QueueSummary",
                "QueueSummaryComplete",
                "ShowDialPlanComplete",
                "StatusComplete",
            ],
        ),
        (
            "asterisk22-sip-systemname.txt",
            &[
                "ConfbridgeList",
                "ConfbridgeListComplete",
                "CoreShowChannel",
                "CoreShowChannelsComplete",
                "DeviceStateChange",
                "DeviceStateListComplete",
                "EndpointList",
                "EndpointListComplete",
                "ExtensionStateListComplete",
                "ParkedCall",
                "ParkedCallsComplete",
                "QueueMember",
                "QueueParams",
                "QueueStatusComplete",
                "QueueSummary",
                "QueueSummaryComplete",
            ],
        ),
    ];
    let mut privileges = BTreeSet::new();
    for (name, expected) in list_items {
        let session = client_session(&fixture(name));
        let mut without = BTreeSet::new();
        for m in session.messages() {
            if m.kind() != MessageKind::Event {
                continue;
            }
            let second = m.field(1).unwrap();
            if second.is("Privilege") {
                privileges.insert(text(second.value()).to_owned());
            } else {
                assert!(m.action_id().is_some(), "{name}: {m:?}");
                assert!(m.get("Privilege").is_none(), "{name}: {m:?}");
                without.insert(text(m.name()));
            }
        }
        let expected: BTreeSet<&str> = expected.iter().copied().collect();
        assert_eq!(without, expected, "{name}");
    }
    // Asterisk's renderings of single classes, plus the Status list items, whose
    // handler writes "Privilege: Call" by hand.
    let expected: BTreeSet<String> = [
        "Call",
        "agent,all",
        "call,all",
        "cdr,all",
        "dialplan,all",
        "dtmf,all",
        "reporting,all",
        "security,all",
        "system,all",
        "user,all",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(privileges, expected);
    for p in &privileges {
        let classes = Classes::from_privilege(p);
        assert_eq!(Classes::from_privilege(&classes.privilege()), classes);
        if p != "Call" {
            assert_eq!(&classes.privilege(), p, "rendered as Asterisk does");
        }
    }
}

#[test]
fn systemname_is_the_third_header_of_every_event() {
    let session = client_session(&fixture("asterisk22-sip-systemname.txt"));
    let mut with = 0;
    let mut without = BTreeSet::new();
    let (mut unknown, mut none) = (0, 0);
    for m in session.messages() {
        if m.kind() == MessageKind::Event && m.field(1).unwrap().is("Privilege") {
            let third = m.field(2).unwrap();
            if third.is("SystemName") {
                assert_eq!(third.value(), b"kitpbx");
                with += 1;
            } else {
                without.insert(text(m.name()).to_owned());
            }
        }
        // Uniqueid (and CEL's UniqueID: keys are case-insensitive) is prefixed with
        // the system name, except a failed originate's `<unknown>` and the `none`
        // of a VarSet on a global variable (no channel).
        for uniqueid in m.get_all("Uniqueid") {
            match uniqueid {
                b"<unknown>" => {
                    assert_eq!(m.event(), Some(&b"OriginateResponse"[..]));
                    unknown += 1;
                }
                b"none" => {
                    assert_eq!(m.event(), Some(&b"VarSet"[..]));
                    assert_eq!(m.get("Channel"), Some(&b"none"[..]));
                    none += 1;
                }
                id => assert!(id.starts_with(b"kitpbx-"), "{m:?}"),
            }
        }
    }
    assert_eq!(with, 13_039);
    assert_eq!((unknown, none), (6, 4));
    // FullyBooted is written straight to the session at login, not through
    // manager_event(), so it has no SystemName.
    assert_eq!(without, BTreeSet::from(["FullyBooted".to_owned()]));
    // CoreSettings answers with SystemName in its body.
    let settings = session
        .messages()
        .find(|m| m.get("AMIversion").is_some())
        .unwrap();
    assert_eq!(settings.get("SystemName"), Some(&b"kitpbx"[..]));
    assert_eq!(settings.get("AsteriskVersion"), Some(&b"22.10.1"[..]));

    // Without systemname, no event has it, and CoreSettings says it is empty.
    let local = client_session(&fixture("asterisk22-local.txt"));
    for m in local.messages() {
        match m.kind() {
            MessageKind::Event => assert_eq!(m.get("SystemName"), None),
            _ if m.get("AMIversion").is_some() => {
                assert_eq!(m.get("SystemName"), Some(&b""[..]));
            }
            _ => assert_eq!(m.get("SystemName"), None),
        }
    }
}

// ------------------------------------------------------------------ quirks

#[test]
fn park_responses_end_with_a_bare_lf() {
    for (name, count) in [
        ("asterisk22-local.txt", 10),
        ("asterisk22-sip-systemname.txt", 4),
    ] {
        let session = client_session(&fixture(name));
        let parks: Vec<usize> = session
            .messages()
            .enumerate()
            .filter(|(_, m)| m.get("Message") == Some(b"Park successful"))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(parks.len(), count, "{name}");
        for i in parks {
            let m = session.messages[i].message();
            assert_eq!(m.response(), Some(&b"Success"[..]));
            assert_eq!(m.len(), 3);
            assert!(session.raws[i].ends_with(b"Message: Park successful\n\r\n"));
            // The next message follows the spare "\r\n" and is intact.
            let next = session.messages[i + 1].message();
            assert_eq!(next.kind(), MessageKind::Event);
            assert!(next.field(1).unwrap().is("Privilege"));
        }
    }
}

#[test]
fn dialplan_user_events_carry_two_uniqueids() {
    for name in ["asterisk22-local.txt", "asterisk22-sip-systemname.txt"] {
        let session = client_session(&fixture(name));
        let mut from_dialplan = 0;
        for m in session.events("UserEvent") {
            let ids: Vec<&[u8]> = m.get_all("Uniqueid").collect();
            if m.get("UserEvent") == Some(b"KitCall") {
                // The channel block's Uniqueid, then the one the dialplan passed.
                assert_eq!(ids.len(), 2, "{m:?}");
                assert_eq!(ids[0], ids[1]);
                assert_eq!(m.get("Uniqueid"), Some(ids[0]));
                let positions: Vec<usize> = m
                    .fields()
                    .enumerate()
                    .filter(|(_, f)| f.is("Uniqueid"))
                    .map(|(i, _)| i)
                    .collect();
                assert!(positions[1] > positions[0] + 1);
                from_dialplan += 1;
            } else {
                // The UserEvent action's own event: its headers, ActionID included.
                assert_eq!(m.get("UserEvent"), Some(&b"KitPing"[..]));
                assert!(ids.is_empty());
                assert!(m.action_id().is_some());
                assert_eq!(m.get("Header1"), Some(&b"hello"[..]));
            }
        }
        assert!(from_dialplan >= 23, "{name}: {from_dialplan}");
    }
}

#[test]
fn originate_response_is_an_event_with_its_own_response() {
    for (name, success, failure) in [
        ("asterisk16-calls.bin", 8, 3),
        ("asterisk22-local.txt", 202, 12),
        ("asterisk22-sip-systemname.txt", 127, 6),
    ] {
        let session = client_session(&fixture(name));
        let mut counts = BTreeMap::<(Vec<u8>, Vec<u8>), usize>::new();
        for m in session.events("OriginateResponse") {
            assert_eq!(m.kind(), MessageKind::Event);
            assert_eq!(m.response(), None);
            assert_eq!(m.privilege(), Some(Classes::CALL));
            // ActionID right after Privilege (SystemName aside), then Response.
            let keys: Vec<&[u8]> = m
                .fields()
                .map(|f| f.key())
                .filter(|k| *k != b"SystemName")
                .collect();
            assert_eq!(
                keys[..4],
                [&b"Event"[..], b"Privilege", b"ActionID", b"Response"]
            );
            let response = m.get("Response").unwrap().to_vec();
            let reason = m.get("Reason").unwrap().to_vec();
            *counts.entry((response, reason)).or_default() += 1;
        }
        let ok = counts.get(&(b"Success".to_vec(), b"4".to_vec())).copied();
        assert_eq!(ok, Some(success), "{name}: {counts:?}");
        let failed: usize = counts
            .iter()
            .filter(|((r, reason), _)| {
                r == b"Failure" && [&b"0"[..], b"3", b"5"].contains(&reason.as_slice())
            })
            .map(|(_, n)| n)
            .sum();
        assert_eq!(failed, failure, "{name}: {counts:?}");
        assert_eq!(counts.values().sum::<usize>(), success + failure);
    }
}

#[test]
fn command_output_is_output_fields() {
    let session = client_session(&fixture("asterisk16-edge.bin"));
    let cmd = session
        .messages()
        .find(|m| m.action_id() == Some(b"cmd-1"))
        .unwrap();
    assert_eq!(cmd.get("Message"), Some(&b"Command output follows"[..]));
    let lines: Vec<&[u8]> = cmd.command_output().collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(
        lines[0],
        b"Channel              Location             State   Application(Data)             "
    );
    assert_eq!(lines[5], b"48 calls processed");

    let md5 = client_session(&fixture("asterisk16-md5.bin"));
    let bad = md5
        .messages()
        .find(|m| m.action_id() == Some(b"c-2"))
        .unwrap();
    assert_eq!(bad.response(), Some(&b"Error"[..]));
    assert_eq!(
        bad.command_output().collect::<Vec<_>>(),
        [&b"No such command 'core show nonsense' (type 'core show help core show nonsense' for other possible commands)"[..]]
    );

    // Asterisk 22 `queue show`: indentation survives (one space after the colon
    // is the separator, the rest is the CLI's).
    let local = client_session(&fixture("asterisk22-local.txt"));
    let mut commands = 0;
    for m in local
        .messages()
        .filter(|m| m.get("Message") == Some(b"Command output follows"))
    {
        commands += 1;
        let lines: Vec<&[u8]> = m.command_output().collect();
        assert!(lines.len() >= 12);
        assert!(lines.contains(&&b"   Members: "[..]), "{m:?}");
        assert!(lines.iter().any(|l| l.starts_with(b"      ")));
    }
    assert_eq!(commands, 6);
}

#[test]
fn edge_capture_answers_match_our_rejections() {
    let session = client_session(&fixture("asterisk16-edge.bin"));
    let find = |id: &str| {
        let i = session
            .messages()
            .position(|m| m.action_id() == Some(id.as_bytes()))
            .unwrap();
        session.raws[i].clone()
    };
    for (id, error) in [
        ("long-1", RequestError::LineTooLong),
        ("many-1", RequestError::TooManyLines),
        ("noaction-1", RequestError::MissingAction),
    ] {
        let mut ours = Vec::new();
        switchboard_proto::ami::Rejection {
            error,
            action_id: Some(id.as_bytes()),
        }
        .write_response(&mut ours);
        assert_eq!(ours, find(id), "{id}");
    }
    // Bare-LF and no-space actions were answered normally; the duplicate ActionID
    // was answered with the first one.
    for id in ["lf-1", "nospace-1", "dup-1"] {
        let raw = find(id);
        assert!(raw.starts_with(b"Response: Success\r\n"), "{id}");
    }
    // The Status list: Variable values split at the first colon only.
    let status = session.events("Status").next().unwrap();
    assert_eq!(
        status.get_all("Variable").collect::<Vec<_>>(),
        [&b"FOO=bar"[..], b"BAZ=a:b=c"]
    );
    assert_eq!(status.get("AccountCode"), Some(&b""[..]));
    assert_eq!(status.get("ActionID"), Some(&b"st-1"[..]));
    let complete = session.events("StatusComplete").next().unwrap();
    assert_eq!(complete.get("EventList"), Some(&b"Complete"[..]));
    assert_eq!(complete.get("ListItems"), Some(&b"2"[..]));
}

#[test]
fn md5_capture_challenge_and_login() {
    let session = client_session(&fixture("asterisk16-md5.bin"));
    let challenge = session.messages().next().unwrap();
    assert_eq!(challenge.action_id(), Some(&b"ch-1"[..]));
    assert_eq!(challenge.get("Challenge"), Some(&b"942327271"[..]));
    let login = session.messages().nth(1).unwrap();
    assert_eq!(login.get("Message"), Some(&b"Authentication accepted"[..]));
    let key = switchboard_proto::ami::md5_key("942327271", "amp111");
    assert_eq!(key.len(), 32);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let bye = session.messages().last().unwrap();
    assert_eq!(bye.response(), Some(&b"Goodbye"[..]));
    assert_eq!(bye.get("Message"), Some(&b"Thanks for all the fish."[..]));
}

// ------------------------------------------------------------------ splits

#[test]
fn random_splits_of_every_capture_give_the_same_messages() {
    for (name, _) in RECEIVED {
        let bytes = fixture(name);
        let whole = split_run(Parser::client(), &bytes, 1, bytes.len());
        assert!(whole.1.is_empty());
        for (seed, max_piece) in [(7, 16), (42, 1500), (9001, 70_000)] {
            let split = split_run(Parser::client(), &bytes, seed, max_piece);
            assert_eq!(split.0.len(), whole.0.len(), "{name} {seed}");
            assert!(
                split.0 == whole.0,
                "{name}: split {seed}/{max_piece} differs"
            );
            assert_eq!(split.1, whole.1);
        }
    }
    for name in SENT {
        let bytes = fixture(name);
        let whole = split_run(Parser::server(), &bytes, 1, bytes.len());
        for (seed, max_piece) in [(3, 7), (5, 300)] {
            let split = split_run(Parser::server(), &bytes, seed, max_piece);
            assert!(split == whole, "{name}: split {seed}/{max_piece} differs");
        }
    }
}

// ------------------------------------------------------------------ round trip

#[test]
fn writing_parsed_messages_reproduces_the_captures() {
    for (name, _) in RECEIVED {
        let session = client_session(&fixture(name));
        let mut exact = 0;
        let mut park = 0;
        let mut out = Vec::new();
        for (m, raw) in session.messages().zip(&session.raws) {
            out.clear();
            m.write_to(&mut out);
            let crlf_only = raw
                .iter()
                .enumerate()
                .all(|(i, &b)| b != b'\n' || (i > 0 && raw[i - 1] == b'\r'));
            if crlf_only {
                assert_eq!(out, *raw, "{name}: {m:?}");
                exact += 1;
            } else {
                // The one non-CRLF message: Park's bare LF, written back as CRLF.
                assert!(raw.ends_with(b"Park successful\n\r\n"), "{name}: {m:?}");
                let mut fixed = raw[..raw.len() - 3].to_vec();
                fixed.extend_from_slice(b"\r\n\r\n");
                assert_eq!(out, fixed);
                park += 1;
            }
        }
        assert_eq!(exact + park, session.messages.len());
        let expected_park = match name {
            "asterisk22-local.txt" => 10,
            "asterisk22-sip-systemname.txt" => 4,
            _ => 0,
        };
        assert_eq!(park, expected_park, "{name}");
    }
    // The client's actions, through the server role, are written back as sent.
    for name in SENT {
        let bytes = fixture(name);
        let (items, _) = server_items(&bytes);
        let mut out = Vec::new();
        for item in &items {
            let OwnedItem::Message(m) = item else {
                panic!()
            };
            m.message().write_to(&mut out);
        }
        assert!(out == bytes, "{name}");
    }
}

// ------------------------------------------------------------------ allocation

/// Counts this thread's allocations (tests run on several threads).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a
// const-initialised thread-local Cell, which neither allocates nor has a destructor.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Parses every message of `bytes` with `parser`, touching each one, and returns
/// the number of messages (allocates nothing itself).
fn parse_touching_all(parser: &mut Parser, bytes: &[u8]) -> (usize, usize) {
    let mut at = 0;
    let mut messages = 0;
    let mut checksum = 0;
    while let Ok((n, Some(item))) = parser.parse(&bytes[at..]) {
        if let Item::Message(m) = item {
            messages += 1;
            checksum += m.len() + m.get("Uniqueid").map_or(0, <[u8]>::len);
            checksum += m.get_all("Variable").count();
        }
        at += n;
    }
    (messages, checksum)
}

#[test]
fn steady_state_parsing_allocates_nothing() {
    let bytes = fixture("asterisk22-local.txt");
    let mut parser = Parser::client();
    // The first pass sizes the field index; a second session on the same parser
    // (banner skipped) allocates nothing at all.
    let (first, sum) = parse_touching_all(&mut parser, &bytes);
    assert_eq!(first, 23_759);
    let banner = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let before = ALLOCATIONS.with(Cell::get);
    let (second, sum2) = parse_touching_all(&mut parser, &bytes[banner..]);
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!((second, sum2), (first, sum));
    assert_eq!(allocations, 0);
    // And the counter works.
    let v = vec![1u8; 10];
    assert!(ALLOCATIONS.with(Cell::get) > before);
    drop(v);
}
