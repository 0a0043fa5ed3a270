//! The JSON control messages of a WebSocket subscriber (text frames): what a
//! client may send (`{"op":"subscribe","topics":[...]}`, `{"op":"unsubscribe",...}`),
//! how those are validated, with error messages meant for the client, and the
//! replies the server writes (`subscribed`, `unsubscribed`, `error`).

use crate::envelope::write_json_string;
use crate::position::{Position, PositionError};
use crate::topic::{TopicError, parse_pattern};
use serde_json::Value;

/// Most patterns one subscribe/unsubscribe message may carry.
pub const MAX_TOPICS_PER_OP: usize = 64;

/// Largest control message accepted, in bytes (64 patterns of the longest legal
/// kind fit in about 13 KiB); larger ones are rejected before parsing.
pub const MAX_OP_BYTES: usize = 64 * 1024;

/// Longest client-supplied text echoed back inside an error message, in bytes.
pub const MAX_ECHO_BYTES: usize = 64;

/// A validated client request. The strings are valid patterns (see
/// [`crate::topic::parse_pattern`]), in the order the client sent them;
/// duplicates are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Subscribe; with `since`, first replay what the topics had after that position.
    Subscribe {
        topics: Vec<String>,
        since: Option<Position>,
    },
    Unsubscribe(Vec<String>),
    /// An action for the AMI gateway, which validates the whole message itself.
    Action,
}

/// Why a control message was rejected. The messages are sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("control message is larger than {MAX_OP_BYTES} bytes")]
    TooLarge,
    #[error("control message is not valid JSON")]
    NotJson,
    #[error(
        "control message must be a JSON object like {{\"op\":\"subscribe\",\"topics\":[\"a\"]}}"
    )]
    NotObject,
    #[error("missing \"op\" (expected \"subscribe\", \"unsubscribe\" or \"action\")")]
    MissingOp,
    #[error("\"op\" must be a string (\"subscribe\", \"unsubscribe\" or \"action\")")]
    OpNotString,
    #[error("unknown op \"{0}\" (expected \"subscribe\", \"unsubscribe\" or \"action\")")]
    UnknownOp(String),
    #[error("missing \"topics\" (an array of topic patterns)")]
    MissingTopics,
    #[error("\"topics\" must be an array of strings")]
    TopicsNotArray,
    #[error("topics[{index}] is not a string")]
    TopicNotString { index: usize },
    #[error("\"topics\" is empty")]
    EmptyTopics,
    #[error("too many topics: {count} (at most {MAX_TOPICS_PER_OP} per message)")]
    TooManyTopics { count: usize },
    #[error("\"since\" must be a position string: {0}")]
    BadSince(PositionError),
    #[error("\"since\" is only for \"subscribe\"")]
    SinceNotSubscribe,
    #[error("invalid topic pattern \"{pattern}\" (topics[{index}]): {error}")]
    BadPattern {
        index: usize,
        /// The offending pattern, cut to [`MAX_ECHO_BYTES`].
        pattern: String,
        error: TopicError,
    },
}

/// `s` cut to at most [`MAX_ECHO_BYTES`] at a char boundary, with `…` if cut.
fn echo(s: &str) -> String {
    if s.len() <= MAX_ECHO_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_ECHO_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_owned();
    out.push('…');
    out
}

/// Parses and validates one client control message. Unknown extra fields are
/// ignored (room for a future `"id"`); with duplicate keys the last one counts.
pub fn parse_client_op(text: &[u8]) -> Result<ClientOp, OpError> {
    if text.len() > MAX_OP_BYTES {
        return Err(OpError::TooLarge);
    }
    let value: Value = serde_json::from_slice(text).map_err(|_| OpError::NotJson)?;
    let Value::Object(map) = value else {
        return Err(OpError::NotObject);
    };
    let subscribe = match map.get("op") {
        None => return Err(OpError::MissingOp),
        Some(Value::String(op)) if op == "subscribe" => true,
        Some(Value::String(op)) if op == "unsubscribe" => false,
        Some(Value::String(op)) if op == "action" => return Ok(ClientOp::Action),
        Some(Value::String(op)) => return Err(OpError::UnknownOp(echo(op))),
        Some(_) => return Err(OpError::OpNotString),
    };
    let items = match map.get("topics") {
        None => return Err(OpError::MissingTopics),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(OpError::TopicsNotArray),
    };
    if items.is_empty() {
        return Err(OpError::EmptyTopics);
    }
    if items.len() > MAX_TOPICS_PER_OP {
        return Err(OpError::TooManyTopics { count: items.len() });
    }
    let mut topics = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(pattern) = item else {
            return Err(OpError::TopicNotString { index });
        };
        parse_pattern(pattern).map_err(|error| OpError::BadPattern {
            index,
            pattern: echo(pattern),
            error,
        })?;
        topics.push(pattern.clone());
    }
    let since = match map.get("since") {
        None | Some(Value::Null) => None,
        Some(_) if !subscribe => return Err(OpError::SinceNotSubscribe),
        Some(Value::String(s)) => Some(Position::parse(s).map_err(OpError::BadSince)?),
        Some(_) => return Err(OpError::BadSince(PositionError::Malformed)),
    };
    Ok(if subscribe {
        ClientOp::Subscribe { topics, since }
    } else {
        ClientOp::Unsubscribe(topics)
    })
}

fn write_topics_reply(out: &mut Vec<u8>, op: &str, topics: &[&str]) {
    out.extend_from_slice(b"{\"op\":");
    write_json_string(out, op);
    out.extend_from_slice(b",\"topics\":[");
    for (i, topic) in topics.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, topic);
    }
    out.extend_from_slice(b"]}");
}

/// Appends `{"op":"subscribed","topics":[...]}`.
pub fn write_subscribed(out: &mut Vec<u8>, topics: &[&str]) {
    write_topics_reply(out, "subscribed", topics);
}

/// Appends `{"op":"unsubscribed","topics":[...]}`.
pub fn write_unsubscribed(out: &mut Vec<u8>, topics: &[&str]) {
    write_topics_reply(out, "unsubscribed", topics);
}

/// Appends `{"op":"hello","id":<id>}`: the connection's direct address is
/// `client.<id>`.
pub fn write_hello(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"{\"op\":\"hello\",\"id\":");
    write_json_string(out, id);
    out.push(b'}');
}

/// Appends `{"op":"error","error":<message>}`.
pub fn write_error(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\"op\":\"error\",\"error\":");
    write_json_string(out, message);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn action_ops_are_left_to_the_gateway() {
        assert_eq!(
            parse_client_op(br#"{"op":"action","action":"Hangup","channel":"PJSIP/101-1"}"#),
            Ok(ClientOp::Action)
        );
        // Whatever else it holds is the gateway's to judge.
        assert_eq!(parse_client_op(br#"{"op":"action"}"#), Ok(ClientOp::Action));
        let e = parse_client_op(br#"{"op":"act"}"#).unwrap_err().to_string();
        assert!(e.contains("\"action\""), "{e}");
    }

    #[test]
    fn parses_subscribe_and_unsubscribe() {
        assert_eq!(
            parse_client_op(br#"{"op":"subscribe","topics":["a","b.*"]}"#),
            Ok(ClientOp::Subscribe {
                topics: strings(&["a", "b.*"]),
                since: None
            })
        );
        assert_eq!(
            parse_client_op(br#" {"topics":["ami.endpoint.PJSIP/101"], "op":"unsubscribe"} "#),
            Ok(ClientOp::Unsubscribe(strings(&["ami.endpoint.PJSIP/101"])))
        );
    }

    #[test]
    fn subscribe_takes_an_optional_since_position() {
        assert_eq!(
            parse_client_op(br#"{"op":"subscribe","topics":["a"],"since":"0000abcd-17"}"#),
            Ok(ClientOp::Subscribe {
                topics: strings(&["a"]),
                since: Some(Position {
                    epoch: 0xabcd,
                    gseq: 17
                })
            })
        );
        assert_eq!(
            parse_client_op(br#"{"op":"subscribe","topics":["a"],"since":17}"#),
            Err(OpError::BadSince(PositionError::Malformed))
        );
        assert_eq!(
            parse_client_op(br#"{"op":"subscribe","topics":["a"],"since":"x-1"}"#),
            Err(OpError::BadSince(PositionError::Malformed))
        );
        assert_eq!(
            parse_client_op(br#"{"op":"unsubscribe","topics":["a"],"since":"0000abcd-1"}"#),
            Err(OpError::SinceNotSubscribe)
        );
    }

    #[test]
    fn ignores_unknown_fields_and_keeps_duplicates() {
        assert_eq!(
            parse_client_op(br#"{"op":"subscribe","id":5,"topics":["a","a"]}"#),
            Ok(ClientOp::Subscribe {
                topics: strings(&["a", "a"]),
                since: None
            })
        );
    }

    #[test]
    fn accepts_exactly_the_maximum() {
        let topics: Vec<String> = (0..MAX_TOPICS_PER_OP).map(|i| format!("t.{i}")).collect();
        let msg = json!({"op": "subscribe", "topics": topics}).to_string();
        assert_eq!(
            parse_client_op(msg.as_bytes()),
            Ok(ClientOp::Subscribe {
                topics,
                since: None
            })
        );
    }

    #[test]
    fn rejection_table() {
        let too_many: Vec<String> = (0..=MAX_TOPICS_PER_OP).map(|i| format!("t.{i}")).collect();
        let too_many = json!({"op": "subscribe", "topics": too_many}).to_string();
        let cases: Vec<(&[u8], OpError)> = vec![
            (b"", OpError::NotJson),
            (b"subscribe a", OpError::NotJson),
            (b"{\"op\":\"subscribe\"", OpError::NotJson),
            (
                b"{\"op\":\"subscribe\",\"topics\":[\"a\"]} x",
                OpError::NotJson,
            ),
            (b"\xff", OpError::NotJson),
            (b"[]", OpError::NotObject),
            (b"\"subscribe\"", OpError::NotObject),
            (b"null", OpError::NotObject),
            (br#"{"topics":["a"]}"#, OpError::MissingOp),
            (br#"{"op":1,"topics":["a"]}"#, OpError::OpNotString),
            (
                br#"{"op":"Subscribe","topics":["a"]}"#,
                OpError::UnknownOp("Subscribe".into()),
            ),
            (
                br#"{"op":"publish","topics":["a"]}"#,
                OpError::UnknownOp("publish".into()),
            ),
            (br#"{"op":"subscribe"}"#, OpError::MissingTopics),
            (
                br#"{"op":"subscribe","topics":"a"}"#,
                OpError::TopicsNotArray,
            ),
            (
                br#"{"op":"subscribe","topics":null}"#,
                OpError::TopicsNotArray,
            ),
            (br#"{"op":"subscribe","topics":[]}"#, OpError::EmptyTopics),
            (
                br#"{"op":"subscribe","topics":["a",2]}"#,
                OpError::TopicNotString { index: 1 },
            ),
            (
                br#"{"op":"subscribe","topics":[["a"]]}"#,
                OpError::TopicNotString { index: 0 },
            ),
            (
                too_many.as_bytes(),
                OpError::TooManyTopics {
                    count: MAX_TOPICS_PER_OP + 1,
                },
            ),
            (
                br#"{"op":"unsubscribe","topics":["a","b c"]}"#,
                OpError::BadPattern {
                    index: 1,
                    pattern: "b c".into(),
                    error: TopicError::InvalidChar { ch: ' ', at: 1 },
                },
            ),
            (
                br#"{"op":"subscribe","topics":["*"]}"#,
                OpError::BadPattern {
                    index: 0,
                    pattern: "*".into(),
                    error: TopicError::LoneWildcard,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_client_op(text),
                Err(want),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn rejects_oversized_message_before_parsing() {
        let mut big = br#"{"op":"subscribe","topics":["a"],"pad":""#.to_vec();
        big.resize(MAX_OP_BYTES - 2, b'x');
        big.extend_from_slice(b"\"}");
        assert!(
            parse_client_op(&big).is_ok(),
            "exactly at the limit is fine"
        );
        big.insert(big.len() - 2, b'x');
        assert_eq!(parse_client_op(&big), Err(OpError::TooLarge));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = parse_client_op(br#"{"op":"subscribe","topics":["ok","a..b"]}"#).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"a..b\"") && msg.contains("topics[1]") && msg.contains("empty segment"),
            "{msg}"
        );
        let msg = parse_client_op(br#"{"op":"sub","topics":["a"]}"#)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown op \"sub\""), "{msg}");
        let msg = parse_client_op(b"{}").unwrap_err().to_string();
        assert!(msg.contains("missing \"op\""), "{msg}");
    }

    #[test]
    fn long_bad_pattern_is_cut_in_the_message() {
        let pattern = format!("{}é{}", "a".repeat(MAX_ECHO_BYTES - 1), "b".repeat(100));
        let msg = json!({"op": "subscribe", "topics": [pattern]}).to_string();
        match parse_client_op(msg.as_bytes()) {
            Err(OpError::BadPattern {
                pattern: echoed,
                error,
                ..
            }) => {
                assert_eq!(
                    error,
                    TopicError::InvalidChar {
                        ch: 'é',
                        at: MAX_ECHO_BYTES - 1
                    }
                );
                assert_eq!(echoed, format!("{}…", "a".repeat(MAX_ECHO_BYTES - 1)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_replies() {
        let mut out = Vec::new();
        write_subscribed(&mut out, &["a", "b.*"]);
        assert_eq!(out, br#"{"op":"subscribed","topics":["a","b.*"]}"#);
        out.clear();
        write_unsubscribed(&mut out, &["x"]);
        assert_eq!(out, br#"{"op":"unsubscribed","topics":["x"]}"#);
        out.clear();
        write_unsubscribed(&mut out, &[]);
        assert_eq!(out, br#"{"op":"unsubscribed","topics":[]}"#);
        out.clear();
        write_error(&mut out, "bad \"x\"\n");
        assert_eq!(out, br#"{"op":"error","error":"bad \"x\"\n"}"#);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"op": "error", "error": "bad \"x\"\n"}));
    }

    #[test]
    fn error_reply_carries_op_error_message() {
        let err = parse_client_op(b"[1]").unwrap_err();
        let mut out = Vec::new();
        write_error(&mut out, &err.to_string());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["op"], "error");
        assert_eq!(v["error"], err.to_string());
    }
}
