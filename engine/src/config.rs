//! The engine's settings: the `serve` flags (each with help), their value parsers
//! (`15s`, `500ms`, `4KiB`, `1M`), and the limits derived from them. Every flag is
//! also a TOML key and a `SWITCHBOARD_*` variable: [`sources`] layers them.

pub mod sources;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::auth::{self, MIN_SECRET_BYTES, OriginRule};

/// Largest message a client may send on `/echo` (Autobahn's 9.* cases need 16 MiB).
pub const ECHO_MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest message a subscriber may send on `/ws` (subscribe/unsubscribe ops).
pub const WS_MAX_CLIENT_MESSAGE_BYTES: u64 = 64 * 1024;
/// Largest `--max-subscriptions` (a connection counts its subscriptions in 16 bits).
pub const MAX_SUBSCRIPTIONS_LIMIT: u32 = u16::MAX as u32;
/// How long a closing connection waits for the peer's EOF after our FIN.
pub const LINGER: Duration = Duration::from_secs(2);
/// Input a connection may park while it waits for the router before its recv is paused.
pub const PARK_PAUSE_BYTES: usize = 64 * 1024;
/// Upper bound of `--max-headers` (the parser's header array lives on the stack).
pub const MAX_HEADERS_LIMIT: usize = 256;
/// The timer wheel's resolution.
pub const TICK: Duration = Duration::from_millis(100);
/// Shortest `--publisher-secret` accepted.
pub const MIN_PUBLISHER_SECRET_BYTES: usize = 16;

/// Whether clients must present a token.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone may subscribe and publish.
    Off,
    /// Subscribers need a token granting their topics; publishers a token granting the
    /// topic, or the publisher secret.
    Required,
}

/// A secret setting: its `Debug` never shows it, and its parser never echoes it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value parser of secret flags (it never puts the value in its error).
    pub fn parse(s: &str) -> Result<Secret, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port; the address in use is printed as
    /// `listening on http://ADDR shards=N` once every shard accepts.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Connection shards: threads, each with its own io_uring ring, listener
    /// (SO_REUSEPORT) and fixed-file table [default: the number of cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: Option<u16>,

    /// Enable `GET /echo`: a WebSocket endpoint echoing every message (up to 16 MiB), for
    /// conformance testing.
    #[arg(long)]
    pub echo: bool,

    /// `off`: anyone may subscribe and publish. `required`: WebSocket, SSE and poll
    /// clients need a JWT (HS256) granting their topics, publishers a JWT granting the
    /// topic or the publisher secret.
    #[arg(long, value_enum, default_value = "off")]
    pub auth: AuthMode,

    /// The HS256 key of the tokens (at least 32 bytes); required with `--auth required`.
    #[arg(long, value_name = "SECRET", value_parser = Secret::parse)]
    pub jwt_secret: Option<Secret>,

    /// A shared secret (at least 16 bytes) publishers may present as
    /// `Authorization: Bearer <secret>` instead of a token.
    #[arg(long, value_name = "SECRET", value_parser = Secret::parse)]
    pub publisher_secret: Option<Secret>,

    /// Origins browsers may connect from, comma-separated (`https://app.example.com`,
    /// `http://localhost:3000`); `*` allows any. Requests without `Origin` (non-browser
    /// clients) are always allowed.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "*",
          value_parser = auth::parse_origin_rule)]
    pub allowed_origins: Vec<OriginRule>,

    /// Connections one shard can hold: the size of its fixed-file table, at most the
    /// open-file limit (RLIMIT_NOFILE) [default: that limit].
    #[arg(long, value_parser = parse_count)]
    pub max_conns: Option<u32>,

    /// Interval of the SSE heartbeat comment.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub sse_heartbeat: Duration,

    /// Reconnection delay suggested to SSE clients (`retry:`).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub sse_retry: Duration,

    /// Time a client has to send a complete request, and the idle limit between
    /// keep-alive requests.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Largest publish body accepted (413 beyond).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_publish_bytes: usize,

    /// Largest request head (request line and headers) accepted (431 beyond).
    #[arg(long, default_value = "8KiB", value_parser = parse_size)]
    pub max_head_bytes: usize,

    /// Most request headers accepted (431 beyond).
    #[arg(long, default_value_t = 64)]
    pub max_headers: usize,

    /// Bytes queued for one connection that does not read before --slow-policy applies
    /// (by default it is closed as a slow consumer: WebSocket 1013, SSE end of stream).
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub max_queued_bytes: usize,

    /// Receive buffers in each shard's provided-buffer ring (a power of two, <= 32768).
    #[arg(long, default_value_t = 1024)]
    pub recv_buffers: u16,

    /// Size of each receive buffer.
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    pub recv_buffer_size: usize,

    /// Messages of history kept per topic for resumes (0: no history).
    #[arg(long, default_value_t = 64)]
    pub history_size: usize,

    /// Age after which a message leaves history (0: no age limit).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Topics the router remembers (sequence number and history); past it, the topic
    /// published least recently is forgotten.
    #[arg(long, default_value = "65536", value_parser = parse_count)]
    pub history_topics: u32,

    /// Bytes of history kept over all topics (each message's frame, event and topic
    /// name, plus a fixed overhead); past it, the oldest message of any topic leaves
    /// first (0: no history).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub history_bytes: usize,

    /// How long `GET /poll` holds a request that has nothing to answer yet.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub poll_timeout: Duration,

    /// What happens to a subscriber whose send queue passes --max-queued-bytes or
    /// --max-queued-messages: `close` (WebSocket 1013, SSE end of stream) or `drop` (its
    /// queued messages are discarded, and a reset per topic follows once it caught up).
    #[arg(long, value_enum, default_value = "close")]
    pub slow_policy: crate::shard::SlowPolicy,

    /// Messages queued for one connection that does not read before --slow-policy
    /// applies.
    #[arg(long, default_value = "8192", value_parser = parse_count)]
    pub max_queued_messages: u32,

    /// Longest a graceful drain (SIGTERM or SIGINT) may take: connections still open
    /// then are cut and the process exits (0: cut at once).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// A WebSocket from which nothing arrived for this long is sent a ping (0: never).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ws_ping_interval: Duration,

    /// How long a pinged WebSocket has to send anything back (a pong) before it is
    /// closed with 1001 "pong timeout".
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ws_pong_timeout: Duration,

    /// Subscriptions one connection may hold (`topic` parameters of a request, plus
    /// `subscribe` ops); past it, 400 or an `error` op.
    #[arg(long, default_value = "256", value_parser = parse_count)]
    pub max_subscriptions: u32,

    /// Connections one source address may hold on one shard (0: unlimited); past it a
    /// new connection is answered 429 and closed.
    #[arg(long, default_value = "0", value_parser = parse_count)]
    pub max_conns_per_ip: u32,

    /// The Asterisk Manager Interface to follow, `HOST:PORT` (TOML `[ami] address`):
    /// its events become `ami.*` topics and the action gateway is enabled.
    #[arg(long, value_name = "HOST:PORT")]
    pub ami: Option<String>,

    /// The AMI user (manager.conf); required with --ami.
    #[arg(long)]
    pub ami_user: Option<String>,

    /// The AMI user's secret; required with --ami.
    #[arg(long, value_name = "SECRET", value_parser = Secret::parse)]
    pub ami_secret: Option<Secret>,

    /// The `Events:` of the AMI login: `on` (every class the user reads) or a class
    /// list such as `call,agent,user`.
    #[arg(long, default_value = "on")]
    pub ami_events: String,

    /// Events not published on `ami.*` topics (they still update the PBX state),
    /// comma-separated; empty publishes everything but `security`/`system` events.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "VarSet,Newexten,RTCPSent,RTCPReceived,Cdr,CEL"
    )]
    pub ami_noise: Vec<String>,

    /// Interval of the AMI keep-alive `Ping`; two unanswered pings end the session.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ami_ping_interval: Duration,

    /// Longest wait between two attempts to reach the PBX (the backoff's cap).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ami_backoff_max: Duration,

    /// Dialplan context of click-to-call (`Originate`): the number is dialled there.
    #[arg(long, default_value = "from-internal")]
    pub ami_originate_context: String,

    /// Dialplan context of transfers (`Redirect`, `Atxfer`).
    #[arg(long, default_value = "from-internal")]
    pub ami_transfer_context: String,

    /// How long click-to-call rings the user's own endpoint.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ami_ring_timeout: Duration,

    /// Where `MixMonitor` recordings are written (on the PBX).
    #[arg(long, default_value = "/var/spool/asterisk/monitor")]
    pub ami_record_dir: String,

    /// How long the gateway waits for the PBX's answer to an action.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ami_action_timeout: Duration,

    /// Actions one user (token `sub`) may send per second, on average.
    #[arg(long, default_value_t = 5.0)]
    pub ami_action_rate: f64,

    /// Actions one user may send in a burst.
    #[arg(long, default_value_t = 10)]
    pub ami_action_burst: u32,
}

impl ServeArgs {
    /// The auth settings as the shards use them.
    pub fn auth_policy(&self) -> auth::Policy {
        auth::Policy {
            required: self.auth == AuthMode::Required,
            verifier: self
                .jwt_secret
                .as_ref()
                .map(|s| auth::Verifier::new(s.expose().as_bytes())),
            publisher_secret: self
                .publisher_secret
                .as_ref()
                .map(|s| auth::PublisherSecret::new(s.expose().as_bytes())),
            origins: auth::AllowList::new(&self.allowed_origins),
        }
    }

    /// Checks the combinations a value parser cannot see.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth == AuthMode::Required && self.jwt_secret.is_none() {
            return Err("auth = \"required\" needs jwt_secret (--jwt-secret, \
                        SWITCHBOARD_JWT_SECRET or auth.jwt_secret in the config file)"
                .into());
        }
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_SECRET_BYTES)
        {
            return Err(format!(
                "jwt_secret (--jwt-secret) must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        if self
            .publisher_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_PUBLISHER_SECRET_BYTES)
        {
            return Err(format!(
                "publisher_secret (--publisher-secret) must be at least \
                 {MIN_PUBLISHER_SECRET_BYTES} bytes"
            ));
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32768 {
            return Err(format!(
                "--recv-buffers {} must be a power of two <= 32768",
                self.recv_buffers
            ));
        }
        if !(512..=1 << 20).contains(&self.recv_buffer_size) {
            return Err("--recv-buffer-size must be between 512 B and 1 MiB".into());
        }
        if self.max_head_bytes < 256 {
            return Err("--max-head-bytes must be at least 256".into());
        }
        if !(1..=MAX_HEADERS_LIMIT).contains(&self.max_headers) {
            return Err(format!(
                "--max-headers must be between 1 and {MAX_HEADERS_LIMIT}"
            ));
        }
        if self.sse_heartbeat < TICK
            || self.request_timeout < TICK
            || self.ws_pong_timeout < TICK
            || (!self.ws_ping_interval.is_zero() && self.ws_ping_interval < TICK)
        {
            return Err(format!("timeouts must be at least {TICK:?}"));
        }
        if !(1..=MAX_SUBSCRIPTIONS_LIMIT).contains(&self.max_subscriptions) {
            return Err(format!(
                "--max-subscriptions must be between 1 and {MAX_SUBSCRIPTIONS_LIMIT}"
            ));
        }
        if self.ami.is_some() && (self.ami_user.is_none() || self.ami_secret.is_none()) {
            return Err("ami (--ami) needs ami_user and ami_secret (--ami-user, \
                        --ami-secret, or [ami] user and secret in the config file)"
                .into());
        }
        if !(self.ami_action_rate > 0.0 && self.ami_action_rate <= 1e6)
            || self.ami_action_burst == 0
        {
            return Err(
                "--ami-action-rate must be above 0 and --ami-action-burst at least 1".into(),
            );
        }
        if self.ami_ping_interval < TICK || self.ami_backoff_max < TICK {
            return Err(format!("AMI intervals must be at least {TICK:?}"));
        }
        if self.max_queued_bytes > u32::MAX as usize / 2 {
            return Err("--max-queued-bytes is too large".into());
        }
        Ok(())
    }
}

/// `250ms`, `15s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 15s or 500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `4096`, `4k`/`4KiB` (x1024), `1M`/`1MiB`, `1G`/`1GiB`; `KB`/`MB` are decimal.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (try 4KiB or 1MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    value
        .checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// `20000`, `20k`, `1m` (x1000: counts are decimal).
pub fn parse_count(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.to_ascii_lowercase().strip_suffix('k') {
        Some(n) => (n.to_string(), 1_000u64),
        None => match s.to_ascii_lowercase().strip_suffix('m') {
            Some(n) => (n.to_string(), 1_000_000),
            None => (s.to_string(), 1),
        },
    };
    let value: u64 = num
        .parse()
        .map_err(|_| format!("invalid count {s:?} (try 20000 or 20k)"))?;
    value
        .checked_mul(mult)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("count {s:?} is too large"))
}

/// The soft open-file limit, which bounds each fixed-file table.
pub fn nofile_limit() -> Option<u32> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("20000"), Ok(20_000));
        assert_eq!(parse_count("20k"), Ok(20_000));
        assert_eq!(parse_count("1m"), Ok(1_000_000));
        assert!(parse_count("5000000000").is_err());
        assert!(parse_count("many").is_err());
    }

    #[test]
    fn reads_this_process_open_file_limit() {
        assert!(nofile_limit().is_some_and(|n| n > 0));
    }
}
