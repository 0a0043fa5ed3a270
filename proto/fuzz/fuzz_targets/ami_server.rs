//! The AMI parser in the server role (Asterisk's limits and error answers) gives
//! the same actions and rejections, and consumes the same bytes, whole and split at
//! a fuzzer-chosen point; every accepted action, written back, parses to the same
//! action (when no value holds a bare CR and every line fits Asterisk's 1024 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::ami::{Item, OwnedItem, Parser, SERVER_MAX_LINE};

fn run(pieces: &[&[u8]]) -> (Vec<OwnedItem>, Vec<u8>) {
    let mut parser = Parser::server();
    let mut buf = Vec::new();
    let mut items = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let mut at = 0;
        loop {
            let (n, item) = parser
                .parse(&buf[at..])
                .expect("no error in the server role");
            at += n;
            let Some(item) = item else { break };
            if let Item::Message(m) = item {
                assert!(m.action().is_some());
                assert!(m.len() <= 128);
            }
            items.push(item.into_owned());
        }
        buf.drain(..at);
        // Past a rejected line or header, what is kept stays bounded.
        assert!(buf.len() < 130 * SERVER_MAX_LINE);
    }
    (items, buf)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let whole = run(&[data]);
    let at = usize::from(split) * data.len() / 255;
    let (a, b) = data.split_at(at);
    assert_eq!(run(&[a, b]), whole, "split at {at}");

    for item in &whole.0 {
        let OwnedItem::Message(m) = item else {
            continue;
        };
        let m = m.message();
        let fits = m
            .fields()
            .all(|f| f.key().len() + f.value().len() + 4 <= SERVER_MAX_LINE);
        let cr = m
            .fields()
            .any(|f| f.key().contains(&b'\r') || f.value().contains(&b'\r'));
        if !fits || cr {
            continue;
        }
        let mut written = Vec::new();
        m.write_to(&mut written);
        let (again, leftover) = run(&[&written]);
        assert!(leftover.is_empty());
        assert_eq!(again.len(), 1, "{written:?}");
        assert_eq!(&again[0], item, "{written:?}");
    }
});
