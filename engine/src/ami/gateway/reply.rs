//! Results as JSON: the head every result starts with, refusals, and AMI messages
//! as objects (the EVENT encoding of the `ami.*` topics, [`crate::ami::json`]).

use switchboard_proto::ami::Message;
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

/// Writes an AMI message as a JSON object: the EVENT encoding of the topics.
pub(super) fn write_message(out: &mut Vec<u8>, msg: &Message<'_>) {
    crate::ami::json::write_event_json(out, msg);
}
