//! A client's request: the JSON object (bounded, duplicate keys refused), the checks
//! every value passes, the validation of each action's parameters against the
//! caller's grants and the PBX's channels, and the AMI action the server builds
//! from what passed ([`Plan`]).

use std::fmt;

use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use switchboard_proto::ami::MessageWriter;

use super::grants::{Action, AmiGrants};
use super::{CODE_FORBIDDEN, CODE_INVALID, GatewaySettings};
use crate::ami::{PbxView, endpoint_of};

/// Largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Most keys one request may hold.
pub const MAX_REQUEST_KEYS: usize = 16;
/// Longest string value, in bytes.
pub const MAX_VALUE_BYTES: usize = 128;
/// Longest `ref`, in bytes.
pub const MAX_REF_BYTES: usize = 64;
/// Longest number or extension (`0-9`, `*`, `#`, an optional leading `+`).
pub const MAX_DIGITS: usize = 32;
/// Highest queue member penalty accepted.
pub const MAX_PENALTY: u64 = 1000;
/// The `Cause` of a Hangup: Normal Clearing.
pub const HANGUP_CAUSE: u64 = 16;
/// Longest client key or value quoted back in an error message, in bytes.
const MAX_QUOTED_BYTES: usize = MAX_VALUE_BYTES;

/// Keys a request may always hold, whatever its action.
const COMMON_KEYS: [&str; 3] = ["op", "action", "ref"];
/// Keys never accepted from a browser, whatever their case: the server sets them or
/// they run code on the PBX (`Application: System`, MixMonitor's `Command`).
const DENIED_KEYS: [&str; 20] = [
    "application",
    "data",
    "variable",
    "account",
    "accountcode",
    "context",
    "file",
    "command",
    "actionid",
    "action_id",
    "options",
    "async",
    "priority",
    "callerid",
    "timeout",
    "codecs",
    "channelid",
    "otherchannelid",
    "extrachannel",
    "extracontext",
];

/// Why a request is refused: a result code and a reason for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub error: String,
}

impl Refusal {
    pub(super) fn new(code: &'static str, error: impl Into<String>) -> Refusal {
        Refusal {
            code,
            error: error.into(),
        }
    }

    fn invalid(error: impl Into<String>) -> Refusal {
        Refusal::new(CODE_INVALID, error)
    }

    fn forbidden(error: impl Into<String>) -> Refusal {
        Refusal::new(CODE_FORBIDDEN, error)
    }
}

/// A request read from its JSON.
#[derive(Debug)]
pub(super) struct Request {
    entries: Vec<(String, Value)>,
    /// The `ref` to echo, when it is a valid one.
    pub reference: Option<String>,
    /// The `action` to echo: the canonical name of a whitelisted action, else the
    /// client's text when it is a valid value.
    pub label: Option<String>,
}

impl Request {
    /// Reads the JSON object (refusals here carry neither `ref` nor `action`).
    pub fn read(bytes: &[u8]) -> Result<Request, Refusal> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(Refusal::invalid(format!(
                "request is larger than {MAX_REQUEST_BYTES} bytes"
            )));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let entries = match de.deserialize_map(EntriesVisitor).and_then(|e| {
            de.end()?;
            Ok(e)
        }) {
            Ok(Entries {
                problem: Some(problem),
                ..
            }) => return Err(Refusal::invalid(problem)),
            Ok(Entries { entries, .. }) => entries,
            Err(e) if e.is_data() => {
                return Err(Refusal::invalid("request must be a JSON object"));
            }
            Err(_) => return Err(Refusal::invalid("request is not valid JSON")),
        };
        let mut req = Request {
            entries,
            reference: None,
            label: None,
        };
        req.reference = req
            .raw("ref")
            .and_then(Value::as_str)
            .filter(|r| r.len() <= MAX_REF_BYTES && !has_control(r))
            .map(str::to_owned);
        req.label =
            req.raw("action")
                .and_then(Value::as_str)
                .and_then(|a| match Action::from_name(a) {
                    Some(action) => Some(action.name().to_owned()),
                    None => check_text(a).is_ok().then(|| a.to_owned()),
                });
        Ok(req)
    }

    /// Checks `op` and `ref` and returns the whitelisted action named by `action`.
    pub fn action(&self) -> Result<Action, Refusal> {
        if let Some(op) = self.raw("op")
            && op.as_str() != Some("action")
        {
            return Err(Refusal::invalid(r#""op" must be "action""#));
        }
        if self.raw("ref").is_some() && self.reference.is_none() {
            return Err(Refusal::invalid(format!(
                r#""ref" must be a string of at most {MAX_REF_BYTES} bytes without control characters"#
            )));
        }
        let name = match self.raw("action") {
            None | Some(Value::Null) => return Err(Refusal::invalid(r#"missing "action""#)),
            Some(Value::String(s)) => s,
            Some(_) => return Err(Refusal::invalid(r#""action" must be a string"#)),
        };
        Action::from_name(name).ok_or_else(|| {
            let shown = self
                .label
                .as_deref()
                .map_or(String::new(), |l| format!("{l} "));
            Refusal::forbidden(format!(
                "action {shown}is not available through the gateway"
            ))
        })
    }

    /// Validates the parameters of `action` for a caller holding `grants`.
    pub fn plan<'r>(
        &'r self,
        action: Action,
        grants: &'r AmiGrants,
        pbx: &dyn PbxView,
    ) -> Result<Plan<'r>, Refusal> {
        if !grants.actions.contains(action) {
            return Err(Refusal::forbidden(format!(
                "your token does not grant {}",
                action.name()
            )));
        }
        let p = Params {
            req: self,
            action,
            grants,
            pbx,
        };
        Ok(match action {
            Action::Originate => {
                p.keys(&["endpoint", "number"])?;
                let endpoint = p.originate_endpoint()?;
                let number = p.digits("number")?;
                Plan::Originate { endpoint, number }
            }
            Action::Hangup => {
                p.keys(&["channel"])?;
                Plan::Hangup {
                    channel: p.owned_channel()?,
                }
            }
            Action::Redirect | Action::Atxfer => {
                p.keys(&["channel", "exten"])?;
                let channel = p.owned_channel()?;
                let exten = p.digits("exten")?;
                if action == Action::Redirect {
                    Plan::Redirect { channel, exten }
                } else {
                    Plan::Atxfer { channel, exten }
                }
            }
            Action::MixMonitor => {
                p.keys(&["channel"])?;
                Plan::MixMonitor {
                    channel: p.owned_channel()?,
                }
            }
            Action::StopMixMonitor => {
                p.keys(&["channel"])?;
                Plan::StopMixMonitor {
                    channel: p.owned_channel()?,
                }
            }
            Action::QueuePause => {
                p.keys(&["interface", "queue", "paused", "reason"])?;
                Plan::QueuePause {
                    interface: p.interface()?,
                    queue: p.optional_queue()?,
                    paused: p.boolean("paused")?.ok_or_else(|| missing("paused"))?,
                    reason: p.text("reason")?,
                }
            }
            Action::QueueAdd => {
                p.keys(&["queue", "interface", "penalty", "paused", "member_name"])?;
                Plan::QueueAdd {
                    queue: p.queue()?,
                    interface: p.interface()?,
                    penalty: p.penalty()?,
                    paused: p.boolean("paused")?,
                    member_name: p.text("member_name")?,
                }
            }
            Action::QueueRemove => {
                p.keys(&["queue", "interface"])?;
                Plan::QueueRemove {
                    queue: p.queue()?,
                    interface: p.interface()?,
                }
            }
            Action::QueueStatus => {
                p.keys(&["queue"])?;
                Plan::QueueStatus {
                    queue: p.optional_queue()?,
                }
            }
        })
    }

    fn raw(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// The parameters of one request, checked against the caller and the PBX.
struct Params<'r, 'p> {
    req: &'r Request,
    action: Action,
    grants: &'r AmiGrants,
    pbx: &'p dyn PbxView,
}

impl<'r> Params<'r, '_> {
    /// Every key is common or one of `allowed` (exactly, lowercase).
    fn keys(&self, allowed: &[&str]) -> Result<(), Refusal> {
        for (key, _) in &self.req.entries {
            let key = key.as_str();
            if COMMON_KEYS.contains(&key) || allowed.contains(&key) {
                continue;
            }
            let lower = key.to_ascii_lowercase();
            if DENIED_KEYS.contains(&lower.as_str()) {
                return Err(Refusal::forbidden(format!(
                    "{} is never accepted from a browser",
                    Quoted(key)
                )));
            }
            if self.action == Action::Originate && lower == "channel" {
                return Err(Refusal::forbidden(
                    r#"Originate rings one of your endpoints: give "endpoint", not "channel""#,
                ));
            }
            return Err(Refusal::invalid(format!(
                "unknown parameter {} for {}",
                Quoted(key),
                self.action.name()
            )));
        }
        Ok(())
    }

    /// The value of `key`; `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'r Value> {
        self.req.raw(key).filter(|v| !v.is_null())
    }

    /// An optional string parameter (see [`check_text`]).
    fn text(&self, key: &str) -> Result<Option<&'r str>, Refusal> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => check_text(s)
                .map(Some)
                .map_err(|why| Refusal::invalid(format!("{}{why}", Quoted(key)))),
            Some(_) => Err(Refusal::invalid(format!(
                "{} must be a string",
                Quoted(key)
            ))),
        }
    }

    fn required_text(&self, key: &str) -> Result<&'r str, Refusal> {
        self.text(key)?.ok_or_else(|| missing(key))
    }

    /// A number or extension: 1 to [`MAX_DIGITS`] of `0-9`, `*`, `#`, after an
    /// optional leading `+` (E.164: `+33612345678`).
    fn digits(&self, key: &str) -> Result<&'r str, Refusal> {
        let v = self.required_text(key)?;
        let dial = v.strip_prefix('+').unwrap_or(v);
        if !dial.is_empty()
            && v.len() <= MAX_DIGITS
            && dial
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
        {
            Ok(v)
        } else {
            Err(Refusal::invalid(format!(
                "{} must be 1 to {MAX_DIGITS} of 0-9, * and #, after an optional +",
                Quoted(key)
            )))
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Refusal> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Refusal::invalid(format!(
                "{} must be true or false",
                Quoted(key)
            ))),
        }
    }

    fn penalty(&self) -> Result<Option<u64>, Refusal> {
        match self.get("penalty") {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= MAX_PENALTY => Ok(Some(n)),
                _ => Err(Refusal::invalid(format!(
                    r#""penalty" must be an integer from 0 to {MAX_PENALTY}"#
                ))),
            },
        }
    }

    /// Originate's endpoint: the one given (granted), or the first granted.
    fn originate_endpoint(&self) -> Result<&'r str, Refusal> {
        let endpoints = &self.grants.endpoints;
        match self.text("endpoint")? {
            Some(e) if !endpoints.contains(e) => Err(Refusal::forbidden(format!(
                "endpoint {} is not yours",
                Quoted(e)
            ))),
            Some(e) if !looks_like_endpoint(e) => Err(Refusal::invalid(
                r#""endpoint" must look like Tech/resource (PJSIP/101)"#,
            )),
            Some(e) => Ok(e),
            None => match endpoints.first() {
                Some(first) => Ok(first),
                None if endpoints.is_any() => Err(missing("endpoint")),
                None => Err(Refusal::forbidden("your token grants no endpoint")),
            },
        }
    }

    /// `channel`, which must be owned: on a granted endpoint, or on a call one of
    /// whose live channels is. A channel of a granted endpoint goes to the PBX even
    /// when the model does not know it (yet): Asterisk can report a channel, as the
    /// `OriginateResponse` of a click-to-call, before its `Newchannel`, and a hangup
    /// right after must not be refused; one that does not exist gets the PBX's error.
    /// Whether another channel exists is told to nobody: unknown is not owned.
    fn owned_channel(&self) -> Result<&'r str, Refusal> {
        let channel = self.required_text("channel")?;
        let endpoints = &self.grants.endpoints;
        if endpoints.contains(endpoint_of(channel)) {
            return Ok(channel);
        }
        let call = self.pbx.linkedid_of(channel);
        let owned = call.is_some_and(|linkedid| {
            self.pbx
                .channels_of_call(linkedid)
                .iter()
                .any(|c| endpoints.contains(endpoint_of(c)))
        });
        if owned {
            Ok(channel)
        } else {
            Err(Refusal::forbidden(format!(
                "channel {} is not on a call of your endpoints",
                Quoted(channel)
            )))
        }
    }

    /// `interface`: a granted endpoint.
    fn interface(&self) -> Result<&'r str, Refusal> {
        let interface = self.required_text("interface")?;
        if self.grants.endpoints.contains(interface) {
            Ok(interface)
        } else {
            Err(Refusal::forbidden(format!(
                "interface {} is not one of your endpoints",
                Quoted(interface)
            )))
        }
    }

    fn queue(&self) -> Result<&'r str, Refusal> {
        self.optional_queue()?.ok_or_else(|| missing("queue"))
    }

    /// `queue`: granted and known to the PBX. Absent is allowed only to a holder of
    /// the `"*"` queue grant (the action then covers every queue).
    fn optional_queue(&self) -> Result<Option<&'r str>, Refusal> {
        let queues = &self.grants.queues;
        match self.text("queue")? {
            None if queues.is_any() => Ok(None),
            None => Err(Refusal::forbidden(format!(
                r#"give "queue": {} on every queue needs the "*" queue grant"#,
                self.action.name()
            ))),
            Some(q) if !queues.contains(q) => Err(Refusal::forbidden(format!(
                "queue {} is not granted",
                Quoted(q)
            ))),
            Some(q) if !self.pbx.has_queue(q) => {
                Err(Refusal::invalid(format!("no such queue: {}", Quoted(q))))
            }
            Some(q) => Ok(Some(q)),
        }
    }
}

fn missing(key: &str) -> Refusal {
    Refusal::invalid(format!("missing {}", Quoted(key)))
}

/// A string value as the gateway accepts it: 1 to [`MAX_VALUE_BYTES`] bytes, no
/// control byte (0x00-0x1f, 0x7f: CR and LF would start a new AMI header).
pub(super) fn check_text(s: &str) -> Result<&str, String> {
    if s.is_empty() {
        Err(" must not be empty".into())
    } else if s.len() > MAX_VALUE_BYTES {
        Err(format!(" is longer than {MAX_VALUE_BYTES} bytes"))
    } else if has_control(s) {
        Err(" contains a control character".into())
    } else {
        Ok(s)
    }
}

pub(super) fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

fn looks_like_endpoint(e: &str) -> bool {
    e.split_once('/')
        .is_some_and(|(tech, resource)| !tech.is_empty() && !resource.is_empty())
}

/// A client's key or value in an error message: quoted, escaped, cut short.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut end = s.len().min(MAX_QUOTED_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let more = if end < s.len() { "..." } else { "" };
        write!(f, "\"{}{more}\"", s[..end].escape_debug())
    }
}

/// An action that passed every check, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan<'r> {
    Originate {
        endpoint: &'r str,
        number: &'r str,
    },
    Hangup {
        channel: &'r str,
    },
    Redirect {
        channel: &'r str,
        exten: &'r str,
    },
    Atxfer {
        channel: &'r str,
        exten: &'r str,
    },
    MixMonitor {
        channel: &'r str,
    },
    StopMixMonitor {
        channel: &'r str,
    },
    QueuePause {
        interface: &'r str,
        queue: Option<&'r str>,
        paused: bool,
        reason: Option<&'r str>,
    },
    QueueAdd {
        queue: &'r str,
        interface: &'r str,
        penalty: Option<u64>,
        paused: Option<bool>,
        member_name: Option<&'r str>,
    },
    QueueRemove {
        queue: &'r str,
        interface: &'r str,
    },
    QueueStatus {
        queue: Option<&'r str>,
    },
}

impl Plan<'_> {
    pub fn action(&self) -> Action {
        match self {
            Plan::Originate { .. } => Action::Originate,
            Plan::Hangup { .. } => Action::Hangup,
            Plan::Redirect { .. } => Action::Redirect,
            Plan::Atxfer { .. } => Action::Atxfer,
            Plan::MixMonitor { .. } => Action::MixMonitor,
            Plan::StopMixMonitor { .. } => Action::StopMixMonitor,
            Plan::QueuePause { .. } => Action::QueuePause,
            Plan::QueueAdd { .. } => Action::QueueAdd,
            Plan::QueueRemove { .. } => Action::QueueRemove,
            Plan::QueueStatus { .. } => Action::QueueStatus,
        }
    }

    /// Appends the AMI action to `out`. Every value a client gave passed
    /// [`check_text`]; the writer drops CR and LF besides, so no value can start a
    /// header or an action of its own.
    pub fn write(&self, s: &GatewaySettings, action_id: &str, out: &mut Vec<u8>) {
        let mut w = Ami(MessageWriter::action(out, self.action().name(), action_id));
        let bool_text = |b: bool| if b { "true" } else { "false" };
        match *self {
            Plan::Originate { endpoint, number } => {
                w.field("Channel", endpoint)
                    .field("Context", &s.originate_context)
                    .field("Exten", number)
                    .number("Priority", 1)
                    .field("CallerID", s.caller_id.as_deref().unwrap_or(number))
                    .number("Timeout", millis(s.ring_timeout))
                    .field("Async", "true");
            }
            Plan::Hangup { channel } => {
                w.field("Channel", channel).number("Cause", HANGUP_CAUSE);
            }
            Plan::Redirect { channel, exten } => {
                w.field("Channel", channel)
                    .field("Context", &s.transfer_context)
                    .field("Exten", exten)
                    .number("Priority", 1);
            }
            Plan::Atxfer { channel, exten } => {
                w.field("Channel", channel)
                    .field("Context", &s.transfer_context)
                    .field("Exten", exten);
            }
            Plan::MixMonitor { channel } => {
                let file = format!(
                    "{}/{}-{action_id}.wav",
                    s.record_dir.trim_end_matches('/'),
                    file_safe(channel)
                );
                w.field("Channel", channel)
                    .field("File", &file)
                    .field("Options", "b");
            }
            Plan::StopMixMonitor { channel } => {
                w.field("Channel", channel);
            }
            Plan::QueuePause {
                interface,
                queue,
                paused,
                reason,
            } => {
                w.field("Interface", interface);
                if let Some(q) = queue {
                    w.field("Queue", q);
                }
                w.field("Paused", bool_text(paused));
                if let Some(r) = reason {
                    w.field("Reason", r);
                }
            }
            Plan::QueueAdd {
                queue,
                interface,
                penalty,
                paused,
                member_name,
            } => {
                w.field("Queue", queue).field("Interface", interface);
                if let Some(p) = penalty {
                    w.number("Penalty", p);
                }
                if let Some(p) = paused {
                    w.field("Paused", bool_text(p));
                }
                if let Some(m) = member_name {
                    w.field("MemberName", m);
                }
            }
            Plan::QueueRemove { queue, interface } => {
                w.field("Queue", queue).field("Interface", interface);
            }
            Plan::QueueStatus { queue } => {
                if let Some(q) = queue {
                    w.field("Queue", q);
                }
            }
        }
        w.0.finish();
    }
}

/// The proto writer, with the single-line invariant asserted in debug builds.
struct Ami<'o>(MessageWriter<'o>);

impl Ami<'_> {
    fn field(&mut self, key: &str, value: &str) -> &mut Self {
        debug_assert!(
            !value.bytes().any(|b| b == b'\r' || b == b'\n'),
            "a value with a line break reached the AMI writer"
        );
        self.0.field(key, value);
        self
    }

    fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.0.field_u64(key, value);
        self
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A channel name made fit for a file name: every byte but `A-Z a-z 0-9 . - _`
/// becomes `_` (`PJSIP/101-0000002a` -> `PJSIP_101-0000002a`), so it never holds
/// a `/`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The request object's entries in order, or the first problem found with them.
struct Entries {
    entries: Vec<(String, Value)>,
    problem: Option<String>,
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        let mut problem = None;
        while let Some(key) = map.next_key::<String>()? {
            if problem.is_none() {
                if entries.len() >= MAX_REQUEST_KEYS {
                    problem = Some(format!("request has more than {MAX_REQUEST_KEYS} keys"));
                } else if entries.iter().any(|(k, _)| *k == key) {
                    problem = Some(format!("duplicate key {}", Quoted(&key)));
                }
            }
            if problem.is_some() {
                map.next_value::<IgnoredAny>()?;
            } else {
                let value = map.next_value::<Value>()?;
                entries.push((key, value));
            }
        }
        Ok(Entries { entries, problem })
    }
}
