//! Issue 5, first acceptance check: "A real browser's EventSource, cut mid-stream,
//! resumes with no lost and no repeated id" (PROTOCOL.md "Server-Sent Events: `GET
//! /sse`", "Positions and resume").
//!
//! Everything runs on 127.0.0.1:
//! - the engine, with `--sse-retry 500ms` and a history large enough for every gap;
//! - a page server (this file): `GET /` is the test page; `POST /report` takes the page's
//!   whole record as JSON, which the page sends again whenever it changed;
//! - a TCP proxy (this file) between the browser and the engine: it logs the bytes each
//!   connection sends (the request heads), and on [`Proxy::cut`] forwards the next read
//!   from the engine only up to the middle of its last event (see [`Cut`]) and then shuts
//!   both sockets down both ways; while its gate is closed it holds new connections back;
//! - a real headless Chromium (Debian package `chromium`) loading the page, which opens
//!   `new EventSource("http://127.0.0.1:<proxy>/sse?topic=browser.a&topic=browser.b.*")`
//!   (another origin than the page's, so CORS is exercised as well) and records every
//!   `message` (`lastEventId` and data), `hello`, `open` and `error`.
//!
//! The browser reconnects by itself after `retry:` and sends `Last-Event-ID`; nothing in
//! the test speaks for it. An engine that ignored `Last-Event-ID` would lose the messages
//! published while the browser was away (one is published at each cut while the proxy
//! holds the reconnection back, so there always is one); one that replayed from the
//! position itself or earlier would repeat ids; one that ignored history would lose the
//! cut event. Each shows up in the per-topic `seq` check, in the id check, or both.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

/// Topics published to; the stream follows `browser.a` and `browser.b.*`.
const TOPICS: &[&str] = &[
    "browser.a",
    "browser.b.x",
    "browser.c",
    "browser.b.y.z",
    "browser.b",
];
const FOLLOWED: &[&str] = &["browser.a", "browser.b.x", "browser.b.y.z"];
/// Published to by the test itself once per cut, while the browser is away.
const CUT_TOPIC: &str = "browser.b.cut";
/// Published to once, last.
const END_TOPIC: &str = "browser.b.end";
const CUTS: usize = 3;
/// Messages the page must have received on its current connection before a cut.
const BEFORE_CUT: usize = 30;
/// Bound on the publisher's rounds (one message per topic each), within history.
const MAX_ROUNDS: u64 = 3000;
const SLOW: Duration = Duration::from_secs(60);

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>switchboard e2e: EventSource</title></head>
<body><script>
"use strict";
const r = {n: 0, readyState: -1, opens: [], errors: [], hellos: [], messages: []};
let lastId = "", posting = false, dirty = false;
const now = () => Math.round(performance.now());
function report() {
  dirty = true;
  if (posting) return;
  posting = true;
  dirty = false;
  r.n += 1;
  r.readyState = es.readyState;
  fetch("/report", {method: "POST", headers: {"Content-Type": "application/json"},
                    body: JSON.stringify(r)})
    .catch(() => {})
    .finally(() => { posting = false; if (dirty) setTimeout(report, 50); });
}
const es = new EventSource("__SSE_URL__");
es.onopen = () => {
  r.opens.push({t: now(), messages: r.messages.length, lastId});
  report();
};
es.onerror = () => {
  r.errors.push({t: now(), readyState: es.readyState, messages: r.messages.length, lastId});
  report();
};
es.addEventListener("hello", (e) => {
  r.hellos.push({t: now(), data: e.data, lastEventId: e.lastEventId});
  report();
});
es.onmessage = (e) => {
  r.messages.push([e.lastEventId, e.data]);
  if (e.lastEventId) lastId = e.lastEventId;
  report();
};
setInterval(report, 1000);
</script></body></html>
"#;

// =====================================================================================
// The page server
// =====================================================================================

/// Serves the page and keeps the page's latest report.
struct PageServer {
    addr: SocketAddr,
    latest: Arc<(Mutex<Option<Value>>, Condvar)>,
}

impl PageServer {
    fn start(page: String) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        let addr = listener.local_addr().unwrap();
        let latest = Arc::new((Mutex::new(None), Condvar::new()));
        let shared = latest.clone();
        let page = Arc::new(page);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (shared, page) = (shared.clone(), page.clone());
                thread::spawn(move || {
                    let _ = serve_page_conn(stream, &page, &shared);
                });
            }
        });
        PageServer { addr, latest }
    }

    fn latest(&self) -> Option<Value> {
        lock(&self.latest.0).clone()
    }

    /// Waits until the latest report satisfies `done`; panics after `timeout` with what
    /// `diag` says.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        diag: &dyn Fn() -> String,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let (latest, changed) = &*self.latest;
        let mut guard = lock(latest);
        loop {
            if let Some(r) = guard.as_ref().filter(|r| done(r)) {
                return r.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                drop(guard);
                panic!("waited {timeout:?} for {what}, in vain\n{}", diag());
            }
            guard = changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One keep-alive connection of the page server: `GET /`, `POST /report`, 404 else.
fn serve_page_conn(
    stream: TcpStream,
    page: &str,
    latest: &(Mutex<Option<Value>>, Condvar),
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        let mut parts = request_line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("GET"), Some("/")) => write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Cache-Control: no-store\r\nContent-Length: {}\r\n\r\n{page}",
                page.len()
            )?,
            (Some("POST"), Some("/report")) => {
                if let Ok(report) = serde_json::from_slice::<Value>(&body) {
                    let (slot, changed) = latest;
                    let mut slot = lock(slot);
                    // Reports are sent one at a time; keep the newest anyway.
                    if slot
                        .as_ref()
                        .is_none_or(|old| old["n"].as_u64() < report["n"].as_u64())
                    {
                        *slot = Some(report);
                        changed.notify_all();
                    }
                }
                out.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
            }
            _ => out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?,
        }
    }
}

// =====================================================================================
// The proxy
// =====================================================================================

#[derive(Default)]
struct ProxyConn {
    /// Everything the browser sent on this connection.
    up: Vec<u8>,
    /// The first bytes the engine sent (the response head).
    down_head: Vec<u8>,
    cut_requested: Option<Cut>,
    /// How it was cut: (bytes forwarded, bytes withheld) of the read it was cut in.
    cut: Option<(usize, usize)>,
    ended: bool,
    /// (browser side, engine side), for a forced shutdown.
    sockets: Option<(TcpStream, TcpStream)>,
}

impl ProxyConn {
    fn is_sse(&self) -> bool {
        self.up.starts_with(b"GET /sse") || self.up.windows(10).any(|w| w == b"\nGET /sse?")
    }
}

#[derive(Default)]
struct ProxyState {
    conns: Vec<ProxyConn>,
    gate_open: bool,
}

type Shared = Arc<(Mutex<ProxyState>, Condvar)>;

struct Proxy {
    addr: SocketAddr,
    shared: Shared,
}

fn shut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

impl Proxy {
    fn start(engine: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared: Shared = Arc::new((
            Mutex::new(ProxyState {
                gate_open: true,
                ..ProxyState::default()
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        thread::spawn(move || {
            for browser in listener.incoming().flatten() {
                let (state, changed) = &*s;
                let mut st = lock(state);
                while !st.gate_open {
                    st = changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                drop(st);
                let Ok(engine) = TcpStream::connect(engine) else {
                    continue; // the browser sees its connection closed
                };
                let _ = (browser.set_nodelay(true), engine.set_nodelay(true));
                let clones = || Some((browser.try_clone().ok()?, engine.try_clone().ok()?));
                let (Some(sockets), Some((b_up, e_up))) = (clones(), clones()) else {
                    continue;
                };
                let id = {
                    let mut st = lock(state);
                    st.conns.push(ProxyConn {
                        sockets: Some(sockets),
                        ..ProxyConn::default()
                    });
                    st.conns.len() - 1
                };
                let s_up = s.clone();
                thread::spawn(move || relay_up(id, b_up, e_up, &s_up));
                let s_down = s.clone();
                thread::spawn(move || relay_down(id, engine, browser, &s_down));
            }
        });
        Proxy { addr, shared }
    }

    fn state(&self) -> MutexGuard<'_, ProxyState> {
        lock(&self.shared.0)
    }

    /// Closed: new connections wait (accepted by the kernel, not forwarded) until it opens.
    fn set_gate(&self, open: bool) {
        self.state().gate_open = open;
        self.shared.1.notify_all();
    }

    /// Cuts every open SSE stream inside the last event of the next read from the engine
    /// (see [`Cut`]), then shuts down whatever else is open. Returns, per SSE connection,
    /// (forwarded, withheld) bytes of the read it was cut in, `None` if no byte came
    /// within `timeout` (then it was shut down between two reads).
    fn cut(&self, how: Cut, timeout: Duration) -> Vec<(usize, Option<(usize, usize)>)> {
        let (state, changed) = &*self.shared;
        let mut st = lock(state);
        let targets: Vec<usize> = (0..st.conns.len())
            .filter(|&i| !st.conns[i].ended && st.conns[i].cut.is_none() && st.conns[i].is_sse())
            .collect();
        for &i in &targets {
            st.conns[i].cut_requested = Some(how);
        }
        let deadline = Instant::now() + timeout;
        while targets.iter().any(|&i| !st.conns[i].ended) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        for c in st.conns.iter().filter(|c| !c.ended && c.cut.is_none()) {
            if let Some((b, e)) = &c.sockets {
                shut(b, e);
            }
        }
        targets.iter().map(|&i| (i, st.conns[i].cut)).collect()
    }

    /// The request heads the browser sent, as (connection number, head), in order.
    fn request_heads(&self) -> Vec<(usize, String)> {
        let st = self.state();
        let mut heads = Vec::new();
        for (i, c) in st.conns.iter().enumerate() {
            let text = String::from_utf8_lossy(&c.up);
            for head in text.split("\r\n\r\n").filter(|h| !h.trim().is_empty()) {
                heads.push((i, head.to_string()));
            }
        }
        heads
    }

    fn response_head(&self, conn: usize) -> String {
        let st = self.state();
        let raw = String::from_utf8_lossy(&st.conns[conn].down_head).into_owned();
        raw.split("\r\n\r\n").next().unwrap_or_default().to_string()
    }

    fn summary(&self) -> String {
        let st = self.state();
        let mut s = format!("proxy: {} connection(s)\n", st.conns.len());
        for (i, c) in st.conns.iter().enumerate() {
            let first = String::from_utf8_lossy(&c.up);
            let first = first.lines().next().unwrap_or("(nothing sent)");
            s += &format!(
                "  #{i}: {first:?} cut={:?} ended={} response starts {:?}\n",
                c.cut,
                c.ended,
                String::from_utf8_lossy(&c.down_head[..c.down_head.len().min(60)])
            );
        }
        s
    }
}

fn relay_end(id: usize, browser: &TcpStream, engine: &TcpStream, shared: &Shared) {
    shut(browser, engine);
    lock(&shared.0).conns[id].ended = true;
    shared.1.notify_all();
}

/// Browser to engine, logging the bytes.
fn relay_up(id: usize, mut browser: TcpStream, mut engine: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = browser.read(&mut buf) {
        lock(&shared.0).conns[id].up.extend_from_slice(&buf[..n]);
        if engine.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    relay_end(id, &browser, &engine, shared);
}

/// Where a cut falls in a read from the engine: inside the last event the read holds, so
/// that the browser is left with an incomplete event, which it must not dispatch (nor
/// take its `id:` as the `Last-Event-ID` to send).
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Halfway through the event.
    Half,
    /// All but its last byte: its `id:` and `data:` lines complete, the blank line that
    /// would dispatch it not.
    LastByte,
}

impl Cut {
    /// How many bytes of `read` (at least 2 bytes) go through.
    fn point(self, read: &[u8]) -> usize {
        let n = read.len();
        match self {
            Cut::Half => {
                let start = read[..n - 2]
                    .windows(2)
                    .rposition(|w| w == b"\n\n")
                    .map_or(0, |p| p + 2);
                start + (n - start) / 2
            }
            Cut::LastByte => n - 1,
        }
    }
}

/// Engine to browser; when a cut is requested, the next read is forwarded only in part.
fn relay_down(id: usize, mut engine: TcpStream, mut browser: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = engine.read(&mut buf) {
        let cut_now = {
            let mut st = lock(&shared.0);
            let c = &mut st.conns[id];
            if c.down_head.len() < 4096 {
                c.down_head.extend_from_slice(&buf[..n]);
            }
            c.cut_requested.filter(|_| c.cut.is_none() && n >= 2)
        };
        if let Some(how) = cut_now {
            let half = how.point(&buf[..n]);
            // Recorded first: the shutdown also ends the other relay, which marks the
            // connection ended.
            lock(&shared.0).conns[id].cut = Some((half, n - half));
            let _ = browser.write_all(&buf[..half]);
            shut(&browser, &engine);
            break;
        }
        if browser.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    relay_end(id, &browser, &engine, shared);
}

// =====================================================================================
// Chromium
// =====================================================================================

/// A headless Chromium, leader of its own process group: on drop the whole group is
/// killed (by its id) and the browser reaped; its profile directory is removed.
struct Browser {
    child: Child,
    profile: PathBuf,
    output: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    fn start(url: &str) -> Browser {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let profile = std::env::temp_dir().join(format!(
            "switchboard-e2e-chromium-{}-{nanos}",
            std::process::id()
        ));
        // Its temporary files too (it is killed, so it does not remove them itself).
        let tmp = profile.join("tmp");
        std::fs::create_dir_all(&tmp).expect("create Chromium's profile directory");
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless=new",
            "--no-sandbox", // as root (CI)
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-proxy-server",
            "--remote-debugging-port=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("data").display()
        ))
        .arg(url)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
        let mut child = match spawn_program(cmd) {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&profile);
                panic!(
                    "this test drives a real headless Chromium, and `chromium` is not on PATH: \
                     install the Debian package `chromium` \
                     (`apt-get install --no-install-recommends chromium`; CI's .ci/run installs it)"
                );
            }
            Err(e) => panic!("cannot start chromium: {e}"),
        };
        let output = Arc::new(Mutex::new(Vec::new()));
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for pipe in pipes {
            let output = output.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut out = lock(&output);
                    if out.len() >= 400 {
                        out.remove(0);
                    }
                    out.push(line);
                }
            });
        }
        Browser {
            child,
            profile,
            output,
        }
    }

    fn output_tail(&self, lines: usize) -> String {
        let out = lock(&self.output);
        out[out.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group our own, not yet reaped, child leads
        // (process_group(0)): the browser and the processes it started.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- Chromium's output (last lines) ----\n{}\n---- end ----",
                self.output_tail(60)
            );
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

// =====================================================================================
// The page's record
// =====================================================================================

fn list<'a>(r: &'a Value, key: &str) -> &'a [Value] {
    r[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Messages received since the page's last `open`.
fn since_last_open(r: &Value) -> usize {
    let at = list(r, "opens")
        .last()
        .and_then(|o| o["messages"].as_u64())
        .unwrap_or(0) as usize;
    list(r, "messages").len().saturating_sub(at)
}

/// (lastEventId, raw data, parsed envelope) of each message.
fn messages(r: &Value) -> Vec<(String, String, Value)> {
    list(r, "messages")
        .iter()
        .map(|m| {
            let id = m[0].as_str().expect("lastEventId").to_string();
            let data = m[1].as_str().expect("data").to_string();
            let env = serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("message data is not JSON ({e}): {data:?}"));
            (id, data, env)
        })
        .collect()
}

/// Highest `seq` received per topic (data that is not JSON is skipped here, and
/// reported by [`messages`]).
fn last_seqs(r: &Value) -> BTreeMap<String, u64> {
    let mut last = BTreeMap::new();
    let data = list(r, "messages").iter().filter_map(|m| m[1].as_str());
    for env in data.filter_map(|d| serde_json::from_str::<Value>(d).ok()) {
        if let (Some(t), Some(s)) = (env["topic"].as_str(), env["seq"].as_u64()) {
            let e = last.entry(t.to_string()).or_insert(0);
            *e = (*e).max(s);
        }
    }
    last
}

fn record_summary(r: Option<&Value>) -> String {
    let Some(r) = r else {
        return "the page has not reported (did Chromium load it?)".into();
    };
    let msgs = list(r, "messages");
    format!(
        "page: report #{} readyState={} opens={} errors={} hellos={} messages={} \
         (last ones: {:?})\nopens: {}\nerrors: {}\nlast seqs: {:?}",
        r["n"],
        r["readyState"],
        list(r, "opens").len(),
        list(r, "errors").len(),
        list(r, "hellos").len(),
        msgs.len(),
        &msgs[msgs.len().saturating_sub(3)..],
        r["opens"],
        r["errors"],
        last_seqs(r)
    )
}

/// The value of header `name` in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

// =====================================================================================
// The test
// =====================================================================================

/// Chromium's EventSource follows a topic and a subtree through the proxy; the stream is
/// cut [`CUTS`] times in the middle of an event while publishing goes on, and a message
/// is published at each cut before the browser can come back. The browser reconnects by
/// itself with `Last-Event-ID`; in the end it has every message of the followed topics
/// exactly once, in `seq` order per topic and in position order overall, no id twice,
/// nothing of the other topics, no reset; each reconnection carried the id of the last
/// message the page had dispatched.
#[test]
fn chromium_event_source_cut_mid_stream_resumes_with_no_lost_and_no_repeated_id() {
    let started = Instant::now();
    let server = Server::start(&[
        "--shards",
        "2",
        "--sse-retry",
        "500ms",
        "--history-size",
        "4096",
    ]);
    let addr = server.addr();
    let proxy = Proxy::start(addr);
    let sse_url = format!(
        "http://{}/sse?topic=browser.a&topic=browser.b.*",
        proxy.addr
    );
    let page = PageServer::start(PAGE.replace("__SSE_URL__", &sse_url));
    let page_origin = format!("http://{}", page.addr);
    let browser_started = Instant::now();
    let browser = Browser::start(&format!("{page_origin}/"));
    let diag = || {
        format!(
            "{}\n{}\n---- Chromium (last lines) ----\n{}",
            record_summary(page.latest().as_ref()),
            proxy.summary(),
            browser.output_tail(30)
        )
    };

    // Only once the first connection is live (its hello arrived) is anything published.
    page.wait("the EventSource's first hello", 2 * SLOW, &diag, |r| {
        !list(r, "hellos").is_empty()
    });
    let browser_ready = browser_started.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut conn = HttpConn::connect(addr).unwrap();
            let mut last = BTreeMap::new();
            for i in 1..=MAX_ROUNDS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                for t in TOPICS {
                    // Every fifth body has a line break: two `data:` lines, joined again
                    // by the browser.
                    let body = if i % 5 == 0 {
                        format!("{{\"i\": {i},\n \"s\": \"ünï€\"}}")
                    } else {
                        json!({"i": i, "s": "ünï€"}).to_string()
                    };
                    assert_eq!(publish_on(&mut conn, t, body.as_bytes()), i, "{t}");
                    last.insert(t.to_string(), i);
                }
                thread::sleep(Duration::from_millis(20));
            }
            last
        })
    };

    let mut cuts = Vec::new();
    for k in 0..CUTS {
        let how = [Cut::Half, Cut::LastByte][k % 2];
        page.wait(
            &format!("{BEFORE_CUT} messages on connection {}", k + 1),
            SLOW,
            &diag,
            |r| list(r, "opens").len() > k && since_last_open(r) >= BEFORE_CUT,
        );
        proxy.set_gate(false);
        let cut = proxy.cut(how, DEFAULT_TIMEOUT);
        // While the browser is away (its reconnection is held back by the gate).
        publish(
            addr,
            CUT_TOPIC,
            json!({"cut": k + 1}).to_string().as_bytes(),
        );
        proxy.set_gate(true);
        assert_eq!(
            cut.len(),
            1,
            "one SSE stream open at cut {}\n{}",
            k + 1,
            diag()
        );
        let (_, done) = cut[0];
        let (forwarded, withheld) = done.unwrap_or_else(|| {
            panic!(
                "cut {}: no byte from the engine within {DEFAULT_TIMEOUT:?}\n{}",
                k + 1,
                diag()
            )
        });
        assert!(withheld > 0, "cut {} withheld nothing", k + 1);
        cuts.push((how, forwarded, withheld));
        page.wait(
            &format!("the browser's reconnection after cut {}", k + 1),
            SLOW,
            &diag,
            |r| list(r, "opens").len() > k + 1,
        );
    }
    page.wait(
        &format!("{BEFORE_CUT} messages on the last connection"),
        SLOW,
        &diag,
        |r| since_last_open(r) >= BEFORE_CUT,
    );
    stop.store(true, Ordering::SeqCst);
    let mut expected = publisher.join().expect("the publisher");
    expected.retain(|t, _| FOLLOWED.contains(&t.as_str()));
    expected.insert(CUT_TOPIC.to_string(), CUTS as u64);
    // The last message, live on the current connection whatever happened before: once it
    // is there, everything published before it that was going to arrive has arrived
    // (one stream delivers in publish order), so a loss fails at once, not by a timeout.
    publish(addr, END_TOPIC, br#"{"end":true}"#);
    expected.insert(END_TOPIC.to_string(), 1);
    let r = page.wait("the last message", SLOW, &diag, |r| {
        last_seqs(r).contains_key(END_TOPIC)
    });

    // Every message exactly once: per topic 1, 2, 3... up to the last published; ids
    // are the envelopes' positions, strictly increasing, never repeated.
    let msgs = messages(&r);
    let mut per_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ids = HashSet::new();
    let mut last_gseq = 0;
    let mut multiline = 0;
    for (id, data, env) in &msgs {
        assert!(
            env.get("reset").is_none(),
            "no reset within history: {data}"
        );
        assert_eq!(
            env["pos"],
            id.as_str(),
            "the event id is the envelope's pos"
        );
        assert!(ids.insert(id.clone()), "event id {id} repeated\n{}", diag());
        let gseq = pos_gseq(id);
        assert!(gseq > last_gseq, "id {id} after gseq {last_gseq}");
        last_gseq = gseq;
        let topic = env["topic"].as_str().expect("topic");
        let seq = env["seq"].as_u64().expect("seq");
        per_topic.entry(topic.to_string()).or_default().push(seq);
        if topic == CUT_TOPIC {
            assert_eq!(env["data"], json!({ "cut": seq }), "{data}");
        } else if topic == END_TOPIC {
            assert_eq!(env["data"], json!({ "end": true }), "{data}");
        } else {
            assert_eq!(env["data"], json!({"i": seq, "s": "ünï€"}), "{data}");
        }
        multiline += usize::from(data.contains('\n'));
    }
    for (t, n) in &expected {
        let got = per_topic.get(t).map(Vec::as_slice).unwrap_or_default();
        let want: Vec<u64> = (1..=*n).collect();
        if got != want {
            let missing: Vec<u64> = want.iter().filter(|s| !got.contains(s)).copied().collect();
            panic!(
                "{t}: received {} messages for seqs 1..={n}; missing {missing:?}; \
                 all received: {got:?}\n{}",
                got.len(),
                diag()
            );
        }
    }
    assert_eq!(
        per_topic.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "only the followed topics (`browser.c`, and `browser.b` itself, are not)"
    );
    assert!(multiline > 0, "multi-line bodies were received");

    // One connection per cut plus the first, each with its hello; one error per cut,
    // each followed by a reconnection (readyState CONNECTING, not CLOSED).
    let (opens, errors, hellos) = (list(&r, "opens"), list(&r, "errors"), list(&r, "hellos"));
    assert_eq!(
        (opens.len(), errors.len(), hellos.len()),
        (CUTS + 1, CUTS, CUTS + 1),
        "opens, errors, hellos\n{}",
        diag()
    );
    let hello_ids: HashSet<String> = hellos
        .iter()
        .map(|h| hello_id(&serde_json::from_str(h["data"].as_str().unwrap()).unwrap()))
        .collect();
    assert_eq!(
        hello_ids.len(),
        CUTS + 1,
        "a new direct address per connection"
    );
    for e in errors {
        assert_eq!(e["readyState"], 0, "reconnecting after the error: {e}");
        assert!(!e["lastId"].as_str().unwrap().is_empty(), "{e}");
    }

    // What the browser sent, seen by the proxy: the first GET without Last-Event-ID, each
    // reconnection with the id of the last message dispatched before that cut.
    let heads = proxy.request_heads();
    let gets: Vec<&(usize, String)> = heads
        .iter()
        .filter(|(_, h)| h.starts_with("GET /sse?"))
        .collect();
    assert_eq!(gets.len(), CUTS + 1, "GET /sse requests: {heads:#?}");
    for (conn, head) in &gets {
        assert!(
            head.starts_with("GET /sse?topic=browser.a&topic=browser.b.* HTTP/1.1\r\n"),
            "{head}"
        );
        assert_eq!(header(head, "accept"), Some("text/event-stream"), "{head}");
        assert_eq!(header(head, "origin"), Some(page_origin.as_str()), "{head}");
        let response = proxy.response_head(*conn);
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(page_origin.as_str()),
            "{response}"
        );
    }
    assert_eq!(header(&gets[0].1, "last-event-id"), None, "{}", gets[0].1);
    for k in 0..CUTS {
        let head = &gets[k + 1].1;
        let sent = header(head, "last-event-id");
        let had = errors[k]["lastId"].as_str();
        assert_eq!(
            sent,
            had,
            "reconnection {} sends the last id it had: {head}",
            k + 1
        );
        assert_eq!(opens[k + 1]["lastId"].as_str(), had);
    }

    // The engine resumed each time, and replayed what the browser missed (at least the
    // message published at each cut).
    let m = metrics(addr);
    let replays = metric_sum(&m, "switchboard_router_replays_total").unwrap_or(0.0);
    let replayed = metric_sum(&m, "switchboard_router_replayed_messages_total").unwrap_or(0.0);
    assert!(replays >= CUTS as f64, "replays {replays}\n{m}");
    assert!(replayed >= CUTS as f64, "replayed messages {replayed}\n{m}");
    assert_eq!(metric_sum(&m, "switchboard_router_resets_total"), Some(0.0));

    let reconnect_ms: Vec<i64> = (0..CUTS)
        .map(|k| opens[k + 1]["t"].as_i64().unwrap() - errors[k]["t"].as_i64().unwrap())
        .collect();
    let preflights = heads
        .iter()
        .filter(|(_, h)| h.starts_with("OPTIONS "))
        .count();
    eprintln!(
        "browser: the page's first hello came {browser_ready:.1?} after Chromium's start; \
         {} messages over {} connections; cuts (how, bytes of the read cut forwarded, withheld): {cuts:?}; \
         error -> open in the page: {reconnect_ms:?} ms; replays {replays}, replayed \
         messages {replayed}; preflights {preflights}; {} proxied connections; total \
         {:.1?}",
        msgs.len(),
        opens.len(),
        proxy.state().conns.len(),
        started.elapsed()
    );
    drop(browser);
}
