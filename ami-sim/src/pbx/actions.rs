//! Actions that reach the model: each answers like Asterisk (texts from the captures and
//! manager.c / app_queue.c) and changes the model, the events it causes going to everyone
//! through the next `advance`. Login, Ping, Events, permissions and unknown actions are
//! the server's; an unknown name that reaches here gets Asterisk's error too.

use std::sync::Arc;

use bytes::Bytes;

use super::SimTime;
use super::enc::{Cls, W};
use super::engine::{Origin, Pbx, Step};
use super::flows::Dest;
use super::model::*;

/// The fields of one action, looked up case-insensitively (first occurrence wins).
pub(crate) struct Fields<'a> {
    pub list: &'a [(&'a str, &'a str)],
}

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.list
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    /// A non-empty value.
    pub fn val(&self, key: &str) -> Option<&'a str> {
        self.get(key).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn all<'k>(&'k self, key: &'k str) -> impl Iterator<Item = &'a str> + 'k {
        self.list
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }
}

/// ast_true: yes, true, y, t, 1, on.
pub(crate) fn ast_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "y" | "t" | "1" | "on"
    )
}

impl Pbx {
    /// Runs one action (see the module interface). The model first catches up with `now`.
    pub fn action(
        &mut self,
        now: SimTime,
        action: &str,
        fields: &[(&str, &str)],
        action_id: Option<&str>,
    ) -> Vec<Bytes> {
        self.run_until(now);
        let f = Fields { list: fields };
        let aid = action_id;
        let reply = self.dispatch(&f, action, aid);
        self.flush_ended();
        reply
    }

    fn dispatch(&mut self, f: &Fields<'_>, action: &str, aid: Option<&str>) -> Vec<Bytes> {
        match action.trim().to_ascii_lowercase().as_str() {
            "originate" => vec![self.act_originate(f, aid)],
            "hangup" => vec![self.act_hangup(f, aid)],
            "redirect" => vec![self.act_redirect(f, aid)],
            "atxfer" => vec![self.act_atxfer(f, aid)],
            "blindtransfer" => vec![self.act_blind_transfer(f, aid)],
            "mixmonitor" => vec![self.act_mixmonitor(f, aid)],
            "stopmixmonitor" => vec![self.act_stop_mixmonitor(f, aid)],
            "queueadd" => vec![self.act_queue_add(f, aid)],
            "queueremove" => vec![self.act_queue_remove(f, aid)],
            "queuepause" => vec![self.act_queue_pause(f, aid)],
            "queuestatus" => self.list_queue_status(f, aid),
            "queuesummary" => self.list_queue_summary(f, aid),
            "coreshowchannels" => self.list_core_show_channels(aid),
            "status" => self.list_status(f, aid),
            "command" => vec![self.act_command(f, aid)],
            "coresettings" => vec![self.act_core_settings(aid)],
            "corestatus" => vec![self.act_core_status(aid)],
            _ => {
                let msg = format!(
                    "Invalid/unknown command: {}. Use Action: ListCommands to show available commands.",
                    action.trim()
                );
                vec![self.error(aid, &msg)]
            }
        }
    }

    // ---------------------------------------------------------------- replies

    pub(crate) fn success(&mut self, aid: Option<&str>, message: Option<&str>) -> Bytes {
        self.msg(|w| {
            w.f("Response", "Success");
            if let Some(a) = aid {
                w.f("ActionID", a);
            }
            if let Some(m) = message {
                w.f("Message", m);
            }
        })
    }

    pub(crate) fn error(&mut self, aid: Option<&str>, message: &str) -> Bytes {
        self.msg(|w| {
            w.f("Response", "Error");
            if let Some(a) = aid {
                w.f("ActionID", a);
            }
            w.f("Message", message);
        })
    }

    /// `Response: Success`, `EventList: start`, `Message: ... will follow`.
    pub(crate) fn list_start(&mut self, aid: Option<&str>, message: &str) -> Bytes {
        self.msg(|w| {
            w.f("Response", "Success");
            if let Some(a) = aid {
                w.f("ActionID", a);
            }
            w.f("EventList", "start").f("Message", message);
        })
    }

    /// `Event: <name>Complete`, ActionID, `EventList: Complete`, `ListItems: n`, extra.
    pub(crate) fn list_complete(
        &mut self,
        name: &str,
        aid: Option<&str>,
        items: usize,
        extra: &[(&str, String)],
    ) -> Bytes {
        self.msg(|w: &mut W<'_>| {
            w.f("Event", name);
            if let Some(a) = aid {
                w.f("ActionID", a);
            }
            w.f("EventList", "Complete").n("ListItems", items as u64);
            for (k, v) in extra {
                w.f(k, v);
            }
        })
    }

    // ---------------------------------------------------------------- Hangup

    fn act_hangup(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(name) = f.val("Channel") else {
            return self.error(aid, "No channel specified");
        };
        let Some(ch) = self.find_channel(name) else {
            return self.error(aid, "No such channel");
        };
        let cause = f
            .val("Cause")
            .and_then(|c| c.parse::<u32>().ok())
            .filter(|c| *c > 0)
            .unwrap_or(16);
        self.chan_hangup(ch, Origin::Action(cause));
        self.success(aid, Some("Channel Hungup"))
    }

    // ---------------------------------------------------------------- Redirect

    fn act_redirect(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(name) = f.val("Channel") else {
            return self.error(aid, "Channel not specified");
        };
        if let Some(p) = f.val("Priority")
            && p.parse::<u32>().is_err()
        {
            return self.error(aid, "Invalid priority");
        }
        let Some(ch) = self.find_channel(name) else {
            return self.error(aid, &format!("Channel does not exist: {name}"));
        };
        let extra = match f.val("ExtraChannel") {
            Some(n2) => match self.find_channel(n2) {
                Some(c2) => Some(c2),
                None => return self.error(aid, &format!("ExtraChannel does not exist: {n2}")),
            },
            None => None,
        };
        let ctx: Arc<str> = Arc::from(
            f.val("Context")
                .map(str::to_string)
                .unwrap_or_else(|| self.chans[ch].context.to_string()),
        );
        let exten = f.val("Exten").unwrap_or("s").to_string();
        match extra {
            None => {
                self.redirect(ch, &ctx, &exten, None);
                self.success(aid, Some("Redirect successful"))
            }
            Some(c2) => {
                let ctx2: Arc<str> = Arc::from(
                    f.val("ExtraContext")
                        .map(str::to_string)
                        .unwrap_or_else(|| ctx.to_string()),
                );
                let exten2 = f.val("ExtraExten").unwrap_or(&exten).to_string();
                self.redirect(ch, &ctx, &exten, Some((c2, ctx2, exten2)));
                self.success(aid, Some("Dual Redirect successful"))
            }
        }
    }

    /// Moves `ch` (and optionally a second channel) to a dialplan location: the channel
    /// leaves what it was doing with the events of that (bridge leave, dial cancel,
    /// queue leave, music stop), its partner follows its own rules, then the new
    /// location runs (asterisk22-local.txt Redirect calls).
    pub(crate) fn redirect(
        &mut self,
        ch: ChanId,
        ctx: &Arc<str>,
        exten: &str,
        extra: Option<(ChanId, Arc<str>, String)>,
    ) {
        let pending = self.redirect_one(ch, ctx, exten, extra);
        // A second channel that was not the first one's bridge peer goes on its own.
        if let Some((c2, ctx2, ex2)) = pending
            && self.chans.get(c2).is_some()
            && c2 != ch
        {
            self.redirect_one(c2, &ctx2, &ex2, None);
        }
    }

    /// One channel's Redirect; returns the second channel when it was not handled with
    /// the first (it was not the first one's bridge peer).
    fn redirect_one(
        &mut self,
        ch: ChanId,
        ctx: &Arc<str>,
        exten: &str,
        extra: Option<(ChanId, Arc<str>, String)>,
    ) -> Option<(ChanId, Arc<str>, String)> {
        let unconsumed = extra.clone();
        let call = self.chans[ch].call;
        self.bump(call);
        let dest = self.resolve(ctx, exten);
        let exten_a: Arc<str> = Arc::from(exten);
        let phase = self.calls[call].phase.clone();
        // A second channel of the same bridge goes into its own call (same Linkedid).
        let mut second: Option<(ChanId, Dest, Arc<str>, Arc<str>)> = None;
        if let Some((c2, ctx2, ex2)) = extra {
            let d2 = self.resolve(&ctx2, &ex2);
            second = Some((c2, d2, ctx2, Arc::from(ex2.as_str())));
        }
        match phase {
            Phase::Bridged {
                bridge,
                x,
                y,
                queue,
            } if ch == x || ch == y => {
                let other = if ch == x { y } else { x };
                if let Some(link) = queue {
                    self.agent_complete_transfer(link, x, y);
                }
                self.bridgepeer_vars(ch, other, false);
                self.bridge_leave(ch);
                self.bridge_leave(other);
                self.bridge_destroy(bridge);
                if let Some(link) = queue {
                    self.queue_call_done_pub(link);
                }
                let other_moves = second.as_ref().is_some_and(|s| s.0 == other);
                if other_moves {
                    let (c2, d2, ctx2, ex2) = second.take().expect("second");
                    let new_call = self.split_channel(c2);
                    self.set_location(c2, &ctx2, &ex2, 1);
                    self.run_location(new_call, c2, d2);
                } else if self.chans[other].pbx {
                    let p = self.chans[other].priority + 1;
                    self.exec(other, p, "Hangup", "");
                    self.soft_hangup_request(other);
                    self.rtp_qos(other);
                    self.hangup(other, 16);
                    self.post_cdrs(call, other);
                } else {
                    self.rtp_qos(other);
                    self.hangup(other, 16);
                    self.post_cdrs(call, other);
                }
            }
            Phase::Dialing { caller, callee, .. } if ch == caller => {
                self.ev_two(
                    "DialEnd",
                    Cls::Call,
                    caller,
                    callee,
                    &[("DialStatus", "CANCEL")],
                );
                self.hangup(callee, 0);
                self.varset(caller, "DIALSTATUS", "CANCEL");
            }
            Phase::Dialing { caller, callee, .. } if ch == callee => {
                // The ringing leg is taken away: the caller's Dial fails.
                self.calls[call].phase = Phase::Dialing {
                    caller,
                    callee,
                    ringing: true,
                };
                let new_call = self.split_channel(callee);
                self.ev_two(
                    "DialEnd",
                    Cls::Call,
                    caller,
                    callee,
                    &[("DialStatus", "CANCEL")],
                );
                let p = self.chans[caller].priority + 1;
                self.exec(caller, p, "Hangup", "");
                self.soft_hangup_request(caller);
                self.hangup(caller, 16);
                self.post_cdrs(call, caller);
                self.finish(call);
                self.set_location(callee, ctx, &exten_a, 1);
                self.run_location(new_call, callee, dest);
                return unconsumed;
            }
            Phase::Queued {
                caller,
                queue,
                ref ringing,
                ..
            } if ch == caller => {
                let legs = ringing.clone();
                self.moh_stop(caller);
                for &(leg, _) in &legs {
                    self.ev_two(
                        "DialEnd",
                        Cls::Call,
                        caller,
                        leg,
                        &[("DialStatus", "CANCEL")],
                    );
                }
                for &(leg, m) in &legs {
                    self.hangup(leg, 0);
                    self.queues[queue].members[m].busy_with = None;
                }
                let (pos, _, _) = self.queue_remove_caller(queue, call);
                self.queue_leave_event(queue, caller, pos);
                if !legs.is_empty() {
                    self.schedule(
                        self.now + 1_000_000,
                        super::engine::Task::QueueDispatch { queue },
                    );
                }
            }
            Phase::App { chan } if chan == ch => {
                self.moh_stop(ch);
            }
            Phase::Originating { .. } => {
                // Not running dialplan yet: Asterisk moves it once answered; the
                // simulator keeps it simple and lets the Originate finish.
                return unconsumed;
            }
            _ => {
                // Anything else (a transfer in progress, a ringing queue member): the
                // channel leaves on its own and the rest of its call is torn down.
                self.moh_stop(ch);
                if let Some(b) = self.chans[ch].bridge {
                    self.bridge_leave(ch);
                    if self.bridges[b].channels.is_empty() {
                        self.bridge_destroy(b);
                    }
                }
                let own = self.split_channel(ch);
                if let Some(&first) = self.calls[call].chans.first() {
                    self.teardown_all(call, first, Origin::Action(16));
                } else {
                    self.finish(call);
                }
                self.set_location(ch, ctx, &exten_a, 1);
                self.run_location(own, ch, dest);
                return unconsumed;
            }
        }
        self.set_location(ch, ctx, &exten_a, 1);
        self.run_location(call, ch, dest);
        second.map(|(c2, _, ctx2, ex2)| (c2, ctx2, ex2.to_string()))
    }

    /// Moves a channel into a call of its own (it keeps its Linkedid).
    fn split_channel(&mut self, ch: ChanId) -> CallId {
        let old = self.chans[ch].call;
        let nc = self.new_call(None, super::CallSpec::default());
        let linkedid = self.chans[ch].linkedid.clone();
        {
            let moved: Vec<CdrRec> = {
                let o = &mut self.calls[old];
                o.chans.retain(|c| *c != ch);
                let (mine, rest): (Vec<CdrRec>, Vec<CdrRec>) =
                    o.cdrs.drain(..).partition(|r| r.a == ch);
                o.cdrs = rest;
                mine
            };
            let c = &mut self.calls[nc];
            c.linkedid = linkedid;
            c.chans.push(ch);
            c.cdrs = moved;
        }
        self.chans[ch].call = nc;
        nc
    }

    fn agent_complete_transfer(&mut self, link: QueueLink, x: ChanId, y: ChanId) {
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
                ("Reason", "transfer"),
            ],
        );
        let qu = &mut self.queues[link.queue];
        qu.completed += 1;
        let mem = &mut qu.members[link.member];
        mem.calls_taken += 1;
        mem.last_call = self.now / 1_000_000;
        mem.in_call = false;
    }

    fn queue_call_done_pub(&mut self, link: QueueLink) {
        if let Some(mem) = self.queues[link.queue].members.get_mut(link.member) {
            mem.in_call = false;
            mem.busy_with = None;
        }
        self.schedule(
            self.now + 1_000_000,
            super::engine::Task::QueueDispatch { queue: link.queue },
        );
    }

    // ---------------------------------------------------------------- transfers

    fn act_atxfer(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(name) = f.val("Channel") else {
            return self.error(aid, "No channel specified");
        };
        let Some(exten) = f.val("Exten") else {
            return self.error(aid, "No extension specified");
        };
        let Some(ch) = self.find_channel(name) else {
            return self.error(aid, "Channel specified does not exist");
        };
        let ctx = f.val("Context");
        self.atxfer_start(ch, ctx, exten);
        self.success(aid, Some("Atxfer successfully queued"))
    }

    fn act_blind_transfer(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(name) = f.val("Channel") else {
            return self.error(aid, "No channel specified");
        };
        let Some(exten) = f.val("Exten") else {
            return self.error(aid, "No extension specified");
        };
        let Some(ch) = self.find_channel(name) else {
            return self.error(aid, "Channel specified does not exist");
        };
        let ctx: Arc<str> = Arc::from(
            f.val("Context")
                .map(str::to_string)
                .unwrap_or_else(|| self.chans[ch].context.to_string()),
        );
        let ex: Arc<str> = Arc::from(exten);
        if self.blind_transfer(ch, &ctx, &ex, true) {
            self.success(aid, Some("Transfer succeeded"))
        } else {
            self.error(aid, "Transfer invalid")
        }
    }

    // ---------------------------------------------------------------- MixMonitor

    fn act_mixmonitor(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(name) = f.val("Channel") else {
            return self.error(aid, "No channel specified");
        };
        let Some(ch) = self.find_channel(name) else {
            return self.error(aid, "No such channel");
        };
        let file = f.val("File").map(str::to_string);
        self.mixmonitor_start(ch, 0, file.as_deref());
        self.success(aid, None)
    }

    fn act_stop_mixmonitor(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(name) = f.val("Channel") else {
            return self.error(aid, "No channel specified");
        };
        let Some(ch) = self.find_channel(name) else {
            return self.error(aid, "No such channel");
        };
        if !self.chans[ch].mixmonitor {
            return self.error(aid, "Could not stop MixMonitor");
        }
        self.mixmonitor_stop(ch);
        self.success(aid, None)
    }

    // ---------------------------------------------------------------- queues

    fn find_queue(&self, name: &str) -> Option<usize> {
        self.queues.iter().position(|q| &*q.name == name)
    }

    fn act_queue_add(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(qname) = f.val("Queue") else {
            return self.error(aid, "'Queue' not specified.");
        };
        let Some(iface) = f.val("Interface") else {
            return self.error(aid, "'Interface' not specified.");
        };
        let Some(q) = self.find_queue(qname) else {
            return self.error(aid, "Unable to add interface to queue: No such queue");
        };
        if self.queues[q]
            .members
            .iter()
            .any(|m| m.interface.eq_ignore_ascii_case(iface))
        {
            return self.error(aid, "Unable to add interface: Already there");
        }
        // Only phones of this PBX can be members (their device state drives the queue).
        let ep = self
            .endpoints
            .iter()
            .position(|e| !e.is_trunk && e.device.eq_ignore_ascii_case(iface));
        let Some(ep) = ep else {
            return self.error(aid, "Unable to add interface to queue: No such queue");
        };
        let penalty = f.val("Penalty").and_then(|p| p.parse().ok()).unwrap_or(0);
        let paused = f.val("Paused").is_some_and(ast_true);
        let name = f
            .val("MemberName")
            .map(str::to_string)
            .unwrap_or_else(|| iface.to_string());
        let reason = if paused {
            f.val("Reason").unwrap_or("")
        } else {
            ""
        };
        let now_s = self.now / 1_000_000;
        self.queues[q].members.push(Member {
            name: Arc::from(name.as_str()),
            interface: self.endpoints[ep].device.clone(),
            endpoint: ep,
            dynamic: true,
            penalty,
            calls_taken: 0,
            last_call: 0,
            last_pause: if paused { now_s } else { 0 },
            login_time: now_s,
            in_call: false,
            paused,
            paused_reason: Arc::from(reason),
            busy_with: None,
        });
        let m = self.queues[q].members.len() - 1;
        self.queue_member_event("QueueMemberAdded", q, m);
        self.schedule(self.now, super::engine::Task::QueueDispatch { queue: q });
        self.success(aid, Some("Added interface to queue"))
    }

    fn act_queue_remove(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let (Some(qname), Some(iface)) = (f.val("Queue"), f.val("Interface")) else {
            return self.error(aid, "Need 'Queue' and 'Interface' parameters.");
        };
        let Some(q) = self.find_queue(qname) else {
            return self.error(aid, "Unable to remove interface from queue: No such queue");
        };
        let Some(m) = self.queues[q]
            .members
            .iter()
            .position(|m| m.interface.eq_ignore_ascii_case(iface))
        else {
            return self.error(aid, "Unable to remove interface: Not there");
        };
        if !self.queues[q].members[m].dynamic {
            return self.error(aid, "Unable to remove interface: Not there");
        }
        if self.queues[q].members[m].busy_with.is_some() {
            // app_queue marks it dead and removes it when the call ends; the simulator
            // refuses instead of leaving a dangling member behind.
            return self.error(aid, "Unable to remove interface: Not there");
        }
        self.queue_member_event("QueueMemberRemoved", q, m);
        self.queues[q].members.remove(m);
        let n = self.queues[q].members.len().max(1);
        self.queues[q].rr_next %= n;
        self.success(aid, Some("Removed interface from queue"))
    }

    fn act_queue_pause(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let (Some(iface), Some(paused_s)) = (f.val("Interface"), f.val("Paused")) else {
            return self.error(aid, "Need 'Interface' and 'Paused' parameters.");
        };
        let paused = ast_true(paused_s);
        let only = f.val("Queue");
        let reason = f.val("Reason").unwrap_or("");
        let mut found = false;
        for q in 0..self.queues.len() {
            if only.is_some_and(|n| *self.queues[q].name != *n) {
                continue;
            }
            let Some(m) = self.queues[q]
                .members
                .iter()
                .position(|m| m.interface.eq_ignore_ascii_case(iface))
            else {
                continue;
            };
            found = true;
            {
                let mem = &mut self.queues[q].members[m];
                mem.paused = paused;
                mem.paused_reason = Arc::from(if paused { reason } else { "" });
                if paused {
                    mem.last_pause = self.now / 1_000_000;
                }
            }
            if self.noise {
                let dev = format!(
                    "Queue:{}_pause_{}",
                    self.queues[q].name, self.queues[q].members[m].interface
                );
                let st = if paused { "INUSE" } else { "NOT_INUSE" };
                let e = self.enc.event("DeviceStateChange", Cls::Call, |w| {
                    w.f("Device", &dev).f("State", st);
                });
                self.push(e);
            }
            self.queue_member_event("QueueMemberPause", q, m);
            if !paused {
                self.schedule(self.now, super::engine::Task::QueueDispatch { queue: q });
            }
        }
        if !found {
            return self.error(aid, "Interface not found");
        }
        self.success(
            aid,
            Some(if paused {
                "Interface paused successfully"
            } else {
                "Interface unpaused successfully"
            }),
        )
    }

    // ---------------------------------------------------------------- Originate

    fn act_originate(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let Some(channel) = f.val("Channel") else {
            return self.error(aid, "Channel not specified");
        };
        let exten = f.val("Exten");
        let app = f.val("Application");
        if exten.is_none() && app.is_none() {
            return self.error(aid, "Exten not specified");
        }
        if let Some(p) = f.val("Priority")
            && p.parse::<u32>().is_err()
        {
            return self.error(aid, "Invalid priority");
        }
        let timeout_ms = f
            .val("Timeout")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(30_000)
            .max(1);
        let (cid_num, cid_name) = parse_callerid(f.val("CallerID").unwrap_or(""));
        let vars: Vec<(String, String)> = f
            .all("Variable")
            .flat_map(|v| v.split(','))
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
            })
            .collect();
        let context = f.val("Context").unwrap_or("from-internal");
        let plan = OriginatePlan {
            action_id: aid.map(Arc::from),
            channel_arg: Arc::from(channel),
            context: Arc::from(context),
            exten: Arc::from(exten.unwrap_or("s")),
            application: app.map(|a| (Arc::from(a), Arc::from(f.get("Data").unwrap_or("")))),
            cid_num: Arc::from(cid_num.as_str()),
            cid_name: Arc::from(cid_name.as_str()),
            outcome: OriginateOutcome::Answer,
            timeout_ms,
        };
        let reply = self.success(aid, Some("Originate successfully queued"));
        self.originate(plan, &vars);
        reply
    }

    /// Starts an Originate: the leg rings its phone (or the trunk), then runs the
    /// dialplan or the application (asterisk22-sip-systemname.txt, PJSIP originates).
    pub(crate) fn originate(&mut self, mut plan: OriginatePlan, vars: &[(String, String)]) {
        // PJSIP/<endpoint> or PJSIP/<number>@<trunk>.
        let target = plan
            .channel_arg
            .strip_prefix("PJSIP/")
            .or_else(|| plan.channel_arg.strip_prefix("pjsip/"));
        let ep = target.and_then(|t| {
            if let Some((num, trunk)) = t.split_once('@') {
                (trunk == &*self.endpoints[self.trunk_ep].id && !num.is_empty())
                    .then_some((self.trunk_ep, t.to_string()))
            } else {
                self.endpoints
                    .iter()
                    .position(|e| !e.is_trunk && &*e.id == t)
                    .map(|p| (p, t.to_string()))
            }
        });
        let call = self.new_call(None, super::CallSpec::default());
        let Some((ep, dialstring)) = ep else {
            // ast_request fails: no channel at all, Reason 0.
            self.originate_response_failure(&plan, 0);
            self.calls.remove(call);
            self.stats.calls_ended += 1;
            return;
        };
        // The phone answers after its ring time, unless that exceeds Timeout, or is busy
        // (two calls already).
        let ring = {
            let d = self.cfg.durations.ring;
            d.sample(&mut self.calls[call].rng).max(0.5)
        };
        plan.outcome = if !self.endpoints[ep].is_trunk && self.endpoints[ep].channels >= 2 {
            OriginateOutcome::Busy
        } else if ring * 1000.0 > plan.timeout_ms as f64 {
            OriginateOutcome::NoAnswer
        } else {
            OriginateOutcome::Answer
        };
        let ctx = self.endpoints[ep].context.clone();
        let s: Arc<str> = Arc::from("s");
        let empty = self.empty.clone();
        let l = self.new_channel(
            call,
            ep,
            ChanState::Down,
            ctx,
            s,
            empty.clone(),
            empty,
            false,
        );
        self.chans[l].dialed = Arc::from(dialstring.as_str());
        self.exec(l, 1, "AppDial2", "(Outgoing Line)");
        for (k, v) in vars {
            self.varset(l, k, v);
        }
        if !plan.cid_num.is_empty() || !plan.cid_name.is_empty() {
            {
                let c = &mut self.chans[l];
                c.cid_num = plan.cid_num.clone();
                c.cid_name = plan.cid_name.clone();
            }
            self.ev_chan_with(
                "NewCallerid",
                Cls::Call,
                l,
                &[("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")],
            );
            {
                let c = &mut self.chans[l];
                c.conn_num = plan.cid_num.clone();
                c.conn_name = plan.cid_name.clone();
            }
            self.ev_chan("NewConnectedLine", Cls::Call, l);
        }
        self.cdr_ensure(l, "AppDial2", "(Outgoing Line)");
        self.ev_dest("DialBegin", l, &[("DialString", &dialstring)]);
        let outcome = plan.outcome;
        let timeout_s = plan.timeout_ms as f64 / 1000.0;
        self.calls[call].phase = Phase::Originating { chan: l, plan };
        let setup = 0.05 + 0.25 * self.calls[call].rng.f64();
        match outcome {
            OriginateOutcome::Busy => self.step_in(call, setup, Step::OrigBusy),
            OriginateOutcome::NoAnswer => {
                self.step_in(call, setup, Step::OrigRinging);
                self.step_in(call, timeout_s, Step::OrigTimeout);
            }
            OriginateOutcome::Answer => {
                self.step_in(call, setup, Step::OrigRinging);
                self.step_in(call, ring.max(setup + 0.1), Step::OrigAnswer);
            }
        }
    }

    pub(crate) fn orig_ringing(&mut self, call: CallId) {
        let Phase::Originating { chan, .. } = self.calls[call].phase else {
            return;
        };
        if self.chans[chan].state != ChanState::Down {
            return;
        }
        self.set_state(chan, ChanState::Ringing);
        self.ev_dest("DialState", chan, &[("DialStatus", "RINGING")]);
    }

    pub(crate) fn orig_answer(&mut self, call: CallId) {
        let Phase::Originating { chan, ref plan } = self.calls[call].phase else {
            return;
        };
        let plan = plan.clone();
        self.set_state(chan, ChanState::Up);
        self.ev_dest("DialEnd", chan, &[("DialStatus", "ANSWER")]);
        self.originate_response(&plan, true, 4, Some(chan));
        self.chans[chan].pbx = true;
        self.bump(call);
        match &plan.application {
            Some((app, data)) => {
                let app_name: &'static str = static_app(app);
                self.exec(chan, 1, app_name, data);
                self.calls[call].phase = Phase::App { chan };
                let secs = match app_name {
                    "Wait" => data.trim().parse::<f64>().unwrap_or(10.0),
                    "Playback" => 5.0,
                    _ => {
                        let d = self.cfg.durations.talk;
                        d.sample(&mut self.calls[call].rng)
                    }
                };
                self.step_in(call, secs.max(0.5), Step::AppHangup(chan));
            }
            None => {
                let (ctx, exten) = (plan.context.clone(), plan.exten.clone());
                self.set_location(chan, &ctx, &exten, 1);
                let dest = self.resolve(&ctx, &exten);
                self.run_location(call, chan, dest);
            }
        }
    }

    pub(crate) fn orig_fail(&mut self, call: CallId, reason: u32) {
        let Phase::Originating { chan, ref plan } = self.calls[call].phase else {
            return;
        };
        let plan = plan.clone();
        if reason == 5 {
            self.ev_dest("DialEnd", chan, &[("DialStatus", "BUSY")]);
            self.hangup(chan, 17);
        } else {
            self.hangup(chan, 0);
        }
        self.post_cdrs_failed(call, chan, if reason == 5 { "BUSY" } else { "NO ANSWER" });
        self.originate_response_failure(&plan, reason);
        self.finish(call);
    }

    fn post_cdrs_failed(&mut self, call: CallId, ch: ChanId, disposition: &'static str) {
        for r in self.calls[call].cdrs.iter_mut().filter(|r| r.a == ch) {
            r.b_name = Some(Arc::from(""));
            r.disposition = disposition;
        }
        self.post_cdrs(call, ch);
    }

    /// OriginateResponse Failure: the Channel as given, Uniqueid `<unknown>`.
    pub(crate) fn originate_response_failure(&mut self, plan: &OriginatePlan, reason: u32) {
        self.originate_response(plan, false, reason, None);
    }

    /// OriginateResponse (field order of asterisk22-local.txt / asterisk16-calls.bin).
    fn originate_response(
        &mut self,
        plan: &OriginatePlan,
        ok: bool,
        reason: u32,
        chan: Option<ChanId>,
    ) {
        let (name, uid): (String, String) = match chan {
            Some(c) => (
                self.chans[c].name.to_string(),
                self.chans[c].uniqueid.to_string(),
            ),
            None => (plan.channel_arg.to_string(), "<unknown>".to_string()),
        };
        let e = self.enc.event("OriginateResponse", Cls::Call, |w| {
            if let Some(a) = &plan.action_id {
                w.f("ActionID", a);
            }
            w.f("Response", if ok { "Success" } else { "Failure" })
                .f("Channel", &name);
            match &plan.application {
                Some((app, data)) => {
                    w.f("Application", app).f("Data", data);
                }
                None => {
                    w.f("Context", &plan.context).f("Exten", &plan.exten);
                }
            }
            w.n("Reason", reason as u64).f("Uniqueid", &uid);
            w.f("CallerIDNum", super::enc::or_unknown(&plan.cid_num));
            w.f("CallerIDName", super::enc::or_unknown(&plan.cid_name));
        });
        self.push(e);
    }
}

/// `"Name" <num>`, `Name <num>`, or a bare number.
fn parse_callerid(s: &str) -> (String, String) {
    let s = s.trim();
    if let (Some(lt), Some(gt)) = (s.rfind('<'), s.rfind('>'))
        && lt < gt
    {
        let num = s[lt + 1..gt].trim().to_string();
        let name = s[..lt].trim().trim_matches('"').trim().to_string();
        return (num, name);
    }
    if s.chars().all(|c| c.is_ascii_digit() || c == '+') {
        (s.to_string(), String::new())
    } else {
        (String::new(), s.trim_matches('"').to_string())
    }
}

/// Application names the simulator knows (others run as a generic application).
fn static_app(app: &str) -> &'static str {
    const APPS: [&str; 9] = [
        "Wait",
        "Playback",
        "MusicOnHold",
        "Echo",
        "Answer",
        "Dial",
        "Queue",
        "MixMonitor",
        "Hangup",
    ];
    APPS.iter()
        .find(|a| a.eq_ignore_ascii_case(app))
        .copied()
        .unwrap_or("Wait")
}
