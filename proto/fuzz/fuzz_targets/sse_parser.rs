//! The event-stream parser gives the same events whole and split, and the writer's
//! output parses back to what was written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::sse::{Parser, write_event};

fn parse(pieces: &[&[u8]]) -> Result<Vec<(Option<String>, String, String)>, String> {
    let mut p = Parser::new();
    let mut out = Vec::new();
    for piece in pieces {
        p.feed(piece, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out.into_iter().map(|e| (e.id, e.event, e.data)).collect())
}

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let (a, b) = data.split_at(split);
    assert_eq!(parse(&[data]), parse(&[a, b]), "split at {split}");

    if let Ok(text) = std::str::from_utf8(data) {
        let mut stream = Vec::new();
        write_event(&mut stream, Some("7"), None, text.as_bytes());
        let events = parse(&[&stream]).expect("our own event parses");
        let expected = text.replace("\r\n", "\n").replace('\r', "\n");
        assert_eq!(
            events,
            vec![(Some("7".to_string()), "message".to_string(), expected)]
        );
    }
});
