//! `--replay FILE`: reads a recorded stream into timed messages and serves it to one
//! session after its login. Two kinds of file:
//!
//! - an `ami-sim --record` file (see `record`): every frame's events, at their recorded
//!   time;
//! - a raw capture of a real Asterisk (exact bytes received by a client, banner first,
//!   like `proto/tests/fixtures/ami/asterisk22-local.txt`): the banner and everything up
//!   to and including the capture's own login response (`Message: Authentication
//!   accepted`) are skipped. With `--replay-messages events` (the default) what is
//!   served is every message whose first line is `Event:` (broadcast events, event-list
//!   items, `OriginateResponse`), each one's bytes exactly as captured, so the bytes a
//!   client receives after its login are the capture's event stream byte for byte. With
//!   `--replay-messages all` every byte after the login response is served (responses
//!   to the capture's own actions included): the capture itself, byte for byte.
//!
//! Stray empty lines between two messages (a real Asterisk quirk) stay with the message
//! they precede. A message is filtered by the session's classes through its
//! `Privilege:` header; messages without one (responses, event-list items) reach every
//! session.
//!
//! # Timing of a raw capture
//!
//! A capture has no timestamps of its own, so times are derived from anchors inside it:
//! an event's `Timestamp:` (with `timestampevents = yes`), a security event's
//! `EventTV:`, and the `Uniqueid` of a `Newchannel` event (a channel's Uniqueid is
//! `[systemname-]<epoch seconds>.<sequence>`, created when the channel is, i.e. when
//! `Newchannel` is sent). An anchor is used only if it is later than the previous one
//! used (so times never go back and a second-resolution Uniqueid anchors the first
//! event of its second); messages between two anchors are spread evenly between them,
//! messages before the first anchor get its time, and messages after the last one
//! follow at the capture's mean message rate. A capture without any anchor is paced at
//! [`UNANCHORED_RATE`] messages per second. `--speed max` ignores all timing.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::ami::{BANNER_PREFIX, Classes, Item, MessageKind, Parser};
use thiserror::Error;

use crate::cli::{ReplayMessages, Speed};
use crate::record::MAGIC;
use crate::stream::Outbox;

/// A replay waits for the client once this much is queued for it.
const REPLAY_QUEUE_BYTES: usize = 256 * 1024;

/// Pace of a capture without time anchors (messages per second, before `--speed`).
pub const UNANCHORED_RATE: f64 = 100.0;

/// One message to serve.
#[derive(Debug, Clone)]
pub struct TimedMessage {
    /// µs after the stream's start.
    pub at_us: u64,
    /// The classes of its `Privilege:` header; `None`: sent to every session.
    pub class: Option<Classes>,
    pub bytes: Bytes,
}

/// A loaded stream.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub messages: Vec<TimedMessage>,
    /// True for an `ami-sim` recording (recorded times), false for a raw capture
    /// (derived times).
    pub recorded_times: bool,
    /// The banner of the file, if it has one.
    pub banner: Option<String>,
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Recording {
    /// Loads `path`: an `ami-sim` recording, or a raw capture.
    pub fn load(path: &std::path::Path, mode: ReplayMessages) -> Result<Recording, ReplayError> {
        let data = std::fs::read(path).map_err(|source| ReplayError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Recording::parse(Bytes::from(data), mode)
            .map_err(|e| ReplayError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Parses a file's bytes.
    pub fn parse(data: Bytes, mode: ReplayMessages) -> Result<Recording, String> {
        if data.starts_with(MAGIC.as_bytes()) {
            parse_recording(data)
        } else {
            parse_capture(data, mode)
        }
    }

    /// Total bytes of the messages.
    pub fn total_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.bytes.len()).sum()
    }
}

fn privilege_of(bytes: &[u8]) -> Option<Classes> {
    // The header is within the first lines; a message is small.
    let mut p = Parser::client().skip_banner();
    match p.parse(bytes) {
        Ok((_, Some(Item::Message(m)))) => m.privilege(),
        _ => None,
    }
}

/// An `ami-sim --record` file.
fn parse_recording(data: Bytes) -> Result<Recording, String> {
    let mut pos = 0;
    let mut banner = None;
    let mut messages = Vec::new();
    while pos < data.len() {
        let Some(nl) = data[pos..].iter().position(|&b| b == b'\n') else {
            break; // a header or frame line cut short
        };
        let line = &data[pos..pos + nl];
        pos += nl + 1;
        if let Some(h) = line.strip_prefix(b"#") {
            if let Some(b) = h.strip_prefix(b"banner ") {
                banner = Some(String::from_utf8_lossy(b).into_owned());
            }
            continue;
        }
        let line =
            std::str::from_utf8(line).map_err(|_| format!("bad frame line at byte {pos}"))?;
        let (t, n) = line
            .strip_prefix('@')
            .and_then(|l| l.split_once(' '))
            .ok_or_else(|| format!("bad frame line {line:?}"))?;
        let t: u64 = t.parse().map_err(|_| format!("bad frame time {t:?}"))?;
        let n: usize = n.parse().map_err(|_| format!("bad frame length {n:?}"))?;
        if pos + n > data.len() {
            break; // the last frame of an interrupted recording
        }
        let frame = data.slice(pos..pos + n);
        pos += n;
        // Split the frame into its messages (each ends with an empty line).
        let mut start = 0;
        let mut p = Parser::client().skip_banner();
        while start < frame.len() {
            match p.parse(&frame[start..]) {
                Ok((used, Some(Item::Message(m)))) => {
                    let class = m.privilege();
                    let bytes = frame.slice(start..start + used);
                    messages.push(TimedMessage {
                        at_us: t,
                        class,
                        bytes,
                    });
                    start += used;
                }
                Ok((_, None)) => {
                    return Err(format!("frame @{t} ends inside a message"));
                }
                Ok((_, Some(_))) | Err(_) => return Err(format!("frame @{t} is not AMI")),
            }
        }
    }
    Ok(Recording {
        messages,
        recorded_times: true,
        banner,
    })
}

/// One message of a capture: its span (stray empty lines before it included).
struct Span {
    start: usize,
    end: usize,
    kind: MessageKind,
    login_ok: bool,
    anchor: Option<u64>,
}

/// A raw capture.
fn parse_capture(data: Bytes, mode: ReplayMessages) -> Result<Recording, String> {
    let mut parser = if data.starts_with(BANNER_PREFIX.as_bytes()) {
        Parser::client()
    } else {
        // No banner: a stream that starts with messages.
        Parser::client().skip_banner()
    };
    let mut pos = 0;
    let mut banner = None;
    let mut spans: Vec<Span> = Vec::new();
    loop {
        let rest = &data[pos..];
        if rest.is_empty() {
            break;
        }
        match parser.parse(rest) {
            Ok((used, Some(Item::Banner(v)))) => {
                banner = Some(format!("Asterisk Call Manager/{v}"));
                pos += used;
            }
            Ok((used, Some(Item::Message(m)))) => {
                let kind = m.kind();
                let login_ok = kind == MessageKind::Response
                    && m.get("Message") == Some(b"Authentication accepted".as_slice());
                let anchor = anchor_of(&m);
                // Empty lines before the message belong to the one before it.
                let lead = used - m.raw().len();
                let start = match spans.last_mut() {
                    Some(prev) => {
                        prev.end += lead;
                        pos + lead
                    }
                    None => pos,
                };
                spans.push(Span {
                    start,
                    end: pos + used,
                    kind,
                    login_ok,
                    anchor,
                });
                pos += used;
            }
            Ok((used, None)) => {
                // Empty lines, then nothing or an incomplete message.
                if let Some(prev) = spans.last_mut() {
                    prev.end += used;
                }
                pos += used;
                break;
            }
            Ok((_, Some(Item::Rejected(_)))) => {
                return Err("unexpected rejection from a client-role parser".into());
            }
            Err(e) => return Err(format!("not AMI at byte {pos}: {e}")),
        }
    }
    let tail = pos; // bytes after the last complete message
    let first = spans.iter().position(|s| s.login_ok).map_or(0, |i| i + 1);
    let served = &spans[first..];
    let times = derive_times(served);
    let mut messages = Vec::new();
    for (s, at_us) in served.iter().zip(times) {
        if mode == ReplayMessages::Events && s.kind != MessageKind::Event {
            continue;
        }
        let bytes = data.slice(s.start..s.end);
        let class = privilege_of(&bytes);
        messages.push(TimedMessage {
            at_us,
            class,
            bytes,
        });
    }
    if mode == ReplayMessages::All && tail < data.len() {
        let at_us = messages.last().map_or(0, |m| m.at_us);
        messages.push(TimedMessage {
            at_us,
            class: None,
            bytes: data.slice(tail..),
        });
    }
    Ok(Recording {
        messages,
        recorded_times: false,
        banner,
    })
}

/// A time anchor of a message (µs since the epoch), see the module docs.
fn anchor_of(m: &switchboard_proto::ami::Message<'_>) -> Option<u64> {
    if let Some(ts) = m.get_str("Timestamp")
        && m.kind() == MessageKind::Event
        && let Some(t) = parse_epoch_fraction(&ts)
    {
        return Some(t);
    }
    if let Some(tv) = m.get_str("EventTV")
        && let Some(t) = parse_event_tv(&tv)
    {
        return Some(t);
    }
    if m.event() == Some(b"Newchannel".as_slice())
        && let Some(uid) = m.get_str("Uniqueid")
    {
        let tail = uid.rsplit('-').next().unwrap_or(&uid);
        let secs = tail.split('.').next()?;
        return secs.parse::<u64>().ok().map(|s| s * 1_000_000);
    }
    None
}

/// `1795248502.607277` as µs.
fn parse_epoch_fraction(s: &str) -> Option<u64> {
    crate::cli::parse_epoch(s.trim()).ok()
}

/// `2026-11-21T08:27:24.748+0000` (UTC, as Asterisk writes security events) as µs.
pub fn parse_event_tv(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time = time
        .strip_suffix("+0000")
        .or_else(|| time.strip_suffix('Z'))?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, mi, se): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let days = crate::server::days_from_civil(y, mo, da);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    Some(secs * 1_000_000 + micros)
}

/// Times (µs after the first anchor) of the served messages, see the module docs.
fn derive_times(spans: &[Span]) -> Vec<u64> {
    let mut anchors: Vec<(usize, u64)> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if let Some(t) = s.anchor
            && anchors.last().is_none_or(|&(_, last)| t > last)
        {
            anchors.push((i, t));
        }
    }
    let n = spans.len();
    let Some(&(_, t0)) = anchors.first() else {
        let step = (1e6 / UNANCHORED_RATE) as u64;
        return (0..n as u64).map(|i| i * step).collect();
    };
    let mut out = vec![0u64; n];
    let (first_i, _) = anchors[0];
    for slot in out.iter_mut().take(first_i + 1) {
        *slot = 0;
    }
    for w in anchors.windows(2) {
        let ((i0, a), (i1, b)) = (w[0], w[1]);
        for (k, slot) in out.iter_mut().enumerate().take(i1 + 1).skip(i0) {
            let f = (k - i0) as f64 / (i1 - i0) as f64;
            *slot = (a - t0) + ((b - a) as f64 * f) as u64;
        }
    }
    let &(last_i, last_t) = anchors.last().expect("not empty");
    let span_us = last_t - t0;
    let per_msg = if last_i > first_i && span_us > 0 {
        span_us as f64 / (last_i - first_i) as f64
    } else {
        1e6 / UNANCHORED_RATE
    };
    for (k, slot) in out.iter_mut().enumerate().skip(last_i + 1) {
        *slot = span_us + ((k - last_i) as f64 * per_msg) as u64;
    }
    out
}

/// Serves `rec` into `outbox` (whose classes filter it) from now on, at `speed`.
/// Returns when everything is queued or the session is gone.
pub async fn serve(rec: Rc<Recording>, outbox: Rc<Outbox>, speed: Speed) {
    let t0 = std::time::Instant::now();
    let first_at = rec.messages.first().map_or(0, |m| m.at_us);
    for m in &rec.messages {
        if !outbox.is_open() {
            return;
        }
        if let Speed::Factor(f) = speed {
            let due = t0 + Duration::from_secs_f64((m.at_us - first_at) as f64 / 1e6 / f);
            if due > std::time::Instant::now() {
                outbox.wake_writer();
                monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
                if !outbox.is_open() {
                    return;
                }
            }
        }
        // A burst (everything at --speed max, or many messages due at once) goes out
        // as fast as the client reads, never faster: the queue is not allowed to grow
        // past a few writes. A client that does not read at all is still dropped by
        // the write timeout.
        if !outbox.room(REPLAY_QUEUE_BYTES).await {
            return;
        }
        let deliver = m.class.is_none_or(|c| outbox.classes().intersects(c));
        if deliver && !outbox.push_quiet(&m.bytes) {
            return;
        }
    }
    outbox.wake_writer();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordHeader, frame_bytes, header_text};

    const CAPTURE: &[u8] = b"Asterisk Call Manager/11.0.0\r\n\
        Response: Success\r\nActionID: kit-1\r\nMessage: Authentication accepted\r\n\r\n\
        Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 224\r\nLastReload: 224\r\nStatus: Fully Booted\r\n\r\n\
        Event: Newchannel\r\nPrivilege: call,all\r\nUniqueid: 1795249000.1\r\n\r\n\
        Response: Success\r\nActionID: kit-2\r\nMessage: Park successful\n\r\n\r\n\
        Event: QueueParams\r\nQueue: support\r\nActionID: kit-4\r\n\r\n\
        \r\n\
        Event: Newchannel\r\nPrivilege: call,all\r\nUniqueid: kitpbx-1795249010.2\r\n\r\n\
        Event: Hangup\r\nPrivilege: call,all\r\n\r\n\
        Response: Goodbye\r\nActionID: kit-9\r\nMessage: Thanks for all the fish.\r\n\r\n";

    fn concat(r: &Recording) -> Vec<u8> {
        r.messages
            .iter()
            .flat_map(|m| m.bytes.iter().copied())
            .collect()
    }

    #[test]
    fn capture_events_mode_is_the_event_stream_byte_for_byte() {
        let r = Recording::parse(Bytes::from_static(CAPTURE), ReplayMessages::Events).unwrap();
        assert!(!r.recorded_times);
        assert_eq!(r.banner.as_deref(), Some("Asterisk Call Manager/11.0.0"));
        let expected: Vec<u8> = [
            &b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 224\r\nLastReload: 224\r\nStatus: Fully Booted\r\n\r\n"[..],
            b"Event: Newchannel\r\nPrivilege: call,all\r\nUniqueid: 1795249000.1\r\n\r\n",
            b"Event: QueueParams\r\nQueue: support\r\nActionID: kit-4\r\n\r\n\r\n",
            b"Event: Newchannel\r\nPrivilege: call,all\r\nUniqueid: kitpbx-1795249010.2\r\n\r\n",
            b"Event: Hangup\r\nPrivilege: call,all\r\n\r\n",
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&concat(&r)),
            String::from_utf8_lossy(&expected)
        );
        let classes: Vec<_> = r.messages.iter().map(|m| m.class).collect();
        assert_eq!(
            classes,
            [
                Some(Classes::SYSTEM),
                Some(Classes::CALL),
                None,
                Some(Classes::CALL),
                Some(Classes::CALL)
            ]
        );
    }

    #[test]
    fn capture_all_mode_is_everything_after_the_login_response() {
        let r = Recording::parse(Bytes::from_static(CAPTURE), ReplayMessages::All).unwrap();
        let login_end = CAPTURE
            .windows(27)
            .position(|w| w == b"Authentication accepted\r\n\r\n")
            .unwrap()
            + 27;
        assert_eq!(concat(&r), &CAPTURE[login_end..]);
    }

    #[test]
    fn capture_times_from_anchors() {
        let r = Recording::parse(Bytes::from_static(CAPTURE), ReplayMessages::All).unwrap();
        let at: Vec<u64> = r.messages.iter().map(|m| m.at_us).collect();
        // Anchors: message 1 (1795249000 s) and message 4 (1795249010 s, 10 s later);
        // the messages between are spread evenly; after the last anchor they follow at
        // the mean rate (10 s / 3 messages).
        assert_eq!(&at[..5], &[0, 0, 3_333_333, 6_666_666, 10_000_000]);
        assert_eq!(at[5], 13_333_333);
        assert_eq!(at[6], 16_666_666);
    }

    #[test]
    fn captures_without_login_or_banner() {
        let r = Recording::parse(
            Bytes::from_static(b"Event: A\r\nPrivilege: call,all\r\n\r\nEvent: B\r\n\r\n"),
            ReplayMessages::Events,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].at_us, 10_000); // UNANCHORED_RATE
        assert!(
            Recording::parse(
                Bytes::from_static(b"\x00\x01 not ami"),
                ReplayMessages::Events
            )
            .is_ok_and(|r| r.messages.is_empty())
        );
    }

    #[test]
    fn event_tv() {
        assert_eq!(
            parse_event_tv("2026-11-21T08:27:24.748+0000"),
            Some(1_795_249_644_748_000)
        );
        assert_eq!(parse_event_tv("1970-01-01T00:00:01+0000"), Some(1_000_000));
        assert_eq!(parse_event_tv("yesterday"), None);
    }

    #[test]
    fn own_recordings_round_trip() {
        let mut data = header_text(&RecordHeader {
            banner: "Asterisk Call Manager/5.0.4".into(),
            start_us: 5,
            seed: 1,
        })
        .into_bytes();
        frame_bytes(
            &mut data,
            0,
            b"Event: FullyBooted\r\nPrivilege: system,all\r\n\r\n",
        );
        frame_bytes(
            &mut data,
            2_500,
            b"Event: A\r\nPrivilege: call,all\r\n\r\nEvent: B\r\nPrivilege: agent,all\r\n\r\n",
        );
        data.extend_from_slice(b"@9000 100\nEvent: cut"); // an interrupted last frame
        let r = Recording::parse(Bytes::from(data), ReplayMessages::Events).unwrap();
        assert!(r.recorded_times);
        assert_eq!(r.banner.as_deref(), Some("Asterisk Call Manager/5.0.4"));
        let got: Vec<(u64, Option<Classes>)> =
            r.messages.iter().map(|m| (m.at_us, m.class)).collect();
        assert_eq!(
            got,
            [
                (0, Some(Classes::SYSTEM)),
                (2_500, Some(Classes::CALL)),
                (2_500, Some(Classes::AGENT))
            ]
        );
        assert_eq!(
            &r.messages[2].bytes[..],
            b"Event: B\r\nPrivilege: agent,all\r\n\r\n"
        );
    }

    #[test]
    fn the_real_capture_loads() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../proto/tests/fixtures/ami/asterisk22-local.txt"
        );
        let r = Recording::load(std::path::Path::new(path), ReplayMessages::Events).unwrap();
        assert!(r.messages.len() > 20_000, "{}", r.messages.len());
        assert!(r.messages[0].bytes.starts_with(b"Event: FullyBooted\r\n"));
        // The capture ran 156 s: the derived times span about that.
        let last = r.messages.last().unwrap().at_us;
        assert!((100_000_000..200_000_000).contains(&last), "{last}");
        assert!(r.messages.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    }
}
