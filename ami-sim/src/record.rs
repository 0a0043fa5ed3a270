//! `--record FILE`: writes the simulated event stream with the simulated time of every
//! event, in a format that is readable as text and that `--replay` reads back.
//!
//! # Format (version 1)
//!
//! ```text
//! #ami-sim-record 1
//! #banner Asterisk Call Manager/11.0.0
//! #start-us 1795248000000000
//! #seed 7
//! @0 103
//! Event: FullyBooted\r\n ... \r\n\r\n
//! @1250400 1934
//! Event: Newchannel\r\n ... \r\n\r\nEvent: VarSet\r\n ... \r\n\r\n
//! ```
//!
//! - Header lines start with `#` and end with `\n`: the format and its version first,
//!   then `banner` (what the simulated PBX greets with), `start-us` (the simulated start,
//!   µs since the Unix epoch) and `seed`. Readers ignore header lines they do not know.
//! - Then frames, one per due time: `@<T> <N>\n` and exactly N bytes: the events due at
//!   T, µs after the start, exactly as a client receives them (`\r\n` line ends, each
//!   event ended by an empty line). T never decreases. The first frame (`@0`) is the
//!   `FullyBooted` a client logging in at the start receives (`Uptime: 0`).
//! - What is recorded is the PBX's stream for a client with `read = all` and `Events:
//!   on`: every event of every class, nothing specific to a session (responses,
//!   `SuccessfulAuth`, faults). With `--seed` the file depends only on the seed, the
//!   options and the simulated duration (`--duration`), so two runs give the same bytes.
//! - The file is flushed after every batch, so an interrupted run leaves a valid file
//!   (a last frame cut short is ignored by `--replay`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::pbx::Event;

/// The first header line.
pub const MAGIC: &str = "#ami-sim-record 1";

/// What the header says besides the magic line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub banner: String,
    pub start_us: u64,
    pub seed: u64,
}

/// Writes a recording.
#[derive(Debug)]
pub struct Recorder {
    out: BufWriter<File>,
    path: PathBuf,
    error: Option<io::Error>,
    last_t: u64,
}

/// The header's text.
pub fn header_text(h: &RecordHeader) -> String {
    format!(
        "{MAGIC}\n#banner {}\n#start-us {}\n#seed {}\n",
        h.banner, h.start_us, h.seed
    )
}

/// A frame's bytes.
pub fn frame_bytes(out: &mut Vec<u8>, t_us: u64, payload: &[u8]) {
    out.extend_from_slice(format!("@{t_us} {}\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
}

impl Recorder {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: &Path, header: &RecordHeader) -> io::Result<Recorder> {
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        out.write_all(header_text(header).as_bytes())?;
        out.flush()?;
        Ok(Recorder {
            out,
            path: path.to_path_buf(),
            error: None,
            last_t: 0,
        })
    }

    /// Appends one frame of raw bytes at `t_us` after the start.
    pub fn raw_frame(&mut self, t_us: u64, payload: &[u8]) {
        if self.error.is_some() || payload.is_empty() {
            return;
        }
        let t_us = t_us.max(self.last_t);
        self.last_t = t_us;
        let head = format!("@{t_us} {}\n", payload.len());
        let r = self
            .out
            .write_all(head.as_bytes())
            .and_then(|()| self.out.write_all(payload));
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    /// Appends one frame: the events due at `t_us` after the start.
    pub fn frame(&mut self, t_us: u64, events: &[Event]) {
        if self.error.is_some() || events.is_empty() {
            return;
        }
        let t_us = t_us.max(self.last_t);
        self.last_t = t_us;
        let len: usize = events.iter().map(|e| e.bytes.len()).sum();
        let head = format!("@{t_us} {len}\n");
        let mut r = self.out.write_all(head.as_bytes());
        for e in events {
            r = r.and_then(|()| self.out.write_all(&e.bytes));
        }
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    /// Pushes what is buffered to the file.
    pub fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e);
        }
    }

    /// The first write error, if any (recording stops at the first error).
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchboard_proto::ami::Classes;

    use super::*;

    #[test]
    fn writes_the_documented_format() {
        let dir = std::env::temp_dir().join(format!("ami-sim-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.rec");
        let h = RecordHeader {
            banner: "Asterisk Call Manager/11.0.0".into(),
            start_us: 1_795_248_000_000_000,
            seed: 7,
        };
        let mut r = Recorder::create(&path, &h).unwrap();
        r.raw_frame(0, b"Event: FullyBooted\r\n\r\n");
        let ev = |s: &'static str| Event {
            name: "X",
            class: Classes::CALL,
            bytes: Bytes::from_static(s.as_bytes()),
        };
        r.frame(1_500, &[ev("Event: A\r\n\r\n"), ev("Event: B\r\n\r\n")]);
        r.frame(1_000, &[ev("Event: C\r\n\r\n")]); // never goes back in time
        r.frame(2_000, &[]);
        r.flush();
        assert!(r.error().is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "#ami-sim-record 1\n#banner Asterisk Call Manager/11.0.0\n#start-us 1795248000000000\n#seed 7\n\
             @0 22\nEvent: FullyBooted\r\n\r\n\
             @1500 24\nEvent: A\r\n\r\nEvent: B\r\n\r\n\
             @1500 12\nEvent: C\r\n\r\n"
        );
        let mut again = Vec::new();
        frame_bytes(&mut again, 1500, b"Event: C\r\n\r\n");
        assert!(text.as_bytes().ends_with(&again));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
