//! The AMI ingest throughput on one core: a real Asterisk capture, held in memory and
//! played `--passes` times, is parsed (the streaming codec), applied to the PBX state
//! model, mapped to topics and published as the AMI thread publishes (topic and data
//! copied for the router's queue); with `--encode`, also encoded as the router encodes
//! every publish (one envelope, framed for WebSocket and SSE), which the engine does on
//! another core. Prints events/s and publishes/s.
//!
//!     cargo run --release -p switchboard --example ami_ingest -- \
//!         proto/tests/fixtures/ami/asterisk22-local.txt --passes 50
//!
//! The capture is cut after its login answer (as `ami-sim --replay` serves it) and
//! split into reads of `--read` bytes, as a socket would deliver it.

use std::time::Instant;

use bytes::Bytes;
use switchboard::ami::input::Input;
use switchboard::ami::json::EventFilter;
use switchboard::ami::state::Pbx;
use switchboard::ami::{Arena, Sink};
use switchboard::pubsub::router::encode;
use switchboard_proto::ami::{Item, Parser};
use switchboard_proto::position::Position;

/// Takes every publication as the AMI thread hands it to the router (topic and data
/// copied into the thread's [`Arena`], into a bounded queue here drained at once) and,
/// with `--encode`, also encodes it as the router then does (on its own core in the
/// engine).
struct Encoder {
    publishes: u64,
    bytes: u64,
    gseq: u64,
    encode: bool,
    arena: Arena,
    queue: Vec<(Bytes, Bytes)>,
}

impl Sink for Encoder {
    fn publish(&mut self, topic: &str, data: &[u8]) {
        let data = self.arena.copy_data(data);
        self.push(topic, data);
    }

    /// As the AMI thread's sink: the previous publish's copy is shared.
    fn republish(&mut self, topic: &str, _data: &[u8]) {
        let data = self.arena.shared();
        self.push(topic, data);
    }
}

impl Encoder {
    fn push(&mut self, topic: &str, data: Bytes) {
        self.publishes += 1;
        self.bytes += data.len() as u64;
        if self.queue.len() == 1024 {
            self.drain();
        }
        let topic = self.arena.copy(topic.as_bytes());
        self.queue.push((topic, data));
    }

    fn drain(&mut self) {
        for (topic, data) in self.queue.drain(..) {
            if self.encode {
                self.gseq += 1;
                let pos = Position {
                    epoch: 1,
                    gseq: self.gseq,
                };
                let topic = std::str::from_utf8(&topic).expect("topics are UTF-8");
                std::hint::black_box(encode(topic, self.gseq, pos, &data));
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut passes = 20u32;
    let mut read = 64 * 1024usize;
    let mut encode = false;
    let mut parse_only = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--passes" => {
                passes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--passes N")
            }
            "--read" => {
                read = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--read BYTES")
            }
            "--encode" => encode = true,
            "--parse-only" => parse_only = true,
            _ => path = Some(a),
        }
    }
    let path = path
        .expect("usage: ami_ingest CAPTURE [--passes N] [--read BYTES] [--encode | --parse-only]");
    let capture = std::fs::read(&path).expect("reading the capture");
    let stream = after_login(&capture);

    let mut pbx = Pbx::new(EventFilter::default());
    let mut sink = Encoder {
        publishes: 0,
        bytes: 0,
        gseq: 0,
        encode,
        arena: Arena::default(),
        queue: Vec::with_capacity(1024),
    };
    let mut events = 0u64;
    let started = Instant::now();
    // As the engine's AMI thread: a read is parsed where it lies ([`Input`]), and is one
    // batch for the state model.
    let mut run = |parser: &mut Parser, bytes: &[u8], pbx: &mut Pbx, sink: &mut Encoder| {
        pbx.begin_batch();
        let mut pos = 0;
        loop {
            let (n, item) = parser.parse(&bytes[pos..]).expect("the capture parses");
            pos += n;
            match item {
                Some(Item::Message(m)) => {
                    events += 1;
                    if parse_only {
                        std::hint::black_box(m.len());
                        continue;
                    }
                    pbx.on_event(&m, 1_795_248_000_000 + events / 1000, sink);
                }
                Some(_) => {}
                None => break,
            }
        }
        pbx.end_batch(1_795_248_000_000 + events / 1000, sink);
        pos
    };
    for _ in 0..passes {
        let mut parser = Parser::client().skip_banner().skip_events(pbx.skippable());
        let mut input = Input::default();
        for chunk in stream.chunks(read) {
            input.feed(chunk, |bytes| run(&mut parser, bytes, &mut pbx, &mut sink));
        }
    }
    sink.drain();
    let secs = started.elapsed().as_secs_f64();
    let what = if parse_only {
        "parsed"
    } else if encode {
        "parsed, applied, published and encoded"
    } else {
        "parsed, applied and published"
    };
    println!(
        "{path}: {passes} passes, {events} messages {what} in {secs:.2} s: {:.0} events/s, \
         {:.0} publishes/s ({:.2} per event), {:.0} MB/s of data; state at the end: \
         {} channels, {} calls",
        events as f64 / secs,
        sink.publishes as f64 / secs,
        sink.publishes as f64 / events.max(1) as f64,
        sink.bytes as f64 / secs / 1e6,
        pbx.channels(),
        pbx.calls()
    );
}

/// The stream a client receives after its login: from the byte after the capture's
/// `Authentication accepted` message.
fn after_login(capture: &[u8]) -> &[u8] {
    let needle = b"Message: Authentication accepted";
    let at = capture
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the capture has a login answer");
    let end = capture[at..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the login answer ends");
    &capture[at + end + 4..]
}
