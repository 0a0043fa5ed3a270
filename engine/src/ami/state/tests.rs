//! Tests of the PBX state model: hand-written sequences, robustness, resync,
//! snapshots, and whole captures of real Asterisk streams
//! (`proto/tests/fixtures/ami/`).

use std::collections::HashMap;

use serde_json::Value;
use switchboard_proto::ami::{Item, Parser};
use switchboard_proto::topic::validate_topic;

use super::super::{PbxView, TOPIC_CALLS, TOPIC_EVENTS};
use super::*;

type Pubs = Vec<(String, Vec<u8>)>;

/// Milliseconds the test clock advances per message.
const TICK: u64 = 10;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../proto/tests/fixtures/ami/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Feeds a stream (banner first unless `skip_banner`) through a client parser into
/// the model, `chunk` bytes at a time (0: whole).
struct Feeder {
    parser: Parser,
    buf: Vec<u8>,
    clock: u64,
    /// One batch per chunk, as the engine's AMI thread makes one per read.
    batches: bool,
}

impl Feeder {
    fn new(skip_banner: bool) -> Self {
        let parser = if skip_banner {
            Parser::client().skip_banner()
        } else {
            Parser::client()
        };
        Self {
            parser,
            buf: Vec::new(),
            clock: 1_000_000,
            batches: false,
        }
    }

    fn feed(&mut self, pbx: &mut Pbx, bytes: &[u8], chunk: usize, out: &mut Pubs) {
        let chunk = if chunk == 0 {
            bytes.len().max(1)
        } else {
            chunk
        };
        for piece in bytes.chunks(chunk) {
            self.buf.extend_from_slice(piece);
            if self.batches {
                pbx.begin_batch();
            }
            let mut pos = 0;
            loop {
                let rest = self.buf.get(pos..).unwrap_or_default();
                match self.parser.parse(rest) {
                    Ok((n, Some(Item::Message(m)))) => {
                        pbx.on_event(&m, self.clock, out);
                        self.clock += TICK;
                        pos += n;
                    }
                    Ok((n, Some(_))) => pos += n,
                    Ok((n, None)) => {
                        pos += n;
                        break;
                    }
                    Err(e) => panic!("parse error {e}"),
                }
            }
            if self.batches {
                pbx.end_batch(self.clock, out);
            }
            self.buf.drain(..pos);
        }
    }
}

fn run(bytes: &[u8], chunk: usize) -> (Pbx, Pubs) {
    let mut pbx = Pbx::new(EventFilter::default());
    let mut out = Pubs::new();
    pbx.set_connected(true, &mut out);
    Feeder::new(false).feed(&mut pbx, bytes, chunk, &mut out);
    (pbx, out)
}

/// The last message published on `topic`, as JSON.
fn last_on(pubs: &Pubs, topic: &str) -> Option<Value> {
    pubs.iter()
        .rev()
        .find(|(t, _)| t == topic)
        .map(|(_, d)| json(d))
}

fn json(data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(data)))
}

/// The lifecycle messages per call, in order.
type Lifecycles = HashMap<String, Vec<Value>>;

/// Checks what every capture must satisfy and returns the lifecycles.
fn check(pubs: &Pubs) -> Lifecycles {
    let noise = EventFilter::default();
    let mut calls: Lifecycles = HashMap::new();
    for (topic, data) in pubs {
        assert!(validate_topic(topic).is_ok(), "bad topic {topic}");
        let v = json(data);
        let kind = v["kind"].as_str().unwrap_or_default();
        if topic == TOPIC_EVENTS && kind == "event" {
            let name = v["event"]["Event"].as_str().unwrap_or_default();
            assert!(!noise.is_noise(name.as_bytes()), "noise published: {name}");
            let privilege = v["event"]["Privilege"].as_str().unwrap_or_default();
            assert!(
                !privilege.contains("system") && !privilege.contains("security"),
                "{name}: {privilege}"
            );
            assert!(
                v["event"].get("ActionID").is_none()
                    || name == "OriginateResponse"
                    || name == "UserEvent"
            );
        }
        if topic == TOPIC_CALLS && kind != "link" {
            let l = v["linkedid"].as_str().expect("linkedid").to_owned();
            assert_eq!(v["call"]["linkedid"], l.as_str());
            calls.entry(l).or_default().push(v);
        }
    }
    for (l, msgs) in &calls {
        let kinds: Vec<&str> = msgs
            .iter()
            .map(|m| m["kind"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(kinds.first(), Some(&"started"), "{l}: {kinds:?}");
        assert_eq!(
            kinds.iter().filter(|k| **k == "started").count(),
            1,
            "{l}: {kinds:?}"
        );
        assert!(
            kinds.iter().filter(|k| **k == "ended").count() <= 1,
            "{l}: {kinds:?}"
        );
        if let Some(i) = kinds.iter().position(|k| *k == "ended") {
            assert_eq!(i, kinds.len() - 1, "{l}: ended not last {kinds:?}");
        }
        let answered = kinds.iter().position(|k| *k == "answered");
        let ringing = kinds.iter().position(|k| *k == "ringing");
        assert!(
            kinds.iter().filter(|k| **k == "answered").count() <= 1,
            "{l}: {kinds:?}"
        );
        assert!(
            kinds.iter().filter(|k| **k == "ringing").count() <= 1,
            "{l}: {kinds:?}"
        );
        if let (Some(a), Some(r)) = (answered, ringing) {
            assert!(r < a, "{l}: ringing after answered {kinds:?}");
        }
        let mut last = 0;
        for m in msgs {
            let at = m["at_ms"].as_u64().expect("at_ms");
            assert!(at >= last);
            last = at;
        }
    }
    calls
}

fn kinds(msgs: &[Value]) -> Vec<&str> {
    msgs.iter()
        .map(|m| m["kind"].as_str().unwrap_or_default())
        .collect()
}

fn ended(msgs: &[Value]) -> &Value {
    msgs.last().filter(|m| m["kind"] == "ended").expect("ended")
}

/// Every `started` call is `ended` exactly once.
fn assert_all_ended(calls: &Lifecycles) {
    for (l, msgs) in calls {
        assert_eq!(kinds(msgs).last(), Some(&"ended"), "{l}: {:?}", kinds(msgs));
    }
}

#[test]
fn asterisk16_calls_lifecycle() {
    let bytes = fixture("asterisk16-calls.bin");
    let (pbx, pubs) = run(&bytes, 0);
    let calls = check(&pubs);
    assert_eq!(pbx.channels(), 0);
    assert_eq!(pbx.calls(), 0);
    assert_eq!(pbx.bridges(), 0);
    assert_all_ended(&calls);
    assert!(calls.len() >= 10, "{}", calls.len());

    let answered = &calls["1795248383.46"];
    assert_eq!(kinds(answered), ["started", "ringing", "answered", "ended"]);
    let e = ended(answered);
    assert_eq!(e["answered"], true);
    assert_eq!(e["cause"], 16);
    assert_eq!(e["cause_txt"], "Normal Clearing");
    assert!(e["talk_ms"].as_u64().unwrap_or(0) > 0);
    assert!(e["duration_ms"].as_u64().unwrap_or(0) > e["talk_ms"].as_u64().unwrap_or(0));
    assert_eq!(e["call"]["from"]["num"], "5551001");
    assert_eq!(e["call"]["from"]["name"], "Alice");
    assert_eq!(e["call"]["to"]["endpoint"], "Local/200@lab");
    assert!(answered[2]["ring_ms"].as_u64().unwrap_or(0) > 0);

    let unanswered = &calls["1795248388.50"];
    assert_eq!(kinds(unanswered), ["started", "ringing", "ended"]);
    assert_eq!(ended(unanswered)["answered"], false);
    assert_eq!(ended(unanswered)["talk_ms"], 0);

    let queued = &calls["1795248393.54"];
    assert!(kinds(queued).contains(&"answered"), "{:?}", kinds(queued));
    assert_eq!(ended(queued)["call"]["queue"], "support");
    let abandoned = &calls["1795248399.60"];
    assert!(!kinds(abandoned).contains(&"answered"));
    assert_eq!(ended(abandoned)["answered"], false);
    assert_eq!(ended(abandoned)["call"]["queue"], "support");

    let blind = &calls["1795248403.66"];
    let t = blind
        .iter()
        .find(|m| m["kind"] == "transferred")
        .expect("transferred");
    assert_eq!(t["transfer"], "blind");
    assert_eq!(t["to"], "300");

    let hold = &calls["1795248409.70"];
    let k = kinds(hold);
    let held = k.iter().position(|k| *k == "held").expect("held");
    let unheld = k.iter().position(|k| *k == "unheld").expect("unheld");
    assert!(held < unheld);
    assert_eq!(hold[held]["channel"], "Local/200@lab-00000024;1");
    assert_eq!(hold[held]["call"]["held"], true);
    assert_eq!(hold[unheld]["call"]["held"], false);

    let rec = &calls["1795248443.76"];
    let r: Vec<&Value> = rec.iter().filter(|m| m["kind"] == "recording").collect();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["recording"], true);
    assert_eq!(r[0]["call"]["recording"], true);
    assert_eq!(r[1]["recording"], false);

    // Queue `support`: each queued call joins and leaves.
    let callers: Vec<usize> = std::iter::once(0)
        .chain(
            pubs.iter()
                .filter(|(t, _)| t == "ami.queue.support")
                .map(|(_, d)| json(d)["queue"]["callers"].as_array().map_or(0, Vec::len)),
        )
        .collect();
    let joins = callers.windows(2).filter(|w| w[1] > w[0]).count();
    let leaves = callers.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!((joins, leaves), (2, 2), "{callers:?}");
    assert_eq!(callers.last(), Some(&0));
    let last = last_on(&pubs, "ami.queue.support").expect("queue update");
    let members = last["queue"]["members"].as_array().expect("members");
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["interface"], "Local/agent1@agents/n");
    assert_eq!(members[0]["status_text"], "NOT_INUSE");

    // Events reach the call topics; filtered ones never do.
    assert!(pubs.iter().any(|(t, _)| t == "ami.call.1795248383.46"));
    assert!(!pubs.iter().any(|(_, d)| {
        let s = String::from_utf8_lossy(d);
        s.contains("\"Event\":\"VarSet\"")
            || s.contains("\"Event\":\"SuccessfulAuth\"")
            || s.contains("\"Event\":\"FullyBooted\"")
    }));
    // Endpoint updates follow device states.
    let ep = last_on(&pubs, "ami.endpoint.Local/200@lab").expect("endpoint update");
    assert_eq!(ep["endpoint"]["state"], "NOT_INUSE");
    assert_eq!(ep["endpoint"]["channels"], serde_json::json!([]));
}

#[test]
fn asterisk22_captures() {
    for name in ["asterisk22-local.txt", "asterisk22-sip-systemname.txt"] {
        let bytes = fixture(name);
        let (pbx, pubs) = run(&bytes, 0);
        let calls = check(&pubs);
        assert_eq!(pbx.channels(), 0, "{name}");
        assert_eq!(pbx.calls(), 0, "{name}");
        assert_all_ended(&calls);
        let all: Vec<&str> = calls.values().flat_map(|m| kinds(m)).collect();
        // (Hold and Unhold never pair on one channel in these runs: a held channel
        // hangs up, an Unhold comes with a blind transfer.)
        for k in ["ringing", "answered", "held", "transferred", "recording"] {
            assert!(all.contains(&k), "{name}: no {k}");
        }
        let attended = calls
            .values()
            .flatten()
            .filter(|m| m["kind"] == "transferred" && m["transfer"] == "attended")
            .count();
        assert!(attended > 0, "{name}: no attended transfer");
        assert!(pbx.queues() >= 1);
        assert!(pubs.iter().any(|(t, _)| t.starts_with("ami.queue.")));
        assert!(
            !pubs
                .iter()
                .any(|(_, d)| String::from_utf8_lossy(d).contains("\"Event\":\"CEL\""))
        );
    }
}

#[test]
fn chunked_feeding_publishes_the_same() {
    let bytes = fixture("asterisk16-calls.bin");
    let (_, whole) = run(&bytes, 0);
    for chunk in [1, 7, 113, 4096] {
        let (_, pubs) = run(&bytes, chunk);
        assert!(pubs == whole, "chunk {chunk}");
    }
}

/// The capture up to the end of the message that contains `marker`.
fn cut_after<'a>(bytes: &'a [u8], marker: &[u8]) -> (&'a [u8], &'a [u8]) {
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker");
    let end = bytes[at..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| at + i + 4)
        .expect("message end");
    bytes.split_at(end)
}

#[test]
fn snapshot_mid_call() {
    let bytes = fixture("asterisk16-calls.bin");
    let (head, _) = cut_after(&bytes, b"Event: Hold\r\n");
    let (pbx, _) = run(head, 0);
    assert_eq!(pbx.calls(), 1);
    assert_eq!(pbx.channels(), 4);
    let mut out = Pubs::new();
    pbx.snapshot(TOPIC_CALLS, false, &mut out);
    assert_eq!(out.len(), 1);
    let v = json(&out[0].1);
    assert_eq!(v["kind"], "snapshot");
    assert_eq!(v["connected"], true);
    let calls = v["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["linkedid"], "1795248409.70");
    assert_eq!(calls[0]["state"], "answered");
    assert_eq!(calls[0]["held"], true);
    assert_eq!(calls[0]["channels"].as_array().map(Vec::len), Some(4));
    assert!(calls[0]["answered_ms"].as_u64().is_some());

    // Exact names.
    let mut out = Pubs::new();
    pbx.snapshot("ami.call.1795248409.70", false, &mut out);
    pbx.snapshot("ami.call.nope", false, &mut out);
    pbx.snapshot("ami.queue.support", false, &mut out);
    pbx.snapshot("ami.queue.nope", false, &mut out);
    pbx.snapshot("ami.endpoint.Local/200@lab", false, &mut out);
    pbx.snapshot("ami.endpoint.nope", false, &mut out);
    pbx.snapshot("other.topic", false, &mut out);
    pbx.snapshot("ami.unknown", false, &mut out);
    let topics: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "ami.call.1795248409.70",
            "ami.call.nope",
            "ami.queue.support",
            "ami.queue.nope",
            "ami.endpoint.Local/200@lab",
            "ami.endpoint.nope"
        ]
    );
    let v: Vec<Value> = out.iter().map(|(_, d)| json(d)).collect();
    assert_eq!(v[0]["call"]["state"], "answered");
    assert_eq!(v[1]["call"], Value::Null);
    assert_eq!(v[2]["queue"]["name"], "support");
    assert_eq!(v[3]["queue"], Value::Null);
    assert_eq!(v[4]["endpoint"]["state"], "INUSE");
    assert_eq!(
        v[4]["endpoint"]["channels"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(v[5]["endpoint"], Value::Null);

    // Subtrees.
    let mut out = Pubs::new();
    pbx.snapshot("ami", true, &mut out);
    let topics: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        &topics[..3],
        ["ami.events", "ami.calls", "ami.call.1795248409.70"]
    );
    assert!(topics.contains(&"ami.queue.support"));
    assert!(topics.contains(&"ami.endpoint.Local/200@lab"));
    let events = json(&out[0].1);
    assert_eq!(events["pbx"]["channels"].as_array().map(Vec::len), Some(4));
    assert_eq!(events["pbx"]["channels"][0]["state"], "Up");
    assert_eq!(events["pbx"]["channels"][0]["state_code"], 6);
    assert_eq!(events["pbx"]["calls"].as_array().map(Vec::len), Some(1));
    assert!(events["pbx"]["queues"].as_array().is_some());
    assert!(events["pbx"]["endpoints"].as_array().is_some());
    for (t, d) in &out {
        assert!(validate_topic(t).is_ok());
        json(d);
    }
    let mut out = Pubs::new();
    pbx.snapshot("ami.queue", true, &mut out);
    assert!(out.iter().all(|(t, _)| t.starts_with("ami.queue.")));
    assert!(!out.is_empty());
    let mut out = Pubs::new();
    pbx.snapshot("ami.call.1795248409", true, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "ami.call.1795248409.70");
    let mut out = Pubs::new();
    pbx.snapshot("ami.events", true, &mut out);
    pbx.snapshot("other", true, &mut out);
    pbx.snapshot("amix", true, &mut out);
    assert!(out.is_empty());

    // The gateway's view.
    assert_eq!(
        pbx.linkedid_of("Local/200@lab-00000024;1"),
        Some("1795248409.70")
    );
    assert_eq!(pbx.linkedid_of("nope"), None);
    let mut chans = pbx.channels_of_call("1795248409.70");
    chans.sort_unstable();
    assert_eq!(chans.len(), 4);
    assert!(pbx.channels_of_call("nope").is_empty());
    assert!(pbx.has_queue("support"));
    assert!(!pbx.has_queue("sales"));
}

/// Parses messages written as text (`\n` line ends) and applies them.
fn apply_text(pbx: &mut Pbx, text: &str, now: u64, out: &mut Pubs) {
    let bytes = text.replace('\n', "\r\n");
    let mut f = Feeder::new(true);
    f.clock = now;
    f.feed(pbx, bytes.as_bytes(), 0, out);
}

fn core_show_channel(name: &str, uid: &str, linkedid: &str, state: u8, bridge: &str) -> String {
    format!(
        "Event: CoreShowChannel\nActionID: sb-s-2\nChannel: {name}\nChannelState: {state}\n\
         ChannelStateDesc: x\nCallerIDNum: 101\nCallerIDName: Bob\nConnectedLineNum: 102\n\
         ConnectedLineName: Eve\nLanguage: en\nAccountCode: \nContext: from-internal\nExten: 102\n\
         Priority: 1\nUniqueid: {uid}\nLinkedid: {linkedid}\nApplication: Dial\n\
         ApplicationData: \nDuration: 00:01:05\nBridgeId: {bridge}\n\n"
    )
}

#[test]
fn resync_drops_lost_calls_and_announces_new_ones() {
    let bytes = fixture("asterisk16-calls.bin");
    let (head, _) = cut_after(&bytes, b"Event: Hold\r\n");
    let (mut pbx, _) = run(head, 0);
    assert_eq!(pbx.calls(), 1);
    let mut out = Pubs::new();
    pbx.set_connected(false, &mut out);
    pbx.set_connected(false, &mut out);
    pbx.set_connected(true, &mut out);
    assert_eq!(out.len(), 4);
    assert_eq!(
        json(&out[0].1),
        serde_json::json!({"kind":"link","connected":false})
    );
    pbx.resync_begin();
    let now = 5_000_000;
    let mut items = String::new();
    items += &core_show_channel("PJSIP/101-00000001", "9000.1", "9000.1", 6, "br-1");
    items += &core_show_channel("PJSIP/102-00000002", "9000.2", "9000.1", 6, "br-1");
    items += &core_show_channel("PJSIP/103-00000003", "9000.3", "9000.3", 5, "");
    items += "Event: QueueParams\nActionID: sb-s-3\nQueue: support\nMax: 0\nCalls: 1\n\n";
    items += "Event: QueueMember\nActionID: sb-s-3\nQueue: support\nName: Agent One\n\
              Location: Local/agent1@agents/n\nStateInterface: Local/agent1@agents\n\
              Membership: static\nPenalty: 0\nCallsTaken: 3\nInCall: 0\nStatus: 1\nPaused: 1\n\
              PausedReason: lunch\n\n";
    items += "Event: QueueEntry\nActionID: sb-s-3\nQueue: support\nPosition: 1\n\
              Channel: PJSIP/103-00000003\nUniqueid: 9000.3\nCallerIDNum: 103\nCallerIDName: Ann\n\
              ConnectedLineNum: \nConnectedLineName: \nWait: 12\nPriority: 0\n\n";
    items += "Event: QueueStatusComplete\nActionID: sb-s-3\nEventList: Complete\nListItems: 3\n\n";
    items +=
        "Event: CoreShowChannelsComplete\nActionID: sb-s-2\nEventList: Complete\nListItems: 3\n\n";
    apply_text(&mut pbx, &items, now, &mut out);
    // List items are not published as events, and nothing is announced yet.
    assert!(
        !out.iter()
            .skip(4)
            .any(|(t, _)| t == TOPIC_EVENTS || t == TOPIC_CALLS)
    );
    pbx.resync_end(now + 100, &mut out);
    for (t, d) in &out {
        assert!(validate_topic(t).is_ok());
        json(d);
    }
    let calls = check_tail(&out);
    let lost = &calls["1795248409.70"];
    let e = ended(lost);
    assert_eq!(e["reason"], "lost");
    assert_eq!(e["cause"], Value::Null);
    assert_eq!(e["answered"], true);
    let new = &calls["9000.1"];
    assert_eq!(kinds(new), ["started", "answered"]);
    assert_eq!(new[0]["call"]["started_ms"], now - 65_000);
    assert_eq!(new[0]["call"]["from"]["num"], "101");
    let ringing = &calls["9000.3"];
    assert_eq!(kinds(ringing), ["started", "ringing"]);
    assert_eq!(ringing[0]["call"]["queue"], "support");
    assert_eq!(pbx.channels(), 3);
    assert_eq!(pbx.calls(), 2);
    let q = last_on(&out, "ami.queue.support").expect("queue update");
    assert_eq!(q["event"], RESYNC_EVENT);
    let members = q["queue"]["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["paused"], true);
    assert_eq!(members[0]["paused_reason"], "lunch");
    assert_eq!(members[0]["calls_taken"], 3);
    let callers = q["queue"]["callers"].as_array().expect("callers");
    assert_eq!(callers.len(), 1);
    assert_eq!(callers[0]["caller"]["name"], "Ann");
    assert_eq!(callers[0]["joined_ms"], now + 5 * TICK - 12_000);
    // Endpoints of lost channels are updated.
    assert!(out.iter().any(|(t, d)| t == "ami.endpoint.Local/200@lab"
        && json(d)["endpoint"]["channels"] == serde_json::json!([])));
    // A second resync with nothing listed ends everything, once.
    let mut out = Pubs::new();
    pbx.resync_begin();
    pbx.resync_end(now + 200, &mut out);
    let calls = check_tail(&out);
    assert_eq!(calls.len(), 2);
    assert!(calls.values().all(|m| kinds(m) == ["ended"]));
    assert_eq!(pbx.channels(), 0);
    assert_eq!(pbx.calls(), 0);
}

/// Lifecycles of a publication list that starts mid-stream (no `started` check).
fn check_tail(pubs: &Pubs) -> Lifecycles {
    let mut calls: Lifecycles = HashMap::new();
    for (topic, data) in pubs {
        let v = json(data);
        if topic == TOPIC_CALLS && v["kind"] != "link" {
            calls
                .entry(v["linkedid"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(v);
        }
    }
    calls
}

const SIP_CALL: &str = "\
Event: Newchannel
Privilege: call,all
Channel: PJSIP/101-00000001
ChannelState: 4
ChannelStateDesc: Ring
CallerIDNum: 101
CallerIDName: Bob
ConnectedLineNum: <unknown>
ConnectedLineName: <unknown>
Language: en
AccountCode: 
Context: from-internal
Exten: 102
Priority: 1
Uniqueid: 1700000000.1
Linkedid: 1700000000.1

Event: Newchannel
Privilege: call,all
Channel: PJSIP/102-00000002
ChannelState: 0
ChannelStateDesc: Down
CallerIDNum: 102
CallerIDName: Eve
ConnectedLineNum: 101
ConnectedLineName: Bob
Language: en
AccountCode: 
Context: from-internal
Exten: 102
Priority: 1
Uniqueid: 1700000000.2
Linkedid: 1700000000.1

Event: DialBegin
Privilege: call,all
Channel: PJSIP/101-00000001
ChannelState: 4
Uniqueid: 1700000000.1
Linkedid: 1700000000.1
DestChannel: PJSIP/102-00000002
DestChannelState: 0
DestCallerIDNum: 102
DestCallerIDName: Eve
DestUniqueid: 1700000000.2
DestLinkedid: 1700000000.1
DialString: 102

Event: Newstate
Privilege: call,all
Channel: PJSIP/102-00000002
ChannelState: 5
ChannelStateDesc: Ringing
Uniqueid: 1700000000.2
Linkedid: 1700000000.1

Event: DeviceStateChange
Privilege: call,all
Device: PJSIP/102
State: RINGING

Event: DialEnd
Privilege: call,all
Channel: PJSIP/101-00000001
ChannelState: 4
Uniqueid: 1700000000.1
Linkedid: 1700000000.1
DestChannel: PJSIP/102-00000002
DestChannelState: 6
DestUniqueid: 1700000000.2
DestLinkedid: 1700000000.1
DialStatus: ANSWER

Event: BridgeCreate
Privilege: call,all
BridgeUniqueid: b1

Event: BridgeEnter
Privilege: call,all
BridgeUniqueid: b1
Channel: PJSIP/102-00000002
ChannelState: 6
Uniqueid: 1700000000.2
Linkedid: 1700000000.1

Event: BridgeEnter
Privilege: call,all
BridgeUniqueid: b1
Channel: PJSIP/101-00000001
ChannelState: 6
Uniqueid: 1700000000.1
Linkedid: 1700000000.1

Event: VarSet
Privilege: dialplan,all
Channel: PJSIP/101-00000001
ChannelState: 6
Uniqueid: 1700000000.1
Linkedid: 1700000000.1
Variable: X
Value: 1

Event: Newexten
Privilege: dialplan,all
Channel: PJSIP/101-00000001
ChannelState: 6
Context: from-internal
Exten: h
Uniqueid: 1700000000.1
Linkedid: 1700000000.1

Event: BridgeLeave
Privilege: call,all
BridgeUniqueid: b1
Channel: PJSIP/102-00000002
ChannelState: 6
Uniqueid: 1700000000.2
Linkedid: 1700000000.1

Event: Hangup
Privilege: call,all
Channel: PJSIP/102-00000002
ChannelState: 6
Uniqueid: 1700000000.2
Linkedid: 1700000000.1
Cause: 16
Cause-txt: Normal Clearing

Event: NewConnectedLine
Privilege: call,all
Channel: PJSIP/102-00000002
ChannelState: 6
Uniqueid: 1700000000.2
Linkedid: 1700000000.1

Event: BridgeLeave
Privilege: call,all
BridgeUniqueid: b1
Channel: PJSIP/101-00000001
ChannelState: 6
Uniqueid: 1700000000.1
Linkedid: 1700000000.1

Event: Hangup
Privilege: call,all
Channel: PJSIP/101-00000001
ChannelState: 6
Uniqueid: 1700000000.1
Linkedid: 1700000000.1
Cause: 16
Cause-txt: Normal Clearing

Event: BridgeDestroy
Privilege: call,all
BridgeUniqueid: b1

";

#[test]
fn sip_call_exact_messages() {
    let mut pbx = Pbx::new(EventFilter::default());
    let mut out = Pubs::new();
    apply_text(&mut pbx, SIP_CALL, 100, &mut out);
    assert_eq!(pbx.channels(), 0);
    assert_eq!(pbx.calls(), 0);
    assert_eq!(pbx.bridges(), 0);
    let calls: Vec<String> = out
        .iter()
        .filter(|(t, _)| t == TOPIC_CALLS)
        .map(|(_, d)| String::from_utf8(d.clone()).expect("utf-8"))
        .collect();
    let call = |state: &str, to: &str, channels: &str, answered: &str| {
        format!(
            r#"{{"linkedid":"1700000000.1","state":"{state}","from":{{"num":"101","name":"Bob","endpoint":"PJSIP/101"}},"to":{to},"channels":[{channels}],"queue":null,"held":false,"recording":false,"started_ms":100,"answered_ms":{answered}}}"#
        )
    };
    let eve = r#"{"num":"102","name":"Eve","endpoint":"PJSIP/102"}"#;
    let both = r#""1700000000.1","1700000000.2""#;
    assert_eq!(
        calls,
        [
            format!(
                r#"{{"kind":"started","linkedid":"1700000000.1","at_ms":100,"call":{}}}"#,
                call("started", "null", r#""1700000000.1""#, "null")
            ),
            format!(
                r#"{{"kind":"ringing","linkedid":"1700000000.1","at_ms":130,"call":{}}}"#,
                call("ringing", eve, both, "null")
            ),
            format!(
                r#"{{"kind":"answered","linkedid":"1700000000.1","at_ms":150,"call":{},"ring_ms":20}}"#,
                call("answered", eve, both, "150")
            ),
            format!(
                r#"{{"kind":"ended","linkedid":"1700000000.1","at_ms":250,"call":{},"cause":16,"cause_txt":"Normal Clearing","answered":true,"duration_ms":150,"talk_ms":100}}"#,
                call("answered", eve, "", "150")
            ),
        ]
    );
    // Every event but the noise reached ami.events and the call's topic.
    let events = out.iter().filter(|(t, _)| t == TOPIC_EVENTS).count();
    let call_events = out
        .iter()
        .filter(|(t, _)| t == "ami.call.1700000000.1")
        .count();
    assert_eq!(events, 15);
    // DeviceStateChange, BridgeCreate and BridgeDestroy name no channel of the call.
    assert_eq!(call_events, 12);
    let first = out
        .iter()
        .find(|(t, _)| t == "ami.call.1700000000.1")
        .map(|(_, d)| String::from_utf8(d.clone()).expect("utf-8"));
    assert_eq!(
        first.as_deref(),
        Some(
            r#"{"kind":"event","event":{"Event":"Newchannel","Privilege":"call,all","Channel":"PJSIP/101-00000001","ChannelState":"4","ChannelStateDesc":"Ring","CallerIDNum":"101","CallerIDName":"Bob","ConnectedLineNum":"<unknown>","ConnectedLineName":"<unknown>","Language":"en","AccountCode":"","Context":"from-internal","Exten":"102","Priority":"1","Uniqueid":"1700000000.1","Linkedid":"1700000000.1"}}"#
        )
    );
    // Endpoint updates: channels come and go, the device state is reported.
    let updates: Vec<Value> = out
        .iter()
        .filter(|(t, _)| t == "ami.endpoint.PJSIP/102")
        .map(|(_, d)| json(d))
        .collect();
    assert_eq!(updates[0]["kind"], "update");
    assert_eq!(updates[0]["event"], "Newchannel");
    assert_eq!(
        updates[0]["endpoint"],
        serde_json::json!({"name":"PJSIP/102","state":"UNKNOWN","channel_count":1,"channels":["PJSIP/102-00000002"]})
    );
    assert_eq!(updates[1]["event"], "DeviceStateChange");
    assert_eq!(updates[1]["endpoint"]["state"], "RINGING");
    assert_eq!(
        updates.last().map(|u| &u["endpoint"]["channels"]),
        Some(&serde_json::json!([]))
    );
    // The endpoint without device state is forgotten when its channel goes.
    let mut snap = Pubs::new();
    pbx.snapshot("ami.endpoint.PJSIP/101", false, &mut snap);
    assert_eq!(json(&snap[0].1)["endpoint"], Value::Null);
    pbx.snapshot("ami.endpoint.PJSIP/102", false, &mut snap);
    assert_eq!(json(&snap[1].1)["endpoint"]["state"], "RINGING");
    // The late NewConnectedLine did not bring the hung-up channel back.
    assert_eq!(pbx.endpoints(), 1);
}

#[test]
fn odd_input_never_panics_or_breaks_invariants() {
    let mut pbx = Pbx::new(EventFilter::new(&[]));
    let mut out = Pubs::new();
    let garbage = "\
Event: Hangup

Event: Newchannel
Uniqueid: 1.1

Event: Newstate
ChannelState: 5
Uniqueid: nope

Event: BridgeEnter
BridgeUniqueid: b
Uniqueid: 1.1
ChannelState: 6

Event: BridgeMerge
ToBridgeUniqueid: a
FromBridgeUniqueid: a

Event: BridgeMerge
ToBridgeUniqueid: x
FromBridgeUniqueid: y

Event: QueueCallerLeave
Queue: q

Event: QueueMemberRemoved
Queue: q

Event: QueueCallerJoin
Queue: q
Position: nan

Event: DeviceStateChange
Device: 

Event: Rename
Newname: z

Event: AttendedTransfer
Result: Success
DestType: Bridge

Event: BlindTransfer
Result: Fail

Event: Hold

Event: MixMonitorStart
Channel: ghost

Event: Newchannel
Channel: SIP/a-1
ChannelState: 99999999999999999999999
Uniqueid: 2.1
Linkedid: 

Event: Newchannel
Channel: SIP/a-1
ChannelState: 4
Uniqueid: 2.1
Linkedid: 2.1

Event: Rename
Channel: SIP/a-1
Newname: SIP/b-1
Uniqueid: 2.1

Event: Newchannel
Channel: Local/x@y-1;1
ChannelState: 6
Uniqueid: 2.2
Linkedid: 2.1

Event: Newstate
Channel: SIP/b-1
ChannelState: 6
Uniqueid: 2.1
Linkedid: 3.1

Event: Hangup
Channel: SIP/b-1
ChannelState: 6
Uniqueid: 2.1
Linkedid: 3.1
Cause: x

Event: Hangup
Channel: SIP/b-1
ChannelState: 6
Uniqueid: 2.1
Linkedid: 3.1

Event: Newstate
Channel: SIP/b-1
ChannelState: 5
Uniqueid: 2.1
Linkedid: 3.1

Event: Hangup
Channel: Local/x@y-1;1
ChannelState: 6
Uniqueid: 2.2
Linkedid: 2.1

Event: UnknownThing
Privilege: call,all
Linkedid: 2.1
Foo: bar

Event: QueueMemberStatus
Queue: q
Interface: Local/a
Status: 77777777777

Event: QueueCallerJoin
Queue: q
Channel: SIP/c-1
ChannelState: 6
Uniqueid: 4.1
Linkedid: 4.1
Position: 1

Event: AgentConnect
Queue: q
Channel: SIP/c-1
ChannelState: 6
Uniqueid: 4.1
Linkedid: 4.1
DestUniqueid: ghost
Interface: Local/a

Event: Hangup
Channel: SIP/c-1
ChannelState: 6
Uniqueid: 4.1
Linkedid: 4.1
Cause: 17
Cause-txt: User busy

";
    apply_text(&mut pbx, garbage, 10, &mut out);
    apply_text(&mut pbx, garbage, 1000, &mut out);
    let calls = check(&out);
    assert_all_ended(&calls);
    assert_eq!(pbx.channels(), 0);
    assert_eq!(pbx.calls(), 0);
    // Channel 2.1 moved to call 3.1 (its Linkedid changed); each call ended once,
    // without a cause (none was given).
    assert_eq!(ended(&calls["3.1"])["cause"], Value::Null);
    assert_eq!(ended(&calls["2.1"])["cause"], Value::Null);
    assert!(ended(&calls["2.1"]).get("reason").is_none());
    assert_eq!(ended(&calls["4.1"])["cause"], 17);
    assert_eq!(ended(&calls["4.1"])["cause_txt"], "User busy");
    assert_eq!(ended(&calls["4.1"])["answered"], true);
    assert!(pbx.has_queue("q"));
    let mut snap = Pubs::new();
    pbx.snapshot("ami.queue.q", false, &mut snap);
    let q = json(&snap[0].1);
    assert_eq!(q["queue"]["callers"], serde_json::json!([]));
    assert_eq!(q["queue"]["members"][0]["in_call"], true);
    assert_eq!(q["queue"]["members"][0]["status_text"], "UNKNOWN");
    assert_caller_index_in_step(&pbx);
}

/// Every queue's index of caller uniqueids holds exactly its callers.
fn assert_caller_index_in_step(pbx: &Pbx) {
    for q in pbx.queues.values() {
        assert_eq!(q.caller_ids.len(), q.callers.len(), "queue {}", q.name);
        for c in &q.callers {
            assert!(q.caller_ids.contains_key(&c.uniqueid), "{}", c.uniqueid);
        }
    }
}

#[test]
fn pbx_is_send() {
    fn send<T: Send>() {}
    send::<Pbx>();
}

#[test]
fn a_trunk_lists_a_bounded_number_of_its_channels() {
    use crate::ami::state::render::MAX_ENDPOINT_CHANNELS_LISTED;
    let mut pbx = Pbx::new(EventFilter::default());
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let n = MAX_ENDPOINT_CHANNELS_LISTED + 8;
    for i in 0..n {
        let raw = format!(
            "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-{i:08x}\r\n\
             ChannelState: 4\r\nChannelStateDesc: Ring\r\nCallerIDNum: 0612\r\n\
             CallerIDName: <unknown>\r\nConnectedLineNum: <unknown>\r\n\
             ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\n\
             Context: from-trunk\r\nExten: 600\r\nPriority: 1\r\n\
             Uniqueid: 1700000000.{i}\r\nLinkedid: 1700000000.{i}\r\n\r\n"
        );
        let mut parser = Parser::client().skip_banner();
        let (_, item) = parser.parse(raw.as_bytes()).unwrap();
        let Some(Item::Message(m)) = item else {
            panic!("a message")
        };
        pbx.on_event(&m, i as u64, &mut out);
    }
    let last = last_on(&out, "ami.endpoint.PJSIP/trunk").expect("an endpoint update");
    assert_eq!(last["endpoint"]["channel_count"], n as u64);
    assert_eq!(
        last["endpoint"]["channels"].as_array().unwrap().len(),
        MAX_ENDPOINT_CHANNELS_LISTED
    );
}

#[test]
fn batches_coalesce_updates_and_change_nothing_else() {
    let bytes = fixture("asterisk22-local.txt");
    let (_, each) = run(&bytes, 4096);
    let mut pbx = Pbx::new(EventFilter::default());
    let mut batched = Pubs::new();
    pbx.set_connected(true, &mut batched);
    let mut feeder = Feeder::new(false);
    feeder.batches = true;
    feeder.feed(&mut pbx, &bytes, 4096, &mut batched);
    let is_update = |t: &str| t.starts_with("ami.queue.") || t.starts_with("ami.endpoint.");
    // Events and the lifecycle are the same, message for message.
    let others = |pubs: &Pubs| -> Pubs {
        pubs.iter()
            .filter(|(t, _)| !is_update(t))
            .cloned()
            .collect()
    };
    assert_eq!(others(&each), others(&batched));
    // Fewer updates, and the last of each topic (its state after the stream) the same.
    let last = |pubs: &Pubs| -> (usize, HashMap<String, Value>) {
        let updates: Vec<&(String, Vec<u8>)> = pubs.iter().filter(|(t, _)| is_update(t)).collect();
        let mut last = HashMap::new();
        for (t, d) in &updates {
            let mut v = json(d);
            v["event"] = Value::Null;
            last.insert(t.clone(), v);
        }
        (updates.len(), last)
    };
    let ((n_each, last_each), (n_batched, last_batched)) = (last(&each), last(&batched));
    assert!(
        n_batched < n_each,
        "{n_batched} updates batched vs {n_each}"
    );
    assert_eq!(last_each, last_batched);
}

/// Callers are kept in position order whatever order their entries arrive in, and
/// one whose position changes moves (a join out of order, a list's entries shuffled,
/// a caller reported again further up).
#[test]
fn queue_callers_are_kept_in_position_order() {
    let mut pbx = Pbx::new(EventFilter::default());
    let mut out = Pubs::new();
    pbx.set_connected(true, &mut out);
    let entry = |uid: &str, position: u64| {
        format!(
            "Event: QueueCallerJoin\nPrivilege: agent,all\nQueue: q\nChannel: SIP/c-{uid}\n\
             ChannelState: 6\nUniqueid: {uid}\nLinkedid: {uid}\nPosition: {position}\n\n"
        )
    };
    let order = |pbx: &Pbx| -> Vec<(String, u64)> {
        let q = pbx.queues.get("q").expect("the queue");
        q.callers
            .iter()
            .map(|c| (c.uniqueid.to_string(), c.position))
            .collect()
    };
    for (uid, position) in [("c", 3), ("a", 1), ("d", 4), ("b", 2), ("e", 5)] {
        apply_text(&mut pbx, &entry(uid, position), 0, &mut out);
    }
    let want = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
        list.iter().map(|&(u, p)| (u.to_owned(), p)).collect()
    };
    assert_eq!(
        order(&pbx),
        want(&[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])
    );
    // `e` reported again at the front, `a` at the back.
    apply_text(&mut pbx, &entry("e", 0), 0, &mut out);
    apply_text(&mut pbx, &entry("a", 9), 0, &mut out);
    assert_eq!(
        order(&pbx),
        want(&[("e", 0), ("b", 2), ("c", 3), ("d", 4), ("a", 9)])
    );
    assert_caller_index_in_step(&pbx);
}

/// A queue with more than `BIG_LIST` entries gets at most one `update` per
/// `BIG_UPDATE_MS`, and always one with its final state (published by `tick`
/// once due); a small queue gets one per change.
#[test]
fn big_queues_are_updated_at_most_every_interval_and_always_last() {
    let mut pbx = Pbx::new(EventFilter::default());
    let mut out = Pubs::new();
    pbx.set_connected(true, &mut out);
    let join = |queue: &str, i: usize| {
        format!(
            "Event: QueueCallerJoin\nPrivilege: agent,all\nQueue: {queue}\nChannel: SIP/c-{queue}{i}\n\
             ChannelState: 6\nUniqueid: {queue}.{i}\nLinkedid: {queue}.{i}\nPosition: {}\n\
             Count: {}\n\n",
            i + 1,
            i + 1
        )
    };
    let callers = |pubs: &Pubs, topic: &str| -> Vec<usize> {
        pubs.iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, d)| json(d)["queue"]["callers"].as_array().map_or(0, Vec::len))
            .collect()
    };
    // 1,000 callers join, one event a millisecond.
    const N: usize = 1000;
    let start = 1_000_000;
    let mut now = start;
    for i in 0..N {
        apply_text(&mut pbx, &join("big", i), now, &mut out);
        now += 1;
    }
    now -= 1;
    let updates = callers(&out, "ami.queue.big");
    // One per change up to BIG_LIST callers (the last at start + BIG_LIST - 1), then
    // one per interval.
    let last_small = start + BIG_LIST as u64 - 1;
    let throttled = ((now - last_small) / BIG_UPDATE_MS) as usize;
    assert_eq!(updates.len(), BIG_LIST + throttled, "{updates:?}");
    assert_eq!(updates.get(..3), Some(&[1, 2, 3][..]));
    let first_held = BIG_LIST + BIG_UPDATE_MS as usize;
    assert_eq!(updates.get(BIG_LIST), Some(&first_held));
    assert!(
        updates.last() < Some(&N),
        "the last change is still held back"
    );
    // Held back until due; then its final state.
    pbx.tick(now, &mut out);
    assert_eq!(callers(&out, "ami.queue.big").len(), updates.len());
    pbx.tick(now + BIG_UPDATE_MS, &mut out);
    let updates = callers(&out, "ami.queue.big");
    assert_eq!(updates.last(), Some(&N));
    pbx.tick(now + 10 * BIG_UPDATE_MS, &mut out);
    assert_eq!(
        callers(&out, "ami.queue.big"),
        updates,
        "nothing more to say"
    );
    // A small queue: one update per change.
    for i in 0..20 {
        apply_text(&mut pbx, &join("small", i), now, &mut out);
    }
    assert_eq!(
        callers(&out, "ami.queue.small"),
        (1..=20).collect::<Vec<_>>()
    );
    // The snapshot of the big queue has every caller.
    let mut snap = Pubs::new();
    pbx.snapshot("ami.queue.big", false, &mut snap);
    let q = snap
        .iter()
        .find(|(t, _)| t == "ami.queue.big")
        .map(|(_, d)| json(d))
        .expect("a snapshot of the queue");
    assert_eq!(q["queue"]["callers"].as_array().map(Vec::len), Some(N));
    assert_caller_index_in_step(&pbx);
    // Half leave, a tenth hang up while waiting: the rest keep their order.
    for i in (0..N).step_by(2) {
        let leave = format!(
            "Event: QueueCallerLeave\nPrivilege: agent,all\nQueue: big\nChannel: SIP/c-big{i}\n\
             ChannelState: 6\nUniqueid: big.{i}\nLinkedid: big.{i}\nPosition: 1\n\n"
        );
        apply_text(&mut pbx, &leave, now, &mut out);
    }
    for i in (1..N).step_by(10) {
        let hangup = format!(
            "Event: Hangup\nPrivilege: call,all\nChannel: SIP/c-big{i}\nChannelState: 6\n\
             Uniqueid: big.{i}\nLinkedid: big.{i}\nCause: 16\n\n"
        );
        apply_text(&mut pbx, &hangup, now, &mut out);
    }
    assert_caller_index_in_step(&pbx);
    let q = pbx.queues.get("big").expect("the queue");
    assert_eq!(q.callers.len(), N / 2 - N / 10);
    let positions: Vec<u64> = q.callers.iter().map(|c| c.position).collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    assert!(q.callers.iter().all(|c| {
        let i: usize = c.uniqueid.trim_start_matches("big.").parse().unwrap_or(0);
        i % 2 == 1 && i % 10 != 1
    }));
}

/// A parser that skips the events the model drops on sight changes nothing the model
/// publishes, message for message, on whole captures.
#[test]
fn skipping_the_dropped_events_changes_nothing() {
    for name in ["asterisk22-local.txt", "asterisk16-calls.bin"] {
        let bytes = fixture(name);
        let (plain_pbx, plain) = run(&bytes, 4096);
        let mut pbx = Pbx::new(EventFilter::default());
        assert_eq!(pbx.skippable().len(), 5, "{:?}", pbx.skippable());
        let mut skipped = Pubs::new();
        pbx.set_connected(true, &mut skipped);
        let mut feeder = Feeder::new(false);
        feeder.parser = std::mem::take(&mut feeder.parser).skip_events(pbx.skippable());
        feeder.feed(&mut pbx, &bytes, 4096, &mut skipped);
        assert_eq!(plain.len(), skipped.len(), "{name}");
        assert!(plain == skipped, "{name}: the publications differ");
        assert_eq!(
            (plain_pbx.channels(), plain_pbx.calls()),
            (pbx.channels(), pbx.calls())
        );
    }
    // Noise that is published is not skipped.
    let pbx = Pbx::new(EventFilter::new(&["CEL".to_owned()]));
    assert_eq!(pbx.skippable(), ["CEL"]);
}

/// A trunk endpoint with more than `BIG_LIST` channels is updated at most every
/// `BIG_UPDATE_MS` too, and its last change always gets an update.
#[test]
fn big_endpoints_are_updated_at_most_every_interval_and_always_last() {
    let mut pbx = Pbx::new(EventFilter::default());
    let mut out = Pubs::new();
    pbx.set_connected(true, &mut out);
    const N: usize = 400;
    let start = 2_000_000;
    let mut now = start;
    for i in 0..N {
        let event = format!(
            "Event: Newchannel\nPrivilege: call,all\nChannel: PJSIP/trunk-{i:08x}\n\
             ChannelState: 4\nChannelStateDesc: Ring\nCallerIDNum: 100\nUniqueid: t.{i}\n\
             Linkedid: t.{i}\n\n"
        );
        apply_text(&mut pbx, &event, now, &mut out);
        now += 1;
    }
    now -= 1;
    let counts = |pubs: &Pubs| -> Vec<u64> {
        pubs.iter()
            .filter(|(t, _)| t == "ami.endpoint.PJSIP/trunk")
            .map(|(_, d)| json(d)["endpoint"]["channel_count"].as_u64().unwrap_or(0))
            .collect()
    };
    let updates = counts(&out);
    let last_small = start + BIG_LIST as u64 - 1;
    let throttled = ((now - last_small) / BIG_UPDATE_MS) as usize;
    assert_eq!(updates.len(), BIG_LIST + throttled, "{updates:?}");
    assert!(updates.last() < Some(&(N as u64)));
    pbx.tick(now + BIG_UPDATE_MS, &mut out);
    let updates = counts(&out);
    assert_eq!(updates.last(), Some(&(N as u64)));
    let listed = last_on(&out, "ami.endpoint.PJSIP/trunk")
        .map(|v| v["endpoint"]["channels"].as_array().map_or(0, Vec::len));
    assert_eq!(listed, Some(render::MAX_ENDPOINT_CHANNELS_LISTED));
}
