//! The objects of the PBX model (channels, calls, bridges, queues, endpoints), the
//! fast hash map they live in, and small text helpers. Plain data: the handlers in
//! the parent module own every change.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use switchboard_proto::ami::decode_text;

use super::super::Millis;

/// A map with a fast, non-cryptographic hash (keys come from the PBX, not from
/// browsers).
pub(super) type Map<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The multiply-rotate hash of rustc (`FxHasher`), for short string keys.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Asterisk's channel state names (`ast_state2str`), by state code.
const STATE_NAMES: [&str; 11] = [
    "Down",
    "Rsrvd",
    "OffHook",
    "Dialing",
    "Ring",
    "Ringing",
    "Up",
    "Busy",
    "Dialing Offhook",
    "Pre-ring",
    "Unknown",
];

/// Channel state code: ringing.
pub(super) const STATE_RINGING: u8 = 5;

/// The name of a channel state code.
pub(super) fn state_name(code: u8) -> &'static str {
    STATE_NAMES
        .get(usize::from(code))
        .copied()
        .unwrap_or("Unknown")
}

/// Queue member status names (`ast_devstate` codes in `QueueMember*` events).
const MEMBER_STATUS: [&str; 9] = [
    "UNKNOWN",
    "NOT_INUSE",
    "INUSE",
    "BUSY",
    "INVALID",
    "UNAVAILABLE",
    "RINGING",
    "RINGINUSE",
    "ONHOLD",
];

/// The name of a queue member status code.
pub(super) fn member_status_name(code: u32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|i| MEMBER_STATUS.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Sets `dst` to the text of `v` (a party's `<unknown>` is kept as the PBX wrote
/// it). True if it changed. Reuses `dst`'s capacity.
pub(super) fn set_text(dst: &mut String, v: &[u8]) -> bool {
    if dst.as_bytes() == v {
        return false;
    }
    let text = decode_text(v);
    if *dst == *text {
        return false;
    }
    dst.clear();
    dst.push_str(&text);
    true
}

/// A decimal number from AMI text; `None` if it is not one.
pub(super) fn parse_u64(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// An AMI boolean (`1`, `true`, `yes`).
pub(super) fn parse_bool(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    v == b"1" || v.eq_ignore_ascii_case(b"true") || v.eq_ignore_ascii_case(b"yes")
}

/// A shared string from AMI text.
pub(super) fn arc(v: &[u8]) -> Arc<str> {
    Arc::from(&*decode_text(v))
}

/// A caller-id pair.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Id {
    pub num: String,
    pub name: String,
}

/// A party of a call: caller id and endpoint.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Party {
    pub id: Id,
    pub endpoint: String,
}

/// A live channel, keyed by `Uniqueid`.
#[derive(Debug)]
pub(super) struct Channel {
    pub uniqueid: Arc<str>,
    pub name: Arc<str>,
    pub linkedid: Arc<str>,
    /// Key of its endpoint (`endpoint_of(name)`).
    pub endpoint: Arc<str>,
    pub state: u8,
    pub caller: Id,
    pub connected: Id,
    pub context: String,
    pub exten: String,
    pub bridge: Option<Arc<str>>,
    pub held: bool,
    pub recording: bool,
    pub created_ms: Millis,
    /// The resync generation in which it was last seen.
    pub seen: u32,
}

impl Channel {
    /// The party this channel is.
    pub fn party(&self) -> Party {
        Party {
            id: self.caller.clone(),
            endpoint: self.endpoint.to_string(),
        }
    }
}

/// How far a call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallState {
    Started,
    Ringing,
    Answered,
}

impl CallState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
        }
    }
}

/// A call: every channel sharing one `Linkedid`.
#[derive(Debug)]
pub(super) struct Call {
    pub linkedid: Arc<str>,
    /// Uniqueids of its live channels, in order of appearance.
    pub channels: Vec<Arc<str>>,
    /// The originating channel (Uniqueid == Linkedid, else the first) while alive.
    pub origin: Option<Arc<str>>,
    /// The originating party as last seen (kept when its channel is gone).
    pub from: Party,
    pub to: Option<Party>,
    pub queue: Option<Arc<str>>,
    pub state: CallState,
    pub started_ms: Millis,
    pub ringing_ms: Option<Millis>,
    pub answered_ms: Option<Millis>,
    /// The first non-zero hangup cause of its channels (else the first one).
    pub cause: Option<u64>,
    pub cause_txt: String,
    /// Whether `started` was published (calls first seen during a resync are
    /// announced at its end).
    pub announced: bool,
}

/// A bridge, keyed by `BridgeUniqueid`.
#[derive(Debug, Default)]
pub(super) struct Bridge {
    /// Uniqueids of the channels in it.
    pub channels: Vec<Arc<str>>,
    pub seen: u32,
}

/// A caller waiting in a queue.
#[derive(Debug)]
pub(super) struct Caller {
    pub uniqueid: Arc<str>,
    pub channel: String,
    pub position: u64,
    pub id: Id,
    pub joined_ms: Millis,
    pub seen: u32,
}

/// A queue member, keyed by interface.
#[derive(Debug, Default)]
pub(super) struct Member {
    pub interface: Box<str>,
    pub name: String,
    pub state_interface: String,
    pub status: u32,
    pub paused: bool,
    pub paused_reason: String,
    pub in_call: bool,
    pub calls_taken: u64,
    pub seen: u32,
}

/// A queue, keyed by name.
#[derive(Debug)]
pub(super) struct Queue {
    pub name: Arc<str>,
    /// Ordered by position. Changed only through the methods below, which keep
    /// `caller_ids` in step.
    pub callers: Vec<Caller>,
    /// The callers' uniqueids (the same `Arc`s): a caller is found without comparing
    /// strings (a busy queue has a thousand).
    pub caller_ids: Map<Arc<str>, ()>,
    /// Ordered by interface.
    pub members: Vec<Member>,
    pub dirty: bool,
    /// The event that last changed it (the `event` of its `update`).
    pub changed_by: String,
    /// When its last `update` was published.
    pub updated_ms: Millis,
}

impl Queue {
    /// The caller with this uniqueid, if it waits here.
    pub fn caller_index(&self, uid: &str) -> Option<usize> {
        let (id, ()) = self.caller_ids.get_key_value(uid)?;
        self.callers
            .iter()
            .position(|c| Arc::ptr_eq(&c.uniqueid, id))
    }

    /// Adds a caller (not already here).
    pub fn push_caller(&mut self, caller: Caller) {
        self.caller_ids.insert(caller.uniqueid.clone(), ());
        self.callers.push(caller);
    }

    /// Removes the caller with this uniqueid; true if it was here.
    pub fn remove_caller(&mut self, uid: &str) -> bool {
        let Some((id, ())) = self.caller_ids.remove_entry(uid) else {
            return false;
        };
        self.callers.retain(|c| !Arc::ptr_eq(&c.uniqueid, &id));
        true
    }

    /// Keeps the callers for which `keep` holds.
    pub fn retain_callers(&mut self, mut keep: impl FnMut(&Caller) -> bool) {
        let ids = &mut self.caller_ids;
        self.callers.retain(|c| {
            let kept = keep(c);
            if !kept {
                ids.remove(&c.uniqueid);
            }
            kept
        });
    }
}

/// An endpoint (device), keyed by name.
#[derive(Debug)]
pub(super) struct Endpoint {
    pub name: Arc<str>,
    /// `UNKNOWN` until a `DeviceStateChange` is seen.
    pub state: String,
    pub state_known: bool,
    /// Uniqueids of its live channels (a trunk may have thousands: a set).
    pub channels: std::collections::BTreeSet<Arc<str>>,
    pub dirty: bool,
    pub changed_by: String,
    /// When its last `update` was published.
    pub updated_ms: Millis,
}

/// Uniqueids of recently hung-up channels, so that a late event about one does not
/// bring it back to life. Bounded: the oldest is forgotten first.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>, BuildHasherDefault<FxHasher>>,
}

/// How many hung-up Uniqueids are remembered.
pub(super) const TOMBSTONES: usize = 4096;

impl Tombstones {
    pub fn add(&mut self, uniqueid: Arc<str>) {
        if self.set.contains(&uniqueid) {
            return;
        }
        if self.order.len() >= TOMBSTONES
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(uniqueid.clone());
        self.set.insert(uniqueid);
    }

    pub fn contains(&self, uniqueid: &str) -> bool {
        self.set.contains(uniqueid)
    }
}
