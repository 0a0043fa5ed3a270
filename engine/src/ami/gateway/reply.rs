//! Results as JSON: the head every result starts with, refusals, and AMI messages
//! as objects (the contract's EVENT encoding: keys verbatim in first-appearance
//! order, values as text, a repeated key an array of its values at its first
//! position, lines without a colon dropped).

use std::collections::HashMap;

use switchboard_proto::ami::{Message, decode_text};
use switchboard_proto::envelope::write_json_string;

/// Starts a result: `{"op":"result"[,"ref":R][,"action":A],"ok":B` (no closing brace).
pub(super) fn begin(out: &mut Vec<u8>, reference: Option<&str>, action: Option<&str>, ok: bool) {
    out.extend_from_slice(br#"{"op":"result""#);
    if let Some(r) = reference {
        out.extend_from_slice(br#","ref":"#);
        write_json_string(out, r);
    }
    if let Some(a) = action {
        out.extend_from_slice(br#","action":"#);
        write_json_string(out, a);
    }
    out.extend_from_slice(if ok {
        br#","ok":true"#
    } else {
        br#","ok":false"#
    });
}

/// Appends `,"code":C,"error":E`.
pub(super) fn failure(out: &mut Vec<u8>, code: &str, error: &str) {
    out.extend_from_slice(br#","code":"#);
    write_json_string(out, code);
    out.extend_from_slice(br#","error":"#);
    write_json_string(out, error);
}

/// A whole failure result.
pub(super) fn refusal(
    reference: Option<&str>,
    action: Option<&str>,
    code: &str,
    error: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + error.len());
    begin(&mut out, reference, action, false);
    failure(&mut out, code, error);
    out.push(b'}');
    out
}

/// Appends `,"key":` and the message as an object.
pub(super) fn member_message(out: &mut Vec<u8>, key: &str, msg: &Message<'_>) {
    out.push(b',');
    write_json_string(out, key);
    out.push(b':');
    write_message(out, msg);
}

/// Writes an AMI message as a JSON object (see the module docs).
pub(super) fn write_message(out: &mut Vec<u8>, msg: &Message<'_>) {
    // Each distinct key, in first-appearance order, with the indexes of its fields.
    let mut keys: Vec<(&[u8], Vec<usize>)> = Vec::with_capacity(msg.len());
    let mut index: HashMap<&[u8], usize> = HashMap::with_capacity(msg.len());
    let fields: Vec<_> = msg.fields().filter(|f| f.has_colon()).collect();
    for (i, f) in fields.iter().enumerate() {
        match index.get(f.key()) {
            Some(&k) => keys[k].1.push(i),
            None => {
                index.insert(f.key(), keys.len());
                keys.push((f.key(), vec![i]));
            }
        }
    }
    out.push(b'{');
    for (n, (key, at)) in keys.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_json_string(out, &decode_text(key));
        out.push(b':');
        if let [one] = at.as_slice() {
            write_json_string(out, &fields[*one].value_str());
        } else {
            out.push(b'[');
            for (m, i) in at.iter().enumerate() {
                if m > 0 {
                    out.push(b',');
                }
                write_json_string(out, &fields[*i].value_str());
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}
