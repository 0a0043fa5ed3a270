//! Writing AMI: the banner, messages (`Key: Value\r\n` lines ended by an empty
//! line), actions with their `ActionID`, events with their `Privilege:`, and error
//! responses worded as Asterisk words them. Everything appends to a caller-owned
//! `Vec<u8>` and allocates nothing else.
//!
//! A value is written exactly as given after `Key: `, so an empty value is
//! `Key: \r\n` (with the space), as Asterisk writes it. A CR or LF inside a key or
//! a value would end the line there and let the rest start a new header, or a new
//! message (AMI injection): every CR and LF byte is dropped from keys and values
//! (`"a\r\nAction: Originate"` is written `aAction: Originate`, on one line).
//! Nothing else is changed: keys should not contain `:` (a reader splits at the
//! first one), and values are bytes (Asterisk passes Latin-1 through as it is).

use std::fmt;

use super::classes::Classes;

/// Builds one message in `out`: [`field`](Self::field) per header, then
/// [`finish`](Self::finish) writes the empty line that ends the message.
///
/// ```
/// use switchboard_proto::ami::MessageWriter;
/// let mut out = Vec::new();
/// let mut w = MessageWriter::action(&mut out, "Hangup", "gw-7");
/// w.field("Channel", "PJSIP/100-00000001").field_u64("Cause", 16);
/// w.finish();
/// assert_eq!(out, b"Action: Hangup\r\nActionID: gw-7\r\nChannel: PJSIP/100-00000001\r\nCause: 16\r\n\r\n");
/// ```
#[derive(Debug)]
pub struct MessageWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> MessageWriter<'a> {
    /// Starts a message at the end of `out` (nothing is written yet).
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Starts an action: `Action: <name>`, then `ActionID: <id>` unless `action_id`
    /// is empty (the client side; the server echoes the id in its response).
    pub fn action(out: &'a mut Vec<u8>, name: &str, action_id: &str) -> Self {
        let mut w = Self::new(out);
        w.field("Action", name);
        if !action_id.is_empty() {
            w.field("ActionID", action_id);
        }
        w
    }

    /// Starts an event as Asterisk does: `Event: <name>`, `Privilege: <classes>`
    /// (rendered as in [`Classes::privilege`]).
    pub fn event(out: &'a mut Vec<u8>, name: &str, privilege: Classes) -> Self {
        let mut w = Self::new(out);
        w.field("Event", name).field_display("Privilege", privilege);
        w
    }

    /// Starts a response: `Response: <status>` (`Success`, `Error`, `Goodbye`),
    /// then `ActionID: <id>` unless `action_id` is empty (Asterisk echoes the
    /// action's first `ActionID` only when it is not empty).
    pub fn response(out: &'a mut Vec<u8>, status: &str, action_id: &[u8]) -> Self {
        let mut w = Self::new(out);
        w.field("Response", status);
        if !action_id.is_empty() {
            w.field_bytes(b"ActionID", action_id);
        }
        w
    }

    /// Writes `key: value\r\n` (CR and LF dropped from both).
    pub fn field(&mut self, key: &str, value: &str) -> &mut Self {
        self.field_bytes(key.as_bytes(), value.as_bytes())
    }

    /// [`field`](Self::field) for keys and values that are bytes (a parsed
    /// message's fields, Latin-1 text).
    pub fn field_bytes(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.out.reserve(key.len() + value.len() + 4);
        push_single_line(self.out, key);
        self.out.extend_from_slice(b": ");
        push_single_line(self.out, value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Writes `key: <decimal>\r\n`.
    pub fn field_u64(&mut self, key: &str, value: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut n = value;
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.field_bytes(key.as_bytes(), &digits[at..])
    }

    /// Writes `key: <value formatted with Display>\r\n`, straight into the output
    /// (no intermediate String); CR and LF in the formatted text are dropped too.
    pub fn field_display(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        push_single_line(self.out, key.as_bytes());
        self.out.extend_from_slice(b": ");
        let mut sink = SingleLine(self.out);
        // Writing into a Vec cannot fail; a Display impl that errors leaves what
        // it wrote so far, which is still one well-formed line.
        let _ = fmt::write(&mut sink, format_args!("{value}"));
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Writes a line with no colon, as it is (CR and LF dropped). Only for
    /// re-serialising a parsed message that had such a line: a well-formed AMI
    /// header always has a key and a colon. A line that would be empty (nothing but
    /// CRs and LFs) is not written, since an empty line ends the message.
    pub fn raw_line(&mut self, line: &[u8]) -> &mut Self {
        if line.iter().any(|&b| b != b'\r' && b != b'\n') {
            push_single_line(self.out, line);
            self.out.extend_from_slice(b"\r\n");
        }
        self
    }

    /// Writes the raw output of an Asterisk 13 `Response: Follows`: each line (CR
    /// and LF dropped) and a bare `\n`, then `marker` and `\r\n`. A last line that
    /// itself ends with the marker's text is written glued to the marker (as
    /// Asterisk does when the output lacks its final newline), since on a line of
    /// its own it would read as the marker.
    pub(super) fn follows_output<'l>(
        &mut self,
        lines: impl Iterator<Item = &'l [u8]>,
        marker: &[u8],
    ) -> &mut Self {
        let mut lines = lines.peekable();
        while let Some(line) = lines.next() {
            push_single_line(self.out, line);
            if lines.peek().is_none() && line.ends_with(marker) {
                break;
            }
            self.out.push(b'\n');
        }
        self.out.extend_from_slice(marker);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Ends the message with its empty line.
    pub fn finish(self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Writes a message made of `fields`, in order, and its terminating empty line.
pub fn write_message(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
    let mut w = MessageWriter::new(out);
    for (key, value) in fields {
        w.field(key, value);
    }
    w.finish();
}

/// Writes the greeting a server sends on connect: `Asterisk Call Manager/<v>\r\n`,
/// with no empty line after it (AMI versions: Asterisk 16 is `5.0.x`, 22 is
/// `11.0.0`).
pub fn write_banner(out: &mut Vec<u8>, ami_version: &str) {
    out.extend_from_slice(b"Asterisk Call Manager/");
    push_single_line(out, ami_version.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes a whole action: `Action: <action>`, `ActionID: <id>` (unless empty),
/// then `fields` in order, then the empty line.
pub fn write_action(out: &mut Vec<u8>, action: &str, action_id: &str, fields: &[(&str, &str)]) {
    let mut w = MessageWriter::action(out, action, action_id);
    for (key, value) in fields {
        w.field(key, value);
    }
    w.finish();
}

/// Writes a `Login` action with a plain-text secret; `events` is the optional
/// `Events:` value (`on`, `off`, a class list).
pub fn write_login(
    out: &mut Vec<u8>,
    action_id: &str,
    username: &str,
    secret: &str,
    events: Option<&str>,
) {
    let mut w = MessageWriter::action(out, "Login", action_id);
    w.field("Username", username).field("Secret", secret);
    if let Some(events) = events {
        w.field("Events", events);
    }
    w.finish();
}

/// Writes the `Login` that follows a `Challenge` (`AuthType: MD5`): `key` is
/// [`md5_key`](super::md5_key)`(challenge, secret)`.
pub fn write_login_md5(
    out: &mut Vec<u8>,
    action_id: &str,
    username: &str,
    key: &str,
    events: Option<&str>,
) {
    let mut w = MessageWriter::action(out, "Login", action_id);
    w.field("AuthType", "MD5")
        .field("Username", username)
        .field("Key", key);
    if let Some(events) = events {
        w.field("Events", events);
    }
    w.finish();
}

/// Writes Asterisk's error response (`astman_send_error()`): `Response: Error`,
/// `ActionID` if `action_id` is not empty, `Message: <message>`, empty line.
pub fn write_error(out: &mut Vec<u8>, action_id: &[u8], message: &str) {
    let mut w = MessageWriter::response(out, "Error", action_id);
    w.field("Message", message);
    w.finish();
}

/// Writes a `Command` response as Asterisk 13 and older did: `Response: Follows`,
/// `Privilege: Command`, `ActionID` (if not empty), the command's raw output,
/// then `--END COMMAND--` and the empty line. Each output line is written with a
/// bare `\n` (as the CLI writes it); CR bytes are dropped, and a final line break
/// is added if `output` lacks one, so the marker always starts its own line.
pub fn write_command_follows(out: &mut Vec<u8>, action_id: &[u8], output: &[u8]) {
    let mut w = MessageWriter::response(out, "Follows", b"");
    w.field("Privilege", "Command");
    if !action_id.is_empty() {
        w.field_bytes(b"ActionID", action_id);
    }
    out.extend(output.iter().copied().filter(|&b| b != b'\r'));
    if output
        .iter()
        .rev()
        .find(|&&b| b != b'\r')
        .is_some_and(|&b| b != b'\n')
    {
        out.push(b'\n');
    }
    out.extend_from_slice(b"--END COMMAND--\r\n\r\n");
}

/// Appends `bytes` minus every CR and LF.
fn push_single_line(out: &mut Vec<u8>, bytes: &[u8]) {
    if has_line_break(bytes) {
        out.extend(bytes.iter().copied().filter(|&b| b != b'\r' && b != b'\n'));
    } else {
        out.extend_from_slice(bytes);
    }
}

/// Whether `bytes` holds a CR or an LF: eight bytes per step (a value is checked on every
/// field written, the hot path of event encoding), the tail byte by byte.
fn has_line_break(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is zero iff its high bit is set in `(v - ONES) & !v & HIGHS`: exact
    // for "any byte is zero", which is all that is asked here.
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let (words, tail) = bytes.as_chunks::<8>();
    words.iter().any(|w| {
        let v = u64::from_ne_bytes(*w);
        has_zero(v ^ (ONES * u64::from(b'\r'))) || has_zero(v ^ (ONES * u64::from(b'\n')))
    }) || tail.iter().any(|&b| b == b'\r' || b == b'\n')
}

/// A `fmt::Write` into a Vec that drops CR and LF.
struct SingleLine<'a>(&'a mut Vec<u8>);

impl fmt::Write for SingleLine<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_single_line(self.0, s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_break_scan_agrees_with_a_byte_loop_at_every_position_and_length() {
        for len in 0..40 {
            for pos in 0..len {
                for b in [b'\r', b'\n'] {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    assert!(has_line_break(&v), "len {len} pos {pos} byte {b}");
                }
            }
            // Bytes next to CR/LF in value, and high bytes, are not line breaks.
            let v: Vec<u8> = (0..len)
                .map(|i| [0x0b, 0x0c, 0x0e, 0x09, 0x8d, 0xff, 0][i % 7])
                .collect();
            assert!(!has_line_break(&v), "len {len}: {v:?}");
        }
    }

    #[test]
    fn writes_fields_and_the_empty_line() {
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out);
        w.field("Event", "Hangup")
            .field("Privilege", "call,all")
            .field("AccountCode", "")
            .field_u64("Cause", 16)
            .field_u64("Zero", 0)
            .field_u64("Max", u64::MAX)
            .field_display("Seconds", 1.5)
            .field_display("Privilege", Classes::CALL | Classes::AGENT);
        w.finish();
        assert_eq!(
            out,
            b"Event: Hangup\r\nPrivilege: call,all\r\nAccountCode: \r\nCause: 16\r\nZero: 0\r\n\
              Max: 18446744073709551615\r\nSeconds: 1.5\r\nPrivilege: call,agent,all\r\n\r\n"
        );
    }

    #[test]
    fn appends_to_what_is_there() {
        let mut out = b"x".to_vec();
        write_message(&mut out, &[("Response", "Success"), ("Ping", "Pong")]);
        assert_eq!(out, b"xResponse: Success\r\nPing: Pong\r\n\r\n");
        let mut out = Vec::new();
        write_message(&mut out, &[]);
        assert_eq!(out, b"\r\n");
    }

    #[test]
    fn cr_and_lf_never_split_a_message() {
        let mut out = Vec::new();
        write_message(
            &mut out,
            &[
                (
                    "CallerIDName",
                    "evil\r\n\r\nAction: Originate\r\nApplication: System",
                ),
                ("Ke\ny", "a\rb\nc"),
            ],
        );
        assert_eq!(
            out,
            b"CallerIDName: evilAction: OriginateApplication: System\r\nKey: abc\r\n\r\n"
        );
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out);
        w.field_display("D", "a\r\nb")
            .raw_line(b"x\ny")
            .raw_line(b"\r")
            .raw_line(b"")
            .raw_line(b"\r\n");
        w.finish();
        assert_eq!(out, b"D: ab\r\nxy\r\n\r\n");
        let mut out = Vec::new();
        write_banner(&mut out, "5.0.4\r\n\r\nResponse: Success");
        assert_eq!(out, b"Asterisk Call Manager/5.0.4Response: Success\r\n");
    }

    #[test]
    fn banner_has_no_empty_line_after_it() {
        let mut out = Vec::new();
        write_banner(&mut out, "11.0.0");
        assert_eq!(out, b"Asterisk Call Manager/11.0.0\r\n");
    }

    #[test]
    fn actions_events_and_responses() {
        let mut out = Vec::new();
        write_action(
            &mut out,
            "Originate",
            "gw-1",
            &[("Channel", "Local/100@from-internal"), ("Async", "true")],
        );
        assert_eq!(
            out,
            b"Action: Originate\r\nActionID: gw-1\r\nChannel: Local/100@from-internal\r\nAsync: true\r\n\r\n"
        );
        let mut out = Vec::new();
        write_action(&mut out, "Ping", "", &[]);
        assert_eq!(out, b"Action: Ping\r\n\r\n");

        let mut out = Vec::new();
        let mut w = MessageWriter::event(&mut out, "Hangup", Classes::CALL);
        w.field("Cause", "16");
        w.finish();
        assert_eq!(
            out,
            b"Event: Hangup\r\nPrivilege: call,all\r\nCause: 16\r\n\r\n"
        );

        let mut out = Vec::new();
        let mut w = MessageWriter::response(&mut out, "Success", b"p-1");
        w.field("Ping", "Pong");
        w.finish();
        assert_eq!(
            out,
            b"Response: Success\r\nActionID: p-1\r\nPing: Pong\r\n\r\n"
        );

        let mut out = Vec::new();
        write_error(&mut out, b"", "Missing action in request");
        assert_eq!(
            out,
            b"Response: Error\r\nMessage: Missing action in request\r\n\r\n"
        );
        let mut out = Vec::new();
        write_error(
            &mut out,
            b"long-1",
            "Failed to parse message: line too long",
        );
        assert_eq!(
            out,
            b"Response: Error\r\nActionID: long-1\r\nMessage: Failed to parse message: line too long\r\n\r\n"
        );
    }

    #[test]
    fn logins() {
        let mut out = Vec::new();
        write_login(&mut out, "l-1", "admin", "amp111", Some("off"));
        assert_eq!(
            out,
            b"Action: Login\r\nActionID: l-1\r\nUsername: admin\r\nSecret: amp111\r\nEvents: off\r\n\r\n"
        );
        let mut out = Vec::new();
        write_login_md5(&mut out, "l-2", "admin", "0123abcd", None);
        assert_eq!(
            out,
            b"Action: Login\r\nActionID: l-2\r\nAuthType: MD5\r\nUsername: admin\r\nKey: 0123abcd\r\n\r\n"
        );
    }

    #[test]
    fn command_follows_as_asterisk_13() {
        let mut out = Vec::new();
        write_command_follows(&mut out, b"c-1", b"line 1\nline 2\n");
        assert_eq!(
            out,
            b"Response: Follows\r\nPrivilege: Command\r\nActionID: c-1\r\nline 1\nline 2\n--END COMMAND--\r\n\r\n"
        );
        let mut out = Vec::new();
        write_command_follows(&mut out, b"", b"no newline\r");
        assert_eq!(
            out,
            b"Response: Follows\r\nPrivilege: Command\r\nno newline\n--END COMMAND--\r\n\r\n"
        );
        let mut out = Vec::new();
        write_command_follows(&mut out, b"", b"a\n\r");
        assert_eq!(
            out,
            b"Response: Follows\r\nPrivilege: Command\r\na\n--END COMMAND--\r\n\r\n"
        );
        let mut out = Vec::new();
        write_command_follows(&mut out, b"", b"");
        assert_eq!(
            out,
            b"Response: Follows\r\nPrivilege: Command\r\n--END COMMAND--\r\n\r\n"
        );
    }
}
