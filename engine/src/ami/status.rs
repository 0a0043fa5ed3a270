//! What the AMI thread shows the world: the session's state and counters, read by
//! `/metrics` and `/healthz` on any shard. Plain atomics written by the AMI thread only,
//! plus a lock for the rare text (the last error) and the failure counts by kind.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

/// The AMI session as other threads see it.
#[derive(Debug, Default)]
pub struct AmiStatus {
    /// TCP connected to the PBX.
    pub connected: AtomicBool,
    /// Logged in.
    pub logged_in: AtomicBool,
    /// Logged in and the state resynchronised: events flow to topics.
    pub live: AtomicBool,
    /// Unix milliseconds since which the session is live (0: not live).
    pub live_since_ms: AtomicU64,
    pub attempts: AtomicU64,
    /// Sessions lost after a successful login.
    pub reconnects: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Messages (events, responses) read from the PBX.
    pub messages: AtomicU64,
    /// Messages handed to the router.
    pub published: AtomicU64,
    pub snapshots: AtomicU64,
    /// Messages that were neither events nor responses, skipped.
    pub garbage: AtomicU64,
    pub channels: AtomicU64,
    pub calls: AtomicU64,
    pub queues: AtomicU64,
    /// Actions written to the PBX.
    pub actions_sent: AtomicU64,
    /// Unix milliseconds of the next connection attempt while waiting (0: none).
    pub retry_at_ms: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last failure: what happened and when (Unix milliseconds).
    last_error: Option<(String, u64)>,
    /// Failures by kind, in first-seen order.
    failures: Vec<(&'static str, u64)>,
    /// Action results by code (`ok`, `forbidden`, ...).
    results: Vec<(&'static str, u64)>,
    /// The PBX's AMI version (banner).
    version: Option<String>,
}

fn bump(list: &mut Vec<(&'static str, u64)>, key: &'static str) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => list.push((key, 1)),
    }
}

impl AmiStatus {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the counters are still sound.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn failed(&self, kind: &'static str, text: String, now_ms: u64) {
        let mut inner = self.inner();
        bump(&mut inner.failures, kind);
        inner.last_error = Some((text, now_ms));
    }

    pub fn result(&self, code: &'static str) {
        bump(&mut self.inner().results, code);
    }

    pub fn set_version(&self, version: Option<String>) {
        self.inner().version = version;
    }

    /// The `/healthz` line: `ami: live 5.0.4 since <ms>` or `ami: down (<last error>)`.
    pub fn health_line(&self) -> String {
        let inner = self.inner();
        if self.live.load(Relaxed) {
            format!(
                "ami: live (AMI {}, since unix ms {})",
                inner.version.as_deref().unwrap_or("?"),
                self.live_since_ms.load(Relaxed)
            )
        } else {
            let state = if self.logged_in.load(Relaxed) {
                "synchronising"
            } else if self.connected.load(Relaxed) {
                "logging in"
            } else {
                "down"
            };
            match &inner.last_error {
                Some((e, at)) => format!("ami: {state} (last error at unix ms {at}: {e})"),
                None => format!("ami: {state}"),
            }
        }
    }

    /// Appends the `switchboard_ami_*` families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let gauges: [(&str, &str, u64); 7] = [
            (
                "switchboard_ami_connected",
                "TCP connection to the PBX is up (1).",
                u64::from(self.connected.load(Relaxed)),
            ),
            (
                "switchboard_ami_logged_in",
                "Logged in to the PBX (1).",
                u64::from(self.logged_in.load(Relaxed)),
            ),
            (
                "switchboard_ami_up",
                "Logged in and synchronised: PBX events reach ami.* topics (1).",
                u64::from(self.live.load(Relaxed)),
            ),
            (
                "switchboard_ami_channels",
                "Live channels in the PBX state model.",
                self.channels.load(Relaxed),
            ),
            (
                "switchboard_ami_calls",
                "Live calls (by Linkedid) in the PBX state model.",
                self.calls.load(Relaxed),
            ),
            (
                "switchboard_ami_queues",
                "Queues in the PBX state model.",
                self.queues.load(Relaxed),
            ),
            (
                "switchboard_ami_retry_at_seconds",
                "Unix time of the next attempt to reach the PBX (0: not waiting).",
                self.retry_at_ms.load(Relaxed) / 1000,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters: [(&str, &str, u64); 8] = [
            (
                "switchboard_ami_garbage_total",
                "Messages from the PBX that were neither events nor responses, skipped.",
                self.garbage.load(Relaxed),
            ),
            (
                "switchboard_ami_connect_attempts_total",
                "Attempts to connect to the PBX.",
                self.attempts.load(Relaxed),
            ),
            (
                "switchboard_ami_reconnects_total",
                "Sessions lost after a successful login.",
                self.reconnects.load(Relaxed),
            ),
            (
                "switchboard_ami_received_bytes_total",
                "Bytes read from the PBX.",
                self.bytes_received.load(Relaxed),
            ),
            (
                "switchboard_ami_messages_total",
                "Messages (events and responses) read from the PBX.",
                self.messages.load(Relaxed),
            ),
            (
                "switchboard_ami_published_total",
                "Messages the AMI thread published on ami.* topics.",
                self.published.load(Relaxed),
            ),
            (
                "switchboard_ami_snapshots_total",
                "Snapshots made for new subscribers.",
                self.snapshots.load(Relaxed),
            ),
            (
                "switchboard_ami_actions_sent_total",
                "Actions the gateway wrote to the PBX.",
                self.actions_sent.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let inner = self.inner();
        let _ = writeln!(
            out,
            "# HELP switchboard_ami_failures_total Sessions with the PBX that failed, by kind.\n\
             # TYPE switchboard_ami_failures_total counter"
        );
        for (kind, n) in &inner.failures {
            let _ = writeln!(out, "switchboard_ami_failures_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_ami_action_results_total Action results, by code.\n\
             # TYPE switchboard_ami_action_results_total counter"
        );
        for (code, n) in &inner.results {
            let _ = writeln!(
                out,
                "switchboard_ami_action_results_total{{code=\"{code}\"}} {n}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_and_counts_by_kind() {
        let s = AmiStatus::default();
        s.failed("refused", "connection refused".into(), 1_000);
        s.failed("refused", "connection refused".into(), 2_000);
        s.failed("login", "Authentication failed".into(), 3_000);
        s.result("ok");
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.contains("switchboard_ami_failures_total{kind=\"refused\"} 2"));
        assert!(out.contains("switchboard_ami_failures_total{kind=\"login\"} 1"));
        assert!(out.contains("switchboard_ami_action_results_total{code=\"ok\"} 1"));
        assert!(out.contains("switchboard_ami_up 0"));
        assert_eq!(
            s.health_line(),
            "ami: down (last error at unix ms 3000: Authentication failed)"
        );
    }
}
