//! Whatever bytes go into keys and values, the AMI writer produces exactly one
//! message, whose fields parse back as written minus CR and LF (the writer's
//! injection guard), in the client role.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::ami::{Item, MessageWriter, Parser};

fuzz_target!(|data: &[u8]| {
    // Fields are separated by 0x00, key and value by 0x01.
    let fields: Vec<(&[u8], &[u8])> = data
        .split(|&b| b == 0)
        .map(|f| {
            let mut kv = f.splitn(2, |&b| b == 1);
            (kv.next().unwrap_or_default(), kv.next().unwrap_or_default())
        })
        .collect();
    let strip = |s: &[u8]| -> Vec<u8> {
        s.iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect()
    };
    // Preconditions of the format, not of the writer: keys without a colon, and a
    // first line that is not `Response: Follows` (which announces raw output).
    if fields.iter().any(|(k, _)| k.contains(&b':')) {
        return;
    }
    let (k0, v0) = fields[0];
    if strip(k0).eq_ignore_ascii_case(b"Response") && strip(v0).eq_ignore_ascii_case(b"Follows") {
        return;
    }

    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out);
    for (k, v) in &fields {
        w.field_bytes(k, v);
    }
    w.finish();

    let mut parser = Parser::client().skip_banner();
    let (n, item) = parser.parse(&out).expect("our own message parses");
    assert_eq!(n, out.len(), "exactly one message: {out:?}");
    let Some(Item::Message(m)) = item else {
        panic!("{out:?}")
    };
    assert_eq!(m.len(), fields.len());
    for (f, (k, v)) in m.fields().zip(&fields) {
        assert!(f.has_colon());
        assert_eq!(f.key(), strip(k).as_slice());
        assert_eq!(f.value(), strip(v).as_slice());
    }
});
