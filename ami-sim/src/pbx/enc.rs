//! Encoding: every event and response goes through the project's AMI codec
//! (`switchboard_proto::ami::MessageWriter`) into a reused scratch buffer, then is copied
//! once into a shared arena from which each message's `Bytes` is split (no allocation per
//! message once the arena has grown). Field names of the repeated blocks (channel,
//! bridge) are precomputed per prefix. Never decides what to emit: the engine does.

use bytes::{Bytes, BytesMut};
use switchboard_proto::ami::{Classes, MessageWriter};

use super::Event;
use super::fmt::u64_str;
use super::model::{Bridge, Channel};

/// The classes events are published under (manager.conf read classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cls {
    Call,
    Dialplan,
    Agent,
    Cdr,
    Dtmf,
    User,
    System,
    Reporting,
}

const NCLS: usize = 8;

impl Cls {
    fn idx(self) -> usize {
        self as usize
    }

    pub fn classes(self) -> Classes {
        match self {
            Cls::Call => Classes::CALL,
            Cls::Dialplan => Classes::DIALPLAN,
            Cls::Agent => Classes::AGENT,
            Cls::Cdr => Classes::CDR,
            Cls::Dtmf => Classes::DTMF,
            Cls::User => Classes::USER,
            Cls::System => Classes::SYSTEM,
            Cls::Reporting => Classes::REPORTING,
        }
    }
}

/// Prefixes of channel blocks.
#[derive(Clone, Copy, Debug)]
pub enum P {
    None,
    Dest,
    Transferer,
    Transferee,
    OrigTransferer,
    SecondTransferer,
    TransferTarget,
}

macro_rules! chan_keys {
    ($p:literal) => {
        [
            concat!($p, "Channel"),
            concat!($p, "ChannelState"),
            concat!($p, "ChannelStateDesc"),
            concat!($p, "CallerIDNum"),
            concat!($p, "CallerIDName"),
            concat!($p, "ConnectedLineNum"),
            concat!($p, "ConnectedLineName"),
            concat!($p, "Language"),
            concat!($p, "AccountCode"),
            concat!($p, "Context"),
            concat!($p, "Exten"),
            concat!($p, "Priority"),
            concat!($p, "Uniqueid"),
            concat!($p, "Linkedid"),
        ]
    };
}

const CHAN_KEYS: [[&str; 14]; 7] = [
    chan_keys!(""),
    chan_keys!("Dest"),
    chan_keys!("Transferer"),
    chan_keys!("Transferee"),
    chan_keys!("OrigTransferer"),
    chan_keys!("SecondTransferer"),
    chan_keys!("TransferTarget"),
];

/// Prefixes of bridge blocks.
#[derive(Clone, Copy, Debug)]
pub enum BP {
    None,
    To,
    From,
    Orig,
    Second,
}

macro_rules! bridge_keys {
    ($p:literal) => {
        [
            concat!($p, "BridgeUniqueid"),
            concat!($p, "BridgeType"),
            concat!($p, "BridgeTechnology"),
            concat!($p, "BridgeCreator"),
            concat!($p, "BridgeName"),
            concat!($p, "BridgeNumChannels"),
            concat!($p, "BridgeVideoSourceMode"),
        ]
    };
}

const BRIDGE_KEYS: [[&str; 7]; 5] = [
    bridge_keys!(""),
    bridge_keys!("To"),
    bridge_keys!("From"),
    bridge_keys!("Orig"),
    bridge_keys!("Second"),
];

/// `""` renders as `<unknown>` in caller id fields.
pub fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "<unknown>" } else { s }
}

/// A message being written.
pub struct W<'a> {
    w: MessageWriter<'a>,
    num: [u8; 20],
}

impl W<'_> {
    pub fn f(&mut self, key: &str, value: &str) -> &mut Self {
        self.w.field(key, value);
        self
    }

    pub fn n(&mut self, key: &str, value: u64) -> &mut Self {
        let v = u64_str(&mut self.num, value);
        self.w.field(key, v);
        self
    }

    /// The 14-field channel block.
    pub fn chan(&mut self, p: P, c: &Channel) -> &mut Self {
        let k = &CHAN_KEYS[p as usize];
        self.w.field(k[0], &c.name);
        self.w.field(k[1], c.state.num());
        self.w.field(k[2], c.state.desc());
        self.w.field(k[3], or_unknown(&c.cid_num));
        self.w.field(k[4], or_unknown(&c.cid_name));
        self.w.field(k[5], or_unknown(&c.conn_num));
        self.w.field(k[6], or_unknown(&c.conn_name));
        self.w.field(k[7], "en");
        self.w.field(k[8], "");
        self.w.field(k[9], &c.context);
        self.w.field(k[10], &c.exten);
        let prio = u64_str(&mut self.num, c.priority as u64);
        self.w.field(k[11], prio);
        self.w.field(k[12], &c.uniqueid);
        self.w.field(k[13], &c.linkedid);
        self
    }

    /// The 7-field bridge block of a basic two-party bridge.
    pub fn bridge(&mut self, p: BP, b: &Bridge, num_channels: usize) -> &mut Self {
        let k = &BRIDGE_KEYS[p as usize];
        self.w.field(k[0], &b.uniqueid);
        self.w.field(k[1], "basic");
        self.w.field(k[2], "simple_bridge");
        self.w.field(k[3], "<unknown>");
        self.w.field(k[4], "<unknown>");
        let n = u64_str(&mut self.num, num_channels as u64);
        self.w.field(k[5], n);
        self.w.field(k[6], "none");
        self
    }
}

/// The encoder: scratch buffer, arena, precomputed `Privilege:` values.
pub struct Enc {
    scratch: Vec<u8>,
    arena: BytesMut,
    system_name: Option<Box<str>>,
    privs: [String; NCLS],
    pub events: u64,
    pub bytes: u64,
}

const ARENA_CHUNK: usize = 256 * 1024;

impl Enc {
    pub fn new(system_name: Option<&str>) -> Enc {
        let all = [
            Cls::Call,
            Cls::Dialplan,
            Cls::Agent,
            Cls::Cdr,
            Cls::Dtmf,
            Cls::User,
            Cls::System,
            Cls::Reporting,
        ];
        let privs = all.map(|c| c.classes().privilege().to_string());
        Enc {
            scratch: Vec::with_capacity(4096),
            arena: BytesMut::with_capacity(ARENA_CHUNK),
            system_name: system_name.map(Into::into),
            privs,
            events: 0,
            bytes: 0,
        }
    }

    fn take(&mut self) -> Bytes {
        if self.arena.capacity() < self.scratch.len() {
            self.arena.reserve(ARENA_CHUNK.max(self.scratch.len()));
        }
        self.arena.extend_from_slice(&self.scratch);
        self.arena.split().freeze()
    }

    /// An event everyone may receive: `Event`, `Privilege`, [`SystemName`], body.
    pub fn event(&mut self, name: &'static str, cls: Cls, body: impl FnOnce(&mut W<'_>)) -> Event {
        self.scratch.clear();
        {
            let mut w = W {
                w: MessageWriter::new(&mut self.scratch),
                num: [0; 20],
            };
            w.w.field("Event", name);
            w.w.field("Privilege", &self.privs[cls.idx()]);
            if let Some(s) = &self.system_name {
                w.w.field("SystemName", s);
            }
            body(&mut w);
            w.w.finish();
        }
        self.events += 1;
        self.bytes += self.scratch.len() as u64;
        Event {
            name,
            class: cls.classes(),
            bytes: self.take(),
        }
    }

    /// A message for one session (responses, list items): the body writes every field.
    pub fn message(&mut self, body: impl FnOnce(&mut W<'_>)) -> Bytes {
        self.scratch.clear();
        {
            let mut w = W {
                w: MessageWriter::new(&mut self.scratch),
                num: [0; 20],
            };
            body(&mut w);
            w.w.finish();
        }
        self.take()
    }

    pub fn system_name(&self) -> Option<&str> {
        self.system_name.as_deref()
    }
}
