//! Call flows: how each scenario starts and moves on, and how any channel leaves a call
//! (its phone hangs up, the Hangup action, a Redirect, a transfer). Each step emits the
//! events Asterisk 22 emits for it, in the order of a real call of the captures (the
//! capture each order comes from is named beside it). Flows never touch the encoder
//! directly: they go through the engine's primitives.

use std::sync::Arc;

use super::enc::{BP, Cls, P};
use super::engine::{Origin, Pbx, Step, Task};
use super::model::*;
use super::{CallSpec, Scenario, SimTime, Strategy};

/// `CID-CallingPres` of NewCallerid.
const CALLING_PRES: &str = "0 (Presentation Allowed, Not Screened)";
/// The PBX's SIP domain (SIPDOMAIN of incoming calls).
const SIP_DOMAIN: &str = "pbx.example.com";
/// Dial variables app_dial clears when it starts (asterisk22-local.txt, every Dial).
const DIAL_VARS: [&str; 11] = [
    "DIALSTATUS",
    "DIALEDPEERNUMBER",
    "DIALEDPEERNAME",
    "ANSWEREDTIME",
    "ANSWEREDTIME_MS",
    "DIALEDTIME",
    "DIALEDTIME_MS",
    "RINGTIME",
    "RINGTIME_MS",
    "PROGRESSTIME",
    "PROGRESSTIME_MS",
];

/// Where a channel goes in the dialplan (Redirect, transfers, Originate).
#[derive(Clone, Debug)]
pub enum Dest {
    Phone(usize),
    Queue(usize),
    Trunk(Arc<str>),
    Moh,
    Invalid,
}

impl Pbx {
    // ================================================================= starting calls

    /// Starts one call of `scenario` now.
    pub(crate) fn begin_call(&mut self, scenario: Scenario, spec: CallSpec) -> CallId {
        let call = self.new_call(Some(scenario), spec.clone());
        self.begin_call_in(call, scenario, &spec);
        call
    }

    fn begin_call_in(&mut self, call: CallId, scenario: Scenario, spec: &CallSpec) {
        let talk_s = match spec.talk_s {
            Some(t) => t,
            None => {
                let d = self.cfg.durations.talk;
                d.sample(&mut self.calls[call].rng).max(1.0)
            }
        };
        let side = match spec.caller_hangs_up {
            Some(s) => s,
            None => self.calls[call].rng.chance(0.5),
        };
        {
            let c = &mut self.calls[call];
            c.talk_us = (talk_s * 1e6) as u64;
            c.caller_hangs_up = side;
        }
        match scenario {
            Scenario::QueueAnswered | Scenario::QueueAbandoned | Scenario::QueueAgentNoAnswer => {
                let nq = self.queues.len();
                if nq == 0 {
                    return self.internal_call(call, scenario);
                }
                let q = spec
                    .queue
                    .filter(|q| *q < nq)
                    .unwrap_or_else(|| self.calls[call].rng.below(nq as u64) as usize);
                self.calls[call].rna_left = match scenario {
                    Scenario::QueueAbandoned => u32::MAX,
                    Scenario::QueueAgentNoAnswer => 1,
                    _ => 0,
                };
                self.inbound_to_queue(call, q);
            }
            _ => self.internal_call(call, scenario),
        }
    }

    /// A phone for a new call, preferably an idle one (a few draws), else any.
    fn random_phone(&mut self, call: CallId, except: Option<usize>) -> usize {
        let n = self.cfg.extensions.max(1) as u64;
        let mut any = None;
        for _ in 0..8 {
            let ep = self.calls[call].rng.below(n) as usize;
            if Some(ep) == except && n > 1 {
                continue;
            }
            if self.endpoints[ep].channels == 0 {
                return ep;
            }
            any.get_or_insert(ep);
        }
        match any {
            Some(ep) => ep,
            None => (0..n as usize).find(|ep| Some(*ep) != except).unwrap_or(0),
        }
    }

    fn random_external(&mut self, call: CallId) -> (Arc<str>, Arc<str>) {
        let r = &mut self.calls[call].rng;
        let num = format!("0{}{:08}", r.range(1, 9), r.below(100_000_000));
        const NAMES: [&str; 8] = [
            "",
            "",
            "ACME CORP",
            "J SMITH",
            "",
            "WIRELESS CALLER",
            "M GARCIA",
            "",
        ];
        let name = NAMES[r.below(NAMES.len() as u64) as usize];
        (Arc::from(num), Arc::from(name))
    }

    /// A trunk call (PJSIP/trunk) to a queue's DID: Answer, Queue.
    fn inbound_to_queue(&mut self, call: CallId, q: usize) {
        let (num, name) = self.random_external(call);
        let did = self.queues[q].did.clone();
        let ctx = self.endpoints[self.trunk_ep].context.clone();
        let a = self.new_channel(
            call,
            self.trunk_ep,
            ChanState::Ring,
            ctx,
            did,
            num,
            name,
            true,
        );
        self.varset(a, "SIPDOMAIN", SIP_DOMAIN);
        self.cdr_ensure(a, "Queue", "");
        self.exec(a, 1, "Answer", "");
        self.set_state(a, ChanState::Up);
        self.queue_enter(call, a, q, 2);
    }

    /// A phone call: internal, outbound, and the answered-call scenarios.
    fn internal_call(&mut self, call: CallId, scenario: Scenario) {
        let from = self.random_phone(call, None);
        let (exten, dest): (Arc<str>, Dest) = if scenario == Scenario::Outbound {
            let (num, _) = self.random_external(call);
            (Arc::from(format!("9{num}")), Dest::Trunk(num))
        } else {
            let to = self.random_phone(call, Some(from));
            (self.endpoints[to].id.clone(), Dest::Phone(to))
        };
        if matches!(
            scenario,
            Scenario::BlindTransfer | Scenario::AttendedTransfer
        ) {
            let Dest::Phone(to) = dest else {
                unreachable!()
            };
            let mut t = self.random_phone(call, Some(from));
            if t == to && self.cfg.extensions > 2 {
                while t == to || t == from {
                    t = self.random_phone(call, Some(from));
                }
            }
            self.calls[call].transfer_to = Some(t);
        }
        let ep = &self.endpoints[from];
        let (ctx, cid, name) = (ep.context.clone(), ep.id.clone(), ep.cid_name.clone());
        let a = self.new_channel(call, from, ChanState::Ring, ctx, exten, cid, name, true);
        self.varset(a, "SIPDOMAIN", SIP_DOMAIN);
        let mut prio = 1;
        if scenario == Scenario::Recording {
            self.mixmonitor_start(a, prio, None);
            prio += 1;
        }
        self.dial(call, a, prio, dest);
    }

    // ================================================================= Dial

    /// `Dial(...)` from `x` (asterisk22-local.txt "dial" calls; asterisk16-calls.bin
    /// call200 for a caller that is not answered yet).
    pub(crate) fn dial(&mut self, call: CallId, x: ChanId, prio: u32, dest: Dest) {
        let (ep, dialstring, data, timeout_s): (usize, Arc<str>, String, u32) = match &dest {
            Dest::Phone(p) => {
                let id = self.endpoints[*p].id.clone();
                let data = format!("PJSIP/{id},{},tT", self.cfg.durations.dial_timeout_s);
                (*p, id, data, self.cfg.durations.dial_timeout_s)
            }
            Dest::Trunk(num) => {
                let ds: Arc<str> = Arc::from(format!("{num}@{}", self.endpoints[self.trunk_ep].id));
                let data = format!("PJSIP/{ds},60,tT");
                (self.trunk_ep, ds, data, 60)
            }
            _ => unreachable!("dial to a non-device"),
        };
        self.chans[x].pbx = true;
        self.exec(x, prio, "Dial", &data);
        for v in DIAL_VARS {
            self.varset(x, v, "");
        }
        let ctx = self.endpoints[ep].context.clone();
        let s: Arc<str> = Arc::from("s");
        let empty = self.empty.clone();
        let y = self.new_channel(
            call,
            ep,
            ChanState::Down,
            ctx,
            s,
            empty.clone(),
            empty,
            false,
        );
        self.chans[y].dialed = dialstring.clone();
        self.varset(y, "DIALEDPEERNUMBER", &dialstring);
        // app_dial copies the caller's location onto the outgoing leg.
        let (xctx, xexten) = (self.chans[x].context.clone(), self.chans[x].exten.clone());
        self.set_location(y, &xctx, &xexten, 1);
        self.exec(y, 1, "AppDial", "(Outgoing Line)");
        // Caller id of the leg: the dialed extension and the caller's connected name.
        {
            let (xe, xcn) = (self.chans[x].exten.clone(), self.chans[x].conn_name.clone());
            let c = &mut self.chans[y];
            c.cid_num = xe;
            c.cid_name = xcn;
        }
        self.ev_chan_with(
            "NewCallerid",
            Cls::Call,
            y,
            &[("CID-CallingPres", CALLING_PRES)],
        );
        {
            let (n, m) = (
                self.chans[x].cid_num.clone(),
                self.chans[x].cid_name.clone(),
            );
            let c = &mut self.chans[y];
            c.conn_num = n;
            c.conn_name = m;
        }
        self.ev_chan("NewConnectedLine", Cls::Call, y);
        self.cdr_dial(x, y, "Dial", &data);
        self.ev_two("DialBegin", Cls::Call, x, y, &[("DialString", &dialstring)]);
        self.calls[call].phase = Phase::Dialing {
            caller: x,
            callee: y,
            ringing: false,
        };
        self.bump(call);
        // What the callee does.
        let scenario = self.calls[call].scenario;
        let busy = scenario == Some(Scenario::InternalBusy) && !self.calls[call].feature_done;
        let no_answer =
            scenario == Some(Scenario::InternalNoAnswer) && !self.calls[call].feature_done;
        let setup = 0.05 + 0.3 * self.calls[call].rng.f64();
        if busy {
            self.step_in(call, setup, Step::CalleeBusy);
            return;
        }
        self.step_in(call, setup, Step::CalleeRinging);
        if no_answer {
            self.step_in(call, timeout_s as f64, Step::DialTimeout);
        } else {
            let ring = self.cfg.durations.ring.sample(&mut self.calls[call].rng);
            let ring = self.calls[call].spec.ring_s.unwrap_or(ring);
            let ring = ring.clamp(setup + 0.5, (timeout_s as f64 - 1.0).max(setup + 0.5));
            self.step_in(call, ring, Step::CalleeAnswer);
        }
    }

    fn callee_ringing(&mut self, call: CallId) {
        let Phase::Dialing {
            caller,
            callee,
            ringing: false,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        self.set_state(callee, ChanState::Ringing);
        let ms = (self.now - self.chans[callee].created_us) / 1000;
        self.varset(caller, "RINGTIME", &(ms / 1000).to_string());
        self.varset(caller, "RINGTIME_MS", &ms.to_string());
        self.ev_two(
            "DialState",
            Cls::Call,
            caller,
            callee,
            &[("DialStatus", "RINGING")],
        );
        if let Phase::Dialing { ringing, .. } = &mut self.calls[call].phase {
            *ringing = true;
        }
    }

    /// The callee answers: DialEnd ANSWER, the caller is answered if it was not, both
    /// enter a new bridge.
    fn callee_answer(&mut self, call: CallId) {
        let Phase::Dialing {
            caller: x,
            callee: y,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        self.set_state(y, ChanState::Up);
        let yname = self.chans[y].name.to_string();
        let ydial = self.chans[y].dialed.clone();
        self.varset(x, "DIALSTATUS", "ANSWER");
        self.varset(x, "DIALEDPEERNAME", &yname);
        self.varset(x, "DIALEDPEERNUMBER", &ydial);
        self.ev_two("DialEnd", Cls::Call, x, y, &[("DialStatus", "ANSWER")]);
        if self.chans[x].state != ChanState::Up {
            // app_dial answers the caller (asterisk16-calls.bin, call200).
            self.set_state(x, ChanState::Up);
        }
        self.cdr_disposition(x, y, "ANSWERED");
        let b = self.bridge_create();
        {
            let empty = self.empty.clone();
            self.chans[y].exten = empty;
        }
        self.newexten(y);
        self.bridge_enter(b, y);
        self.bridge_enter(b, x);
        self.bridgepeer_vars(y, x, true);
        self.calls[call].phase = Phase::Bridged {
            bridge: b,
            x,
            y,
            queue: None,
        };
        self.bump(call);
        self.plan_talk(call);
    }

    /// What happens during the conversation: a hold, a transfer, or just the talk.
    fn plan_talk(&mut self, call: CallId) {
        let c = &mut self.calls[call];
        let talk_s = c.talk_us as f64 / 1e6;
        let feature = if c.feature_done { None } else { c.scenario };
        match feature {
            Some(Scenario::HoldUnhold) => {
                let x_side = c.rng.chance(0.5);
                let at = talk_s * (0.2 + 0.3 * c.rng.f64());
                self.step_in(call, at, Step::Hold { x_side });
            }
            Some(Scenario::BlindTransfer) => {
                let at = talk_s * (0.3 + 0.4 * c.rng.f64());
                self.step_in(call, at, Step::BlindTransfer);
            }
            Some(Scenario::AttendedTransfer) => {
                let at = talk_s * (0.3 + 0.4 * c.rng.f64());
                self.step_in(call, at, Step::AttendedTransfer);
            }
            _ => {
                let x_side = c.caller_hangs_up;
                self.step_in(call, talk_s, Step::Hangup { x_side });
            }
        }
    }

    /// Dial ends without an answer (asterisk22-local.txt dialnoanswer / dialbusy): the
    /// leg hangs up, the caller's Dial returns and its dialplan hangs up.
    fn dial_failed(
        &mut self,
        call: CallId,
        status: &'static str,
        leg_cause: u32,
        disposition: &'static str,
    ) {
        let Phase::Dialing {
            caller: x,
            callee: y,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        self.ev_two("DialEnd", Cls::Call, x, y, &[("DialStatus", status)]);
        self.cdr_disposition(x, y, disposition);
        self.hangup(y, leg_cause);
        self.varset(x, "DIALSTATUS", status);
        let p = self.chans[x].priority + 1;
        self.exec(x, p, "Hangup", "");
        self.soft_hangup_request(x);
        self.rtp_qos(x);
        self.hangup(x, 16);
        self.post_cdrs(call, x);
        self.finish(call);
    }

    // ================================================================= queues

    /// `Queue(...)` (asterisk22-local.txt "queue" calls).
    pub(crate) fn queue_enter(&mut self, call: CallId, a: ChanId, q: usize, prio: u32) {
        let data = format!("{},t,,,300", self.queues[q].name);
        self.chans[a].pbx = true;
        self.exec(a, prio, "Queue", &data);
        for v in [
            "ANSWEREDTIME",
            "ANSWEREDTIME_MS",
            "DIALEDTIME",
            "DIALEDTIME_MS",
            "QUEUEWAIT",
            "QUEUEWAIT_MS",
        ] {
            self.varset(a, v, "");
        }
        if self.queues[q].callers.is_empty() {
            self.queue_devstate(q, "RINGING");
        }
        let pos = self.queues[q].callers.len() as u32 + 1;
        self.queues[q].callers.push(QueueEntry {
            call,
            chan: a,
            joined_us: self.now,
            original_pos: pos,
            retry_at_us: 0,
        });
        let qname = self.queues[q].name.clone();
        let mut nb = [0u8; 20];
        let pos_s = super::fmt::u64_str(&mut nb, pos as u64).to_string();
        self.ev_chan_with(
            "QueueCallerJoin",
            Cls::Agent,
            a,
            &[("Queue", &qname), ("Position", &pos_s), ("Count", &pos_s)],
        );
        let class = self.queues[q].moh_class.clone();
        self.moh_start(a, &class);
        self.calls[call].phase = Phase::Queued {
            caller: a,
            queue: q,
            ringing: Vec::new(),
            ring_start_us: self.now,
        };
        self.bump(call);
        // The queue's own timeout (Queue(...,300)) bounds every wait.
        let epoch = self.calls[call].epoch;
        let patience = if self.calls[call].rna_left == u32::MAX {
            let d = self.cfg.durations.patience;
            let p = d.sample(&mut self.calls[call].rng);
            self.calls[call]
                .spec
                .patience_s
                .unwrap_or(p)
                .clamp(0.5, 299.0)
        } else {
            300.0
        };
        let us = (patience * self.time_scale * 1e6) as u64;
        self.schedule(
            self.now + us.max(1),
            Task::Step {
                call,
                epoch,
                step: Step::Abandon,
            },
        );
        self.queue_dispatch(q);
    }

    fn member_available(&self, q: usize, m: usize) -> bool {
        let mem = &self.queues[q].members[m];
        !mem.paused && mem.busy_with.is_none() && self.endpoints[mem.endpoint].channels == 0
    }

    /// Offers free members to the waiting callers, in order (app_queue's is_our_turn).
    pub(crate) fn queue_dispatch(&mut self, q: usize) {
        let mut i = 0;
        while i < self.queues[q].callers.len() {
            let (call, a, retry_at) = {
                let e = &self.queues[q].callers[i];
                (e.call, e.chan, e.retry_at_us)
            };
            i += 1;
            let waiting = matches!(&self.calls[call].phase, Phase::Queued { ringing, .. } if ringing.is_empty());
            if !waiting || retry_at > self.now {
                continue;
            }
            let n = self.queues[q].members.len();
            let targets: Vec<usize> = match self.queues[q].strategy {
                Strategy::RingAll => (0..n).filter(|m| self.member_available(q, *m)).collect(),
                Strategy::RrMemory => {
                    let start = self.queues[q].rr_next;
                    (0..n)
                        .map(|k| (start + k) % n)
                        .find(|m| self.member_available(q, *m))
                        .into_iter()
                        .collect()
                }
            };
            if targets.is_empty() {
                break;
            }
            let before = self.enc.events;
            self.ring_members(call, a, q, &targets);
            self.calls[call].events += self.enc.events - before;
        }
    }

    /// Calls the members (AgentCalled, DialBegin per member).
    fn ring_members(&mut self, call: CallId, a: ChanId, q: usize, members: &[usize]) {
        let data = format!("{},t,,,300", self.queues[q].name);
        let qname = self.queues[q].name.clone();
        let mut legs = Vec::new();
        for &m in members {
            self.queues[q].members[m].busy_with = Some(call);
            let ep = self.queues[q].members[m].endpoint;
            let ctx = self.endpoints[ep].context.clone();
            let s: Arc<str> = Arc::from("s");
            let empty = self.empty.clone();
            let leg = self.new_channel(
                call,
                ep,
                ChanState::Down,
                ctx,
                s,
                empty.clone(),
                empty,
                false,
            );
            let id = self.endpoints[ep].id.clone();
            self.chans[leg].dialed = id.clone();
            self.exec(leg, 1, "AppQueue", "(Outgoing Line)");
            {
                let (n, nm) = (
                    self.chans[a].cid_num.clone(),
                    self.chans[a].cid_name.clone(),
                );
                let c = &mut self.chans[leg];
                c.cid_num = n;
                c.cid_name = nm;
            }
            self.ev_chan_with(
                "NewCallerid",
                Cls::Call,
                leg,
                &[("CID-CallingPres", CALLING_PRES)],
            );
            self.varset(leg, "DIALEDPEERNUMBER", &id);
            self.cdr_dial(a, leg, "Queue", &data);
            let (iface, mname) = (
                self.queues[q].members[m].interface.clone(),
                self.queues[q].members[m].name.clone(),
            );
            self.ev_two(
                "AgentCalled",
                Cls::Agent,
                a,
                leg,
                &[
                    ("Queue", &qname),
                    ("Interface", &iface),
                    ("MemberName", &mname),
                ],
            );
            self.ev_two("DialBegin", Cls::Call, a, leg, &[("DialString", &id)]);
            legs.push((leg, m));
        }
        if let Phase::Queued {
            ringing,
            ring_start_us,
            ..
        } = &mut self.calls[call].phase
        {
            ringing.extend(legs.iter().copied());
            *ring_start_us = self.now;
        }
        for &(leg, _) in &legs {
            let setup = 0.05 + 0.25 * self.calls[call].rng.f64();
            self.step_in(call, setup, Step::MemberRinging(leg));
        }
        let timeout = self.queues[q].member_timeout_s as f64;
        if self.calls[call].rna_left > 0 {
            self.step_in(call, timeout, Step::MemberTimeout);
        } else {
            let k = self.calls[call].rng.below(legs.len() as u64) as usize;
            let d = self.cfg.durations.agent_ring;
            let t = d.sample(&mut self.calls[call].rng);
            let t = self.calls[call]
                .spec
                .ring_s
                .unwrap_or(t)
                .clamp(0.5, timeout - 0.5);
            self.step_in(call, t, Step::MemberAnswer(legs[k].0));
        }
    }

    /// The first indication from a member's phone: app_queue moves the leg to the
    /// caller's extension and sends it the caller as connected line.
    fn member_first_indication(&mut self, a: ChanId, leg: ChanId) {
        if self.chans[leg].conn_num.is_empty() {
            let ex = self.chans[a].exten.clone();
            self.chans[leg].exten = ex;
            self.newexten(leg);
            let (n, nm) = (
                self.chans[a].cid_num.clone(),
                self.chans[a].cid_name.clone(),
            );
            let c = &mut self.chans[leg];
            c.conn_num = n;
            c.conn_name = nm;
            self.ev_chan("NewConnectedLine", Cls::Call, leg);
        }
    }

    fn member_ringing(&mut self, call: CallId, leg: ChanId) {
        let Phase::Queued {
            caller: a,
            ref ringing,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        if !ringing.iter().any(|(l, _)| *l == leg) || self.chans[leg].state != ChanState::Down {
            return;
        }
        self.set_state(leg, ChanState::Ringing);
        self.member_first_indication(a, leg);
        self.ev_two("DialState", Cls::Call, a, leg, &[("DialStatus", "RINGING")]);
    }

    /// A member answers (asterisk22-local.txt queue calls; cancelled members get two
    /// DialEnd CANCEL each, as every capture shows).
    fn member_answer(&mut self, call: CallId, leg: ChanId) {
        let Phase::Queued {
            caller: a,
            queue: q,
            ref ringing,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        let Some(&(_, m)) = ringing.iter().find(|(l, _)| *l == leg) else {
            return;
        };
        let others: Vec<(ChanId, usize)> =
            ringing.iter().copied().filter(|(l, _)| *l != leg).collect();
        self.set_state(leg, ChanState::Up);
        self.member_first_indication(a, leg);
        self.ev_two("DialEnd", Cls::Call, a, leg, &[("DialStatus", "ANSWER")]);
        for &(o, _) in &others {
            self.ev_two("DialEnd", Cls::Call, a, o, &[("DialStatus", "CANCEL")]);
        }
        for &(o, _) in &others {
            self.ev_two("DialEnd", Cls::Call, a, o, &[("DialStatus", "CANCEL")]);
        }
        for &(o, om) in &others {
            self.hangup(o, 26);
            self.queues[q].members[om].busy_with = None;
        }
        self.moh_stop(a);
        let (entry_pos, joined, opos) = self.queue_remove_caller(q, call);
        let holdtime = (self.now - joined) / 1_000_000;
        let ringtime = (self.now - self.chans[leg].created_us) / 1_000_000;
        self.queue_vars_connect(q, m, a, leg, holdtime, opos);
        self.queue_leave_event(q, a, entry_pos);
        self.varset(a, "QUEUEPOSITION", &entry_pos.to_string());
        self.varset(a, "QUEUEWAIT", &holdtime.to_string());
        self.varset(a, "QUEUEWAIT_MS", &(holdtime * 1000).to_string());
        let (qname, iface, mname) = {
            let mem = &self.queues[q].members[m];
            (
                self.queues[q].name.clone(),
                mem.interface.clone(),
                mem.name.clone(),
            )
        };
        self.ev_two(
            "AgentConnect",
            Cls::Agent,
            a,
            leg,
            &[
                ("Queue", &qname),
                ("Interface", &iface),
                ("MemberName", &mname),
                ("HoldTime", &holdtime.to_string()),
                ("RingTime", &ringtime.to_string()),
            ],
        );
        self.cdr_disposition(a, leg, "ANSWERED");
        self.queues[q].members[m].in_call = true;
        {
            let qu = &mut self.queues[q];
            qu.holdtime = (qu.holdtime * 3 + holdtime) / 4;
        }
        let b = self.bridge_create();
        self.bridge_enter(b, leg);
        self.bridge_enter(b, a);
        self.bridgepeer_vars(leg, a, true);
        let link = QueueLink {
            queue: q,
            member: m,
            joined_us: joined,
            connected_us: self.now,
        };
        self.calls[call].phase = Phase::Bridged {
            bridge: b,
            x: a,
            y: leg,
            queue: Some(link),
        };
        self.bump(call);
        if self.queues[q].strategy == Strategy::RrMemory {
            self.queues[q].rr_next = (m + 1) % self.queues[q].members.len().max(1);
        }
        if !others.is_empty() {
            self.schedule(self.now + 1_000_000, Task::QueueDispatch { queue: q });
        }
        self.plan_talk(call);
    }

    /// The member timeout expired: AgentRingNoAnswer and DialEnd NOANSWER for every
    /// leg (app_queue wait_for_answer), the legs hang up, the caller retries later.
    fn member_timeout(&mut self, call: CallId) {
        let Phase::Queued {
            caller: a,
            queue: q,
            ref ringing,
            ring_start_us,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        let legs = ringing.clone();
        if legs.is_empty() {
            return;
        }
        let qname = self.queues[q].name.clone();
        let ring_ms = ((self.now - ring_start_us) / 1000).to_string();
        for &(leg, m) in &legs {
            let (iface, mname) = (
                self.queues[q].members[m].interface.clone(),
                self.queues[q].members[m].name.clone(),
            );
            self.ev_two(
                "AgentRingNoAnswer",
                Cls::Agent,
                a,
                leg,
                &[
                    ("Queue", &qname),
                    ("Interface", &iface),
                    ("MemberName", &mname),
                    ("RingTime", &ring_ms),
                ],
            );
        }
        for &(leg, _) in &legs {
            self.ev_two("DialEnd", Cls::Call, a, leg, &[("DialStatus", "NOANSWER")]);
        }
        for &(leg, m) in &legs {
            self.hangup(leg, 0);
            self.queues[q].members[m].busy_with = None;
        }
        let n = self.queues[q].members.len().max(1);
        if self.queues[q].strategy == Strategy::RrMemory {
            self.queues[q].rr_next = (legs[legs.len() - 1].1 + 1) % n;
        }
        {
            let c = &mut self.calls[call];
            if c.rna_left != u32::MAX {
                c.rna_left = c.rna_left.saturating_sub(1);
            }
            if let Phase::Queued { ringing, .. } = &mut c.phase {
                ringing.clear();
            }
        }
        let retry_us = (self.queues[q].retry_s as f64 * self.time_scale * 1e6) as u64;
        if let Some(e) = self.queues[q].callers.iter_mut().find(|e| e.call == call) {
            e.retry_at_us = self.now + retry_us;
        }
        self.schedule(self.now + retry_us.max(1), Task::QueueDispatch { queue: q });
    }

    /// Removes the call from the queue; returns (position, joined, original position).
    pub(super) fn queue_remove_caller(&mut self, q: usize, call: CallId) -> (u32, SimTime, u32) {
        let qu = &mut self.queues[q];
        let i = qu
            .callers
            .iter()
            .position(|e| e.call == call)
            .expect("caller in queue");
        let e = qu.callers.remove(i);
        ((i + 1) as u32, e.joined_us, e.original_pos)
    }

    /// `QueueCallerLeave` (and the queue's device state once it is empty).
    pub(super) fn queue_leave_event(&mut self, q: usize, a: ChanId, pos: u32) {
        if self.queues[q].callers.is_empty() {
            self.queue_devstate(q, "NOT_INUSE");
        }
        let qname = self.queues[q].name.clone();
        let count = self.queues[q].callers.len().to_string();
        self.ev_chan_with(
            "QueueCallerLeave",
            Cls::Agent,
            a,
            &[
                ("Queue", &qname),
                ("Position", &pos.to_string()),
                ("Count", &count),
            ],
        );
    }

    /// The variables app_queue sets when a member answers (noise).
    fn queue_vars_connect(
        &mut self,
        q: usize,
        m: usize,
        a: ChanId,
        leg: ChanId,
        holdtime: u64,
        opos: u32,
    ) {
        if !self.noise {
            return;
        }
        let mem = self.queues[q].members[m].clone();
        let member_vars = [
            ("MEMBERINTERFACE", mem.interface.to_string()),
            ("MEMBERNAME", mem.name.to_string()),
            ("MEMBERCALLS", mem.calls_taken.to_string()),
            ("MEMBERLASTCALL", mem.last_call.to_string()),
            ("MEMBERPENALTY", mem.penalty.to_string()),
            (
                "MEMBERDYNAMIC",
                if mem.dynamic { "1" } else { "0" }.to_string(),
            ),
            ("MEMBERREALTIME", "0".to_string()),
        ];
        for ch in [a, leg] {
            for (k, v) in &member_vars {
                self.varset(ch, k, v);
            }
        }
        for ch in [a, leg] {
            self.varset(ch, "QEHOLDTIME", &holdtime.to_string());
            self.varset(ch, "QEORIGINALPOS", &opos.to_string());
        }
        self.queue_vars(q, a);
        self.queue_vars(q, leg);
    }

    /// QUEUENAME ... QUEUESRVLEVELPERF (set_queue_variables; noise).
    fn queue_vars(&mut self, q: usize, ch: ChanId) {
        if !self.noise {
            return;
        }
        let qu = &self.queues[q];
        let vars = [
            ("QUEUENAME", qu.name.to_string()),
            ("QUEUEMAX", "0".to_string()),
            ("QUEUESTRATEGY", qu.strategy.name().to_string()),
            ("QUEUECALLS", qu.callers.len().to_string()),
            ("QUEUEHOLDTIME", qu.holdtime.to_string()),
            ("QUEUETALKTIME", qu.talktime.to_string()),
            ("QUEUECOMPLETED", qu.completed.to_string()),
            ("QUEUEABANDONED", qu.abandoned.to_string()),
            ("QUEUESRVLEVEL", "0".to_string()),
            ("QUEUESRVLEVELPERF", "0.0".to_string()),
        ];
        for (k, v) in &vars {
            self.varset(ch, k, v);
        }
    }

    /// The waiting caller hangs up (asterisk22-local.txt, the abandoned queue call), or
    /// the queue's own timeout expires (no abandon event, QueueCallerLeave only).
    fn queue_caller_gone(&mut self, call: CallId, origin: Option<Origin>) {
        let Phase::Queued {
            caller: a,
            queue: q,
            ref ringing,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        let legs = ringing.clone();
        match origin {
            Some(Origin::Phone) => {
                self.rtp_qos(a);
                self.hangup_request(a, None);
            }
            Some(Origin::Action(c)) => self.chans[a].hangup_cause = Some(c),
            None => {}
        }
        self.moh_stop(a);
        for &(leg, _) in &legs {
            self.ev_two("DialEnd", Cls::Call, a, leg, &[("DialStatus", "CANCEL")]);
        }
        for &(leg, _) in &legs {
            self.ev_two("DialEnd", Cls::Call, a, leg, &[("DialStatus", "CANCEL")]);
        }
        for &(leg, m) in &legs {
            self.hangup(leg, 0);
            self.queues[q].members[m].busy_with = None;
        }
        let (pos, joined, opos) = self.queue_remove_caller(q, call);
        let hold = (self.now - joined) / 1_000_000;
        self.varset(a, "QUEUEWAIT", &hold.to_string());
        self.varset(a, "QUEUEWAIT_MS", &(hold * 1000).to_string());
        if origin.is_some() {
            self.varset(a, "ABANDONED", "TRUE");
            self.queues[q].abandoned += 1;
            self.queue_vars(q, a);
            let qname = self.queues[q].name.clone();
            self.ev_chan_with(
                "QueueCallerAbandon",
                Cls::Agent,
                a,
                &[
                    ("Queue", &qname),
                    ("Position", &pos.to_string()),
                    ("OriginalPosition", &opos.to_string()),
                    ("HoldTime", &hold.to_string()),
                ],
            );
        }
        self.queue_leave_event(q, a, pos);
        self.varset(a, "QUEUEPOSITION", &pos.to_string());
        if origin.is_none() {
            self.varset(a, "QUEUESTATUS", "TIMEOUT");
            let p = self.chans[a].priority + 1;
            self.exec(a, p, "Hangup", "");
        }
        self.soft_hangup_request(a);
        let cause = if origin == Some(Origin::Phone) { 0 } else { 16 };
        self.hangup(a, cause);
        self.post_cdrs(call, a);
        if !legs.is_empty() {
            self.schedule(self.now + 1_000_000, Task::QueueDispatch { queue: q });
        }
        self.finish(call);
    }

    // ================================================================= media features

    pub(crate) fn moh_start(&mut self, ch: ChanId, class: &Arc<str>) {
        self.chans[ch].moh = Some(class.clone());
        self.ev_chan_with("MusicOnHoldStart", Cls::Call, ch, &[("Class", class)]);
    }

    pub(crate) fn moh_stop(&mut self, ch: ChanId) {
        if self.chans[ch].moh.take().is_some() {
            self.ev_chan("MusicOnHoldStop", Cls::Call, ch);
        }
    }

    /// MixMonitor (the application at `prio`, or the action when `prio` is None).
    pub(crate) fn mixmonitor_start(&mut self, ch: ChanId, prio: u32, file: Option<&str>) {
        let file = match file {
            Some(f) if f.starts_with('/') => f.to_string(),
            Some(f) => format!("/var/spool/asterisk/monitor/{f}"),
            None => format!(
                "/var/spool/asterisk/monitor/{}.wav",
                self.chans[ch].uniqueid
            ),
        };
        if prio > 0 {
            let data = format!("{},b", file.rsplit('/').next().unwrap_or(&file));
            self.exec(ch, prio, "MixMonitor", &data);
        }
        self.varset(ch, "MIXMONITOR_FILENAME", &file);
        self.chans[ch].mixmonitor = true;
        self.ev_chan("MixMonitorStart", Cls::Call, ch);
    }

    pub(crate) fn mixmonitor_stop(&mut self, ch: ChanId) {
        self.chans[ch].mixmonitor = false;
        self.ev_chan("MixMonitorStop", Cls::Call, ch);
    }

    /// One party holds: `Hold` on the holder, music to the other (asterisk22-local.txt
    /// attended transfers: Hold, then MusicOnHoldStart on the peer).
    pub(crate) fn set_holding(&mut self, ch: ChanId, on: bool) {
        let (ep, st, was) = (
            self.chans[ch].endpoint,
            self.chans[ch].state,
            self.chans[ch].holding,
        );
        if was != on {
            self.ep_count(ep, st, was, -1);
            self.ep_count(ep, st, on, 1);
            self.chans[ch].holding = on;
        }
    }

    pub(crate) fn hold(&mut self, holder: ChanId, peer: ChanId) {
        self.set_holding(holder, true);
        self.ev_chan("Hold", Cls::Call, holder);
        let ep = self.chans[holder].endpoint;
        self.devstate_update(ep);
        let class = self.moh_default.clone();
        self.moh_start(peer, &class);
    }

    pub(crate) fn unhold(&mut self, holder: ChanId, peer: Option<ChanId>) {
        let was = self.chans[holder].holding;
        self.set_holding(holder, false);
        self.ev_chan("Unhold", Cls::Call, holder);
        if was {
            let ep = self.chans[holder].endpoint;
            self.devstate_update(ep);
        }
        if let Some(p) = peer {
            self.moh_stop(p);
        }
    }

    // ================================================================= steps

    pub(crate) fn run_step(&mut self, call: CallId, step: Step) {
        match step {
            Step::CalleeRinging => self.callee_ringing(call),
            Step::CalleeAnswer => self.callee_answer(call),
            Step::DialTimeout => self.dial_failed(call, "NOANSWER", 0, "NO ANSWER"),
            Step::CalleeBusy => self.dial_failed(call, "BUSY", 17, "BUSY"),
            Step::MemberRinging(leg) => self.member_ringing(call, leg),
            Step::MemberAnswer(leg) => self.member_answer(call, leg),
            Step::MemberTimeout => self.member_timeout(call),
            Step::Abandon => {
                let origin = if self.calls[call].rna_left == u32::MAX {
                    Some(Origin::Phone)
                } else {
                    None
                };
                self.queue_caller_gone(call, origin);
            }
            Step::Hangup { x_side } => {
                if let Phase::Bridged { x, y, .. } = self.calls[call].phase {
                    let h = if x_side { x } else { y };
                    self.chan_hangup(h, Origin::Phone);
                }
            }
            Step::Hold { x_side } => {
                if let Phase::Bridged { x, y, .. } = self.calls[call].phase {
                    let (h, p) = if x_side { (x, y) } else { (y, x) };
                    self.hold(h, p);
                    let d = self.cfg.durations.hold;
                    let t = d.sample(&mut self.calls[call].rng).max(1.0);
                    self.step_in(call, t, Step::Unhold { x_side });
                }
            }
            Step::Unhold { x_side } => {
                if let Phase::Bridged { x, y, .. } = self.calls[call].phase {
                    let (h, p) = if x_side { (x, y) } else { (y, x) };
                    self.unhold(h, Some(p));
                    let c = &mut self.calls[call];
                    c.feature_done = true;
                    let rest = (c.talk_us as f64 / 1e6) * (0.3 + 0.5 * c.rng.f64());
                    let x_side = c.caller_hangs_up;
                    self.step_in(call, rest.max(1.0), Step::Hangup { x_side });
                }
            }
            Step::BlindTransfer => {
                if let Phase::Bridged { x, .. } = self.calls[call].phase {
                    let t = self.calls[call].transfer_to.unwrap_or(0);
                    let ctx = self.chans[x].context.clone();
                    let exten = self.endpoints[t].id.clone();
                    self.blind_transfer(x, &ctx, &exten, true);
                }
            }
            Step::AttendedTransfer => {
                if let Phase::Bridged { x, .. } = self.calls[call].phase {
                    let t = self.calls[call].transfer_to.unwrap_or(0);
                    let exten = self.endpoints[t].id.clone();
                    self.atxfer_start(x, None, &exten);
                }
            }
            Step::TargetRinging => self.atxfer_target_ringing(call),
            Step::TargetAnswer => self.atxfer_target_answer(call),
            Step::CompleteTransfer => {
                if let Phase::Consult { transferer, .. } = self.calls[call].phase {
                    self.chan_hangup(transferer, Origin::Phone);
                }
            }
            Step::AppHangup(ch) => {
                if self.chans.get(ch).is_some_and(|c| c.call == call) {
                    self.chan_hangup(ch, Origin::Phone);
                }
            }
            Step::OrigRinging => self.orig_ringing(call),
            Step::OrigAnswer => self.orig_answer(call),
            Step::OrigBusy => self.orig_fail(call, 5),
            Step::OrigTimeout => self.orig_fail(call, 3),
        }
    }

    /// After a call lost its last channel.
    pub(crate) fn finish(&mut self, call: CallId) {
        if let Some(c) = self.calls.get_mut(call)
            && c.chans.is_empty()
        {
            c.phase = Phase::Done;
        }
        self.maybe_end_call(call);
    }

    // ================================================================= hangups

    /// A channel is hung up (its phone or the Hangup action): the rest of its call
    /// follows with the events Asterisk emits in that situation.
    pub(crate) fn chan_hangup(&mut self, ch: ChanId, origin: Origin) {
        let call = self.chans[ch].call;
        self.bump(call);
        let phase = self.calls[call].phase.clone();
        match phase {
            Phase::Bridged {
                bridge,
                x,
                y,
                queue,
            } if ch == x || ch == y => {
                let other = if ch == x { y } else { x };
                self.bridged_hangup(call, bridge, ch, other, origin, queue);
            }
            Phase::Dialing { caller, callee, .. } if ch == caller => {
                // The caller gives up while the callee rings.
                self.hangup_origin_events(ch, origin);
                self.ev_two(
                    "DialEnd",
                    Cls::Call,
                    caller,
                    callee,
                    &[("DialStatus", "CANCEL")],
                );
                self.hangup(callee, 0);
                self.varset(caller, "DIALSTATUS", "CANCEL");
                self.soft_hangup_request(caller);
                self.hangup(caller, origin_cause(origin));
                self.post_cdrs(call, caller);
                self.finish(call);
            }
            Phase::Dialing { caller, callee, .. } if ch == callee => {
                // The ringing leg goes away (declined / Hangup action).
                let cause = match origin {
                    Origin::Phone => 21,
                    Origin::Action(c) => c,
                };
                self.chans[callee].hangup_cause = Some(cause);
                self.calls[call].phase = Phase::Dialing {
                    caller,
                    callee,
                    ringing: true,
                };
                let status = dial_status_for_cause(cause);
                let disp = if status == "BUSY" {
                    "BUSY"
                } else {
                    "NO ANSWER"
                };
                self.dial_failed(call, status, cause, disp);
            }
            Phase::Queued {
                caller,
                ref ringing,
                queue,
                ..
            } => {
                if ch == caller {
                    self.queue_caller_gone(call, Some(origin));
                } else if let Some(&(leg, m)) = ringing.iter().find(|(l, _)| *l == ch) {
                    // One member's leg goes away before answering.
                    let cause = origin_cause(origin);
                    self.ev_two(
                        "DialEnd",
                        Cls::Call,
                        caller,
                        leg,
                        &[("DialStatus", dial_status_for_cause(cause))],
                    );
                    self.hangup(leg, cause);
                    self.queues[queue].members[m].busy_with = None;
                    if let Phase::Queued { ringing, .. } = &mut self.calls[call].phase {
                        ringing.retain(|(l, _)| *l != leg);
                        if ringing.is_empty() {
                            let retry = self.queues[queue].retry_s as u64 * 1_000_000;
                            self.schedule(self.now + retry, Task::QueueDispatch { queue });
                        }
                    }
                    if let Phase::Queued { ringing, .. } = &self.calls[call].phase
                        && !ringing.is_empty()
                    {
                        // Keep the remaining legs' pending steps alive.
                        self.replan_queue_ring(call);
                    }
                }
            }
            Phase::Consult {
                orig,
                consult,
                transferer,
                transferee,
                target,
                target_up,
                queue,
            } => {
                if ch == transferer && target_up {
                    self.atxfer_complete(
                        call, orig, consult, transferer, transferee, target, origin, queue,
                    );
                } else {
                    self.teardown_all(call, ch, origin);
                }
            }
            Phase::App { chan } if chan == ch => {
                self.hangup_origin_events(ch, origin);
                self.moh_stop(ch);
                self.soft_hangup_request(ch);
                self.rtp_qos(ch);
                self.hangup(ch, origin_cause(origin));
                self.post_cdrs(call, ch);
                self.finish(call);
            }
            Phase::Originating { chan, ref plan } if chan == ch => {
                let plan = plan.clone();
                self.originate_response_failure(&plan, 0);
                self.hangup(ch, origin_cause(origin));
                self.post_cdrs(call, ch);
                self.finish(call);
            }
            _ => self.teardown_all(call, ch, origin),
        }
    }

    /// Keeps the queue call's remaining ringing legs going after one leg left.
    fn replan_queue_ring(&mut self, call: CallId) {
        let Phase::Queued {
            queue: q,
            ref ringing,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        let legs = ringing.clone();
        let timeout = self.queues[q].member_timeout_s as f64;
        for &(leg, _) in &legs {
            if self.chans[leg].state == ChanState::Down {
                self.step_in(call, 0.1, Step::MemberRinging(leg));
            }
        }
        if self.calls[call].rna_left > 0 {
            self.step_in(call, timeout, Step::MemberTimeout);
        } else {
            self.step_in(call, 2.0, Step::MemberAnswer(legs[0].0));
        }
    }

    /// `HangupRequest` for a phone hangup (with chan_pjsip's RTP statistics first);
    /// the Hangup action only records its cause.
    fn hangup_origin_events(&mut self, ch: ChanId, origin: Origin) {
        match origin {
            Origin::Phone => {
                self.rtp_qos(ch);
                self.hangup_request(ch, None);
            }
            Origin::Action(c) => self.chans[ch].hangup_cause = Some(c),
        }
    }

    /// A bridged two-party call loses `h`. Orders: the dialplan side leaving
    /// (asterisk22-local.txt "dial"/"queue" calls whose caller hangs up); the dialed side
    /// leaving with a dialplan peer (asterisk22-sip-systemname.txt queue call, agent
    /// hangs up); neither side running dialplan (the end of an attended transfer).
    fn bridged_hangup(
        &mut self,
        call: CallId,
        bridge: BridgeId,
        h: ChanId,
        o: ChanId,
        origin: Origin,
        queue: Option<QueueLink>,
    ) {
        self.hangup_origin_events(h, origin);
        if let Some(link) = queue {
            let Phase::Bridged { x, y, .. } = self.calls[call].phase else {
                unreachable!()
            };
            let reason = if h == x { "caller" } else { "agent" };
            self.agent_complete(link, x, y, reason);
        }
        self.bridgepeer_vars(h, o, false);
        let h_pbx = self.chans[h].pbx;
        let o_pbx = self.chans[o].pbx;
        let hcause = origin_cause(origin);
        self.bridge_leave(h);
        if h_pbx {
            self.bridge_leave(o);
            self.bridge_destroy(bridge);
            self.dialplan_vars_after(h, queue);
            self.soft_hangup_request(h);
            self.moh_stop(o);
            self.rtp_qos(o);
            self.hangup(o, 16);
            self.moh_stop(h);
            self.rtp_qos(h);
            self.hangup(h, hcause);
            self.post_cdrs(call, h);
            self.post_cdrs(call, o);
        } else if o_pbx {
            self.bridge_leave(o);
            self.bridge_destroy(bridge);
            self.moh_stop(h);
            self.hangup(h, hcause);
            self.dialplan_vars_after(o, queue);
            let p = self.chans[o].priority + 1;
            self.exec(o, p, "Hangup", "");
            self.soft_hangup_request(o);
            self.moh_stop(o);
            self.rtp_qos(o);
            self.hangup(o, 16);
            self.post_cdrs(call, o);
            self.post_cdrs(call, h);
        } else {
            self.moh_stop(h);
            self.hangup(h, hcause);
            self.bridge_leave(o);
            self.bridge_destroy(bridge);
            self.moh_stop(o);
            self.rtp_qos(o);
            self.hangup(o, 16);
            self.post_cdrs(call, h);
            self.post_cdrs(call, o);
        }
        if let Some(link) = queue {
            self.queue_call_done(link);
        }
        self.finish(call);
    }

    /// Whether `ch` is the queue caller of the link's queue call (else the agent leg).
    fn queue_is_caller(&self, link: QueueLink, ch: ChanId) -> bool {
        self.queues[link.queue]
            .members
            .get(link.member)
            .is_none_or(|m| m.endpoint != self.chans[ch].endpoint)
            || self.chans[ch].pbx
    }

    /// AgentComplete (asterisk22-local.txt: right after the HangupRequest).
    fn agent_complete(&mut self, link: QueueLink, x: ChanId, y: ChanId, reason: &str) {
        let hold = (link.connected_us - link.joined_us) / 1_000_000;
        let talk = (self.now - link.connected_us) / 1_000_000;
        let (qname, iface, mname) = {
            let mem = &self.queues[link.queue].members[link.member];
            (
                self.queues[link.queue].name.clone(),
                mem.interface.clone(),
                mem.name.clone(),
            )
        };
        self.ev_two(
            "AgentComplete",
            Cls::Agent,
            x,
            y,
            &[
                ("Queue", &qname),
                ("Interface", &iface),
                ("MemberName", &mname),
                ("HoldTime", &hold.to_string()),
                ("TalkTime", &talk.to_string()),
                ("Reason", reason),
            ],
        );
        let qu = &mut self.queues[link.queue];
        qu.completed += 1;
        qu.talktime = (qu.talktime * 3 + talk) / 4;
        let mem = &mut qu.members[link.member];
        mem.calls_taken += 1;
        mem.last_call = self.now / 1_000_000;
        mem.in_call = false;
    }

    /// The member is free again: its next QueueMemberStatus shows the call counted.
    fn queue_call_done(&mut self, link: QueueLink) {
        let q = link.queue;
        if let Some(mem) = self.queues[q].members.get_mut(link.member) {
            mem.in_call = false;
            mem.busy_with = None;
        }
        self.schedule(self.now + 1_000_000, Task::QueueDispatch { queue: q });
    }

    /// The variables app_dial / app_queue set on the dialplan side when the bridge ends.
    fn dialplan_vars_after(&mut self, x: ChanId, queue: Option<QueueLink>) {
        if !self.noise {
            return;
        }
        let answered = self.chans[x].answered_us.unwrap_or(self.now);
        let ans_ms = (self.now - answered) / 1000;
        let dial_ms = (self.now - self.chans[x].created_us) / 1000;
        if let Some(link) = queue {
            self.queue_vars(link.queue, x);
        }
        self.varset(x, "ANSWEREDTIME", &(ans_ms / 1000).to_string());
        self.varset(x, "ANSWEREDTIME_MS", &ans_ms.to_string());
        self.varset(x, "DIALEDTIME", &(dial_ms / 1000).to_string());
        self.varset(x, "DIALEDTIME_MS", &dial_ms.to_string());
        if queue.is_none() {
            self.varset(x, "DIALSTATUS", "ANSWER");
        }
    }

    /// Fallback: every channel and bridge of the call goes (bridges empty first).
    pub(crate) fn teardown_all(&mut self, call: CallId, first: ChanId, origin: Origin) {
        self.hangup_origin_events(first, origin);
        let chans = self.calls[call].chans.clone();
        let mut bridges: Vec<BridgeId> = Vec::new();
        for &c in std::iter::once(&first).chain(chans.iter()) {
            if let Some(b) = self.chans.get(c).and_then(|c| c.bridge) {
                self.bridge_leave(c);
                if !bridges.contains(&b) {
                    bridges.push(b);
                }
            }
        }
        for b in bridges {
            if self.bridges.get(b).is_some_and(|br| br.channels.is_empty()) {
                self.bridge_destroy(b);
            }
        }
        // Queue bookkeeping.
        let phase = self.calls[call].phase.clone();
        match phase {
            Phase::Queued {
                queue, ref ringing, ..
            } => {
                for &(_, m) in ringing {
                    self.queues[queue].members[m].busy_with = None;
                }
                if self.queues[queue].callers.iter().any(|e| e.call == call) {
                    let (pos, _, _) = self.queue_remove_caller(queue, call);
                    let a = self.queue_caller_chan(call, &chans);
                    if let Some(a) = a {
                        self.queue_leave_event(queue, a, pos);
                    }
                }
            }
            Phase::Bridged {
                queue: Some(link), ..
            }
            | Phase::Consult {
                queue: Some(link), ..
            } => self.queue_call_done(link),
            _ => {}
        }
        let order: Vec<ChanId> = std::iter::once(first)
            .chain(chans.into_iter().filter(|c| *c != first))
            .collect();
        for c in order {
            if self.chans.get(c).is_none() {
                continue;
            }
            self.moh_stop(c);
            let cause = if c == first { origin_cause(origin) } else { 16 };
            if self.chans[c].pbx && c != first {
                self.soft_hangup_request(c);
            }
            self.hangup(c, cause);
            self.post_cdrs(call, c);
        }
        self.calls[call].cdrs.clear();
        self.finish(call);
    }

    fn queue_caller_chan(&self, call: CallId, chans: &[ChanId]) -> Option<ChanId> {
        match self.calls[call].phase {
            Phase::Queued { caller, .. } => Some(caller),
            _ => chans.first().copied(),
        }
    }

    // ================================================================= transfers

    /// Blind transfer of the party bridged with `transferer` to `exten`
    /// (asterisk22-local.txt BlindTransfer calls). Returns false when the channel is not
    /// in a two-party bridge (the action answers "Transfer invalid").
    pub(crate) fn blind_transfer(
        &mut self,
        transferer: ChanId,
        context: &Arc<str>,
        exten: &Arc<str>,
        external: bool,
    ) -> bool {
        let call = self.chans[transferer].call;
        let Phase::Bridged {
            bridge,
            x,
            y,
            queue,
        } = self.calls[call].phase
        else {
            return false;
        };
        if transferer != x && transferer != y {
            return false;
        }
        let transferee = if transferer == x { y } else { x };
        self.bump(call);
        self.unhold(transferer, None);
        let (tn, en) = (
            self.chans[transferer].name.to_string(),
            self.chans[transferee].name.to_string(),
        );
        self.varset(transferer, "BLINDTRANSFER", &en);
        self.varset(transferee, "BLINDTRANSFER", &tn);
        self.bridgepeer_vars(transferer, transferee, false);
        {
            let br = &self.bridges[bridge];
            let (c1, c2) = (&self.chans[transferer], &self.chans[transferee]);
            let e = self.enc.event("BlindTransfer", Cls::Call, |w| {
                w.f("Result", "Success");
                w.chan(P::Transferer, c1);
                w.chan(P::Transferee, c2);
                w.bridge(BP::None, br, 2);
                w.f("IsExternal", if external { "Yes" } else { "No" })
                    .f("Context", context)
                    .f("Extension", exten);
            });
            self.push(e);
        }
        if let Some(link) = queue {
            self.agent_complete(link, x, y, "transfer");
        }
        self.bridge_leave(transferer);
        // The transferee gets a PBX at the new location.
        self.set_location(transferee, context, exten, 1);
        self.chans[transferee].pbx = true;
        self.newexten(transferee);
        self.bridge_leave(transferee);
        self.bridge_destroy(bridge);
        if self.chans[transferer].pbx {
            let p = self.chans[transferer].priority + 1;
            self.exec(transferer, p, "Hangup", "");
            self.soft_hangup_request(transferer);
        }
        self.rtp_qos(transferer);
        self.hangup(transferer, 16);
        self.post_cdrs(call, transferer);
        if let Some(link) = queue {
            self.queue_call_done(link);
        }
        self.calls[call].feature_done = true;
        let dest = self.resolve(context, exten);
        self.run_location(call, transferee, dest);
        true
    }

    /// Starts an attended transfer from `transferer` (the Atxfer action's path: the
    /// feature code arrives as DTMF; asterisk22-local.txt Atxfer calls).
    pub(crate) fn atxfer_start(
        &mut self,
        transferer: ChanId,
        context: Option<&str>,
        exten: &str,
    ) -> bool {
        let call = self.chans[transferer].call;
        let Phase::Bridged {
            bridge,
            x,
            y,
            queue,
        } = self.calls[call].phase
        else {
            self.dtmf(transferer, "*2");
            return false;
        };
        let transferee = if transferer == x { y } else { x };
        let target_ep = self
            .endpoints
            .iter()
            .position(|e| !e.is_trunk && &*e.id == exten);
        if let Some(ctx) = context {
            self.varset(transferer, "TRANSFER_CONTEXT", ctx);
        }
        self.dtmf(transferer, "*2");
        self.hold(transferer, transferee);
        self.dtmf(transferer, exten);
        let Some(tep) = target_ep else {
            // Unknown extension: the feature gives up; the call goes on.
            self.unhold(transferer, Some(transferee));
            return true;
        };
        self.bump(call);
        let ctx = self.endpoints[tep].context.clone();
        let s: Arc<str> = Arc::from("s");
        let empty = self.empty.clone();
        let target = self.new_channel(
            call,
            tep,
            ChanState::Down,
            ctx,
            s,
            empty.clone(),
            empty,
            false,
        );
        let tn = self.chans[transferer].name.to_string();
        self.varset(target, "TRANSFERERNAME", &tn);
        self.varset(target, "ATTENDEDTRANSFER", &tn);
        let consult = self.bridge_create();
        self.cdr_ensure(target, "AppDial2", "(Outgoing Line)");
        self.calls[call].phase = Phase::Consult {
            orig: bridge,
            consult,
            transferer,
            transferee,
            target,
            target_up: false,
            queue,
        };
        let d = 0.1 + 0.2 * self.calls[call].rng.f64();
        self.step_in(call, d, Step::TargetRinging);
        true
    }

    fn atxfer_target_ringing(&mut self, call: CallId) {
        let Phase::Consult {
            consult,
            transferer,
            target,
            target_up: false,
            ..
        } = self.calls[call].phase
        else {
            return;
        };
        self.set_state(target, ChanState::Ringing);
        {
            let (n, nm) = (
                self.chans[transferer].cid_num.clone(),
                self.chans[transferer].cid_name.clone(),
            );
            let c = &mut self.chans[target];
            c.conn_num = n;
            c.conn_name = nm;
        }
        self.ev_chan("NewConnectedLine", Cls::Call, target);
        self.bridge_enter(consult, target);
        self.varset(target, "ATTENDEDTRANSFER", "");
        self.ev_dest("DialState", target, &[("DialStatus", "RINGING")]);
        self.bridge_leave(transferer);
        self.bridge_enter(consult, transferer);
        self.bridgepeer_vars(target, transferer, true);
        {
            let (n, nm) = (
                self.chans[target].cid_num.clone(),
                self.chans[target].cid_name.clone(),
            );
            let (n, nm) = if n.is_empty() {
                let ep = self.chans[target].endpoint;
                (
                    self.endpoints[ep].id.clone(),
                    self.endpoints[ep].cid_name.clone(),
                )
            } else {
                (n, nm)
            };
            let c = &mut self.chans[transferer];
            c.conn_num = n;
            c.conn_name = nm;
        }
        self.ev_chan("NewConnectedLine", Cls::Call, transferer);
        let ring = self
            .cfg
            .durations
            .ring
            .sample(&mut self.calls[call].rng)
            .clamp(0.5, 25.0);
        self.step_in(call, ring, Step::TargetAnswer);
    }

    fn atxfer_target_answer(&mut self, call: CallId) {
        let Phase::Consult {
            orig,
            consult,
            transferer,
            transferee,
            target,
            target_up: false,
            queue,
        } = self.calls[call].phase
        else {
            return;
        };
        self.set_state(target, ChanState::Up);

        self.ev_dest("DialEnd", target, &[("DialStatus", "ANSWER")]);
        self.bridgepeer_vars(target, transferer, true);
        self.calls[call].phase = Phase::Consult {
            orig,
            consult,
            transferer,
            transferee,
            target,
            target_up: true,
            queue,
        };
        // The transferer's phone completes the transfer by hanging up: after the
        // consultation in the attended-transfer scenario; after the call's talk time
        // when an Atxfer action started it and nobody hangs up first.
        let t = if !self.calls[call].feature_done
            && self.calls[call].scenario == Some(super::Scenario::AttendedTransfer)
        {
            let d = self.cfg.durations.consult;
            d.sample(&mut self.calls[call].rng).max(1.0)
        } else {
            (self.calls[call].talk_us as f64 / 1e6).max(30.0)
        };
        self.step_in(call, t, Step::CompleteTransfer);
    }

    /// The transferer hangs up with the target answered: the bridges merge
    /// (asterisk22-local.txt: MusicOnHoldStop, BridgeLeave, BridgeMerge, ...,
    /// AttendedTransfer, BridgeDestroy, Hangup).
    #[allow(clippy::too_many_arguments)]
    fn atxfer_complete(
        &mut self,
        call: CallId,
        orig: BridgeId,
        consult: BridgeId,
        transferer: ChanId,
        transferee: ChanId,
        target: ChanId,
        origin: Origin,
        queue: Option<QueueLink>,
    ) {
        self.hangup_origin_events(transferer, origin);
        self.varset(transferer, "BRIDGEPEER", "");
        self.moh_stop(transferee);
        self.set_holding(transferer, false);
        self.bridge_leave(transferer);
        {
            let (to, from) = (&self.bridges[orig], &self.bridges[consult]);
            let (nt, nf) = (to.channels.len(), from.channels.len());
            let e = self.enc.event("BridgeMerge", Cls::Call, |w| {
                w.bridge(BP::To, to, nt);
                w.bridge(BP::From, from, nf);
            });
            self.push(e);
        }
        self.dialplan_vars_after(transferer, None);
        if self.chans[transferer].pbx {
            self.soft_hangup_request(transferer);
        }
        self.bridge_leave(target);
        self.bridge_enter(orig, target);
        self.bridgepeer_vars(transferee, target, true);
        {
            let (o, s) = (&self.bridges[orig], &self.bridges[consult]);
            let (t, te, tt) = (
                &self.chans[transferer],
                &self.chans[transferee],
                &self.chans[target],
            );
            let e = self.enc.event("AttendedTransfer", Cls::Call, |w| {
                w.f("Result", "Success");
                w.chan(P::OrigTransferer, t);
                w.bridge(BP::Orig, o, 2);
                w.chan(P::SecondTransferer, t);
                w.bridge(BP::Second, s, 0);
                w.chan(P::Transferee, te);
                w.chan(P::TransferTarget, tt);
                w.f("IsExternal", "No")
                    .f("DestType", "Bridge")
                    .f("DestBridgeUniqueid", &o.uniqueid);
            });
            self.push(e);
        }
        if let Some(link) = queue {
            let (qc, ag) = if self.queue_is_caller(link, transferer) {
                (transferer, transferee)
            } else {
                (transferee, transferer)
            };
            self.agent_complete(link, qc, ag, "transfer");
        }
        self.bridge_destroy(consult);
        self.rtp_qos(transferer);
        self.hangup(transferer, origin_cause(origin));
        self.post_cdrs(call, transferer);
        if let Some(link) = queue {
            self.queue_call_done(link);
        }
        // Connected lines: each party now sees the other.
        {
            let (n, nm) = (
                self.chans[target].cid_num.clone(),
                self.chans[target].cid_name.clone(),
            );
            let ep = self.chans[target].endpoint;
            let (n, nm) = if n.is_empty() {
                (
                    self.endpoints[ep].id.clone(),
                    self.endpoints[ep].cid_name.clone(),
                )
            } else {
                (n, nm)
            };
            let c = &mut self.chans[transferee];
            c.conn_num = n;
            c.conn_name = nm;
        }
        self.ev_chan("NewConnectedLine", Cls::Call, transferee);
        {
            let (n, nm) = (
                self.chans[transferee].cid_num.clone(),
                self.chans[transferee].cid_name.clone(),
            );
            let c = &mut self.chans[target];
            c.conn_num = n;
            c.conn_name = nm;
        }
        self.ev_chan("NewConnectedLine", Cls::Call, target);
        self.calls[call].feature_done = true;
        self.calls[call].phase = Phase::Bridged {
            bridge: orig,
            x: target,
            y: transferee,
            queue: None,
        };
        self.bump(call);
        let c = &mut self.calls[call];
        let rest = (c.talk_us as f64 / 1e6) * (0.3 + 0.5 * c.rng.f64());
        let x_side = c.caller_hangs_up;
        self.step_in(call, rest.max(1.0), Step::Hangup { x_side });
    }

    /// DTMFEnd for each digit (features and the Atxfer action queue DTMF frames).
    pub(crate) fn dtmf(&mut self, ch: ChanId, digits: &str) {
        for d in digits.chars() {
            let mut b = [0u8; 4];
            let ds: &str = d.encode_utf8(&mut b);
            self.ev_chan_with(
                "DTMFEnd",
                Cls::Dtmf,
                ch,
                &[
                    ("Digit", ds),
                    ("DurationMs", "0"),
                    ("Direction", "Received"),
                ],
            );
        }
    }

    // ================================================================= locations

    /// What `exten` means in this PBX's dialplan.
    pub(crate) fn resolve(&self, _context: &str, exten: &str) -> Dest {
        if let Some(p) = self
            .endpoints
            .iter()
            .position(|e| !e.is_trunk && &*e.id == exten)
        {
            return Dest::Phone(p);
        }
        if let Some(q) = self
            .queues
            .iter()
            .position(|q| &*q.exten == exten || &*q.did == exten || &*q.name == exten)
        {
            return Dest::Queue(q);
        }
        if exten == "moh" {
            return Dest::Moh;
        }
        if let Some(num) = exten.strip_prefix('9')
            && !num.is_empty()
            && num.bytes().all(|b| b.is_ascii_digit())
        {
            return Dest::Trunk(Arc::from(num));
        }
        Dest::Invalid
    }

    /// Runs the dialplan at a new location for `ch` (Redirect, transfer, Originate).
    pub(crate) fn run_location(&mut self, call: CallId, ch: ChanId, dest: Dest) {
        self.chans[ch].pbx = true;
        self.bump(call);
        match dest {
            Dest::Phone(_) | Dest::Trunk(_) => {
                self.dial(call, ch, 1, dest);
            }
            Dest::Queue(q) => {
                self.exec(ch, 1, "Answer", "");
                if self.chans[ch].state != ChanState::Up {
                    self.set_state(ch, ChanState::Up);
                }
                self.cdr_ensure(ch, "Queue", "");
                self.queue_enter(call, ch, q, 2);
            }
            Dest::Moh => {
                self.exec(ch, 1, "Answer", "");
                if self.chans[ch].state != ChanState::Up {
                    self.set_state(ch, ChanState::Up);
                }
                let class = self.moh_default.clone();
                self.exec(ch, 2, "MusicOnHold", &class);
                self.moh_start(ch, &class);
                self.cdr_ensure(ch, "MusicOnHold", &class);
                self.calls[call].phase = Phase::App { chan: ch };
                let d = self.cfg.durations.talk;
                let t = d.sample(&mut self.calls[call].rng).max(1.0);
                self.step_in(call, t, Step::AppHangup(ch));
            }
            Dest::Invalid => {
                self.soft_hangup_request(ch);
                self.rtp_qos(ch);
                self.hangup(ch, 16);
                self.post_cdrs(call, ch);
                self.finish(call);
            }
        }
    }
}

fn origin_cause(origin: Origin) -> u32 {
    match origin {
        Origin::Phone => 0,
        Origin::Action(c) => c,
    }
}

/// app_dial's dial status for an outgoing leg that hung up with `cause`.
fn dial_status_for_cause(cause: u32) -> &'static str {
    match cause {
        17 => "BUSY",
        34 | 38 | 42 => "CONGESTION",
        1 | 3 | 20 | 27 => "CHANUNAVAIL",
        _ => "NOANSWER",
    }
}
