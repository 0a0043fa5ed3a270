//! The AMI parser in the client role (banner, responses, events, Asterisk 13
//! `Response: Follows`) gives the same items, error and leftover whole and split at
//! a fuzzer-chosen point; every message it yields, written back, parses to the same
//! message and rewrites to the same bytes (for messages without a bare CR, which
//! the writer drops); with `skip_events`, only the skipped messages differ (they keep
//! their first field).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::ami::{Item, Message, OwnedItem, ParseError, Parser};

type Run = (Vec<(OwnedItem, Vec<u8>)>, Option<ParseError>, Vec<u8>);

fn run(make: impl Fn() -> Parser, pieces: &[&[u8]]) -> Run {
    let mut parser = make();
    let mut buf = Vec::new();
    let mut items = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let mut at = 0;
        loop {
            match parser.parse(&buf[at..]) {
                Err(e) => return (items, Some(e), Vec::new()),
                Ok((n, item)) => {
                    at += n;
                    let Some(item) = item else { break };
                    let raw = match item {
                        Item::Message(m) => m.raw().to_vec(),
                        _ => Vec::new(),
                    };
                    items.push((item.into_owned(), raw));
                }
            }
        }
        buf.drain(..at);
    }
    (items, None, buf)
}

fn has_cr(m: &Message<'_>) -> bool {
    m.fields()
        .any(|f| f.key().contains(&b'\r') || f.value().contains(&b'\r'))
        || m.follows_output().any(|l| l.contains(&b'\r'))
}

/// Writes `m`, parses it back, and checks the result. A message with a bare CR
/// in a field or output line is left out: the writer drops CRs (a CR must never
/// reach the wire inside a value), which changes what such a message says (a
/// first line `Response: Follows\r` is not a Follows response; without its CR it
/// is).
fn round_trip(m: &Message<'_>) {
    if has_cr(m) {
        return;
    }
    let mut written = Vec::new();
    m.write_to(&mut written);
    let (items, error, leftover) = run(|| Parser::client().skip_banner(), &[&written]);
    assert_eq!(error, None, "{written:?}");
    assert!(leftover.is_empty(), "{written:?}");
    assert_eq!(items.len(), 1, "{written:?}");
    let OwnedItem::Message(again) = &items[0].0 else {
        panic!("{items:?}")
    };
    let again = again.message();
    assert_eq!(&again, m, "{written:?}");
    let mut rewritten = Vec::new();
    again.write_to(&mut rewritten);
    assert_eq!(rewritten, written);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let with_banner = control & 1 != 0;
    let small_limits = control & 2 != 0;
    let make = || {
        let p = if control & 4 != 0 {
            Parser::client()
        } else {
            Parser::client().skip_banner()
        };
        if small_limits {
            p.with_client_limits(48, 400)
        } else {
            p
        }
    };
    let mut input = Vec::new();
    if with_banner {
        input.extend_from_slice(b"Asterisk Call Manager/5.0.4\r\n");
    }
    input.extend_from_slice(data);

    let whole = run(make, &[&input]);
    let at = usize::from(split) * input.len() / 255;
    let (a, b) = input.split_at(at);
    assert_eq!(run(make, &[a, b]), whole, "split at {at}");

    for (item, raw) in &whole.0 {
        if let OwnedItem::Message(m) = item {
            let m = m.message();
            assert_eq!(m.raw(), raw.as_slice());
            round_trip(&m);
        }
    }

    // Skipping events changes only the skipped messages' fields (to their first one),
    // nothing of the framing, errors and leftover, whatever the split.
    let skipping = || make().skip_events(["VarSet", "X"]);
    let skipped = run(skipping, &[&input]);
    assert_eq!(run(skipping, &[a, b]), skipped, "skipping, split at {at}");
    assert_eq!((&skipped.1, &skipped.2), (&whole.1, &whole.2));
    assert_eq!(skipped.0.len(), whole.0.len());
    for ((s, s_raw), (w, w_raw)) in skipped.0.iter().zip(&whole.0) {
        assert_eq!(s_raw, w_raw);
        match (s, w) {
            (OwnedItem::Message(s), OwnedItem::Message(w)) => {
                let (s, w) = (s.message(), w.message());
                let first = w.field(0);
                let skips = first.is_some_and(|f| {
                    f.is("Event")
                        && (f.value().eq_ignore_ascii_case(b"VarSet")
                            || f.value().eq_ignore_ascii_case(b"X"))
                });
                if skips {
                    assert_eq!(s.len(), 1);
                    assert_eq!(s.field(0), first);
                } else {
                    assert_eq!(s, w);
                }
            }
            (s, w) => assert_eq!(s, w),
        }
    }
});
