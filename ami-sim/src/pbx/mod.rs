//! The simulated PBX: its model (endpoints, trunks, queues with agents, channels,
//! bridges, calls grouped by Linkedid), the call generator (Poisson arrivals, a mix of
//! scenarios, holding and talk times from distributions) and the actions that act on it.
//! It emits the event sequences, field sets and field orders a real Asterisk emits.
//!
//! INTERFACE (fixed; the server side of ami-sim is written against it):
//!
//! ```ignore
//! /// Simulation time: microseconds since the Unix epoch.
//! pub type SimTime = u64;
//!
//! /// One event, encoded once (`Event: ...\r\nPrivilege: ...\r\n...\r\n\r\n`), with the
//! /// class a client's read permission and event mask are checked against.
//! pub struct Event { pub name: &'static str, pub class: Classes, pub bytes: bytes::Bytes }
//!
//! pub struct PbxConfig { .. }          // Default: a small office; see the fields' docs
//! impl Default for PbxConfig
//!
//! pub struct Pbx
//! impl Pbx {
//!     pub fn new(config: PbxConfig, seed: u64, start: SimTime) -> Pbx;
//!     /// Appends, in order, every event due at or before `now`: generated calls and the
//!     /// consequences of earlier actions. Deterministic: the same config, seed and start
//!     /// give the same events whatever the times `advance` is called at.
//!     pub fn advance(&mut self, now: SimTime, out: &mut Vec<Event>);
//!     /// When the next event is due (the server sleeps until then, or until an action).
//!     pub fn next_due(&self) -> Option<SimTime>;
//!     /// Runs one action the server has already authenticated and authorised. Returns
//!     /// the messages for the calling session only, encoded and carrying the ActionID:
//!     /// the response, then for event lists the item events and the `...Complete`
//!     /// event. Events the action causes for everyone are due at `now` and come out
//!     /// of the next `advance`.
//!     pub fn action(&mut self, now: SimTime, action: &str, fields: &[(&str, &str)],
//!                   action_id: Option<&str>) -> Vec<bytes::Bytes>;
//!     /// Counters: calls started/ended, channels and bridges now, events emitted.
//!     pub fn stats(&self) -> PbxStats;
//! }
//! ```
//!
//! Additions to the fixed interface: [`Pbx::start_call`] (one call of a given
//! [`Scenario`], with forced choices in a [`CallSpec`]; tests and demos use it, the
//! generator goes through the same path) and [`Pbx::set_generate`] (stop the generator
//! and let calls in progress end, e.g. to drain).
//!
//! # The simulated PBX
//!
//! Phones are PJSIP endpoints (`PJSIP/101`...), the PSTN is reached through one PJSIP
//! trunk endpoint (`PJSIP/trunk`, channels `PJSIP/trunk-0000001a`), queue members are
//! phones (interface `PJSIP/105`, ringinuse=no: a phone in a call is not rung). The
//! dialplan the model stands for:
//!
//! ```text
//! [from-internal]                       ; every phone
//! exten => _1XX,1,Dial(PJSIP/${EXTEN},30,tT)     ; recorded calls: MixMonitor first
//!  same => n,Hangup()
//! exten => _9.,1,Dial(PJSIP/${EXTEN:1}@trunk,60,tT)
//!  same => n,Hangup()
//! exten => _6XX,1,Answer()              ; 600 = first queue, 601 = second ...
//!  same => n,Queue(<queue>,t,,,300)
//!  same => n,Hangup()
//! exten => moh,1,Answer()
//!  same => n,MusicOnHold(default)
//! [from-pstn]                           ; the trunk's DIDs: 5550100 + n -> queue n
//! exten => _5550XXX,1,Answer()
//!  same => n,Queue(<queue>,t,,,300)
//!  same => n,Hangup()
//! ```
//!
//! Redirect, BlindTransfer, Atxfer and Originate accept these extensions (a phone, a
//! queue's `6xx`/DID/name, `9<number>`, `moh`); another extension ends the channel as an
//! invalid extension would.
//!
//! # Fidelity
//!
//! Every sequence follows a real Asterisk 22 call of the same kind in the captures
//! (`proto/tests/fixtures/ami/`), the captures' Local-channel halves standing for the
//! phones (`tests/pbx_fidelity.rs` states every normalisation). Where the captures have
//! no example (a phone call not answered before `Dial`, `AgentRingNoAnswer`,
//! `QueueEntry`), the sequence follows Asterisk 16's capture or the Asterisk source, as
//! noted beside the code. `--asterisk-version 16|18|20` reuse the 22 event layout (the
//! layouts of the events emitted here are identical in the 16 and 22 captures); only
//! the banner, `core show version` and CoreSettings strings differ.
//!
//! `Cdr` events (cdr_manager) come at the end of each call, one per CDR record (one per
//! party B dialed, as in the captures); `CEL` (cel_manager) is not emitted: most
//! deployments leave it off and it would add ~20% to the stream. `RTCPSent`/`RTCPReceived`
//! are not emitted. `VarSet`, `Newexten` and `DeviceStateChange` are the "noise"
//! switched by [`PbxConfig::noise`]; switching it off removes only those events (the
//! calls stay the same).
//!
//! # Determinism
//!
//! All randomness comes from [`rng`] (xoshiro256**, in-house distributions): arrivals
//! from one stream, each call from its own stream derived from (seed, call number), ids
//! and noise values from the seed and counters. Every time and id derives from
//! `SimTime`; steps are scheduled at exact times and run in (time, scheduling order).

mod actions;
mod enc;
mod engine;
mod flows;
mod fmt;
mod lists;
mod model;
pub mod rng;

use bytes::Bytes;
use switchboard_proto::ami::Classes;

pub use engine::Pbx;

/// Simulation time: microseconds since the Unix epoch.
pub type SimTime = u64;

/// One event, encoded once (`Event: ...\r\nPrivilege: ...\r\n...\r\n\r\n`), with the class
/// a client's read permission and event mask are checked against.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: &'static str,
    pub class: Classes,
    pub bytes: Bytes,
}

/// Which Asterisk the simulator impersonates (banner, `core show version`, CoreSettings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsteriskVersion {
    V16,
    V18,
    V20,
    V22,
}

impl AsteriskVersion {
    /// From the `--asterisk-version` major number.
    pub fn from_major(major: u32) -> Option<AsteriskVersion> {
        match major {
            16 => Some(AsteriskVersion::V16),
            18 => Some(AsteriskVersion::V18),
            20 => Some(AsteriskVersion::V20),
            22 => Some(AsteriskVersion::V22),
            _ => None,
        }
    }

    /// The Asterisk release reported by `core show version` and CoreSettings.
    pub fn release(self) -> &'static str {
        match self {
            AsteriskVersion::V16 => "16.28.0",
            AsteriskVersion::V18 => "18.26.4",
            AsteriskVersion::V20 => "20.17.0",
            AsteriskVersion::V22 => "22.10.1",
        }
    }

    /// The manager protocol version (`Asterisk Call Manager/<this>` banner).
    pub fn ami_version(self) -> &'static str {
        match self {
            AsteriskVersion::V16 => "5.0.4",
            AsteriskVersion::V18 => "7.0.3",
            AsteriskVersion::V20 => "9.0.0",
            AsteriskVersion::V22 => "11.0.0",
        }
    }

    /// The banner line, without its CRLF.
    pub fn banner(self) -> String {
        format!("Asterisk Call Manager/{}", self.ami_version())
    }
}

/// A duration distribution, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    Fixed(f64),
    /// Exponential with this mean.
    Exp {
        mean: f64,
    },
    /// Log-normal with this median and shape (mean = median * e^(sigma^2 / 2)).
    LogNormal {
        median: f64,
        sigma: f64,
    },
    /// Uniform in [min, max].
    Uniform {
        min: f64,
        max: f64,
    },
}

impl Dist {
    /// The distribution's mean, in seconds.
    pub fn mean(&self) -> f64 {
        match *self {
            Dist::Fixed(v) => v,
            Dist::Exp { mean } => mean,
            Dist::LogNormal { median, sigma } => median * rng::exp(sigma * sigma / 2.0),
            Dist::Uniform { min, max } => (min + max) / 2.0,
        }
    }

    /// One draw, in seconds (never negative).
    pub fn sample(&self, r: &mut rng::Rng) -> f64 {
        let v = match *self {
            Dist::Fixed(v) => v,
            Dist::Exp { mean } => r.exp(mean),
            Dist::LogNormal { median, sigma } => r.lognormal(median, sigma),
            Dist::Uniform { min, max } => min + (max - min) * r.f64(),
        };
        v.max(0.0)
    }
}

/// The call scenarios the generator mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Inbound trunk call to a queue, answered by an agent.
    QueueAnswered,
    /// Inbound trunk call to a queue; the caller hangs up while waiting.
    QueueAbandoned,
    /// Inbound trunk call to a queue; the first agent rung does not answer
    /// (`AgentRingNoAnswer`), a later attempt is answered.
    QueueAgentNoAnswer,
    /// Phone to phone, answered.
    InternalAnswered,
    /// Phone to phone, nobody answers before the Dial timeout.
    InternalNoAnswer,
    /// Phone to phone, the callee is busy (486).
    InternalBusy,
    /// Phone to the PSTN through the trunk, answered.
    Outbound,
    /// Answered call where one party puts the other on hold, then takes it back.
    HoldUnhold,
    /// Answered call that the caller blind-transfers to another phone.
    BlindTransfer,
    /// Answered call that the caller transfers after consulting another phone.
    AttendedTransfer,
    /// Answered call recorded with MixMonitor.
    Recording,
}

impl Scenario {
    pub const ALL: [Scenario; 11] = [
        Scenario::QueueAnswered,
        Scenario::QueueAbandoned,
        Scenario::QueueAgentNoAnswer,
        Scenario::InternalAnswered,
        Scenario::InternalNoAnswer,
        Scenario::InternalBusy,
        Scenario::Outbound,
        Scenario::HoldUnhold,
        Scenario::BlindTransfer,
        Scenario::AttendedTransfer,
        Scenario::Recording,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::QueueAnswered => "queue-answered",
            Scenario::QueueAbandoned => "queue-abandoned",
            Scenario::QueueAgentNoAnswer => "queue-agent-no-answer",
            Scenario::InternalAnswered => "internal-answered",
            Scenario::InternalNoAnswer => "internal-no-answer",
            Scenario::InternalBusy => "internal-busy",
            Scenario::Outbound => "outbound",
            Scenario::HoldUnhold => "hold",
            Scenario::BlindTransfer => "blind-transfer",
            Scenario::AttendedTransfer => "attended-transfer",
            Scenario::Recording => "recording",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Relative weights of the scenarios (need not sum to 1; zero disables one).
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioMix {
    pub weights: Vec<(Scenario, f64)>,
}

impl Default for ScenarioMix {
    /// An office day: mostly queue and internal calls.
    fn default() -> Self {
        ScenarioMix {
            weights: vec![
                (Scenario::QueueAnswered, 24.0),
                (Scenario::QueueAbandoned, 5.0),
                (Scenario::QueueAgentNoAnswer, 5.0),
                (Scenario::InternalAnswered, 20.0),
                (Scenario::InternalNoAnswer, 6.0),
                (Scenario::InternalBusy, 4.0),
                (Scenario::Outbound, 15.0),
                (Scenario::HoldUnhold, 8.0),
                (Scenario::BlindTransfer, 5.0),
                (Scenario::AttendedTransfer, 3.0),
                (Scenario::Recording, 5.0),
            ],
        }
    }
}

impl ScenarioMix {
    /// Every scenario with the same weight.
    pub fn uniform() -> ScenarioMix {
        ScenarioMix {
            weights: Scenario::ALL.iter().map(|s| (*s, 1.0)).collect(),
        }
    }

    /// Only one scenario.
    pub fn only(s: Scenario) -> ScenarioMix {
        ScenarioMix {
            weights: vec![(s, 1.0)],
        }
    }
}

/// A queue's ring strategy (the two the simulator implements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RingAll,
    RrMemory,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RingAll => "ringall",
            Strategy::RrMemory => "rrmemory",
        }
    }
}

/// One queue of the PBX.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    pub name: String,
    pub strategy: Strategy,
    /// Member extensions (phones `PJSIP/<ext>`), static members.
    pub members: Vec<u32>,
    /// Music on hold class played to waiting callers.
    pub moh_class: String,
    /// How long one member rings before `AgentRingNoAnswer` (queues.conf `timeout`).
    pub member_timeout_s: u32,
    /// Pause between attempts (queues.conf `retry`).
    pub retry_s: u32,
}

/// Durations of the generated calls (seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Durations {
    /// Time a phone rings before it is answered.
    pub ring: Dist,
    /// Conversation length.
    pub talk: Dist,
    /// How long a queue caller waits before giving up (abandoned scenario).
    pub patience: Dist,
    /// Time an agent's phone rings before the agent answers.
    pub agent_ring: Dist,
    /// Length of a hold.
    pub hold: Dist,
    /// Time spent consulting the transfer target in an attended transfer.
    pub consult: Dist,
    /// `Dial` timeout for internal calls (the no-answer scenario rings this long).
    pub dial_timeout_s: u32,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            ring: Dist::LogNormal {
                median: 6.0,
                sigma: 0.5,
            },
            talk: Dist::LogNormal {
                median: 90.0,
                sigma: 0.8,
            },
            patience: Dist::Exp { mean: 45.0 },
            agent_ring: Dist::LogNormal {
                median: 4.0,
                sigma: 0.4,
            },
            hold: Dist::LogNormal {
                median: 20.0,
                sigma: 0.6,
            },
            consult: Dist::LogNormal {
                median: 15.0,
                sigma: 0.5,
            },
            dial_timeout_s: 30,
        }
    }
}

/// The simulated PBX and its traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct PbxConfig {
    /// Which Asterisk to impersonate.
    pub asterisk_version: AsteriskVersion,
    /// `systemname` of asterisk.conf: when set, every event carries `SystemName:` and
    /// Uniqueids read `<name>-<epoch>.<seq>`.
    pub system_name: Option<String>,
    /// Mean call arrival rate (Poisson). Ignored when `events_per_sec` is set.
    pub calls_per_sec: f64,
    /// Stress mode: adapt the call rate so that the stream averages this many events
    /// per second (the rate follows the measured events per call of the mix).
    pub events_per_sec: Option<f64>,
    /// In stress mode, call durations are compressed so that about this many calls are
    /// up at once (memory stays bounded whatever the rate).
    pub max_concurrent_calls: usize,
    /// Scenario weights.
    pub mix: ScenarioMix,
    /// Phones: extensions `first_extension .. first_extension + extensions` (at least 2).
    pub first_extension: u32,
    pub extensions: u32,
    /// The PJSIP trunk endpoint's name (`PJSIP/<trunk>-0000001a`).
    pub trunk: String,
    /// Queues and their members.
    pub queues: Vec<QueueConfig>,
    /// Music on hold classes; the first is the default.
    pub moh_classes: Vec<String>,
    pub durations: Durations,
    /// `VarSet`, `Newexten` and `DeviceStateChange` events (real Asterisk sends them;
    /// most clients filter them).
    pub noise: bool,
    /// `Cdr` events (cdr_manager) at the end of calls.
    pub cdr: bool,
    /// Start generating calls (false: the PBX only answers actions).
    pub generate: bool,
}

impl Default for PbxConfig {
    /// A small office: 20 phones (101-120), two queues of four agents, one trunk,
    /// a call every 20 s, noise and CDRs on.
    fn default() -> Self {
        PbxConfig {
            asterisk_version: AsteriskVersion::V22,
            system_name: None,
            calls_per_sec: 0.05,
            events_per_sec: None,
            max_concurrent_calls: 5_000,
            mix: ScenarioMix::default(),
            first_extension: 101,
            extensions: 20,
            trunk: "trunk".to_string(),
            queues: vec![
                QueueConfig {
                    name: "sales".to_string(),
                    strategy: Strategy::RingAll,
                    members: vec![101, 102, 103, 104],
                    moh_class: "default".to_string(),
                    member_timeout_s: 15,
                    retry_s: 5,
                },
                QueueConfig {
                    name: "support".to_string(),
                    strategy: Strategy::RrMemory,
                    members: vec![105, 106, 107, 108],
                    moh_class: "default".to_string(),
                    member_timeout_s: 15,
                    retry_s: 5,
                },
            ],
            moh_classes: vec!["default".to_string(), "jazz".to_string()],
            durations: Durations::default(),
            noise: true,
            cdr: true,
            generate: true,
        }
    }
}

/// Forced choices for one call started with [`Pbx::start_call`] (tests, demos). `None`
/// leaves the choice to the call's random stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallSpec {
    /// Which party ends an answered call: the caller (`Some(true)`) or the callee.
    pub caller_hangs_up: Option<bool>,
    /// Queue index for queue scenarios.
    pub queue: Option<usize>,
    /// Seconds of conversation (overrides the talk distribution).
    pub talk_s: Option<f64>,
    /// Seconds a queue caller waits before hanging up (abandoned scenario).
    pub patience_s: Option<f64>,
    /// Seconds a phone or agent rings before answering.
    pub ring_s: Option<f64>,
}

/// Counters. A "call" is a group of channels sharing a Linkedid that live and end
/// together (a dual Redirect splits one into two).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbxStats {
    pub calls_started: u64,
    pub calls_ended: u64,
    pub calls_up: u64,
    pub channels_created: u64,
    pub channels_hungup: u64,
    pub channels_now: u64,
    pub bridges_created: u64,
    pub bridges_destroyed: u64,
    pub bridges_now: u64,
    pub queue_callers_now: u64,
    pub events_emitted: u64,
    pub bytes_emitted: u64,
}
