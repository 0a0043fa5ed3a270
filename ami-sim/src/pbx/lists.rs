//! Read-only actions: event lists (QueueStatus, QueueSummary, CoreShowChannels, Status)
//! and CLI output (`Command`), rendered from the model's current state in Asterisk's
//! formats (field orders from the captures; `core show channels` from
//! asterisk16-edge.bin, the same CLI format in 22).

use bytes::Bytes;

use super::actions::Fields;
use super::engine::Pbx;
use super::fmt;
use super::model::*;

impl Pbx {
    pub(crate) fn list_queue_status(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Vec<Bytes> {
        let only_q = f.val("Queue").map(str::to_string);
        let only_m = f.val("Member").map(str::to_string);
        let mut out = vec![self.list_start(aid, "Queue status will follow")];
        let mut items = 0;
        let now_s = self.now / 1_000_000;
        for q in 0..self.queues.len() {
            if only_q
                .as_deref()
                .is_some_and(|n| n != &*self.queues[q].name)
            {
                continue;
            }
            let qu = &self.queues[q];
            let b = self.enc.message(|w| {
                w.f("Event", "QueueParams")
                    .f("Queue", &qu.name)
                    .f("Max", "0")
                    .f("Strategy", qu.strategy.name())
                    .n("Calls", qu.callers.len() as u64)
                    .n("Holdtime", qu.holdtime)
                    .n("TalkTime", qu.talktime)
                    .n("Completed", qu.completed)
                    .n("Abandoned", qu.abandoned)
                    .f("ServiceLevel", "0")
                    .f("ServicelevelPerf", "0.0")
                    .f("ServicelevelPerf2", "0.0")
                    .f("Weight", "0");
                if let Some(a) = aid {
                    w.f("ActionID", a);
                }
            });
            out.push(b);
            items += 1;
            for m in &qu.members {
                if only_m
                    .as_deref()
                    .is_some_and(|n| !m.interface.eq_ignore_ascii_case(n))
                {
                    continue;
                }
                let status = self.endpoints[m.endpoint].devstate;
                let b = self.enc.message(|w| {
                    w.f("Event", "QueueMember")
                        .f("Queue", &qu.name)
                        .f("Name", &m.name)
                        .f("Location", &m.interface)
                        .f("StateInterface", &m.interface)
                        .f("Membership", if m.dynamic { "dynamic" } else { "static" })
                        .n("Penalty", m.penalty as u64)
                        .n("CallsTaken", m.calls_taken)
                        .n("LastCall", m.last_call)
                        .n("LastPause", m.last_pause)
                        .n("LoginTime", m.login_time)
                        .f("InCall", if m.in_call { "1" } else { "0" })
                        .f("Status", status.num())
                        .f("Paused", if m.paused { "1" } else { "0" })
                        .f("PausedReason", &m.paused_reason)
                        .f("Wrapuptime", "0");
                    if let Some(a) = aid {
                        w.f("ActionID", a);
                    }
                });
                out.push(b);
                items += 1;
            }
            for (i, e) in qu.callers.iter().enumerate() {
                let c = &self.chans[e.chan];
                let wait = now_s.saturating_sub(e.joined_us / 1_000_000);
                let b = self.enc.message(|w| {
                    w.f("Event", "QueueEntry")
                        .f("Queue", &qu.name)
                        .n("Position", i as u64 + 1)
                        .f("Channel", &c.name)
                        .f("Uniqueid", &c.uniqueid)
                        .f("CallerIDNum", unknown_lc(&c.cid_num))
                        .f("CallerIDName", unknown_lc(&c.cid_name))
                        .f("ConnectedLineNum", unknown_lc(&c.conn_num))
                        .f("ConnectedLineName", unknown_lc(&c.conn_name))
                        .n("Wait", wait)
                        .f("Priority", "0");
                    if let Some(a) = aid {
                        w.f("ActionID", a);
                    }
                });
                out.push(b);
                items += 1;
            }
        }
        out.push(self.list_complete("QueueStatusComplete", aid, items, &[]));
        out
    }

    pub(crate) fn list_queue_summary(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Vec<Bytes> {
        let only_q = f.val("Queue").map(str::to_string);
        let mut out = vec![self.list_start(aid, "Queue summary will follow")];
        let mut items = 0;
        for q in 0..self.queues.len() {
            if only_q
                .as_deref()
                .is_some_and(|n| n != &*self.queues[q].name)
            {
                continue;
            }
            let qu = &self.queues[q];
            let logged_in = qu.members.len() as u64;
            let available = qu
                .members
                .iter()
                .filter(|m| {
                    !m.paused
                        && m.busy_with.is_none()
                        && self.endpoints[m.endpoint].devstate == DevState::NotInUse
                })
                .count() as u64;
            let longest = qu
                .callers
                .first()
                .map(|e| (self.now - e.joined_us) / 1_000_000)
                .unwrap_or(0);
            let b = self.enc.message(|w| {
                w.f("Event", "QueueSummary")
                    .f("Queue", &qu.name)
                    .n("LoggedIn", logged_in)
                    .n("Available", available)
                    .n("Callers", qu.callers.len() as u64)
                    .n("HoldTime", qu.holdtime)
                    .n("TalkTime", qu.talktime)
                    .n("LongestHoldTime", longest);
                if let Some(a) = aid {
                    w.f("ActionID", a);
                }
            });
            out.push(b);
            items += 1;
        }
        out.push(self.list_complete("QueueSummaryComplete", aid, items, &[]));
        out
    }

    /// Channels in creation order (Uniqueid order), as Asterisk's channel container.
    fn channels_sorted(&self) -> Vec<ChanId> {
        let mut v: Vec<(SimTimeKey, ChanId)> = self
            .chans
            .iter()
            .map(|(id, c)| ((c.created_us, uid_seq(&c.uniqueid)), id))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }

    pub(crate) fn list_core_show_channels(&mut self, aid: Option<&str>) -> Vec<Bytes> {
        let mut out = vec![self.list_start(aid, "Channels will follow")];
        let ids = self.channels_sorted();
        for &id in &ids {
            let c = &self.chans[id];
            let dur = fmt::hms((self.now - c.created_us) / 1_000_000);
            let bridge = c
                .bridge
                .map(|b| self.bridges[b].uniqueid.to_string())
                .unwrap_or_default();
            let b = self.enc.message(|w| {
                w.f("Event", "CoreShowChannel");
                if let Some(a) = aid {
                    w.f("ActionID", a);
                }
                w.chan(super::enc::P::None, c)
                    .f("Application", c.app)
                    .f("ApplicationData", &c.app_data)
                    .f("Duration", &dur)
                    .f("BridgeId", &bridge);
            });
            out.push(b);
        }
        out.push(self.list_complete("CoreShowChannelsComplete", aid, ids.len(), &[]));
        out
    }

    pub(crate) fn list_status(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Vec<Bytes> {
        let ids: Vec<ChanId> = match f.val("Channel") {
            Some(name) => match self.find_channel(name) {
                Some(c) => vec![c],
                None => return vec![self.error(aid, "No such channel")],
            },
            None => self.channels_sorted(),
        };
        let vars: Vec<String> = f
            .val("Variables")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        let mut out = vec![self.list_start(aid, "Channel status will follow")];
        for &id in &ids {
            let c = &self.chans[id];
            let secs = (self.now - c.created_us) / 1_000_000;
            let bridge = c
                .bridge
                .map(|b| self.bridges[b].uniqueid.to_string())
                .unwrap_or_default();
            let b = self.enc.message(|w| {
                w.f("Event", "Status").f("Privilege", "Call");
                w.chan(super::enc::P::None, c)
                    .f("Type", "PJSIP")
                    .f("DNID", "")
                    .f(
                        "EffectiveConnectedLineNum",
                        super::enc::or_unknown(&c.conn_num),
                    )
                    .f(
                        "EffectiveConnectedLineName",
                        super::enc::or_unknown(&c.conn_name),
                    )
                    .f("TimeToHangup", "0")
                    .f("BridgeID", &bridge)
                    .f("Application", c.app)
                    .f("Data", &c.app_data)
                    .f("Nativeformats", "(ulaw)")
                    .f("Readformat", "ulaw")
                    .f("Readtrans", "")
                    .f("Writeformat", "ulaw")
                    .f("Writetrans", "")
                    .f("Callgroup", "0")
                    .f("Pickupgroup", "0")
                    .n("Seconds", secs);
                for v in &vars {
                    if !v.is_empty() {
                        w.f("Variable", &format!("{v}="));
                    }
                }
                if let Some(a) = aid {
                    w.f("ActionID", a);
                }
            });
            out.push(b);
        }
        let n = ids.len();
        out.push(self.list_complete("StatusComplete", aid, n, &[("Items", n.to_string())]));
        out
    }

    // ---------------------------------------------------------------- Command

    pub(crate) fn act_command(&mut self, f: &Fields<'_>, aid: Option<&str>) -> Bytes {
        let cmd = f.val("Command").unwrap_or("");
        let norm: Vec<&str> = cmd.split_whitespace().collect();
        let lines: Option<Vec<String>> = match norm
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .as_slice()
        {
            [a, b, c] if a == "core" && b == "show" && c == "version" => {
                Some(vec![self.version_line()])
            }
            [a, b, c] if a == "core" && b == "show" && c == "channels" => {
                Some(self.core_show_channels())
            }
            [a, b] if a == "queue" && b == "show" => Some(self.queue_show(None)),
            [a, b, _] if a == "queue" && b == "show" => Some(self.queue_show(Some(norm[2]))),
            _ => None,
        };
        match lines {
            Some(lines) => self.msg(|w| {
                w.f("Response", "Success");
                if let Some(a) = aid {
                    w.f("ActionID", a);
                }
                w.f("Message", "Command output follows");
                for l in &lines {
                    w.f("Output", l);
                }
            }),
            None => {
                let line = format!(
                    "No such command '{cmd}' (type 'core show help {cmd}' for other possible commands)"
                );
                self.msg(|w| {
                    w.f("Response", "Error");
                    if let Some(a) = aid {
                        w.f("ActionID", a);
                    }
                    w.f("Message", "Command output follows").f("Output", &line);
                })
            }
        }
    }

    fn version_line(&self) -> String {
        let v = self.cfg.asterisk_version;
        let built = match v {
            super::AsteriskVersion::V16 => "2024-01-04 17:58:50",
            super::AsteriskVersion::V18 => "2025-07-10 09:12:31",
            super::AsteriskVersion::V20 => "2025-10-16 14:03:27",
            super::AsteriskVersion::V22 => "2025-11-13 11:46:02",
        };
        format!(
            "Asterisk {} built by root @ buildhost on a x86_64 running Linux on {built} UTC",
            v.release()
        )
    }

    /// `core show channels` (cli.c: "%-20.20s %-20.20s %-7.7s %-30.30s").
    fn core_show_channels(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{:<20.20} {:<20.20} {:<7.7} {:<30.30}",
            "Channel", "Location", "State", "Application(Data)"
        )];
        let ids = self.channels_sorted();
        for &id in &ids {
            let c = &self.chans[id];
            let loc = format!("{}@{}:{}", c.exten, c.context, c.priority);
            let app = if c.app.is_empty() {
                "(None)".to_string()
            } else {
                format!("{}({})", c.app, c.app_data)
            };
            lines.push(format!(
                "{:<20.20} {:<20.20} {:<7.7} {:<30.30}",
                &*c.name,
                loc,
                c.state.desc(),
                app
            ));
        }
        let n = ids.len();
        let calls = self.chans.iter().filter(|(_, c)| c.pbx).count();
        lines.push(format!(
            "{n} active channel{}",
            if n == 1 { "" } else { "s" }
        ));
        lines.push(format!(
            "{calls} active call{}",
            if calls == 1 { "" } else { "s" }
        ));
        let p = self.processed_calls;
        lines.push(format!(
            "{p} call{} processed",
            if p == 1 { "" } else { "s" }
        ));
        lines
    }

    /// `queue show` (app_queue's CLI, as in asterisk22-local.txt).
    fn queue_show(&self, only: Option<&str>) -> Vec<String> {
        let now_s = self.now / 1_000_000;
        let mut lines = Vec::new();
        for qu in &self.queues {
            if only.is_some_and(|n| n != &*qu.name) {
                continue;
            }
            lines.push(format!(
                "{} has {} calls (max unlimited) in '{}' strategy ({}s holdtime, {}s talktime), W:0, C:{}, A:{}, SL:0.0%, SL2:0.0% within 0s",
                qu.name,
                qu.callers.len(),
                qu.strategy.name(),
                qu.holdtime,
                qu.talktime,
                qu.completed,
                qu.abandoned
            ));
            if qu.members.is_empty() {
                lines.push("   No Members".to_string());
            } else {
                lines.push("   Members: ".to_string());
                for m in &qu.members {
                    let st = match self.endpoints[m.endpoint].devstate {
                        DevState::NotInUse => "Not in use",
                        DevState::InUse => "In use",
                        DevState::Ringing => "Ringing",
                        DevState::RingInUse => "Ring+Inuse",
                        DevState::OnHold => "On Hold",
                    };
                    let mut l = format!("      {} ({})", m.name, m.interface);
                    if m.dynamic {
                        l.push_str(" (dynamic)");
                    }
                    l.push_str(" (ringinuse disabled)");
                    if m.paused {
                        if m.paused_reason.is_empty() {
                            l.push_str(" (paused)");
                        } else {
                            l.push_str(&format!(" (paused:{})", m.paused_reason));
                        }
                    }
                    if m.in_call {
                        l.push_str(" (in call)");
                    }
                    l.push_str(&format!(" ({st})"));
                    if m.calls_taken == 0 {
                        l.push_str(" has taken no calls yet");
                    } else {
                        l.push_str(&format!(
                            " has taken {} calls (last was {} secs ago)",
                            m.calls_taken,
                            now_s.saturating_sub(m.last_call)
                        ));
                    }
                    l.push_str(&format!(
                        " (login was {} secs ago)",
                        now_s.saturating_sub(m.login_time)
                    ));
                    lines.push(l);
                }
            }
            if qu.callers.is_empty() {
                lines.push("   No Callers".to_string());
            } else {
                lines.push("   Callers: ".to_string());
                for (i, e) in qu.callers.iter().enumerate() {
                    let w = now_s.saturating_sub(e.joined_us / 1_000_000);
                    lines.push(format!(
                        "      {}. {} (wait: {}:{:02}, prio: 0)",
                        i + 1,
                        self.chans[e.chan].name,
                        w / 60,
                        w % 60
                    ));
                }
            }
            lines.push(String::new());
        }
        lines
    }

    pub(crate) fn act_core_settings(&mut self, aid: Option<&str>) -> Bytes {
        let v = self.cfg.asterisk_version;
        let sys = self.cfg.system_name.clone().unwrap_or_default();
        self.msg(|w| {
            w.f("Response", "Success");
            if let Some(a) = aid {
                w.f("ActionID", a);
            }
            w.f("AMIversion", v.ami_version())
                .f("AsteriskVersion", v.release())
                .f("SystemName", &sys)
                .f("CoreMaxCalls", "0")
                .f("CoreMaxLoadAvg", "0.000000")
                .f("CoreRunUser", "")
                .f("CoreRunGroup", "")
                .f("CoreMaxFilehandles", "0")
                .f("CoreRealTimeEnabled", "No")
                .f("CoreCDRenabled", "Yes")
                .f("CoreHTTPenabled", "No")
                .f("SoundsSearchCustomDir", "No");
        })
    }

    pub(crate) fn act_core_status(&mut self, aid: Option<&str>) -> Bytes {
        let (d, t) = fmt::date_and_time(self.boot_us / 1_000_000);
        let current = self.chans.iter().filter(|(_, c)| c.pbx).count() as u64;
        let processed = self.processed_calls;
        self.msg(|w| {
            w.f("Response", "Success");
            if let Some(a) = aid {
                w.f("ActionID", a);
            }
            w.f("CoreStartupDate", &d)
                .f("CoreStartupTime", &t)
                .f("CoreReloadDate", &d)
                .f("CoreReloadTime", &t)
                .n("CoreCurrentCalls", current)
                .n("CoreProcessedCalls", processed);
        })
    }
}

type SimTimeKey = (u64, u64);

/// The sequence number of a Uniqueid (`[name-]epoch.seq`).
fn uid_seq(uid: &str) -> u64 {
    uid.rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// QueueEntry renders unknown caller ids as `unknown` (app_queue's S_COR default).
fn unknown_lc(s: &str) -> &str {
    if s.is_empty() { "unknown" } else { s }
}
