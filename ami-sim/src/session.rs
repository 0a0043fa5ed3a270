//! One AMI session's state machine, without I/O: login (plain and MD5 challenge), the
//! event mask, the permission table, and the answers of the session-level actions
//! (`Login`, `Challenge`, `Logoff`, `Ping`, `Events`, `ListCommands`), worded and
//! ordered as Asterisk's `main/manager.c` writes them (checked against the captures).
//! What the session's tasks must do next (write, wait 1 s, close, hand the action to the
//! PBX) comes back as an [`Outcome`]; this module never touches a socket or a clock.

use std::borrow::Cow;

use switchboard_proto::ami::{Classes, ClassesError, Message, MessageWriter, md5_key, write_error};

use crate::config::{User, Users};
use crate::pbx::SimTime;

/// The session-independent settings the state machine reads.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub users: Users,
    /// `--fault refuse-login`: every login fails.
    pub refuse_login: bool,
}

/// The state of one session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Set once logged in.
    user: Option<User>,
    /// The `Events:`/`EventMask:` mask (Asterisk's `send_events`): every class at first.
    send_events: Classes,
    /// The MD5 challenge, created by the first `Challenge` and kept (as Asterisk does).
    challenge: Option<String>,
}

/// What the caller must do with an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Write these bytes.
    Reply(Vec<u8>),
    /// Login accepted: write the reply, then start the session's event stream
    /// (`FullyBooted` first when [`Session::wants_fully_booted`]).
    LoggedIn(Vec<u8>),
    /// Login refused: wait 1 s, write the reply, close.
    LoginFailed(Vec<u8>),
    /// `Logoff`: write the reply, close.
    Logoff(Vec<u8>),
    /// Authenticated and authorised: the PBX answers it.
    Pbx,
}

/// The actions the simulator knows, with the write classes that allow them (any one of
/// them; none = anyone logged in), as Asterisk registers them, and their synopsis for
/// `ListCommands`.
pub const ACTIONS: &[(&str, Classes, &str)] = &[
    ("Login", Classes::NONE, "Login Manager."),
    (
        "Challenge",
        Classes::NONE,
        "Generate Challenge for MD5 Auth.",
    ),
    ("Logoff", Classes::NONE, "Logoff Manager."),
    ("Ping", Classes::NONE, "Keepalive command."),
    ("Events", Classes::NONE, "Control Event Flow."),
    (
        "ListCommands",
        Classes::NONE,
        "List available manager commands.",
    ),
    ("Originate", Classes::ORIGINATE, "Originate a call."),
    (
        "Hangup",
        Classes::SYSTEM.union(Classes::CALL),
        "Hangup channel.",
    ),
    ("Redirect", Classes::CALL, "Redirect (transfer) a call."),
    ("Atxfer", Classes::CALL, "Attended transfer."),
    (
        "BlindTransfer",
        Classes::CALL,
        "Blind transfer channel(s) to the given destination",
    ),
    (
        "MixMonitor",
        Classes::SYSTEM,
        "Record a call and mix the audio during the recording.  Use of StopMixMonitor is required to guarantee the audio file is available for processing during dialplan execution.",
    ),
    (
        "StopMixMonitor",
        Classes::SYSTEM.union(Classes::CALL),
        "Stop recording a call through MixMonitor, and free the recording's file handle.",
    ),
    ("QueueStatus", Classes::NONE, "Show queue status."),
    ("QueueSummary", Classes::NONE, "Show queue summary."),
    ("QueueAdd", Classes::AGENT, "Add interface to queue."),
    (
        "QueueRemove",
        Classes::AGENT,
        "Remove interface from queue.",
    ),
    (
        "QueuePause",
        Classes::AGENT,
        "Makes a queue member temporarily unavailable.",
    ),
    (
        "CoreShowChannels",
        Classes::SYSTEM.union(Classes::REPORTING),
        "List currently active channels.",
    ),
    (
        "Status",
        Classes::SYSTEM
            .union(Classes::CALL)
            .union(Classes::REPORTING),
        "List channel status.",
    ),
    ("Command", Classes::COMMAND, "Execute Asterisk CLI Command."),
    (
        "CoreSettings",
        Classes::SYSTEM.union(Classes::REPORTING),
        "Show PBX core settings (version etc).",
    ),
    (
        "CoreStatus",
        Classes::SYSTEM.union(Classes::REPORTING),
        "Show PBX core status variables.",
    ),
];

/// The write classes of `action` (ASCII case-insensitive), or `None` if the simulator
/// does not know it.
pub fn action_classes(action: &str) -> Option<Classes> {
    ACTIONS
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(action))
        .map(|&(_, c, _)| c)
}

/// Asterisk's `strings_to_mask()` for a client's `Events:`/`EventMask:` value: `None`
/// for an empty value (no change / invalid), otherwise the mask, unknown class names
/// being ignored as Asterisk ignores them.
pub fn client_mask(text: &str) -> Option<Classes> {
    match Classes::parse(text) {
        Ok(c) => Some(c),
        Err(ClassesError::Empty) => None,
        Err(ClassesError::MaskOverflow(_)) => None,
        Err(ClassesError::Unknown(_)) => Some(
            text.split(',')
                .filter_map(|item| Classes::from_name(item.trim_matches([' ', '\t'])))
                .fold(Classes::NONE, Classes::union),
        ),
    }
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    switchboard_proto::ami::decode_text(bytes)
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            user: None,
            send_events: Classes::ALL,
            challenge: None,
        }
    }

    pub fn user(&self) -> Option<&User> {
        self.user.as_ref()
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// The classes of events this session receives now: its user's read classes within
    /// its event mask (nothing before login).
    pub fn event_classes(&self) -> Classes {
        match &self.user {
            Some(u) => Classes::from_bits(u.read.bits() & self.send_events.bits()),
            None => Classes::NONE,
        }
    }

    /// Whether a login just accepted is followed by `FullyBooted` (Asterisk sends it
    /// when the session reads `system` events and has them in its mask).
    pub fn wants_fully_booted(&self) -> bool {
        self.event_classes().intersects(Classes::SYSTEM)
    }

    /// Runs `msg` (a parsed action with a non-empty `Action:`). `now` is the simulated
    /// time (for `Ping`'s `Timestamp`); `random` makes a challenge when one is needed.
    pub fn handle(
        &mut self,
        cfg: &SessionConfig,
        msg: &Message<'_>,
        now: SimTime,
        random: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        let action = text(msg.action().unwrap_or_default());
        let action = action.trim();
        let id = msg.action_id().unwrap_or_default();
        let is = |name: &str| action.eq_ignore_ascii_case(name);
        let mut out = Vec::new();

        let allowed_before_login = is("Login") || is("Logoff") || is("Challenge");
        if !(self.is_authenticated() || allowed_before_login) {
            write_error(&mut out, id, "Permission denied");
            return Outcome::Reply(out);
        }
        let Some(required) = action_classes(action) else {
            let m = format!(
                "Invalid/unknown command: {action}. Use Action: ListCommands to show available commands."
            );
            write_error(&mut out, id, &m);
            return Outcome::Reply(out);
        };
        if let Some(u) = &self.user
            && !required.is_empty()
            && !u.write.intersects(required)
        {
            write_error(&mut out, id, "Permission denied");
            return Outcome::Reply(out);
        }

        if is("Login") {
            return self.login(cfg, msg, id);
        }
        if is("Challenge") {
            let auth = msg.get("AuthType").map(text).unwrap_or_default();
            if auth.eq_ignore_ascii_case("MD5") {
                let challenge = self
                    .challenge
                    .get_or_insert_with(|| (random() % 1_000_000_000).to_string());
                let mut w = MessageWriter::response(&mut out, "Success", id);
                w.field("Challenge", challenge);
                w.finish();
            } else {
                write_error(&mut out, id, "Must specify AuthType");
            }
            return Outcome::Reply(out);
        }
        if is("Logoff") {
            let mut w = MessageWriter::response(&mut out, "Goodbye", id);
            w.field("Message", "Thanks for all the fish.");
            w.finish();
            return Outcome::Logoff(out);
        }
        if is("Ping") {
            let mut w = MessageWriter::response(&mut out, "Success", id);
            w.field("Ping", "Pong").field(
                "Timestamp",
                &format!("{}.{:06}", now / 1_000_000, now % 1_000_000),
            );
            w.finish();
            return Outcome::Reply(out);
        }
        if is("Events") {
            let mask = msg.get("EventMask").map(text).unwrap_or_default();
            match client_mask(&mask) {
                Some(mask) => {
                    self.send_events = mask;
                    let mut w = MessageWriter::response(&mut out, "Success", id);
                    w.field("Events", if mask.is_empty() { "Off" } else { "On" });
                    w.finish();
                }
                None => write_error(&mut out, id, "Invalid event mask"),
            }
            return Outcome::Reply(out);
        }
        if is("ListCommands") {
            let write = self.user.as_ref().map(|u| u.write).unwrap_or_default();
            let mut w = MessageWriter::response(&mut out, "Success", id);
            for (name, classes, synopsis) in ACTIONS {
                if classes.is_empty() || write.intersects(*classes) {
                    // authority_to_str(): "<none>" or the names then "all".
                    w.field(name, &format!("{synopsis} (Priv: {classes})"));
                }
            }
            w.finish();
            return Outcome::Reply(out);
        }
        Outcome::Pbx
    }

    fn login(&mut self, cfg: &SessionConfig, msg: &Message<'_>, id: &[u8]) -> Outcome {
        let mut out = Vec::new();
        if self.is_authenticated() {
            let mut w = MessageWriter::response(&mut out, "Success", id);
            w.field("Message", "Already authenticated");
            w.finish();
            return Outcome::Reply(out);
        }
        let name = msg.get("Username").map(text).unwrap_or_default();
        let user = cfg.users.find(&name).filter(|_| !name.is_empty());
        let ok = match user {
            _ if cfg.refuse_login => false,
            None => false,
            Some(u) => {
                let md5 = msg
                    .get("AuthType")
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"MD5"));
                if md5 {
                    let key = msg.get("Key").map(text).unwrap_or_default();
                    match &self.challenge {
                        Some(c) if !key.is_empty() => {
                            key.eq_ignore_ascii_case(&md5_key(c, &u.secret))
                        }
                        _ => false,
                    }
                } else {
                    msg.get("Secret") == Some(u.secret.as_bytes())
                }
            }
        };
        if !ok {
            write_error(&mut out, id, "Authentication failed");
            return Outcome::LoginFailed(out);
        }
        self.user = user.cloned();
        if let Some(mask) = msg.get("Events").map(text).as_deref().and_then(client_mask) {
            self.send_events = mask;
        }
        let mut w = MessageWriter::response(&mut out, "Success", id);
        w.field("Message", "Authentication accepted");
        w.finish();
        Outcome::LoggedIn(out)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_proto::ami::{Item, Parser};

    use super::*;

    fn cfg() -> SessionConfig {
        let mut users = Users::default();
        users
            .add([
                User::new("admin", "amp111"),
                User {
                    name: "ro".into(),
                    secret: "ro".into(),
                    read: Classes::CALL | Classes::SYSTEM,
                    write: Classes::NONE,
                },
                User {
                    name: "agent".into(),
                    secret: "a".into(),
                    read: Classes::AGENT,
                    write: Classes::AGENT | Classes::CALL,
                },
            ])
            .unwrap();
        SessionConfig {
            users,
            refuse_login: false,
        }
    }

    /// Runs one action (text with `\n` line ends) through a fresh server-role parser.
    fn run(s: &mut Session, cfg: &SessionConfig, action: &str) -> Outcome {
        let bytes = format!("{action}\n\n");
        let mut p = Parser::server();
        let (_, item) = p.parse(bytes.as_bytes()).unwrap();
        let Some(Item::Message(m)) = item else {
            panic!("not an action: {item:?}")
        };
        s.handle(cfg, &m, 1_795_248_502_607_277, &mut || 942_327_271)
    }

    fn reply(o: Outcome) -> String {
        match o {
            Outcome::Reply(b)
            | Outcome::LoggedIn(b)
            | Outcome::LoginFailed(b)
            | Outcome::Logoff(b) => String::from_utf8(b).unwrap(),
            Outcome::Pbx => "<pbx>".into(),
        }
    }

    #[test]
    fn everything_but_login_is_denied_before_login() {
        let cfg = cfg();
        let mut s = Session::new();
        for a in ["Ping", "Originate", "NoSuchThing", "Events", "QueueStatus"] {
            assert_eq!(
                reply(run(&mut s, &cfg, &format!("Action: {a}\nActionID: x-1"))),
                "Response: Error\r\nActionID: x-1\r\nMessage: Permission denied\r\n\r\n"
            );
        }
        assert_eq!(s.event_classes(), Classes::NONE);
        // Logoff is allowed: Goodbye, then close.
        assert_eq!(
            run(&mut s, &cfg, "Action: Logoff\nActionID: lo-1"),
            Outcome::Logoff(
                b"Response: Goodbye\r\nActionID: lo-1\r\nMessage: Thanks for all the fish.\r\n\r\n"
                    .to_vec()
            )
        );
    }

    #[test]
    fn plain_login() {
        let cfg = cfg();
        let mut s = Session::new();
        let bad = run(
            &mut s,
            &cfg,
            "Action: Login\nActionID: bad-1\nUsername: admin\nSecret: nope",
        );
        assert_eq!(
            bad,
            Outcome::LoginFailed(
                b"Response: Error\r\nActionID: bad-1\r\nMessage: Authentication failed\r\n\r\n"
                    .to_vec()
            )
        );
        for wrong in [
            "Action: Login\nUsername: nobody\nSecret: amp111",
            "Action: Login\nUsername: \nSecret: amp111",
            "Action: Login\nSecret: amp111",
            "Action: Login\nUsername: admin\nSecret: AMP111",
        ] {
            assert!(
                matches!(run(&mut s, &cfg, wrong), Outcome::LoginFailed(_)),
                "{wrong}"
            );
        }
        assert!(!s.is_authenticated());
        // User names are case-insensitive, secrets are not.
        let ok = run(
            &mut s,
            &cfg,
            "action: login\nactionid: kit-1\nusername: ADMIN\nsecret: amp111",
        );
        assert_eq!(
            ok,
            Outcome::LoggedIn(
                b"Response: Success\r\nActionID: kit-1\r\nMessage: Authentication accepted\r\n\r\n"
                    .to_vec()
            )
        );
        assert_eq!(s.event_classes(), Classes::ALL);
        assert!(s.wants_fully_booted());
        assert_eq!(
            reply(run(
                &mut s,
                &cfg,
                "Action: Login\nUsername: admin\nSecret: amp111"
            )),
            "Response: Success\r\nMessage: Already authenticated\r\n\r\n"
        );
    }

    #[test]
    fn md5_login_as_in_the_capture() {
        let cfg = cfg();
        let mut s = Session::new();
        // asterisk16-md5.bin: `Challenge: 942327271`.
        assert_eq!(
            reply(run(
                &mut s,
                &cfg,
                "Action: Challenge\nActionID: ch-1\nAuthType: MD5"
            )),
            "Response: Success\r\nActionID: ch-1\r\nChallenge: 942327271\r\n\r\n"
        );
        assert_eq!(
            reply(run(&mut s, &cfg, "Action: Challenge\nAuthType: plain")),
            "Response: Error\r\nMessage: Must specify AuthType\r\n\r\n"
        );
        let bad = format!(
            "Action: Login\nAuthType: MD5\nUsername: admin\nKey: {}",
            md5_key("942327271", "secret")
        );
        assert!(matches!(run(&mut s, &cfg, &bad), Outcome::LoginFailed(_)));
        let key = md5_key("942327271", "amp111").to_uppercase();
        let good = format!(
            "Action: Login\nActionID: li-1\nAuthType: md5\nUsername: admin\nKey: {key}\nEvents: off"
        );
        assert_eq!(
            reply(run(&mut s, &cfg, &good)),
            "Response: Success\r\nActionID: li-1\r\nMessage: Authentication accepted\r\n\r\n"
        );
        // Events: off at login: no FullyBooted, no events.
        assert_eq!(s.event_classes(), Classes::NONE);
        assert!(!s.wants_fully_booted());
    }

    #[test]
    fn md5_login_without_a_challenge_fails() {
        let cfg = cfg();
        let mut s = Session::new();
        let key = md5_key("", "amp111");
        let login = format!("Action: Login\nAuthType: MD5\nUsername: admin\nKey: {key}");
        assert!(matches!(run(&mut s, &cfg, &login), Outcome::LoginFailed(_)));
    }

    #[test]
    fn refuse_login_fault() {
        let mut cfg = cfg();
        cfg.refuse_login = true;
        let mut s = Session::new();
        assert!(matches!(
            run(
                &mut s,
                &cfg,
                "Action: Login\nUsername: admin\nSecret: amp111"
            ),
            Outcome::LoginFailed(_)
        ));
    }

    #[test]
    fn permission_table() {
        let cfg = cfg();
        let mut ro = Session::new();
        run(&mut ro, &cfg, "Action: Login\nUsername: ro\nSecret: ro");
        for a in [
            "Originate",
            "Command",
            "Hangup",
            "Redirect",
            "Atxfer",
            "BlindTransfer",
            "MixMonitor",
            "StopMixMonitor",
            "QueueAdd",
            "QueueRemove",
            "QueuePause",
            "CoreShowChannels",
            "Status",
            "CoreSettings",
            "CoreStatus",
        ] {
            assert_eq!(
                reply(run(&mut ro, &cfg, &format!("Action: {a}\nActionID: o-1"))),
                "Response: Error\r\nActionID: o-1\r\nMessage: Permission denied\r\n\r\n",
                "{a}"
            );
        }
        for a in ["QueueStatus", "QueueSummary"] {
            assert_eq!(
                run(&mut ro, &cfg, &format!("Action: {a}")),
                Outcome::Pbx,
                "{a}"
            );
        }
        // agent (write = agent,call): queue member actions and call control, not
        // Originate, Command, MixMonitor or the system lists.
        let mut ag = Session::new();
        run(&mut ag, &cfg, "Action: Login\nUsername: agent\nSecret: a");
        for (a, allowed) in [
            ("QueueAdd", true),
            ("queuepause", true),
            ("Hangup", true),
            ("Redirect", true),
            ("StopMixMonitor", true),
            ("Status", true),
            ("MixMonitor", false),
            ("Originate", false),
            ("Command", false),
            ("CoreShowChannels", false),
        ] {
            let o = run(&mut ag, &cfg, &format!("Action: {a}"));
            assert_eq!(o == Outcome::Pbx, allowed, "{a}: {o:?}");
        }
        assert_eq!(ag.event_classes(), Classes::AGENT);
        assert!(!ag.wants_fully_booted());
    }

    #[test]
    fn unknown_ping_events_listcommands() {
        let cfg = cfg();
        let mut s = Session::new();
        run(
            &mut s,
            &cfg,
            "Action: Login\nUsername: admin\nSecret: amp111",
        );
        assert_eq!(
            reply(run(&mut s, &cfg, "Action: NoSuchThing\nActionID: u-1")),
            "Response: Error\r\nActionID: u-1\r\nMessage: Invalid/unknown command: NoSuchThing. \
             Use Action: ListCommands to show available commands.\r\n\r\n"
        );
        assert_eq!(
            reply(run(&mut s, &cfg, "Action:Ping\nActionID: p-1")),
            "Response: Success\r\nActionID: p-1\r\nPing: Pong\r\nTimestamp: 1795248502.607277\r\n\r\n"
        );
        assert_eq!(
            reply(run(&mut s, &cfg, "Action: Ping")),
            "Response: Success\r\nPing: Pong\r\nTimestamp: 1795248502.607277\r\n\r\n"
        );
        // Events: the capture's answers; a class list is "On" and filters.
        assert_eq!(
            reply(run(
                &mut s,
                &cfg,
                "Action: Events\nActionID: e-2\nEventMask: off"
            )),
            "Response: Success\r\nActionID: e-2\r\nEvents: Off\r\n\r\n"
        );
        assert_eq!(s.event_classes(), Classes::NONE);
        assert_eq!(
            reply(run(
                &mut s,
                &cfg,
                "Action: Events\nActionID: e-1\nEventMask: call,agent"
            )),
            "Response: Success\r\nActionID: e-1\r\nEvents: On\r\n\r\n"
        );
        assert_eq!(s.event_classes(), Classes::CALL | Classes::AGENT);
        // Unknown names are ignored, as Asterisk's get_perm() ignores them.
        run(&mut s, &cfg, "Action: Events\nEventMask: call,bogus");
        assert_eq!(s.event_classes(), Classes::CALL);
        assert_eq!(
            reply(run(&mut s, &cfg, "Action: Events\nActionID: e-3")),
            "Response: Error\r\nActionID: e-3\r\nMessage: Invalid event mask\r\n\r\n"
        );
        assert_eq!(s.event_classes(), Classes::CALL);
        run(&mut s, &cfg, "Action: Events\nEventMask: on");
        assert_eq!(s.event_classes(), Classes::ALL);

        let list = reply(run(&mut s, &cfg, "Action: ListCommands\nActionID: lc"));
        assert!(
            list.starts_with("Response: Success\r\nActionID: lc\r\n"),
            "{list}"
        );
        assert!(
            list.contains("\r\nPing: Keepalive command. (Priv: <none>)\r\n"),
            "{list}"
        );
        assert!(
            list.contains("\r\nHangup: Hangup channel. (Priv: system,call,all)\r\n"),
            "{list}"
        );
    }

    #[test]
    fn client_masks_like_asterisk() {
        assert_eq!(client_mask(""), None);
        assert_eq!(client_mask("on"), Some(Classes::ALL));
        assert_eq!(client_mask("off"), Some(Classes::NONE));
        assert_eq!(client_mask("call"), Some(Classes::CALL));
        assert_eq!(client_mask("nonsense"), Some(Classes::NONE));
        assert_eq!(client_mask("2"), Some(Classes::CALL));
    }

    #[test]
    fn action_names_are_case_insensitive() {
        assert_eq!(action_classes("originate"), Some(Classes::ORIGINATE));
        assert_eq!(action_classes("QUEUESTATUS"), Some(Classes::NONE));
        assert_eq!(action_classes("Setvar"), None);
    }
}
