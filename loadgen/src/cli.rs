//! The command line (clap). Users' scripts rely on these names: `hold`, `fanout`,
//! `churn`, `slow`, `floor`, and the flags below. Values take `10k`, `30s`, `4KiB`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cli_values::{
    Transport, parse_count, parse_duration, parse_ip_range, parse_mix, parse_size,
};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Flood-tests a push server (Switchboard, or a peer through URL templates) over \
             WebSocket and SSE: hundreds of thousands of connections from one process \
             (io_uring, fixed files, one ring per thread), delivery latency from the \
             scheduled publish time, loss/duplicates/reordering, and the server's memory \
             and CPU per connection beside the kernel's floor.",
    after_help = "Exit status: 0 the run completed and met its goal; 3 it completed but \
                  missed it (connections not all established, messages lost or duplicated); \
                  1 it could not run; 2 bad usage."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open N connections, subscribe, hold them idle for --duration; sample the target's
    /// memory along the ramp and report bytes per connection (user space and kernel).
    Hold(HoldArgs),
    /// N subscribers over K topics; publish at a fixed schedule through the HTTP API;
    /// measure delivery latency from the scheduled time, deliveries/s, loss, duplicates,
    /// reordering and the target's CPU per delivery.
    Fanout(FanoutArgs),
    /// Connect/disconnect storms: hold N connections and replace --rate of them per
    /// second for --duration.
    Churn(ChurnArgs),
    /// Fan-out where --slow-fraction of the subscribers stop reading: the others'
    /// latency and loss, and the target's memory while it buffers for the slow ones.
    Slow(SlowArgs),
    /// The floor no server beats: bare idle loopback TCP pairs (kernel bytes per pair,
    /// without and with a receive armed) and a raw io_uring send loop delivering one
    /// WebSocket frame to N sockets (CPU per delivery).
    Floor(FloorArgs),
}

/// Where to connect and how.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Switchboard's address, http://HOST:PORT (its /ws, /sse and /publish/<topic>).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,

    /// Subscribe URL template of a peer server, with {topic}: ws://... is a WebSocket,
    /// http://... an event stream (e.g. 'ws://127.0.0.1:18081/sub/{topic}'). Give one per
    /// transport. With --target too, the same run measures Switchboard, then the peer.
    #[arg(long, value_name = "TEMPLATE")]
    pub subscribe_url: Vec<String>,

    /// Publish URL template of the peer, with {topic} (e.g.
    /// 'http://127.0.0.1:18081/pub/{topic}'): messages are POSTed there.
    #[arg(long, value_name = "TEMPLATE")]
    pub publish_url: Option<String>,

    /// The peer's name in reports and file names.
    #[arg(long, value_name = "NAME", default_value = "peer")]
    pub peer_name: String,

    /// Process ids of the peer server (memory and CPU are sampled from /proc).
    #[arg(long, value_name = "PID")]
    pub peer_pid: Vec<u32>,

    /// Process ids of the target (Switchboard), sampled from /proc: RssAnon/Rss, CPU.
    #[arg(long, value_name = "PID")]
    pub target_pid: Vec<u32>,

    /// One transport for every connection: ws, sse or poll.
    #[arg(long, value_name = "T", conflicts_with = "mix")]
    pub transport: Option<Transport>,

    /// A mix of transports by weight, e.g. ws=70,sse=25,poll=5.
    #[arg(long, value_name = "MIX", value_parser = mix_list)]
    pub mix: Option<Mix>,

    /// Topics the connections subscribe to (connection i takes topic i % K).
    #[arg(long, value_name = "K", value_parser = parse_count, default_value = "1")]
    pub topics: u64,

    /// Topic names are PREFIX.0 .. PREFIX.<K-1> (default: loadgen.<random>, fresh per run).
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,

    /// Client threads, one io_uring ring each (default: enough rings for the connections,
    /// one fixed-file table of at most RLIMIT_NOFILE sockets per ring).
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,

    /// Source addresses to bind (e.g. 127.0.0.2-127.0.0.40, 127.0.1.0/24); default on
    /// loopback: 127.0.1.1 upwards, one per 20,000 connections.
    #[arg(long, value_name = "LIST", value_parser = source_list)]
    pub source_ips: Option<Sources>,

    /// New connections per second over all threads (the ramp).
    #[arg(long, value_name = "RATE", value_parser = parse_count, default_value = "10k")]
    pub connect_rate: u64,

    /// Connects and handshakes in flight per thread, at most.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_in_progress: u32,

    /// Bound on one TCP connect (a linked io_uring timeout).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,

    /// Bound on the handshake (WebSocket 101 or SSE 200 after the request).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,

    /// Retries of a connection that failed before it was established.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u8,

    /// First retry delay; doubles per retry, with jitter, up to --backoff-max.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "100ms")]
    pub backoff: Duration,

    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub backoff_max: Duration,

    /// Give up the ramp after this long (default: twice the time --connect-rate needs,
    /// plus 30 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ramp_timeout: Option<Duration>,

    /// How often the target's memory is sampled.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "500ms")]
    pub sample_interval: Duration,

    /// Bare loopback pairs opened before the run to measure the kernel's floor (0: none;
    /// default: min(connections, 10000)). Ignored with --floor-json.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub floor_pairs: Option<u64>,

    /// Take the floor from a previous `loadgen floor --json` report instead.
    #[arg(long, value_name = "FILE")]
    pub floor_json: Option<PathBuf>,

    /// Write the report as JSON (with a peer run: FILE for Switchboard, FILE.<peer>.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write SVG plots into DIR (with a peer run: DIR/switchboard and DIR/<peer>).
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,

    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,

    /// Provided receive buffers per thread (a power of two).
    #[arg(long, value_name = "N", default_value_t = 1024, hide_short_help = true)]
    pub recv_buffers: u16,

    /// Size of each provided receive buffer.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "4KiB", hide_short_help = true)]
    pub recv_buffer_size: usize,
}

/// A parsed `--mix` (a newtype, so that clap takes it as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(pub Vec<(Transport, u32)>);

/// A parsed `--source-ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<Ipv4Addr>);

fn mix_list(s: &str) -> Result<Mix, String> {
    parse_mix(s).map(Mix)
}

fn source_list(s: &str) -> Result<Sources, String> {
    parse_ip_range(s).map(Sources)
}

impl ConnArgs {
    /// The transport mix: --mix, or --transport, or WebSocket.
    pub fn mix(&self) -> Vec<(Transport, u32)> {
        match (&self.mix, self.transport) {
            (Some(m), _) => m.0.clone(),
            (None, Some(t)) => vec![(t, 1)],
            (None, None) => vec![(Transport::Ws, 1)],
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Connections to open and hold.
    #[arg(long, short = 'n', value_name = "N", value_parser = parse_count, default_value = "1000")]
    pub connections: u64,

    /// How long to hold the plateau once every connection is established.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,
}

/// The publishing side of fanout and slow.
#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// Messages per second (over all topics).
    #[arg(long, value_name = "RATE", value_parser = parse_count, default_value = "20")]
    pub rate: u64,

    /// Messages to publish in all (message i goes to topic i % K).
    #[arg(long, value_name = "M", value_parser = parse_count, default_value = "600")]
    pub messages: u64,

    /// Size of each published body, bytes (JSON carrying the sequence number and the
    /// scheduled time, padded).
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "100")]
    pub payload: usize,

    /// Publish connections (default: one per 2,000 msg/s, at most one per topic).
    #[arg(long, value_name = "N")]
    pub publishers: Option<usize>,

    /// After the last publish, wait at most this long for the deliveries still expected.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub drain: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Subscribers (connections).
    #[arg(long, visible_alias = "connections", short = 'n', value_name = "N", value_parser = parse_count, default_value = "1000")]
    pub subscribers: u64,

    #[command(flatten)]
    pub publish: PublishArgs,
}

#[derive(Args, Debug, Clone)]
pub struct SlowArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,

    /// Fraction of the subscribers that stop reading once publishing starts (0..1).
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub slow_fraction: f64,
}

#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Connections held while churning.
    #[arg(long, short = 'n', value_name = "N", value_parser = parse_count, default_value = "1000")]
    pub connections: u64,

    /// Connections closed (and replaced by new ones) per second.
    #[arg(long, value_name = "RATE", value_parser = parse_count, default_value = "100")]
    pub rate: u64,

    /// How long to churn.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct FloorArgs {
    /// Loopback pairs (both ends in this process).
    #[arg(long, short = 'n', value_name = "N", value_parser = parse_count, default_value = "20000")]
    pub connections: u64,

    /// Rounds of the send loop (each delivers the frame once to every socket; 0: skip).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rounds: u32,

    /// Size of the published body inside the delivered frame (an envelope in a WS frame).
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "100")]
    pub payload: usize,

    /// Source addresses of the connecting side (default: 127.0.1.1 upwards).
    #[arg(long, value_name = "LIST", value_parser = source_list)]
    pub source_ips: Option<Sources>,

    /// Connects per second.
    #[arg(long, value_name = "RATE", value_parser = parse_count, default_value = "20k")]
    pub connect_rate: u64,

    /// Pause before each memory sample, so that the kernel settles.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub settle: Duration,

    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,

    #[arg(long, short)]
    pub quiet: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_contract_parses() {
        let c = Cli::try_parse_from([
            "loadgen",
            "hold",
            "--target",
            "http://127.0.0.1:8080",
            "--transport",
            "ws",
            "--connections",
            "200k",
            "--duration",
            "30s",
            "--target-pid",
            "42",
            "--json",
            "h.json",
        ])
        .unwrap();
        let Command::Hold(h) = c.command else {
            panic!()
        };
        assert_eq!(h.connections, 200_000);
        assert_eq!(h.duration, Duration::from_secs(30));
        assert_eq!(h.conn.target_pid, vec![42]);
        assert_eq!(h.conn.mix(), vec![(Transport::Ws, 1)]);

        let c = Cli::try_parse_from([
            "loadgen",
            "fanout",
            "--target",
            "http://127.0.0.1:8080",
            "--subscribers",
            "5000",
            "--topics",
            "50",
            "--rate",
            "20",
            "--messages",
            "600",
            "--payload",
            "100",
            "--json",
            "f.json",
        ])
        .unwrap();
        let Command::Fanout(f) = c.command else {
            panic!()
        };
        assert_eq!((f.subscribers, f.conn.topics), (5000, 50));
        assert_eq!(
            (f.publish.rate, f.publish.messages, f.publish.payload),
            (20, 600, 100)
        );

        let c = Cli::try_parse_from(["loadgen", "floor", "--connections", "20000", "--json", "x"])
            .unwrap();
        let Command::Floor(f) = c.command else {
            panic!()
        };
        assert_eq!(f.connections, 20_000);

        let c = Cli::try_parse_from([
            "loadgen",
            "fanout",
            "--subscribe-url",
            "ws://127.0.0.1:18081/sub/{topic}",
            "--publish-url",
            "http://127.0.0.1:18081/pub/{topic}",
            "--mix",
            "ws=70,sse=30",
            "--source-ips",
            "127.0.0.2-127.0.0.40",
            "--threads",
            "4",
            "--connect-rate",
            "5k",
        ])
        .unwrap();
        let Command::Fanout(f) = c.command else {
            panic!()
        };
        assert_eq!(f.conn.subscribe_url.len(), 1);
        assert_eq!(
            f.conn.mix(),
            vec![(Transport::Ws, 70), (Transport::Sse, 30)]
        );
        assert_eq!(f.conn.source_ips.as_ref().unwrap().0.len(), 39);
        assert_eq!((f.conn.threads, f.conn.connect_rate), (Some(4), 5000));

        assert!(
            Cli::try_parse_from(["loadgen", "hold", "--transport", "ws", "--mix", "ws"]).is_err()
        );
        assert!(Cli::try_parse_from(["loadgen", "hold", "--connections", "lots"]).is_err());
    }
}
