//! The `ami-sim` command line: every flag with its help text, and the value parsers
//! (`30s`, `100ms`, `max`, `4MiB`, fault specs, `--user` specs), unit-tested here. Owns
//! no behaviour: [`crate::server::run`] reads the parsed [`Opts`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use switchboard_proto::ami::Classes;

use crate::config::User;
use crate::fault::Fault;

/// A simulated Asterisk PBX speaking the Asterisk Manager Interface (AMI).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ami-sim",
    version,
    about = "A simulated Asterisk PBX on the Asterisk Manager Interface (AMI): logins, actions, \
             event lists and a live event stream that AMI clients cannot tell from the real one",
    after_help = "Examples:\n  \
        ami-sim --listen 127.0.0.1:5038 --user admin:amp111\n  \
        ami-sim --user gw:s3cret:read=call,agent:write=call --calls-per-sec 2\n  \
        ami-sim --events-per-sec 200000 --seed 7\n  \
        ami-sim --seed 7 --duration 60s --record office.rec\n  \
        ami-sim --replay office.rec --speed 10\n  \
        ami-sim --replay asterisk22-local.txt --speed max\n  \
        ami-sim --fault disconnect-every=30s --fault slow-write=1000"
)]
pub struct Opts {
    /// Address to listen on. Port 0 picks a free port; once listening, the address in use
    /// is printed on stdout as `listening on tcp://HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:5038")]
    pub listen: SocketAddr,

    /// An AMI user: `NAME:SECRET`, optionally followed by `:read=CLASSES` and/or
    /// `:write=CLASSES` (manager.conf class lists, e.g. `call,agent`; default `all`).
    /// Repeatable. Without --user and --users, one user `admin:amp111` with every class.
    #[arg(long = "user", value_name = "SPEC", value_parser = parse_user)]
    pub users: Vec<User>,

    /// A TOML file of users (`[users.NAME]` tables with `secret`, `read`, `write`), in
    /// addition to --user.
    #[arg(long = "users", value_name = "FILE")]
    pub users_file: Option<PathBuf>,

    /// Which Asterisk to impersonate: the banner (`Asterisk Call Manager/11.0.0` for 22,
    /// 9.0.0 for 20, 7.0.3 for 18, 5.0.4 for 16) and `core show version`.
    #[arg(long, default_value = "22", value_parser = parse_asterisk_version)]
    pub asterisk_version: u32,

    /// `systemname` of asterisk.conf: every event carries `SystemName:` and Uniqueids read
    /// `NAME-EPOCH.SEQ`.
    #[arg(long, value_name = "NAME")]
    pub system_name: Option<String>,

    /// Mean rate of new calls (Poisson arrivals) [default: 0.05, one call every 20 s].
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub calls_per_sec: Option<f64>,

    /// Stress mode: generate calls so that the stream carries at least this many events
    /// per second, from the first second (the PBX starts warm, as if it had been loaded
    /// for a while; single seconds vary by several percent since a call's events come in
    /// bursts, so the rate is aimed 2% above). Call durations are compressed to keep
    /// memory bounded. Accepts `200k`.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, conflicts_with = "calls_per_sec")]
    pub events_per_sec: Option<f64>,

    /// Do not generate calls: the PBX only answers actions (and runs the calls they start).
    #[arg(long, conflicts_with_all = ["calls_per_sec", "events_per_sec"])]
    pub no_calls: bool,

    /// Leave out the noise events `VarSet`, `Newexten` and `DeviceStateChange`.
    #[arg(long)]
    pub no_noise: bool,

    /// Leave out `Cdr` events.
    #[arg(long)]
    pub no_cdr: bool,

    /// Seed of every random choice. With a seed the simulation also starts at a fixed
    /// time (--start-epoch, default 1795248000 = 2026-11-21T08:00:00Z), so the same seed
    /// gives the same events, byte for byte, for the same simulated duration.
    /// Without it, a random seed and the current time.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Simulated time at start, in seconds since the Unix epoch (may have a fraction)
    /// [default: now, or 1795248000 with --seed].
    #[arg(long, value_name = "SECONDS", value_parser = parse_epoch)]
    pub start_epoch: Option<u64>,

    /// Stop after this long (simulated time = wall time since start) and exit 0; a
    /// recording then ends exactly at start + DURATION.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Write the event stream (every event of every class, as a client logged in at the
    /// start with `read = all` and `Events: on` receives it) to FILE, with the simulated
    /// time of each event (format in the README).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,

    /// Serve a recorded stream instead of simulating: an `ami-sim --record` file, or a raw
    /// capture of a real Asterisk (banner and the response to its login skipped). Every
    /// client gets the whole stream from its start, after its own login.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// Replay speed: a factor of the recorded timing (`1`, `10`, `0.5`), or `max` (as
    /// fast as the client reads).
    #[arg(long, default_value = "1", value_parser = parse_speed, requires = "replay")]
    pub speed: Speed,

    /// What a replay serves after login: `events` (every `Event:` message, byte for byte:
    /// the capture's event stream) or `all` (every byte after the capture's login
    /// response, including the responses to the capture's own actions).
    #[arg(long, value_enum, default_value_t = ReplayMessages::Events, requires = "replay")]
    pub replay_messages: ReplayMessages,

    /// A fault to inject, for testing clients' supervisors (repeatable):
    /// `disconnect-every=30s` (close each session that long after its login, abruptly),
    /// `garbage-every=10s` (write a non-AMI line between two messages that often),
    /// `stall=5s[/30s]` (in every 30 s after login, write nothing to the session during the
    /// last 5 s),
    /// `slow-write=1000` (write at most 1000 bytes/s to each session),
    /// `refuse-login` (every login fails as a wrong secret does).
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    pub faults: Vec<Fault>,

    /// Drop a client whose socket accepts no bytes for this long (Asterisk's
    /// `writetimeout`, 100 ms by default).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Bytes queued for one client before it is dropped as not reading (besides the
    /// kernel's socket buffer).
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub max_queue: usize,

    /// Time a client has to log in before it is disconnected (Asterisk's `authtimeout`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// Most sessions not yet logged in at once; more are closed at once (Asterisk's
    /// `authlimit`).
    #[arg(long, default_value_t = 50)]
    pub auth_limit: usize,
}

/// `--speed`: a factor of the recorded timing, or as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    Factor(f64),
    Max,
}

/// `--replay-messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayMessages {
    /// Every `Event:` message after the capture's login, byte for byte.
    Events,
    /// Every byte after the capture's login response.
    All,
}

impl Opts {
    /// Simulated start time (µs since the epoch): `--start-epoch`, else the fixed default
    /// with `--seed`, else `now_us`.
    pub fn start_us(&self, now_us: u64) -> u64 {
        match (self.start_epoch, self.seed) {
            (Some(s), _) => s,
            (None, Some(_)) => DEFAULT_SEEDED_START_US,
            (None, None) => now_us,
        }
    }
}

/// Where a seeded simulation starts: 2026-11-21T08:00:00Z, the day of the captures.
pub const DEFAULT_SEEDED_START_US: u64 = 1_795_248_000_000_000;

/// A duration: a number with a unit `us`, `ms`, `s`, `m`, `h` (`30s`, `100ms`, `1.5s`,
/// `2m`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 30s, 100ms, 1.5s, 2m)"))?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => {
            return Err(format!(
                "invalid duration unit {u:?} in {s:?} (us, ms, s, m, h)"
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A byte count: `1000`, `64k`/`64KiB`, `4M`/`4MiB`, `1G`/`1GiB` (binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. 4096, 64KiB, 4MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => return Err(format!("invalid size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} out of range"))
}

/// A rate (per second): `0.05`, `200`, `200k`, `1.5M`; must be positive.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid rate {s:?} (expected e.g. 0.5, 200, 200k)"))?;
    let v = v * mult;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("rate {s:?} must be a positive number"));
    }
    Ok(v)
}

/// `--speed`: `max`, or a positive factor (`2`, `0.5`, `10x`).
pub fn parse_speed(s: &str) -> Result<Speed, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    let v: f64 =
        t.strip_suffix('x').unwrap_or(t).parse().map_err(|_| {
            format!("invalid speed {s:?} (expected a factor like 1, 10, 0.5, or max)")
        })?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("speed {s:?} must be positive"));
    }
    Ok(Speed::Factor(v))
}

/// Seconds since the epoch (with an optional fraction) as microseconds.
pub fn parse_epoch(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let secs: u64 = int
        .parse()
        .map_err(|_| format!("invalid epoch {s:?} (seconds since 1970, e.g. 1795248000)"))?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid epoch fraction in {s:?} (at most 6 digits)"
        ));
    }
    let micros: u64 = format!("{frac:0<6}").parse().unwrap_or(0);
    secs.checked_mul(1_000_000)
        .and_then(|us| us.checked_add(micros))
        .ok_or_else(|| format!("epoch {s:?} out of range"))
}

/// `--asterisk-version`: 16, 18, 20 or 22.
pub fn parse_asterisk_version(s: &str) -> Result<u32, String> {
    match s.trim() {
        "16" => Ok(16),
        "18" => Ok(18),
        "20" => Ok(20),
        "22" => Ok(22),
        _ => Err(format!(
            "unsupported Asterisk version {s:?} (16, 18, 20 or 22)"
        )),
    }
}

/// `--user NAME:SECRET[:read=CLASSES][:write=CLASSES]`. The secret is everything between
/// the first colon and the first `:read=`/`:write=` suffix (so it may hold colons).
pub fn parse_user(s: &str) -> Result<User, String> {
    let (name, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid user {s:?} (expected NAME:SECRET[:read=..][:write=..])"))?;
    if name.is_empty() {
        return Err(format!("invalid user {s:?}: empty name"));
    }
    let cut = [":read=", ":write="]
        .iter()
        .filter_map(|k| rest.find(k))
        .min()
        .unwrap_or(rest.len());
    let (secret, mut opts) = rest.split_at(cut);
    let mut user = User::new(name, secret);
    while let Some(tail) = opts.strip_prefix(':') {
        let next = [":read=", ":write="]
            .iter()
            .filter_map(|k| tail.find(k))
            .min()
            .unwrap_or(tail.len());
        let (item, after) = tail.split_at(next);
        let (key, list) = item.split_once('=').unwrap_or((item, ""));
        let classes =
            Classes::parse(list).map_err(|e| format!("invalid user {s:?}: {key}={list:?}: {e}"))?;
        match key {
            "read" => user.read = classes,
            "write" => user.write = classes,
            _ => return Err(format!("invalid user {s:?}: unknown option {key:?}")),
        }
        opts = after;
    }
    Ok(user)
}

/// `--fault`: see [`Fault`].
pub fn parse_fault(s: &str) -> Result<Fault, String> {
    Fault::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "1e3s", "ms100", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_rates_speeds_epochs() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("4 MB x").is_err());
        assert!(parse_size("-1").is_err());

        assert_eq!(parse_rate("200k"), Ok(200_000.0));
        assert_eq!(parse_rate("0.05"), Ok(0.05));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000.0));
        for bad in ["0", "-3", "abc", "k", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }

        assert_eq!(parse_speed("max"), Ok(Speed::Max));
        assert_eq!(parse_speed("MAX"), Ok(Speed::Max));
        assert_eq!(parse_speed("10"), Ok(Speed::Factor(10.0)));
        assert_eq!(parse_speed("0.5x"), Ok(Speed::Factor(0.5)));
        for bad in ["0", "-1", "fast", ""] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }

        assert_eq!(parse_epoch("1795248000"), Ok(1_795_248_000_000_000));
        assert_eq!(parse_epoch("1795248000.25"), Ok(1_795_248_000_250_000));
        assert!(parse_epoch("1.1234567").is_err());
        assert!(parse_epoch("x").is_err());

        assert_eq!(parse_asterisk_version("16"), Ok(16));
        assert!(parse_asterisk_version("13").is_err());
    }

    #[test]
    fn user_specs() {
        let u = parse_user("admin:amp111").unwrap();
        assert_eq!(
            (u.name.as_str(), u.secret.as_str(), u.read, u.write),
            ("admin", "amp111", Classes::ALL, Classes::ALL)
        );
        let u = parse_user("gw:s3:cr=t:read=call,agent:write=call").unwrap();
        assert_eq!(u.secret, "s3:cr=t");
        assert_eq!(u.read, Classes::CALL | Classes::AGENT);
        assert_eq!(u.write, Classes::CALL);
        let u = parse_user("ro:pw:write=none").unwrap();
        assert_eq!((u.read, u.write), (Classes::ALL, Classes::NONE));
        let u = parse_user("x::read=system").unwrap();
        assert_eq!((u.secret.as_str(), u.read), ("", Classes::SYSTEM));
        for bad in ["admin", ":pw", "a:b:read=nope", "a:b:read="] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_documented_command_lines_parse() {
        let o = Opts::try_parse_from([
            "ami-sim",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "admin:amp111",
            "--user",
            "ro:ro:read=call:write=none",
            "--calls-per-sec",
            "2",
            "--seed",
            "7",
            "--record",
            "x.rec",
            "--fault",
            "disconnect-every=30s",
            "--fault",
            "refuse-login",
            "--asterisk-version",
            "16",
        ])
        .unwrap();
        assert_eq!(o.users.len(), 2);
        assert_eq!(o.faults.len(), 2);
        assert_eq!(o.asterisk_version, 16);
        assert_eq!(o.start_us(5), DEFAULT_SEEDED_START_US);
        assert_eq!(o.write_timeout, Duration::from_millis(100));
        assert_eq!(o.max_queue, 4 << 20);

        let o = Opts::try_parse_from(["ami-sim", "--replay", "f.txt", "--speed", "max"]).unwrap();
        assert_eq!(o.speed, Speed::Max);
        assert_eq!(o.replay_messages, ReplayMessages::Events);
        assert_eq!(o.start_us(5), 5);

        // --speed only makes sense with --replay; --record and --replay exclude each other.
        assert!(Opts::try_parse_from(["ami-sim", "--speed", "2"]).is_err());
        assert!(Opts::try_parse_from(["ami-sim", "--replay", "a", "--record", "b"]).is_err());
        assert!(
            Opts::try_parse_from(["ami-sim", "--calls-per-sec", "1", "--events-per-sec", "5"])
                .is_err()
        );
        assert!(Opts::try_parse_from(["ami-sim", "--asterisk-version", "21"]).is_err());
        assert!(Opts::try_parse_from(["ami-sim", "--fault", "explode"]).is_err());
    }

    #[test]
    fn every_flag_has_help() {
        use clap::CommandFactory;
        let cmd = Opts::command();
        cmd.clone().debug_assert();
        for arg in cmd.get_arguments() {
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }
}
