//! Faults injected on request (`--fault`), so that a client's supervisor can be tested
//! against a PBX that misbehaves: periodic disconnects, garbage in the stream, stalls,
//! a slow link, refused logins. This module parses the specs and answers "what now?"
//! for one session from the time since its login; the session's tasks act on it. Never
//! does I/O.
//!
//! Exact semantics (every period is measured from the session's successful login; a
//! session that never logs in meets only `refuse-login` and the login timeout):
//!
//! - `disconnect-every=D`: D after login the session is closed abruptly (no `Goodbye`,
//!   whatever is queued is discarded), like a PBX restart or a cut link. The client
//!   reconnects to get a new session, which is closed D after its own login.
//! - `garbage-every=D`: every D after login, [`garbage`] (one line that is not AMI,
//!   then an empty line) is written between two messages. A client that resynchronises
//!   at the next empty line loses nothing else.
//! - `stall=S[/P]` (P defaults to 30 s, S < P): in every period P after login the session
//!   writes nothing during the last S: from k*P - S to k*P (k = 1, 2, ...). Events and
//!   responses keep being queued meanwhile (within `--max-queue`, beyond which the
//!   session is dropped as usual) and are written at once when the stall ends. Reading
//!   and the write timeout are not affected (nothing is being written).
//! - `slow-write=B`: at most B bytes per second are written to each session (in slices
//!   of B/10 bytes every 100 ms). Output beyond that rate queues up to `--max-queue`.
//! - `refuse-login`: every `Login` fails as a wrong secret does (1 s delay,
//!   `Authentication failed`, close).

use std::time::Duration;

use crate::cli::parse_duration;

/// The default period of `stall=S`.
pub const DEFAULT_STALL_PERIOD: Duration = Duration::from_secs(30);

/// One `--fault` spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    DisconnectEvery(Duration),
    GarbageEvery(Duration),
    Stall { stall: Duration, period: Duration },
    SlowWrite { bytes_per_sec: u64 },
    RefuseLogin,
}

impl Fault {
    /// Parses `disconnect-every=30s`, `garbage-every=10s`, `stall=5s`, `stall=5s/20s`,
    /// `slow-write=1000`, `refuse-login`.
    pub fn parse(spec: &str) -> Result<Fault, String> {
        let (name, value) = match spec.trim().split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (spec.trim(), None),
        };
        fn need<'a>(name: &str, v: Option<&'a str>) -> Result<&'a str, String> {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| format!("fault {name:?} needs a value ({name}=...)"))
        }
        let positive = |v: &str| -> Result<Duration, String> {
            let d = parse_duration(v)?;
            if d.is_zero() {
                return Err(format!("fault {spec:?}: the duration must not be zero"));
            }
            Ok(d)
        };
        match name {
            "disconnect-every" => Ok(Fault::DisconnectEvery(positive(need(name, value)?)?)),
            "garbage-every" => Ok(Fault::GarbageEvery(positive(need(name, value)?)?)),
            "stall" => {
                let v = need(name, value)?;
                let (s, p) = match v.split_once('/') {
                    Some((s, p)) => (positive(s)?, positive(p)?),
                    None => (positive(v)?, DEFAULT_STALL_PERIOD),
                };
                if s >= p {
                    return Err(format!(
                        "fault {spec:?}: the stall must be shorter than its period"
                    ));
                }
                Ok(Fault::Stall {
                    stall: s,
                    period: p,
                })
            }
            "slow-write" => {
                let v = need(name, value)?;
                let b: u64 = v.parse().map_err(|_| {
                    format!("fault {spec:?}: slow-write takes bytes per second (e.g. 1000)")
                })?;
                if b == 0 {
                    return Err(format!("fault {spec:?}: the rate must be positive"));
                }
                Ok(Fault::SlowWrite { bytes_per_sec: b })
            }
            "refuse-login" if value.is_none() => Ok(Fault::RefuseLogin),
            "refuse-login" => Err(format!("fault {spec:?}: refuse-login takes no value")),
            _ => Err(format!(
                "unknown fault {spec:?} (disconnect-every=D, garbage-every=D, stall=S[/P], \
                 slow-write=BYTES_PER_SEC, refuse-login)"
            )),
        }
    }
}

/// Every fault in force, merged (a later spec of the same kind wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub disconnect_every: Option<Duration>,
    pub garbage_every: Option<Duration>,
    /// (stall, period)
    pub stall: Option<(Duration, Duration)>,
    pub slow_write: Option<u64>,
    pub refuse_login: bool,
}

impl Faults {
    pub fn from_list(list: &[Fault]) -> Faults {
        let mut f = Faults::default();
        for fault in list {
            match *fault {
                Fault::DisconnectEvery(d) => f.disconnect_every = Some(d),
                Fault::GarbageEvery(d) => f.garbage_every = Some(d),
                Fault::Stall { stall, period } => f.stall = Some((stall, period)),
                Fault::SlowWrite { bytes_per_sec } => f.slow_write = Some(bytes_per_sec),
                Fault::RefuseLogin => f.refuse_login = true,
            }
        }
        f
    }

    /// With `stall`, and `since_login` the time since the session's login: `Some(left)`
    /// if writing is stalled now, for `left` more.
    pub fn stalled(&self, since_login: Duration) -> Option<Duration> {
        let (stall, period) = self.stall?;
        let t = since_login.as_micros();
        let p = period.as_micros();
        let s = stall.as_micros();
        // The stall of period k runs from k*P - S to k*P.
        let into = t % p;
        if t + s >= p && into >= p - s {
            Some(Duration::from_micros((p - into) as u64))
        } else {
            None
        }
    }
}

/// The `n`-th garbage chunk: a line that is no AMI header (no colon; a NUL and bytes that
/// are not UTF-8 in it), then an empty line, so the stream resynchronises right after it.
pub fn garbage(n: u64) -> Vec<u8> {
    let mut g = format!("~~ ami-sim garbage #{n} ").into_bytes();
    g.extend_from_slice(b"\x00\x7f\xfe\xff ~~\r\n\r\n");
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault() {
        let s = Duration::from_secs;
        assert_eq!(
            Fault::parse("disconnect-every=30s"),
            Ok(Fault::DisconnectEvery(s(30)))
        );
        assert_eq!(
            Fault::parse("garbage-every=500ms"),
            Ok(Fault::GarbageEvery(Duration::from_millis(500)))
        );
        assert_eq!(
            Fault::parse("stall=5s"),
            Ok(Fault::Stall {
                stall: s(5),
                period: s(30)
            })
        );
        assert_eq!(
            Fault::parse("stall=2s/3s"),
            Ok(Fault::Stall {
                stall: s(2),
                period: s(3)
            })
        );
        assert_eq!(
            Fault::parse("slow-write=1000"),
            Ok(Fault::SlowWrite {
                bytes_per_sec: 1000
            })
        );
        assert_eq!(Fault::parse("refuse-login"), Ok(Fault::RefuseLogin));
        for bad in [
            "explode",
            "disconnect-every",
            "disconnect-every=",
            "disconnect-every=0s",
            "garbage-every=soon",
            "stall=30s",
            "stall=5s/5s",
            "slow-write=0",
            "slow-write=1k",
            "refuse-login=yes",
        ] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn merged_and_stall_windows() {
        let f = Faults::from_list(&[
            Fault::RefuseLogin,
            Fault::Stall {
                stall: Duration::from_secs(2),
                period: Duration::from_secs(5),
            },
            Fault::SlowWrite { bytes_per_sec: 10 },
            Fault::SlowWrite { bytes_per_sec: 20 },
        ]);
        assert!(f.refuse_login);
        assert_eq!(f.slow_write, Some(20));
        let ms = Duration::from_millis;
        // Stalled in [3 s, 5 s), [8 s, 10 s), ...
        assert_eq!(f.stalled(ms(0)), None);
        assert_eq!(f.stalled(ms(2999)), None);
        assert_eq!(f.stalled(ms(3000)), Some(ms(2000)));
        assert_eq!(f.stalled(ms(4500)), Some(ms(500)));
        assert_eq!(f.stalled(ms(5000)), None);
        assert_eq!(f.stalled(ms(7999)), None);
        assert_eq!(f.stalled(ms(9000)), Some(ms(1000)));
        assert_eq!(Faults::default().stalled(ms(4000)), None);
    }

    #[test]
    fn garbage_is_not_ami_and_ends_with_an_empty_line() {
        let g = garbage(3);
        assert!(g.starts_with(b"~~ ami-sim garbage #3 "));
        assert!(g.ends_with(b"\r\n\r\n"));
        assert!(!g.contains(&b':'));
        assert!(std::str::from_utf8(&g).is_err());
    }
}
