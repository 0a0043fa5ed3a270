//! The publish schedule: message `i` of `--messages` is due at `t0 + i / --rate` on
//! topic `i % topics`, carrying its per-topic sequence number (`i / topics + 1`) and its
//! scheduled time (see [`crate::body`]), padded to `--payload` bytes, POSTed over
//! kept-alive HTTP/1.1 connections.
//!
//! Each publisher connection owns a fixed subset of the topics, so one topic's messages
//! leave in order on one connection. A connection that falls behind sends at once (it
//! never skips or re-times a message): delivery latency is measured from the *scheduled*
//! time, so a late publish shows as latency instead of being hidden (no coordinated
//! omission). The lag of each send behind its schedule is recorded too.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use switchboard_proto::http1::{self, ChunkedDecoder, ResponseFraming};

use crate::body;
use crate::measure::Latency;
use crate::net::Clock;
use crate::net::addr::Endpoint;

/// Attempts per message when the server answers 429/503 or the connection breaks.
pub const PUBLISH_ATTEMPTS: u32 = 3;
/// Bound on one request-response exchange.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most publish connections loadgen opens on its own (`--publishers` overrides).
pub const MAX_AUTO_PUBLISHERS: usize = 16;
/// Messages per second one kept-alive connection is assumed to carry comfortably
/// (request and response in turn, ~100 µs on loopback).
const RATE_PER_PUBLISHER: f64 = 2_000.0;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub endpoint: Endpoint,
    pub topics: Arc<Vec<String>>,
    /// Messages per second, over all topics.
    pub rate: f64,
    pub messages: u64,
    pub payload: usize,
    /// Publish connections (each owns `topics / connections` topics).
    pub connections: usize,
    pub clock: Clock,
    /// When message 0 is due.
    pub t0: Instant,
}

/// How many publish connections a rate needs (at most one per topic).
pub fn auto_connections(rate: f64, topics: usize) -> usize {
    ((rate / RATE_PER_PUBLISHER).ceil() as usize).clamp(1, MAX_AUTO_PUBLISHERS.min(topics.max(1)))
}

/// Live progress of a publisher, readable while it runs.
#[derive(Debug, Default)]
pub struct PublishProgress {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct PublishResult {
    /// Messages the server accepted (2xx), per topic.
    pub acked_per_topic: Vec<u64>,
    pub acked: u64,
    /// Messages given up after [`PUBLISH_ATTEMPTS`].
    pub failed: u64,
    /// Failed exchanges by kind (`publish_status_503`, `publish_io_<kind>`), retries included.
    pub errors: BTreeMap<String, u64>,
    /// How late each message left behind its schedule.
    pub lag: Latency,
    /// Request to response, per accepted message.
    pub ack: Latency,
    /// When the last answer arrived.
    pub finished: Instant,
}

impl PublishResult {
    fn new(topics: usize) -> PublishResult {
        PublishResult {
            acked_per_topic: vec![0; topics],
            acked: 0,
            failed: 0,
            errors: BTreeMap::new(),
            lag: Latency::new(),
            ack: Latency::new(),
            finished: Instant::now(),
        }
    }

    fn merge(&mut self, o: &PublishResult) {
        for (a, b) in self.acked_per_topic.iter_mut().zip(&o.acked_per_topic) {
            *a += b;
        }
        self.acked += o.acked;
        self.failed += o.failed;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        self.lag.merge(&o.lag);
        self.ack.merge(&o.ack);
        self.finished = self.finished.max(o.finished);
    }
}

/// Starts the publisher connections; join the handle for the result.
pub fn start(
    schedule: Schedule,
    progress: Arc<PublishProgress>,
) -> io::Result<std::thread::JoinHandle<PublishResult>> {
    let schedule = Arc::new(schedule);
    std::thread::Builder::new()
        .name("loadgen-publish".into())
        .spawn(move || {
            let n = schedule.connections.max(1);
            let handles: Vec<_> = (0..n)
                .map(|p| {
                    let (s, prog) = (schedule.clone(), progress.clone());
                    std::thread::Builder::new()
                        .name(format!("loadgen-pub-{p}"))
                        .spawn(move || publish_share(&s, p, n, &prog))
                })
                .collect();
            let mut total = PublishResult::new(schedule.topics.len());
            for h in handles {
                match h.map_err(|e| e.to_string()).and_then(|h| {
                    h.join()
                        .map_err(|_| "a publisher thread panicked".to_string())
                }) {
                    Ok(r) => total.merge(&r),
                    Err(e) => {
                        *total
                            .errors
                            .entry(format!("publisher_thread: {e}"))
                            .or_insert(0) += 1;
                    }
                }
            }
            total
        })
}

/// Connection `p` of `n`: the messages of topics `k` with `k % n == p`, in order.
fn publish_share(s: &Schedule, p: usize, n: usize, progress: &PublishProgress) -> PublishResult {
    let k = s.topics.len().max(1);
    let mut res = PublishResult::new(s.topics.len());
    let targets: Vec<String> = s.topics.iter().map(|t| s.endpoint.target(t)).collect();
    let mut conn: Option<HttpConn> = None;
    let mut body_buf = Vec::with_capacity(s.payload + 64);
    let mut request = Vec::with_capacity(s.payload + 256);
    for i in 0..s.messages {
        let topic = (i % k as u64) as usize;
        if topic % n != p {
            continue;
        }
        let seq = i / k as u64 + 1;
        let due = s.t0 + Duration::from_secs_f64(i as f64 / s.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let at_ns = s.clock.unix_ns_at(due);
        body_buf.clear();
        body::encode(&mut body_buf, seq, at_ns, s.payload);
        request.clear();
        http1::write_request(
            &mut request,
            "POST",
            &targets[topic],
            &s.endpoint.host,
            &[("Content-Type", "application/json")],
            &body_buf,
        );
        res.lag
            .record(Instant::now().saturating_duration_since(due));
        let mut done = false;
        for attempt in 0..PUBLISH_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            let sent = Instant::now();
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match HttpConn::connect(s.endpoint.addr) {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        count(&mut res.errors, format!("publish_io_{}", kind_name(&e)));
                        continue;
                    }
                },
            };
            match c.exchange(&request) {
                Ok((status, keep_alive)) => {
                    if !keep_alive {
                        conn = None;
                    }
                    if (200..300).contains(&status) {
                        res.ack.record(sent.elapsed());
                        res.acked += 1;
                        res.acked_per_topic[topic] += 1;
                        progress.acked.fetch_add(1, Relaxed);
                        done = true;
                        break;
                    }
                    count(&mut res.errors, format!("publish_status_{status}"));
                    if !matches!(status, 429 | 503) {
                        break;
                    }
                }
                Err(e) => {
                    conn = None;
                    count(&mut res.errors, format!("publish_io_{}", kind_name(&e)));
                }
            }
        }
        if !done {
            res.failed += 1;
            progress.failed.fetch_add(1, Relaxed);
        }
    }
    res.finished = Instant::now();
    res
}

fn count(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_insert(0) += 1;
}

fn kind_name(e: &io::Error) -> String {
    format!("{:?}", e.kind()).to_ascii_lowercase()
}

/// A kept-alive HTTP/1.1 client connection (blocking, with timeouts).
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = TcpStream::connect_timeout(&addr, PUBLISH_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(PUBLISH_TIMEOUT))?;
        stream.set_write_timeout(Some(PUBLISH_TIMEOUT))?;
        Ok(HttpConn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its whole response: (status, keep-alive).
    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        self.stream.write_all(request)?;
        self.buf.clear();
        let mut tmp = [0u8; 4096];
        let (status, head_len, framing, keep_alive) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            match http1::parse_response(&self.buf, &mut headers) {
                Ok(Some(r)) => break (r.status, r.head_len, r.body, r.keep_alive),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
        };
        let mut rest = self.buf.split_off(head_len);
        match framing {
            ResponseFraming::None => {}
            ResponseFraming::Length(len) => {
                let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidData)?;
                while rest.len() < len {
                    let n = self.stream.read(&mut tmp)?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    rest.extend_from_slice(&tmp[..n]);
                }
            }
            ResponseFraming::Chunked => {
                let mut dec = ChunkedDecoder::new();
                let mut sink = Vec::new();
                let mut input = rest;
                loop {
                    let d = dec.decode(&input, &mut sink, 1 << 20).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}"))
                    })?;
                    if d.done {
                        break;
                    }
                    let n = self.stream.read(&mut tmp)?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    input = tmp[..n].to_vec();
                }
            }
            ResponseFraming::UntilClose => {
                while self.stream.read(&mut tmp)? > 0 {}
                return Ok((status, false));
            }
        }
        Ok((status, keep_alive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn auto_connections_follow_the_rate_and_the_topics() {
        assert_eq!(auto_connections(20.0, 50), 1);
        assert_eq!(auto_connections(5_000.0, 50), 3);
        assert_eq!(auto_connections(5_000.0, 2), 2);
        assert_eq!(auto_connections(1e9, 1000), MAX_AUTO_PUBLISHERS);
    }

    /// A server that answers requests with `responses` in turn (a new connection after a
    /// `Connection: close`), recording the requests.
    fn server(responses: Vec<&'static str>) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut responses = responses.into_iter().peekable();
            while responses.peek().is_some() {
                let (mut s, _) = l.accept().unwrap();
                while let Some(request) = read_request(&mut s) {
                    seen.push(request);
                    let r = responses.next().unwrap();
                    s.write_all(r.as_bytes()).unwrap();
                    if r.contains("Connection: close") || responses.peek().is_none() {
                        break;
                    }
                }
            }
            seen
        });
        (addr, h)
    }

    /// One request (head and `Content-Length` body), `None` at EOF.
    fn read_request(s: &mut TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            let n = s.read(&mut tmp).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(i) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    return Some(text);
                }
            }
        }
    }

    #[test]
    fn publishes_on_schedule_with_sequence_numbers_and_retries_busy_answers() {
        let (addr, h) = server(vec![
            "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let endpoint = crate::net::addr::parse_url(
            &format!("http://{addr}/pub/{{topic}}"),
            crate::net::addr::Use::Publish,
        )
        .unwrap();
        let clock = Clock::new();
        let schedule = Schedule {
            endpoint,
            topics: Arc::new(vec!["a".into(), "b".into()]),
            rate: 200.0,
            messages: 3,
            payload: 100,
            connections: 1,
            clock,
            t0: Instant::now(),
        };
        let r = start(schedule, Arc::new(PublishProgress::default()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!((r.acked, r.failed), (3, 0));
        assert_eq!(r.acked_per_topic, vec![2, 1]);
        assert_eq!(r.errors.get("publish_status_503"), Some(&1));
        let seen = h.join().unwrap();
        assert_eq!(seen.len(), 4, "three messages, one retried");
        // Message 0 and 2 go to topic a with seq 1 and 2; message 1 to b with seq 1.
        assert!(
            seen[0].starts_with("POST /pub/a HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[1].starts_with("POST /pub/b "));
        assert_eq!(
            seen[1], seen[2],
            "the busy answer is retried with the same message"
        );
        assert!(seen[3].starts_with("POST /pub/a "));
        let bodies: Vec<(u64, u64)> = seen
            .iter()
            .map(|s| body::decode(s.split("\r\n\r\n").nth(1).unwrap().as_bytes()).unwrap())
            .collect();
        assert_eq!(bodies[0].0, 1);
        assert_eq!(bodies[1].0, 1);
        assert_eq!(bodies[3].0, 2);
        // Scheduled 5 ms apart (200/s), whatever the send time was.
        assert_eq!(bodies[3].1 - bodies[0].1, 10_000_000);
        assert!(seen[0].split("\r\n\r\n").nth(1).unwrap().len() == 100);
    }
}
