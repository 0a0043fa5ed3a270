//! The streaming, zero-copy AMI reader, for both ends of a session.
//!
//! [`Parser::parse`] is handed the unconsumed bytes of the caller's read buffer and
//! returns how many of them it consumed with at most one [`Item`]: the banner, a
//! [`Message`] (fields borrowed from the buffer, in order, repeated keys kept), or,
//! in the server role, a [`Rejection`] to answer with Asterisk's error response.
//! The caller drops the consumed bytes, appends what it reads next and calls again
//! with the rest: a message split anywhere parses exactly as if it came whole. The
//! field index lives in the parser and is reused, so steady-state parsing allocates
//! nothing; the scan resumes where it stopped, so a message arriving byte by byte
//! costs what it costs whole.
//!
//! # Lines and fields (both roles)
//!
//! - A line ends at LF; a CR right before it is dropped. Other CRs are data.
//!   `\r\n`, bare `\n` and mixtures of the two are all accepted.
//! - A message ends at an empty line.
//! - A field is split at the FIRST colon: `Variable: BAZ=a:b=c` has key `Variable`,
//!   value `BAZ=a:b=c`. A line without a colon is kept as a field whose key is the
//!   whole line and whose value is empty ([`Field::has_colon`] is false); lookups by
//!   key never match it (Asterisk's `astman_get_header` doesn't either).
//! - Keys are compared ASCII case-insensitively and are never trimmed (`Action :`
//!   is key `Action `, as for Asterisk).
//! - Values keep trailing spaces (Asterisk writes `AccountCode: ` for an empty value
//!   and pads `Command` output). Leading space depends on who wrote the line:
//!   - client role (reading Asterisk): exactly one space after the colon is dropped,
//!     the separator Asterisk always writes. `Key:Value` gives `Value`, and the
//!     indentation of `Output:    Members:` survives as `   Members:`.
//!   - server role (reading a client's action, as Asterisk does): every leading
//!     byte up to 0x20 is dropped (`ast_skip_blanks()`), so `Action:   Ping` is
//!     `Ping`.
//! - Bytes are bytes: values need not be UTF-8 (a CallerIDName in Latin-1 is
//!   common). [`Field::value`] and [`Message::get`] give the raw bytes;
//!   [`Field::value_str`], [`Message::get_str`] and [`decode_text`] give text, never
//!   failing and never losing a byte: UTF-8 is borrowed as is, anything else is
//!   read as ISO-8859-1; [`Field::value_utf8`] is the strict alternative.
//!
//! # Client role ([`Parser::client`], reading a server's stream)
//!
//! - The session starts with the banner `Asterisk Call Manager/<version>` (no empty
//!   line after it), returned as [`Item::Banner`]; anything else is
//!   [`ParseError::BadBanner`]. [`Parser::skip_banner`] for a stream whose banner
//!   was read elsewhere; [`parse_banner`] is the same check as a free function.
//! - Empty lines between messages are skipped (Asterisk 22's Park response ends
//!   `Message: Park successful\n\r\n\r\n`; Asterisk 16 built with the test
//!   framework follows some `TestEvent`s with a spare `\r\n`).
//! - A message is classified by its first line ([`MessageKind`]): an
//!   `OriginateResponse` event is an event even though it has a `Response:` field.
//! - Asterisk 13's `Command` answer, `Response: Follows`, its `Privilege:` and
//!   `ActionID:` headers, then the raw CLI output up to `--END COMMAND--`: the
//!   output lines (empty ones included) are [`Message::follows_output`], and the
//!   message ends at the empty line after the marker (a marker glued to the last
//!   output line, when the output lacked its final newline, is recognised). Asterisk
//!   14+ answers with `Output:` fields, which are ordinary repeated fields;
//!   [`Message::command_output`] reads either form.
//! - [`Parser::skip_events`]: events a reader drops on sight (by name) come with
//!   their first field only; their lines are framed and bounded, not split.
//! - Limits: a line longer than [`CLIENT_MAX_LINE`] bytes (terminator included) is
//!   [`ParseError::LineTooLong`], a message longer than [`CLIENT_MAX_MESSAGE`] is
//!   [`ParseError::MessageTooLong`] (both adjustable with
//!   [`Parser::with_client_limits`]). Real messages are ~350 bytes, 2.7 KB at most in
//!   the captures. These errors end the session: nothing that follows can be trusted
//!   to start at a message boundary.
//!
//! # Server role ([`Parser::server`], reading a client's actions as Asterisk does)
//!
//! Asterisk's `get_input()`/`do_message()` (main/manager.c) are mirrored, so that
//! the simulator answers malformed input exactly as the PBX does. Nothing is an
//! error of the session: every empty line ends a message, which yields either a
//! [`Message`] with a non-empty `Action:` or a [`Rejection`] whose
//! [`Rejection::write_response`] writes Asterisk's reply. Resynchronisation is
//! Asterisk's:
//!
//! - Line too long: Asterisk reads a line into a 1024-byte buffer. When the first
//!   [`SERVER_MAX_LINE`] bytes of a line hold no LF, their first 1023 bytes are
//!   discarded and the 1024th starts a new line (which, if the line goes on, is
//!   treated the same way). The rest of the long line is therefore read as a header
//!   line, the message goes on to its empty line, and is then answered
//!   "Failed to parse message: line too long", with the `ActionID` of its headers
//!   (before or after the long line). A line whose CR is its 1024th byte leaves
//!   that CR to pair with the LF as an empty line: it ends the message.
//! - Too many lines: headers past the 128th ([`SERVER_MAX_HEADERS`]) are dropped and
//!   the message is answered "Too many lines in message or allocation failure" at
//!   its empty line, with the `ActionID` among its first 128 headers. As in
//!   Asterisk, when a message has both faults only this one is answered and the
//!   line-too-long state survives it: the NEXT message is then answered
//!   "Failed to parse message: line too long" whatever it holds.
//! - No `Action:` (no field `Action` with a non-empty value, anywhere in the
//!   message): "Missing action in request". That includes an empty line on its own:
//!   Asterisk answers every stray empty line a client sends with this error.
//! - A NUL byte ends a line's content there (Asterisk keeps lines as C strings), so
//!   a line starting with NUL is an empty line.
//!
//! While a rejected message goes on, the parser consumes (and the caller may drop)
//! what it has read, keeping only the `ActionID` (copied into a reused buffer), so
//! memory stays bounded whatever a client sends. A message being collected is
//! bounded too: 128 lines of at most 1024 bytes.

use std::borrow::Cow;
use std::fmt;
use std::str::Utf8Error;

use thiserror::Error;

use super::classes::Classes;
use super::names::NameSet;
use super::writer::{MessageWriter, write_error};
use crate::{scan, swar};

/// Server role: the longest line, terminator included (Asterisk's `inbuf` holds
/// 1024 bytes).
pub const SERVER_MAX_LINE: usize = 1024;

/// Server role: the most header lines of one message (`AST_MAX_MANHEADERS`).
pub const SERVER_MAX_HEADERS: usize = 128;

/// Client role default: the longest line, terminator included. Asterisk puts no cap
/// on what it writes; the longest line in the captures is 433 bytes.
pub const CLIENT_MAX_LINE: usize = 64 * 1024;

/// Client role default: the longest message, terminator included (a `Command`
/// response with a long output is the biggest thing Asterisk sends as one message).
pub const CLIENT_MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// What a server sends first, before its AMI version.
pub const BANNER_PREFIX: &str = "Asterisk Call Manager/";

/// The line that ends an Asterisk 13 `Response: Follows` command output.
pub const END_COMMAND: &[u8] = b"--END COMMAND--";

/// Which end of the session we are, which decides what we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We are the PBX: we read a client's actions (`ami-sim`).
    Server,
    /// We are the client: we read the PBX's banner, responses and events.
    Client,
}

/// Client role: the stream is not AMI, or breaks a limit. The session should be
/// closed; the parser's state afterwards is unspecified (it does not panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum ParseError {
    /// The first line is not `Asterisk Call Manager/<version>` (or not UTF-8).
    #[error("not an AMI banner")]
    BadBanner,
    /// A line is longer than the limit (bytes, terminator included).
    #[error("AMI line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// A message is longer than the limit (bytes, terminator included).
    #[error("AMI message longer than {limit} bytes")]
    MessageTooLong { limit: usize },
}

/// Server role: why a client's message is answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestError {
    /// A line of the message was longer than [`SERVER_MAX_LINE`].
    LineTooLong,
    /// The message had more than [`SERVER_MAX_HEADERS`] lines.
    TooManyLines,
    /// The message has no non-empty `Action:` field.
    MissingAction,
}

impl RequestError {
    /// The `Message:` of Asterisk's error response, word for word.
    pub const fn message(self) -> &'static str {
        match self {
            Self::LineTooLong => "Failed to parse message: line too long",
            Self::TooManyLines => "Too many lines in message or allocation failure",
            Self::MissingAction => "Missing action in request",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Server role: a message Asterisk would not run, to be answered with
/// [`write_response`](Self::write_response). Parsing goes on with the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection<'a> {
    pub error: RequestError,
    /// The value of the message's first `ActionID` field (as Asterisk finds it,
    /// among the headers it kept), if it has one. May be empty.
    pub action_id: Option<&'a [u8]>,
}

impl Rejection<'_> {
    /// Writes Asterisk's answer: `Response: Error`, `ActionID` (when present and
    /// not empty), `Message: <error>`, empty line.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        write_error(
            out,
            self.action_id.unwrap_or_default(),
            self.error.message(),
        );
    }
}

/// How a message's first line classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `Event: <name>` (events, event-list items, `OriginateResponse`).
    Event,
    /// `Response: <Success|Error|Goodbye|Follows>`.
    Response,
    /// `Action: <name>` (what a client sends).
    Action,
    /// Anything else: a field-only message.
    Other,
}

/// What [`Parser::parse`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// Client role, first item: the banner's AMI version (`5.0.4`, `11.0.0`).
    Banner(&'a str),
    /// A complete message (server role: an action with a non-empty `Action:`).
    Message(Message<'a>),
    /// Server role: a message to answer with Asterisk's error response.
    Rejected(Rejection<'a>),
}

impl Item<'_> {
    /// Copies the item out of the buffer and the parser.
    pub fn into_owned(self) -> OwnedItem {
        match self {
            Self::Banner(version) => OwnedItem::Banner(version.to_owned()),
            Self::Message(message) => OwnedItem::Message(message.into_owned()),
            Self::Rejected(r) => OwnedItem::Rejected {
                error: r.error,
                action_id: r.action_id.map(<[u8]>::to_vec),
            },
        }
    }
}

/// An [`Item`] that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedItem {
    Banner(String),
    Message(OwnedMessage),
    Rejected {
        error: RequestError,
        action_id: Option<Vec<u8>>,
    },
}

/// Where a field sits in its message: offsets from the message's first byte. A
/// line without a colon has `value_start == key_end` (there is no colon to skip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    key_start: u32,
    key_end: u32,
    value_start: u32,
    value_end: u32,
}

impl Span {
    #[inline]
    fn has_colon(self) -> bool {
        self.value_start > self.key_end
    }

    #[inline]
    fn field(self, raw: &[u8]) -> Field<'_> {
        let key = raw
            .get(self.key_start as usize..self.key_end as usize)
            .unwrap_or_default();
        let value = raw
            .get(self.value_start as usize..self.value_end as usize)
            .unwrap_or_default();
        Field {
            key,
            value,
            colon: self.has_colon(),
        }
    }
}

/// An output line of a `Response: Follows`: offsets from the message's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    start: u32,
    end: u32,
}

impl Line {
    fn text(self, raw: &[u8]) -> &[u8] {
        raw.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// One `Key: Value` line of a message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Field<'a> {
    key: &'a [u8],
    value: &'a [u8],
    colon: bool,
}

impl<'a> Field<'a> {
    /// The bytes before the first colon (the whole line if it has none).
    #[inline]
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// The bytes after the first colon and its leading space (see the module
    /// docs); empty for a line without a colon.
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// False for a line without a colon (not a header in AMI's sense).
    #[inline]
    pub fn has_colon(&self) -> bool {
        self.colon
    }

    /// True if this is a header named `key` (ASCII case-insensitive).
    #[inline]
    pub fn is(&self, key: &str) -> bool {
        self.colon && swar::eq_ignore_ascii_case(self.key, key.as_bytes())
    }

    /// The key as text ([`decode_text`]).
    pub fn key_str(&self) -> Cow<'a, str> {
        decode_text(self.key)
    }

    /// The value as text: UTF-8 borrowed, anything else read as Latin-1
    /// ([`decode_text`]).
    pub fn value_str(&self) -> Cow<'a, str> {
        decode_text(self.value)
    }

    /// The value if it is UTF-8.
    pub fn value_utf8(&self) -> Result<&'a str, Utf8Error> {
        std::str::from_utf8(self.value)
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.colon {
            write!(f, "{:?}: {:?}", self.key_str(), self.value_str())
        } else {
            write!(f, "{:?} (no colon)", self.key_str())
        }
    }
}

/// Text from AMI bytes that never fails and never loses a byte: valid UTF-8 is
/// borrowed as it is; anything else is decoded as ISO-8859-1 (each byte is the
/// code point of the same value), which is what a non-UTF-8 CallerIDName usually
/// is, and from which the original bytes can be recovered.
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// A complete message, borrowing the input buffer and the parser's field index.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    /// From the first byte of the first line to the end of the empty line.
    raw: &'a [u8],
    fields: &'a [Span],
    /// `Response: Follows` output lines.
    output: &'a [Line],
    /// How many fields precede the output lines (all of them if no output).
    output_at: usize,
    follows: bool,
}

impl<'a> Message<'a> {
    /// The message's bytes as received, from its first line to its empty line
    /// included (empty lines before it are not part of it).
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The number of fields (a legacy command output's lines are not fields).
    #[inline]
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True if the message has no field (possible only for a `Rejection`).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The `index`-th field, in the order received.
    #[inline]
    pub fn field(&self, index: usize) -> Option<Field<'a>> {
        self.fields.get(index).map(|s| s.field(self.raw))
    }

    /// The fields, in the order received, repeated keys included.
    #[inline]
    pub fn fields(&self) -> Fields<'a> {
        Fields {
            raw: self.raw,
            spans: self.fields.iter(),
        }
    }

    /// The classification by the first line: `Event:`, `Response:`, `Action:`
    /// (keys ASCII case-insensitive), or anything else.
    #[inline]
    pub fn kind(&self) -> MessageKind {
        match self.field(0) {
            Some(f) if f.is("Event") => MessageKind::Event,
            Some(f) if f.is("Response") => MessageKind::Response,
            Some(f) if f.is("Action") => MessageKind::Action,
            _ => MessageKind::Other,
        }
    }

    /// The value of the first line: the event name, the response status or the
    /// action name (empty for a message of kind `Other`).
    #[inline]
    pub fn name(&self) -> &'a [u8] {
        match self.kind() {
            MessageKind::Other => b"",
            _ => self.field(0).map(|f| f.value).unwrap_or_default(),
        }
    }

    /// The event name if the first line is `Event:`.
    #[inline]
    pub fn event(&self) -> Option<&'a [u8]> {
        (self.kind() == MessageKind::Event).then(|| self.name())
    }

    /// The status if the first line is `Response:` (an `OriginateResponse` event is
    /// not a response; its `Response` field is `get("Response")`).
    pub fn response(&self) -> Option<&'a [u8]> {
        (self.kind() == MessageKind::Response).then(|| self.name())
    }

    /// The action name as Asterisk finds it: the first `Action` field with a
    /// non-empty value, wherever it is in the message.
    pub fn action(&self) -> Option<&'a [u8]> {
        self.fields()
            .find(|f| f.is("Action") && !f.value.is_empty())
            .map(|f| f.value)
    }

    /// The first `ActionID` field's value (the first wins when it repeats).
    pub fn action_id(&self) -> Option<&'a [u8]> {
        self.get("ActionID")
    }

    /// The first field named `key` (ASCII case-insensitive), as bytes.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        let key = key.as_bytes();
        self.fields.iter().find_map(|s| {
            let f = s.field(self.raw);
            (f.colon && swar::eq_ignore_ascii_case(f.key, key)).then_some(f.value)
        })
    }

    /// [`get`](Self::get) as text ([`decode_text`]).
    pub fn get_str(&self, key: &str) -> Option<Cow<'a, str>> {
        self.get(key).map(decode_text)
    }

    /// Every field named `key`, in order (`Variable`, `Output`, a UserEvent's two
    /// `Uniqueid`s).
    pub fn get_all<'k>(&self, key: &'k str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'k> {
        self.fields().filter(move |f| f.is(key)).map(|f| f.value)
    }

    /// The classes of the `Privilege:` field ([`Classes::from_privilege`]), if any.
    pub fn privilege(&self) -> Option<Classes> {
        self.get("Privilege")
            .map(|v| Classes::from_privilege(&decode_text(v)))
    }

    /// True for an Asterisk 13 `Response: Follows` command answer.
    pub fn is_follows(&self) -> bool {
        self.follows
    }

    /// The raw output lines of a `Response: Follows` (empty otherwise), without
    /// their line breaks or the `--END COMMAND--` marker.
    pub fn follows_output(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + use<'a> {
        let raw = self.raw;
        self.output.iter().map(move |l| l.text(raw))
    }

    /// A `Command`'s output lines in either form: the raw lines of an Asterisk 13
    /// `Response: Follows`, or the values of the `Output:` fields of Asterisk 14+.
    pub fn command_output(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let legacy = self.follows.then(|| self.follows_output());
        let modern = (!self.follows).then(|| self.get_all("Output"));
        legacy
            .into_iter()
            .flatten()
            .chain(modern.into_iter().flatten())
    }

    /// Writes the message back in canonical form with [`MessageWriter`]:
    /// `Key: Value\r\n` per field (a line without colon as it was), then the empty
    /// line; a `Response: Follows` gets its output lines (`\n`-terminated) and
    /// marker back in place. For a message Asterisk wrote (CRLF, one space after
    /// each colon) this reproduces [`raw`](Self::raw) byte for byte.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut w = MessageWriter::new(out);
        let write_fields = |w: &mut MessageWriter<'_>, fields: &[Span]| {
            for span in fields {
                let f = span.field(self.raw);
                if f.colon {
                    w.field_bytes(f.key, f.value);
                } else {
                    w.raw_line(f.key);
                }
            }
        };
        if self.follows {
            let (head, tail) = self.fields.split_at(self.output_at.min(self.fields.len()));
            write_fields(&mut w, head);
            w.follows_output(self.follows_output(), END_COMMAND);
            write_fields(&mut w, tail);
        } else {
            write_fields(&mut w, self.fields);
        }
        w.finish();
    }

    /// Copies the message out of the buffer and the parser.
    pub fn into_owned(self) -> OwnedMessage {
        OwnedMessage {
            raw: self.raw.to_vec(),
            fields: self.fields.to_vec(),
            output: self.output.to_vec(),
            output_at: self.output_at,
            follows: self.follows,
        }
    }
}

/// Two messages are equal when their fields (keys, values, colons), output lines
/// and form are; their raw bytes may differ (line endings, spaces after colons).
impl PartialEq for Message<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.follows == other.follows
            && self.output_at == other.output_at
            && self.fields().eq(other.fields())
            && self.follows_output().eq(other.follows_output())
    }
}

impl Eq for Message<'_> {}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("fields", &DebugList(|| self.fields()));
        if self.follows {
            d.field(
                "follows_output",
                &DebugList(|| self.follows_output().map(decode_text)),
            );
        }
        d.finish()
    }
}

struct DebugList<F>(F);

impl<F, I> fmt::Debug for DebugList<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries((self.0)()).finish()
    }
}

/// The fields of a [`Message`], in order.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    raw: &'a [u8],
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    #[inline]
    fn next(&mut self) -> Option<Field<'a>> {
        self.spans.next().map(|s| s.field(self.raw))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Fields<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.spans.next_back().map(|s| s.field(self.raw))
    }
}

impl ExactSizeIterator for Fields<'_> {}

/// A [`Message`] that owns its bytes (see [`Message::into_owned`]).
#[derive(Clone)]
pub struct OwnedMessage {
    raw: Vec<u8>,
    fields: Vec<Span>,
    output: Vec<Line>,
    output_at: usize,
    follows: bool,
}

impl OwnedMessage {
    /// The message, borrowing `self`.
    pub fn message(&self) -> Message<'_> {
        Message {
            raw: &self.raw,
            fields: &self.fields,
            output: &self.output,
            output_at: self.output_at,
            follows: self.follows,
        }
    }
}

/// Equal when the messages are ([`Message`]'s equality: raw bytes aside).
impl PartialEq for OwnedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.message() == other.message()
    }
}

impl Eq for OwnedMessage {}

impl fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message().fmt(f)
    }
}

/// Client role, `Response: Follows`: where the parser is in the legacy form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follows {
    /// Not a `Response: Follows`.
    No,
    /// Reading its `Privilege:`/`ActionID:` headers.
    Headers,
    /// Reading raw output lines until the marker.
    Output,
    /// Past the marker: ordinary fields until the empty line.
    Done,
}

/// The streaming AMI reader (see the module docs).
///
/// Contract: after a call that returned `(consumed, _)`, the next call gets the
/// bytes that followed the consumed ones (`buf[consumed..]`), plus whatever has
/// been read since. The parser resumes its scan of an incomplete message from
/// where it stopped, trusting that those bytes did not change.
#[derive(Debug, Clone)]
pub struct Parser {
    role: Role,
    max_line: usize,
    max_message: usize,
    awaiting_banner: bool,
    /// The previous call returned a message or rejection: start afresh.
    done: bool,
    /// Bytes of the message in progress (from the start of the next buffer) that
    /// form complete lines, already processed.
    scanned: usize,
    /// Bytes (>= `scanned`) known to hold no LF after `scanned`.
    searched: usize,
    /// Lines of the message in progress: client role, fields and output lines;
    /// server role, the header lines Asterisk counts (at most 128).
    lines: usize,
    fields: Vec<Span>,
    output: Vec<Line>,
    output_at: usize,
    follows: Follows,
    /// Server role: more than 128 header lines (Asterisk's `hdr_loss`).
    hdr_loss: bool,
    /// Server role: the message will be rejected and its bytes are being consumed
    /// as they are read; only its `ActionID` is kept, in `owned_id`.
    discarding: bool,
    owned_id: Vec<u8>,
    owned_id_set: bool,
    /// Server role: Asterisk's session-wide `s->parsing == MESSAGE_LINE_TOO_LONG`.
    line_too_long: bool,
    /// Client role: events returned with their first field only (see
    /// [`Parser::skip_events`]), and whether the message in progress is one.
    skip: NameSet,
    skipping: bool,
}

impl Parser {
    /// A parser for `role`: [`client`](Self::client) or [`server`](Self::server).
    pub fn new(role: Role) -> Self {
        Self {
            role,
            max_line: CLIENT_MAX_LINE,
            max_message: CLIENT_MAX_MESSAGE,
            awaiting_banner: role == Role::Client,
            done: false,
            scanned: 0,
            searched: 0,
            lines: 0,
            fields: Vec::new(),
            output: Vec::new(),
            output_at: 0,
            follows: Follows::No,
            hdr_loss: false,
            discarding: false,
            owned_id: Vec::new(),
            owned_id_set: false,
            line_too_long: false,
            skip: NameSet::default(),
            skipping: false,
        }
    }

    /// Client role: reads the banner, then the server's responses and events.
    pub fn client() -> Self {
        Self::new(Role::Client)
    }

    /// Server role: reads a client's actions as Asterisk does.
    pub fn server() -> Self {
        Self::new(Role::Server)
    }

    /// Client role: the banner has been read elsewhere; start with messages.
    #[must_use]
    pub fn skip_banner(mut self) -> Self {
        self.awaiting_banner = false;
        self
    }

    /// Client role: an event named in `names` (ASCII case-insensitive) is returned
    /// with its first field only (`Event: <name>`): its other lines are framed and
    /// checked against the limits, not split into fields. For a reader that drops
    /// these events on sight (the engine does so with chatty events that change
    /// nothing it keeps, such as `VarSet` and `CEL`).
    #[must_use]
    pub fn skip_events<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.skip = NameSet::new(names.into_iter().map(|n| n.as_ref().as_bytes().to_vec()));
        self
    }

    /// Client role: other bounds on a line and a message (bytes, terminators
    /// included; at least 2 and at most `u32::MAX`). No effect in the server role,
    /// whose limits are Asterisk's.
    #[must_use]
    pub fn with_client_limits(mut self, max_line: usize, max_message: usize) -> Self {
        let cap = u32::MAX as usize;
        self.max_line = max_line.clamp(2, cap);
        self.max_message = max_message.clamp(2, cap);
        self
    }

    /// The role this parser reads for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Consumes a prefix of `buf` and returns its length with at most one item.
    /// `(n, None)` means more input is needed: drop the `n` consumed bytes (empty
    /// lines between messages, or bytes of a message being rejected), keep the rest
    /// and call again once more bytes have arrived. `(n, Some(item))`: the item
    /// borrows `buf` and the parser; drop `n` bytes and call again for the next one.
    ///
    /// Errors happen in the client role only and end the session.
    pub fn parse<'a>(&'a mut self, buf: &'a [u8]) -> Result<(usize, Option<Item<'a>>), ParseError> {
        if self.done || self.searched > buf.len() {
            self.reset_message();
        }
        match self.role {
            Role::Client if self.awaiting_banner => {
                Ok(match parse_banner_limited(buf, self.max_line)? {
                    None => (0, None),
                    Some((version, n)) => {
                        self.awaiting_banner = false;
                        (n, Some(Item::Banner(version)))
                    }
                })
            }
            Role::Client => self.parse_client(buf),
            Role::Server => Ok(self.parse_server(buf)),
        }
    }

    fn reset_message(&mut self) {
        self.done = false;
        self.scanned = 0;
        self.searched = 0;
        self.lines = 0;
        self.fields.clear();
        self.output.clear();
        self.output_at = 0;
        self.follows = Follows::No;
        self.hdr_loss = false;
        self.discarding = false;
        self.owned_id_set = false;
        self.skipping = false;
    }

    fn message<'a>(&'a self, raw: &'a [u8]) -> Message<'a> {
        Message {
            raw,
            fields: &self.fields,
            output: &self.output,
            output_at: if self.follows == Follows::No {
                self.fields.len()
            } else {
                self.output_at
            },
            follows: self.follows != Follows::No,
        }
    }

    fn parse_client<'a>(
        &'a mut self,
        buf: &'a [u8],
    ) -> Result<(usize, Option<Item<'a>>), ParseError> {
        // Where the message starts in `buf`: moves past empty lines while no line of
        // a message has been read.
        let mut start = 0;
        loop {
            let msg = buf.get(start..).unwrap_or_default();
            // The common case, an ordinary message read from a line start, takes the
            // fast path for its field lines; it hands back the LF of the line it
            // stopped at when it found one (an empty line).
            let fast = matches!(self.follows, Follows::No | Follows::Done)
                && self.searched == self.scanned;
            let found = if fast { self.client_fields(msg)? } else { None };
            let line_start = self.scanned;
            let from = self.searched.max(line_start);
            let Some(lf) = found.or_else(|| {
                find_byte(msg.get(from..).unwrap_or_default(), b'\n').map(|i| from + i)
            }) else {
                // No complete line: fail as soon as the line is sure to be too long.
                if msg.len() - line_start >= self.max_line {
                    return Err(ParseError::LineTooLong {
                        limit: self.max_line,
                    });
                }
                self.searched = msg.len();
                return Ok((start, None));
            };
            let end = lf + 1;
            if end - line_start > self.max_line {
                return Err(ParseError::LineTooLong {
                    limit: self.max_line,
                });
            }
            if end > self.max_message {
                return Err(ParseError::MessageTooLong {
                    limit: self.max_message,
                });
            }
            let content_end = strip_cr(msg, line_start, lf);
            self.scanned = end;
            self.searched = end;
            if content_end == line_start {
                match self.follows {
                    Follows::Headers | Follows::Output => {
                        self.enter_output();
                        self.output.push(line(line_start, line_start));
                        self.lines += 1;
                    }
                    Follows::No | Follows::Done if self.lines == 0 => {
                        // An empty line between messages.
                        start += end;
                        self.scanned = 0;
                        self.searched = 0;
                    }
                    Follows::No | Follows::Done => {
                        self.done = true;
                        let raw = msg.get(..end).unwrap_or_default();
                        let this = &*self;
                        return Ok((start + end, Some(Item::Message(this.message(raw)))));
                    }
                }
                continue;
            }
            self.client_line(msg, line_start, content_end);
        }
    }

    /// Client role, the fast path: the field lines of an ordinary message (not in
    /// a `Response: Follows`), from a line start (`searched == scanned`) on.
    ///
    /// The same steps as the general path, in one tight loop for the one state
    /// that matters for speed (that of nearly every line Asterisk sends), over the
    /// structural scan of [`crate::scan`]: the colons and LFs of 64 bytes at a time
    /// as bits; the first colon of a line splits it, its LF ends it (limits checked,
    /// CR dropped, field pushed). Returns `Some(lf)` at an empty line (`scanned` at its
    /// start), for the caller to end the message or skip the line; `None` when
    /// the bytes run out in a line (`searched` past them: the caller then
    /// applies the incomplete-line rules), or after a first line
    /// `Response: Follows`, whose headers and output the general path reads.
    fn client_fields(&mut self, msg: &[u8]) -> Result<Option<usize>, ParseError> {
        let (max_line, max_message) = (self.max_line, self.max_message);
        let mut line_start = self.scanned;
        // The colons and LFs from `line_start` on, one block at a time: `bits` holds
        // those of the block at `base` not yet visited. The first colon of a line
        // splits it; an LF ends it.
        let mut base = line_start;
        let mut masks = scan::masks_at(msg, base);
        let mut bits = masks.lf | masks.colon;
        let mut colon = None;
        loop {
            if bits == 0 {
                base += scan::BLOCK;
                if base >= msg.len() {
                    break;
                }
                masks = scan::masks_at(msg, base);
                // A skipped event's lines are not split: its colons are not visited
                // (but in the first block of a call that resumes inside one, where
                // they change nothing).
                bits = if self.skipping {
                    masks.lf
                } else {
                    masks.lf | masks.colon
                };
                continue;
            }
            let rel = bits.trailing_zeros();
            bits &= bits - 1;
            let at = base + rel as usize;
            if masks.lf >> rel & 1 == 0 {
                colon = colon.or(Some(at));
                continue;
            }
            let lf = at;
            let end = lf + 1;
            if end - line_start > max_line {
                return Err(ParseError::LineTooLong { limit: max_line });
            }
            if end > max_message {
                return Err(ParseError::MessageTooLong { limit: max_message });
            }
            let content_end = strip_cr(msg, line_start, lf);
            if content_end == line_start {
                self.scanned = line_start;
                self.searched = line_start;
                return Ok(Some(lf));
            }
            let start = line_start;
            let key_end = colon.take();
            self.lines += 1;
            line_start = end;
            if self.skipping {
                continue;
            }
            let span = client_span(msg, start, key_end, content_end);
            self.fields.push(span);
            if self.lines == 1 {
                let first = span.field(msg);
                if is_response_follows(first) {
                    self.follows = Follows::Headers;
                    self.scanned = end;
                    self.searched = end;
                    return Ok(None);
                }
                self.skipping = self.skips(first);
                if self.skipping {
                    bits &= masks.lf;
                }
            }
        }
        // No LF from `line_start` to the end: the general path takes it from here.
        self.scanned = line_start;
        self.searched = msg.len();
        Ok(None)
    }

    fn client_line(&mut self, msg: &[u8], start: usize, end: usize) {
        match self.follows {
            Follows::No | Follows::Done if self.skipping => {}
            Follows::No | Follows::Done => {
                let span = split_field(msg, start, end, Role::Client);
                if self.lines == 0 {
                    let first = span.field(msg);
                    if is_response_follows(first) {
                        self.follows = Follows::Headers;
                    }
                    self.skipping = self.skips(first);
                }
                self.fields.push(span);
            }
            Follows::Headers => {
                let span = split_field(msg, start, end, Role::Client);
                let f = span.field(msg);
                if f.is("Privilege") || f.is("ActionID") {
                    self.fields.push(span);
                } else {
                    self.enter_output();
                    self.output_line(msg, start, end);
                }
            }
            Follows::Output => self.output_line(msg, start, end),
        }
        self.lines += 1;
    }

    /// Whether a message whose first field is `first` is skipped.
    fn skips(&self, first: Field<'_>) -> bool {
        !self.skip.is_empty() && first.is("Event") && self.skip.contains(first.value)
    }

    fn enter_output(&mut self) {
        if self.follows == Follows::Headers {
            self.follows = Follows::Output;
            self.output_at = self.fields.len();
        }
    }

    fn output_line(&mut self, msg: &[u8], start: usize, end: usize) {
        let text = msg.get(start..end).unwrap_or_default();
        if text.ends_with(END_COMMAND) {
            let text_end = end - END_COMMAND.len();
            if text_end > start {
                self.output.push(line(start, text_end));
            }
            self.follows = Follows::Done;
        } else {
            self.output.push(line(start, end));
        }
    }

    fn parse_server<'a>(&'a mut self, buf: &'a [u8]) -> (usize, Option<Item<'a>>) {
        loop {
            let line_start = self.scanned;
            let from = self.searched.max(line_start);
            let window_end = buf.len().min(line_start + SERVER_MAX_LINE);
            let lf = buf
                .get(from..window_end)
                .and_then(|w| find_byte(w, b'\n'))
                .map(|i| from + i);
            let Some(lf) = lf else {
                if buf.len() - line_start >= SERVER_MAX_LINE {
                    // Asterisk: "no crlf found, and buffer full - sorry, too long for
                    // us; keep the last character in case we are in the middle of a
                    // CRLF". The 1024th byte starts the next line.
                    self.line_too_long = true;
                    self.start_discarding(buf);
                    self.scanned = line_start + SERVER_MAX_LINE - 1;
                    self.searched = self.scanned;
                    continue;
                }
                self.searched = buf.len();
                let consumed = if self.discarding { self.scanned } else { 0 };
                self.scanned -= consumed;
                self.searched -= consumed;
                return (consumed, None);
            };
            let end = lf + 1;
            let mut content_end = strip_cr(buf, line_start, lf);
            if let Some(nul) = buf
                .get(line_start..content_end)
                .and_then(|l| find_byte(l, 0))
            {
                content_end = line_start + nul;
            }
            self.scanned = end;
            self.searched = end;
            if content_end == line_start {
                return self.finish_server(buf, end);
            }
            self.server_line(buf, line_start, content_end);
        }
    }

    fn server_line(&mut self, buf: &[u8], start: usize, end: usize) {
        if self.lines >= SERVER_MAX_HEADERS {
            self.hdr_loss = true;
            self.start_discarding(buf);
            return;
        }
        self.lines += 1;
        let span = split_field(buf, start, end, Role::Server);
        if !self.discarding {
            self.fields.push(span);
        } else if !self.owned_id_set {
            let f = span.field(buf);
            if f.is("ActionID") {
                self.owned_id.clear();
                self.owned_id.extend_from_slice(f.value);
                self.owned_id_set = true;
            }
        }
    }

    /// Server role: the message will be rejected; keep its `ActionID` and let its
    /// bytes go.
    fn start_discarding(&mut self, buf: &[u8]) {
        if self.discarding {
            return;
        }
        self.discarding = true;
        self.owned_id.clear();
        self.owned_id_set = false;
        if let Some(f) = self
            .fields
            .iter()
            .map(|s| s.field(buf))
            .find(|f| f.is("ActionID"))
        {
            self.owned_id.extend_from_slice(f.value);
            self.owned_id_set = true;
        }
        self.fields.clear();
    }

    fn finish_server<'a>(&'a mut self, buf: &'a [u8], end: usize) -> (usize, Option<Item<'a>>) {
        self.done = true;
        let error = if self.hdr_loss {
            // Asterisk answers this one and leaves its line-too-long state set.
            Some(RequestError::TooManyLines)
        } else if self.line_too_long {
            self.line_too_long = false;
            Some(RequestError::LineTooLong)
        } else {
            None
        };
        let this = &*self;
        let raw = buf.get(..end).unwrap_or_default();
        let message = this.message(raw);
        let item = match error {
            Some(error) => Item::Rejected(Rejection {
                error,
                action_id: if this.discarding {
                    this.owned_id_set.then_some(this.owned_id.as_slice())
                } else {
                    message.action_id()
                },
            }),
            None if message.action().is_some() => Item::Message(message),
            None => Item::Rejected(Rejection {
                error: RequestError::MissingAction,
                action_id: message.action_id(),
            }),
        };
        (end, Some(item))
    }
}

impl Default for Parser {
    /// A client-role parser ([`Parser::client`]).
    fn default() -> Self {
        Self::client()
    }
}

/// Recognises the banner at the start of `buf`: `Ok(Some((version, consumed)))`
/// for `Asterisk Call Manager/<version>` and its line break, `Ok(None)` while the
/// line is incomplete (and could still be a banner), [`ParseError::BadBanner`] as
/// soon as it cannot be one (or is longer than [`CLIENT_MAX_LINE`]).
pub fn parse_banner(buf: &[u8]) -> Result<Option<(&str, usize)>, ParseError> {
    parse_banner_limited(buf, CLIENT_MAX_LINE)
}

fn parse_banner_limited(buf: &[u8], max_line: usize) -> Result<Option<(&str, usize)>, ParseError> {
    let prefix = BANNER_PREFIX.as_bytes();
    let window = buf.get(..max_line).unwrap_or(buf);
    let Some(lf) = find_byte(window, b'\n') else {
        let n = buf.len().min(prefix.len());
        if buf.get(..n) != prefix.get(..n) || buf.len() >= max_line {
            return Err(ParseError::BadBanner);
        }
        return Ok(None);
    };
    let line = buf.get(..strip_cr(buf, 0, lf)).unwrap_or_default();
    let version = line.strip_prefix(prefix).ok_or(ParseError::BadBanner)?;
    let version = std::str::from_utf8(version).map_err(|_| ParseError::BadBanner)?;
    Ok(Some((version, lf + 1)))
}

/// The end of a line's content: `lf`, or `lf - 1` if a CR precedes it.
fn strip_cr(buf: &[u8], start: usize, lf: usize) -> usize {
    if lf > start && buf.get(lf - 1) == Some(&b'\r') {
        lf - 1
    } else {
        lf
    }
}

fn line(start: usize, end: usize) -> Line {
    Line {
        start: start as u32,
        end: end as u32,
    }
}

/// Client role: the first line of an Asterisk 13 `Command` answer.
fn is_response_follows(first: Field<'_>) -> bool {
    first.is("Response") && swar::eq_ignore_ascii_case(first.value, b"Follows")
}

/// Client role: the field of the line `msg[start..end]` (terminator dropped) whose
/// first colon, if it has one, is at `colon`: as [`split_field`] finds it.
fn client_span(msg: &[u8], start: usize, colon: Option<usize>, end: usize) -> Span {
    let (key_end, value_start) = match colon {
        None => (end, end),
        // The one space Asterisk writes after the colon is not part of the value.
        Some(colon) if colon + 1 < end && msg.get(colon + 1) == Some(&b' ') => (colon, colon + 2),
        Some(colon) => (colon, colon + 1),
    };
    Span {
        key_start: start as u32,
        key_end: key_end as u32,
        value_start: value_start as u32,
        value_end: end as u32,
    }
}

/// Splits the line `buf[start..end]` at its first colon, with the role's rule for
/// the value's leading blanks.
fn split_field(buf: &[u8], start: usize, end: usize, role: Role) -> Span {
    let content = buf.get(start..end).unwrap_or_default();
    let (key_end, value_start) = match find_byte(content, b':') {
        None => (end, end),
        Some(i) => {
            let colon = start + i;
            let mut value_start = colon + 1;
            match role {
                Role::Client => {
                    if buf.get(value_start) == Some(&b' ') && value_start < end {
                        value_start += 1;
                    }
                }
                Role::Server => {
                    while value_start < end && buf.get(value_start).is_some_and(|&b| b <= b' ') {
                        value_start += 1;
                    }
                }
            }
            (colon, value_start)
        }
    };
    Span {
        key_start: start as u32,
        key_end: key_end as u32,
        value_start: value_start as u32,
        value_end: end as u32,
    }
}

/// The index of the first `needle` in `hay`, eight bytes at a time.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // A zero byte of x is a match; the lowest flagged byte is exact (borrows
        // only propagate upwards from a zero byte).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests;
