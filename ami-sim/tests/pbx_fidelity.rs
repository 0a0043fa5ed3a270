//! Fidelity of the simulated PBX against real Asterisk captures
//! (`proto/tests/fixtures/ami/`: Asterisk 22.10.1 with Local channels, Asterisk 22 with
//! PJSIP legs and SystemName, Asterisk 16.28).
//!
//! For each scenario the test extracts the real calls of the same kind from the
//! captures (grouped by Linkedid; bridge events joined by BridgeUniqueid, Cdr by
//! UniqueID; the kind read from the client's Originate in `*.sent.txt` and the actions
//! that touched the call), and requires our call's sequence of (event name, field names
//! in order) to be equal to one of them. Normalisations, all of them, applied as named:
//!
//! - NOISE (both sides): `VarSet`, `Newexten`, `DeviceStateChange`, `Cdr`, `CEL`,
//!   `RTCPSent`/`RTCPReceived`, `QueueMemberStatus` and the list items of actions the
//!   capture's client ran meanwhile (`Status`, `CoreShowChannel`, ...) are removed:
//!   their number and interleaving vary between real calls (threads). Their field
//!   layouts are checked on their own (`every_event_layout_is_a_real_one`).
//! - LOCAL (capture side): the captures' phones are Local channel pairs. The `;2` half
//!   is the dialplan standing in for the phone: its events and `LocalBridge` go; the
//!   `;1` half is what Dial/Queue see and stands for the phone's channel. The capture's
//!   caller was created by `Originate`: its events up to the start of the scenario's
//!   dialplan, the Originate's own Dial events and `OriginateResponse` go.
//! - ARRIVAL (our side): our caller is a phone call arriving in Ring state: its
//!   `Newchannel` (and `Newstate Up` when the dialplan answers first) go; that prefix is
//!   checked against the real PJSIP arrivals of asterisk22-sip-systemname.txt.
//! - ANSWERED-BY-DIAL (our side, phone-to-phone calls): our caller is not answered
//!   before `Dial`, so app_dial answers it after `DialEnd ANSWER` with a `Newstate Up`
//!   (as asterisk16-calls.bin's call200 shows, checked below); the 22 captures' callers
//!   were answered by Originate. That one Newstate goes.
//! - MEMBER-RINGING (both sides, queue calls): a queue member's ringing indications
//!   (`Newstate Ringing`, `NewConnectedLine`, `DialState RINGING` of the member leg) go:
//!   the captures' Local members ring before `AgentCalled` (their `;2` runs Ringing()
//!   at once) or answer without ringing; a SIP phone rings after the INVITE.
//! - PHONE-HANGUP: a `HangupRequest` may lack `Cause` (chan_pjsip queues a hangup
//!   without cause on BYE, asterisk22-sip-systemname.txt) where the Local `;1` carries
//!   the cause of its `;2`; the two layouts compare equal.
//! - HOLD (hold scenario): our Hold/MusicOnHoldStart ... Unhold/MusicOnHoldStop block
//!   is removed and checked on its own (Hold then MusicOnHoldStart on the peer, as in
//!   the attended-transfer captures); the rest must be a plain answered call.
//! - TRANSFERS: the transferee's activity after a blind transfer (the capture's goes to
//!   music on hold, ours dials a phone) is compared separately: up to the
//!   transferer's Hangup with the real blind transfers, the transferee's new Dial with
//!   the real answered calls.

use std::collections::{BTreeMap, HashMap, HashSet};

use ami_sim::pbx::{CallSpec, Event, Pbx, PbxConfig, Scenario, ScenarioMix};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/tests/fixtures/ami/");

// ------------------------------------------------------------------ parsing

#[derive(Clone, Debug)]
struct Msg {
    fields: Vec<(String, String)>,
}

impl Msg {
    fn kind(&self) -> &str {
        &self.fields[0].0
    }
    fn name(&self) -> &str {
        &self.fields[0].1
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(fk, _)| fk == k)
            .map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<String> {
        self.fields
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| k != "SystemName")
            .collect()
    }
    fn chan(&self) -> Option<&str> {
        self.get("Channel")
    }
}

/// Messages of a stream (banner line skipped if present).
fn parse(bytes: &[u8]) -> Vec<Msg> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if i == 0 && line.starts_with("Asterisk Call Manager") {
            continue;
        }
        if line.is_empty() {
            if !cur.is_empty() {
                out.push(Msg {
                    fields: std::mem::take(&mut cur),
                });
            }
            continue;
        }
        match line.split_once(':') {
            Some((k, v)) => cur.push((k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string())),
            None => cur.push((line.to_string(), String::new())),
        }
    }
    if !cur.is_empty() {
        out.push(Msg { fields: cur });
    }
    out
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The client's actions of a `.sent.txt`.
fn parse_sent(name: &str) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8(read(name))
        .expect("utf8")
        .replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            b.lines()
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect()
        })
        .collect()
}

fn fget<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.as_str())
}

// ------------------------------------------------------------------ grouping

/// Events grouped by Linkedid (in stream order): channel events by their (prefixed)
/// Linkedid, bridge lifecycle by BridgeUniqueid, Cdr by UniqueID, OriginateResponse by
/// Uniqueid.
fn group(msgs: &[Msg]) -> BTreeMap<String, Vec<usize>> {
    let mut uid2lid: HashMap<String, String> = HashMap::new();
    let mut br2lid: HashMap<String, String> = HashMap::new();
    // Bridges whose first BridgeEnter comes later.
    for m in msgs.iter() {
        if m.kind() == "Event"
            && m.name() == "BridgeEnter"
            && let (Some(b), Some(l)) = (m.get("BridgeUniqueid"), m.get("Linkedid"))
        {
            br2lid.entry(b.to_string()).or_insert_with(|| l.to_string());
        }
    }
    let mut calls: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.kind() != "Event" {
            continue;
        }
        let mut lids: Vec<String> = Vec::new();
        for (k, v) in &m.fields {
            if (k.ends_with("Linkedid") || k == "LinkedID") && !lids.contains(v) {
                lids.push(v.clone());
            }
            if k.ends_with("Uniqueid") && !k.contains("Bridge") {
                let p = &k[..k.len() - "Uniqueid".len()];
                if let Some(l) = m.get(&format!("{p}Linkedid")) {
                    uid2lid.entry(v.clone()).or_insert_with(|| l.to_string());
                }
            }
        }
        match m.name() {
            "Cdr" => {
                if let Some(l) = m.get("UniqueID").and_then(|u| uid2lid.get(u)) {
                    lids = vec![l.clone()];
                }
            }
            "OriginateResponse" => {
                if let Some(l) = m.get("Uniqueid").and_then(|u| uid2lid.get(u)) {
                    lids = vec![l.clone()];
                }
            }
            "BridgeCreate" | "BridgeDestroy" => {
                if let Some(l) = m.get("BridgeUniqueid").and_then(|b| br2lid.get(b)) {
                    lids = vec![l.clone()];
                }
            }
            "BridgeMerge" => {
                if let Some(l) = m.get("ToBridgeUniqueid").and_then(|b| br2lid.get(b)) {
                    lids = vec![l.clone()];
                }
            }
            _ => {}
        }
        for l in lids {
            if !calls.contains_key(&l) {
                order.push(l.clone());
            }
            calls.entry(l).or_default().push(i);
        }
    }
    calls
}

/// Kind of each capture call: `Orig(<Channel>-><Exten>/<Reason>)` and the names of the
/// later actions that named one of its channels (`Hangup`, `Atxfer(200)`...).
fn label_calls(
    msgs: &[Msg],
    sent: &[Vec<(String, String)>],
    calls: &BTreeMap<String, Vec<usize>>,
) -> HashMap<String, String> {
    let by_id: HashMap<&str, &Vec<(String, String)>> = sent
        .iter()
        .filter_map(|a| fget(a, "ActionID").map(|id| (id, a)))
        .collect();
    let mut labels = HashMap::new();
    for (l, idx) in calls {
        let mut parts: Vec<String> = Vec::new();
        let mut chans: HashSet<&str> = HashSet::new();
        for &i in idx {
            let m = &msgs[i];
            for (k, v) in &m.fields {
                if k.ends_with("Channel") && !v.is_empty() {
                    chans.insert(v.as_str());
                }
            }
            if m.name() == "OriginateResponse"
                && let Some(a) = m.get("ActionID").and_then(|id| by_id.get(id))
            {
                parts.push(format!(
                    "Orig({}->{}/{})",
                    fget(a, "Channel").unwrap_or(""),
                    fget(a, "Exten")
                        .or_else(|| fget(a, "Application"))
                        .unwrap_or(""),
                    m.get("Reason").unwrap_or("")
                ));
            }
        }
        for a in sent {
            let act = fget(a, "Action").unwrap_or("");
            if act != "Originate" && fget(a, "Channel").is_some_and(|c| chans.contains(c)) {
                match fget(a, "Exten") {
                    Some(e) => parts.push(format!("{act}({e})")),
                    None => parts.push(act.to_string()),
                }
            }
        }
        labels.insert(l.clone(), parts.join(" "));
    }
    labels
}

// ------------------------------------------------------------------ normalisation

const NOISE: &[&str] = &[
    "VarSet",
    "Newexten",
    "DeviceStateChange",
    "Cdr",
    "CEL",
    "RTCPSent",
    "RTCPReceived",
    "QueueMemberStatus",
    "LocalBridge",
    "Status",
    "CoreShowChannel",
    "ConfbridgeList",
    "ParkedCall",
    "UserEvent",
];

/// One event of a normalised sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    name: String,
    keys: Vec<String>,
}

impl Ev {
    fn of(m: &Msg) -> Ev {
        let mut keys = m.keys();
        // PHONE-HANGUP: HangupRequest with or without Cause compare equal.
        if m.name() == "HangupRequest" && keys.last().is_some_and(|k| k == "Cause") {
            keys.pop();
        }
        Ev {
            name: m.name().to_string(),
            keys,
        }
    }
}

fn names(evs: &[Ev]) -> String {
    evs.iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// LOCAL + NOISE projection of a capture call.
fn project_capture(msgs: &[Msg], idx: &[usize]) -> Vec<(Ev, Msg)> {
    let evs: Vec<&Msg> = idx.iter().map(|&i| &msgs[i]).collect();
    let caller = evs
        .iter()
        .find(|m| m.name() == "OriginateResponse")
        .and_then(|m| m.chan())
        .map(str::to_string);
    let start = evs.iter().position(|m| {
        m.name() == "Newexten"
            && m.chan() == caller.as_deref()
            && m.get("Application") != Some("AppDial2")
    });
    let mut out = Vec::new();
    for (n, m) in evs.iter().enumerate() {
        let name = m.name();
        if NOISE.contains(&name) || name == "OriginateResponse" {
            continue;
        }
        let ch = m.chan();
        if ch.is_some_and(|c| c.ends_with(";2")) {
            continue;
        }
        if matches!(name, "DialBegin" | "DialState" | "DialEnd")
            && ch.is_none()
            && m.get("DestChannel") == caller.as_deref()
        {
            continue;
        }
        if let Some(s) = start
            && n < s
            && ch.is_some()
            && ch == caller.as_deref()
        {
            continue;
        }
        out.push((Ev::of(m), (*m).clone()));
    }
    out
}

/// NOISE + ARRIVAL + ANSWERED-BY-DIAL projection of one of our calls; returns the
/// sequence and the arrival prefix that was removed.
fn project_mine(msgs: &[Msg], idx: &[usize]) -> (Vec<(Ev, Msg)>, Vec<Ev>) {
    let evs: Vec<&Msg> = idx
        .iter()
        .map(|&i| &msgs[i])
        .filter(|m| !NOISE.contains(&m.name()))
        .collect();
    let caller = evs
        .iter()
        .find(|m| m.name() == "Newchannel")
        .and_then(|m| m.chan())
        .map(str::to_string);
    let mut out: Vec<(Ev, Msg)> = Vec::new();
    let mut prefix = Vec::new();
    let mut in_prefix = true;
    for m in evs {
        let is_caller =
            m.chan().is_some() && m.chan() == caller.as_deref() && m.get("DestChannel").is_none();
        if in_prefix && is_caller && matches!(m.name(), "Newchannel" | "Newstate") {
            prefix.push(Ev::of(m));
            continue;
        }
        in_prefix = false;
        // ANSWERED-BY-DIAL: the caller's Newstate Up right after its DialEnd ANSWER.
        if is_caller
            && m.name() == "Newstate"
            && m.get("ChannelStateDesc") == Some("Up")
            && let Some((_, prev)) = out.last()
            && prev.name() == "DialEnd"
            && prev.get("DialStatus") == Some("ANSWER")
            && prev.chan() == caller.as_deref()
        {
            continue;
        }
        out.push((Ev::of(m), m.clone()));
    }
    (out, prefix)
}

/// MEMBER-RINGING: drops queue member legs' Newstate Ringing, NewConnectedLine and
/// DialState RINGING.
fn drop_member_ringing(seq: &[(Ev, Msg)]) -> Vec<(Ev, Msg)> {
    let members: HashSet<String> = seq
        .iter()
        .filter(|(e, _)| e.name == "AgentCalled")
        .filter_map(|(_, m)| m.get("DestChannel").map(str::to_string))
        .collect();
    seq.iter()
        .filter(|(e, m)| {
            let on_member = |k: &str| m.get(k).is_some_and(|c| members.contains(c));
            !((e.name == "Newstate"
                && m.get("ChannelStateDesc") == Some("Ringing")
                && on_member("Channel"))
                || (e.name == "NewConnectedLine" && on_member("Channel"))
                || (e.name == "DialState" && on_member("DestChannel")))
        })
        .cloned()
        .collect()
}

fn evs(seq: &[(Ev, Msg)]) -> Vec<Ev> {
    seq.iter().map(|(e, _)| e.clone()).collect()
}

// ------------------------------------------------------------------ the captures

struct Captures {
    /// Calls of each kind, LOCAL + NOISE projected.
    kinds: HashMap<String, Vec<Vec<(Ev, Msg)>>>,
    /// Calls of each kind, NOISE removed only (for calls with no Local channel).
    raw: HashMap<String, Vec<Vec<Ev>>>,
    /// Every (event, field names) layout seen.
    layouts: HashMap<String, HashSet<Vec<String>>>,
    /// Arrival prefixes of real inbound PJSIP calls.
    sip_arrivals: Vec<Vec<Ev>>,
    a16: Vec<Msg>,
}

fn load() -> Captures {
    let mut kinds: HashMap<String, Vec<Vec<(Ev, Msg)>>> = HashMap::new();
    let mut raw: HashMap<String, Vec<Vec<Ev>>> = HashMap::new();
    let mut layouts: HashMap<String, HashSet<Vec<String>>> = HashMap::new();
    let mut sip_arrivals = Vec::new();
    for base in ["asterisk22-local", "asterisk22-sip-systemname"] {
        let msgs = parse(&read(&format!("{base}.txt")));
        let sent = parse_sent(&format!("{base}.sent.txt"));
        let calls = group(&msgs);
        let labels = label_calls(&msgs, &sent, &calls);
        for (l, idx) in &calls {
            kinds
                .entry(labels[l].clone())
                .or_default()
                .push(project_capture(&msgs, idx));
            raw.entry(labels[l].clone()).or_default().push(
                idx.iter()
                    .map(|&i| &msgs[i])
                    .filter(|m| !NOISE.contains(&m.name()))
                    .map(Ev::of)
                    .collect(),
            );
            // A PJSIP call arriving from the SIP agent (Newchannel in Ring state).
            let first = &msgs[idx[0]];
            if first.name() == "Newchannel"
                && first.get("ChannelStateDesc") == Some("Ring")
                && first.chan().is_some_and(|c| c.starts_with("PJSIP/"))
            {
                let pre: Vec<Ev> = idx
                    .iter()
                    .map(|&i| &msgs[i])
                    .filter(|m| !NOISE.contains(&m.name()))
                    .take_while(|m| matches!(m.name(), "Newchannel" | "Newstate"))
                    .map(Ev::of)
                    .collect();
                sip_arrivals.push(pre);
            }
        }
        for m in &msgs {
            if m.kind() == "Event" {
                layouts
                    .entry(m.name().to_string())
                    .or_default()
                    .insert(m.keys());
            }
        }
    }
    let a16 = parse(&read("asterisk16-calls.bin"));
    for m in &a16 {
        if m.kind() == "Event" {
            layouts
                .entry(m.name().to_string())
                .or_default()
                .insert(m.keys());
        }
    }
    Captures {
        kinds,
        raw,
        layouts,
        sip_arrivals,
        a16,
    }
}

impl Captures {
    fn of(&self, kinds: &[&str]) -> Vec<Vec<(Ev, Msg)>> {
        let mut v = Vec::new();
        for k in kinds {
            let calls = self
                .kinds
                .get(*k)
                .unwrap_or_else(|| panic!("no capture call of kind {k}"));
            v.extend(calls.iter().cloned());
        }
        v
    }
}

/// Our sequence must equal one real sequence (names and field names, in order).
fn assert_matches(what: &str, mine: &[Ev], reals: &[Vec<Ev>]) {
    assert!(!reals.is_empty(), "{what}: no real calls to compare with");
    if reals.iter().any(|r| r == mine) {
        return;
    }
    // The closest real call by name sequence, for the report.
    let best = reals
        .iter()
        .max_by_key(|r| {
            r.iter()
                .zip(mine.iter())
                .take_while(|(a, b)| a.name == b.name)
                .count()
        })
        .expect("reals");
    let same_names: Vec<&Vec<Ev>> = reals.iter().filter(|r| names(r) == names(mine)).collect();
    if let Some(r) = same_names.first() {
        for (a, b) in r.iter().zip(mine.iter()) {
            assert_eq!(
                a.keys, b.keys,
                "{what}: fields of {} differ from the capture's",
                a.name
            );
        }
    }
    panic!(
        "{what}: no real call has this sequence\n  ours: {}\n  real: {}",
        names(mine),
        names(best)
    );
}

// ------------------------------------------------------------------ driving our PBX

const T0: u64 = 1_795_249_000_000_000;

/// The PBX with queues shaped like the captures' (sales: ringall, two members;
/// support: rrmemory, two members), no generator.
fn quiet_pbx(seed: u64) -> Pbx {
    let mut cfg = PbxConfig {
        generate: false,
        ..PbxConfig::default()
    };
    cfg.queues[0].members = vec![101, 102];
    cfg.queues[1].members = vec![105, 106];
    Pbx::new(cfg, seed, T0)
}

/// Runs one call of `scenario` to its end; returns the stream and its Linkedid.
fn one_call(seed: u64, scenario: Scenario, spec: CallSpec) -> (Vec<Msg>, String) {
    let mut pbx = quiet_pbx(seed);
    let lid = pbx.start_call(T0 + 1_000_000, scenario, spec);
    let bytes = drain(&mut pbx);
    (parse(&bytes), lid)
}

fn drain(pbx: &mut Pbx) -> Vec<u8> {
    let mut out: Vec<Event> = Vec::new();
    let mut bytes = Vec::new();
    let mut guard = 0;
    while let Some(t) = pbx.next_due() {
        pbx.advance(t, &mut out);
        for e in out.drain(..) {
            bytes.extend_from_slice(&e.bytes);
        }
        guard += 1;
        assert!(guard < 1_000_000, "the call never ends");
    }
    bytes
}

fn my_seq(msgs: &[Msg], lid: &str) -> (Vec<(Ev, Msg)>, Vec<Ev>) {
    let calls = group(msgs);
    let idx = calls
        .get(lid)
        .unwrap_or_else(|| panic!("no events of call {lid}"));
    project_mine(msgs, idx)
}

fn spec(caller_hangs_up: bool) -> CallSpec {
    CallSpec {
        caller_hangs_up: Some(caller_hangs_up),
        ..CallSpec::default()
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn phone_to_phone_calls_match_real_answered_calls() {
    let caps = load();
    let reals: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dial/4)"])
        .iter()
        .map(|s| evs(s))
        .collect();
    for scenario in [Scenario::InternalAnswered, Scenario::Outbound] {
        for side in [true, false] {
            for seed in 1..4 {
                let (msgs, lid) = one_call(seed, scenario, spec(side));
                let (seq, prefix) = my_seq(&msgs, &lid);
                assert_eq!(
                    names(&prefix),
                    "Newchannel",
                    "{scenario:?}: a phone call arrives with Newchannel only"
                );
                assert_matches(
                    &format!("{scenario:?} caller_hangs_up={side}"),
                    &evs(&seq),
                    &reals,
                );
            }
        }
    }
}

#[test]
fn a_caller_answered_by_dial_gets_newstate_up_after_dialend_as_in_asterisk16() {
    // ANSWERED-BY-DIAL's evidence: call200 of asterisk16-calls.bin, whose caller is the
    // `;2` half running Dial in Ring state.
    let caps = load();
    let m = &caps.a16;
    let i = m
        .iter()
        .position(|x| {
            x.name() == "DialEnd"
                && x.get("DialStatus") == Some("ANSWER")
                && x.get("ChannelStateDesc") == Some("Ring")
        })
        .expect("a DialEnd ANSWER of a Ring caller");
    let caller = m[i].chan().expect("caller").to_string();
    let next = m[i + 1..]
        .iter()
        .find(|x| x.chan() == Some(caller.as_str()))
        .expect("the caller's next event");
    assert_eq!(
        (next.name(), next.get("ChannelStateDesc")),
        ("Newstate", Some("Up"))
    );
    // And ours does the same.
    let (msgs, lid) = one_call(5, Scenario::InternalAnswered, spec(true));
    let all: Vec<&Msg> = group(&msgs)[&lid].iter().map(|&k| &msgs[k]).collect();
    let j = all
        .iter()
        .position(|x| x.name() == "DialEnd")
        .expect("DialEnd");
    let c = all[j].chan().expect("caller");
    let after = all[j + 1..]
        .iter()
        .find(|x| x.chan() == Some(c) && !NOISE.contains(&x.name()))
        .expect("next");
    assert_eq!(
        (after.name(), after.get("ChannelStateDesc")),
        ("Newstate", Some("Up"))
    );
}

#[test]
fn unanswered_and_busy_calls_match_real_ones() {
    let caps = load();
    let noanswer: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dialnoanswer/4)"])
        .iter()
        .map(|s| evs(s))
        .collect();
    let busy: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dialbusy/4)"])
        .iter()
        .map(|s| evs(s))
        .collect();
    for seed in 1..4 {
        let (msgs, lid) = one_call(seed, Scenario::InternalNoAnswer, CallSpec::default());
        assert_matches("no answer", &evs(&my_seq(&msgs, &lid).0), &noanswer);
        let (msgs, lid) = one_call(seed, Scenario::InternalBusy, CallSpec::default());
        assert_matches("busy", &evs(&my_seq(&msgs, &lid).0), &busy);
    }
}

#[test]
fn recorded_calls_match_real_recorded_calls() {
    let caps = load();
    let record: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->record/4)"])
        .iter()
        .map(|s| evs(s))
        .collect();
    // A recording starts with MixMonitorStart, then is an answered call.
    let dial: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dial/4)"])
        .iter()
        .map(|s| evs(s))
        .collect();
    let first = &record
        .iter()
        .find(|r| r[0].name == "MixMonitorStart")
        .expect("a dialplan MixMonitor")[0];
    let mut with_mixmonitor: Vec<Vec<Ev>> = dial
        .into_iter()
        .map(|d| std::iter::once(first.clone()).chain(d).collect())
        .collect();
    with_mixmonitor.extend(record);
    for side in [true, false] {
        let (msgs, lid) = one_call(2, Scenario::Recording, spec(side));
        assert_matches("recording", &evs(&my_seq(&msgs, &lid).0), &with_mixmonitor);
    }
}

#[test]
fn hold_is_hold_then_music_on_the_peer_and_the_rest_is_an_answered_call() {
    let caps = load();
    let dial: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dial/4)"])
        .iter()
        .map(|s| evs(s))
        .collect();
    // In the captures, Hold on one channel is followed by MusicOnHoldStart on its peer.
    let atx = caps.of(&["Orig(Local/answer@kit->dial/4) Atxfer(200) Hangup"]);
    for call in &atx {
        let i = call
            .iter()
            .position(|(e, _)| e.name == "Hold")
            .expect("Hold");
        let (next, m) = call[i + 1..]
            .iter()
            .find(|(e, _)| e.name != "DTMFEnd")
            .expect("after Hold");
        assert_eq!(next.name, "MusicOnHoldStart");
        assert_ne!(call[i].1.chan(), m.chan());
    }
    for seed in 1..5 {
        let (msgs, lid) = one_call(seed, Scenario::HoldUnhold, CallSpec::default());
        let seq = evs(&my_seq(&msgs, &lid).0);
        let h = seq.iter().position(|e| e.name == "Hold").expect("Hold");
        let block: Vec<&str> = seq[h..h + 4].iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            block,
            ["Hold", "MusicOnHoldStart", "Unhold", "MusicOnHoldStop"]
        );
        let rest: Vec<Ev> = seq[..h]
            .iter()
            .chain(seq[h + 4..].iter())
            .cloned()
            .collect();
        assert_matches("hold (without its block)", &rest, &dial);
    }
}

#[test]
fn queue_calls_match_real_queue_calls() {
    let caps = load();
    let reals: Vec<Vec<Ev>> = caps
        .of(&[
            "Orig(Local/answer@kit->queue/4)",
            "Orig(PJSIP/sipp->queue/4)",
        ])
        .iter()
        .map(|s| evs(&drop_member_ringing(s)))
        .collect();
    for queue in [0, 1] {
        for side in [true, false] {
            for seed in 1..4 {
                let sp = CallSpec {
                    queue: Some(queue),
                    ..spec(side)
                };
                let (msgs, lid) = one_call(seed, Scenario::QueueAnswered, sp);
                let (seq, prefix) = my_seq(&msgs, &lid);
                assert_eq!(
                    names(&prefix),
                    "Newchannel Newstate",
                    "a trunk call answered by the dialplan"
                );
                assert!(
                    caps.sip_arrivals.contains(&prefix),
                    "arrival prefix is a real PJSIP arrival"
                );
                let seq = evs(&drop_member_ringing(&seq));
                assert_matches(
                    &format!("queue {queue} caller_hangs_up={side}"),
                    &seq,
                    &reals,
                );
            }
        }
    }
}

#[test]
fn abandoned_queue_call_matches_the_real_one() {
    let caps = load();
    let reals: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->queue/4)"])
        .iter()
        .filter(|s| s.iter().any(|(e, _)| e.name == "QueueCallerAbandon"))
        .map(|s| evs(&drop_member_ringing(s)))
        .collect();
    // The caller hangs up while the first agent rings (rrmemory queue: one agent).
    let sp = CallSpec {
        queue: Some(1),
        patience_s: Some(3.0),
        ..CallSpec::default()
    };
    let (msgs, lid) = one_call(1, Scenario::QueueAbandoned, sp);
    let seq = evs(&drop_member_ringing(&my_seq(&msgs, &lid).0));
    assert_matches("abandoned", &seq, &reals);
}

#[test]
fn ring_no_answer_then_answered_queue_call() {
    // No capture has a member timing out: the attempt follows app_queue's
    // wait_for_answer (AgentRingNoAnswer per leg, DialEnd NOANSWER per leg, the legs
    // hang up); what comes after must be a real answered queue call.
    let caps = load();
    let reals: Vec<Vec<Ev>> = caps
        .of(&[
            "Orig(Local/answer@kit->queue/4)",
            "Orig(PJSIP/sipp->queue/4)",
        ])
        .iter()
        .map(|s| evs(&drop_member_ringing(s)))
        .collect();
    for queue in [0, 1] {
        let sp = CallSpec {
            queue: Some(queue),
            ..spec(true)
        };
        let (msgs, lid) = one_call(3, Scenario::QueueAgentNoAnswer, sp);
        let seq = evs(&drop_member_ringing(&my_seq(&msgs, &lid).0));
        let first = seq
            .iter()
            .position(|e| e.name == "Newchannel")
            .expect("an attempt");
        let rna = seq
            .iter()
            .position(|e| e.name == "AgentRingNoAnswer")
            .expect("AgentRingNoAnswer");
        let legs = seq[first..rna]
            .iter()
            .filter(|e| e.name == "AgentCalled")
            .count();
        let block: Vec<&str> = seq[first..]
            .iter()
            .map(|e| e.name.as_str())
            .take(4 * legs + 3 * legs)
            .collect();
        let mut want: Vec<&str> = Vec::new();
        for _ in 0..legs {
            want.extend(["Newchannel", "NewCallerid", "AgentCalled", "DialBegin"]);
        }
        want.extend(std::iter::repeat_n("AgentRingNoAnswer", legs));
        want.extend(std::iter::repeat_n("DialEnd", legs));
        want.extend(std::iter::repeat_n("Hangup", legs));
        assert_eq!(block, want, "queue {queue}: the failed attempt");
        let rest: Vec<Ev> = seq[..first]
            .iter()
            .chain(seq[first + 7 * legs..].iter())
            .cloned()
            .collect();
        assert_matches(
            &format!("queue {queue} after the failed attempt"),
            &rest,
            &reals,
        );
        // AgentRingNoAnswer: caller block, Dest block, then app_queue's blob.
        let m = msgs
            .iter()
            .find(|m| m.name() == "AgentRingNoAnswer")
            .expect("event");
        let k = m.keys();
        assert_eq!(&k[2..4], ["Channel", "ChannelState"]);
        assert_eq!(&k[16..18], ["DestChannel", "DestChannelState"]);
        assert_eq!(&k[30..], ["Queue", "Interface", "MemberName", "RingTime"]);
    }
}

#[test]
fn blind_transfer_matches_real_blind_transfers() {
    let caps = load();
    let real_blind = caps.of(&["Orig(Local/answer@kit->dial/4) BlindTransfer(moh)"]);
    // Up to the transferer's Hangup, without the transferee's new dialplan (moh).
    let reals: Vec<Vec<Ev>> = real_blind
        .iter()
        .map(|s| {
            let bt = s
                .iter()
                .position(|(e, _)| e.name == "BlindTransfer")
                .expect("BlindTransfer");
            let transferer = s[bt]
                .1
                .get("TransfererChannel")
                .expect("transferer")
                .to_string();
            let end = s
                .iter()
                .position(|(e, m)| e.name == "Hangup" && m.chan() == Some(transferer.as_str()))
                .expect("Hangup");
            s[..=end]
                .iter()
                .filter(|(e, _)| !e.name.starts_with("MusicOnHold"))
                .map(|(e, _)| e.clone())
                .collect()
        })
        .collect();
    let dial: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dial/4)"])
        .iter()
        .map(|s| evs(s))
        .collect();
    for seed in 1..4 {
        let (msgs, lid) = one_call(seed, Scenario::BlindTransfer, CallSpec::default());
        let (seq, _) = my_seq(&msgs, &lid);
        let bt = seq
            .iter()
            .position(|(e, _)| e.name == "BlindTransfer")
            .expect("BlindTransfer");
        let transferer = seq[bt]
            .1
            .get("TransfererChannel")
            .expect("transferer")
            .to_string();
        let end = seq
            .iter()
            .position(|(e, m)| e.name == "Hangup" && m.chan() == Some(transferer.as_str()))
            .expect("Hangup");
        assert_matches("blind transfer", &evs(&seq[..=end]), &reals);
        assert_matches("the transferee's new call", &evs(&seq[end + 1..]), &dial);
    }
}

#[test]
fn attended_transfer_by_action_matches_real_ones() {
    // Driven as the capture's client drove it: Atxfer on the caller, the target
    // answers, Hangup of the caller completes the transfer.
    let caps = load();
    let reals: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dial/4) Atxfer(200) Hangup"])
        .iter()
        .map(|s| evs(s))
        .collect();
    for side in [true, false] {
        let mut pbx = quiet_pbx(7);
        let sp = CallSpec {
            talk_s: Some(120.0),
            ring_s: Some(2.0),
            ..spec(side)
        };
        let lid = pbx.start_call(T0 + 1_000_000, Scenario::InternalAnswered, sp);
        let mut bytes = Vec::new();
        let mut out = Vec::new();
        pbx.advance(T0 + 10_000_000, &mut out);
        for e in out.drain(..) {
            bytes.extend_from_slice(&e.bytes);
        }
        let so_far = parse(&bytes);
        let caller = so_far
            .iter()
            .find(|m| m.name() == "Newchannel")
            .and_then(|m| m.chan())
            .expect("caller")
            .to_string();
        let r = pbx.action(
            T0 + 10_000_000,
            "Atxfer",
            &[
                ("Channel", &caller),
                ("Context", "from-internal"),
                ("Exten", "120"),
            ],
            Some("x1"),
        );
        assert!(String::from_utf8_lossy(&r[0]).contains("Atxfer successfully queued"));
        pbx.advance(T0 + 40_000_000, &mut out);
        let r = pbx.action(
            T0 + 40_000_000,
            "Hangup",
            &[("Channel", &caller)],
            Some("x2"),
        );
        assert!(String::from_utf8_lossy(&r[0]).contains("Channel Hungup"));
        for e in out.drain(..) {
            bytes.extend_from_slice(&e.bytes);
        }
        bytes.extend_from_slice(&drain(&mut pbx));
        let msgs = parse(&bytes);
        assert_matches("attended transfer", &evs(&my_seq(&msgs, &lid).0), &reals);
    }
}

#[test]
fn generated_attended_transfer_is_the_action_path_plus_the_phones_hangup_request() {
    let caps = load();
    let reals: Vec<Vec<Ev>> = caps
        .of(&["Orig(Local/answer@kit->dial/4) Atxfer(200) Hangup"])
        .iter()
        .map(|s| evs(s))
        .collect();
    for seed in 1..4 {
        let (msgs, lid) = one_call(seed, Scenario::AttendedTransfer, CallSpec::default());
        let seq = evs(&my_seq(&msgs, &lid).0);
        // The transferer's phone hangs up to complete: its HangupRequest goes.
        let merge = seq
            .iter()
            .position(|e| e.name == "BridgeMerge")
            .expect("BridgeMerge");
        let hr = seq[..merge]
            .iter()
            .rposition(|e| e.name == "HangupRequest")
            .expect("the transferer's HangupRequest");
        let rest: Vec<Ev> = seq
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != hr)
            .map(|(_, e)| e.clone())
            .collect();
        assert_matches("generated attended transfer", &rest, &reals);
    }
}

#[test]
fn originate_matches_real_pjsip_originates() {
    // asterisk22-sip-systemname.txt originates PJSIP/sipp: no Local projection at all.
    let caps = load();
    let reals: Vec<Vec<Ev>> = [
        "Orig(PJSIP/sipp->moh/4)",
        "Orig(PJSIP/sipp->queue/4)",
        "Orig(PJSIP/sipp->wait/4)",
        "Orig(PJSIP/sipp->dial/4)",
    ]
    .iter()
    .flat_map(|k| caps.raw[*k].iter().cloned())
    .map(|s| {
        s.into_iter()
            .filter(|e| e.name != "OriginateResponse")
            .collect()
    })
    .collect();
    let prefix_len = 8; // Newchannel NewCallerid NewConnectedLine DialBegin Newstate DialState Newstate DialEnd
    let real_prefixes: Vec<Vec<Ev>> = reals.iter().map(|r| r[..prefix_len].to_vec()).collect();
    let mut pbx = quiet_pbx(3);
    let r = pbx.action(
        T0,
        "Originate",
        &[
            ("Channel", "PJSIP/101"),
            ("Context", "from-internal"),
            ("Exten", "600"),
            ("Priority", "1"),
            ("CallerID", "\"Kit 1\" <2001>"),
            ("Async", "true"),
        ],
        Some("o1"),
    );
    assert_eq!(
        String::from_utf8_lossy(&r[0]),
        "Response: Success\r\nActionID: o1\r\nMessage: Originate successfully queued\r\n\r\n"
    );
    let msgs = parse(&drain(&mut pbx));
    // Our whole originate, unprojected (the originated leg is the call's first channel).
    let calls = group(&msgs);
    let lid = msgs
        .iter()
        .find(|m| m.name() == "Newchannel")
        .and_then(|m| m.get("Linkedid"))
        .expect("lid")
        .to_string();
    let all: Vec<Ev> = calls[&lid]
        .iter()
        .map(|&i| &msgs[i])
        .filter(|m| !NOISE.contains(&m.name()) && m.name() != "OriginateResponse")
        .map(Ev::of)
        .collect();
    assert!(
        real_prefixes.contains(&all[..prefix_len].to_vec()),
        "originate prefix: {}",
        names(&all[..prefix_len])
    );
    let resp = msgs
        .iter()
        .find(|m| m.name() == "OriginateResponse")
        .expect("OriginateResponse");
    let real_resp = caps.layouts.get("OriginateResponse").expect("layouts");
    assert!(
        real_resp.contains(&resp.keys()),
        "OriginateResponse layout {:?}",
        resp.keys()
    );
    assert_eq!(resp.get("Reason"), Some("4"));
    assert_eq!(resp.get("ActionID"), Some("o1"));
}

#[test]
fn every_event_layout_is_a_real_one() {
    // A long mixed run with actions: every (event, field names) layout we emit must
    // exist in the captures, except the ones no capture contains (app_queue source).
    let caps = load();
    const NOT_IN_CAPTURES: &[&str] = &["AgentRingNoAnswer"];
    let cfg = PbxConfig {
        calls_per_sec: 0.5,
        mix: ScenarioMix::uniform(),
        ..PbxConfig::default()
    };
    let mut pbx = Pbx::new(cfg, 11, T0);
    let mut out = Vec::new();
    let mut seen: HashMap<String, HashSet<Vec<String>>> = HashMap::new();
    let mut t = T0;
    for step in 0..1800u64 {
        t += 1_000_000;
        pbx.advance(t, &mut out);
        if step % 97 == 0 {
            for (a, f) in [
                (
                    "QueuePause",
                    vec![
                        ("Interface", "PJSIP/105"),
                        ("Paused", if step % 2 == 0 { "true" } else { "false" }),
                        ("Reason", "lunch"),
                    ],
                ),
                (
                    "QueueAdd",
                    vec![
                        ("Queue", "sales"),
                        ("Interface", "PJSIP/110"),
                        ("MemberName", "Temp"),
                    ],
                ),
                (
                    "QueueRemove",
                    vec![("Queue", "sales"), ("Interface", "PJSIP/110")],
                ),
            ] {
                pbx.action(t, a, &f, Some("a"));
            }
        }
        for e in out.drain(..) {
            for m in parse(&e.bytes) {
                seen.entry(m.name().to_string())
                    .or_default()
                    .insert(m.keys());
            }
        }
    }
    pbx.set_generate(false);
    for m in parse(&drain(&mut pbx)) {
        seen.entry(m.name().to_string())
            .or_default()
            .insert(m.keys());
    }
    let mut names: Vec<&String> = seen.keys().collect();
    names.sort();
    for name in names {
        if NOT_IN_CAPTURES.contains(&name.as_str()) {
            continue;
        }
        let real = caps
            .layouts
            .get(name)
            .unwrap_or_else(|| panic!("{name}: no capture has this event"));
        for layout in &seen[name] {
            assert!(
                real.contains(layout),
                "{name}: layout {layout:?} is not a real one; real: {real:?}"
            );
        }
    }
    for must in [
        "Newchannel",
        "Hangup",
        "DialBegin",
        "BridgeEnter",
        "QueueCallerJoin",
        "AgentConnect",
        "Cdr",
        "VarSet",
        "Newexten",
        "DeviceStateChange",
        "QueueMemberStatus",
        "QueueMemberPause",
        "QueueMemberAdded",
        "QueueMemberRemoved",
        "BlindTransfer",
        "AttendedTransfer",
        "Hold",
        "MixMonitorStart",
        "QueueCallerAbandon",
        "AgentRingNoAnswer",
    ] {
        assert!(seen.contains_key(must), "the run never emitted {must}");
    }
}

#[test]
fn system_name_as_in_the_sip_capture() {
    // asterisk22-sip-systemname.txt: `SystemName:` third in every event, Uniqueids
    // `<name>-<epoch>.<seq>`; list items and responses have none.
    let real = parse(&read("asterisk22-sip-systemname.txt"));
    for m in real
        .iter()
        .filter(|m| m.kind() == "Event" && m.get("Privilege").is_some())
        .filter(|m| m.name() != "FullyBooted")
    {
        // (FullyBooted, the session's own event, has none.)
        assert_eq!(m.fields[2].0, "SystemName", "{}", m.name());
    }
    let cfg = PbxConfig {
        system_name: Some("kitpbx".to_string()),
        generate: false,
        ..PbxConfig::default()
    };
    let mut pbx = Pbx::new(cfg, 1, T0);
    pbx.start_call(T0, Scenario::QueueAnswered, CallSpec::default());
    let list = pbx.action(T0, "CoreShowChannels", &[], Some("l"));
    let msgs = parse(&drain(&mut pbx));
    assert!(msgs.len() > 20);
    for m in &msgs {
        assert_eq!(
            (m.fields[2].0.as_str(), m.fields[2].1.as_str()),
            ("SystemName", "kitpbx"),
            "{}",
            m.name()
        );
        if let Some(u) = m.get("Uniqueid") {
            let (name, rest) = u.split_once('-').expect("name-epoch.seq");
            assert_eq!(name, "kitpbx");
            assert!(
                rest.split_once('.')
                    .is_some_and(|(e, s)| e.len() == 10 && s.parse::<u64>().is_ok()),
                "{u}"
            );
        }
    }
    for item in list.iter().flat_map(|b| parse(b)) {
        assert!(
            item.get("SystemName").is_none(),
            "list items carry no SystemName"
        );
    }
}

#[test]
fn the_pbx_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Pbx>();
}
