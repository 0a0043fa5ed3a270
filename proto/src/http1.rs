//! HTTP/1.1 (RFC 9112) as Switchboard speaks it. Server side: parsing a request
//! head (with limits and the RFC 9112 §6 body-framing rules), streaming decoding
//! of a chunked request body, writing responses, and percent-decoding of paths
//! and query strings. Client side, for the load generator and the tests: parsing
//! a response head and writing a request.
//!
//! Nothing here allocates per request except where a result must own data
//! (percent-decoding that changed something, a decoded body): the caller owns the
//! header array and the output buffers.

use std::borrow::Cow;

pub use httparse::{EMPTY_HEADER, Header};

use crate::envelope::write_u64;

/// Default bound on a request head (request line, header fields, final blank line).
pub const DEFAULT_MAX_HEAD_BYTES: usize = 8192;
/// Default bound on the number of header fields in a request.
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// Bound on a response head read by [`parse_response`].
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Bound on one chunk-size line (size and extensions, CRLF excluded) and on one
/// trailer field line of a chunked body.
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Bound on all chunk extensions of one chunked body together (they are ignored,
/// so without it a peer could send unbounded bytes per body byte).
pub const MAX_CHUNK_EXT_TOTAL_BYTES: usize = 16 * 1024;
/// Bound on the whole trailer section of one chunked body.
pub const MAX_TRAILER_BYTES: usize = 8192;

/// The interim response sent before reading a body announced with
/// `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Request-head limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head accepted, in bytes, including the final blank line.
    pub max_head_bytes: usize,
    /// Most header fields accepted (also capped by the caller's header array).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Why a request head was rejected; [`HeadError::status`] is the answer to send
/// (then close the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request head")]
    Malformed,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("both Transfer-Encoding and Content-Length")]
    ConflictingFraming,
    #[error("missing or repeated Host header")]
    BadHost,
    #[error("request target too long")]
    UriTooLong,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("unsupported transfer coding")]
    UnsupportedTransferEncoding,
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
}

impl HeadError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed
            | HeadError::BadContentLength
            | HeadError::ConflictingFraming
            | HeadError::BadHost => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::UnsupportedVersion => 505,
        }
    }

    /// A short explanation, suitable as a plain-text response body.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Malformed => "malformed request head",
            HeadError::BadContentLength => "invalid Content-Length",
            HeadError::ConflictingFraming => "both Transfer-Encoding and Content-Length",
            HeadError::BadHost => "missing or repeated Host header",
            HeadError::UriTooLong => "request target too long",
            HeadError::HeadTooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::UnsupportedTransferEncoding => "unsupported transfer coding",
            HeadError::UnsupportedVersion => "unsupported HTTP version",
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows; decode it with [`ChunkedDecoder`].
    Chunked,
}

/// A parsed request head, borrowing from the read buffer and the header array.
#[derive(Debug, Clone, Copy)]
pub struct Request<'h, 'b> {
    pub method: &'b str,
    /// The raw request target (origin-form `/p?q`, or absolute/authority/asterisk form).
    pub target: &'b str,
    /// `target` before the first `?` (still percent-encoded).
    pub path: &'b str,
    /// `target` after the first `?`; empty when there is none.
    pub query: &'b str,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    pub headers: &'h [Header<'b>],
    /// Bytes of the head, including the final blank line: the body (or the next
    /// pipelined request) starts at `buf[head_len..]`.
    pub head_len: usize,
    pub body: BodyFraming,
    /// Whether the connection may stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored for HTTP/1.0,
    /// RFC 9110 §10.1.1): send [`CONTINUE_100`] before reading the body.
    pub expect_continue: bool,
}

impl<'h, 'b> Request<'h, 'b> {
    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        find_header(self.headers, name)
    }

    /// Whether any `name` field holds `token` in its comma-separated list
    /// (case-insensitive, surrounding spaces and tabs ignored).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        has_token(self.headers, name, token)
    }
}

fn find_header<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn named<'a, 'b>(headers: &'a [Header<'b>], name: &'a str) -> impl Iterator<Item = &'b [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The non-empty elements of a comma-separated field value, trimmed.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

fn has_token(headers: &[Header<'_>], name: &str, token: &str) -> bool {
    named(headers, name).any(|v| list_items(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

/// `Some(n)` if all `Content-Length` fields agree on `n`; each must be only digits.
fn content_length(headers: &[Header<'_>]) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for value in named(headers, "content-length") {
        let digits = trim_ows(value);
        if digits.is_empty() {
            return Err(HeadError::BadContentLength);
        }
        let mut n: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return Err(HeadError::BadContentLength);
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(HeadError::BadContentLength)?;
        }
        if found.is_some_and(|prev| prev != n) {
            return Err(HeadError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

/// Whether the connection persists: HTTP/1.1 unless `Connection: close`,
/// HTTP/1.0 only with `Connection: keep-alive` (and no `close`).
fn persistent(headers: &[Header<'_>], minor_version: u8) -> bool {
    let close = has_token(headers, "connection", "close");
    if minor_version >= 1 {
        !close
    } else {
        !close && has_token(headers, "connection", "keep-alive")
    }
}

/// What the `Transfer-Encoding` fields say, if any are present.
enum Codings {
    Absent,
    /// Exactly one coding, `chunked`.
    Chunked,
    /// Codings are listed but none (empty value) or `chunked` more than once.
    Invalid,
    /// Some coding other than `chunked` is listed.
    Other {
        final_chunked: bool,
    },
}

fn transfer_codings(headers: &[Header<'_>]) -> Codings {
    let mut present = false;
    let mut chunked = 0usize;
    let mut other = false;
    let mut last_chunked = false;
    for value in named(headers, "transfer-encoding") {
        present = true;
        for coding in list_items(value) {
            last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if last_chunked {
                chunked = chunked.saturating_add(1);
            } else {
                other = true;
            }
        }
    }
    match (present, chunked, other) {
        (false, _, _) => Codings::Absent,
        (true, _, true) => Codings::Other {
            final_chunked: last_chunked,
        },
        (true, 1, false) => Codings::Chunked,
        (true, _, false) => Codings::Invalid,
    }
}

/// RFC 9112 §6.1–6.3 for requests.
fn request_framing(headers: &[Header<'_>], minor_version: u8) -> Result<BodyFraming, HeadError> {
    let length = content_length(headers)?;
    match transfer_codings(headers) {
        Codings::Absent => Ok(length.map_or(BodyFraming::None, BodyFraming::Length)),
        // HTTP/1.0 has no chunked coding: framing with it is faulty (§6.1).
        _ if minor_version == 0 => Err(HeadError::Malformed),
        _ if length.is_some() => Err(HeadError::ConflictingFraming),
        Codings::Chunked => Ok(BodyFraming::Chunked),
        Codings::Invalid => Err(HeadError::Malformed),
        // We decode no coding but chunked (§6.1: 501 for what we do not understand).
        Codings::Other { .. } => Err(HeadError::UnsupportedTransferEncoding),
    }
}

/// `window` after any leading empty lines (which RFC 9112 §2.2 lets servers skip).
fn skip_leading_newlines(window: &[u8]) -> &[u8] {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    window.get(start..).unwrap_or_default()
}

/// Whether the request line's last token looks like `HTTP/<digits>[.<digits>]`,
/// i.e. a well-formed version we do not speak (505) rather than garbage (400).
fn is_other_http_version(window: &[u8]) -> bool {
    let rest = skip_leading_newlines(window);
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version.strip_prefix(b"HTTP/") {
        Some(num) => {
            let mut parts = num.splitn(2, |&b| b == b'.');
            let all_digits = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
            parts.next().is_some_and(all_digits) && parts.next().is_none_or(all_digits)
        }
        None => false,
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, call again with more bytes. The head must fit in
/// `limits.max_head_bytes` ([`HeadError::UriTooLong`] if not even the request line
/// does, else [`HeadError::HeadTooLarge`]). At most
/// `min(headers.len(), limits.max_headers)` fields are accepted. HTTP/1.1
/// requests must have exactly one `Host` field, HTTP/1.0 at most one.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    limits: &Limits,
    headers: &'h mut [Header<'b>],
) -> Result<Option<Request<'h, 'b>>, HeadError> {
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let slots = headers.len().min(limits.max_headers);
    let headers = headers.get_mut(..slots).unwrap_or_default();
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() < limits.max_head_bytes {
                return Ok(None);
            }
            return Err(if skip_leading_newlines(window).contains(&b'\n') {
                HeadError::HeadTooLarge
            } else {
                HeadError::UriTooLong
            });
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) if is_other_http_version(window) => {
            return Err(HeadError::UnsupportedVersion);
        }
        Err(_) => return Err(HeadError::Malformed),
    };
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = req;
    let headers: &'h [Header<'b>] = headers;
    let (Some(method), Some(target), Some(minor_version)) = (method, path, version) else {
        return Err(HeadError::Malformed); // unreachable for a complete parse
    };
    let hosts = named(headers, "host").count();
    if hosts > 1 || (hosts == 0 && minor_version >= 1) {
        return Err(HeadError::BadHost);
    }
    let body = request_framing(headers, minor_version)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method,
        target,
        path,
        query,
        minor_version,
        headers,
        head_len,
        body,
        keep_alive: persistent(headers, minor_version),
        expect_continue: minor_version >= 1 && has_token(headers, "expect", "100-continue"),
    }))
}

// ---------------------------------------------------------------------------
// Chunked bodies

/// Why a request body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body too large")]
    TooLarge,
    #[error("malformed chunked body")]
    Malformed,
}

impl BodyError {
    /// The HTTP status code to answer with (413 or 400).
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            BodyError::Malformed => 400,
        }
    }
}

/// Progress of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of `input` consumed. When `done`, the rest of the input belongs to
    /// whatever follows the body (a pipelined request); otherwise it is all of it.
    pub consumed: usize,
    /// The final CRLF after the last chunk and trailers has been consumed.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting the first hex digit of a chunk-size line.
    SizeStart,
    /// In the hex digits of the size.
    Size,
    /// After the size: optional spaces/tabs, then `;` or CR.
    SizeSpace,
    /// In chunk extensions (ignored), until CR.
    Ext,
    /// Saw the CR ending the size line.
    SizeLf,
    /// In chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerStart,
    /// In a trailer field line (skipped), until CR.
    Trailer,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    FinalLf,
    Done,
    Failed,
}

/// Streaming decoder of a `Transfer-Encoding: chunked` body (RFC 9112 §7.1).
/// Strict: line ends must be CRLF; extensions and trailers are checked for
/// control characters, bounded, and ignored. Input may arrive in pieces of any
/// size, down to one byte. After an error it keeps failing.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// The chunk size being parsed, then the data bytes left in the chunk.
    chunk: u64,
    /// Data bytes announced so far (the current chunk included once its size is read).
    body_len: u64,
    line_len: usize,
    ext_total: usize,
    trailer_total: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes allowed inside extensions and trailer lines: HTAB, SP, VCHAR, obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::SizeStart,
            chunk: 0,
            body_len: 0,
            line_len: 0,
            ext_total: 0,
            trailer_total: 0,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decoded body bytes so far.
    pub fn body_len(&self) -> u64 {
        match self.state {
            // While in data, `chunk` bytes announced are still to come.
            ChunkState::Data => self.body_len.saturating_sub(self.chunk),
            _ => self.body_len,
        }
    }

    /// Decodes from `input`, appending body bytes to `out`. A body larger than
    /// `max_body_bytes` fails with [`BodyError::TooLarge`] as soon as a chunk
    /// size shows it, before its data arrives.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_body_bytes: usize,
    ) -> Result<Decoded, BodyError> {
        let max = u64::try_from(max_body_bytes).unwrap_or(u64::MAX);
        let mut pos = 0usize;
        while let Some(rest) = input.get(pos..).filter(|r| !r.is_empty()) {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Failed => return Err(BodyError::Malformed),
                ChunkState::Data => {
                    let take = usize::try_from(self.chunk)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    pos += take;
                    self.chunk -= take as u64; // take <= chunk
                    if self.chunk == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            let Some(&b) = rest.first() else { break };
            pos += 1;
            if let Err(e) = self.step(b, max) {
                self.state = ChunkState::Failed;
                return Err(e);
            }
        }
        Ok(Decoded {
            consumed: pos,
            done: self.state == ChunkState::Done,
        })
    }

    /// Counts one more byte of a size or trailer line against its bound.
    fn bump_line(&mut self) -> Result<(), BodyError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE_BYTES {
            return Err(BodyError::Malformed);
        }
        Ok(())
    }

    fn push_digit(&mut self, d: u8, max: u64) -> Result<(), BodyError> {
        self.chunk = self
            .chunk
            .checked_mul(16)
            .and_then(|c| c.checked_add(u64::from(d)))
            .ok_or(BodyError::Malformed)?;
        match self.body_len.checked_add(self.chunk) {
            Some(total) if total <= max => Ok(()),
            _ => Err(BodyError::TooLarge),
        }
    }

    fn step(&mut self, b: u8, max: u64) -> Result<(), BodyError> {
        use ChunkState::*;
        match self.state {
            SizeStart => {
                let d = hex_value(b).ok_or(BodyError::Malformed)?;
                self.chunk = 0;
                self.line_len = 0;
                self.bump_line()?;
                self.push_digit(d, max)?;
                self.state = Size;
            }
            Size | SizeSpace | Ext if b == b'\r' => self.state = SizeLf,
            Size => {
                self.bump_line()?;
                match b {
                    b';' => self.state = Ext,
                    b' ' | b'\t' => self.state = SizeSpace,
                    _ => {
                        let d = hex_value(b).ok_or(BodyError::Malformed)?;
                        self.push_digit(d, max)?;
                    }
                }
            }
            SizeSpace => {
                self.bump_line()?;
                match b {
                    b';' => self.state = Ext,
                    b' ' | b'\t' => {}
                    _ => return Err(BodyError::Malformed),
                }
            }
            Ext => {
                self.bump_line()?;
                if !is_field_byte(b) {
                    return Err(BodyError::Malformed);
                }
                self.ext_total += 1;
                if self.ext_total > MAX_CHUNK_EXT_TOTAL_BYTES {
                    return Err(BodyError::Malformed);
                }
            }
            SizeLf => {
                if b != b'\n' {
                    return Err(BodyError::Malformed);
                }
                // push_digit checked body_len + chunk <= max, so this cannot overflow.
                self.body_len = self.body_len.saturating_add(self.chunk);
                self.line_len = 0;
                self.state = if self.chunk == 0 { TrailerStart } else { Data };
            }
            DataCr if b == b'\r' => self.state = DataLf,
            DataLf if b == b'\n' => self.state = SizeStart,
            DataCr | DataLf => return Err(BodyError::Malformed),
            TrailerStart if b == b'\r' => self.state = FinalLf,
            TrailerStart | Trailer => {
                if b == b'\r' {
                    // Only reachable in `Trailer`: a line start with CR is the end.
                    self.state = TrailerLf;
                    return Ok(());
                }
                // A line may not start with whitespace (obsolete line folding).
                let folded = self.state == TrailerStart && (b == b' ' || b == b'\t');
                if folded || !is_field_byte(b) {
                    return Err(BodyError::Malformed);
                }
                if self.state == TrailerStart {
                    self.line_len = 0;
                    self.state = Trailer;
                }
                self.bump_line()?;
                self.trailer_total += 1;
                if self.trailer_total > MAX_TRAILER_BYTES {
                    return Err(BodyError::Malformed);
                }
            }
            TrailerLf if b == b'\n' => self.state = TrailerStart,
            FinalLf if b == b'\n' => self.state = Done,
            TrailerLf | FinalLf => return Err(BodyError::Malformed),
            Data | Done | Failed => return Err(BodyError::Malformed), // handled by decode
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Writing responses

/// The reason phrase for `status`; empty for codes this server does not use
/// (an empty reason phrase is valid HTTP/1.1).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends `s` minus CR, LF and NUL: a header name or value can never end the
/// field line or the head early, whatever the caller passes.
fn push_field_text(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        out.extend(s.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    push_field_text(out, name);
    out.extend_from_slice(b": ");
    push_field_text(out, value);
    out.extend_from_slice(b"\r\n");
}

fn write_status_line(out: &mut Vec<u8>, status: u16) {
    debug_assert!((100..=999).contains(&status), "bad status code {status}");
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether a response with `status` never has content (RFC 9110 §6.4.1).
fn status_has_no_content(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Appends a complete response: status line, `headers`, `Content-Type` if given,
/// `Content-Length`, `Connection: close` if `close`, blank line, `body`.
///
/// For 1xx, 204 and 304, which never carry content, `Content-Length` and the body
/// are left out (`body` should be empty). No `Date` field: this crate has no
/// clock; pass one in `headers` if wanted. CR, LF and NUL are removed from
/// header names and values.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
    close: bool,
) {
    let no_content = status_has_no_content(status);
    debug_assert!(
        !no_content || body.is_empty(),
        "status {status} has no body"
    );
    out.reserve(body.len().saturating_add(128));
    write_status_line(out, status);
    for (name, value) in headers {
        write_field(out, name, value);
    }
    if let Some(content_type) = content_type {
        write_field(out, "Content-Type", content_type);
    }
    if !no_content {
        out.extend_from_slice(b"Content-Length: ");
        write_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !no_content {
        out.extend_from_slice(body);
    }
}

/// Appends a response head with no framing of its own (no `Content-Length`): for
/// streamed responses such as an SSE stream (`sse::RESPONSE_HEADERS`), or a
/// `101 Switching Protocols`. The body then runs until the connection closes.
pub fn write_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    write_status_line(out, status);
    for (name, value) in headers {
        write_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------
// Percent-decoding

/// Why percent-decoding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    #[error("invalid percent-escape at byte {at}")]
    InvalidEscape { at: usize },
    #[error("percent-decoded text is not valid UTF-8")]
    NotUtf8,
}

fn decode_percent(s: &str, plus_is_space: bool) -> Result<Cow<'_, str>, PercentError> {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PercentError::InvalidEscape { at: i });
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PercentError::NotUtf8)
}

/// Decodes `%XX` escapes (hex digits in either case). `+` stays `+`: use this for
/// paths. Borrowed when there is nothing to decode. A `%` not followed by two hex
/// digits, or a result that is not UTF-8, is an error. Note that `%2F` decodes
/// to `/` and `%00` to NUL: decode after splitting a path into segments.
pub fn percent_decode(s: &str) -> Result<Cow<'_, str>, PercentError> {
    decode_percent(s, false)
}

/// The `key=value` pairs of a query string (`application/x-www-form-urlencoded`):
/// split on `&`, empty pieces skipped, split at the first `=` (a piece without
/// one is a key with an empty value), `+` is a space, then percent-decoded.
pub fn query_pairs(
    query: &str,
) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), PercentError>> {
    query.split('&').filter(|p| !p.is_empty()).map(|piece| {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        Ok((decode_percent(key, true)?, decode_percent(value, true)?))
    })
}

// ---------------------------------------------------------------------------
// Client side: responses and requests

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: 1xx, 204, 304 (and, which the parser cannot know, any response
    /// to HEAD or a 2xx to CONNECT).
    None,
    Length(u64),
    Chunked,
    /// The body runs until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy)]
pub struct Response<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub minor_version: u8,
    pub headers: &'h [Header<'b>],
    /// Bytes of the head including the final blank line.
    pub head_len: usize,
    pub body: ResponseFraming,
    /// Whether the connection may be reused after this response's body.
    pub keep_alive: bool,
}

impl<'h, 'b> Response<'h, 'b> {
    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        find_header(self.headers, name)
    }

    /// Whether any `name` field holds `token` in its comma-separated list.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        has_token(self.headers, name, token)
    }
}

/// Parses a response head from the start of `buf` (`Ok(None)`: incomplete). The
/// head may be up to [`MAX_RESPONSE_HEAD_BYTES`] with `headers.len()` fields.
/// A response with both `Transfer-Encoding` and `Content-Length` is rejected
/// (a conforming server never sends one).
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
) -> Result<Option<Response<'h, 'b>>, HeadError> {
    let window = buf.get(..MAX_RESPONSE_HEAD_BYTES).unwrap_or(buf);
    let mut resp = httparse::Response::new(headers);
    let head_len = match resp.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD_BYTES => {
            return Err(HeadError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let httparse::Response {
        version,
        code,
        reason,
        headers,
    } = resp;
    let headers: &'h [Header<'b>] = headers;
    let (Some(minor_version), Some(status)) = (version, code) else {
        return Err(HeadError::Malformed); // unreachable for a complete parse
    };
    let length = content_length(headers)?;
    let codings = transfer_codings(headers);
    let body = if status_has_no_content(status) {
        ResponseFraming::None
    } else {
        match codings {
            Codings::Absent => length.map_or(ResponseFraming::UntilClose, ResponseFraming::Length),
            _ if length.is_some() => return Err(HeadError::ConflictingFraming),
            Codings::Chunked => ResponseFraming::Chunked,
            Codings::Other {
                final_chunked: true,
            } => {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
            Codings::Other {
                final_chunked: false,
            } => ResponseFraming::UntilClose,
            Codings::Invalid => return Err(HeadError::Malformed),
        }
    };
    let keep_alive = body != ResponseFraming::UntilClose && persistent(headers, minor_version);
    Ok(Some(Response {
        status,
        reason: reason.unwrap_or_default(),
        minor_version,
        headers,
        head_len,
        body,
        keep_alive,
    }))
}

/// Appends an HTTP/1.1 request: request line, `Host`, `headers`, then
/// `Content-Length` when `body` is non-empty or the method is POST, PUT or PATCH,
/// the blank line and `body`. `headers` must not carry their own `Host` or
/// framing fields. CR, LF and NUL are removed from every field and from the
/// request line's parts, and spaces from `method` and `target`.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    out.reserve(body.len().saturating_add(128));
    let request_line_part = |out: &mut Vec<u8>, s: &str| {
        out.extend(s.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0 | b' ')));
    };
    request_line_part(out, method);
    out.push(b' ');
    request_line_part(out, target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_field(out, "Host", host);
    for (name, value) in headers {
        write_field(out, name, value);
    }
    let wants_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if wants_length {
        out.extend_from_slice(b"Content-Length: ");
        write_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<Header<'static>> {
        vec![EMPTY_HEADER; DEFAULT_MAX_HEADERS]
    }

    /// The owned essentials of a parsed request.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        method: String,
        path: String,
        query: String,
        minor: u8,
        head_len: usize,
        body: BodyFraming,
        keep_alive: bool,
        expect: bool,
    }

    /// Parses `buf` with default limits.
    fn parse(buf: &[u8]) -> Result<Option<Parsed>, HeadError> {
        let mut h = vec![EMPTY_HEADER; DEFAULT_MAX_HEADERS];
        parse_request(buf, &Limits::default(), &mut h).map(|r| {
            r.map(|r| Parsed {
                method: r.method.to_owned(),
                path: r.path.to_owned(),
                query: r.query.to_owned(),
                minor: r.minor_version,
                head_len: r.head_len,
                body: r.body,
                keep_alive: r.keep_alive,
                expect: r.expect_continue,
            })
        })
    }

    fn err(buf: &[u8]) -> HeadError {
        match parse(buf) {
            Err(e) => e,
            Ok(r) => panic!(
                "expected an error for {:?}, got {r:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn framing(extra: &str) -> Result<BodyFraming, HeadError> {
        let buf = format!("POST /p HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        parse(buf.as_bytes()).map(|r| r.expect("complete").body)
    }

    // --- request heads

    #[test]
    fn parses_a_simple_get() {
        let buf = b"GET /sub/chat.lobby?last=5&x=%20 HTTP/1.1\r\nHost: example\r\nUser-Agent: t\r\n\r\nNEXT";
        let mut h = headers();
        let r = parse_request(buf, &Limits::default(), &mut h)
            .unwrap()
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/sub/chat.lobby?last=5&x=%20");
        assert_eq!(r.path, "/sub/chat.lobby");
        assert_eq!(r.query, "last=5&x=%20");
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.head_len, buf.len() - 4);
        assert_eq!(&buf[r.head_len..], b"NEXT");
        assert_eq!(r.body, BodyFraming::None);
        assert!(r.keep_alive);
        assert!(!r.expect_continue);
        assert_eq!(r.header("HOST"), Some(&b"example"[..]));
        assert_eq!(r.header("user-agent"), Some(&b"t"[..]));
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn path_without_query_and_empty_query() {
        let p = parse(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((p.path.as_str(), p.query.as_str()), ("/a", ""));
        let p = parse(b"GET /a? HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((p.path.as_str(), p.query.as_str()), ("/a", ""));
        let p = parse(b"GET /a?b?c HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((p.path.as_str(), p.query.as_str()), ("/a", "b?c"));
    }

    #[test]
    fn incomplete_until_the_blank_line_byte_by_byte() {
        let buf = b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let head_len = buf.len() - 3;
        for n in 0..head_len {
            assert_eq!(parse(&buf[..n]), Ok(None), "prefix of {n} bytes");
        }
        for n in head_len..=buf.len() {
            let r = parse(&buf[..n]).unwrap().unwrap();
            assert_eq!(r.head_len, head_len);
            assert_eq!(r.body, BodyFraming::Length(3));
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let r = parse(buf).unwrap().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.head_len, buf.len());
    }

    #[test]
    fn bare_lf_line_ends_accepted() {
        let r = parse(b"GET / HTTP/1.1\nHost: x\n\n").unwrap().unwrap();
        assert_eq!(r.head_len, 24);
    }

    #[test]
    fn http10_accepted() {
        let r = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.minor, 0);
        assert!(!r.keep_alive, "HTTP/1.0 closes by default");
    }

    #[test]
    fn versions() {
        assert_eq!(
            err(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(
            err(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(
            err(b"GET / HTTP/3\r\nHost: x\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(
            err(b"GET / HTTP/x.1\r\nHost: x\r\n\r\n"),
            HeadError::Malformed
        );
        assert_eq!(
            err(b"GET / FTP/1.1\r\nHost: x\r\n\r\n"),
            HeadError::Malformed
        );
        assert_eq!(
            err(b"GET / http/1.1\r\nHost: x\r\n\r\n"),
            HeadError::Malformed
        );
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
    }

    #[test]
    fn malformed_heads() {
        let cases: &[&[u8]] = &[
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /\r\nHost: x\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\rHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for &buf in cases {
            assert_eq!(
                err(buf),
                HeadError::Malformed,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), HeadError::BadHost);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            HeadError::BadHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            HeadError::BadHost
        );
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
        assert_eq!(HeadError::BadHost.status(), 400);
    }

    #[test]
    fn head_too_large_vs_uri_too_long() {
        let limits = Limits {
            max_head_bytes: 64,
            max_headers: 8,
        };
        let mut h = headers();
        // Request line alone longer than the limit.
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse_request(long_uri.as_bytes(), &limits, &mut h).unwrap_err(),
            HeadError::UriTooLong
        );
        // Still arriving, not yet at the limit: incomplete.
        assert!(
            parse_request(&long_uri.as_bytes()[..63], &limits, &mut h)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            parse_request(&long_uri.as_bytes()[..64], &limits, &mut h).unwrap_err(),
            HeadError::UriTooLong
        );
        // Request line fine, header section too long.
        let long_head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(100)
        );
        assert_eq!(
            parse_request(long_head.as_bytes(), &limits, &mut h).unwrap_err(),
            HeadError::HeadTooLarge
        );
        assert_eq!(HeadError::HeadTooLarge.status(), 431);
        assert_eq!(HeadError::UriTooLong.status(), 414);
    }

    #[test]
    fn head_exactly_at_the_limit_is_accepted() {
        let base = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n";
        let pad = "p".repeat(100 - base.len());
        let buf = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\nBODY");
        let limits = Limits {
            max_head_bytes: 100,
            max_headers: 8,
        };
        let mut h = headers();
        let r = parse_request(buf.as_bytes(), &limits, &mut h)
            .unwrap()
            .unwrap();
        assert_eq!(r.head_len, 100);
        let limits = Limits {
            max_head_bytes: 99,
            max_headers: 8,
        };
        assert_eq!(
            parse_request(buf.as_bytes(), &limits, &mut h).unwrap_err(),
            HeadError::HeadTooLarge
        );
    }

    #[test]
    fn too_many_headers() {
        let mut buf = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 1..DEFAULT_MAX_HEADERS {
            buf.push_str(&format!("X-{i}: v\r\n"));
        }
        let at_limit = format!("{buf}\r\n");
        let r = parse(at_limit.as_bytes()).unwrap();
        assert!(r.is_some(), "{DEFAULT_MAX_HEADERS} fields are fine");
        let over = format!("{buf}X-Over: v\r\n\r\n");
        assert_eq!(err(over.as_bytes()), HeadError::TooManyHeaders);
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn max_headers_limit_caps_a_larger_array() {
        let limits = Limits {
            max_head_bytes: 8192,
            max_headers: 2,
        };
        let mut h = vec![EMPTY_HEADER; 16];
        let ok = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\n\r\n";
        assert!(parse_request(ok, &limits, &mut h).unwrap().is_some());
        let over = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(
            parse_request(over, &limits, &mut h).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn keep_alive_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("1.1", "", true),
            ("1.1", "Connection: close\r\n", false),
            ("1.1", "Connection: CLOSE\r\n", false),
            ("1.1", "Connection: keep-alive, close\r\n", false),
            ("1.1", "Connection: Upgrade\r\nConnection: close\r\n", false),
            ("1.1", "Connection: closed\r\n", true),
            ("1.1", "Connection: keep-alive\r\n", true),
            ("1.0", "", false),
            ("1.0", "Connection: keep-alive\r\n", true),
            ("1.0", "Connection: Keep-Alive\r\n", true),
            ("1.0", "Connection: keep-alive, close\r\n", false),
        ];
        for (version, extra, want) in cases {
            let buf = format!("GET / HTTP/{version}\r\nHost: x\r\n{extra}\r\n");
            assert_eq!(
                parse(buf.as_bytes()).unwrap().unwrap().keep_alive,
                *want,
                "{version} {extra:?}"
            );
        }
    }

    #[test]
    fn expect_continue() {
        let yes = parse(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n",
        );
        assert!(yes.unwrap().unwrap().expect);
        let http10 = parse(b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n");
        assert!(!http10.unwrap().unwrap().expect, "ignored for HTTP/1.0");
        let other = parse(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n");
        assert!(!other.unwrap().unwrap().expect);
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn header_has_token_splits_lists() {
        let buf = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive ,\tUpgrade\r\nUpgrade: WebSocket\r\nX: a,,b\r\n\r\n";
        let mut h = headers();
        let r = parse_request(buf, &Limits::default(), &mut h)
            .unwrap()
            .unwrap();
        assert!(r.header_has_token("connection", "upgrade"));
        assert!(r.header_has_token("Connection", "KEEP-ALIVE"));
        assert!(r.header_has_token("upgrade", "websocket"));
        assert!(r.header_has_token("x", "b"));
        assert!(!r.header_has_token("x", ""));
        assert!(!r.header_has_token("connection", "close"));
        assert!(!r.header_has_token("connection", "keep"));
        assert!(!r.header_has_token("missing", "a"));
    }

    #[test]
    fn body_framing_table() {
        use BodyFraming as F;
        use HeadError as E;
        let cases: &[(&str, Result<BodyFraming, HeadError>)] = &[
            ("", Ok(F::None)),
            ("Content-Length: 0\r\n", Ok(F::Length(0))),
            ("Content-Length: 42\r\n", Ok(F::Length(42))),
            ("Content-Length:  007 \r\n", Ok(F::Length(7))),
            (
                "Content-Length: 18446744073709551615\r\n",
                Ok(F::Length(u64::MAX)),
            ),
            (
                "Content-Length: 18446744073709551616\r\n",
                Err(E::BadContentLength),
            ),
            (
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                Ok(F::Length(5)),
            ),
            (
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                Err(E::BadContentLength),
            ),
            ("Content-Length: 5, 5\r\n", Err(E::BadContentLength)),
            ("Content-Length: +5\r\n", Err(E::BadContentLength)),
            ("Content-Length: -1\r\n", Err(E::BadContentLength)),
            ("Content-Length: 0x10\r\n", Err(E::BadContentLength)),
            ("Content-Length: 1.0\r\n", Err(E::BadContentLength)),
            ("Content-Length: 1 2\r\n", Err(E::BadContentLength)),
            ("Content-Length: \r\n", Err(E::BadContentLength)),
            ("Transfer-Encoding: chunked\r\n", Ok(F::Chunked)),
            ("Transfer-Encoding: Chunked\r\n", Ok(F::Chunked)),
            ("Transfer-Encoding: , chunked\r\n", Ok(F::Chunked)),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Err(E::ConflictingFraming),
            ),
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                Err(E::ConflictingFraming),
            ),
            (
                "Transfer-Encoding: gzip\r\n",
                Err(E::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked, gzip\r\n",
                Err(E::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                Err(E::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: identity\r\n",
                Err(E::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                Err(E::UnsupportedTransferEncoding),
            ),
            ("Transfer-Encoding: chunked, chunked\r\n", Err(E::Malformed)),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                Err(E::Malformed),
            ),
            ("Transfer-Encoding: \r\n", Err(E::Malformed)),
        ];
        for (extra, want) in cases {
            assert_eq!(framing(extra), *want, "{extra:?}");
        }
    }

    #[test]
    fn transfer_encoding_in_http10_is_faulty() {
        let buf = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(err(buf), HeadError::Malformed);
    }

    #[test]
    fn error_status_and_reason() {
        let all = [
            (HeadError::Malformed, 400),
            (HeadError::BadContentLength, 400),
            (HeadError::ConflictingFraming, 400),
            (HeadError::BadHost, 400),
            (HeadError::UriTooLong, 414),
            (HeadError::HeadTooLarge, 431),
            (HeadError::TooManyHeaders, 431),
            (HeadError::UnsupportedTransferEncoding, 501),
            (HeadError::UnsupportedVersion, 505),
        ];
        for (e, status) in all {
            assert_eq!(e.status(), status, "{e:?}");
            assert!(!e.reason().is_empty());
            assert_eq!(e.reason(), e.to_string());
            assert!(!reason_phrase(status).is_empty());
        }
        assert_eq!(BodyError::TooLarge.status(), 413);
        assert_eq!(BodyError::Malformed.status(), 400);
    }

    // --- chunked bodies

    /// Decodes `input` in pieces of the sizes `cuts` yields (cycled).
    fn decode_in_pieces(
        input: &[u8],
        cuts: &mut dyn FnMut() -> usize,
        max: usize,
    ) -> Result<(Vec<u8>, usize), BodyError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pos: usize = 0;
        loop {
            let end = pos.saturating_add(cuts().max(1)).min(input.len());
            let got = d.decode(&input[pos..end], &mut out, max)?;
            if got.done {
                assert!(d.is_done());
                return Ok((out, pos + got.consumed));
            }
            assert_eq!(got.consumed, end - pos, "consumes all input until done");
            pos = end;
            if end == input.len() {
                return Err(BodyError::Malformed); // ran out: incomplete
            }
        }
    }

    fn decode_whole(input: &[u8], max: usize) -> Result<(Vec<u8>, usize), BodyError> {
        decode_in_pieces(input, &mut || usize::MAX, max)
    }

    fn decode_bytewise(input: &[u8], max: usize) -> Result<(Vec<u8>, usize), BodyError> {
        decode_in_pieces(input, &mut || 1, max)
    }

    /// Tiny deterministic xorshift64 PRNG.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn encode_chunked(body: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn chunked_basic() {
        let input = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let body_end = input.len() - b"GET / HTTP/1.1\r\n".len();
        for (out, consumed) in [
            decode_whole(input, 100).unwrap(),
            decode_bytewise(input, 100).unwrap(),
        ] {
            assert_eq!(out, b"hello, world");
            assert_eq!(consumed, body_end, "stops right after the final CRLF");
        }
    }

    #[test]
    fn chunked_extensions_hex_case_and_trailers() {
        let input = b"A;name=value;flag\r\n0123456789\r\nf ; x=\"q;d\"\r\nabcdefghijklmno\r\n0;last\r\nX-Trailer: 1\r\nChecksum: abc\r\n\r\n";
        let (out, consumed) = decode_bytewise(input, 1000).unwrap();
        assert_eq!(out, b"0123456789abcdefghijklmno");
        assert_eq!(consumed, input.len());
        let upper = b"1F\r\n0123456789012345678901234567890\r\n0\r\n\r\n";
        assert_eq!(decode_whole(upper, 1000).unwrap().0.len(), 31);
        let leading_zeros = b"0005\r\nhello\r\n000\r\n\r\n";
        assert_eq!(decode_whole(leading_zeros, 1000).unwrap().0, b"hello");
    }

    #[test]
    fn chunked_round_trip_random_fragments() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for round in 0..200 {
            let len = (rng.next() % 300) as usize;
            let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let chunk = 1 + (rng.next() % 64) as usize;
            let mut input = encode_chunked(&body, chunk);
            let body_end = input.len();
            input.extend_from_slice(b"trailing pipelined bytes");
            let mut cut_rng = XorShift(round + 1);
            let mut cuts = move || 1 + (cut_rng.next() % 9) as usize;
            let (out, consumed) = decode_in_pieces(&input, &mut cuts, 10_000).unwrap();
            assert_eq!(out, body, "round {round}");
            assert_eq!(consumed, body_end, "round {round}");
        }
    }

    #[test]
    fn chunked_incomplete_input_is_consumed_not_done() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let got = d.decode(b"5\r\nhel", &mut out, 100).unwrap();
        assert_eq!(
            got,
            Decoded {
                consumed: 6,
                done: false
            }
        );
        assert_eq!(out, b"hel");
        assert_eq!(d.body_len(), 3);
        let got = d.decode(b"", &mut out, 100).unwrap();
        assert_eq!(
            got,
            Decoded {
                consumed: 0,
                done: false
            }
        );
        let got = d.decode(b"lo\r\n0\r\n\r\nrest", &mut out, 100).unwrap();
        assert_eq!(
            got,
            Decoded {
                consumed: 9,
                done: true
            }
        );
        assert_eq!(d.body_len(), 5);
        // Once done, nothing more is consumed.
        let got = d.decode(b"more", &mut out, 100).unwrap();
        assert_eq!(
            got,
            Decoded {
                consumed: 0,
                done: true
            }
        );
        assert_eq!(out, b"hello");
    }

    #[test]
    fn chunked_too_large_detected_from_the_size_line() {
        // Exactly at the limit is fine.
        assert_eq!(
            decode_whole(b"a\r\n0123456789\r\n0\r\n\r\n", 10)
                .unwrap()
                .0
                .len(),
            10
        );
        // The size says 11 > 10: rejected before any data or even the CRLF arrives.
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.decode(b"b", &mut Vec::new(), 10),
            Err(BodyError::TooLarge)
        );
        // Cumulative over chunks.
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        d.decode(b"6\r\nabcdef\r\n", &mut out, 10).unwrap();
        assert_eq!(d.decode(b"5", &mut out, 10), Err(BodyError::TooLarge));
        // A huge size is TooLarge, not an allocation.
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.decode(b"ffffffffffff\r\n", &mut out, 1 << 20),
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn chunked_hex_overflow() {
        let mut d = ChunkedDecoder::new();
        let sixteen_f = b"ffffffffffffffff"; // u64::MAX, fits
        assert!(d.decode(sixteen_f, &mut Vec::new(), usize::MAX).is_ok());
        assert_eq!(
            d.decode(b"f", &mut Vec::new(), usize::MAX),
            Err(BodyError::Malformed)
        );
    }

    #[test]
    fn chunked_malformed_table() {
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE_BYTES));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_CHUNK_LINE_BYTES));
        let cases: Vec<&[u8]> = vec![
            b"\r\n",                     // empty size line
            b" 5\r\nhello\r\n0\r\n\r\n", // leading space
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",          // bare LF after size
            b"5\r\nhello\n0\r\n\r\n",          // bare LF after data
            b"5\r\nhelloX\r\n0\r\n\r\n",       // data longer than announced
            b"5\r\nhell\r\n0\r\n\r\n",         // shorter: CR taken as data, then "\n0" is not CRLF
            b"5 x\r\nhello\r\n0\r\n\r\n",      // garbage after size
            b"5;a\x01b\r\nhello\r\n0\r\n\r\n", // control char in extension
            b"5;a\nhello\r\n0\r\n\r\n",        // bare LF in extension
            b"0\r\nX: 1\n\r\n",                // bare LF in trailer
            b"0\r\n folded\r\n\r\n",           // obs-fold in trailer
            b"0\r\nX: a\x00\r\n\r\n",          // NUL in trailer
            b"0\r\n\rX",                       // final CR without LF
            b"0\r\n\n",                        // final bare LF
            long_ext.as_bytes(),
            long_trailer.as_bytes(),
        ];
        for input in cases {
            assert_eq!(
                decode_whole(input, 1000),
                Err(BodyError::Malformed),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                decode_bytewise(input, 1000),
                Err(BodyError::Malformed),
                "bytewise {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunked_line_bound_is_exact() {
        // A size line of exactly MAX_CHUNK_LINE_BYTES (size + extension) is fine.
        let ext = "e".repeat(MAX_CHUNK_LINE_BYTES - 2);
        let ok = format!("1;{ext}\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_whole(ok.as_bytes(), 10).unwrap().0, b"x");
        let trailer = format!("X: {}", "t".repeat(MAX_CHUNK_LINE_BYTES - 3));
        let ok = format!("0\r\n{trailer}\r\n\r\n");
        assert!(decode_whole(ok.as_bytes(), 10).is_ok());
    }

    #[test]
    fn chunked_extension_and_trailer_totals_are_bounded() {
        let mut input = Vec::new();
        let ext = "e".repeat(1000);
        for _ in 0..(MAX_CHUNK_EXT_TOTAL_BYTES / 1000 + 1) {
            input.extend_from_slice(format!("1;{ext}\r\nx\r\n").as_bytes());
        }
        input.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode_whole(&input, 1 << 20), Err(BodyError::Malformed));

        let mut input = b"0\r\n".to_vec();
        for i in 0..(MAX_TRAILER_BYTES / 100 + 1) {
            input.extend_from_slice(format!("X-{i:04}: {}\r\n", "t".repeat(92)).as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(decode_whole(&input, 1 << 20), Err(BodyError::Malformed));
    }

    #[test]
    fn chunked_errors_are_sticky() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(b"z", &mut out, 10), Err(BodyError::Malformed));
        assert_eq!(
            d.decode(b"0\r\n\r\n", &mut out, 10),
            Err(BodyError::Malformed)
        );
        assert!(!d.is_done());
    }

    // --- writing responses

    #[test]
    fn writes_a_response() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            202,
            &[("X-Id", "7")],
            Some("application/json"),
            b"{\"ok\":1}",
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 202 Accepted\r\nX-Id: 7\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"ok\":1}"
        );
        out.clear();
        write_response(&mut out, 404, &[], None, b"", true);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn no_content_statuses_have_no_length() {
        let mut out = Vec::new();
        write_response(&mut out, 204, &[], None, b"", false);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
        out.clear();
        write_response(&mut out, 101, &[("Upgrade", "websocket")], None, b"", false);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn write_head_has_no_framing() {
        let mut out = Vec::new();
        write_head(&mut out, 200, crate::sse::RESPONSE_HEADERS);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n"
        );
    }

    #[test]
    fn header_injection_is_stripped() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            &[("X-A", "1\r\nSet-Cookie: evil")],
            Some("text/plain\n"),
            b"",
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nX-A: 1Set-Cookie: evil\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
        );
        out.clear();
        write_request(&mut out, "GET", "/a b\r\nX: y", "h\r\n", &[], b"");
        assert_eq!(out, b"GET /abX:y HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn reason_phrases() {
        let required = [
            (100, "Continue"),
            (101, "Switching Protocols"),
            (200, "OK"),
            (202, "Accepted"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (413, "Content Too Large"),
            (414, "URI Too Long"),
            (426, "Upgrade Required"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"),
        ];
        for (status, phrase) in required {
            assert_eq!(reason_phrase(status), phrase);
        }
        assert_eq!(reason_phrase(299), "");
        let mut out = Vec::new();
        write_head(&mut out, 299, &[]);
        assert_eq!(out, b"HTTP/1.1 299 \r\n\r\n");
    }

    // --- percent-decoding

    #[test]
    fn percent_decode_table() {
        let ok: &[(&str, &str)] = &[
            ("", ""),
            ("plain", "plain"),
            ("a%20b", "a b"),
            ("%2f%2F", "//"),
            ("a+b", "a+b"),
            ("%2B", "+"),
            ("%C3%A9", "é"),
            ("%e2%82%ac", "€"),
            ("100%25", "100%"),
            ("é", "é"),
        ];
        for (input, want) in ok {
            assert_eq!(percent_decode(input).unwrap(), *want, "{input:?}");
        }
        assert!(matches!(percent_decode("plain").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(percent_decode("a+b").unwrap(), Cow::Borrowed(_)));
        let bad: &[(&str, PercentError)] = &[
            ("%", PercentError::InvalidEscape { at: 0 }),
            ("a%2", PercentError::InvalidEscape { at: 1 }),
            ("%zz", PercentError::InvalidEscape { at: 0 }),
            ("%2g", PercentError::InvalidEscape { at: 0 }),
            ("ok%%41", PercentError::InvalidEscape { at: 2 }),
            ("%ff", PercentError::NotUtf8),
            ("%C3", PercentError::NotUtf8),
            ("%C3%28", PercentError::NotUtf8),
        ];
        for (input, want) in bad {
            assert_eq!(percent_decode(input), Err(*want), "{input:?}");
        }
    }

    #[test]
    fn query_pairs_table() {
        let pairs = |q: &str| -> Vec<(String, String)> {
            query_pairs(q)
                .map(|r| r.unwrap())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        };
        let own = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(pairs(""), own(&[]));
        assert_eq!(pairs("a=1&b=2"), own(&[("a", "1"), ("b", "2")]));
        assert_eq!(pairs("&&a=1&&"), own(&[("a", "1")]));
        assert_eq!(pairs("flag&x="), own(&[("flag", ""), ("x", "")]));
        assert_eq!(pairs("k=a=b"), own(&[("k", "a=b")]));
        assert_eq!(
            pairs("q=a+b%2Bc&n%20m=%C3%A9"),
            own(&[("q", "a b+c"), ("n m", "é")])
        );
        assert_eq!(pairs("=v"), own(&[("", "v")]));
        let mut it = query_pairs("ok=1&bad=%zz&after=2");
        assert!(it.next().unwrap().is_ok());
        assert_eq!(
            it.next().unwrap(),
            Err(PercentError::InvalidEscape { at: 0 })
        );
        assert!(it.next().unwrap().is_ok());
    }

    // --- client side

    type RespSummary = (u16, ResponseFraming, bool, usize);

    fn resp(buf: &[u8]) -> Result<Option<RespSummary>, HeadError> {
        let mut h = headers();
        parse_response(buf, &mut h).map(|r| r.map(|r| (r.status, r.body, r.keep_alive, r.head_len)))
    }

    #[test]
    fn response_framing_table() {
        use ResponseFraming as F;
        type Want = Result<(u16, F, bool), HeadError>;
        let cases: &[(&[u8], Want)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok((200, F::Length(5), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok((200, F::Chunked, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
                Ok((200, F::UntilClose, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Ok((200, F::UntilClose, false)),
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Ok((204, F::None, true))),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                Ok((304, F::None, true)),
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Ok((101, F::None, true)),
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", Ok((100, F::None, true))),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
                Ok((200, F::Length(1), false)),
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Ok((200, F::Length(1), false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HeadError::ConflictingFraming),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                Err(HeadError::BadContentLength),
            ),
            (b"HTTP/1.1 2000 OK\r\n\r\n", Err(HeadError::Malformed)),
            (b"HTTQ/1.1 200 OK\r\n\r\n", Err(HeadError::Malformed)),
        ];
        for (buf, want) in cases {
            let got = resp(buf).map(|r| {
                let r = r.expect("complete");
                assert_eq!(r.3, buf.len());
                (r.0, r.1, r.2)
            });
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn response_incomplete_and_too_large() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for n in 0..buf.len() {
            assert_eq!(resp(&buf[..n]), Ok(None), "{n}");
        }
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX: {}",
            "a".repeat(MAX_RESPONSE_HEAD_BYTES)
        );
        assert_eq!(resp(huge.as_bytes()), Err(HeadError::HeadTooLarge));
        let mut few = [EMPTY_HEADER; 1];
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", &mut few).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn write_response_then_parse_response() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            202,
            &[("X-Seq", "9")],
            Some("application/json"),
            b"{\"seq\":9}",
            false,
        );
        let mut h = headers();
        let r = parse_response(&out, &mut h).unwrap().unwrap();
        assert_eq!((r.status, r.reason, r.minor_version), (202, "Accepted", 1));
        assert_eq!(r.body, ResponseFraming::Length(9));
        assert_eq!(&out[r.head_len..], b"{\"seq\":9}");
        assert_eq!(r.header("x-seq"), Some(&b"9"[..]));
        assert!(r.keep_alive);
        assert!(r.header_has_token("content-type", "application/json"));
    }

    #[test]
    fn write_request_then_parse_request() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "POST",
            "/pub/chat.lobby",
            "localhost:8080",
            &[("X-Key", "k")],
            b"hello",
        );
        assert_eq!(
            out,
            b"POST /pub/chat.lobby HTTP/1.1\r\nHost: localhost:8080\r\nX-Key: k\r\nContent-Length: 5\r\n\r\nhello"
        );
        let mut h = headers();
        let r = parse_request(&out, &Limits::default(), &mut h)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.method, r.path, r.body),
            ("POST", "/pub/chat.lobby", BodyFraming::Length(5))
        );
        assert_eq!(&out[r.head_len..], b"hello");
        assert_eq!(r.header("host"), Some(&b"localhost:8080"[..]));

        out.clear();
        write_request(&mut out, "GET", "/sse/a", "h", &[], b"");
        assert_eq!(out, b"GET /sse/a HTTP/1.1\r\nHost: h\r\n\r\n");
        out.clear();
        write_request(&mut out, "POST", "/pub/a", "h", &[], b"");
        assert_eq!(
            out,
            b"POST /pub/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn no_panics_on_arbitrary_bytes() {
        let mut rng = XorShift(42);
        let alphabet = b"GET /HTP1.0\r\n:;, aZ\x00\xff-chunkedTransfer-EncodingContent-Length9f";
        for _ in 0..5000 {
            let len = (rng.next() % 80) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = parse(&buf);
            let _ = resp(&buf);
            let mut d = ChunkedDecoder::new();
            let _ = d.decode(&buf, &mut Vec::new(), 64);
            if let Ok(s) = std::str::from_utf8(&buf) {
                let _ = percent_decode(s);
                let _ = query_pairs(s).count();
            }
        }
    }
}
