//! The live progress line: an indicatif bar when stderr is a terminal, else a plain line
//! every few seconds (logs, CI). Call [`Progress::update`] from a timer (a few times a
//! second), never per connection or per message.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::thousands;

/// How often the plain (non-terminal) form prints a line.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// A progress display: connections established out of the target, rate, errors.
pub struct Progress {
    inner: Inner,
}

enum Inner {
    Bar(ProgressBar),
    Plain(Mutex<Plain>),
    Hidden,
}

struct Plain {
    what: String,
    target: u64,
    start: Instant,
    interval: Duration,
    last_print: Option<Instant>,
    state: (u64, f64, u64),
    out: Box<dyn Write + Send>,
    finished: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Bar(_) => "bar",
            Inner::Plain(_) => "plain",
            Inner::Hidden => "hidden",
        };
        f.debug_struct("Progress").field("kind", &kind).finish()
    }
}

impl Plain {
    fn line(&self, done: bool) -> String {
        let (est, rate, errors) = self.state;
        let pct = if self.target > 0 {
            format!(" ({:.1}%)", est as f64 * 100.0 / self.target as f64)
        } else {
            String::new()
        };
        format!(
            "{}{}: {}/{} connections{pct}, {}/s, {} errors, {:.1} s",
            self.what,
            if done { " done" } else { "" },
            thousands(est),
            thousands(self.target),
            thousands(rate.max(0.0).round() as u64),
            thousands(errors),
            self.start.elapsed().as_secs_f64()
        )
    }

    fn print(&mut self, done: bool) {
        let line = self.line(done);
        // Progress output is best effort: a closed stderr must not stop the run.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
        self.last_print = Some(Instant::now());
    }
}

impl Progress {
    /// A bar on stderr when it is a terminal, else plain lines on stderr every
    /// [`PLAIN_INTERVAL`]. `what` names the phase (`hold: ramp`); `target` is the number of
    /// connections aimed at.
    pub fn new(what: &str, target: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(target), ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template(
                "{prefix:.bold} [{elapsed_precise}] {bar:30.cyan/blue} {human_pos}/{human_len} conns  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(what.to_string());
            Progress {
                inner: Inner::Bar(bar),
            }
        } else {
            Progress::plain(what, target, PLAIN_INTERVAL, Box::new(std::io::stderr()))
        }
    }

    /// The plain form on any writer, one line per `interval` at most (and one at `finish`).
    pub fn plain(
        what: &str,
        target: u64,
        interval: Duration,
        out: Box<dyn Write + Send>,
    ) -> Progress {
        Progress {
            inner: Inner::Plain(Mutex::new(Plain {
                what: what.to_string(),
                target,
                start: Instant::now(),
                interval,
                last_print: None,
                state: (0, 0.0, 0),
                out,
                finished: false,
            })),
        }
    }

    /// Shows nothing (`--quiet`).
    pub fn hidden() -> Progress {
        Progress {
            inner: Inner::Hidden,
        }
    }

    /// The current state: connections established, their rate (per second), errors so far.
    pub fn update(&self, established: u64, rate_per_s: f64, errors: u64) {
        match &self.inner {
            Inner::Bar(bar) => {
                bar.set_position(established);
                bar.set_message(format!(
                    "{}/s  {} errors",
                    thousands(rate_per_s.max(0.0).round() as u64),
                    thousands(errors)
                ));
            }
            Inner::Plain(p) => {
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                p.state = (established, rate_per_s, errors);
                let due = p.last_print.is_none_or(|t| t.elapsed() >= p.interval);
                if due && !p.finished {
                    p.print(false);
                }
            }
            Inner::Hidden => {}
        }
    }

    /// Ends the display (the bar stays on screen with its last state; the plain form prints
    /// a last line). Idempotent.
    pub fn finish(&self) {
        match &self.inner {
            Inner::Bar(bar) => {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
            Inner::Plain(p) => {
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                if !p.finished {
                    p.print(true);
                    p.finished = true;
                }
            }
            Inner::Hidden => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_prints_at_most_once_per_interval() {
        let buf = Buf::default();
        let p = Progress::plain(
            "hold: ramp",
            200_000,
            Duration::from_secs(3600),
            Box::new(buf.clone()),
        );
        p.update(1_000, 9_876.4, 0); // first update prints
        p.update(2_000, 9_000.0, 1); // within the interval: silent
        p.update(150_000, 12_345.0, 3);
        p.finish();
        p.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("hold: ramp: 1,000/200,000 connections (0.5%), 9,876/s, 0 errors"),
            "{text}"
        );
        assert!(
            lines[1].starts_with(
                "hold: ramp done: 150,000/200,000 connections (75.0%), 12,345/s, 3 errors"
            ),
            "{text}"
        );
        // After finish, updates print nothing.
        p.update(1, 1.0, 1);
        assert_eq!(
            String::from_utf8(buf.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .count(),
            2
        );
    }

    #[test]
    fn bar_and_hidden_do_not_panic() {
        let p = Progress::hidden();
        p.update(1, 1.0, 0);
        p.finish();
        // Whatever stderr is in the test harness.
        let p = Progress::new("test", 10);
        p.update(5, 2.5, 1);
        p.finish();
        p.finish();
    }
}
