//! A private, real Asterisk PBX for end-to-end tests.
//!
//! [`Asterisk::start`] writes a complete configuration into a fresh temporary directory,
//! starts `/usr/sbin/asterisk -f -n -C <dir>/etc/asterisk.conf` as a child of the test
//! process and returns once the PBX is fully booted and its AMI answers with its banner on
//! `127.0.0.1:<free port>`. Nothing of the system's Asterisk is used or touched: not
//! `/etc/asterisk`, not `/var/run/asterisk`, not port 5038 (the port is picked by the
//! kernel), no SIP (no channel driver is loaded; calls are Local channels only).
//!
//! ```no_run
//! use switchboard_e2e::asterisk::{Ami, AmiUser, Asterisk, CONTEXT};
//!
//! if !Asterisk::require() {
//!     return; // not installed and not in CI: a note was printed
//! }
//! let mut pbx = Asterisk::start(&[AmiUser::new("admin", "s3cret", "all", "all")]);
//! let mut ami = Ami::connect(pbx.ami_addr()); // reads the banner
//! ami.login("admin", "s3cret");
//! ami.action("Originate", "o1", &[
//!     ("Channel", &format!("Local/call200@{CONTEXT}")),
//!     ("Application", "Wait"),
//!     ("Data", "600"),
//!     ("Async", "true"),
//! ]);
//! ami.response("o1");
//! let _up = ami.expect_event("BridgeEnter", |_| true);
//! assert!(pbx.cli("core show channels").contains("active call"));
//! pbx.restart(); // stop (SIGTERM) and start again, same port, same configuration
//! ```
//!
//! # The PBX
//!
//! Like the one the captures in `proto/tests/fixtures/ami/` were taken from: Local
//! channels, a small dialplan, a queue `support` with two Local members, music on hold.
//!
//! Context [`CONTEXT`] (`lab`), where calls are originated:
//!
//! | extension | dialplan | what a test gets |
//! | --- | --- | --- |
//! | `200` | `Ringing`, `Wait(0.5)`, `Answer`, `Wait(600)` | rings 0.5 s, answers, stays up until hung up |
//! | `201` | `Answer`, `Echo` | answers at once, stays up until hung up |
//! | `202` | `Ringing`, `Wait(600)` | rings, never answers (NOANSWER when dialled with a timeout) |
//! | `203` | `Busy(10)` | busy (DialEnd `BUSY`; Originate Reason 5) |
//! | `204` | `Congestion(10)` | congestion (DialEnd `CONGESTION`) |
//! | `205` | `Answer`, `Wait(1)`, `Hangup` | a short call that ends by itself after 1 s |
//! | `300` | `Queue(support,,,,30)`, `Hangup` | enters queue `support` (30 s at most) |
//! | `moh` | `Answer`, `MusicOnHold(default)` | music on hold until hung up (MusicOnHoldStart) |
//! | `_call.` | `Dial(Local/${EXTEN:4}@lab/n,20,tT)`, `Hangup` | `callNNN` dials `NNN`: a two-party call with DialBegin/DialEnd, a bridge, transfer keys (20 s ring timeout) |
//!
//! Originate `Channel: Local/call200@lab` with `Application: Wait`, `Data: 600` (and
//! `Async: true`) gives the classic answered A -> B call: four Local half-channels with
//! one `Linkedid`, DialBegin/DialState/DialEnd ANSWER, BridgeCreate and two BridgeEnter;
//! `Local/call203@lab` gives DialEnd BUSY, `Local/call202@lab` NOANSWER after 20 s,
//! `Local/200@lab` a single answered leg without a bridge.
//!
//! Context [`AGENT_CONTEXT`] (`agents`), the queue members:
//!
//! | extension | dialplan | role |
//! | --- | --- | --- |
//! | `agent1` | `Ringing`, `Wait(2)`, `Answer`, `Wait(600)` | answers after 2 s (so a queue call is answered by agent1; a caller hanging up in the first 2 s abandons) |
//! | `agent2` | `Ringing`, `Wait(600)` | never answers (its leg is CANCELled when agent1 answers) |
//!
//! Queue [`QUEUE`] (`support`): `strategy=ringall`, `timeout=15`, `retry=1`, `joinempty`
//! and no `leavewhenempty`, music class `default`, members `Local/agent1@agents/n`
//! (name `agent1`) and `Local/agent2@agents/n` (name `agent2`), no announcements.
//!
//! `features.conf` maps `blindxfer => #1` and `atxfer => *2`, so the AMI actions
//! `Atxfer` and `BlindTransfer` work on bridged calls (`Dial` with `tT`). MixMonitor
//! files go to `<dir>/spool/monitor/`.
//!
//! Music on hold: class [`MOH_CLASS`] (`default`), `mode=files` on `<dir>/moh/`, which
//! holds `tone.wav`, two seconds of a 425 Hz tone (8 kHz, 16-bit mono PCM) written by the
//! harness. So MOH needs no sound package (`asterisk-moh-opsound-*` is only recommended by
//! `asterisk` and not installed with `--no-install-recommends`) and no transcoding (the
//! Local channels run in signed linear, as does a WAV file), and emits the real
//! MusicOnHoldStart/MusicOnHoldStop events (queue callers, `moh`, attended transfers).
//! Prompts (`Playback`, transfer prompts) come from `asterisk-core-sounds-en-gsm`, which
//! `asterisk` depends on.
//!
//! CDR and CEL are off (`enable=no` in `cdr.conf` and `cel.conf`; `cdr_manager` and
//! `cel_manager` not loaded): no `Cdr`/`CEL` events, less volume. The build's test framework
//! still emits `TestEvent`s, as in the captures.
//!
//! Modules: `modules.conf` has `autoload=no` and loads only [`MODULES`]; the core (AMI,
//! Local channels, bridging core, features, CDR/CEL engines, indications) is built in.
//! A start (spawn to banner) takes 0.4-0.9 s on a 2-core machine, also with eight
//! starting at once; see [`Asterisk::start_time`]. A graceful stop takes ~1 s.
//!
//! # Directories
//!
//! `<tmp>/sb-ast-<pid>-<n>/`: `etc/` (every configuration file), `run/` (control socket
//! `asterisk.ctl`, pid file), `log/` (`messages`: notices, warnings, errors; `queue_log`),
//! `spool/` (`monitor/`),
//! `lib/` (astvarlibdir, keys), `db/` (astdb), `cache/`, `moh/`, and the captured
//! `stdout.log` / `stderr.log` of every start. Read-only from the system:
//! `astmoddir=/usr/lib/asterisk/modules`, `astdatadir=/usr/share/asterisk` (sounds, and
//! the XML documentation without which Asterisk 16 refuses to start). No `runuser` /
//! `rungroup`: Asterisk runs as the user running the tests (root in CI is fine).
//!
//! # Lifetime
//!
//! The child is spawned like every e2e child ([`crate::spawn_program`]: the kernel kills
//! it if the test process dies). [`Asterisk::stop`] sends SIGTERM (by pid) and SIGKILL
//! after [`STOP_GRACE`]; [`Asterisk::kill`] sends SIGKILL at once (a crash);
//! [`Asterisk::restart`] (re)starts it on the same port with the same configuration.
//! Drop stops it and removes the directory, unless `SWITCHBOARD_KEEP_ASTERISK` is set
//! (then the path is printed). A test that panics prints the PBX's output.
//!
//! # When Asterisk is missing
//!
//! [`Asterisk::require`]: `true` if installed; otherwise it panics when the `CI`
//! environment variable is set (CI installs it, see `.ci/run`), else prints a note and
//! returns `false` so that the test can return.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::{DEFAULT_TIMEOUT, Process, run_with_timeout, spawn_program};

/// The Asterisk binary (Debian's package `asterisk`).
pub const ASTERISK: &str = "/usr/sbin/asterisk";
/// Where Debian's `asterisk-modules` installs the modules.
pub const MODULE_DIR: &str = "/usr/lib/asterisk/modules";
/// Sounds and XML documentation (read-only).
pub const DATA_DIR: &str = "/usr/share/asterisk";
/// How long [`Asterisk::start`] / [`Asterisk::restart`] wait for a fully booted PBX
/// whose AMI answers.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Between SIGTERM and SIGKILL in [`Asterisk::stop`] (Asterisk ends in ~1 s).
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Bound of one `asterisk -rx` command ([`Asterisk::cli`]).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(15);
/// Set (to anything) to keep the temporary directory after drop.
pub const KEEP_ENV: &str = "SWITCHBOARD_KEEP_ASTERISK";
/// The dialplan context of the extensions (see the module documentation).
pub const CONTEXT: &str = "lab";
/// The context of the queue members.
pub const AGENT_CONTEXT: &str = "agents";
/// The queue.
pub const QUEUE: &str = "support";
/// The music-on-hold class.
pub const MOH_CLASS: &str = "default";

/// The modules loaded (`autoload=no`), each needed by something the PBX offers.
pub const MODULES: &[&str] = &[
    "pbx_config.so",              // extensions.conf
    "app_dial.so",                // Dial
    "app_queue.so",               // Queue, QueueStatus and the Queue* events
    "app_echo.so",                // Echo (201)
    "app_playback.so",            // Playback (prompts)
    "app_mixmonitor.so",          // MixMonitor / StopMixMonitor actions
    "res_musiconhold.so",         // MusicOnHold, queue hold music
    "res_timing_timerfd.so",      // timing for generators (MOH) and bridges
    "bridge_simple.so",           // two-party bridges
    "bridge_builtin_features.so", // blind / attended transfer (BlindTransfer, Atxfer)
    "format_wav.so",              // MOH file, MixMonitor recordings
    "format_gsm.so",              // Debian's prompts are GSM
    "codec_gsm.so",               // ... transcoded to the Local channels' slin
];

/// An AMI account written into `manager.conf`: `read` and `write` are class lists
/// (`"all"`, `"call,agent"`, `""` for none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmiUser {
    pub name: String,
    pub secret: String,
    pub read: String,
    pub write: String,
}

impl AmiUser {
    pub fn new(name: &str, secret: &str, read: &str, write: &str) -> AmiUser {
        AmiUser {
            name: name.to_string(),
            secret: secret.to_string(),
            read: read.to_string(),
            write: write.to_string(),
        }
    }

    /// `read = all`, `write = all`.
    pub fn admin(name: &str, secret: &str) -> AmiUser {
        AmiUser::new(name, secret, "all", "all")
    }
}

/// A running private Asterisk (see the module documentation).
pub struct Asterisk {
    dir: PathBuf,
    addr: SocketAddr,
    /// The current Asterisk process (none before the first start).
    process: Option<Process>,
    version: String,
    banner: String,
    starts: u32,
    start_time: Duration,
}

impl std::fmt::Debug for Asterisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asterisk")
            .field("dir", &self.dir)
            .field("addr", &self.addr)
            .field("pid", &self.pid())
            .field("version", &self.version)
            .finish()
    }
}

impl Asterisk {
    /// Whether Asterisk is installed (the binary and the modules used here).
    pub fn available() -> bool {
        Path::new(ASTERISK).is_file() && Path::new(MODULE_DIR).join("app_queue.so").is_file()
    }

    /// For the first line of a test: `true` if Asterisk is [`available`](Self::available).
    /// If not: panics when the `CI` environment variable is set (non-empty), otherwise
    /// prints a note and returns `false` (the test should return).
    pub fn require() -> bool {
        if Asterisk::available() {
            return true;
        }
        let how = "install Debian bullseye's `asterisk` (on bookworm: add the bullseye \
                   source as .ci/run does, then `apt-get install --no-install-recommends asterisk`)";
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("e2e: this test needs a real Asterisk ({ASTERISK}) and CI is set: {how}");
        }
        eprintln!("e2e: NOTE: {ASTERISK} not installed, test not run: {how}");
        false
    }

    /// Writes the configuration, starts the PBX and waits (up to [`START_TIMEOUT`]) until
    /// it is fully booted and its AMI sends the banner. Panics with the PBX's output if
    /// it does not come up.
    pub fn start(users: &[AmiUser]) -> Asterisk {
        Asterisk::try_start(users).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start`](Self::start) returning the error instead of panicking.
    pub fn try_start(users: &[AmiUser]) -> Result<Asterisk, String> {
        if !Asterisk::available() {
            return Err(format!("e2e: Asterisk is not installed ({ASTERISK})"));
        }
        for u in users {
            let fields = [&u.name, &u.secret, &u.read, &u.write];
            if u.name.is_empty()
                || u.name == "general"
                || fields
                    .iter()
                    .any(|f| f.contains(['\r', '\n', '[', ']', ';']))
            {
                return Err(format!("e2e: unusable AMI user for manager.conf: {u:?}"));
            }
        }
        let dir = make_dir().map_err(|e| format!("e2e: cannot create Asterisk's dir: {e}"))?;
        let mut pbx = Asterisk {
            dir,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            process: None,
            version: String::new(),
            banner: String::new(),
            starts: 0,
            start_time: Duration::ZERO,
        };
        // The port is free when picked, and could be taken before Asterisk binds it:
        // then try another one (only here: a restart must keep its port).
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(|e| format!("e2e: no free port: {e}"))?;
            pbx.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            write_config(&pbx.dir, port, users)
                .map_err(|e| format!("e2e: cannot write Asterisk's configuration: {e}"))?;
            match pbx.boot() {
                Ok(()) => return Ok(pbx),
                Err(e) => {
                    let port_taken = pbx
                        .read_log("log/messages")
                        .contains("Address already in use");
                    pbx.kill();
                    last = e;
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// Spawns Asterisk with the configuration in place and waits until it is ready.
    fn boot(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        let deadline = t0 + START_TIMEOUT;
        self.starts += 1;
        let open = |name: &str| -> io::Result<File> {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))?;
            writeln!(f, "==== e2e: start #{} ====", self.starts)?;
            Ok(f)
        };
        let (out, err) = match (open("stdout.log"), open("stderr.log")) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!("e2e: cannot open Asterisk's logs: {e}"));
            }
        };
        let mut cmd = Command::new(ASTERISK);
        cmd.arg("-f")
            .arg("-n")
            .arg("-C")
            .arg(self.conf())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_program(cmd).map_err(|e| format!("e2e: cannot start {ASTERISK}: {e}"))?;
        self.process = Some(Process::new(child));

        // 1. Fully booted: the control socket exists and `core waitfullybooted` returns.
        let ctl = self.dir.join("run/asterisk.ctl");
        let mut booted = false;
        while !booted {
            if let Some(status) = self.try_status() {
                return Err(self.failure(&format!("exited ({status}) while starting")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.failure(&format!("was not fully booted within {START_TIMEOUT:?}")));
            }
            if ctl.exists()
                && let Ok(out) = self.try_cli_timeout("core waitfullybooted", deadline - now)
            {
                booted = out.contains("fully booted");
            }
            if !booted {
                thread::sleep(Duration::from_millis(25));
            }
        }
        // 2. The AMI answers with its banner.
        let banner = loop {
            match read_banner(self.addr) {
                Ok(b) => break b,
                Err(e) => {
                    if self.try_status().is_some() || Instant::now() >= deadline {
                        return Err(self.failure(&format!(
                            "is fully booted, but its AMI on {} does not answer: {e}",
                            self.addr
                        )));
                    }
                    thread::sleep(Duration::from_millis(25));
                }
            }
        };
        if !banner.starts_with("Asterisk Call Manager/") {
            return Err(self.failure(&format!("sent an unexpected AMI banner {banner:?}")));
        }
        self.banner = banner;
        let version = self
            .try_cli("core show version")
            .map_err(|e| self.failure(&e))?;
        self.version = version
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        self.start_time = t0.elapsed();
        Ok(())
    }

    fn failure(&mut self, what: &str) -> String {
        format!(
            "e2e: Asterisk (pid {}, {}) {what}\n{}",
            self.pid(),
            self.dir.display(),
            self.log_report()
        )
    }

    /// `127.0.0.1:<port>` of the AMI (the same across [`restart`](Self::restart)s).
    pub fn ami_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The pid of the current Asterisk process.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Process::pid)
    }

    /// The private directory (configuration in `etc/`, logs, spool...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/etc/asterisk.conf`, as given to `-C`.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("etc/asterisk.conf")
    }

    /// Asterisk's version, from `core show version`: e.g. `16.28.0~dfsg-0+deb11u4`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The AMI banner line, e.g. `Asterisk Call Manager/5.0.4`.
    pub fn banner(&self) -> &str {
        &self.banner
    }

    /// The AMI version from the banner, e.g. `5.0.4`.
    pub fn ami_version(&self) -> &str {
        self.banner.rsplit('/').next().unwrap_or_default()
    }

    /// How long the last (re)start took, from spawn to the banner.
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    /// Runs a CLI command through `asterisk -C <conf> -rx <command>` (this PBX's own
    /// control socket) and returns its output. Panics if that fails or takes longer than
    /// [`CLI_TIMEOUT`].
    pub fn cli(&self, command: &str) -> String {
        self.try_cli(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`cli`](Self::cli) returning the error.
    pub fn try_cli(&self, command: &str) -> Result<String, String> {
        self.try_cli_timeout(command, CLI_TIMEOUT)
    }

    fn try_cli_timeout(&self, command: &str, timeout: Duration) -> Result<String, String> {
        let mut cmd = Command::new(ASTERISK);
        cmd.arg("-C")
            .arg(self.conf())
            .arg("-rx")
            .arg(command)
            .stdin(Stdio::null());
        let what = format!("e2e: `asterisk -rx {command:?}`");
        let out = run_with_timeout(cmd, timeout).map_err(|e| format!("{what}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || stdout.contains("Unable to connect to remote asterisk") {
            return Err(format!(
                "{what} failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(stdout)
    }

    /// Whether the process is running (it is reaped if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// How the current process ended, if it has (a PBX never started has "ended").
    fn try_status(&mut self) -> Option<ExitStatus> {
        match self.process.as_mut() {
            Some(p) => p.try_status(),
            None => Some(ExitStatus::default()),
        }
    }

    /// Graceful stop: SIGTERM (by pid), up to [`STOP_GRACE`] to exit, then SIGKILL.
    /// Returns how it ended. The AMI port is closed afterwards (until a restart).
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(STOP_GRACE)
    }

    fn stop_within(&mut self, grace: Duration) -> ExitStatus {
        match self.process.as_mut() {
            Some(p) => p.stop(grace),
            None => ExitStatus::default(),
        }
    }

    /// SIGKILL (by pid) and reap: the PBX vanishes as in a crash (its control socket
    /// stays behind; a restart copes with that).
    pub fn kill(&mut self) -> ExitStatus {
        match self.process.as_mut() {
            Some(p) => p.kill(),
            None => ExitStatus::default(),
        }
    }

    /// Stops the PBX if it runs ([`stop`](Self::stop)), then starts it again with the
    /// same configuration on the same port and waits as [`start`](Self::start) does.
    /// Panics if it does not come back.
    pub fn restart(&mut self) {
        self.try_restart().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`restart`](Self::restart) returning the error.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.stop();
        self.boot().inspect_err(|_| {
            self.kill();
        })
    }

    fn read_log(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.dir.join(name)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The captured stdout (the console: notices, warnings, errors and verbose level 3,
    /// i.e. every dialplan step) and stderr of every start, the last 300 lines of each.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for name in ["stdout.log", "stderr.log"] {
            let text = self.read_log(name);
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(300);
            let _ = writeln!(out, "---- {name} ----");
            if skip > 0 {
                let _ = writeln!(out, "[... {skip} earlier lines ...]");
            }
            for line in &lines[skip..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    fn log_report(&self) -> String {
        format!(
            "---- Asterisk in {} ----\n{}---- end of Asterisk output ----",
            self.dir.display(),
            self.log()
        )
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        // Exited although nobody stopped it.
        let crashed =
            self.process.as_ref().is_some_and(|p| !p.has_exited()) && self.try_status().is_some();
        self.stop_within(Duration::from_secs(5));
        if thread::panicking() {
            if crashed {
                eprintln!("e2e: Asterisk pid {} had exited by itself", self.pid());
            }
            eprintln!("{}", self.log_report());
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "e2e: {KEEP_ENV} is set: Asterisk's directory kept: {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh `<tmp>/sb-ast-<pid>-<n>` (short: the control socket's path must fit in
/// `sun_path`, 108 bytes).
fn make_dir() -> io::Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("sb-ast-{}-{n}", std::process::id()));
        if dir.join("run/asterisk.ctl").as_os_str().len() > 100 {
            return Err(io::Error::other(format!(
                "{} is too long for a unix socket path under it (set TMPDIR shorter)",
                dir.display()
            )));
        }
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A port the kernel considers free on 127.0.0.1 right now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Connects and reads the first line.
fn read_banner(addr: SocketAddr) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&buf)),
            ));
        }
        buf.push(byte[0]);
        if buf.len() > 200 {
            return Err(io::Error::other("no banner line"));
        }
    }
    Ok(String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned())
}

/// Writes every configuration file, the MOH file and the directories.
fn write_config(dir: &Path, port: u16, users: &[AmiUser]) -> io::Result<()> {
    for sub in [
        "etc",
        "run",
        "log",
        "spool/monitor",
        "lib/keys",
        "db",
        "cache",
        "moh",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let d = dir.display();
    let put = |name: &str, text: String| fs::write(dir.join("etc").join(name), text);
    put(
        "asterisk.conf",
        format!(
            "; Written by switchboard-e2e (tests/src/asterisk.rs): a private test PBX.\n\
             [directories]\n\
             astetcdir => {d}/etc\n\
             astmoddir => {MODULE_DIR}\n\
             astvarlibdir => {d}/lib\n\
             astdbdir => {d}/db\n\
             astkeydir => {d}/lib\n\
             astdatadir => {DATA_DIR}\n\
             astagidir => {DATA_DIR}/agi-bin\n\
             astspooldir => {d}/spool\n\
             astrundir => {d}/run\n\
             astlogdir => {d}/log\n\
             astsbindir => /usr/sbin\n\
             astcachedir => {d}/cache\n\
             \n\
             [options]\n\
             ; no runuser/rungroup: runs as the test's user (root in CI)\n\
             verbose = 3\n\
             debug = 0\n\
             nocolor = yes\n\
             dontwarn = yes\n\
             hideconnect = yes\n"
        ),
    )?;
    let mut modules = String::from("[modules]\nautoload = no\n");
    for m in MODULES {
        let _ = writeln!(modules, "load => {m}");
    }
    put("modules.conf", modules)?;
    put(
        "logger.conf",
        "[general]\n\
         queue_log = yes\n\
         [logfiles]\n\
         console => notice,warning,error\n\
         messages => notice,warning,error\n"
            .into(),
    )?;
    let mut manager = format!(
        "[general]\n\
         enabled = yes\n\
         webenabled = no\n\
         bindaddr = 127.0.0.1\n\
         port = {port}\n\
         displayconnects = no\n\
         timestampevents = yes\n"
    );
    for u in users {
        let _ = write!(
            manager,
            "\n[{}]\n\
             secret = {}\n\
             read = {}\n\
             write = {}\n\
             deny = 0.0.0.0/0.0.0.0\n\
             permit = 127.0.0.1/255.255.255.255\n",
            u.name, u.secret, u.read, u.write
        );
    }
    put("manager.conf", manager)?;
    put("http.conf", "[general]\nenabled = no\n".into())?;
    put("cdr.conf", "[general]\nenable = no\n".into())?;
    put("cel.conf", "[general]\nenable = no\n".into())?;
    put(
        "features.conf",
        "[general]\n[featuremap]\nblindxfer => #1\natxfer => *2\n".into(),
    )?;
    put(
        "musiconhold.conf",
        format!("[{MOH_CLASS}]\nmode = files\ndirectory = {d}/moh\n"),
    )?;
    put(
        "queues.conf",
        format!(
            "[general]\n\
             persistentmembers = no\n\
             \n\
             [{QUEUE}]\n\
             strategy = ringall\n\
             timeout = 15\n\
             retry = 1\n\
             wrapuptime = 0\n\
             joinempty = yes\n\
             leavewhenempty = no\n\
             musicclass = {MOH_CLASS}\n\
             announce-frequency = 0\n\
             periodic-announce-frequency = 0\n\
             announce-holdtime = no\n\
             announce-position = no\n\
             member => Local/agent1@{AGENT_CONTEXT}/n,0,agent1\n\
             member => Local/agent2@{AGENT_CONTEXT}/n,0,agent2\n"
        ),
    )?;
    put(
        "extensions.conf",
        format!(
            "[general]\n\
             static = yes\n\
             writeprotect = yes\n\
             \n\
             [{CONTEXT}]\n\
             exten => 200,1,Ringing()\n same => n,Wait(0.5)\n same => n,Answer()\n same => n,Wait(600)\n\
             exten => 201,1,Answer()\n same => n,Echo()\n\
             exten => 202,1,Ringing()\n same => n,Wait(600)\n\
             exten => 203,1,Busy(10)\n\
             exten => 204,1,Congestion(10)\n\
             exten => 205,1,Answer()\n same => n,Wait(1)\n same => n,Hangup()\n\
             exten => 300,1,Queue({QUEUE},,,,30)\n same => n,Hangup()\n\
             exten => moh,1,Answer()\n same => n,MusicOnHold({MOH_CLASS})\n\
             exten => _call.,1,Dial(Local/${{EXTEN:4}}@{CONTEXT}/n,20,tT)\n same => n,Hangup()\n\
             \n\
             [{AGENT_CONTEXT}]\n\
             exten => agent1,1,Ringing()\n same => n,Wait(2)\n same => n,Answer()\n same => n,Wait(600)\n\
             exten => agent2,1,Ringing()\n same => n,Wait(600)\n"
        ),
    )?;
    fs::write(dir.join("moh/tone.wav"), tone_wav())?;
    Ok(())
}

/// Two seconds of a 425 Hz tone, 8 kHz 16-bit mono PCM, as a WAV file.
fn tone_wav() -> Vec<u8> {
    const RATE: u32 = 8000;
    let samples: Vec<u8> = (0..RATE * 2)
        .flat_map(|i| {
            let t = f64::from(i) / f64::from(RATE);
            let v = ((2.0 * std::f64::consts::PI * 425.0 * t).sin() * 3000.0) as i16;
            v.to_le_bytes()
        })
        .collect();
    let mut w = Vec::with_capacity(44 + samples.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&RATE.to_le_bytes());
    w.extend_from_slice(&(RATE * 2).to_le_bytes()); // byte rate
    w.extend_from_slice(&2u16.to_le_bytes()); // block align
    w.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    w.extend_from_slice(&samples);
    w
}

// =====================================================================================
// A plain TCP AMI client
// =====================================================================================

/// One AMI message as received: its text and its fields in order (keys repeat).
#[derive(Debug, Clone)]
pub struct AmiMsg {
    pub raw: String,
    pub fields: Vec<(String, String)>,
}

impl AmiMsg {
    fn parse(raw: &[u8]) -> AmiMsg {
        let raw = String::from_utf8_lossy(raw).into_owned();
        let fields = raw
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((k, v)) => (k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        AmiMsg { raw, fields }
    }

    /// The first value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// `Event:` if it is the first field.
    pub fn event(&self) -> Option<&str> {
        match self.fields.first() {
            Some((k, v)) if k == "Event" => Some(v),
            _ => None,
        }
    }

    /// `Response:` if it is the first field.
    pub fn response(&self) -> Option<&str> {
        match self.fields.first() {
            Some((k, v)) if k == "Response" => Some(v),
            _ => None,
        }
    }
    /// The keys, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A blocking AMI client over plain TCP, every wait bounded: for driving the test PBX
/// (originate calls, hang up...) and for tests of AMI itself.
pub struct Ami {
    s: TcpStream,
    buf: Vec<u8>,
    closed: bool,
    banner: String,
}

impl Ami {
    /// Connects and reads the banner line (panics on failure).
    pub fn connect(addr: SocketAddr) -> Ami {
        Ami::try_connect(addr).unwrap_or_else(|e| panic!("e2e: AMI connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Ami> {
        let mut a = Ami::try_connect_raw(addr)?;
        match a.try_line(Instant::now() + DEFAULT_TIMEOUT) {
            Some(banner) => {
                a.banner = banner;
                Ok(a)
            }
            None => Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("no banner: {:?}", String::from_utf8_lossy(&a.buf)),
            )),
        }
    }

    /// Connects without reading anything (the banner is then the first [`line`](Self::line)).
    pub fn connect_raw(addr: SocketAddr) -> Ami {
        Ami::try_connect_raw(addr).unwrap_or_else(|e| panic!("e2e: AMI connect to {addr}: {e}"))
    }

    fn try_connect_raw(addr: SocketAddr) -> io::Result<Ami> {
        Ok(Ami {
            s: crate::tcp_connect(addr)?,
            buf: Vec::new(),
            closed: false,
            banner: String::new(),
        })
    }

    /// The next line (the banner); panics after `timeout`.
    pub fn line(&mut self, timeout: Duration) -> String {
        self.try_line(Instant::now() + timeout).unwrap_or_else(|| {
            panic!(
                "e2e: no AMI line within {timeout:?}: {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    fn try_line(&mut self, deadline: Instant) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    pub fn banner(&self) -> &str {
        &self.banner
    }

    pub fn stream(&self) -> &TcpStream {
        &self.s
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.s.local_addr().expect("e2e: AMI local address")
    }

    /// Bytes received and not yet taken as a line or a message.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes [`pending`](Self::pending).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads until the server closes the connection; the bytes read (and not taken
    /// before), or `None` on timeout.
    pub fn until_closed(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while !self.closed {
            if !self.fill(deadline) && !self.closed {
                return None;
            }
        }
        Some(std::mem::take(&mut self.buf))
    }

    /// Every message received within `d`.
    pub fn collect_for(&mut self, d: Duration) -> Vec<AmiMsg> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            out.push(m);
        }
        out
    }

    /// Whether the server closed the connection (seen by a read).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn send_raw(&mut self, text: &str) {
        self.s.write_all(text.as_bytes()).expect("e2e: AMI send");
    }

    /// Sends `Action: name`, `ActionID: id` (unless empty), then `fields`.
    pub fn action(&mut self, name: &str, id: &str, fields: &[(&str, &str)]) {
        let mut t = format!("Action: {name}\r\n");
        if !id.is_empty() {
            let _ = write!(t, "ActionID: {id}\r\n");
        }
        for (k, v) in fields {
            let _ = write!(t, "{k}: {v}\r\n");
        }
        t.push_str("\r\n");
        self.send_raw(&t);
    }

    /// Reads more bytes (kept as [`pending`](Self::pending)); false on timeout or close.
    pub fn fill(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = self
            .s
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    /// The next message, or `None` on timeout or close.
    pub fn next(&mut self, timeout: Duration) -> Option<AmiMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let m = AmiMsg::parse(&self.buf[..i + 4]);
                self.buf.drain(..i + 4);
                return Some(m);
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Skips messages until one satisfies `f` (panics after `timeout`).
    pub fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&AmiMsg) -> bool,
    ) -> AmiMsg {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(m) if f(&m) => return m,
                Some(_) => {}
                None => panic!(
                    "e2e: no {what} within {timeout:?} (closed: {})",
                    self.closed
                ),
            }
        }
    }

    /// The next `Event: name` satisfying `f`, within [`DEFAULT_TIMEOUT`].
    pub fn expect_event(&mut self, name: &str, mut f: impl FnMut(&AmiMsg) -> bool) -> AmiMsg {
        self.expect(&format!("event {name}"), DEFAULT_TIMEOUT, |m| {
            m.event() == Some(name) && f(m)
        })
    }

    /// The response carrying ActionID `id` (events before it are skipped).
    pub fn response(&mut self, id: &str) -> AmiMsg {
        self.expect(&format!("response {id}"), DEFAULT_TIMEOUT, |m| {
            m.response().is_some() && m.get("ActionID") == Some(id)
        })
    }

    /// `Originate` of `channel` into `Wait(600)`, asynchronous (the call stays up until
    /// hung up); panics unless it is queued.
    pub fn originate_wait(&mut self, id: &str, channel: &str) {
        self.action(
            "Originate",
            id,
            &[
                ("Channel", channel),
                ("Application", "Wait"),
                ("Data", "600"),
                ("Async", "true"),
            ],
        );
        let r = self.response(id);
        assert_eq!(
            (r.response(), r.get("Message")),
            (Some("Success"), Some("Originate successfully queued")),
            "{}",
            r.raw
        );
    }

    /// Plain login (all events on); panics unless `Authentication accepted`.
    pub fn login(&mut self, user: &str, secret: &str) -> AmiMsg {
        self.login_events(user, secret, None)
    }

    /// Plain login with an `Events:` mask (`None`: the user's default); panics unless
    /// `Authentication accepted`.
    pub fn login_events(&mut self, user: &str, secret: &str, events: Option<&str>) -> AmiMsg {
        let mut fields = vec![("Username", user), ("Secret", secret)];
        if let Some(e) = events {
            fields.push(("Events", e));
        }
        self.action("Login", "e2e-login", &fields);
        let r = self.response("e2e-login");
        assert_eq!(
            (r.response(), r.get("Message")),
            (Some("Success"), Some("Authentication accepted")),
            "e2e: AMI login as {user}: {}",
            r.raw
        );
        r
    }

    /// Challenge + MD5 login; panics unless accepted.
    pub fn login_md5(&mut self, user: &str, secret: &str) -> AmiMsg {
        self.action("Challenge", "e2e-challenge", &[("AuthType", "MD5")]);
        let c = self.response("e2e-challenge");
        let challenge = c
            .get("Challenge")
            .unwrap_or_else(|| panic!("e2e: no Challenge in {}", c.raw))
            .to_string();
        let key = md5_hex(format!("{challenge}{secret}").as_bytes());
        self.action(
            "Login",
            "e2e-login",
            &[("AuthType", "MD5"), ("Username", user), ("Key", &key)],
        );
        let r = self.response("e2e-login");
        assert_eq!(
            (r.response(), r.get("Message")),
            (Some("Success"), Some("Authentication accepted")),
            "e2e: AMI MD5 login as {user}: {}",
            r.raw
        );
        r
    }
}

/// MD5 (RFC 1321) as lowercase hex, written out so that the harness depends on no crate
/// (for AMI's challenge login: `md5hex(challenge + secret)`).
pub fn md5_hex(data: &[u8]) -> String {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    [a0, b0, c0, d0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}
