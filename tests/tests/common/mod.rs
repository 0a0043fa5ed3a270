//! Helpers shared by the end-to-end test files (each file is its own crate and uses a
//! subset, hence the `dead_code` allowance). Everything here talks to the server over
//! real sockets with the harness's timeouts, so a misbehaving server fails a test
//! instead of hanging it.

#![allow(dead_code)]

pub mod ami;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_e2e::*;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `header.payload.signature`, signed with HMAC-SHA-256 under `key` (a JWT when the
/// header says HS256).
pub fn sign(key: &str, header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// `POST /publish/<path_topic>` on a fresh connection; asserts `202` with the body
/// `{"topic":..,"seq":..}` (exactly those two keys) and returns the `seq`.
pub fn publish(addr: SocketAddr, path_topic: &str, body: &[u8]) -> u64 {
    let r = http_request(addr, "POST", &format!("/publish/{path_topic}"), &[], body);
    ack_seq(&r, path_topic)
}

/// Publishes on a kept-alive connection; same checks as [`publish`].
pub fn publish_on(conn: &mut HttpConn, path_topic: &str, body: &[u8]) -> u64 {
    conn.send_request("POST", &format!("/publish/{path_topic}"), &[], body)
        .unwrap_or_else(|e| panic!("send publish: {e}"));
    let r = conn
        .read_response("POST")
        .unwrap_or_else(|e| panic!("publish response: {e}"));
    ack_seq(&r, path_topic)
}

/// Checks a publish answer (PROTOCOL.md "Publishing": `202`, `{"topic","seq"}`) and
/// returns its `seq`. `path_topic` may be percent-encoded (`%2F` only).
pub fn ack_seq(r: &HttpResponse, path_topic: &str) -> u64 {
    assert_eq!(r.status, 202, "publish to {path_topic}: {r:?} {}", r.text());
    let v = r.json();
    let obj = v.as_object().expect("publish answer is a JSON object");
    assert_eq!(
        obj.len(),
        2,
        "publish answer has exactly topic and seq: {v}"
    );
    assert_eq!(v["topic"], path_topic.replace("%2F", "/"), "{v}");
    v["seq"].as_u64().unwrap_or_else(|| panic!("seq: {v}"))
}

/// Asserts that `GET /healthz` answers `200 ok` (the server still serves others).
pub fn assert_healthy(addr: SocketAddr) {
    assert_eq!(http_get_ok(addr, "/healthz"), "ok");
}

/// Sends `bytes` on a fresh connection and reads one response.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> (HttpResponse, HttpConn) {
    let mut conn = HttpConn::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.send_raw(bytes)
        .unwrap_or_else(|e| panic!("write request: {e}"));
    let method = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.split(' ').next())
        .unwrap_or("GET")
        .to_string();
    let r = conn.read_response(&method).unwrap_or_else(|e| {
        panic!(
            "no response to {:?}: {e}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    });
    (r, conn)
}

/// Asserts the server closes `conn` (nothing more arrives; EOF or reset), waiting up to
/// [`DEFAULT_TIMEOUT`].
pub fn assert_closed(conn: &mut HttpConn, what: &str) {
    match conn.read_response("GET") {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ) => {}
        Err(e) => panic!("{what}: expected the server to close the connection, got {e}"),
        Ok(r) => panic!("{what}: expected the server to close the connection, got {r:?}"),
    }
}

/// How a read from a raw socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Eof,
    Reset,
    Timeout,
}

/// Reads from `stream` until EOF, reset or `timeout`; returns what arrived and how it
/// ended.
pub fn read_to_end(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, End::Timeout);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (out, End::Timeout);
            }
            Err(_) => return (out, End::Reset),
        }
    }
}

/// Reads from `stream` into `buf` until `done(buf)` holds; panics after `timeout` or
/// at EOF with what arrived.
pub fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
    mut done: impl FnMut(&[u8]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut tmp = vec![0u8; 64 * 1024];
    while !done(buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out; received so far: {:?}",
            String::from_utf8_lossy(buf)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut tmp) {
            Ok(0) => panic!(
                "connection closed; received so far: {:?}",
                String::from_utf8_lossy(buf)
            ),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "read: {e}; received so far: {:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }
}

/// The close code of a close frame payload (`None` if empty).
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// Reads messages from `ws` until a close arrives; returns the text messages before it
/// and the close code (`None` for an empty close frame or a closed connection).
pub fn read_until_close(ws: &mut WsClient) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    loop {
        match ws.recv(DEFAULT_TIMEOUT) {
            Some(tungstenite::Message::Text(t)) => {
                let is_hello =
                    serde_json::from_str::<Value>(t.as_str()).is_ok_and(|v| v["op"] == "hello");
                if !is_hello {
                    texts.push(t.as_str().to_string());
                }
            }
            Some(tungstenite::Message::Close(frame)) => {
                return (texts, frame.map(|f| u16::from(f.code)));
            }
            Some(other) => panic!("unexpected message {other:?}"),
            None => panic!("no close within {DEFAULT_TIMEOUT:?} (got {texts:?})"),
        }
    }
}

/// The router-wide sequence number in a position (PROTOCOL.md "Positions":
/// `EEEEEEEE-G`, 8 lowercase hex digits, `-`, a decimal number).
pub fn pos_gseq(pos: &str) -> u64 {
    let (epoch, gseq) = pos
        .split_once('-')
        .unwrap_or_else(|| panic!("position {pos:?} has no '-'"));
    assert!(
        epoch.len() == 8
            && epoch
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "position {pos:?}: the epoch is 8 lowercase hex digits"
    );
    gseq.parse()
        .unwrap_or_else(|_| panic!("position {pos:?}: a number after '-'"))
}

/// An envelope without its `pos` (PROTOCOL.md "The envelope"), after checking that it
/// has one and that it is a position; anything else (ops, resets) is returned as is.
pub fn strip_pos(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut()
        && obj.contains_key("data")
    {
        let pos = obj.remove("pos").unwrap_or_else(|| panic!("no pos: {v}"));
        pos_gseq(pos.as_str().expect("pos is a string"));
    }
    v
}

/// Checks a `{"op":"hello","id":ID}` message and returns the id (42 lowercase hex
/// digits: the connection's direct address is `client.<id>`).
pub fn hello_id(v: &Value) -> String {
    assert_eq!(v["op"], "hello", "expected the hello: {v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    let id = v["id"].as_str().expect("hello id is a string").to_string();
    assert!(
        id.len() == 42
            && id
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "{id:?}"
    );
    id
}

/// The next text message on `ws` other than the connection's `hello` (checked),
/// verbatim; panics on timeout.
pub fn next_text(ws: &mut WsClient) -> String {
    loop {
        let text = ws
            .recv_text(DEFAULT_TIMEOUT)
            .expect("a WebSocket message within the timeout");
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v["op"] == "hello" => {
                hello_id(&v);
            }
            _ => return text,
        }
    }
}

/// The next SSE event other than the `hello` event (checked); panics on timeout or
/// end of stream.
pub fn next_sse(sse: &mut SseClient) -> SseEvent {
    loop {
        let ev = sse.expect_event(DEFAULT_TIMEOUT);
        if ev.event != "hello" {
            return ev;
        }
        hello_id(&serde_json::from_str(&ev.data).expect("hello data is JSON"));
    }
}

/// The next JSON message on `ws`, panicking on timeout. The connection's `hello` is
/// checked and skipped, and an envelope's `pos` is checked and removed (see
/// [`strip_pos`]), so tests compare `{"topic","seq","data"}`.
pub fn next_json(ws: &mut WsClient) -> Value {
    loop {
        let v = ws
            .recv_json(DEFAULT_TIMEOUT)
            .expect("a WebSocket message within the timeout");
        if v["op"] == "hello" {
            hello_id(&v);
            continue;
        }
        return strip_pos(v);
    }
}

/// Subscribes `ws` with a `subscribe` op and checks the `subscribed` ack
/// (PROTOCOL.md "WebSocket": it lists the topics).
pub fn ws_subscribe(ws: &mut WsClient, topics: &[&str]) {
    ws.send_json(&json!({"op": "subscribe", "topics": topics}));
    assert_eq!(
        next_json(ws),
        json!({"op": "subscribed", "topics": topics}),
        "subscribe ack"
    );
}

// =====================================================================================
// Raw WebSocket (frames built byte by byte)
// =====================================================================================

/// One frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
    /// Bytes of the header (2, 4 or 10, plus 4 if masked): shows the length encoding.
    pub header_len: usize,
}

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// The bytes of a frame. `mask: Some(key)` masks the payload (clients must);
/// `len_override` writes another length in the header than the payload's (to announce
/// a huge frame without sending it).
pub fn frame_bytes(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    len_override: Option<u64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push((u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xF));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = len_override.unwrap_or(payload.len() as u64);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame (FIN and RSV as given).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_bytes(
        fin,
        0,
        opcode,
        payload,
        Some([0x37, 0xfa, 0x21, 0x3d]),
        None,
    )
}

/// A WebSocket over a plain `TcpStream`, for sending frames tungstenite refuses to send.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The handshake request for `path` (RFC 6455 §4.1), with `extra` header lines.
pub fn ws_handshake_request(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", WS_KEY),
    ];
    headers.extend_from_slice(extra);
    build_request(addr, "GET", path, &headers, b"", false)
}

impl RawWs {
    /// Connects, sends the handshake and checks the `101` with the right
    /// `Sec-WebSocket-Accept`.
    pub fn connect(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::connect_with(addr, path, b"")
    }

    /// [`RawWs::connect`] with `frames` written in the same write as the handshake
    /// request (before the `101` arrives).
    pub fn connect_with(addr: SocketAddr, path: &str, frames: &[u8]) -> RawWs {
        let mut stream = tcp_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let mut request = ws_handshake_request(addr, path, &[]);
        request.extend_from_slice(frames);
        stream.write_all(&request).unwrap();
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, DEFAULT_TIMEOUT, |b| {
            b.windows(4).any(|w| w == b"\r\n\r\n")
        });
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let accept = tungstenite::handshake::derive_accept_key(WS_KEY.as_bytes());
        assert!(
            head.lines().any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
                })
            }),
            "{head}"
        );
        buf.drain(..end);
        let mut ws = RawWs { stream, buf };
        if path.starts_with("/ws") {
            // PROTOCOL.md "Direct addresses": the first message is the hello.
            let f = ws.expect_frame();
            let v: Value = serde_json::from_slice(&f.payload)
                .unwrap_or_else(|e| panic!("hello is JSON ({e}): {f:?}"));
            hello_id(&v);
        }
        ws
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write frame: {e}"));
    }

    /// The next frame; `Err(End)` on EOF, reset or timeout.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + timeout;
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut tmp) {
                Ok(0) => return Err(End::Eof),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(End::Timeout);
                }
                Err(_) => return Err(End::Reset),
            }
        }
    }

    /// The next frame, panicking on EOF or timeout.
    pub fn expect_frame(&mut self) -> Frame {
        self.read_frame(DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("expected a frame, got {e:?}"))
    }

    /// Expects a close frame next (skipping nothing) and returns its code.
    pub fn expect_close(&mut self) -> Option<u16> {
        let f = self.expect_frame();
        assert_eq!(f.opcode, OP_CLOSE, "expected a close frame, got {f:?}");
        assert!(f.fin && !f.masked, "{f:?}");
        close_code(&f.payload)
    }

    /// Expects the server to end the TCP connection (EOF or reset, nothing else first).
    pub fn expect_eof(&mut self) {
        match self.read_frame(DEFAULT_TIMEOUT) {
            Err(End::Eof | End::Reset) => {}
            other => panic!("expected the server to close the connection, got {other:?}"),
        }
    }
}

/// Parses one server frame from the start of `buf`: (frame, bytes used).
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let mut pos = 2;
    let mut len = u64::from(b1 & 0x7F);
    if len == 126 {
        len = u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?));
        pos = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?);
        pos = 10;
    }
    let masked = b1 & 0x80 != 0;
    let key = if masked {
        let k: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(k)
    } else {
        None
    };
    let end = pos + usize::try_from(len).ok()?;
    let mut payload = buf.get(pos..end)?.to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some((
        Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0xF,
            masked,
            payload,
            header_len: pos,
        },
        end,
    ))
}

/// The value of `switchboard_connections{shard="S",state="STATE"}`.
pub fn conns(text: &str, shard: usize, state: &str) -> f64 {
    let name = format!("switchboard_connections{{shard=\"{shard}\",state=\"{state}\"}}");
    metric(text, &name).unwrap_or_else(|| panic!("no sample {name} in /metrics"))
}

// =====================================================================================
// Subscribers of either transport
// =====================================================================================

/// A subscriber over WebSocket or SSE that yields envelopes.
pub enum Sub {
    Ws(WsClient),
    Sse { client: SseClient, last_id: u64 },
}

impl Sub {
    pub fn ws(server: &Server, query: &str) -> Sub {
        Sub::Ws(ws_connect(&server.ws_url(&format!("/ws?{query}"))))
    }

    pub fn sse(server: &Server, query: &str) -> Sub {
        Sub::Sse {
            client: SseClient::connect(server.addr(), &format!("/sse?{query}")),
            last_id: 0,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Sub::Ws(_) => "ws",
            Sub::Sse { .. } => "sse",
        }
    }

    /// The next envelope without its `pos` (panics on timeout or end of stream). For
    /// SSE, skips the `hello` event and checks that the event's `id` is the envelope's
    /// `pos`, further along than the previous one (PROTOCOL.md "Positions").
    pub fn next(&mut self) -> Value {
        match self {
            Sub::Ws(ws) => next_json(ws),
            Sub::Sse { client, last_id } => loop {
                let event = client.expect_event(DEFAULT_TIMEOUT);
                let v: Value = serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", event.data));
                if event.event == "hello" {
                    hello_id(&v);
                    continue;
                }
                assert_eq!(event.event, "message", "{event:?}");
                assert_eq!(v["pos"], event.id.as_str(), "the id is the pos: {event:?}");
                let id = pos_gseq(&event.id);
                assert!(id > *last_id, "SSE id {id} after {last_id}");
                *last_id = id;
                return strip_pos(v);
            },
        }
    }
}

/// Opens `/ws` connections (no topics) until one lands on `shard` (told by the
/// `switchboard_connections{shard,state="ws"}` gauge); returns it and the others opened
/// on the way (keep them open, or the kernel may hand their slot to the next try).
pub fn ws_on_shard(server: &Server, shard: usize) -> (WsClient, Vec<WsClient>) {
    let mut others = Vec::new();
    for _ in 0..64 {
        let before = conns(&metrics(server.addr()), shard, "ws");
        let ws = ws_connect(&server.ws_url("/ws"));
        if conns(&metrics(server.addr()), shard, "ws") > before {
            return (ws, others);
        }
        others.push(ws);
    }
    panic!("64 connections and none on shard {shard}");
}

/// Publishes `n` messages `{"i":i,"pad":<64 KiB>}` to `topic` on one connection while
/// the subscriber `good` reads them on a thread of its own, checking each envelope's
/// topic, `seq` and `i`; the publisher never gets more than `ahead` messages in front
/// of it (so only subscribers that do not read fall behind). Returns the subscriber,
/// once it has everything, and the publishing connection.
pub fn publish_paced(
    addr: SocketAddr,
    topic: &'static str,
    n: u64,
    ahead: u64,
    mut good: WsClient,
) -> (WsClient, HttpConn) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            for seq in 1..=n {
                let m = next_json(&mut good);
                assert_eq!((&m["topic"], &m["seq"]), (&json!(topic), &json!(seq)));
                assert_eq!(m["data"]["i"], seq);
                progress.store(seq, Ordering::SeqCst);
            }
            good
        })
    };
    let pad = "p".repeat(64 * 1024);
    let mut conn = HttpConn::connect(addr).unwrap();
    for i in 1..=n {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        while progress.load(Ordering::SeqCst) + ahead < i {
            assert!(
                Instant::now() < deadline && !reader.is_finished(),
                "reading subscriber stuck at {} of {i}",
                progress.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let body = json!({"i": i, "pad": pad}).to_string();
        assert_eq!(publish_on(&mut conn, topic, body.as_bytes()), i);
    }
    let good = reader
        .join()
        .expect("the reading subscriber got every message");
    (good, conn)
}
