//! The WebSocket reader sees the same events and the same error however its input is
//! split: the whole input at once versus split at a point chosen by the fuzzer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::ws::{Event, Reader, Role};

#[derive(Debug, PartialEq)]
enum Seen {
    Message { text: bool, payload: Vec<u8> },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(u16),
}

fn run(role: Role, pieces: &[&[u8]]) -> Vec<Seen> {
    let mut reader = Reader::new(role, 1 << 16);
    let mut seen = Vec::new();
    let mut msg = Vec::new();
    for piece in pieces {
        let mut buf = piece.to_vec();
        let mut pos = 0;
        while pos < buf.len() {
            let available = buf.len() - pos;
            match reader.read(&mut buf[pos..]) {
                Err(e) => {
                    seen.push(Seen::Error(e.close_code()));
                    return seen;
                }
                Ok((used, event)) => {
                    assert!(used <= available, "consumed more than it was given");
                    match event {
                        None if used == 0 => panic!("no progress and no event"),
                        None => {}
                        Some(Event::Data {
                            payload, text, fin, ..
                        }) => {
                            msg.extend_from_slice(payload);
                            if fin {
                                seen.push(Seen::Message {
                                    text,
                                    payload: std::mem::take(&mut msg),
                                });
                            }
                        }
                        Some(Event::Ping(p)) => seen.push(Seen::Ping(p.to_vec())),
                        Some(Event::Pong(p)) => seen.push(Seen::Pong(p.to_vec())),
                        Some(Event::Close { code, reason }) => {
                            seen.push(Seen::Close(code, reason.to_string()))
                        }
                    }
                    pos += used;
                }
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let split = (usize::from(control) * 7) % (input.len() + 1);
    let whole = run(role, &[input]);
    let (a, b) = input.split_at(split);
    assert_eq!(whole, run(role, &[a, b]), "split at {split}");
    for seen in &whole {
        if let Seen::Message {
            text: true,
            payload,
        } = seen
        {
            assert!(
                std::str::from_utf8(payload).is_ok(),
                "a text message that is not UTF-8"
            );
        }
    }
});
