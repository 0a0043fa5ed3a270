//! Whatever the body, the envelope is valid JSON whose `data` is the body: the same JSON
//! value when the body is JSON, else the body as a string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::envelope::{data_json, write_envelope};

fuzz_target!(|body: &[u8]| {
    let Ok(data) = data_json(body) else {
        assert!(
            std::str::from_utf8(body).is_err(),
            "only non-UTF-8 bodies are refused"
        );
        return;
    };
    let mut out = Vec::new();
    let pos = switchboard_proto::position::Position {
        epoch: 0x1f0c_93aa,
        gseq: 42,
    };
    write_envelope(&mut out, "fuzz.topic", 42, pos, &data);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("the envelope is JSON");
    assert_eq!(v["topic"], "fuzz.topic");
    assert_eq!(v["seq"], 42);
    assert_eq!(v["pos"], "1f0c93aa-42");
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(original) => assert_eq!(v["data"], original),
        Err(_) => assert_eq!(
            v["data"],
            serde_json::Value::String(String::from_utf8(body.to_vec()).unwrap())
        ),
    }
});
