//! The PBX's state: channels, bridges, calls, endpoints (phones and the trunk) with their
//! device states, queues with members and waiting callers. Plain data; the engine owns
//! every change. Slots are reused, so ids are only meaningful while the thing lives.

use std::sync::Arc;

use super::rng::Rng;
use super::{CallSpec, Scenario, SimTime, Strategy};

pub type ChanId = u32;
pub type BridgeId = u32;
pub type CallId = u32;

/// A slab: stable indices, reused slots, no allocation after warm-up.
#[derive(Debug)]
pub struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, v: T) -> u32 {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            self.items[i as usize] = Some(v);
            i
        } else {
            self.items.push(Some(v));
            (self.items.len() - 1) as u32
        }
    }

    pub fn remove(&mut self, i: u32) -> T {
        let v = self.items[i as usize]
            .take()
            .expect("slab: remove of a free slot");
        self.free.push(i);
        self.len -= 1;
        v
    }

    pub fn get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize).and_then(|o| o.as_ref())
    }

    pub fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.items.get_mut(i as usize).and_then(|o| o.as_mut())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Live entries in slot order (deterministic).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|v| (i as u32, v)))
    }
}

impl<T> std::ops::Index<u32> for Slab<T> {
    type Output = T;
    fn index(&self, i: u32) -> &T {
        self.items[i as usize].as_ref().expect("slab: dangling id")
    }
}

impl<T> std::ops::IndexMut<u32> for Slab<T> {
    fn index_mut(&mut self, i: u32) -> &mut T {
        self.items[i as usize].as_mut().expect("slab: dangling id")
    }
}

/// ast_channel_state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanState {
    Down,
    Ring,
    Ringing,
    Up,
}

impl ChanState {
    pub fn num(self) -> &'static str {
        match self {
            ChanState::Down => "0",
            ChanState::Ring => "4",
            ChanState::Ringing => "5",
            ChanState::Up => "6",
        }
    }

    pub fn desc(self) -> &'static str {
        match self {
            ChanState::Down => "Down",
            ChanState::Ring => "Ring",
            ChanState::Ringing => "Ringing",
            ChanState::Up => "Up",
        }
    }
}

/// ast_device_state, as DeviceStateChange words and QueueMember `Status` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevState {
    NotInUse,
    InUse,
    Ringing,
    RingInUse,
    OnHold,
}

impl DevState {
    pub fn word(self) -> &'static str {
        match self {
            DevState::NotInUse => "NOT_INUSE",
            DevState::InUse => "INUSE",
            DevState::Ringing => "RINGING",
            DevState::RingInUse => "RINGINUSE",
            DevState::OnHold => "ONHOLD",
        }
    }

    pub fn num(self) -> &'static str {
        match self {
            DevState::NotInUse => "1",
            DevState::InUse => "2",
            DevState::Ringing => "6",
            DevState::RingInUse => "7",
            DevState::OnHold => "8",
        }
    }
}

/// One channel. Strings that never change are formatted once, at creation.
#[derive(Debug)]
pub struct Channel {
    pub name: Box<str>,
    pub uniqueid: Box<str>,
    pub linkedid: Arc<str>,
    pub state: ChanState,
    /// Caller id and connected line ("" renders as `<unknown>`).
    pub cid_num: Arc<str>,
    pub cid_name: Arc<str>,
    pub conn_num: Arc<str>,
    pub conn_name: Arc<str>,
    pub context: Arc<str>,
    pub exten: Arc<str>,
    pub priority: u32,
    pub app: &'static str,
    pub app_data: Arc<str>,
    pub call: CallId,
    pub bridge: Option<BridgeId>,
    /// The endpoint this channel belongs to (phone or trunk).
    pub endpoint: usize,
    /// Runs dialplan (has a PBX), as opposed to a dialed leg.
    pub pbx: bool,
    pub created_us: SimTime,
    pub answered_us: Option<SimTime>,
    /// Seed of this channel's noise values (SIP Call-ID, RTP statistics).
    pub noise_key: u64,
    /// Hearing music on hold (class).
    pub moh: Option<Arc<str>>,
    /// This channel has put its bridge peer on hold.
    pub holding: bool,
    pub mixmonitor: bool,
    /// A Hangup action asked for this cause.
    pub hangup_cause: Option<u32>,
    /// The dialed number / DialString used to reach it (DIALEDPEERNUMBER).
    pub dialed: Arc<str>,
}

/// A basic two-party bridge.
#[derive(Debug)]
pub struct Bridge {
    pub uniqueid: Box<str>,
    pub channels: Vec<ChanId>,
}

/// Phones and the trunk.
#[derive(Debug)]
pub struct Endpoint {
    /// `101`, or the trunk's name.
    pub id: Arc<str>,
    /// `PJSIP/101`.
    pub device: Arc<str>,
    pub is_trunk: bool,
    pub cid_name: Arc<str>,
    pub context: Arc<str>,
    /// Live channels of the endpoint, and how many are in use (not Down, not
    /// Ringing), ringing, and in use while holding their peer.
    pub channels: u32,
    pub inuse: u32,
    pub ringing: u32,
    pub holding: u32,
    pub devstate: DevState,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: Arc<str>,
    /// `PJSIP/105`.
    pub interface: Arc<str>,
    pub endpoint: usize,
    pub dynamic: bool,
    pub penalty: u32,
    pub calls_taken: u64,
    pub last_call: u64,
    pub last_pause: u64,
    pub login_time: u64,
    pub in_call: bool,
    pub paused: bool,
    pub paused_reason: Arc<str>,
    /// The call ringing or talking to this member (one at a time: ringinuse=no).
    pub busy_with: Option<CallId>,
}

#[derive(Debug)]
pub struct QueueEntry {
    pub call: CallId,
    pub chan: ChanId,
    pub joined_us: SimTime,
    pub original_pos: u32,
    /// After a ring-no-answer the caller waits `retry` before the next attempt.
    pub retry_at_us: SimTime,
}

#[derive(Debug)]
pub struct Queue {
    pub name: Arc<str>,
    pub strategy: Strategy,
    pub members: Vec<Member>,
    pub callers: Vec<QueueEntry>,
    pub moh_class: Arc<str>,
    pub member_timeout_s: u32,
    pub retry_s: u32,
    pub completed: u64,
    pub abandoned: u64,
    /// Exponential averages as app_queue keeps them (seconds).
    pub holdtime: u64,
    pub talktime: u64,
    /// rrmemory: index of the next member to try.
    pub rr_next: usize,
    /// Extension reaching the queue from phones (600 + index) and its DID.
    pub exten: Arc<str>,
    pub did: Arc<str>,
}

/// Where a call stands.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Running an application that ends by itself or by a hangup (MusicOnHold, Wait).
    App { chan: ChanId },
    /// `caller` is dialing `callee`.
    Dialing {
        caller: ChanId,
        callee: ChanId,
        ringing: bool,
    },
    /// `caller` waits in a queue; `ringing` members' legs are being called.
    Queued {
        caller: ChanId,
        queue: usize,
        ringing: Vec<(ChanId, usize)>,
        ring_start_us: SimTime,
    },
    /// Two parties talk. `x` runs the dialplan (caller or transferee), `y` is the dialed leg.
    Bridged {
        bridge: BridgeId,
        x: ChanId,
        y: ChanId,
        queue: Option<QueueLink>,
    },
    /// Attended transfer in progress: `transferee` held in `orig`, `transferer` talks to
    /// `target` in `consult`.
    Consult {
        orig: BridgeId,
        consult: BridgeId,
        transferer: ChanId,
        transferee: ChanId,
        target: ChanId,
        target_up: bool,
        queue: Option<QueueLink>,
    },
    /// Originate leg ringing before it runs the dialplan.
    Originating { chan: ChanId, plan: OriginatePlan },
    /// All channels gone.
    Done,
}

/// What a queue call remembers about its agent.
#[derive(Debug, Clone, Copy)]
pub struct QueueLink {
    pub queue: usize,
    pub member: usize,
    pub joined_us: SimTime,
    pub connected_us: SimTime,
}

/// What an Originate leg does once answered.
#[derive(Debug, Clone)]
pub struct OriginatePlan {
    pub action_id: Option<Arc<str>>,
    /// The Channel header as given (`PJSIP/101`).
    pub channel_arg: Arc<str>,
    pub context: Arc<str>,
    pub exten: Arc<str>,
    pub application: Option<(Arc<str>, Arc<str>)>,
    pub cid_num: Arc<str>,
    pub cid_name: Arc<str>,
    /// Outcome decided when the leg is created: answer after, or busy, or time out.
    pub outcome: OriginateOutcome,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginateOutcome {
    Answer,
    Busy,
    NoAnswer,
}

/// One CDR record being built (party A, optional party B).
#[derive(Debug, Clone)]
pub struct CdrRec {
    pub a: ChanId,
    pub b_name: Option<Arc<str>>,
    pub src: Arc<str>,
    pub clid: Arc<str>,
    pub dst: Arc<str>,
    pub dcontext: Arc<str>,
    pub channel: Arc<str>,
    pub uniqueid: Arc<str>,
    pub last_app: &'static str,
    pub last_data: Arc<str>,
    pub start_us: SimTime,
    pub answer_us: Option<SimTime>,
    pub disposition: &'static str,
}

/// One call (all channels sharing a Linkedid).
#[derive(Debug)]
pub struct Call {
    /// Renewed (from a PBX-wide counter) whenever the call's course changes; steps
    /// scheduled before carry an older value and are dropped.
    pub epoch: u64,
    pub rng: Rng,
    pub scenario: Option<Scenario>,
    pub spec: CallSpec,
    pub linkedid: Arc<str>,
    pub chans: Vec<ChanId>,
    pub phase: Phase,
    /// Per-call plan (drawn at arrival).
    pub talk_us: SimTime,
    pub caller_hangs_up: bool,
    /// Queue: the agent attempts that must fail before one answers.
    pub rna_left: u32,
    /// Pending CDR records (posted at the end).
    pub cdrs: Vec<CdrRec>,
    /// The call has gone through its planned event (hold, transfer) already.
    pub feature_done: bool,
    /// The phone a transfer goes to.
    pub transfer_to: Option<usize>,
    /// Events emitted by the call (stress mode learns events per call).
    pub events: u64,
}
