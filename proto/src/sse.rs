//! Server-Sent Events (WHATWG HTML §9.2, `text/event-stream`): the server-side
//! event writer and the response headers of an event stream, and a streaming
//! client-side parser implementing the spec's interpretation algorithm (used by
//! the load generator and the tests).
//!
//! Line breaks in event data: the writer emits one `data:` line per line of the
//! payload, splitting on `\r\n`, `\r` and `\n`. A receiver joins `data` lines with
//! `\n` and drops one final `\n`, so a payload's line breaks arrive as `\n`
//! (CRLF and CR are normalised) and a trailing line break survives because the
//! writer emits a final empty `data:` line for it. Empty data is sent as one empty
//! `data:` line, which the spec delivers as an event with empty data.

use std::ops::Range;

use crate::position::Position;

/// The media type of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// Headers of a `200` event-stream response (pass to `http1::write_head`).
/// `X-Accel-Buffering: no` keeps nginx-style proxies from buffering the stream.
pub const RESPONSE_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", CONTENT_TYPE),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
];

/// Default bound on one line of the stream, in bytes (field name, colon and value).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// Default bound on the data of one event (all its `data` lines plus their `\n`s).
pub const DEFAULT_MAX_EVENT_DATA_BYTES: usize = 4 * 1024 * 1024;

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Splits `data` into lines on `\r\n`, `\r` or `\n`. Always yields at least one
/// line; a trailing break yields a final empty line.
fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let cur = rest?;
        // SIMD (memchr): data is mostly one long JSON line, searched whole.
        match memchr::memchr2(b'\r', b'\n', cur) {
            None => {
                rest = None;
                Some(cur)
            }
            Some(i) => {
                let skip = if cur.get(i..i + 2) == Some(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = cur.get(i + skip..);
                cur.get(..i)
            }
        }
    })
}

/// Appends `value` minus CR, LF (and NUL when `strip_nul`).
fn push_single_line(out: &mut Vec<u8>, value: &str, strip_nul: bool) {
    out.extend(
        value
            .bytes()
            .filter(|&b| b != b'\r' && b != b'\n' && !(strip_nul && b == 0)),
    );
}

/// Appends one event: `id: <id>\n` if given, `event: <event>\n` if given, one
/// `data:` line per line of `data` (see the module docs), then the blank line.
///
/// `id` and `event` must be single-line (and `id` NUL-free, since receivers ignore
/// such an id): offending characters are a bug in the caller, asserted in debug
/// builds and stripped in release builds.
pub fn write_event(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &[u8]) {
    out.reserve(data.len().saturating_add(32));
    if let Some(id) = id {
        debug_assert!(
            !id.contains(['\r', '\n', '\0']),
            "SSE id must not contain CR, LF or NUL: {id:?}"
        );
        out.extend_from_slice(b"id: ");
        push_single_line(out, id, true);
        out.push(b'\n');
    }
    if let Some(event) = event {
        debug_assert!(
            !event.contains(['\r', '\n']),
            "SSE event type must not contain CR or LF: {event:?}"
        );
        out.extend_from_slice(b"event: ");
        push_single_line(out, event, false);
        out.push(b'\n');
    }
    write_data(out, data);
}

/// [`write_event`] with the stream position `pos` as its id and no event type: what
/// the router writes for every message (the id is written in place, not formatted
/// into a string first).
pub fn write_event_at(out: &mut Vec<u8>, pos: Position, data: &[u8]) {
    out.reserve(data.len().saturating_add(48));
    write_id_at(out, pos);
    write_data(out, data);
}

/// The `id:` line of an event at `pos`.
fn write_id_at(out: &mut Vec<u8>, pos: Position) {
    out.extend_from_slice(b"id: ");
    pos.write(out);
    out.push(b'\n');
}

/// [`write_event_at`] for data that is already in `buf` (`buf[data]`), appended to
/// `buf` itself without copying the data out first (the router puts the SSE event
/// in the allocation of the WebSocket frame it frames the same envelope for). False,
/// with nothing appended, if the data is empty or holds a CR or LF (it would take
/// other than one `data:` line): use [`write_event_at`] then.
pub fn append_event_at(buf: &mut Vec<u8>, pos: Position, data: Range<usize>) -> bool {
    match buf.get(data.clone()) {
        Some(bytes) if !bytes.is_empty() && memchr::memchr2(b'\r', b'\n', bytes).is_none() => {}
        _ => return false,
    }
    buf.reserve(data.len().saturating_add(48));
    write_id_at(buf, pos);
    buf.extend_from_slice(b"data: ");
    buf.extend_from_within(data);
    buf.extend_from_slice(b"\n\n");
    true
}

/// The `data:` lines of an event, then the blank line that ends it.
fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    for line in split_lines(data) {
        if line.is_empty() {
            out.extend_from_slice(b"data:\n");
        } else {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
}

/// Appends `retry: <ms>\n\n` (the client's reconnection delay).
pub fn write_retry(out: &mut Vec<u8>, ms: u32) {
    out.extend_from_slice(b"retry: ");
    crate::envelope::write_u64(out, u64::from(ms));
    out.extend_from_slice(b"\n\n");
}

/// Appends a comment, `: <text>\n\n` (used as a keep-alive). A multi-line `text`
/// becomes one comment line per line, so it can never end the comment early.
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    for line in split_lines(text.as_bytes()) {
        if line.is_empty() {
            out.extend_from_slice(b":\n");
        } else {
            out.extend_from_slice(b": ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
}

/// A `retry` value: ASCII digits only. All digits but too large for a `u32` is
/// ignored like any other invalid value.
fn parse_retry(value: &[u8]) -> Option<u32> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// One dispatched event, as a browser's `MessageEvent` would carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The last event ID string at dispatch time (it persists across events until
    /// an `id` field changes it); `None` when it is the empty string.
    pub id: Option<String>,
    /// The event type, `"message"` unless an `event` field said otherwise.
    pub event: String,
    /// The data lines joined with `\n`.
    pub data: String,
}

/// Why the stream was rejected (the parser then stays failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event-stream line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("event data longer than {limit} bytes")]
    EventTooLarge { limit: usize },
    #[error("event-stream parser already failed")]
    Failed,
}

/// Streaming `text/event-stream` parser (client side). Feed it bytes as they
/// arrive, in chunks of any size; events are appended to `out` on dispatch.
/// Invalid UTF-8 is replaced by U+FFFD, as the spec's decoder does.
#[derive(Debug, Clone)]
pub struct Parser {
    max_line_bytes: usize,
    max_data_bytes: usize,
    /// Bytes of a possible leading BOM seen so far; `None` once past the start.
    bom_seen: Option<usize>,
    /// The previous byte was a CR, so an LF right now ends nothing.
    after_cr: bool,
    line: Vec<u8>,
    data: Vec<u8>,
    event_type: Vec<u8>,
    last_event_id: String,
    retry: Option<u32>,
    failed: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser with [`DEFAULT_MAX_LINE_BYTES`] and [`DEFAULT_MAX_EVENT_DATA_BYTES`].
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_EVENT_DATA_BYTES)
    }

    /// A parser with explicit bounds on one line and on one event's data.
    pub fn with_limits(max_line_bytes: usize, max_data_bytes: usize) -> Self {
        Parser {
            max_line_bytes,
            max_data_bytes,
            bom_seen: Some(0),
            after_cr: false,
            line: Vec::new(),
            data: Vec::new(),
            event_type: Vec::new(),
            last_event_id: String::new(),
            retry: None,
            failed: false,
        }
    }

    /// The reconnection time set by the last valid `retry` field, in ms.
    pub fn retry(&self) -> Option<u32> {
        self.retry
    }

    /// The current last event ID string (what a reconnect sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Parses `bytes`, appending every event dispatched by them to `out`. On error
    /// the events dispatched before it are in `out`, and the parser stays failed.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if self.failed {
            return Err(SseError::Failed);
        }
        if let Some(seen) = self.bom_seen {
            bytes = self.skip_bom(seen, bytes)?;
        }
        let result = self.feed_lines(bytes, out);
        self.failed = result.is_err();
        result
    }

    /// Strips a leading BOM that may be split across feeds. Returns what is left
    /// of `bytes`, having already processed a partial-BOM prefix that turned out
    /// not to be a BOM.
    fn skip_bom<'a>(&mut self, mut seen: usize, mut bytes: &'a [u8]) -> Result<&'a [u8], SseError> {
        while let Some((&b, rest)) = bytes.split_first() {
            if BOM.get(seen) == Some(&b) {
                seen += 1;
                bytes = rest;
                if seen == BOM.len() {
                    self.bom_seen = None;
                    return Ok(bytes);
                }
            } else {
                self.bom_seen = None;
                // Not a BOM after all: the bytes matched so far are content.
                self.push_line_bytes(BOM.get(..seen).unwrap_or_default())?;
                return Ok(bytes);
            }
        }
        self.bom_seen = Some(seen);
        Ok(bytes)
    }

    fn feed_lines(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if let Some(rest) = bytes.strip_prefix(b"\n") {
                    bytes = rest;
                    continue;
                }
            }
            match bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
                None => {
                    self.push_line_bytes(bytes)?;
                    return Ok(());
                }
                Some(i) => {
                    self.push_line_bytes(bytes.get(..i).unwrap_or_default())?;
                    self.after_cr = bytes.get(i) == Some(&b'\r');
                    bytes = bytes.get(i + 1..).unwrap_or_default();
                    self.end_line(out)?;
                }
            }
        }
        Ok(())
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len().saturating_add(bytes.len()) > self.max_line_bytes {
            return Err(SseError::LineTooLong {
                limit: self.max_line_bytes,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<Event>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        let result = self.process_line(&line, out);
        self.line = line;
        self.line.clear();
        result
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return Ok(()), // comment
            Some(i) => {
                let value = line.get(i + 1..).unwrap_or_default();
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (line.get(..i).unwrap_or_default(), value)
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            b"data" => {
                let new_len = self
                    .data
                    .len()
                    .saturating_add(value.len())
                    .saturating_add(1);
                if new_len > self.max_data_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_data_bytes,
                    });
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" if !value.contains(&0) => {
                self.last_event_id = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" => self.retry = parse_retry(value).or(self.retry),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.last() == Some(&b'\n') {
            self.data.pop();
        }
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            String::from_utf8_lossy(&self.event_type).into_owned()
        };
        out.push(Event {
            id: (!self.last_event_id.is_empty()).then(|| self.last_event_id.clone()),
            event,
            data: String::from_utf8_lossy(&self.data).into_owned(),
        });
        self.data.clear();
        self.event_type.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appending an event whose data is in the buffer already writes what
    /// `write_event_at` writes, when the data is one non-empty line; else nothing.
    #[test]
    fn append_event_at_is_write_event_at_for_one_line_of_data() {
        let pos = Position {
            epoch: 0xabcdef01,
            gseq: 7,
        };
        for data in [&b"{\"a\":1}"[..], b"x", b"", b"a\nb", b"a\r", b"\n"] {
            let mut buf = b"head:".to_vec();
            buf.extend_from_slice(data);
            let range = 5..buf.len();
            let appended = append_event_at(&mut buf, pos, range);
            let single = !data.is_empty() && !data.contains(&b'\n') && !data.contains(&b'\r');
            assert_eq!(appended, single, "{data:?}");
            let mut want = b"head:".to_vec();
            want.extend_from_slice(data);
            if single {
                write_event_at(&mut want, pos, data);
            }
            assert_eq!(buf, want, "{data:?}");
        }
        assert!(!append_event_at(&mut Vec::new(), pos, 0..1), "out of range");
    }

    /// The router's form is `write_event` with the position's text as the id.
    #[test]
    fn write_event_at_is_write_event_with_the_position_as_id() {
        let pos = Position {
            epoch: 0x1f0c93aa,
            gseq: 42,
        };
        for data in [&b"{\"a\":1}"[..], b"", b"two\nlines\r\n", b"\r"] {
            let mut at = b"x".to_vec();
            write_event_at(&mut at, pos, data);
            let mut plain = b"x".to_vec();
            write_event(&mut plain, Some(&pos.to_string()), None, data);
            assert_eq!(at, plain, "{data:?}");
        }
    }

    /// Tiny deterministic xorshift64* PRNG for fragmenting input.
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

    fn parse_all(bytes: &[u8]) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(bytes, &mut out).unwrap();
        out
    }

    fn parse_bytewise(bytes: &[u8]) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for b in bytes {
            p.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        out
    }

    fn parse_fragments(bytes: &[u8], rng: &mut XorShift) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(17));
            let (chunk, tail) = rest.split_at(n);
            p.feed(chunk, &mut out).unwrap();
            rest = tail;
        }
        out
    }

    fn ev(id: Option<&str>, event: &str, data: &str) -> Event {
        Event {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    /// What a receiver should reconstruct from `write_event`'s data.
    fn normalised(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    const PAYLOADS: &[&str] = &[
        "",
        "hello",
        "a\nb",
        "a\r\nb",
        "a\rb",
        "\n",
        "\r\n",
        "\r",
        "trailing\n",
        "\nleading",
        "\n\n\n",
        "\r\r\n\n\r",
        " leading space",
        "  two spaces",
        ":colon first",
        "data: nested",
        "unicode é € 😀 \u{2028}",
        "{\"topic\":\"a\",\"seq\":1,\"data\":{\"x\":[1,2]}}",
        "\u{feff}bom in the middle",
    ];

    #[test]
    fn write_event_exact_bytes() {
        let mut out = Vec::new();
        write_event(&mut out, Some("7"), Some("update"), b"a\nb");
        assert_eq!(out, b"id: 7\nevent: update\ndata: a\ndata: b\n\n");
        out.clear();
        write_event(&mut out, None, None, b"x\r\ny\rz\n");
        assert_eq!(out, b"data: x\ndata: y\ndata: z\ndata:\n\n");
        out.clear();
        write_event(&mut out, None, None, b"");
        assert_eq!(out, b"data:\n\n");
    }

    #[test]
    fn round_trip_whole_bytewise_and_fragmented() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, payload) in PAYLOADS.iter().enumerate() {
            let id = i.to_string();
            let event = if i % 3 == 0 { Some("custom") } else { None };
            write_event(&mut stream, Some(&id), event, payload.as_bytes());
            want.push(ev(
                Some(&id),
                event.unwrap_or("message"),
                &normalised(payload),
            ));
            if i % 4 == 0 {
                write_comment(&mut stream, "keep-alive");
            }
        }
        assert_eq!(parse_all(&stream), want);
        assert_eq!(parse_bytewise(&stream), want);
        for _ in 0..200 {
            assert_eq!(parse_fragments(&stream, &mut rng), want);
        }
    }

    #[test]
    fn round_trip_random_payloads() {
        let mut rng = XorShift(12345);
        let alphabet: &[&str] = &[
            "a", " ", "\n", "\r", "\r\n", ":", "é", "😀", "data", "\u{2028}",
        ];
        for _ in 0..300 {
            let payload: String = (0..rng.below(12))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let mut stream = Vec::new();
            write_event(&mut stream, None, None, payload.as_bytes());
            let want = vec![ev(None, "message", &normalised(&payload))];
            assert_eq!(parse_fragments(&stream, &mut rng), want, "{payload:?}");
        }
    }

    #[test]
    fn retry_and_comment_writers() {
        let mut out = Vec::new();
        write_retry(&mut out, 3000);
        write_comment(&mut out, "ping");
        assert_eq!(out, b"retry: 3000\n\n: ping\n\n");
        out.clear();
        write_comment(&mut out, "two\nlines");
        assert_eq!(out, b": two\n: lines\n\n");
        let mut p = Parser::new();
        let mut events = Vec::new();
        p.feed(b"retry: 3000\n\n: two\n: lines\n\n", &mut events)
            .unwrap();
        assert_eq!(p.retry(), Some(3000));
        assert!(events.is_empty());
    }

    #[test]
    fn response_headers() {
        assert_eq!(CONTENT_TYPE, "text/event-stream");
        assert!(RESPONSE_HEADERS.contains(&("Content-Type", "text/event-stream")));
        assert!(RESPONSE_HEADERS.contains(&("Cache-Control", "no-cache")));
        assert!(RESPONSE_HEADERS.contains(&("X-Accel-Buffering", "no")));
    }

    #[test]
    fn single_line_helper_strips_breaks() {
        let mut out = Vec::new();
        push_single_line(&mut out, "a\r\nb\0c", true);
        assert_eq!(out, b"abc");
        out.clear();
        push_single_line(&mut out, "a\nb\0", false);
        assert_eq!(out, b"ab\0");
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "must not contain CR"))]
    fn multiline_id_is_a_bug() {
        let mut out = Vec::new();
        write_event(&mut out, Some("1\n2"), None, b"x");
        // Release builds strip instead.
        assert_eq!(out, b"id: 12\ndata: x\n\n");
    }

    // The examples of WHATWG HTML §9.2.6.

    #[test]
    fn spec_example_stock_ticker() {
        let stream = b"data: YHOO\ndata: +2\ndata: 10\n\n";
        assert_eq!(parse_all(stream), [ev(None, "message", "YHOO\n+2\n10")]);
    }

    #[test]
    fn spec_example_four_blocks() {
        let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
        // The third block has no blank line after it, so it is never dispatched.
        assert_eq!(
            parse_bytewise(stream),
            [
                ev(Some("1"), "message", "first event"),
                ev(None, "message", "second event")
            ]
        );
    }

    #[test]
    fn spec_example_two_events_empty_data() {
        let stream = b"data\n\ndata\ndata\n\ndata:";
        assert_eq!(
            parse_all(stream),
            [ev(None, "message", ""), ev(None, "message", "\n")]
        );
    }

    #[test]
    fn spec_example_space_after_colon_optional() {
        let stream = b"data:test\n\ndata: test\n\n";
        assert_eq!(
            parse_all(stream),
            [ev(None, "message", "test"), ev(None, "message", "test")]
        );
    }

    #[test]
    fn spec_example_third_event_leading_space_kept() {
        let stream = b"data:  third event\n\n";
        assert_eq!(parse_all(stream), [ev(None, "message", " third event")]);
    }

    #[test]
    fn event_type_and_id_persistence() {
        let stream = b"event: add\nid: 5\ndata: x\n\ndata: y\n\nid\ndata: z\n\n";
        assert_eq!(
            parse_all(stream),
            [
                ev(Some("5"), "add", "x"),
                ev(Some("5"), "message", "y"),
                ev(None, "message", "z")
            ]
        );
    }

    #[test]
    fn blank_line_without_data_resets_event_type() {
        let stream = b"event: add\n\ndata: x\n\n";
        assert_eq!(parse_all(stream), [ev(None, "message", "x")]);
    }

    #[test]
    fn id_with_nul_is_ignored() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n", &mut out)
            .unwrap();
        assert_eq!(
            out,
            [ev(Some("1"), "message", "a"), ev(Some("1"), "message", "b")]
        );
        assert_eq!(p.last_event_id(), "1");
    }

    #[test]
    fn retry_digits_only() {
        let cases: &[(&[u8], Option<u32>)] = &[
            (b"retry: 1500\n", Some(1500)),
            (b"retry:0\n", Some(0)),
            (b"retry: 15x\n", None),
            (b"retry: -1\n", None),
            (b"retry:  15\n", None), // only one space is stripped
            (b"retry:\n", None),
            (b"retry: 99999999999\n", None), // does not fit u32
            (b"retry: 10\nretry: abc\n", Some(10)),
        ];
        for &(stream, want) in cases {
            let mut p = Parser::new();
            p.feed(stream, &mut Vec::new()).unwrap();
            assert_eq!(p.retry(), want, "{}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn unknown_fields_and_field_without_colon() {
        let stream = b"foo: bar\ndata\nevent\n\n";
        // "data" with no colon appends an empty line; "event" sets an empty type.
        assert_eq!(parse_all(stream), [ev(None, "message", "")]);
        assert_eq!(
            parse_all(b"Data: x\n\n"),
            [],
            "field names are case-sensitive"
        );
    }

    #[test]
    fn line_endings_cr_lf_crlf_across_chunks() {
        let stream = b"data: a\rdata: b\r\ndata: c\n\r\n";
        let want = [ev(None, "message", "a\nb\nc")];
        assert_eq!(parse_all(stream), want);
        assert_eq!(parse_bytewise(stream), want);
        // CR at the end of one chunk and LF at the start of the next is one break.
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b"data: a\r", &mut out).unwrap();
        p.feed(b"\ndata: b\r", &mut out).unwrap();
        p.feed(b"\n\r", &mut out).unwrap();
        assert_eq!(out, [ev(None, "message", "a\nb")]);
    }

    #[test]
    fn cr_cr_is_two_line_breaks() {
        assert_eq!(parse_all(b"data: a\r\r"), [ev(None, "message", "a")]);
        assert_eq!(parse_bytewise(b"data: a\r\r"), [ev(None, "message", "a")]);
    }

    #[test]
    fn bom_stripped_only_at_start() {
        let stream = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
        // The second BOM makes the field name "\u{feff}data", which is unknown.
        assert_eq!(parse_all(stream), [ev(None, "message", "a")]);
        assert_eq!(parse_bytewise(stream), [ev(None, "message", "a")]);
        // Only one BOM is stripped.
        assert_eq!(parse_all(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"), []);
    }

    #[test]
    fn partial_bom_prefix_is_content() {
        // EF BB followed by something else is not a BOM: those bytes are content.
        let stream = b"\xEF\xBBdata: a\n\ndata: b\n\n";
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b"\xEF", &mut out).unwrap();
        p.feed(b"\xBB", &mut out).unwrap();
        p.feed(&stream[2..], &mut out).unwrap();
        assert_eq!(out, [ev(None, "message", "b")]);
        assert_eq!(parse_all(stream), [ev(None, "message", "b")]);
        // A first byte that is not EF is processed normally.
        assert_eq!(parse_bytewise(b"\ndata: c\n\n"), [ev(None, "message", "c")]);
        // A partial BOM followed by a line break ends that (garbage) line.
        assert_eq!(
            parse_bytewise(b"\xEF\ndata: d\n\n"),
            [ev(None, "message", "d")]
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_char() {
        assert_eq!(
            parse_all(b"data: a\xffb\n\n"),
            [ev(None, "message", "a\u{fffd}b")]
        );
    }

    #[test]
    fn incomplete_event_not_dispatched() {
        assert_eq!(parse_all(b"data: a\n"), []);
        assert_eq!(parse_all(b"data: a"), []);
    }

    #[test]
    fn overlong_line_is_an_error_and_sticky() {
        let mut p = Parser::with_limits(8, 64);
        let mut out = Vec::new();
        p.feed(b"data: ab\n\n", &mut out).unwrap(); // exactly 8 bytes: fine
        assert_eq!(out, [ev(None, "message", "ab")]);
        assert_eq!(p.feed(b"data", &mut out), Ok(()));
        assert_eq!(
            p.feed(b": abc", &mut out),
            Err(SseError::LineTooLong { limit: 8 })
        );
        assert_eq!(p.feed(b"\n\n", &mut out), Err(SseError::Failed));
    }

    #[test]
    fn oversized_event_data_is_an_error() {
        let mut p = Parser::with_limits(100, 6);
        let mut out = Vec::new();
        p.feed(b"data: ab\ndata: c\n\n", &mut out).unwrap(); // "ab\nc\n" = 5
        assert_eq!(out.len(), 1);
        assert_eq!(
            p.feed(b"data: abcd\ndata: e\n", &mut out),
            Err(SseError::EventTooLarge { limit: 6 })
        );
    }
}
