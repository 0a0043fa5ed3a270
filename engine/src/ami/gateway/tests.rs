//! The gateway's tests: refusals, the AMI written, correlation, limits.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_proto::ami::{Item, OwnedMessage, Parser};

use super::*;

const ALICE: u32 = 7;
const T0: Millis = 1_700_000_000_000;

/// A PBX with two calls: alice's (`PJSIP/101` to a trunk) and someone else's.
struct FakePbx {
    channels: Vec<(&'static str, &'static str)>,
    queues: Vec<&'static str>,
}

impl Default for FakePbx {
    fn default() -> Self {
        FakePbx {
            channels: vec![
                ("PJSIP/101-00000001", "1700.1"),
                ("PJSIP/trunk-00000002", "1700.1"),
                ("PJSIP/201-00000003", "1700.3"),
                ("PJSIP/trunk-00000004", "1700.3"),
            ],
            queues: vec!["sales", "support"],
        }
    }
}

impl PbxView for FakePbx {
    fn linkedid_of(&self, channel: &str) -> Option<&str> {
        self.channels
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, l)| *l)
    }

    fn channels_of_call(&self, linkedid: &str) -> Vec<&str> {
        self.channels
            .iter()
            .filter(|(_, l)| *l == linkedid)
            .map(|(c, _)| *c)
            .collect()
    }

    fn has_queue(&self, queue: &str) -> bool {
        self.queues.contains(&queue)
    }
}

fn settings() -> GatewaySettings {
    GatewaySettings {
        originate_context: "from-internal".into(),
        transfer_context: "transfers".into(),
        caller_id: None,
        ring_timeout: Duration::from_secs(20),
        record_dir: "/var/rec/".into(),
        action_timeout: Duration::from_secs(10),
        rate_per_sec: 1.0,
        burst: 1000,
        max_pending: 8,
    }
}

fn grants() -> AmiGrants {
    AmiGrants {
        actions: ActionSet::ALL,
        endpoints: Names::of(&["PJSIP/101"]),
        queues: Names::of(&["sales"]),
    }
}

fn admin() -> AmiGrants {
    AmiGrants {
        actions: ActionSet::ALL,
        endpoints: Names::any(),
        queues: Names::any(),
    }
}

struct Fixture {
    gw: Gateway<u32>,
    pbx: FakePbx,
    grants: AmiGrants,
    connected: bool,
    now: Millis,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(settings(), grants())
    }

    fn with(settings: GatewaySettings, grants: AmiGrants) -> Fixture {
        Fixture {
            gw: Gateway::new(settings),
            pbx: FakePbx::default(),
            grants,
            connected: true,
            now: T0,
        }
    }

    /// Submits as alice; the bytes written for the PBX, or the refusal.
    fn send(&mut self, request: &str) -> Result<String, Done<u32>> {
        self.send_bytes(request.as_bytes())
    }

    fn send_bytes(&mut self, request: &[u8]) -> Result<String, Done<u32>> {
        let mut out = Vec::new();
        let caller = Caller {
            handle: ALICE,
            user: "alice",
            grants: Some(&self.grants),
        };
        let r = self.gw.submit(
            caller,
            request,
            &self.pbx,
            self.connected,
            self.now,
            &mut out,
        );
        match r {
            Ok(action) => {
                let text = String::from_utf8(out).unwrap();
                assert!(text.starts_with(&format!("Action: {}\r\n", action.name())));
                Ok(text)
            }
            Err(done) => {
                assert!(out.is_empty(), "nothing is written for a refusal");
                assert!(!done.ok);
                assert_eq!(done.caller, ALICE);
                Err(done)
            }
        }
    }

    /// Submits and expects a refusal with `code` whose error contains `needle`.
    fn refused(&mut self, request: &str, code: &str, needle: &str) -> Value {
        let pending = self.gw.pending();
        let done = self
            .send(request)
            .expect_err(&format!("{request} should be refused"));
        let v = parse(&done);
        assert_eq!(done.code, code, "{request}: {v}");
        assert_eq!(v["code"], code, "{request}");
        assert_eq!(v["ok"], false);
        assert_eq!(v["op"], "result");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "{request}: {error:?} should contain {needle:?}"
        );
        assert_eq!(
            self.gw.pending(),
            pending,
            "a refusal leaves nothing pending"
        );
        v
    }

    /// Feeds PBX bytes (messages only, no banner) to the gateway.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Done<u32>> {
        messages(bytes)
            .iter()
            .filter_map(|m| self.gw.on_message(&m.message(), self.now))
            .collect()
    }
}

fn parse(done: &Done<u32>) -> Value {
    serde_json::from_slice(&done.result)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&done.result)))
}

/// Every message in `bytes`, read as the engine reads the PBX (banner first).
fn messages(bytes: &[u8]) -> Vec<OwnedMessage> {
    let mut parser = Parser::client();
    let mut buf = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
    buf.extend_from_slice(bytes);
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        let (n, item) = parser.parse(&buf[at..]).unwrap();
        match item {
            Some(Item::Message(m)) => out.push(m.into_owned()),
            Some(_) => {}
            None => break,
        }
        at += n;
    }
    out
}

// ---------------------------------------------------------------------------
// Refusals

#[test]
fn actions_outside_the_whitelist_are_refused() {
    let mut f = Fixture::with(settings(), admin());
    for name in [
        "Command",
        "command",
        "Setvar",
        "Getvar",
        "UpdateConfig",
        "GetConfig",
        "ModuleLoad",
        "DBPut",
        "DBGet",
        "Login",
        "Logoff",
        "Events",
        "BlindTransfer",
        "Frobnicate",
        "",
    ] {
        let v = f.refused(
            &json!({"op": "action", "action": name, "ref": "r"}).to_string(),
            CODE_FORBIDDEN,
            "is not available through the gateway",
        );
        assert_eq!(v["ref"], "r");
    }
    // A whitelisted name with a line break in it is not a whitelisted name.
    f.refused(
        r#"{"action":"Hangup\r\nAction: Command"}"#,
        CODE_FORBIDDEN,
        "not available",
    );
    assert_eq!(f.gw.pending(), 0);
}

#[test]
fn actions_not_granted_are_refused() {
    let mut only_hangup = grants();
    only_hangup.actions = ActionSet::of(&[Action::Hangup]);
    let mut f = Fixture::with(settings(), only_hangup);
    f.refused(
        r#"{"action":"Originate","number":"100"}"#,
        CODE_FORBIDDEN,
        "does not grant Originate",
    );
    f.refused(
        r#"{"action":"QueueStatus","queue":"sales"}"#,
        CODE_FORBIDDEN,
        "does not grant QueueStatus",
    );
    assert!(
        f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
            .is_ok()
    );

    // No `ami` claim: nothing at all.
    let mut out = Vec::new();
    let caller = Caller {
        handle: ALICE,
        user: "alice",
        grants: None,
    };
    let done =
        f.gw.submit(
            caller,
            br#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#,
            &f.pbx,
            true,
            T0,
            &mut out,
        )
        .unwrap_err();
    assert_eq!(done.code, CODE_FORBIDDEN);
    assert_eq!(done.action, Some(Action::Hangup));
    assert!(out.is_empty());
}

#[test]
fn originate_never_takes_application_data_context_or_variables() {
    let mut f = Fixture::with(settings(), admin());
    for key in [
        "application",
        "Application",
        "data",
        "Data",
        "context",
        "Context",
        "variable",
        "Variable",
        "account",
        "accountcode",
        "callerid",
        "actionid",
        "ActionID",
        "async",
        "priority",
        "timeout",
        "file",
        "command",
    ] {
        let req =
            json!({"action": "Originate", "endpoint": "PJSIP/101", "number": "100", key: "System"});
        f.refused(
            &req.to_string(),
            CODE_FORBIDDEN,
            &format!("\"{key}\" is never accepted from a browser"),
        );
    }
    for key in ["channel", "Channel"] {
        let req = json!({"action": "Originate", "number": "100", key: "Local/1@x"});
        f.refused(&req.to_string(), CODE_FORBIDDEN, "not \"channel\"");
    }
    // Unknown keys are named; parameters are lowercase.
    f.refused(
        r#"{"action":"Originate","number":"100","endpoint":"PJSIP/101","foo":1}"#,
        CODE_INVALID,
        "unknown parameter \"foo\" for Originate",
    );
    f.refused(
        r#"{"action":"Hangup","Channel":"PJSIP/101-00000001"}"#,
        CODE_INVALID,
        "unknown parameter \"Channel\" for Hangup",
    );
    // Every other action refuses the same keys, and keys of other actions.
    f.refused(
        r#"{"action":"MixMonitor","channel":"PJSIP/101-00000001","command":"rm -rf /"}"#,
        CODE_FORBIDDEN,
        "\"command\" is never accepted",
    );
    f.refused(
        r#"{"action":"MixMonitor","channel":"PJSIP/101-00000001","file":"/etc/passwd"}"#,
        CODE_FORBIDDEN,
        "\"file\" is never accepted",
    );
    f.refused(
        r#"{"action":"Redirect","channel":"PJSIP/101-00000001","exten":"1","context":"admin"}"#,
        CODE_FORBIDDEN,
        "\"context\"",
    );
    f.refused(
        r#"{"action":"Hangup","channel":"PJSIP/101-00000001","exten":"1"}"#,
        CODE_INVALID,
        "unknown parameter \"exten\" for Hangup",
    );
    // A very long unknown key is cut short in the message.
    let long = "k".repeat(1000);
    let v = f.refused(
        &json!({"action": "Hangup", &long: 1}).to_string(),
        CODE_INVALID,
        "...\"",
    );
    assert!(v["error"].as_str().unwrap().len() < 300);
}

/// Each action with its string parameters set to valid values (alice's grants).
fn valid_requests() -> Vec<(Value, Vec<&'static str>)> {
    vec![
        (
            json!({"action":"Originate","endpoint":"PJSIP/101","number":"100"}),
            vec!["endpoint", "number"],
        ),
        (
            json!({"action":"Originate","endpoint":"PJSIP/101","number":"+33612345678"}),
            vec!["endpoint", "number"],
        ),
        (
            json!({"action":"Hangup","channel":"PJSIP/101-00000001"}),
            vec!["channel"],
        ),
        (
            json!({"action":"Redirect","channel":"PJSIP/101-00000001","exten":"200"}),
            vec!["channel", "exten"],
        ),
        (
            json!({"action":"Atxfer","channel":"PJSIP/101-00000001","exten":"200"}),
            vec!["channel", "exten"],
        ),
        (
            json!({"action":"MixMonitor","channel":"PJSIP/101-00000001"}),
            vec!["channel"],
        ),
        (
            json!({"action":"StopMixMonitor","channel":"PJSIP/101-00000001"}),
            vec!["channel"],
        ),
        (
            json!({"action":"QueuePause","interface":"PJSIP/101","queue":"sales","paused":true,"reason":"lunch"}),
            vec!["interface", "queue", "reason"],
        ),
        (
            json!({"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","member_name":"Alice"}),
            vec!["queue", "interface", "member_name"],
        ),
        (
            json!({"action":"QueueRemove","queue":"sales","interface":"PJSIP/101"}),
            vec!["queue", "interface"],
        ),
        (
            json!({"action":"QueueStatus","queue":"sales"}),
            vec!["queue"],
        ),
    ]
}

#[test]
fn every_valid_request_passes() {
    for (req, _) in valid_requests() {
        let mut f = Fixture::new();
        assert!(f.send(&req.to_string()).is_ok(), "{req}");
    }
}

#[test]
fn control_bytes_are_refused_in_every_parameter() {
    for (req, keys) in valid_requests() {
        for key in keys {
            for bad in ["\r\n", "\n", "\r", "\0", "\u{1b}", "\u{7f}", "\t"] {
                let mut f = Fixture::with(settings(), admin());
                let mut r = req.clone();
                let good = r[key].as_str().unwrap().to_owned();
                r[key] = Value::String(format!("{good}{bad}Action: Command"));
                f.refused(&r.to_string(), CODE_INVALID, "contains a control character");
                // Even where only digits are allowed, and at the start.
                r[key] = Value::String(format!("{bad}{good}"));
                f.refused(&r.to_string(), CODE_INVALID, "");
            }
        }
    }
}

#[test]
fn over_long_and_empty_values_are_refused() {
    for (req, keys) in valid_requests() {
        for key in keys {
            let mut f = Fixture::with(settings(), admin());
            let mut r = req.clone();
            r[key] = Value::String("1".repeat(MAX_VALUE_BYTES + 1));
            f.refused(&r.to_string(), CODE_INVALID, "longer than 128 bytes");
            r[key] = Value::String(String::new());
            f.refused(&r.to_string(), CODE_INVALID, "must not be empty");
        }
    }
}

#[test]
fn values_of_the_wrong_type_are_refused() {
    let mut f = Fixture::new();
    for (req, needle) in [
        (
            r#"{"action":"Hangup","channel":5}"#,
            "\"channel\" must be a string",
        ),
        (
            r#"{"action":"Hangup","channel":["PJSIP/101-00000001"]}"#,
            "must be a string",
        ),
        (
            r#"{"action":"Hangup","channel":{"a":1}}"#,
            "must be a string",
        ),
        (
            r#"{"action":"Hangup","channel":null}"#,
            "missing \"channel\"",
        ),
        (r#"{"action":"Hangup"}"#, "missing \"channel\""),
        (
            r#"{"action":"Originate","number":5551234}"#,
            "\"number\" must be a string",
        ),
        (
            r#"{"action":"QueuePause","interface":"PJSIP/101","queue":"sales","paused":"true"}"#,
            "\"paused\" must be true or false",
        ),
        (
            r#"{"action":"QueuePause","interface":"PJSIP/101","queue":"sales"}"#,
            "missing \"paused\"",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","penalty":"1"}"#,
            "\"penalty\" must be an integer from 0 to 1000",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","penalty":1001}"#,
            "from 0 to 1000",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","penalty":-1}"#,
            "from 0 to 1000",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","penalty":1.5}"#,
            "from 0 to 1000",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","paused":1}"#,
            "\"paused\" must be true or false",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","member_name":false}"#,
            "\"member_name\" must be a string",
        ),
    ] {
        f.refused(req, CODE_INVALID, needle);
    }
}

#[test]
fn bad_numbers_and_extensions_are_refused() {
    let mut f = Fixture::new();
    for number in [
        "",
        "12a",
        "+",
        "4+420",
        "++4420",
        "1 2",
        "100@from-internal",
        "1,2",
        "١٢٣",
        &"1".repeat(MAX_DIGITS + 1),
    ] {
        f.refused(
            &json!({"action":"Originate","number":number}).to_string(),
            CODE_INVALID,
            "\"number\"",
        );
        f.refused(
            &json!({"action":"Redirect","channel":"PJSIP/101-00000001","exten":number}).to_string(),
            CODE_INVALID,
            "\"exten\"",
        );
    }
    f.refused(
        r#"{"action":"Originate"}"#,
        CODE_INVALID,
        "missing \"number\"",
    );
    f.refused(
        r#"{"action":"Atxfer","channel":"PJSIP/101-00000001"}"#,
        CODE_INVALID,
        "missing \"exten\"",
    );
    for number in ["0", "*72#", &"9".repeat(MAX_DIGITS)] {
        assert!(
            f.send(&json!({"action":"Originate","number":number}).to_string())
                .is_ok()
        );
    }
}

#[test]
fn channels_must_be_owned_and_live() {
    let mut f = Fixture::new();
    // Alice's own channel, and the other party of her call.
    assert!(
        f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
            .is_ok()
    );
    assert!(
        f.send(r#"{"action":"Redirect","channel":"PJSIP/trunk-00000002","exten":"300"}"#)
            .is_ok()
    );
    // Someone else's call, both of its channels.
    for ch in ["PJSIP/201-00000003", "PJSIP/trunk-00000004"] {
        for action in ["Hangup", "MixMonitor", "StopMixMonitor"] {
            f.refused(
                &json!({"action": action, "channel": ch}).to_string(),
                CODE_FORBIDDEN,
                "is not on a call of your endpoints",
            );
        }
    }
    // A channel of hers that the model does not know (yet): the PBX decides.
    assert!(
        f.send(r#"{"action":"Hangup","channel":"PJSIP/101-0000ffff"}"#)
            .is_ok()
    );
    // Someone else's channel that does not exist: refused as unowned (no oracle).
    f.refused(
        r#"{"action":"Hangup","channel":"PJSIP/202-0000ffff"}"#,
        CODE_FORBIDDEN,
        "is not on a call of your endpoints",
    );
    // A channel whose endpoint prefixes hers is not hers.
    f.pbx.channels.push(("PJSIP/1010-00000009", "1700.9"));
    f.refused(
        r#"{"action":"Hangup","channel":"PJSIP/1010-00000009"}"#,
        CODE_FORBIDDEN,
        "not on a call",
    );

    // Every endpoint granted: any channel goes to the PBX, known or not.
    let mut f = Fixture::with(settings(), admin());
    for ch in ["PJSIP/201-00000003", "PJSIP/201-0000ffff"] {
        assert!(
            f.send(&json!({"action": "Hangup", "channel": ch}).to_string())
                .is_ok()
        );
    }
}

#[test]
fn queues_and_interfaces_must_be_granted() {
    let mut f = Fixture::new();
    for (req, code, needle) in [
        (
            r#"{"action":"QueueAdd","queue":"support","interface":"PJSIP/101"}"#,
            CODE_FORBIDDEN,
            "queue \"support\" is not granted",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/102"}"#,
            CODE_FORBIDDEN,
            "interface \"PJSIP/102\" is not one of your endpoints",
        ),
        (
            r#"{"action":"QueueRemove","queue":"support","interface":"PJSIP/101"}"#,
            CODE_FORBIDDEN,
            "not granted",
        ),
        (
            r#"{"action":"QueueRemove","queue":"sales"}"#,
            CODE_INVALID,
            "missing \"interface\"",
        ),
        (
            r#"{"action":"QueuePause","interface":"PJSIP/102","queue":"sales","paused":true}"#,
            CODE_FORBIDDEN,
            "not one of your endpoints",
        ),
        (
            r#"{"action":"QueuePause","interface":"PJSIP/101","paused":true}"#,
            CODE_FORBIDDEN,
            "needs the \"*\" queue grant",
        ),
        (
            r#"{"action":"QueueStatus"}"#,
            CODE_FORBIDDEN,
            "needs the \"*\" queue grant",
        ),
        (
            r#"{"action":"QueueStatus","queue":"support"}"#,
            CODE_FORBIDDEN,
            "not granted",
        ),
        (
            r#"{"action":"Originate","endpoint":"PJSIP/102","number":"1"}"#,
            CODE_FORBIDDEN,
            "endpoint \"PJSIP/102\" is not yours",
        ),
    ] {
        f.refused(req, code, needle);
    }

    // With every queue granted: no queue means every queue, unknown queues are refused.
    let mut f = Fixture::with(settings(), admin());
    assert!(f.send(r#"{"action":"QueueStatus"}"#).is_ok());
    assert!(
        f.send(r#"{"action":"QueuePause","interface":"PJSIP/555","paused":false}"#)
            .is_ok()
    );
    f.refused(
        r#"{"action":"QueueAdd","queue":"nope","interface":"PJSIP/101"}"#,
        CODE_INVALID,
        "no such queue: \"nope\"",
    );
    f.refused(
        r#"{"action":"Originate","endpoint":"justaname","number":"1"}"#,
        CODE_INVALID,
        "Tech/resource",
    );
    f.refused(
        r#"{"action":"Originate","number":"1"}"#,
        CODE_INVALID,
        "missing \"endpoint\"",
    );
    // No endpoint granted at all.
    let mut none = grants();
    none.endpoints = Names::none();
    let mut f = Fixture::with(settings(), none);
    f.refused(
        r#"{"action":"Originate","number":"1"}"#,
        CODE_FORBIDDEN,
        "grants no endpoint",
    );
}

#[test]
fn bad_json_and_non_objects_are_refused() {
    let mut f = Fixture::new();
    for (req, needle) in [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("{\"action\":\"Hangup\",}", "not valid JSON"),
        ("{} x", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ("\"Hangup\"", "must be a JSON object"),
        ("null", "must be a JSON object"),
        ("42", "must be a JSON object"),
        (
            r#"{"action":"Hangup","action":"Originate"}"#,
            "duplicate key \"action\"",
        ),
        (
            r#"{"action":"Hangup","channel":"PJSIP/201-00000003","channel":"PJSIP/101-00000001"}"#,
            "duplicate key \"channel\"",
        ),
        ("{}", "missing \"action\""),
        (r#"{"action":null}"#, "missing \"action\""),
        (r#"{"action":7}"#, "\"action\" must be a string"),
        (
            r#"{"op":"publish","action":"Hangup"}"#,
            "\"op\" must be \"action\"",
        ),
        (r#"{"op":1,"action":"Hangup"}"#, "\"op\" must be \"action\""),
    ] {
        let v = f.refused(req, CODE_INVALID, needle);
        assert!(v.get("ref").is_none());
    }
    let keys: serde_json::Map<String, Value> = (0..=MAX_REQUEST_KEYS)
        .map(|i| (format!("k{i}"), json!(i)))
        .collect();
    f.refused(
        &Value::Object(keys).to_string(),
        CODE_INVALID,
        "more than 16 keys",
    );
    let big = json!({"action":"Hangup","channel":"x".repeat(MAX_REQUEST_BYTES)}).to_string();
    f.refused(&big, CODE_INVALID, "larger than 4096 bytes");
    // Not UTF-8.
    let done = f.send_bytes(b"{\"action\":\"Hangup\xff\"}").unwrap_err();
    assert_eq!(done.code, CODE_INVALID);
    // A bad `ref` is refused and not echoed.
    let v = f.refused(
        &json!({"action":"Hangup","ref":"r".repeat(MAX_REF_BYTES + 1),"channel":"PJSIP/101-00000001"})
            .to_string(),
        CODE_INVALID,
        "\"ref\" must be a string of at most 64 bytes",
    );
    assert!(v.get("ref").is_none());
    assert_eq!(v["action"], "Hangup");
    f.refused(
        r#"{"action":"Hangup","ref":5,"channel":"PJSIP/101-00000001"}"#,
        CODE_INVALID,
        "\"ref\"",
    );
    f.refused(
        r#"{"action":"Hangup","ref":"a\nb","channel":"PJSIP/101-00000001"}"#,
        CODE_INVALID,
        "\"ref\"",
    );
    // "op" is optional (POST /ami/action); nesting is fine up to serde_json's limit.
    assert!(
        f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
            .is_ok()
    );
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    assert_eq!(
        f.send(&format!(r#"{{"action":"Hangup","x":{deep}}}"#))
            .unwrap_err()
            .code,
        CODE_INVALID
    );
}

#[test]
fn the_rate_limit_bites_after_the_burst() {
    let mut s = settings();
    s.burst = 3;
    s.rate_per_sec = 2.0;
    let mut f = Fixture::with(s, grants());
    let hangup = r#"{"action":"Hangup","channel":"PJSIP/101-00000001","ref":"x"}"#;
    // Refused requests take a token too.
    f.refused(
        r#"{"action":"Hangup","channel":"PJSIP/201-00000003"}"#,
        CODE_FORBIDDEN,
        "",
    );
    assert!(f.send(hangup).is_ok());
    assert!(f.send(hangup).is_ok());
    let v = f.refused(hangup, CODE_RATE_LIMITED, "too many actions");
    assert_eq!(v["ref"], "x");
    assert_eq!(v["action"], "Hangup");
    // Bad JSON and non-whitelisted actions are refused before the bucket.
    f.refused("{", CODE_INVALID, "");
    f.refused(r#"{"action":"Command"}"#, CODE_FORBIDDEN, "");
    // Another user has a bucket of their own.
    let mut out = Vec::new();
    let bob = Caller {
        handle: 8,
        user: "bob",
        grants: Some(&f.grants),
    };
    assert!(
        f.gw.submit(bob, hangup.as_bytes(), &f.pbx, true, f.now, &mut out)
            .is_ok()
    );
    // Half a second later: one token back.
    f.now += 499;
    f.refused(hangup, CODE_RATE_LIMITED, "");
    f.now += 1;
    assert!(f.send(hangup).is_ok());
    f.refused(hangup, CODE_RATE_LIMITED, "");
    // A clock that steps back adds nothing.
    f.now -= 10_000;
    f.refused(hangup, CODE_RATE_LIMITED, "");
}

#[test]
fn the_rate_limit_map_is_bounded() {
    let mut l = limit::RateLimiter::new(1.0, 1);
    for i in 0..MAX_BUCKETS {
        assert!(l.allow(&format!("u{i}"), T0));
    }
    assert_eq!(l.len(), MAX_BUCKETS);
    // Full of users with empty buckets: newcomers wait.
    assert!(!l.allow("newcomer", T0 + 10));
    assert!(!l.allow("newcomer", T0 + 500));
    // Once buckets have refilled they are dropped and make room.
    assert!(l.allow("newcomer", T0 + 2_000));
    assert_eq!(l.len(), 1);
    // Burst 0 or a bad rate: nothing passes, nothing is kept.
    let mut l = limit::RateLimiter::new(f64::NAN, 0);
    assert!(!l.allow("u", T0));
    assert_eq!(l.len(), 0);
}

#[test]
fn busy_when_max_pending_are_in_flight() {
    let mut s = settings();
    s.max_pending = 2;
    let mut f = Fixture::with(s, grants());
    let hangup = r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#;
    assert!(f.send(hangup).is_ok());
    assert!(f.send(hangup).is_ok());
    f.refused(hangup, CODE_BUSY, "too many actions in flight");
    // An answer frees a place.
    let done = f.feed(b"Response: Success\r\nActionID: sb-g-1\r\nMessage: Channel Hungup\r\n\r\n");
    assert_eq!(done.len(), 1);
    assert!(f.send(hangup).is_ok());
    // The refusal did not take an ActionID.
    assert_eq!(f.gw.next_id, 4);
}

#[test]
fn unavailable_when_the_pbx_is_not_connected() {
    let mut f = Fixture::new();
    f.connected = false;
    let v = f.refused(
        r#"{"action":"Hangup","channel":"PJSIP/101-00000001","ref":"r9"}"#,
        CODE_UNAVAILABLE,
        "not connected",
    );
    assert_eq!(v["ref"], "r9");
    // Validation still comes first.
    f.refused(
        r#"{"action":"Hangup","channel":"PJSIP/201-00000003"}"#,
        CODE_FORBIDDEN,
        "",
    );
}

// ---------------------------------------------------------------------------
// The AMI written

#[test]
fn exact_bytes_of_every_action() {
    let mut s = settings();
    s.max_pending = 64;
    let mut f = Fixture::with(s, grants());
    let cases = [
        (
            r#"{"op":"action","action":"Originate","ref":"r1","number":"5551234"}"#,
            "Action: Originate\r\nActionID: sb-g-1\r\nChannel: PJSIP/101\r\nContext: from-internal\r\n\
             Exten: 5551234\r\nPriority: 1\r\nCallerID: 5551234\r\nTimeout: 20000\r\nAsync: true\r\n\r\n",
        ),
        (
            r#"{"action":"hangup","channel":"PJSIP/101-00000001"}"#,
            "Action: Hangup\r\nActionID: sb-g-2\r\nChannel: PJSIP/101-00000001\r\nCause: 16\r\n\r\n",
        ),
        (
            r#"{"action":"REDIRECT","channel":"PJSIP/trunk-00000002","exten":"*72#"}"#,
            "Action: Redirect\r\nActionID: sb-g-3\r\nChannel: PJSIP/trunk-00000002\r\nContext: transfers\r\n\
             Exten: *72#\r\nPriority: 1\r\n\r\n",
        ),
        (
            r#"{"action":"Atxfer","channel":"PJSIP/101-00000001","exten":"200"}"#,
            "Action: Atxfer\r\nActionID: sb-g-4\r\nChannel: PJSIP/101-00000001\r\nContext: transfers\r\n\
             Exten: 200\r\n\r\n",
        ),
        (
            r#"{"action":"MixMonitor","channel":"PJSIP/101-00000001"}"#,
            "Action: MixMonitor\r\nActionID: sb-g-5\r\nChannel: PJSIP/101-00000001\r\n\
             File: /var/rec/PJSIP_101-00000001-sb-g-5.wav\r\nOptions: b\r\n\r\n",
        ),
        (
            r#"{"action":"StopMixMonitor","channel":"PJSIP/101-00000001"}"#,
            "Action: StopMixMonitor\r\nActionID: sb-g-6\r\nChannel: PJSIP/101-00000001\r\n\r\n",
        ),
        (
            r#"{"action":"QueuePause","interface":"PJSIP/101","queue":"sales","paused":true,"reason":"lunch break"}"#,
            "Action: QueuePause\r\nActionID: sb-g-7\r\nInterface: PJSIP/101\r\nQueue: sales\r\n\
             Paused: true\r\nReason: lunch break\r\n\r\n",
        ),
        (
            r#"{"action":"QueuePause","interface":"PJSIP/101","queue":"sales","paused":false,"reason":null}"#,
            "Action: QueuePause\r\nActionID: sb-g-8\r\nInterface: PJSIP/101\r\nQueue: sales\r\n\
             Paused: false\r\n\r\n",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101","penalty":3,"paused":true,"member_name":"Alice Ä"}"#,
            "Action: QueueAdd\r\nActionID: sb-g-9\r\nQueue: sales\r\nInterface: PJSIP/101\r\n\
             Penalty: 3\r\nPaused: true\r\nMemberName: Alice Ä\r\n\r\n",
        ),
        (
            r#"{"action":"QueueAdd","queue":"sales","interface":"PJSIP/101"}"#,
            "Action: QueueAdd\r\nActionID: sb-g-10\r\nQueue: sales\r\nInterface: PJSIP/101\r\n\r\n",
        ),
        (
            r#"{"action":"QueueRemove","queue":"sales","interface":"PJSIP/101"}"#,
            "Action: QueueRemove\r\nActionID: sb-g-11\r\nQueue: sales\r\nInterface: PJSIP/101\r\n\r\n",
        ),
        (
            r#"{"action":"QueueStatus","queue":"sales"}"#,
            "Action: QueueStatus\r\nActionID: sb-g-12\r\nQueue: sales\r\n\r\n",
        ),
    ];
    for (req, ami) in cases {
        assert_eq!(f.send(req).unwrap(), ami, "{req}");
    }
    assert_eq!(f.gw.pending(), cases.len());

    // What is written parses back as one action with exactly those fields.
    let mut s = settings();
    s.caller_id = Some("\"Switchboard\" <100>".into());
    s.record_dir = "/rec".into();
    let mut f = Fixture::with(s, admin());
    let out = f
        .send(r#"{"action":"Originate","endpoint":"PJSIP/102","number":"0"}"#)
        .unwrap();
    assert_eq!(
        out,
        "Action: Originate\r\nActionID: sb-g-1\r\nChannel: PJSIP/102\r\nContext: from-internal\r\n\
         Exten: 0\r\nPriority: 1\r\nCallerID: \"Switchboard\" <100>\r\nTimeout: 20000\r\nAsync: true\r\n\r\n"
    );
    f.pbx
        .channels
        .push(("Local/200@from-internal-00000001;1", "1700.5"));
    let out = f
        .send(r#"{"action":"MixMonitor","channel":"Local/200@from-internal-00000001;1"}"#)
        .unwrap();
    assert!(out.contains("File: /rec/Local_200_from-internal-00000001_1-sb-g-2.wav\r\n"));
    let mut server = Parser::server();
    let (n, item) = server.parse(out.as_bytes()).unwrap();
    assert_eq!(n, out.len());
    let Some(Item::Message(m)) = item else {
        panic!("{item:?}")
    };
    assert_eq!(m.action(), Some(&b"MixMonitor"[..]));
    assert_eq!(m.len(), 5);
}

#[test]
fn action_ids_are_unique_and_increasing() {
    let mut f = Fixture::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        if i % 3 == 0 {
            // Refusals in between take no id.
            f.refused(r#"{"action":"Command"}"#, CODE_FORBIDDEN, "");
        }
        let out = f
            .send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
            .unwrap();
        let m = &messages(out.as_bytes())[0];
        ids.push(String::from_utf8(m.message().action_id().unwrap().to_vec()).unwrap());
        // Answer them so max_pending does not get in the way.
        let answer = format!("Response: Success\r\nActionID: {}\r\n\r\n", ids[i]);
        assert_eq!(f.feed(answer.as_bytes()).len(), 1);
    }
    let expected: Vec<String> = (1..=20).map(|n| format!("sb-g-{n}")).collect();
    assert_eq!(ids, expected);
    // After the link fails, numbering goes on.
    f.gw.fail_all();
    let out = f
        .send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
        .unwrap();
    assert!(out.contains("ActionID: sb-g-21\r\n"));
}

// ---------------------------------------------------------------------------
// Correlation

#[test]
fn a_success_response_finishes_the_request() {
    let mut f = Fixture::new();
    f.send(r#"{"op":"action","action":"Hangup","ref":"r1","channel":"PJSIP/101-00000001"}"#)
        .unwrap();
    let done = f.feed(b"Response: Success\r\nActionID: sb-g-1\r\nMessage: Channel Hungup\r\n\r\n");
    assert_eq!(done.len(), 1);
    let d = &done[0];
    assert_eq!((d.caller, d.ok, d.code), (ALICE, true, CODE_OK));
    assert_eq!(d.action, Some(Action::Hangup));
    assert_eq!(
        String::from_utf8(d.result.clone()).unwrap(),
        r#"{"op":"result","ref":"r1","action":"Hangup","ok":true,"response":{"Response":"Success","ActionID":"sb-g-1","Message":"Channel Hungup"}}"#
    );
    assert_eq!(f.gw.pending(), 0);
    assert_eq!(f.gw.next_deadline(), None);
    // A second answer with the same id is ignored.
    assert!(
        f.feed(b"Response: Success\r\nActionID: sb-g-1\r\n\r\n")
            .is_empty()
    );
}

#[test]
fn an_error_response_is_a_pbx_error() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"Redirect","channel":"PJSIP/101-00000001","exten":"9"}"#)
        .unwrap();
    let done = f.feed(
        b"Response: Error\r\nActionID: sb-g-1\r\nMessage: Channel does not exist: PJSIP/101-00000001\r\n\r\n",
    );
    let d = &done[0];
    assert_eq!((d.ok, d.code), (false, CODE_PBX_ERROR));
    assert_eq!(
        String::from_utf8(d.result.clone()).unwrap(),
        r#"{"op":"result","action":"Redirect","ok":false,"code":"pbx_error","error":"Channel does not exist: PJSIP/101-00000001","response":{"Response":"Error","ActionID":"sb-g-1","Message":"Channel does not exist: PJSIP/101-00000001"}}"#
    );
    // An error without a Message, and another status.
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
        .unwrap();
    let v = parse(&f.feed(b"Response: Error\r\nActionID: sb-g-2\r\n\r\n")[0]);
    assert_eq!(v["error"], "the PBX answered Error");
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
        .unwrap();
    let v = parse(&f.feed(b"Response: Goodbye\r\nActionID: sb-g-3\r\n\r\n")[0]);
    assert_eq!(v["code"], "pbx_error");
}

#[test]
fn messages_of_others_are_ignored() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
        .unwrap();
    for msg in [
        &b"Response: Success\r\nActionID: sb-g-2\r\n\r\n"[..],
        b"Response: Success\r\nActionID: sb-s-1\r\n\r\n",
        b"Response: Success\r\nActionID: sb-g-\r\n\r\n",
        b"Response: Success\r\nActionID: sb-g-01x\r\n\r\n",
        b"Response: Success\r\nActionID: sb-g-99999999999999999999999\r\n\r\n",
        b"Response: Success\r\n\r\n",
        b"Event: Hangup\r\nActionID: sb-g-1\r\nChannel: PJSIP/101-00000001\r\n\r\n",
        b"Event: OriginateResponse\r\nActionID: sb-g-1\r\nResponse: Success\r\n\r\n",
        b"Event: QueueStatusComplete\r\nActionID: sb-g-1\r\nEventList: Complete\r\n\r\n",
    ] {
        assert!(f.feed(msg).is_empty(), "{}", String::from_utf8_lossy(msg));
    }
    assert_eq!(f.gw.pending(), 1);
}

const QUEUE_STATUS: &[u8] = b"Response: Success\r\nActionID: sb-g-1\r\nEventList: start\r\nMessage: Queue status will follow\r\n\r\n\
Event: QueueParams\r\nQueue: sales\r\nMax: 0\r\nCalls: 1\r\nActionID: sb-g-1\r\n\r\n\
Event: QueueMember\r\nQueue: sales\r\nName: Alice\r\nLocation: PJSIP/101\r\nPaused: 0\r\nActionID: sb-g-1\r\n\r\n\
Event: QueueParams\r\nQueue: support\r\nMax: 0\r\nCalls: 4\r\nActionID: sb-g-1\r\n\r\n\
Event: QueueMember\r\nQueue: support\r\nName: Bob\r\nLocation: PJSIP/201\r\nActionID: sb-g-1\r\n\r\n\
Event: QueueEntry\r\nQueue: support\r\nPosition: 1\r\nChannel: PJSIP/trunk-00000004\r\nActionID: sb-g-1\r\n\r\n\
Event: QueueEntry\r\nQueue: sales\r\nPosition: 1\r\nChannel: PJSIP/trunk-00000002\r\nActionID: sb-g-1\r\n\r\n\
Event: Mystery\r\nActionID: sb-g-1\r\n\r\n\
Event: QueueStatusComplete\r\nActionID: sb-g-1\r\nEventList: Complete\r\nListItems: 7\r\n\r\n";

#[test]
fn queue_status_collects_only_granted_queues() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"QueueStatus","queue":"sales","ref":"q"}"#)
        .unwrap();
    let done = f.feed(QUEUE_STATUS);
    assert_eq!(done.len(), 1);
    let v = parse(&done[0]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["ref"], "q");
    assert_eq!(v["action"], "QueueStatus");
    assert_eq!(v["response"]["Message"], "Queue status will follow");
    let events = v["events"].as_array().unwrap();
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["Event"].as_str().unwrap(), e["Queue"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("QueueParams", "sales"),
            ("QueueMember", "sales"),
            ("QueueEntry", "sales")
        ]
    );
    assert_eq!(
        events[1],
        json!({"Event":"QueueMember","Queue":"sales","Name":"Alice","Location":"PJSIP/101","Paused":"0","ActionID":"sb-g-1"})
    );
    assert_eq!(f.gw.pending(), 0);
    assert_eq!(f.gw.collected, 0);

    // With every queue granted, every item (with or without a queue) is kept.
    let mut f = Fixture::with(settings(), admin());
    f.send(r#"{"action":"QueueStatus"}"#).unwrap();
    let v = parse(&f.feed(QUEUE_STATUS)[0]);
    assert_eq!(v["events"].as_array().unwrap().len(), 7);

    // An empty list.
    let mut f = Fixture::new();
    f.send(r#"{"action":"QueueStatus","queue":"sales"}"#)
        .unwrap();
    let done = f.feed(
        b"Response: Success\r\nActionID: sb-g-1\r\nEventList: start\r\n\r\n\
          Event: QueueStatusComplete\r\nActionID: sb-g-1\r\nEventList: Complete\r\nListItems: 0\r\n\r\n",
    );
    assert_eq!(
        String::from_utf8(done[0].result.clone()).unwrap(),
        r#"{"op":"result","action":"QueueStatus","ok":true,"response":{"Response":"Success","ActionID":"sb-g-1","EventList":"start"},"events":[]}"#
    );
}

#[test]
fn a_list_is_bounded() {
    let mut f = Fixture::with(settings(), admin());
    f.send(r#"{"action":"QueueStatus"}"#).unwrap();
    assert!(
        f.feed(b"Response: Success\r\nActionID: sb-g-1\r\nEventList: start\r\n\r\n")
            .is_empty()
    );
    let item = b"Event: QueueMember\r\nQueue: q\r\nActionID: sb-g-1\r\n\r\n";
    let mut many = Vec::new();
    for _ in 0..MAX_LIST_ITEMS {
        many.extend_from_slice(item);
    }
    assert!(f.feed(&many).is_empty());
    assert!(f.gw.collected > 0);
    let done = f.feed(item);
    assert_eq!(done.len(), 1);
    let v = parse(&done[0]);
    assert_eq!(v["code"], "pbx_error");
    assert!(v["error"].as_str().unwrap().contains("too long"));
    assert_eq!(f.gw.collected, 0, "what was collected is released");
    assert_eq!(f.gw.next_deadline(), None);
    // What follows is ignored.
    assert!(
        f.feed(b"Event: QueueStatusComplete\r\nActionID: sb-g-1\r\nEventList: Complete\r\n\r\n")
            .is_empty()
    );
}

#[test]
fn a_list_error_finishes_at_once() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"QueueStatus","queue":"sales"}"#)
        .unwrap();
    let v = parse(
        &f.feed(b"Response: Error\r\nActionID: sb-g-1\r\nMessage: Permission denied\r\n\r\n")[0],
    );
    assert_eq!(v["code"], "pbx_error");
    assert_eq!(v["error"], "Permission denied");
}

#[test]
fn originate_is_final_on_its_originate_response() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"Originate","number":"5551234","ref":"call-1"}"#)
        .unwrap();
    assert_eq!(
        f.gw.next_deadline(),
        Some(T0 + 25_000),
        "ring timeout + 5 s"
    );
    // Queued: not final yet.
    assert!(
        f.feed(b"Response: Success\r\nActionID: sb-g-1\r\nMessage: Originate successfully queued\r\n\r\n")
            .is_empty()
    );
    assert_eq!(f.gw.pending(), 1);
    let done = f.feed(
        b"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: sb-g-1\r\nResponse: Success\r\n\
          Channel: PJSIP/101-00000005\r\nContext: from-internal\r\nExten: 5551234\r\nReason: 4\r\n\
          Uniqueid: 1700.5\r\nCallerIDNum: 5551234\r\nCallerIDName: <unknown>\r\n\r\n",
    );
    assert_eq!(done.len(), 1);
    let d = &done[0];
    assert_eq!(
        (d.ok, d.code, d.action),
        (true, CODE_OK, Some(Action::Originate))
    );
    assert_eq!(
        String::from_utf8(d.result.clone()).unwrap(),
        concat!(
            r#"{"op":"result","ref":"call-1","action":"Originate","ok":true,"reason":4,"#,
            r#""response":{"Response":"Success","ActionID":"sb-g-1","Message":"Originate successfully queued"},"#,
            r#""event":{"Event":"OriginateResponse","Privilege":"call,all","ActionID":"sb-g-1","Response":"Success","#,
            r#""Channel":"PJSIP/101-00000005","Context":"from-internal","Exten":"5551234","Reason":"4","#,
            r#""Uniqueid":"1700.5","CallerIDNum":"5551234","CallerIDName":"<unknown>"}}"#
        )
    );
    assert_eq!(f.gw.pending(), 0);
}

#[test]
fn originate_failure_and_error() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"Originate","number":"5551234"}"#)
        .unwrap();
    f.feed(
        b"Response: Success\r\nActionID: sb-g-1\r\nMessage: Originate successfully queued\r\n\r\n",
    );
    let done = f.feed(
        b"Event: OriginateResponse\r\nActionID: sb-g-1\r\nResponse: Failure\r\nChannel: PJSIP/101\r\nReason: 3\r\n\r\n",
    );
    let v = parse(&done[0]);
    assert_eq!(done[0].code, CODE_PBX_ERROR);
    assert_eq!(v["ok"], false);
    assert_eq!(v["code"], "pbx_error");
    assert_eq!(v["error"], "the call failed: not answered in time");
    assert_eq!(v["reason"], 3);
    assert_eq!(v["event"]["Response"], "Failure");
    assert_eq!(v["response"]["Message"], "Originate successfully queued");

    // Busy; and an event that comes before the response is still final.
    f.send(r#"{"action":"Originate","number":"1"}"#).unwrap();
    let v = parse(
        &f.feed(b"Event: OriginateResponse\r\nActionID: sb-g-2\r\nResponse: Failure\r\nReason: 5\r\n\r\n")
            [0],
    );
    assert_eq!(v["error"], "the call failed: busy");
    assert_eq!(v["response"], Value::Null);
    assert!(
        f.feed(b"Response: Success\r\nActionID: sb-g-2\r\n\r\n")
            .is_empty()
    );

    // An error response is final at once.
    f.send(r#"{"action":"Originate","number":"1"}"#).unwrap();
    let v = parse(
        &f.feed(b"Response: Error\r\nActionID: sb-g-3\r\nMessage: Originate failed\r\n\r\n")[0],
    );
    assert_eq!(v["code"], "pbx_error");
    assert_eq!(v["error"], "Originate failed");
    assert_eq!(f.gw.pending(), 0);
}

#[test]
fn requests_time_out() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"Originate","number":"1","ref":"o"}"#)
        .unwrap();
    f.now += 1;
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001","ref":"h"}"#)
        .unwrap();
    assert_eq!(f.gw.next_deadline(), Some(T0 + 1 + 10_000));
    assert!(f.gw.expire(T0 + 10_000).is_empty());
    let done = f.gw.expire(T0 + 10_001);
    assert_eq!(done.len(), 1);
    let v = parse(&done[0]);
    assert_eq!(v["ref"], "h");
    assert_eq!(v["code"], "timeout");
    assert_eq!(done[0].code, CODE_TIMEOUT);
    // The Originate waits for its OriginateResponse: ring timeout + 5 s.
    f.feed(b"Response: Success\r\nActionID: sb-g-1\r\n\r\n");
    assert_eq!(f.gw.next_deadline(), Some(T0 + 25_000));
    assert!(f.gw.expire(T0 + 24_999).is_empty());
    let done = f.gw.expire(T0 + 25_000);
    let v = parse(&done[0]);
    assert_eq!(
        (v["ref"].as_str(), v["code"].as_str()),
        (Some("o"), Some("timeout"))
    );
    assert_eq!(f.gw.pending(), 0);
    assert_eq!(f.gw.next_deadline(), None);
    // A late answer is ignored.
    assert!(
        f.feed(b"Event: OriginateResponse\r\nActionID: sb-g-1\r\nResponse: Success\r\n\r\n")
            .is_empty()
    );
}

#[test]
fn fail_all_fails_every_pending_request() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"Originate","number":"1","ref":"a"}"#)
        .unwrap();
    f.send(r#"{"action":"QueueStatus","queue":"sales","ref":"b"}"#)
        .unwrap();
    f.feed(
        b"Response: Success\r\nActionID: sb-g-2\r\nEventList: start\r\n\r\n\
             Event: QueueParams\r\nQueue: sales\r\nActionID: sb-g-2\r\n\r\n",
    );
    assert!(f.gw.collected > 0);
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
        .unwrap();
    let done = f.gw.fail_all();
    let refs: Vec<Value> = done.iter().map(|d| parse(d)["ref"].clone()).collect();
    assert_eq!(refs, [json!("a"), json!("b"), Value::Null]);
    for d in &done {
        assert_eq!((d.ok, d.code, d.caller), (false, CODE_UNAVAILABLE, ALICE));
        assert_eq!(parse(d)["error"], "the connection to the PBX was lost");
    }
    assert_eq!(f.gw.pending(), 0);
    assert_eq!(f.gw.collected, 0);
    assert_eq!(f.gw.next_deadline(), None);
    assert!(f.gw.fail_all().is_empty());
    assert!(f.gw.expire(u64::MAX).is_empty());
}

#[test]
fn ref_is_echoed_or_omitted() {
    let mut f = Fixture::new();
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001","ref":"é \"q\""}"#)
        .unwrap();
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#)
        .unwrap();
    f.send(r#"{"action":"Hangup","channel":"PJSIP/101-00000001","ref":""}"#)
        .unwrap();
    let done = f.feed(
        b"Response: Success\r\nActionID: sb-g-1\r\n\r\nResponse: Success\r\nActionID: sb-g-2\r\n\r\n\
          Response: Success\r\nActionID: sb-g-3\r\n\r\n",
    );
    let v: Vec<Value> = done.iter().map(parse).collect();
    assert_eq!(v[0]["ref"], "é \"q\"");
    assert!(v[1].as_object().unwrap().get("ref").is_none());
    assert!(!String::from_utf8_lossy(&done[1].result).contains("ref"));
    assert_eq!(v[2]["ref"], "");
    // Refusals too.
    let v = f.refused(r#"{"action":"Command","ref":"c"}"#, CODE_FORBIDDEN, "");
    assert_eq!(v["ref"], "c");
    assert_eq!(v["action"], "Command");
    let v = f.refused(r#"{"action":"Command"}"#, CODE_FORBIDDEN, "");
    assert!(v.get("ref").is_none());
}

#[test]
fn results_go_to_their_own_caller() {
    let mut f = Fixture::new();
    let mut out = Vec::new();
    for handle in [1u32, 2] {
        let c = Caller {
            handle,
            user: "alice",
            grants: Some(&f.grants),
        };
        f.gw.submit(
            c,
            br#"{"action":"Hangup","channel":"PJSIP/101-00000001"}"#,
            &f.pbx,
            true,
            T0,
            &mut out,
        )
        .unwrap();
    }
    let done = f.feed(b"Response: Success\r\nActionID: sb-g-2\r\n\r\n");
    assert_eq!(done[0].caller, 2);
    assert_eq!(f.gw.pending(), 1);
    // An answer is used once: a repeat of it finds nothing pending.
    let done = f.feed(b"Response: Success\r\nActionID: sb-g-1\r\n\r\n");
    assert_eq!(done[0].caller, 1);
    assert!(
        f.feed(b"Response: Success\r\nActionID: sb-g-1\r\n\r\n")
            .is_empty()
    );
    assert_eq!(f.gw.next_deadline(), None);
}

#[test]
fn repeated_keys_become_arrays() {
    let m = &messages(
        b"Response: Success\r\nActionID: sb-g-1\r\nOutput: a\r\nOutput: b\r\nno colon here\r\nX: \"\\\r\n\r\n",
    )[0];
    let mut out = Vec::new();
    reply::write_message(&mut out, &m.message());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"Response":"Success","ActionID":"sb-g-1","Output":["a","b"],"X":"\"\\"}"#
    );
}

#[test]
fn grants_from_claim_lists() {
    let g = AmiGrants::from_claim(
        &["originate", "QUEUESTATUS", "Command", "Setvar"],
        &["PJSIP/101", "*"],
        &["sales"],
    )
    .unwrap();
    assert_eq!(
        g.actions,
        ActionSet::of(&[Action::Originate, Action::QueueStatus])
    );
    assert!(g.endpoints.is_any() && g.endpoints.first() == Some("PJSIP/101"));
    assert!(g.queues.contains("sales") && !g.queues.contains("Sales"));
    assert!(AmiGrants::from_claim::<&str>(&[], &[""], &[]).is_none());
    assert!(AmiGrants::from_claim::<&str>(&[], &[], &["a\u{7f}"]).is_none());
    for a in Action::ALL {
        assert_eq!(Action::from_name(&a.name().to_lowercase()), Some(a));
        assert!(ActionSet::ALL.contains(a));
    }
    assert_eq!(Action::from_name("Hangup "), None);
}
