//! The PBX engine: owns the model, the clock of scheduled steps and the encoder, and the
//! primitives every flow is written with (a channel is created, changes state, enters a
//! bridge, hangs up...), each emitting exactly the events Asterisk emits for it. Never
//! reads the wall clock: every time and id derives from `SimTime` and the seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use bytes::Bytes;

use super::enc::{BP, Cls, Enc, P};
use super::fmt;
use super::model::*;
use super::rng::{self, Rng};
use super::{Event, PbxConfig, PbxStats, Scenario, SimTime};

/// A step of a call, run at its scheduled time unless the call moved on (generation).
#[derive(Clone, Debug)]
pub enum Step {
    /// The dialed leg reports 180 Ringing.
    CalleeRinging,
    /// The dialed leg answers.
    CalleeAnswer,
    /// Dial timeout.
    DialTimeout,
    /// The dialed phone answers 486 Busy.
    CalleeBusy,
    /// A queue member's leg reports ringing.
    MemberRinging(ChanId),
    /// A queue member answers.
    MemberAnswer(ChanId),
    /// The queue member timeout expires (ring no answer).
    MemberTimeout,
    /// The waiting caller hangs up.
    Abandon,
    /// One party of a bridged call hangs up (true: the dialplan side `x`).
    Hangup {
        x_side: bool,
    },
    /// A party puts the other on hold / takes it back.
    Hold {
        x_side: bool,
    },
    Unhold {
        x_side: bool,
    },
    BlindTransfer,
    AttendedTransfer,
    TargetRinging,
    TargetAnswer,
    CompleteTransfer,
    /// A channel in an application (MusicOnHold after a Redirect, Originate to an
    /// application) is hung up by its phone.
    AppHangup(ChanId),
    /// An Originate leg: ringing, answer, busy, timeout.
    OrigRinging,
    OrigAnswer,
    OrigBusy,
    OrigTimeout,
}

#[derive(Clone, Debug)]
pub enum Task {
    /// The generator's next call.
    Arrival,
    Step {
        call: CallId,
        epoch: u64,
        step: Step,
    },
    /// Offer free members to a queue's waiting callers.
    QueueDispatch { queue: usize },
}

struct Sched {
    at: SimTime,
    seq: u64,
    task: Task,
}

impl PartialEq for Sched {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sched {
    /// Earliest first, then in scheduling order (BinaryHeap is a max-heap).
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

/// Who asked for a hangup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The phone hung up (SIP BYE/CANCEL): `HangupRequest` without a cause.
    Phone,
    /// The Hangup action, with its cause.
    Action(u32),
}

/// Stress mode: seconds over which a shortfall against the events target is made up.
const STRESS_CATCH_UP_S: f64 = 1.0;
/// Stress mode: how far above `events_per_sec` the stream is aimed (it is a floor).
const STRESS_MARGIN: f64 = 0.02;
/// Stress mode: seconds over which a shortfall of emitted events is made up.
const STRESS_SETTLE_S: f64 = 5.0;
/// Stress mode: how many mean (compressed) call durations the PBX runs before `start`.
const STRESS_WARMUP_CALLS: f64 = 3.0;

/// The simulated PBX.
pub struct Pbx {
    pub(crate) cfg: PbxConfig,
    pub(crate) seed: u64,
    pub(crate) boot_us: SimTime,
    pub(crate) now: SimTime,
    heap: BinaryHeap<Sched>,
    sched_seq: u64,
    pub(crate) enc: Enc,
    /// Events due, not yet handed out by `advance`.
    pub(crate) out: Vec<Event>,
    pub(crate) chans: Slab<Channel>,
    pub(crate) bridges: Slab<Bridge>,
    pub(crate) calls: Slab<Call>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) queues: Vec<Queue>,
    uid_seq: u64,
    chan_idx: u32,
    pub(crate) arrivals: Rng,
    pub(crate) misc: Rng,
    pub(crate) call_seq: u64,
    pub(crate) stats: PbxStats,
    pub(crate) processed_calls: u64,
    /// Stress mode: learned events per call and the duration compression factor.
    pub(crate) events_per_call: f64,
    pub(crate) time_scale: f64,
    pub(crate) noise: bool,
    pub(crate) trunk_ep: usize,
    pub(crate) moh_default: Arc<str>,
    pub(crate) empty: Arc<str>,
    arrival_scheduled: bool,
    /// Call epochs are unique across calls: a step of a call that ended never runs on
    /// a later call reusing its slot.
    epochs: u64,
    /// Calls that ended during the current task, with their events so far.
    ended: Vec<(CallId, u64)>,
    calls_learned: u64,
    /// Stress mode: when arrivals began (before `boot_us`: the PBX starts warm) and the
    /// events the calls arrived since then are expected to emit.
    arrivals_since: SimTime,
    committed_events: f64,
    /// Events before this time are not handed out (the warm-up of stress mode).
    visible_from: SimTime,
}

impl std::fmt::Debug for Pbx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pbx")
            .field("now", &self.now)
            .field("stats", &self.stats)
            .finish()
    }
}

/// First names for the phones' caller ids.
const NAMES: [&str; 24] = [
    "Alice Martin",
    "Bob Dupont",
    "Carol White",
    "David Moreau",
    "Emma Laurent",
    "Frank Weber",
    "Grace Kim",
    "Henri Petit",
    "Irene Rossi",
    "Jack Brown",
    "Karin Vogel",
    "Louis Girard",
    "Maria Lopez",
    "Nina Berg",
    "Oscar Silva",
    "Paula Costa",
    "Quentin Roux",
    "Rosa Diaz",
    "Sam Taylor",
    "Tina Novak",
    "Ugo Bianchi",
    "Vera Ivanova",
    "Will Clark",
    "Yara Haddad",
];

impl Pbx {
    pub fn new(mut config: PbxConfig, seed: u64, start: SimTime) -> Pbx {
        // A phone call needs two phones.
        config.extensions = config.extensions.max(2);
        let empty: Arc<str> = Arc::from("");
        let mut endpoints = Vec::new();
        let internal: Arc<str> = Arc::from("from-internal");
        for i in 0..config.extensions {
            let ext = (config.first_extension + i).to_string();
            endpoints.push(Endpoint {
                device: Arc::from(format!("PJSIP/{ext}")),
                id: Arc::from(ext),
                is_trunk: false,
                cid_name: Arc::from(NAMES[i as usize % NAMES.len()]),
                context: internal.clone(),
                channels: 0,
                inuse: 0,
                ringing: 0,
                holding: 0,
                devstate: DevState::NotInUse,
            });
        }
        let trunk_ep = endpoints.len();
        endpoints.push(Endpoint {
            device: Arc::from(format!("PJSIP/{}", config.trunk)),
            id: Arc::from(config.trunk.as_str()),
            is_trunk: true,
            cid_name: empty.clone(),
            context: Arc::from("from-pstn"),
            channels: 0,
            inuse: 0,
            ringing: 0,
            holding: 0,
            devstate: DevState::NotInUse,
        });
        let login = start / 1_000_000;
        let mut queues = Vec::new();
        for (qi, qc) in config.queues.iter().enumerate() {
            let members = qc
                .members
                .iter()
                .filter_map(|ext| {
                    let ep = ext.checked_sub(config.first_extension)? as usize;
                    (ep < config.extensions as usize).then_some(ep)
                })
                .map(|ep| Member {
                    name: Arc::from(format!("Agent {}", endpoints[ep].id)),
                    interface: endpoints[ep].device.clone(),
                    endpoint: ep,
                    dynamic: false,
                    penalty: 0,
                    calls_taken: 0,
                    last_call: 0,
                    last_pause: 0,
                    login_time: login,
                    in_call: false,
                    paused: false,
                    paused_reason: empty.clone(),
                    busy_with: None,
                })
                .collect();
            queues.push(Queue {
                name: Arc::from(qc.name.as_str()),
                strategy: qc.strategy,
                members,
                callers: Vec::new(),
                moh_class: Arc::from(qc.moh_class.as_str()),
                member_timeout_s: qc.member_timeout_s.max(1),
                retry_s: qc.retry_s.max(1),
                completed: 0,
                abandoned: 0,
                holdtime: 0,
                talktime: 0,
                rr_next: 0,
                exten: Arc::from((600 + qi).to_string()),
                did: Arc::from((5_550_100 + qi).to_string()),
            });
        }
        let moh_default: Arc<str> = Arc::from(
            config
                .moh_classes
                .first()
                .map(String::as_str)
                .unwrap_or("default"),
        );
        let noise = config.noise;
        let mut pbx = Pbx {
            enc: Enc::new(config.system_name.as_deref()),
            seed,
            boot_us: start,
            now: start,
            heap: BinaryHeap::new(),
            sched_seq: 0,
            out: Vec::new(),
            chans: Slab::default(),
            bridges: Slab::default(),
            calls: Slab::default(),
            endpoints,
            queues,
            uid_seq: 0,
            chan_idx: 0,
            arrivals: Rng::derive(seed, u64::MAX),
            misc: Rng::derive(seed, u64::MAX - 1),
            call_seq: 0,
            stats: PbxStats::default(),
            processed_calls: 0,
            events_per_call: 0.0,
            time_scale: 1.0,
            noise,
            trunk_ep,
            moh_default,
            empty,
            arrival_scheduled: false,
            epochs: 0,
            ended: Vec::new(),
            calls_learned: 0,
            arrivals_since: start,
            committed_events: 0.0,
            visible_from: start,
            cfg: config,
        };
        pbx.events_per_call = pbx.estimate_events_per_call();
        pbx.update_time_scale();
        // Stress mode starts warm, as a loaded PBX is when a client logs in: it has been
        // taking calls for a few call durations before `start`, so the stream runs at its
        // target from the first second. Nobody sees the warm-up's events.
        let warmup = if pbx.cfg.events_per_sec.is_some() && pbx.cfg.generate {
            let call_us = pbx.mean_call_duration_s() * pbx.time_scale * 1e6;
            ((STRESS_WARMUP_CALLS * call_us) as SimTime).min(start)
        } else {
            0
        };
        pbx.now = start - warmup;
        pbx.arrivals_since = pbx.now;
        if pbx.cfg.generate {
            let first = pbx.next_arrival_gap();
            pbx.schedule(pbx.now + first, Task::Arrival);
            pbx.arrival_scheduled = true;
        }
        if warmup > 0 {
            pbx.run_until(start - 1);
            pbx.now = pbx.now.max(start - 1);
            // What was made before `start` was never handed out: not emitted either.
            pbx.enc.events = 0;
            pbx.enc.bytes = 0;
        }
        pbx
    }

    /// Starts or stops the call generator (calls in progress go on to their end).
    pub fn set_generate(&mut self, on: bool) {
        self.cfg.generate = on;
        if on && !self.arrival_scheduled {
            let gap = self.next_arrival_gap();
            self.schedule(self.now + gap.max(1), Task::Arrival);
            self.arrival_scheduled = true;
        }
    }

    /// Appends, in order, every event due at or before `now`.
    pub fn advance(&mut self, now: SimTime, out: &mut Vec<Event>) {
        self.run_until(now);
        out.append(&mut self.out);
    }

    /// When the next event is due: now if events are pending, else the next step.
    pub fn next_due(&self) -> Option<SimTime> {
        if !self.out.is_empty() {
            return Some(self.now);
        }
        self.heap.peek().map(|s| s.at)
    }

    /// Counters.
    pub fn stats(&self) -> PbxStats {
        let mut s = self.stats.clone();
        s.channels_now = self.chans.len() as u64;
        s.bridges_now = self.bridges.len() as u64;
        s.calls_up = self.calls.len() as u64;
        s.queue_callers_now = self.queues.iter().map(|q| q.callers.len() as u64).sum();
        s.events_emitted = self.enc.events;
        s.bytes_emitted = self.enc.bytes;
        s
    }

    /// Starts one call of `scenario` at `at` (tests and demos; the generator uses the
    /// same path); its first events are due at `at`. Returns its Linkedid.
    pub fn start_call(&mut self, at: SimTime, scenario: Scenario, spec: super::CallSpec) -> String {
        self.run_until(at);
        self.now = self.now.max(at);
        let call = self.begin_call(scenario, spec);
        self.calls
            .get(call)
            .map(|c| c.linkedid.to_string())
            .unwrap_or_default()
    }

    /// Runs every task due at or before `now` (their events wait in `self.out`).
    pub(crate) fn run_until(&mut self, now: SimTime) {
        while let Some(top) = self.heap.peek() {
            if top.at > now {
                break;
            }
            let s = self.heap.pop().expect("peeked");
            self.now = self.now.max(s.at);
            self.run_task(s.task);
            self.flush_ended();
        }
        self.now = self.now.max(now);
    }

    fn run_task(&mut self, task: Task) {
        match task {
            Task::Arrival => {
                if !self.cfg.generate {
                    self.arrival_scheduled = false;
                    return;
                }
                let scenario = self.pick_scenario();
                self.committed_events += self.events_per_call;
                let before = self.enc.events;
                let call = self.begin_call(scenario, super::CallSpec::default());
                if let Some(c) = self.calls.get_mut(call) {
                    c.events += self.enc.events - before;
                }
                let gap = self.next_arrival_gap();
                self.schedule(self.now + gap.max(1), Task::Arrival);
            }
            Task::Step { call, epoch, step } => {
                let live = self.calls.get(call).is_some_and(|c| c.epoch == epoch);
                if live {
                    let before = self.enc.events;
                    self.run_step(call, step);
                    let delta = self.enc.events - before;
                    let mut counted = false;
                    for (id, events) in std::mem::take(&mut self.ended) {
                        let own = id == call && !counted;
                        counted |= own;
                        self.learn_call_events(events + if own { delta } else { 0 });
                    }
                    if !counted && let Some(c) = self.calls.get_mut(call) {
                        c.events += delta;
                    }
                }
            }
            Task::QueueDispatch { queue } => self.queue_dispatch(queue),
        }
    }

    /// Learns the events of calls that ended outside a step of their own.
    pub(crate) fn flush_ended(&mut self) {
        for (_, events) in std::mem::take(&mut self.ended) {
            self.learn_call_events(events);
        }
    }

    pub(crate) fn schedule(&mut self, at: SimTime, task: Task) {
        self.sched_seq += 1;
        self.heap.push(Sched {
            at,
            seq: self.sched_seq,
            task,
        });
    }

    /// Schedules a step of `call` `delay_s` seconds from now (scaled in stress mode).
    pub(crate) fn step_in(&mut self, call: CallId, delay_s: f64, step: Step) {
        let epoch = self.calls[call].epoch;
        let us = (delay_s * self.time_scale * 1e6) as u64;
        self.schedule(self.now + us.max(1), Task::Step { call, epoch, step });
    }

    /// Invalidates the call's pending steps (its course changed).
    pub(crate) fn bump(&mut self, call: CallId) {
        self.epochs += 1;
        self.calls[call].epoch = self.epochs;
    }

    pub(crate) fn push(&mut self, e: Event) {
        if self.now >= self.visible_from {
            self.out.push(e);
        }
    }

    // ---------------------------------------------------------------- arrivals

    /// Calls per second that, on average, give the events target (stress mode), or the
    /// configured rate.
    pub(crate) fn base_call_rate(&self) -> f64 {
        match self.cfg.events_per_sec {
            Some(eps) => eps * (1.0 + STRESS_MARGIN) / self.events_per_call.max(1.0),
            None => self.cfg.calls_per_sec,
        }
    }

    /// Calls per second for the next arrival. In stress mode the base rate alone falls
    /// short of the target over any window (calls in progress have not emitted all their
    /// events yet, and events per call are only estimated), so the running shortfall
    /// against `target x elapsed` is made up over about `STRESS_CATCH_UP_S` (and a
    /// surplus shed the same way): the average over the run meets the target.
    fn arrival_rate(&self) -> f64 {
        let base = self.base_call_rate();
        let Some(target) = self.cfg.events_per_sec else {
            return base;
        };
        // The target is a floor: the stream varies by several percent from one second to
        // the next (a call's events come in bursts), so it is aimed a little above.
        let eps = target * (1.0 + STRESS_MARGIN);
        // Events are counted when their call arrives (its expected share), not when they
        // are emitted a call duration later: a correction on emitted events would lag by
        // that duration and oscillate.
        let epc = self.events_per_call.max(1.0);
        let elapsed_s = self.now.saturating_sub(self.arrivals_since) as f64 / 1e6;
        let shortfall = eps * elapsed_s - self.committed_events;
        let fast = shortfall / epc / STRESS_CATCH_UP_S;
        // A slow loop on what was actually emitted (since `start`) removes what the
        // per-call accounting cannot see (events that belong to no single call); its
        // horizon is far longer than the emission lag, so it does not oscillate.
        let slow = if self.now >= self.visible_from {
            let shown_s = (self.now - self.visible_from) as f64 / 1e6;
            (eps * shown_s - self.enc.events as f64) / epc / STRESS_SETTLE_S
        } else {
            0.0 // warming up: nothing is shown, nothing to compare
        };
        (base + fast + slow).clamp(0.0, 4.0 * base)
    }

    fn next_arrival_gap(&mut self) -> SimTime {
        let rate = self.arrival_rate();
        if rate <= 0.0 {
            return 3_600_000_000;
        }
        (self.arrivals.exp(1.0 / rate) * 1e6) as u64
    }

    fn pick_scenario(&mut self) -> Scenario {
        let w: Vec<f64> = self
            .cfg
            .mix
            .weights
            .iter()
            .map(|(_, w)| w.max(0.0))
            .collect();
        if w.iter().sum::<f64>() <= 0.0 {
            return Scenario::InternalAnswered;
        }
        let i = self.arrivals.weighted(&w);
        self.cfg.mix.weights[i].0
    }

    /// Events per call of the configured mix, before any call completed: a static table
    /// measured on this model (noise on / off), refined as calls complete.
    fn estimate_events_per_call(&self) -> f64 {
        let per = |s: Scenario| -> f64 {
            let (noisy, quiet) = match s {
                Scenario::QueueAnswered => (124.0, 33.0),
                Scenario::QueueAbandoned => (124.0, 72.0),
                Scenario::QueueAgentNoAnswer => (140.0, 47.0),
                Scenario::InternalAnswered => (74.5, 23.0),
                Scenario::InternalNoAnswer => (36.5, 13.5),
                Scenario::InternalBusy => (30.0, 11.0),
                Scenario::Outbound => (71.0, 22.0),
                Scenario::HoldUnhold => (80.5, 27.5),
                Scenario::BlindTransfer => (133.0, 42.5),
                Scenario::AttendedTransfer => (131.5, 54.0),
                Scenario::Recording => (77.5, 24.0),
            };
            if self.noise { noisy } else { quiet }
        };
        let total: f64 = self.cfg.mix.weights.iter().map(|(_, w)| w.max(0.0)).sum();
        if total <= 0.0 {
            return per(Scenario::InternalAnswered);
        }
        self.cfg
            .mix
            .weights
            .iter()
            .map(|(s, w)| per(*s) * w.max(0.0))
            .sum::<f64>()
            / total
    }

    /// A call ended: learn its events (stress mode adapts the rate to the target).
    pub(crate) fn learn_call_events(&mut self, events: u64) {
        // The call was committed at the estimate of its time; settle it at what it
        // really emitted, so only calls in flight rest on the estimate.
        self.committed_events += events as f64 - self.events_per_call;
        // A running mean over the first calls, then an exponential average.
        self.calls_learned += 1;
        let alpha = (1.0 / self.calls_learned as f64).max(0.002);
        self.events_per_call += alpha * (events as f64 - self.events_per_call);
        self.update_time_scale();
    }

    /// Stress mode: compresses durations so that about `max_concurrent_calls` calls
    /// are up (Little's law: calls up = rate x duration).
    fn update_time_scale(&mut self) {
        if self.cfg.events_per_sec.is_some() {
            let up = self.base_call_rate() * self.mean_call_duration_s();
            let cap = self.cfg.max_concurrent_calls.max(1) as f64;
            self.time_scale = if up > cap { cap / up } else { 1.0 };
        }
    }

    fn mean_call_duration_s(&self) -> f64 {
        let d = &self.cfg.durations;
        d.ring.mean() + d.talk.mean()
    }

    // ---------------------------------------------------------------- ids

    pub(crate) fn new_uniqueid(&mut self) -> String {
        let id = fmt::uniqueid(self.enc.system_name(), self.now / 1_000_000, self.uid_seq);
        self.uid_seq += 1;
        id
    }

    pub(crate) fn new_bridge_uuid(&mut self) -> Box<str> {
        let hi = self.misc.next_u64();
        let lo = self.misc.next_u64();
        fmt::uuid(hi, lo).into()
    }

    // ---------------------------------------------------------------- emitting

    pub(crate) fn ev_chan(&mut self, name: &'static str, cls: Cls, ch: ChanId) {
        let c = &self.chans[ch];
        let e = self.enc.event(name, cls, |w| {
            w.chan(P::None, c);
        });
        self.push(e);
    }

    /// Channel block plus extra fields.
    pub(crate) fn ev_chan_with(
        &mut self,
        name: &'static str,
        cls: Cls,
        ch: ChanId,
        extra: &[(&str, &str)],
    ) {
        let c = &self.chans[ch];
        let e = self.enc.event(name, cls, |w| {
            w.chan(P::None, c);
            for (k, v) in extra {
                w.f(k, v);
            }
        });
        self.push(e);
    }

    /// Caller block, Dest block, extra fields (DialBegin, DialState, DialEnd, Agent*).
    pub(crate) fn ev_two(
        &mut self,
        name: &'static str,
        cls: Cls,
        a: ChanId,
        b: ChanId,
        extra: &[(&str, &str)],
    ) {
        let ca = &self.chans[a];
        let cb = &self.chans[b];
        let e = self.enc.event(name, cls, |w| {
            w.chan(P::None, ca);
            w.chan(P::Dest, cb);
            for (k, v) in extra {
                w.f(k, v);
            }
        });
        self.push(e);
    }

    /// Dest block only (Dial events of an Originate or a transfer feature).
    pub(crate) fn ev_dest(&mut self, name: &'static str, b: ChanId, extra: &[(&str, &str)]) {
        let cb = &self.chans[b];
        let e = self.enc.event(name, Cls::Call, |w| {
            w.chan(P::Dest, cb);
            for (k, v) in extra {
                w.f(k, v);
            }
        });
        self.push(e);
    }

    /// `VarSet` (noise).
    pub(crate) fn varset(&mut self, ch: ChanId, var: &str, value: &str) {
        if self.noise {
            self.ev_chan_with(
                "VarSet",
                Cls::Dialplan,
                ch,
                &[("Variable", var), ("Value", value)],
            );
        }
    }

    /// Moves the channel to `priority` running `app(data)`; `Newexten` (noise).
    pub(crate) fn exec(&mut self, ch: ChanId, priority: u32, app: &'static str, data: &str) {
        {
            let c = &mut self.chans[ch];
            c.priority = priority;
            c.app = app;
            if *c.app_data != *data {
                c.app_data = Arc::from(data);
            }
        }
        self.newexten(ch);
    }

    /// `Newexten` for the channel's current location (noise).
    pub(crate) fn newexten(&mut self, ch: ChanId) {
        if self.noise {
            let c = &self.chans[ch];
            let e = self.enc.event("Newexten", Cls::Dialplan, |w| {
                w.chan(P::None, c);
                w.f("Extension", &c.exten)
                    .f("Application", c.app)
                    .f("AppData", &c.app_data);
            });
            self.push(e);
        }
    }

    pub(crate) fn set_location(
        &mut self,
        ch: ChanId,
        context: &Arc<str>,
        exten: &Arc<str>,
        priority: u32,
    ) {
        let c = &mut self.chans[ch];
        c.context = context.clone();
        c.exten = exten.clone();
        c.priority = priority;
    }

    // ---------------------------------------------------------------- channels

    /// Creates a PJSIP channel of `endpoint` in `call`; emits `Newchannel`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_channel(
        &mut self,
        call: CallId,
        endpoint: usize,
        state: ChanState,
        context: Arc<str>,
        exten: Arc<str>,
        cid_num: Arc<str>,
        cid_name: Arc<str>,
        pbx: bool,
    ) -> ChanId {
        let uniqueid = self.new_uniqueid();
        let idx = self.chan_idx;
        self.chan_idx = self.chan_idx.wrapping_add(1);
        let name = fmt::chan_name(&self.endpoints[endpoint].device, idx);
        let linkedid: Arc<str> = if self.calls[call].linkedid.is_empty() {
            let l: Arc<str> = Arc::from(uniqueid.as_str());
            self.calls[call].linkedid = l.clone();
            l
        } else {
            self.calls[call].linkedid.clone()
        };
        let noise_key = rng::mix(self.seed, self.uid_seq ^ 0xC0FF_EE00);
        let empty = self.empty.clone();
        let ch = self.chans.insert(Channel {
            name: name.into(),
            uniqueid: uniqueid.into(),
            linkedid,
            state,
            cid_num,
            cid_name,
            conn_num: empty.clone(),
            conn_name: empty.clone(),
            context,
            exten,
            priority: 1,
            app: "",
            app_data: empty.clone(),
            call,
            bridge: None,
            endpoint,
            pbx,
            created_us: self.now,
            answered_us: None,
            noise_key,
            moh: None,
            holding: false,
            mixmonitor: false,
            hangup_cause: None,
            dialed: empty,
        });
        self.calls[call].chans.push(ch);
        self.endpoints[endpoint].channels += 1;
        self.ep_count(endpoint, state, false, 1);
        self.stats.channels_created += 1;
        self.ev_chan("Newchannel", Cls::Call, ch);
        self.devstate_update(endpoint);
        ch
    }

    pub(crate) fn set_state(&mut self, ch: ChanId, state: ChanState) {
        {
            let (ep, old, holding) = (
                self.chans[ch].endpoint,
                self.chans[ch].state,
                self.chans[ch].holding,
            );
            self.ep_count(ep, old, holding, -1);
            self.ep_count(ep, state, holding, 1);
        }
        {
            let c = &mut self.chans[ch];
            c.state = state;
            if state == ChanState::Up && c.answered_us.is_none() {
                c.answered_us = Some(self.now);
            }
        }
        self.ev_chan("Newstate", Cls::Call, ch);
        let ep = self.chans[ch].endpoint;
        self.devstate_update(ep);
    }

    /// `HangupRequest` (a phone hung up: no cause) or with a cause.
    pub(crate) fn hangup_request(&mut self, ch: ChanId, cause: Option<u32>) {
        match cause {
            None => self.ev_chan("HangupRequest", Cls::Call, ch),
            Some(c) => {
                let mut b = [0u8; 20];
                let v = fmt::u64_str(&mut b, c as u64).to_string();
                self.ev_chan_with("HangupRequest", Cls::Call, ch, &[("Cause", &v)]);
            }
        }
    }

    pub(crate) fn soft_hangup_request(&mut self, ch: ChanId) {
        self.ev_chan_with("SoftHangupRequest", Cls::Call, ch, &[("Cause", "16")]);
    }

    /// The RTP statistics chan_pjsip stores when an answered channel hangs up (noise).
    pub(crate) fn rtp_qos(&mut self, ch: ChanId) {
        if !self.noise || self.chans[ch].answered_us.is_none() {
            return;
        }
        let c = &self.chans[ch];
        let secs = (self.now.saturating_sub(c.answered_us.unwrap_or(self.now))) / 1_000_000;
        let k = c.noise_key;
        let ssrc = (k >> 32) as u32;
        let themssrc = k as u32;
        let pkts = secs * 50;
        let jit = (k % 997) as f64 / 100_000.0;
        let qos = format!(
            "ssrc={ssrc};themssrc={themssrc};lp=0;rxjitter={jit:.6};rxcount={pkts};txjitter={jit:.6};txcount={pkts};rlp=0;rtt=0.000000;rxmes=87.231481;txmes=87.231481"
        );
        let jitter = format!(
            "minrxjitter=000.000000;maxrxjitter={jit:010.6};avgrxjitter={jit:010.6};stdevrxjitter=000.000000;mintxjitter=000.000000;maxtxjitter={jit:010.6};avgtxjitter={jit:010.6};stdevtxjitter=000.000000;"
        );
        let loss = "  minrxlost=000.000000;  maxrxlost=000.000000;  avgrxlost=000.000000;  stdevrxlost=000.000000;  mintxlost=000.000000;  maxtxlost=000.000000;  avgtxlost=000.000000;  stdevtxlost=000.000000;";
        let rtt = "     minrtt=000.000000;     maxrtt=000.000000;     avgrtt=000.000000;     stdevrtt=000.000000;";
        let mes = "   minrxmes=087.231481;   maxrxmes=087.231481;   avgrxmes=087.231481;   stdevrxmes=000.000000;   mintxmes=087.231481;   maxtxmes=087.231481;   avgtxmes=087.231481;   stdevtxmes=000.000000;";
        self.varset(ch, "RTPAUDIOQOS", &qos);
        self.varset(ch, "RTPAUDIOQOSJITTER", &jitter);
        self.varset(ch, "RTPAUDIOQOSLOSS", loss);
        self.varset(ch, "RTPAUDIOQOSRTT", rtt);
        self.varset(ch, "RTPAUDIOQOSMES", mes);
    }

    /// Emits `Hangup` and removes the channel from the model.
    pub(crate) fn hangup(&mut self, ch: ChanId, cause: u32) {
        let cause = self.chans[ch].hangup_cause.unwrap_or(cause);
        let mut b = [0u8; 20];
        let cs = fmt::u64_str(&mut b, cause as u64).to_string();
        self.ev_chan_with(
            "Hangup",
            Cls::Call,
            ch,
            &[("Cause", &cs), ("Cause-txt", cause_text(cause))],
        );
        let c = self.chans.remove(ch);
        debug_assert!(c.bridge.is_none(), "hangup of a bridged channel");
        let ep = c.endpoint;
        self.endpoints[ep].channels -= 1;
        self.ep_count(ep, c.state, c.holding, -1);
        if let Some(call) = self.calls.get_mut(c.call) {
            call.chans.retain(|x| *x != ch);
        }
        self.stats.channels_hungup += 1;
        self.devstate_update(ep);
    }

    // ---------------------------------------------------------------- device state

    /// Counts a channel of `ep` in (`delta` 1) or out (-1) of the device state tallies.
    pub(crate) fn ep_count(&mut self, ep: usize, state: ChanState, holding: bool, delta: i32) {
        let e = &mut self.endpoints[ep];
        let add = |v: &mut u32| *v = (*v as i64 + delta as i64) as u32;
        match state {
            ChanState::Down => {}
            ChanState::Ringing => add(&mut e.ringing),
            _ => {
                add(&mut e.inuse);
                if holding {
                    add(&mut e.holding);
                }
            }
        }
    }

    /// chan_pjsip's aggregate of the endpoint's channels.
    fn compute_devstate(&self, ep: usize) -> DevState {
        let e = &self.endpoints[ep];
        match (e.inuse > 0, e.ringing > 0) {
            (true, true) => DevState::RingInUse,
            (true, false) if e.holding == e.inuse => DevState::OnHold,
            (true, false) => DevState::InUse,
            (false, true) => DevState::Ringing,
            (false, false) => DevState::NotInUse,
        }
    }

    /// Recomputes an endpoint's device state; on a change emits `DeviceStateChange`
    /// (noise) and `QueueMemberStatus` for every queue the phone is a member of.
    pub(crate) fn devstate_update(&mut self, ep: usize) {
        if self.endpoints[ep].is_trunk {
            return;
        }
        let st = self.compute_devstate(ep);
        if st == self.endpoints[ep].devstate {
            return;
        }
        self.endpoints[ep].devstate = st;
        if self.noise {
            let dev = self.endpoints[ep].device.clone();
            let e = self.enc.event("DeviceStateChange", Cls::Call, |w| {
                w.f("Device", &dev).f("State", st.word());
            });
            self.push(e);
        }
        for q in 0..self.queues.len() {
            if let Some(m) = self.queues[q].members.iter().position(|m| m.endpoint == ep) {
                self.queue_member_event("QueueMemberStatus", q, m);
            }
        }
    }

    /// `DeviceStateChange` of a queue's pseudo device (`Queue:<name>`; noise).
    pub(crate) fn queue_devstate(&mut self, q: usize, state: &str) {
        if self.noise {
            let dev = format!("Queue:{}", self.queues[q].name);
            let e = self.enc.event("DeviceStateChange", Cls::Call, |w| {
                w.f("Device", &dev).f("State", state);
            });
            self.push(e);
        }
    }

    /// QueueMemberStatus / QueueMemberAdded / QueueMemberRemoved / QueueMemberPause /
    /// QueueMemberPenalty: the member block.
    pub(crate) fn queue_member_event(&mut self, name: &'static str, q: usize, m: usize) {
        let status = self.endpoints[self.queues[q].members[m].endpoint].devstate;
        let qu = &self.queues[q];
        let mem = &qu.members[m];
        let e = self.enc.event(name, Cls::Agent, |w| {
            w.f("Queue", &qu.name)
                .f("MemberName", &mem.name)
                .f("Interface", &mem.interface)
                .f("StateInterface", &mem.interface)
                .f("Membership", if mem.dynamic { "dynamic" } else { "static" })
                .n("Penalty", mem.penalty as u64)
                .n("CallsTaken", mem.calls_taken)
                .n("LastCall", mem.last_call)
                .n("LastPause", mem.last_pause)
                .n("LoginTime", mem.login_time)
                .f("InCall", if mem.in_call { "1" } else { "0" })
                .f("Status", status.num())
                .f("Paused", if mem.paused { "1" } else { "0" })
                .f("PausedReason", &mem.paused_reason)
                .f("Ringinuse", "0")
                .f("Wrapuptime", "0");
        });
        self.push(e);
    }

    // ---------------------------------------------------------------- bridges

    pub(crate) fn bridge_create(&mut self) -> BridgeId {
        let uniqueid = self.new_bridge_uuid();
        let b = self.bridges.insert(Bridge {
            uniqueid,
            channels: Vec::new(),
        });
        self.stats.bridges_created += 1;
        let br = &self.bridges[b];
        let e = self.enc.event("BridgeCreate", Cls::Call, |w| {
            w.bridge(BP::None, br, 0);
        });
        self.push(e);
        b
    }

    pub(crate) fn bridge_enter(&mut self, b: BridgeId, ch: ChanId) {
        self.bridges[b].channels.push(ch);
        self.chans[ch].bridge = Some(b);
        let br = &self.bridges[b];
        let c = &self.chans[ch];
        let n = br.channels.len();
        let e = self.enc.event("BridgeEnter", Cls::Call, |w| {
            w.bridge(BP::None, br, n);
            w.chan(P::None, c);
        });
        self.push(e);
    }

    pub(crate) fn bridge_leave(&mut self, ch: ChanId) {
        let Some(b) = self.chans[ch].bridge else {
            return;
        };
        self.bridges[b].channels.retain(|x| *x != ch);
        self.chans[ch].bridge = None;
        let br = &self.bridges[b];
        let c = &self.chans[ch];
        let n = br.channels.len();
        let e = self.enc.event("BridgeLeave", Cls::Call, |w| {
            w.bridge(BP::None, br, n);
            w.chan(P::None, c);
        });
        self.push(e);
    }

    pub(crate) fn bridge_destroy(&mut self, b: BridgeId) {
        debug_assert!(
            self.bridges[b].channels.is_empty(),
            "destroy of a bridge with channels"
        );
        let br = self.bridges.remove(b);
        self.stats.bridges_destroyed += 1;
        let e = self.enc.event("BridgeDestroy", Cls::Call, |w| {
            w.bridge(BP::None, &br, 0);
        });
        self.push(e);
    }

    /// BRIDGEPEER (and BRIDGEPVTCALLID, the peer being PJSIP) as the bridge sets them
    /// when two channels meet or part (noise).
    pub(crate) fn bridgepeer_vars(&mut self, a: ChanId, b: ChanId, set: bool) {
        if !self.noise {
            return;
        }
        let (an, bn) = (self.chans[a].name.clone(), self.chans[b].name.clone());
        let (ak, bk) = (self.chans[a].noise_key, self.chans[b].noise_key);
        let call_id = |k: u64| fmt::uuid(rng::mix(k, 1), rng::mix(k, 2));
        if set {
            self.varset(a, "BRIDGEPEER", &bn);
            self.varset(a, "BRIDGEPVTCALLID", &call_id(bk));
            self.varset(b, "BRIDGEPEER", &an);
            self.varset(b, "BRIDGEPVTCALLID", &call_id(ak));
        } else {
            self.varset(a, "BRIDGEPEER", "");
            self.varset(a, "BRIDGEPVTCALLID", "");
            self.varset(b, "BRIDGEPEER", "");
            self.varset(b, "BRIDGEPVTCALLID", "");
        }
    }

    // ---------------------------------------------------------------- CDR

    /// Posts the call's CDR records (`Cdr` events) whose party A is `ch`.
    pub(crate) fn post_cdrs(&mut self, call: CallId, ch: ChanId) {
        let recs: Vec<CdrRec> = {
            let c = &mut self.calls[call];
            let (mine, rest): (Vec<CdrRec>, Vec<CdrRec>) =
                c.cdrs.drain(..).partition(|r| r.a == ch);
            c.cdrs = rest;
            mine
        };
        if !self.cfg.cdr {
            return;
        }
        let a_answered = self.chans.get(ch).and_then(|c| c.answered_us);
        for mut r in recs {
            if r.b_name.is_none() {
                r.answer_us = a_answered;
                r.disposition = if a_answered.is_some() {
                    "ANSWERED"
                } else {
                    "NO ANSWER"
                };
            }
            let end_s = self.now / 1_000_000;
            let start_s = r.start_us / 1_000_000;
            let answer = r
                .answer_us
                .map(|a| fmt::datetime(a / 1_000_000))
                .unwrap_or_default();
            let billsec = r
                .answer_us
                .map(|a| self.now.saturating_sub(a) / 1_000_000)
                .unwrap_or(0);
            let e = self.enc.event("Cdr", Cls::Cdr, |w| {
                w.f("AccountCode", "")
                    .f("Source", &r.src)
                    .f("Destination", &r.dst)
                    .f("DestinationContext", &r.dcontext)
                    .f("CallerID", &r.clid)
                    .f("Channel", &r.channel)
                    .f("DestinationChannel", r.b_name.as_deref().unwrap_or(""))
                    .f("LastApplication", r.last_app)
                    .f("LastData", &r.last_data)
                    .f("StartTime", &fmt::datetime(start_s))
                    .f("AnswerTime", &answer)
                    .f("EndTime", &fmt::datetime(end_s))
                    .n("Duration", end_s.saturating_sub(start_s))
                    .n("BillableSeconds", billsec)
                    .f("Disposition", r.disposition)
                    .f("AMAFlags", "DOCUMENTATION")
                    .f("UniqueID", &r.uniqueid)
                    .f("UserField", "");
            });
            self.push(e);
        }
    }

    /// Makes sure `a` has its own CDR record (party A, no party B yet): every channel
    /// that runs dialplan gets one.
    pub(crate) fn cdr_ensure(&mut self, a: ChanId, last_app: &'static str, last_data: &str) {
        let call = self.chans[a].call;
        if self.calls[call].cdrs.iter().any(|r| r.a == a) {
            return;
        }
        let c = &self.chans[a];
        let clid: Arc<str> = if c.cid_name.is_empty() {
            Arc::from(format!("\"\" <{}>", c.cid_num))
        } else {
            Arc::from(format!("\"{}\" <{}>", c.cid_name, c.cid_num))
        };
        let rec = CdrRec {
            a,
            b_name: None,
            src: c.cid_num.clone(),
            clid,
            dst: c.exten.clone(),
            dcontext: c.context.clone(),
            channel: Arc::from(&*c.name),
            uniqueid: Arc::from(&*c.uniqueid),
            last_app,
            last_data: Arc::from(last_data),
            start_us: c.created_us,
            answer_us: None,
            disposition: "NO ANSWER",
        };
        self.calls[call].cdrs.push(rec);
    }

    /// `a` dials `b`: party B joins `a`'s record, or a new record forks for a further
    /// attempt (the CDR engine's dial handling: one record per party B).
    pub(crate) fn cdr_dial(
        &mut self,
        a: ChanId,
        b: ChanId,
        last_app: &'static str,
        last_data: &str,
    ) {
        self.cdr_ensure(a, last_app, last_data);
        let bname: Arc<str> = Arc::from(&*self.chans[b].name);
        let (dst, dcontext) = (self.chans[a].exten.clone(), self.chans[a].context.clone());
        let call = self.chans[a].call;
        let data: Arc<str> = Arc::from(last_data);
        let recs = &mut self.calls[call].cdrs;
        if let Some(r) = recs.iter_mut().find(|r| r.a == a && r.b_name.is_none()) {
            r.b_name = Some(bname);
            r.last_app = last_app;
            r.last_data = data;
            r.dst = dst;
            r.dcontext = dcontext;
        } else if let Some(base) = recs.iter().find(|r| r.a == a).cloned() {
            recs.push(CdrRec {
                b_name: Some(bname),
                last_app,
                last_data: data,
                answer_us: None,
                disposition: "NO ANSWER",
                dst,
                dcontext,
                ..base
            });
        }
    }

    /// Sets the disposition of `a`'s record with party B `b` (answered: now).
    pub(crate) fn cdr_disposition(&mut self, a: ChanId, b: ChanId, disposition: &'static str) {
        let bname = &self.chans[b].name;
        let now = self.now;
        let call = self.chans[a].call;
        if let Some(r) = self.calls[call]
            .cdrs
            .iter_mut()
            .rev()
            .find(|r| r.a == a && r.b_name.as_deref() == Some(&**bname))
        {
            r.disposition = disposition;
            if disposition == "ANSWERED" && r.answer_us.is_none() {
                r.answer_us = Some(now);
            }
        }
    }

    // ---------------------------------------------------------------- calls

    /// Creates an empty call (its first channel sets the Linkedid).
    pub(crate) fn new_call(&mut self, scenario: Option<Scenario>, spec: super::CallSpec) -> CallId {
        self.call_seq += 1;
        self.epochs += 1;
        let rng = Rng::derive(self.seed, self.call_seq);
        let id = self.calls.insert(Call {
            epoch: self.epochs,
            rng,
            scenario,
            spec,
            linkedid: self.empty.clone(),
            chans: Vec::new(),
            phase: Phase::Done,
            talk_us: 0,
            caller_hangs_up: true,
            rna_left: 0,
            cdrs: Vec::new(),
            feature_done: false,
            transfer_to: None,
            events: 0,
        });
        self.stats.calls_started += 1;
        id
    }

    /// Ends the call if it has no channel left.
    pub(crate) fn maybe_end_call(&mut self, call: CallId) {
        let done = self.calls.get(call).is_some_and(|c| c.chans.is_empty());
        if done {
            let c = self.calls.remove(call);
            self.stats.calls_ended += 1;
            self.processed_calls += 1;
            self.ended.push((call, c.events));
        }
    }

    /// Finds a live channel by name.
    pub(crate) fn find_channel(&self, name: &str) -> Option<ChanId> {
        self.chans
            .iter()
            .find(|(_, c)| &*c.name == name)
            .map(|(i, _)| i)
    }

    /// Encodes one message for the calling session.
    pub(crate) fn msg(&mut self, body: impl FnOnce(&mut super::enc::W<'_>)) -> Bytes {
        self.enc.message(body)
    }
}

/// Q.850 cause texts (ast_cause2str).
pub fn cause_text(cause: u32) -> &'static str {
    match cause {
        0 => "Unknown",
        1 => "Unallocated (unassigned) number",
        3 => "No route to destination",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "User alerting, no answer",
        20 => "Subscriber absent",
        21 => "Call Rejected",
        26 => "Answered elsewhere",
        27 => "Destination out of order",
        28 => "Invalid number format",
        31 => "Normal, unspecified",
        34 => "Circuit/channel congestion",
        38 => "Network out of order",
        41 => "Temporary failure",
        42 => "Switching equipment congestion",
        127 => "Interworking, unspecified",
        _ => "Unknown",
    }
}
