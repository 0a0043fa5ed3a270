//! End-to-end test harness for Switchboard.
//!
//! The tests in `tests/tests/*.rs` start the REAL binaries (`switchboard`, `loadgen`,
//! `ami-sim`) on loopback and talk to them over real sockets. This library provides:
//!
//! - [`bin`]: the path of a workspace binary, rebuilt if stale (see there for how and why);
//! - [`Server`]: a running `switchboard serve` (or any program that prints the same ready
//!   line), with its output captured and the process killed and reaped on drop;
//! - small blocking clients, every one of them with timeouts ([`DEFAULT_TIMEOUT`] unless
//!   told otherwise), so that a test fails instead of hanging: [`http_request`] /
//!   [`HttpConn`] / [`raw_exchange`] (HTTP/1.1 over a raw `TcpStream`), [`SseClient`]
//!   (`text/event-stream` parsed per the WHATWG algorithm), [`ws_connect`] /
//!   [`WsClient`] (tungstenite);
//! - introspection: [`fd_count`], [`metrics`], [`metric`], [`metric_sum`], [`wait_until`].
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard_e2e::*;
//!
//! let server = Server::start(&["--shards", "2"]);
//! let mut ws = ws_connect(&server.ws_url("/ws?topic=chat.lobby"));
//! let mut sse = SseClient::connect(server.addr(), "/sse?topic=chat.*");
//! let r = http_request(server.addr(), "POST", "/publish/chat.lobby", &[], b"hi");
//! assert_eq!(r.status, 202, "{}", r.text());
//! assert_eq!(ws.recv_json(DEFAULT_TIMEOUT).unwrap()["data"], "hi");
//! let event = sse.expect_event(DEFAULT_TIMEOUT);
//! assert!(ws.recv_json(Duration::from_millis(200)).is_none()); // nothing else
//! # let _ = event;
//! ```
//!
//! Conventions: functions named `try_*` return errors; the others panic with a message
//! that says what was attempted (that is what a test wants). When a test panics while a
//! [`Server`] is alive, the server's captured stdout/stderr is printed with the failure.
//!
//! The server's ready line (the contract with the engine): once it accepts connections,
//! `switchboard serve` prints exactly one line `listening on http://127.0.0.1:PORT shards=N`
//! to stdout (and flushes it); with `--listen 127.0.0.1:0` PORT is the port the kernel
//! picked. Logs go to stderr.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json;
pub use tungstenite;

pub mod asterisk;

/// Default for every timeout in this harness (connect, read, write, server start).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Server::start`] waits for the ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

// =====================================================================================
// Binaries
// =====================================================================================

/// Path of the workspace binary `name` (`"switchboard"`, `"loadgen"`, `"ami-sim"`), built
/// from the current sources with the profile of the running test.
///
/// # How the binaries are found, and why this way
///
/// Integration tests only get `CARGO_BIN_EXE_<name>` for binaries of their own package,
/// and this package (`switchboard-e2e`) has none. So the first call for a binary in a
/// test process runs
///
/// ```text
/// $CARGO build -p <package> --bin <name> --profile <profile of this test> --message-format=json-render-diagnostics
/// ```
///
/// in the workspace root (once per binary per test process, behind a lock), and takes
/// the binary's path from cargo's own `compiler-artifact` message. Consequences:
///
/// - **Fresh or loud.** Cargo's up-to-date check decides: if the engine's sources changed
///   since the last build, the binary is rebuilt before any test starts it; if the build
///   fails, every test that needs the binary panics with cargo's output. A plain
///   `cargo test` can therefore never test a stale binary. When the binary is already
///   fresh (e.g. `scripts/test.sh` built it just before) this costs ~0.1 s.
/// - **Same profile and target directory.** Both are read from where this test
///   executable lives (`<target-dir>/<debug|release|profile>/deps/`) and passed on
///   (`--profile`, `--target-dir`), so `cargo test --release` tests release binaries and
///   the nested build shares the outer build's target directory, however it was chosen
///   (`CARGO_TARGET_DIR`, `--target-dir`, config). The child cargo runs in the workspace
///   root and inherits the environment (`RUSTFLAGS`, `CARGO_BUILD_*`, ...), so it uses
///   the same settings and finds the outer build's artifacts fresh.
/// - **No deadlock.** `cargo test` holds the build-directory lock only while it
///   compiles and releases it before it runs the test executables. Observed with cargo
///   1.95, in this workspace and its real target directory: the nested build inside
///   `cargo test` (debug and `--release`, `-p switchboard-e2e` and `--workspace`) starts
///   at once, and is a ~0.1 s no-op after `cargo build --release --workspace --bins`
///   (no feature-unification rebuild). What does block is a *leftover* cargo: a nested
///   build that outlived its killed test process kept the lock ("Blocking waiting for
///   file lock on artifact directory") for the next run. Hence the nested cargo runs in
///   its own process group, dies with the test process (`PR_SET_PDEATHSIG`), and is
///   bounded (`SWITCHBOARD_E2E_BUILD_TIMEOUT`, seconds, default 1800; then the group is
///   killed and the test fails). Runners that start test processes in parallel
///   (cargo-nextest) just queue on the lock.
///
/// `current_exe()`-relative lookup (`target/<profile>/<name>`) was rejected: it tests
/// whatever binary happens to be there, stale or missing, and `CARGO_BIN_EXE_*` does not
/// exist for other packages.
///
/// Override: `SWITCHBOARD_E2E_BIN_DIR=<dir>` takes the binaries from `<dir>` as they are,
/// without building (to test an installed or instrumented build); it is announced on
/// stderr, since the freshness check is then the caller's business.
pub fn bin(name: &str) -> PathBuf {
    try_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// [`bin`] returning the error (cargo's output) instead of panicking.
pub fn try_bin(name: &str) -> Result<PathBuf, String> {
    static BUILT: Mutex<Option<HashMap<String, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(r) = built.get(name) {
        return r.clone();
    }
    let r = locate_or_build(name);
    built.insert(name.to_string(), r.clone());
    r
}

/// The package that provides binary `name` (all workspace binaries are named after
/// their package).
fn package_of(name: &str) -> &str {
    name
}

/// The workspace root (this package lives in `<root>/tests`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
}

/// `(target directory, profile)` of the running test executable, from where it lives:
/// `<target-dir>/<debug|release|custom profile>/deps/<test>-<hash>`. The target
/// directory is only trusted if it holds cargo's `CACHEDIR.TAG` (with `--target
/// <triple>` the layout has one level more; then only the profile is used).
fn current_build_layout() -> (Option<PathBuf>, String) {
    let exe = std::env::current_exe().ok();
    let profile_dir = exe
        .as_deref()
        .and_then(Path::parent)
        .filter(|deps| deps.file_name() == Some(OsStr::new("deps")))
        .and_then(Path::parent);
    let profile = profile_dir
        .and_then(|d| d.file_name()?.to_str())
        .map(|d| if d == "debug" { "dev" } else { d }.to_string()) // "release" or custom
        .unwrap_or_else(|| {
            if cfg!(debug_assertions) {
                "dev"
            } else {
                "release"
            }
            .to_string()
        });
    let target_dir = profile_dir
        .and_then(Path::parent)
        .filter(|t| t.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf);
    (target_dir, profile)
}

fn locate_or_build(name: &str) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SWITCHBOARD_E2E_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        eprintln!(
            "e2e: using prebuilt {} (SWITCHBOARD_E2E_BIN_DIR set: not rebuilt, freshness not checked)",
            path.display()
        );
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "e2e: SWITCHBOARD_E2E_BIN_DIR is set but {} does not exist",
                path.display()
            ))
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let (target_dir, profile) = current_build_layout();
    let timeout = std::env::var("SWITCHBOARD_E2E_BUILD_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "-p",
        package_of(name),
        "--bin",
        name,
        "--profile",
        &profile,
    ])
    .arg("--message-format=json-render-diagnostics")
    .args(
        target_dir
            .iter()
            .flat_map(|t| [OsStr::new("--target-dir"), t.as_os_str()]),
    )
    .current_dir(workspace_root())
    .stdin(Stdio::null());
    let what = format!(
        "`cargo build -p {} --bin {name} --profile {profile}`",
        package_of(name)
    );
    let started = Instant::now();
    let out = run_with_timeout(cmd, timeout).map_err(|e| format!("e2e: {what} failed: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "e2e: {what} failed ({}), so the binary under test cannot be built:\n{stderr}",
            out.status
        ));
    }
    let exe = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("e2e: {what} reported no executable for `{name}`:\n{stderr}"))?;
    if started.elapsed() > Duration::from_secs(2) {
        eprintln!("e2e: built {} in {:.1?}", exe.display(), started.elapsed());
    }
    Ok(exe)
}

/// Runs `cmd` to completion with captured output. After `timeout` its whole process
/// group (it gets its own: cargo's rustc children too) is killed and an error returned.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> io::Result<Output> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = spawn_child(cmd)?;
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let t = thread::spawn(move || {
            let mut tmp = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut tmp) {
                b.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&tmp[..n]);
            }
        });
        (buf, t)
    };
    let (out_buf, out_t) = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let (err_buf, err_t) = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let take =
        |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the process group of our not yet reaped child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            // Not joining the readers: a grandchild might still hold the pipes.
            let err = String::from_utf8_lossy(&take(&err_buf)).into_owned();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("killed after {timeout:?}; its stderr:\n{err}"),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = (out_t.join(), err_t.join());
    Ok(Output {
        status,
        stdout: take(&out_buf),
        stderr: take(&err_buf),
    })
}

/// Runs `program args...` to completion (stdin closed) and returns its output; panics if
/// it cannot be started or runs longer than `timeout` (it is killed then).
/// E.g. `run_program(bin("switchboard"), &["--help"], DEFAULT_TIMEOUT)`.
pub fn run_program(program: impl AsRef<OsStr>, args: &[&str], timeout: Duration) -> Output {
    let program = program.as_ref();
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    run_with_timeout(cmd, timeout).unwrap_or_else(|e| panic!("running {program:?} {args:?}: {e}"))
}

/// Spawns `cmd` (stdio, process group... as set on it) the way [`Server`] spawns its
/// process: the kernel kills it (SIGKILL) when the test process exits, however it exits
/// (`PR_SET_PDEATHSIG`). For programs that print no ready line (a browser); killing and
/// reaping it is the caller's business.
pub fn spawn_program(cmd: Command) -> io::Result<Child> {
    spawn_child(cmd)
}

/// Spawns every child process from one long-lived thread, with `PR_SET_PDEATHSIG`
/// = SIGKILL: the kernel kills the child when that thread dies, i.e. when the test
/// process exits, however it exits. (The death signal follows the *thread* that forked;
/// forking from the short-lived test threads would kill a shared server at the end of
/// the test that happened to start it.) So no server outlives its test process, not
/// even one kept in a `static` (statics are never dropped) or one of a test process
/// that was killed.
fn spawn_child(cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("e2e-spawner".into())
            .spawn(move || {
                let parent = std::process::id();
                for (mut cmd, reply) in rx {
                    let hook = move || -> io::Result<()> {
                        // SAFETY: prctl(PR_SET_PDEATHSIG) takes a plain integer signal.
                        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        // The parent may have died before the prctl took effect.
                        // SAFETY: getppid has no preconditions.
                        if unsafe { libc::getppid() } as u32 != parent {
                            return Err(io::Error::other("test process exited"));
                        }
                        Ok(())
                    };
                    // SAFETY: the hook runs in the forked child before exec and only makes
                    // async-signal-safe calls (prctl, getppid); it allocates only on the
                    // error path, which aborts the spawn.
                    unsafe { cmd.pre_exec(hook) };
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the e2e-spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("e2e-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("e2e-spawner thread is gone"))?
}

// =====================================================================================
// Server
// =====================================================================================

/// Which stream a captured output line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Captured output of a child: the last [`Captured::MAX_LINES`] lines, in arrival order.
#[derive(Default)]
struct Captured {
    state: Mutex<CapturedState>,
    changed: Condvar,
}

#[derive(Default)]
struct CapturedState {
    lines: VecDeque<(Stream, String)>,
    dropped: usize,
    closed: usize, // streams that reached EOF
}

impl Captured {
    const MAX_LINES: usize = 20_000;

    fn push(&self, stream: Stream, line: String) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.lines.len() == Self::MAX_LINES {
            s.lines.pop_front();
            s.dropped += 1;
        }
        s.lines.push_back((stream, line));
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed += 1;
        self.changed.notify_all();
    }

    /// Waits until both streams reached EOF or `timeout` passed.
    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.closed < 2 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Reads `reader` line by line into `captured`; for stdout, also reports the first
/// ready line through `ready`.
fn drain(
    reader: impl Read,
    stream: Stream,
    captured: Arc<Captured>,
    mut ready: Option<mpsc::Sender<(SocketAddr, usize, String)>>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if let Some(parsed) = ready.as_ref().and_then(|_| parse_ready_line(&line)) {
                    let _ = ready
                        .take()
                        .expect("checked")
                        .send((parsed.0, parsed.1, line.clone()));
                }
                captured.push(stream, line);
            }
        }
    }
    captured.close();
}

/// Parses `listening on http://HOST:PORT shards=N` into (address, shards), and
/// `ami-sim`'s `listening on tcp://HOST:PORT` into (address, 1).
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, usize)> {
    if let Some(rest) = line.trim().strip_prefix("listening on tcp://") {
        return Some((rest.parse().ok()?, 1));
    }
    let rest = line.trim().strip_prefix("listening on http://")?;
    let (hostport, shards) = rest.split_once(" shards=")?;
    let digits: String = shards.chars().take_while(char::is_ascii_digit).collect();
    Some((hostport.parse().ok()?, digits.parse().ok()?))
}

/// A child process of a test, managed by pid: its exit is noticed (and the child
/// reaped) when asked, signals go only to a child not yet reaped (so the pid cannot
/// belong to another process), and a stop is SIGTERM, a grace period, then SIGKILL.
/// [`Server`] and the Asterisk harness hold one.
pub struct Process {
    child: Child,
    pid: u32,
    exit_status: Option<ExitStatus>,
}

impl Process {
    pub fn new(child: Child) -> Process {
        Process {
            pid: child.id(),
            child,
            exit_status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, if it has (reaping it then); `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit_status = Some(status);
        }
        self.exit_status
    }

    /// Whether it has been seen to end (without looking again).
    pub fn has_exited(&self) -> bool {
        self.exit_status.is_some()
    }

    /// Waits up to `timeout` for it to exit by itself; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`), by pid, unless it has been reaped.
    pub fn signal(&mut self, signal: i32) {
        if self.try_status().is_none() {
            // SAFETY: kill(2) with our own, not yet reaped, child's pid.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    /// SIGTERM, then up to `grace` to exit, then SIGKILL. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_exit(grace) {
            return status;
        }
        self.kill()
    }

    /// SIGKILL (by pid) and reap. Returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        self.exit_status = Some(status);
        status
    }
}

/// A running server process: `switchboard serve`, or any program that prints the ready
/// line `listening on http://127.0.0.1:PORT shards=N` on stdout.
///
/// Its stdout and stderr are drained by background threads into memory (so the pipes
/// never fill up), see [`Server::log`]. On drop the process is killed (SIGKILL, by pid)
/// and reaped, and if the test is panicking its captured output is printed.
pub struct Server {
    process: Process,
    addr: SocketAddr,
    shards: usize,
    ready_line: String,
    program: String,
    captured: Arc<Captured>,
}

impl Server {
    /// Starts `switchboard serve --listen 127.0.0.1:0 <args>` (binary from [`bin`]) and
    /// waits up to [`READY_TIMEOUT`] for its ready line. Panics (with the server's
    /// output) if it does not come up.
    pub fn start(args: &[&str]) -> Server {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        Server::start_program(bin("switchboard"), &full)
    }

    /// Starts `ami-sim --listen 127.0.0.1:0 <args>` (binary from [`bin`]) and waits for
    /// its ready line `listening on tcp://127.0.0.1:PORT`.
    pub fn start_ami_sim(args: &[&str]) -> Server {
        let mut full = vec!["--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        Server::start_program(bin("ami-sim"), &full)
    }

    /// Starts `program args...` (verbatim: nothing is added) and waits up to
    /// [`READY_TIMEOUT`] for the ready line. For stand-ins of the engine and for the
    /// other binaries; panics if it does not come up.
    pub fn start_program(program: impl AsRef<OsStr>, args: &[&str]) -> Server {
        let mut cmd = Command::new(program.as_ref());
        cmd.args(args);
        Server::try_start_command(cmd, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a fully prepared command (for extra environment variables, a working
    /// directory...) and waits up to `ready_timeout` for the ready line. Stdin is closed,
    /// stdout and stderr are captured, `RUST_BACKTRACE=1` is set unless given. The error
    /// says why it did not come up and includes the captured output.
    pub fn try_start_command(mut cmd: Command, ready_timeout: Duration) -> Result<Server, String> {
        let program = format!("{cmd:?}");
        if !cmd.get_envs().any(|(k, _)| k == "RUST_BACKTRACE") {
            cmd.env("RUST_BACKTRACE", "1");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            spawn_child(cmd).map_err(|e| format!("e2e: cannot start {program}: {e}"))?;
        let pid = child.id();
        let captured = Arc::new(Captured::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (out, err) = (
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let c = captured.clone();
        thread::spawn(move || drain(out, Stream::Stdout, c, Some(ready_tx)));
        let c = captured.clone();
        thread::spawn(move || drain(err, Stream::Stderr, c, None));

        let mut server = Server {
            process: Process::new(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards: 0,
            ready_line: String::new(),
            program,
            captured,
        };
        match ready_rx.recv_timeout(ready_timeout) {
            Ok((addr, shards, line)) => {
                server.addr = addr;
                server.shards = shards;
                server.ready_line = line;
                Ok(server)
            }
            Err(e) => {
                let why = match e {
                    // The stdout drain ended: the process closed stdout, normally by exiting.
                    mpsc::RecvTimeoutError::Disconnected => match server
                        .wait_exit(Duration::from_secs(2))
                    {
                        Some(status) => format!("exited ({}) before printing", describe(status)),
                        None => "closed its stdout without printing".to_string(),
                    },
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("did not print within {ready_timeout:?}")
                    }
                };
                server.kill();
                Err(format!(
                    "e2e: server {} (pid {pid}) {why} its ready line \
                     `listening on http://127.0.0.1:PORT shards=N` (or ami-sim's \
                     `listening on tcp://127.0.0.1:PORT`) on stdout.\n{}",
                    server.program,
                    server.log_report()
                ))
            }
        }
    }

    /// The address from the ready line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The number of shards from the ready line.
    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The ready line as printed.
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn ws_url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("ws://{}{slash}{path}", self.addr)
    }

    /// Captured output so far, one `[stdout] ...` / `[stderr] ...` line per line (the
    /// interleaving of the two streams is only approximate).
    pub fn log(&self) -> String {
        let s = self
            .captured
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        if s.dropped > 0 {
            let _ = writeln!(out, "[... {} earlier lines dropped ...]", s.dropped);
        }
        for (stream, line) in &s.lines {
            let tag = if *stream == Stream::Stdout {
                "stdout"
            } else {
                "stderr"
            };
            let _ = writeln!(out, "[{tag}] {line}");
        }
        out
    }

    /// Captured lines of one stream.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        let s = self
            .captured
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.lines
            .iter()
            .filter(|(st, _)| *st == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Waits until a captured line (either stream) contains `needle`; false on timeout.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self
            .captured
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if s.lines.iter().any(|(_, l)| l.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || s.closed == 2 {
                return false;
            }
            s = self
                .captured
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether the process is still running (not exited; it is reaped if it has).
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.process.try_status()
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still
    /// running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process, by pid. No-op once it has
    /// been reaped (so the pid cannot belong to another process).
    pub fn signal(&mut self, signal: i32) {
        self.process.signal(signal);
    }

    /// Graceful stop: SIGTERM, then up to `grace` for the process to exit, then SIGKILL.
    /// Returns how it ended (for tests of the shutdown path).
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.process.stop(grace)
    }

    /// SIGKILL (by pid) and reap. Returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        self.process.kill()
    }

    /// The captured output with a header, as printed when a test fails.
    fn log_report(&self) -> String {
        self.captured.wait_closed(if self.process.has_exited() {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        });
        format!(
            "---- output of {} (pid {}) ----\n{}---- end of output ----",
            self.program,
            self.process.pid(),
            self.log()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let unexpected_exit = self.try_status();
        self.kill();
        if thread::panicking() {
            if let Some(status) = unexpected_exit {
                eprintln!(
                    "e2e: server pid {} had exited: {}",
                    self.process.pid(),
                    describe(status)
                );
            }
            eprintln!("{}", self.log_report());
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!(
            "killed by signal {sig}{}",
            if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            }
        ),
        _ => status.to_string(),
    }
}

// =====================================================================================
// HTTP/1.1
// =====================================================================================

/// Connects with [`DEFAULT_TIMEOUT`] for connect, read and write, `TCP_NODELAY` on.
pub fn tcp_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
    stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
    stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A parsed HTTP response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// e.g. `HTTP/1.1`
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    /// De-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Request bytes: `METHOD PATH HTTP/1.1`, then `Host` (unless among `headers`), the given
/// headers verbatim, `Content-Length` (if `body` is not empty and neither
/// `Content-Length` nor `Transfer-Encoding` is given), `Connection: close` if `close`
/// and no `Connection` is given, a blank line and the body. Nothing is validated or
/// escaped, so a test can build malformed requests too.
pub fn build_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        let _ = write!(head, "Host: {addr}\r\n");
    }
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    if close && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One HTTP request on a fresh connection (see [`build_request`]; `Connection: close`
/// is added), the response read by its framing (Content-Length, chunked, or until
/// close). Panics on I/O errors and timeouts ([`DEFAULT_TIMEOUT`]).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("HTTP {method} {path} to {addr}: {e}"))
}

/// [`http_request`] returning the error.
pub fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut conn = HttpConn::connect(addr)?;
    conn.send_raw(&build_request(addr, method, path, headers, body, true))?;
    conn.read_response(method)
}

/// `GET path`, panicking unless the status is 200; returns the body as text.
pub fn http_get_ok(addr: SocketAddr, path: &str) -> String {
    let r = http_request(addr, "GET", path, &[], b"");
    assert_eq!(
        r.status,
        200,
        "GET {path} on {addr}: {} {}\n{}",
        r.status,
        r.reason,
        r.text()
    );
    r.text()
}

/// `GET /metrics` (must answer 200); the Prometheus text.
pub fn metrics(addr: SocketAddr) -> String {
    http_get_ok(addr, "/metrics")
}

/// The value of sample `name` (exactly as written, labels included, e.g.
/// `switchboard_connections{shard="0"}`) in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| sample(l).filter(|(n, _)| *n == name).map(|(_, v)| v))
}

/// The sum of all samples of metric `name` over all label sets; `None` if there is none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(sample)
        .filter(|(n, _)| {
            *n == name
                || n.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{'))
        })
        .map(|(_, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `name{labels} value [timestamp]` -> (`name{labels}`, value).
fn sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim();
    // Label values may contain spaces: the name part ends after the closing brace.
    let split = match line.find('{') {
        Some(open) if line[..open].find(' ').is_none() => open + line[open..].find('}')? + 1,
        _ => line.find(' ')?,
    };
    let (name, rest) = line.split_at(split);
    Some((name, rest.split_whitespace().next()?.parse().ok()?))
}

/// Sends `bytes` verbatim on a fresh connection and returns everything the peer sends
/// until it closes the connection (or resets it), or until `DEFAULT_TIMEOUT` in total
/// has passed. For malformed requests. A server that keeps the connection open makes
/// this wait the whole timeout: use [`raw_exchange_timeout`] then.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_exchange_timeout(addr, bytes, DEFAULT_TIMEOUT)
}

/// [`raw_exchange`] with a given total timeout.
pub fn raw_exchange_timeout(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = tcp_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .write_all(bytes)
        .unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // timeout, reset
        }
    }
    out
}

/// A client HTTP/1.1 connection with its own read buffer: several requests (keep-alive),
/// pipelining, or raw bytes followed by response parsing.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        Ok(HttpConn {
            stream: tcp_connect(addr)?,
            buf: Vec::new(),
            eof: false,
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes `bytes` verbatim.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request built by [`build_request`] (keep-alive: no `Connection: close`).
    pub fn send_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let addr = self.stream.peer_addr()?;
        self.send_raw(&build_request(addr, method, path, headers, body, false))
    }

    /// Reads one response. `method` is that of the request it answers (a response to
    /// `HEAD` has no body). Errors on timeout ([`DEFAULT_TIMEOUT`] per read), on EOF
    /// before a complete response and on a malformed one.
    pub fn read_response(&mut self, method: &str) -> io::Result<HttpResponse> {
        let head_len = loop {
            if let Some(n) = find_head_end(&self.buf) {
                break n;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(invalid("response head larger than 64 KiB"));
            }
            if self.fill()? == 0 {
                return Err(if self.buf.is_empty() {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before any response byte",
                    )
                } else {
                    invalid(&format!(
                        "connection closed in the response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                });
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_len).collect();
        let mut resp = parse_head(&head)?;
        let no_body = method.eq_ignore_ascii_case("HEAD")
            || resp.status < 200
            || resp.status == 204
            || resp.status == 304;
        if no_body {
            return Ok(resp);
        }
        if is_chunked(&resp.headers) {
            let mut state = ChunkState::Size;
            loop {
                if dechunk(&mut state, &mut self.buf, &mut resp.body)? {
                    break;
                }
                if self.fill()? == 0 {
                    return Err(invalid("connection closed inside a chunked body"));
                }
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| invalid(&format!("bad Content-Length {len:?}")))?;
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(invalid(&format!(
                        "connection closed after {} of {len} body bytes",
                        self.buf.len()
                    )));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill()? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Reads more bytes into the buffer; 0 at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timed out waiting for the response",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Length of the response head including its blank line (CRLF CRLF, or bare LF LF).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a status line and headers (bare LF tolerated; obsolete line folding is not).
fn parse_head(head: &[u8]) -> io::Result<HttpResponse> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let (true, Some(status)) = (version.starts_with("HTTP/"), status) else {
        return Err(invalid(&format!("bad status line {status_line:?}")));
    };
    let mut resp = HttpResponse {
        version: version.to_string(),
        status,
        reason: parts.next().unwrap_or_default().to_string(),
        ..HttpResponse::default()
    };
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(&format!("bad header line {line:?}")))?;
        resp.headers
            .push((name.to_string(), value.trim().to_string()));
    }
    Ok(resp)
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .next_back()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// Incremental state of a chunked-body decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// Moves whatever `raw` holds of a chunked body into `out` (consuming it from `raw`).
/// Returns true once the last chunk and the trailers are complete. Safe to call again
/// with more bytes: partial input stays in `raw`.
fn dechunk(state: &mut ChunkState, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut pos = 0;
    let result = loop {
        match *state {
            ChunkState::Size | ChunkState::Trailer => {
                let Some(nl) = raw[pos..].iter().position(|&b| b == b'\n') else {
                    if raw.len() - pos > 4096 {
                        break Err(invalid("chunk size / trailer line longer than 4 KiB"));
                    }
                    break Ok(false);
                };
                let line = String::from_utf8_lossy(&raw[pos..pos + nl])
                    .trim_end_matches('\r')
                    .to_string();
                pos += nl + 1;
                if *state == ChunkState::Trailer {
                    if line.is_empty() {
                        *state = ChunkState::Done;
                    }
                    continue;
                }
                let hex = line.split(';').next().unwrap_or_default().trim();
                match usize::from_str_radix(hex, 16) {
                    Ok(0) => *state = ChunkState::Trailer,
                    Ok(n) => *state = ChunkState::Data(n),
                    Err(_) => break Err(invalid(&format!("bad chunk size line {line:?}"))),
                }
            }
            ChunkState::Data(left) => {
                let n = left.min(raw.len() - pos);
                if n == 0 {
                    break Ok(false);
                }
                out.extend_from_slice(&raw[pos..pos + n]);
                pos += n;
                *state = if n == left {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left - n)
                };
            }
            ChunkState::DataEnd => match &raw[pos..] {
                [b'\r', b'\n', ..] => {
                    pos += 2;
                    *state = ChunkState::Size;
                }
                [b'\n', ..] => {
                    pos += 1;
                    *state = ChunkState::Size;
                }
                [] | [b'\r'] => break Ok(false),
                _ => break Err(invalid("chunk data not followed by CRLF")),
            },
            ChunkState::Done => break Ok(true),
        }
    };
    raw.drain(..pos);
    result
}

// =====================================================================================
// Server-Sent Events
// =====================================================================================

/// One dispatched event, per the WHATWG event-stream interpretation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event ID buffer at dispatch: the most recent `id:` seen on this stream,
    /// also from earlier events (as `MessageEvent.lastEventId`); `""` if none.
    pub id: String,
    /// The `event:` field, `"message"` if none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// A `text/event-stream` client over a raw `TcpStream` (identity or chunked transfer
/// coding). Stream parsing follows the WHATWG HTML "event stream interpretation": a
/// leading BOM is dropped; lines end in CRLF, LF or CR; `:` starts a comment (kept, see
/// [`SseClient::comments`]); `field: value` loses one leading space of the value;
/// `data` lines are joined by LF; `id` containing NUL is ignored; `retry` needs ASCII
/// digits only; an empty line dispatches (nothing if the data buffer is empty); an
/// event still incomplete at end of stream is discarded.
pub struct SseClient {
    stream: TcpStream,
    response: HttpResponse,
    raw: Vec<u8>,
    chunked: Option<ChunkState>,
    text: Vec<u8>,
    closed: bool,
    bom_checked: bool,
    skip_lf: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    retry: Option<u64>,
    comments: Vec<String>,
    read_error: Option<io::Error>,
}

impl SseClient {
    /// `GET path` (e.g. `/sse?topic=a`) with `Accept: text/event-stream`; panics unless
    /// the answer is `200` with `Content-Type: text/event-stream`.
    pub fn connect(addr: SocketAddr, path: &str) -> SseClient {
        Self::try_connect(addr, path, &[])
            .unwrap_or_else(|e| panic!("SSE GET {path} on {addr}: {e}"))
    }

    /// As [`SseClient::connect`] with extra request headers (e.g. `Last-Event-ID`); the
    /// error describes the response if it is not an event stream.
    pub fn try_connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<SseClient> {
        let mut all: Vec<(&str, &str)> = vec![
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ];
        all.extend_from_slice(headers);
        let mut conn = HttpConn::connect(addr)?;
        conn.send_raw(&build_request(addr, "GET", path, &all, b"", false))?;
        let head_len = loop {
            if let Some(n) = find_head_end(&conn.buf) {
                break n;
            }
            if conn.buf.len() > 64 * 1024 || conn.fill()? == 0 {
                return Err(invalid(&format!(
                    "no complete response head: {:?}",
                    String::from_utf8_lossy(&conn.buf)
                )));
            }
        };
        let head: Vec<u8> = conn.buf.drain(..head_len).collect();
        let response = parse_head(&head)?;
        let content_type = response
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if response.status != 200 || !content_type.starts_with("text/event-stream") {
            // Show what came instead (a short body, if any, arrives with the head).
            let _ = conn
                .stream
                .set_read_timeout(Some(Duration::from_millis(200)));
            let _ = conn.fill();
            return Err(io::Error::other(format!(
                "expected `200` with `Content-Type: text/event-stream`, got `{} {}` {:?}, body {:?}",
                response.status,
                response.reason,
                response.headers,
                String::from_utf8_lossy(&conn.buf)
            )));
        }
        let mut client = SseClient::from_stream(conn.stream, response);
        client.push_bytes(conn.buf)?;
        Ok(client)
    }

    /// A client over an already connected stream whose response head has been consumed:
    /// the bytes that follow are the event stream, in the transfer coding that
    /// `response`'s headers announce.
    pub fn from_stream(stream: TcpStream, response: HttpResponse) -> SseClient {
        let chunked = is_chunked(&response.headers).then_some(ChunkState::Size);
        SseClient {
            stream,
            response,
            raw: Vec::new(),
            chunked,
            text: Vec::new(),
            closed: false,
            bom_checked: false,
            skip_lf: false,
            data: String::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            retry: None,
            comments: Vec::new(),
            read_error: None,
        }
    }

    /// The response status line and headers.
    pub fn response(&self) -> &HttpResponse {
        &self.response
    }

    pub fn status(&self) -> u16 {
        self.response.status
    }

    /// First response header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.header(name)
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or once the stream
    /// has ended (see [`SseClient::is_closed`]). A timeout loses nothing: a partial event
    /// stays buffered for the next call.
    pub fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.parse_buffered() {
                return Some(event);
            }
            if self.closed {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return None;
            }
            let mut tmp = [0u8; 16 * 1024];
            match self.stream.read(&mut tmp) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    if let Err(e) = self.push_bytes(tmp[..n].to_vec()) {
                        self.read_error = Some(e);
                        self.closed = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return None,
                Err(e) => {
                    self.read_error = Some(e);
                    self.closed = true;
                }
            }
        }
    }

    /// [`SseClient::next_event`] that panics on timeout or end of stream.
    pub fn expect_event(&mut self, timeout: Duration) -> SseEvent {
        match self.next_event(timeout) {
            Some(event) => event,
            None if self.closed => panic!(
                "SSE stream ended while waiting for an event ({:?})",
                self.read_error
            ),
            None => panic!("no SSE event within {timeout:?}"),
        }
    }

    /// Whether the stream has ended (EOF, reset, last chunk or a framing error).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The I/O or framing error that ended the stream, if any.
    pub fn read_error(&self) -> Option<&io::Error> {
        self.read_error.as_ref()
    }

    /// Comment lines seen so far (without the leading `:`), e.g. heartbeats.
    pub fn comments(&self) -> &[String] {
        &self.comments
    }

    /// The last `retry:` value (milliseconds).
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event ID buffer.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Feeds received bytes through the transfer decoding into the event-stream buffer.
    fn push_bytes(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        match self.chunked.as_mut() {
            None => self.text.extend_from_slice(&bytes),
            Some(state) => {
                self.raw.extend_from_slice(&bytes);
                if dechunk(state, &mut self.raw, &mut self.text)? {
                    self.closed = true; // the last chunk: the stream is over
                }
            }
        }
        Ok(())
    }

    /// Processes complete lines in the buffer; returns the first event dispatched.
    fn parse_buffered(&mut self) -> Option<SseEvent> {
        if !self.bom_checked {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            if self.text.len() < 3 && BOM.starts_with(&self.text) && !self.closed {
                return None; // could still become a BOM
            }
            if self.text.starts_with(BOM) {
                self.text.drain(..3);
            }
            self.bom_checked = true;
        }
        let mut consumed = 0;
        let mut event = None;
        while event.is_none() {
            let rest = &self.text[consumed..];
            if self.skip_lf && !rest.is_empty() {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    consumed += 1;
                    continue;
                }
            }
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                break;
            };
            let line = String::from_utf8_lossy(&rest[..end]).into_owned();
            self.skip_lf = rest[end] == b'\r';
            consumed += end + 1;
            event = self.process_line(&line);
        }
        self.text.drain(..consumed);
        if self.closed && event.is_none() {
            // End of stream: an incomplete event (and partial line) is discarded.
            self.text.clear();
            self.data.clear();
            self.event_type.clear();
        }
        event
    }

    fn process_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event_type.clear();
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            if data.ends_with('\n') {
                data.pop();
            }
            let event_type = std::mem::take(&mut self.event_type);
            return Some(SseEvent {
                id: self.last_event_id.clone(),
                event: if event_type.is_empty() {
                    "message".to_string()
                } else {
                    event_type
                },
                data,
            });
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.to_string());
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }
}

// =====================================================================================
// WebSocket
// =====================================================================================

/// A blocking WebSocket client (tungstenite over a `TcpStream` with timeouts). Derefs
/// to [`tungstenite::WebSocket`] for everything else (`send`, `read`, `close`...).
pub struct WsClient {
    ws: tungstenite::WebSocket<TcpStream>,
    response: tungstenite::handshake::client::Response,
}

/// Connects and completes the opening handshake (`url` like `ws://127.0.0.1:PORT/ws?...`);
/// panics if that fails.
pub fn ws_connect(url: &str) -> WsClient {
    try_ws_connect(url).unwrap_or_else(|e| panic!("WebSocket connect to {url}: {e}"))
}

/// [`ws_connect`] returning the error; a refused upgrade is `tungstenite::Error::Http`
/// with the server's response (status, headers, body).
pub fn try_ws_connect(url: &str) -> Result<WsClient, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    try_ws_connect_request(url.into_client_request()?)
}

/// [`try_ws_connect`] with a prepared request (extra headers, subprotocols...).
pub fn try_ws_connect_request(
    request: tungstenite::handshake::client::Request,
) -> Result<WsClient, tungstenite::Error> {
    let uri = request.uri();
    let host = uri.host().ok_or(tungstenite::Error::Url(
        tungstenite::error::UrlError::NoHostName,
    ))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or(tungstenite::Error::Url(
            tungstenite::error::UrlError::UnableToConnect(uri.to_string()),
        ))?;
    let stream = tcp_connect(addr)?;
    match tungstenite::client(request, stream) {
        Ok((ws, response)) => Ok(WsClient { ws, response }),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            Err(tungstenite::Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out in the opening handshake",
            )))
        }
    }
}

impl WsClient {
    /// The server's handshake response.
    pub fn response(&self) -> &tungstenite::handshake::client::Response {
        &self.response
    }

    /// Sends a text message (and flushes); panics on error.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(tungstenite::Message::text(text))
            .unwrap_or_else(|e| panic!("WebSocket send: {e}"));
    }

    /// Sends `value` as a text message.
    pub fn send_json(&mut self, value: &serde_json::Value) {
        self.send_text(&value.to_string());
    }

    /// The next message, waiting at most `timeout`; pings and pongs are skipped (pongs to
    /// pings are sent automatically). `Ok(None)` on timeout; `Err` on errors, including
    /// `ConnectionClosed` after the closing handshake.
    pub fn try_recv(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<tungstenite::Message>, tungstenite::Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.ws.get_ref().set_read_timeout(Some(left))?;
            match self.ws.read() {
                Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => {}
                Ok(msg @ tungstenite::Message::Close(_)) => {
                    // tungstenite only queues its close reply: send it now.
                    let _ = self.ws.flush();
                    return Ok(Some(msg));
                }
                Ok(msg) => return Ok(Some(msg)),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// [`WsClient::try_recv`] that returns `Some(Message::Close(None))` once the
    /// connection is closed (also on a reset) and panics on other errors.
    pub fn recv(&mut self, timeout: Duration) -> Option<tungstenite::Message> {
        match self.try_recv(timeout) {
            Ok(msg) => msg,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Some(tungstenite::Message::Close(None))
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Some(tungstenite::Message::Close(None))
            }
            Err(e) => panic!("WebSocket read: {e}"),
        }
    }

    /// The next text message; `None` on timeout; panics on anything else (binary,
    /// close...).
    pub fn recv_text(&mut self, timeout: Duration) -> Option<String> {
        match self.recv(timeout)? {
            tungstenite::Message::Text(t) => Some(t.as_str().to_string()),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next text message parsed as JSON; `None` on timeout; panics on anything else.
    pub fn recv_json(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let text = self.recv_text(timeout)?;
        Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("expected JSON ({e}), got {text:?}")),
        )
    }

    /// Closing handshake: sends a close frame (`frame`: `None` for an empty one) and waits
    /// up to `timeout` for the server's. Returns `Some(reply)` (the server's close payload,
    /// `None` if it was empty) or `None` if no close frame came (timeout, reset, EOF).
    pub fn close_handshake(
        &mut self,
        frame: Option<tungstenite::protocol::CloseFrame>,
        timeout: Duration,
    ) -> Option<Option<tungstenite::protocol::CloseFrame>> {
        let _ = self.ws.close(frame);
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_recv(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(tungstenite::Message::Close(reply))) => return Some(reply),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Deref for WsClient {
    type Target = tungstenite::WebSocket<TcpStream>;
    fn deref(&self) -> &Self::Target {
        &self.ws
    }
}

impl DerefMut for WsClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ws
    }
}

// =====================================================================================
// Introspection
// =====================================================================================

/// Number of open file descriptors of process `pid` (entries of `/proc/PID/fd`).
///
/// Note: the engine keeps client connections in io_uring's fixed-file table (direct
/// descriptors), which do not appear in `/proc/PID/fd`; count connections with the
/// `switchboard_connections` metric. This catches leaks of ordinary descriptors
/// (listeners, eventfds, files, and connections of processes using plain sockets).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
        .count()
}

/// Polls `condition` (every 10 ms) until it holds or `timeout` passes; returns whether it
/// held. For eventually-true facts (fd counts going down, metrics catching up).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// =====================================================================================
// Unit tests of the harness itself (no engine needed)
// =====================================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A scripted peer: accepts one connection, reads the request head, then runs
    /// `script` with the stream and the head it read.
    fn scripted(
        script: impl FnOnce(TcpStream, String) + Send + 'static,
    ) -> (SocketAddr, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(DEFAULT_TIMEOUT)).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while find_head_end(&head).is_none() && stream.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            script(stream, String::from_utf8(head).unwrap());
        });
        (addr, handle)
    }

    const SHORT: Duration = Duration::from_millis(200);

    #[test]
    fn http_request_content_length() {
        let (addr, peer) = scripted(|mut s, head| {
            assert!(
                head.starts_with("POST /publish?topic=a HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(head.contains("\r\nContent-Length: 5\r\n"), "{head}");
            assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
            assert!(head.contains("\r\nX-Test: 1\r\n"), "{head}");
            let mut body = [0u8; 5];
            s.read_exact(&mut body).unwrap();
            assert_eq!(&body, b"hello");
            s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
                .unwrap();
            // keep the connection open: the client must stop at Content-Length
            thread::sleep(Duration::from_millis(300));
        });
        let r = http_request(
            addr,
            "POST",
            "/publish?topic=a",
            &[("X-Test", "1")],
            b"hello",
        );
        assert_eq!((r.status, r.reason.as_str()), (202, "Accepted"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["ok"], true);
        peer.join().unwrap();
    }

    #[test]
    fn http_request_chunked_and_until_close() {
        let (addr, peer) = scripted(|mut s, _| {
            for part in [
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r"[..],
                b"\n5\r\npedia\r\n",
                b"E\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n",
            ] {
                s.write_all(part).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
        });
        let r = http_request(addr, "GET", "/", &[], b"");
        assert_eq!(r.text(), "Wikipedia in\r\n\r\nchunks.");
        peer.join().unwrap();

        let (addr, peer) = scripted(|mut s, _| {
            s.write_all(b"HTTP/1.0 200 OK\r\nX-A: 1\r\nx-a: 2\r\n\r\nuntil close")
                .unwrap();
        });
        let r = http_request(addr, "GET", "/", &[], b"");
        assert_eq!(
            (r.version.as_str(), r.text().as_str()),
            ("HTTP/1.0", "until close")
        );
        assert_eq!(r.header_all("X-A"), ["1", "2"]);
        peer.join().unwrap();
    }

    #[test]
    fn http_conn_keep_alive_head_and_204() {
        let (addr, peer) = scripted(|mut s, head| {
            assert!(
                head.starts_with("HEAD /a HTTP/1.1\r\n") && !head.contains("Connection"),
                "{head}"
            );
            // HEAD: Content-Length without a body; then 204; then a normal response,
            // all pipelined in one write.
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            thread::sleep(Duration::from_millis(300));
        });
        let mut c = HttpConn::connect(addr).unwrap();
        c.send_request("HEAD", "/a", &[], b"").unwrap();
        let r = c.read_response("HEAD").unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(c.read_response("GET").unwrap().status, 204);
        assert_eq!(c.read_response("GET").unwrap().text(), "ok");
        peer.join().unwrap();
    }

    #[test]
    fn http_errors_are_errors_not_hangs() {
        // A peer that closes mid-body.
        let (addr, peer) = scripted(|mut s, _| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                .unwrap();
        });
        let e = try_http_request(addr, "GET", "/", &[], b"").unwrap_err();
        assert!(e.to_string().contains("3 of 10"), "{e}");
        peer.join().unwrap();
        // Garbage instead of a status line.
        let (addr, peer) = scripted(|mut s, _| s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap());
        assert_eq!(
            try_http_request(addr, "GET", "/", &[], b"")
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        peer.join().unwrap();
    }

    #[test]
    fn raw_exchange_sends_verbatim_and_reads_until_close() {
        let (addr, peer) = scripted(|mut s, head| {
            assert_eq!(head, "GARBAGE\n\n");
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .unwrap();
        });
        let out = raw_exchange(addr, b"GARBAGE\n\n");
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"
        );
        peer.join().unwrap();
        // A peer that never closes: bounded by the timeout.
        let (addr, peer) = scripted(|mut s, _| {
            s.write_all(b"partial").unwrap();
            thread::sleep(Duration::from_millis(800));
        });
        let t = Instant::now();
        assert_eq!(
            raw_exchange_timeout(addr, b"GET / HTTP/1.1\r\n\r\n", Duration::from_millis(300)),
            b"partial"
        );
        assert!(t.elapsed() < Duration::from_millis(700));
        peer.join().unwrap();
    }

    fn sse_peer(
        parts: Vec<&'static [u8]>,
        pause: Duration,
        chunked: bool,
    ) -> (SocketAddr, thread::JoinHandle<()>) {
        scripted(move |mut s, head| {
            assert!(head.starts_with("GET /sse?topic=t HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("\r\nAccept: text/event-stream\r\n"), "{head}");
            let te = if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                ""
            };
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n{te}Cache-Control: no-cache\r\n\r\n")
                .unwrap();
            for p in parts {
                if chunked {
                    write!(s, "{:x}\r\n", p.len()).unwrap();
                    s.write_all(p).unwrap();
                    s.write_all(b"\r\n").unwrap();
                } else {
                    s.write_all(p).unwrap();
                }
                s.flush().unwrap();
                thread::sleep(pause);
            }
            if chunked {
                s.write_all(b"0\r\n\r\n").unwrap();
            }
        })
    }

    fn ev(id: &str, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.into(),
            event: event.into(),
            data: data.into(),
        }
    }

    /// The WHATWG spec's own examples plus the corner cases, split at awkward places.
    const STREAM: &[&[u8]] = &[
        b"\xEF\xBB",
        b"\xBF: heartbeat\n\nretry: 1500\nretry: 12x\n",
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        b"event: add\r\nid: 7\r\ndata:no space\r\n\r",
        b"\n: test stream\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        b"data\ndata\n\ndata:\n\n",
        b"id: a\0b\nevent: only-type\n\n",
        b"data: cr\r\rdata: \xE2\x82",
        b"\xAC split\n\nfield without colon\ndata: incomplete at the end",
    ];

    fn expected_events() -> Vec<SseEvent> {
        vec![
            ev("", "message", "YHOO\n+2\n10"),
            ev("7", "add", "no space"),
            ev("1", "message", "first event"),
            ev("", "message", "second event"),
            ev("", "message", " third event"),
            ev("", "message", "\n"),
            ev("", "message", ""),
            ev("", "message", "cr"),
            ev("", "message", "\u{20AC} split"),
        ]
    }

    #[test]
    fn sse_parsing_identity_and_chunked() {
        for chunked in [false, true] {
            let (addr, peer) = sse_peer(STREAM.to_vec(), Duration::from_millis(15), chunked);
            let mut c = SseClient::connect(addr, "/sse?topic=t");
            assert_eq!(c.status(), 200);
            assert_eq!(c.header("cache-control"), Some("no-cache"));
            let mut got = Vec::new();
            while let Some(e) = c.next_event(Duration::from_secs(5)) {
                got.push(e);
            }
            assert_eq!(got, expected_events(), "chunked={chunked}");
            assert!(c.is_closed(), "chunked={chunked}");
            assert_eq!(c.comments(), [" heartbeat", " test stream"]);
            assert_eq!(c.retry(), Some(1500));
            peer.join().unwrap();
        }
    }

    #[test]
    fn sse_timeout_keeps_partial_event() {
        let (addr, peer) = sse_peer(
            vec![b"id: 42\ndata: hel", b"lo\n", b"\n"],
            Duration::from_millis(400),
            false,
        );
        let mut c = SseClient::connect(addr, "/sse?topic=t");
        let t = Instant::now();
        assert_eq!(c.next_event(Duration::from_millis(100)), None); // mid-event
        assert!(t.elapsed() < Duration::from_millis(350));
        assert!(!c.is_closed());
        assert_eq!(
            c.expect_event(Duration::from_secs(5)),
            ev("42", "message", "hello")
        );
        assert_eq!(c.next_event(Duration::from_secs(5)), None);
        assert!(c.is_closed());
        peer.join().unwrap();
    }

    #[test]
    fn sse_rejects_non_event_streams() {
        let (addr, peer) = scripted(|mut s, _| {
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nno topic\n").unwrap();
        });
        let e = SseClient::try_connect(addr, "/sse?topic=t", &[("Last-Event-ID", "3")])
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("404") && e.to_string().contains("no topic"),
            "{e}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn ws_client_against_tungstenite_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(DEFAULT_TIMEOUT)).unwrap();
            let mut ws = tungstenite::accept(s).unwrap();
            ws.send(tungstenite::Message::Ping(vec![1].into())).unwrap();
            let msg = ws.read().unwrap();
            let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            ws.send(tungstenite::Message::text(
                serde_json::json!({"echo": v}).to_string(),
            ))
            .unwrap();
            thread::sleep(Duration::from_millis(300));
            ws.close(None).unwrap();
            // The client's close reply ends the handshake: read() then says so.
            loop {
                match ws.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::ConnectionClosed) => break,
                    Err(e) => panic!("server side: {e}"),
                }
            }
        });
        let mut ws = ws_connect(&format!("ws://{addr}/ws?topic=a"));
        assert_eq!(ws.response().status(), 101);
        ws.send_json(&serde_json::json!({"n": 1}));
        assert_eq!(
            ws.recv_json(Duration::from_secs(5)).unwrap()["echo"]["n"],
            1
        );
        assert_eq!(ws.recv_json(Duration::from_millis(100)), None); // timeout, not an error
        assert!(matches!(
            ws.recv(Duration::from_secs(5)),
            Some(tungstenite::Message::Close(_))
        ));
        peer.join().unwrap();
    }

    #[test]
    fn ws_refused_upgrade_is_an_http_error() {
        let (addr, peer) = scripted(|mut s, _| {
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        match try_ws_connect(&format!("ws://{addr}/nope")) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
            other => panic!("expected an HTTP error, got {:?}", other.map(|_| ())),
        }
        peer.join().unwrap();
    }

    #[test]
    fn metric_parsing() {
        let text = "# HELP x y\n# TYPE a counter\na_total 3\nb{shard=\"0\"} 2\nb{shard=\"1\",k=\"a b\"} 5 1700000000\nbb 7\n";
        assert_eq!(metric(text, "a_total"), Some(3.0));
        assert_eq!(metric(text, "b{shard=\"1\",k=\"a b\"}"), Some(5.0));
        assert_eq!(metric_sum(text, "b"), Some(7.0));
        assert_eq!(metric(text, "missing"), None);
    }

    /// A stand-in for `switchboard serve`: prints the ready line of a real listening
    /// socket, logs to stderr and answers one HTTP request.
    const STAND_IN: &str = r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print("some banner")
print("listening on http://127.0.0.1:%d shards=3" % s.getsockname()[1], flush=True)
print("stand-in ready", file=sys.stderr, flush=True)
c, _ = s.accept(); c.recv(65536)
c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"); c.close()
print("served", file=sys.stderr, flush=True)
import time; time.sleep(60)
"#;

    #[test]
    fn server_start_program_with_stand_in() {
        let mut server = Server::start_program("python3", &["-c", STAND_IN]);
        assert_eq!(server.shards(), 3);
        assert_ne!(server.port(), 0);
        assert_eq!(
            server.http_url(),
            format!("http://127.0.0.1:{}", server.port())
        );
        assert_eq!(
            server.ws_url("ws?x=1"),
            format!("ws://127.0.0.1:{}/ws?x=1", server.port())
        );
        assert!(
            server.wait_for_output("stand-in ready", DEFAULT_TIMEOUT),
            "{}",
            server.log()
        );
        assert!(fd_count(server.pid()) >= 3);
        assert_eq!(http_get_ok(server.addr(), "/"), "hi");
        assert!(server.wait_for_output("served", DEFAULT_TIMEOUT));
        assert_eq!(server.lines(Stream::Stdout)[0], "some banner");
        assert!(server.log().contains("[stderr] served"));
        let pid = server.pid();
        assert!(server.is_running());
        drop(server);
        // Killed and reaped: no process, not even a zombie, under that pid.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn server_stop_reports_exit_status() {
        let mut server = Server::start_program("python3", &["-c", STAND_IN]);
        let status = server.stop(Duration::from_secs(5));
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!server.is_running());
    }

    #[test]
    fn server_start_failures_say_why() {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import sys; print('bad flag --nope', file=sys.stderr); sys.exit(2)",
        ]);
        let e = Server::try_start_command(cmd, Duration::from_secs(5))
            .err()
            .unwrap();
        assert!(
            e.contains("exited (exit code 2)") && e.contains("[stderr] bad flag --nope"),
            "{e}"
        );

        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import time; print('listening on something else', flush=True); time.sleep(60)",
        ]);
        let t = Instant::now();
        let e = Server::try_start_command(cmd, Duration::from_millis(500))
            .err()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(
            e.contains("did not print within") && e.contains("listening on something else"),
            "{e}"
        );

        let e = Server::try_start_command(Command::new("/nonexistent/switchboard"), READY_TIMEOUT)
            .err()
            .unwrap();
        assert!(e.contains("cannot start"), "{e}");
    }

    /// The harness against the real engine (built through [`bin`]): every client once.
    /// The e2e tests proper live in tests/tests/; this checks the harness itself against
    /// the real engine.
    #[test]
    fn harness_drives_the_real_engine() {
        let server = Server::start(&["--shards", "2", "--echo"]);
        assert_eq!(server.shards(), 2);
        assert_eq!(http_get_ok(server.addr(), "/healthz"), "ok");
        assert!(metrics(server.addr()).contains("# TYPE"));
        let fds_before = fd_count(server.pid());

        let mut ws = ws_connect(&server.ws_url("/ws?topic=e2e.harness"));
        let mut sse = SseClient::connect(server.addr(), "/sse?topic=e2e.*");
        assert!(
            sse.header("content-type")
                .unwrap()
                .starts_with("text/event-stream")
        );
        let r = http_request(
            server.addr(),
            "POST",
            "/publish/e2e.harness",
            &[],
            br#"{"n":1}"#,
        );
        assert_eq!(r.status, 202, "{}", r.text());
        let seq = r.json()["seq"].clone();

        // Each connection's first message is its hello (PROTOCOL.md "Direct addresses").
        let hello = ws.recv_json(DEFAULT_TIMEOUT).expect("the hello");
        assert_eq!(hello["op"], "hello");
        assert_eq!(sse.expect_event(DEFAULT_TIMEOUT).event, "hello");
        let got = ws.recv_json(DEFAULT_TIMEOUT).expect("a WebSocket message");
        assert_eq!(
            (&got["topic"], &got["seq"], &got["data"]["n"]),
            (&"e2e.harness".into(), &seq, &1.into())
        );
        let event = sse.expect_event(DEFAULT_TIMEOUT);
        let env: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!((event.event.as_str(), &env), ("message", &got));
        assert!(!event.id.is_empty());

        let mut echo = ws_connect(&server.ws_url("/echo"));
        echo.send_text("hello");
        assert_eq!(echo.recv_text(DEFAULT_TIMEOUT).as_deref(), Some("hello"));
        let bye = tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        let reply = echo.close_handshake(Some(bye), DEFAULT_TIMEOUT);
        let code = reply
            .expect("the server's close frame")
            .map(|f| u16::from(f.code));
        assert_eq!(code, Some(1000));

        // The engine keeps connections in io_uring's fixed-file table (direct
        // descriptors), invisible in /proc/PID/fd: count them with its metrics instead
        // (the /metrics request's own connection is open while it is answered).
        let open = || metric_sum(&metrics(server.addr()), "switchboard_connections");
        assert!(open().unwrap() >= 3.0, "{:?}", open()); // ws, sse (+ echo, closing)
        drop((ws, sse, echo));
        assert!(
            wait_until(DEFAULT_TIMEOUT, || open() == Some(1.0)),
            "{:?}",
            open()
        );
        assert!(fd_count(server.pid()) >= fds_before);
    }

    #[test]
    fn ready_line_parsing() {
        assert_eq!(
            parse_ready_line("listening on http://127.0.0.1:4321 shards=2"),
            Some(("127.0.0.1:4321".parse().unwrap(), 2))
        );
        assert_eq!(
            parse_ready_line("listening on http://[::1]:80 shards=16\r"),
            Some(("[::1]:80".parse().unwrap(), 16))
        );
        assert_eq!(parse_ready_line("listening on http://127.0.0.1:0"), None);
        assert_eq!(
            parse_ready_line("listening on tcp://127.0.0.1:5038\r"),
            Some(("127.0.0.1:5038".parse().unwrap(), 1))
        );
        assert_eq!(parse_ready_line("listening on tcp://localhost"), None);
        assert_eq!(
            parse_ready_line("INFO listening on tcp://127.0.0.1:1"),
            None
        );
        assert_eq!(
            parse_ready_line("INFO listening on http://127.0.0.1:1 shards=1"),
            None
        );
    }

    #[test]
    fn run_program_is_bounded() {
        let out = run_program(
            "sh",
            &["-c", "echo out; echo err >&2; exit 3"],
            DEFAULT_TIMEOUT,
        );
        assert_eq!(
            (out.status.code(), &out.stdout[..], &out.stderr[..]),
            (Some(3), &b"out\n"[..], &b"err\n"[..])
        );
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| run_program("sleep", &["30"], SHORT));
        assert!(r.is_err() && t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn wait_until_polls() {
        let t = Instant::now();
        assert!(wait_until(Duration::from_secs(5), || t.elapsed()
            > Duration::from_millis(50)));
        assert!(!wait_until(Duration::from_millis(50), || false));
    }
}
