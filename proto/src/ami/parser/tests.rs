//! Unit tests of the AMI parser: every quirk, limit and error of both roles, and
//! the same results whatever the input split.

use super::*;

/// What a run of the parser produced: each item with the raw bytes of a message,
/// the error that stopped it (client role), and the bytes left unconsumed.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    items: Vec<(OwnedItem, Vec<u8>)>,
    error: Option<ParseError>,
    leftover: Vec<u8>,
}

/// Feeds `pieces` one after the other, as reads from a socket, parsing all it can
/// after each.
fn run_pieces(mut parser: Parser, pieces: &[&[u8]]) -> Run {
    let mut buf: Vec<u8> = Vec::new();
    let mut items = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&buf) {
                Err(e) => {
                    // What is left depends on how much had been fed: not compared.
                    return Run {
                        items,
                        error: Some(e),
                        leftover: Vec::new(),
                    };
                }
                Ok((n, item)) => {
                    let done = item.is_none();
                    if let Some(item) = item {
                        let raw = match item {
                            Item::Message(m) => m.raw().to_vec(),
                            _ => Vec::new(),
                        };
                        items.push((item.into_owned(), raw));
                    }
                    assert!(n <= buf.len());
                    buf.drain(..n);
                    if done {
                        break;
                    }
                }
            }
        }
    }
    Run {
        items,
        error: None,
        leftover: buf,
    }
}

fn run(parser: Parser, input: &[u8]) -> Run {
    run_pieces(parser, &[input])
}

fn bytewise(parser: Parser, input: &[u8]) -> Run {
    let pieces: Vec<&[u8]> = input.chunks(1).collect();
    run_pieces(parser, &pieces)
}

/// Asserts that `input` gives the same run whole, byte by byte, and split in two
/// at every point, and returns it.
fn same_whatever_the_split(make: impl Fn() -> Parser, input: &[u8]) -> Run {
    let whole = run(make(), input);
    assert_eq!(bytewise(make(), input), whole, "byte by byte");
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(run_pieces(make(), &[a, b]), whole, "split at {at}");
    }
    whole
}

fn client() -> Parser {
    Parser::client().skip_banner()
}

/// The messages of a client-role run (panics on anything else).
fn messages(run: &Run) -> Vec<&OwnedMessage> {
    run.items
        .iter()
        .map(|(item, _)| match item {
            OwnedItem::Message(m) => m,
            other => panic!("not a message: {other:?}"),
        })
        .collect()
}

fn fields(m: &OwnedMessage) -> Vec<(String, String)> {
    m.message()
        .fields()
        .map(|f| (f.key_str().into_owned(), f.value_str().into_owned()))
        .collect()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn rejected(error: RequestError, action_id: Option<&str>) -> OwnedItem {
    OwnedItem::Rejected {
        error,
        action_id: action_id.map(|s| s.as_bytes().to_vec()),
    }
}

// ---------------------------------------------------------------- banner

#[test]
fn banner_then_messages() {
    let input = b"Asterisk Call Manager/5.0.4\r\nResponse: Success\r\nActionID: l\r\nMessage: Authentication accepted\r\n\r\n";
    let run = same_whatever_the_split(Parser::client, input);
    assert_eq!(run.items[0].0, OwnedItem::Banner("5.0.4".into()));
    let OwnedItem::Message(m) = &run.items[1].0 else {
        panic!()
    };
    assert_eq!(m.message().response(), Some(&b"Success"[..]));
    assert_eq!(run.items.len(), 2);
    assert!(run.leftover.is_empty());
}

#[test]
fn banner_with_bare_lf_and_modern_version() {
    let run = run(
        Parser::client(),
        b"Asterisk Call Manager/11.0.0\nEvent: X\n\n",
    );
    assert_eq!(run.items[0].0, OwnedItem::Banner("11.0.0".into()));
    assert_eq!(run.items.len(), 2);
}

#[test]
fn banner_is_recognised_alone() {
    assert_eq!(
        parse_banner(b"Asterisk Call Manager/5.0.4\r\nResponse"),
        Ok(Some(("5.0.4", 29)))
    );
    assert_eq!(parse_banner(b""), Ok(None));
    assert_eq!(parse_banner(b"Asterisk Call Man"), Ok(None));
    assert_eq!(parse_banner(b"Asterisk Call Manager/5.0.4\r"), Ok(None));
    assert_eq!(
        parse_banner(b"Asterisk Call Manager/\r\n"),
        Ok(Some(("", 24)))
    );
    // Anything that cannot become a banner fails at once, newline or not.
    assert_eq!(parse_banner(b"SSH-2.0-OpenSSH"), Err(ParseError::BadBanner));
    assert_eq!(parse_banner(b"HTTP/1.1 400"), Err(ParseError::BadBanner));
    assert_eq!(parse_banner(b"Asterisk\n"), Err(ParseError::BadBanner));
    assert_eq!(
        parse_banner(b"Response: Success\r\n"),
        Err(ParseError::BadBanner)
    );
    assert_eq!(
        parse_banner(b"Asterisk Call Manager/\xff\r\n"),
        Err(ParseError::BadBanner)
    );
    let mut long = BANNER_PREFIX.as_bytes().to_vec();
    long.resize(CLIENT_MAX_LINE, b'1');
    assert_eq!(parse_banner(&long), Err(ParseError::BadBanner));
    long.truncate(CLIENT_MAX_LINE - 1);
    assert_eq!(parse_banner(&long), Ok(None));
}

#[test]
fn bad_banner_is_an_error_whatever_the_split() {
    let run = same_whatever_the_split(Parser::client, b"Asterisk Call Mangler/1\r\n\r\n");
    assert_eq!(run.error, Some(ParseError::BadBanner));
    assert!(run.items.is_empty());
}

#[test]
fn skip_banner_starts_with_messages() {
    let run = run(client(), b"Event: FullyBooted\r\n\r\n");
    assert_eq!(
        messages(&run)[0].message().event(),
        Some(&b"FullyBooted"[..])
    );
}

// ---------------------------------------------------------------- lines and fields

#[test]
fn crlf_bare_lf_and_mixed_endings_give_the_same_fields() {
    let crlf =
        b"Event: Newstate\r\nPrivilege: call,all\r\nChannel: Local/200@lab-0000001;1\r\n\r\n";
    let lf = b"Event: Newstate\nPrivilege: call,all\nChannel: Local/200@lab-0000001;1\n\n";
    let mixed = b"Event: Newstate\nPrivilege: call,all\r\nChannel: Local/200@lab-0000001;1\n\r\n";
    let a = same_whatever_the_split(client, crlf);
    let b = same_whatever_the_split(client, lf);
    let c = same_whatever_the_split(client, mixed);
    assert_eq!(messages(&a), messages(&b));
    assert_eq!(messages(&a), messages(&c));
    assert_eq!(
        fields(messages(&a)[0]),
        kv(&[
            ("Event", "Newstate"),
            ("Privilege", "call,all"),
            ("Channel", "Local/200@lab-0000001;1")
        ])
    );
    // The raw bytes are kept as received.
    assert_eq!(a.items[0].1, crlf);
    assert_eq!(b.items[0].1, lf);
}

#[test]
fn park_quirk_bare_lf_before_the_terminator() {
    let input = b"Response: Success\r\nActionID: kit-38\r\nMessage: Park successful\n\r\n\r\nEvent: CEL\r\nPrivilege: call,all\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run);
    assert_eq!(m.len(), 2);
    assert_eq!(
        fields(m[0]),
        kv(&[
            ("Response", "Success"),
            ("ActionID", "kit-38"),
            ("Message", "Park successful")
        ])
    );
    assert_eq!(
        run.items[0].1,
        b"Response: Success\r\nActionID: kit-38\r\nMessage: Park successful\n\r\n"
    );
    assert_eq!(m[1].message().event(), Some(&b"CEL"[..]));
    assert!(run.leftover.is_empty());
}

#[test]
fn stray_empty_lines_between_messages_are_skipped() {
    let input = b"\r\n\nEvent: A\r\n\r\n\r\n\r\n\nEvent: B\n\n\r\n";
    let run = same_whatever_the_split(client, input);
    let names: Vec<_> = messages(&run)
        .iter()
        .map(|m| m.message().name().to_vec())
        .collect();
    assert_eq!(names, [b"A".to_vec(), b"B".to_vec()]);
    assert!(run.leftover.is_empty(), "trailing empty lines are consumed");
    // Empty lines are consumed even with no message after them yet.
    let mut p = client();
    assert_eq!(p.parse(b"\r\n\r\n\nEv").unwrap(), (5, None));
}

#[test]
fn key_value_splitting() {
    let input = b"Event: Status\r\nVariable: BAZ=a:b=c\r\nNoSpace:value\r\nAccountCode: \r\nEmpty:\r\nPadded: x  \r\nIndented:    Members: \r\nTab:\tx\r\n: no key\r\nno colon at all\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run)[0].message();
    assert_eq!(
        fields(messages(&run)[0]),
        kv(&[
            ("Event", "Status"),
            ("Variable", "BAZ=a:b=c"),
            ("NoSpace", "value"),
            ("AccountCode", ""),
            ("Empty", ""),
            ("Padded", "x  "),
            ("Indented", "   Members: "),
            ("Tab", "\tx"),
            ("", "no key"),
            ("no colon at all", ""),
        ])
    );
    assert!(m.field(8).unwrap().has_colon());
    assert!(!m.field(9).unwrap().has_colon());
    // A line without a colon is never found by key.
    assert_eq!(m.get("no colon at all"), None);
    assert_eq!(m.get("variable"), Some(&b"BAZ=a:b=c"[..]));
}

#[test]
fn repeated_keys_keep_their_order_and_the_first_wins() {
    let input = b"Event: UserEvent\r\nPrivilege: user,all\r\nUniqueid: 1795249650.403\r\nUserEvent: KitCall\r\nUniqueid: 1795249650.999\r\nActionID: first\r\nactionid: second\r\nVariable: A=1\r\nVARIABLE: B=2\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run)[0].message();
    assert_eq!(m.len(), 9);
    assert_eq!(m.get("Uniqueid"), Some(&b"1795249650.403"[..]));
    assert_eq!(
        m.get_all("uniqueid").collect::<Vec<_>>(),
        [&b"1795249650.403"[..], b"1795249650.999"]
    );
    assert_eq!(m.action_id(), Some(&b"first"[..]));
    assert_eq!(
        m.get_all("Variable").collect::<Vec<_>>(),
        [&b"A=1"[..], b"B=2"]
    );
    assert_eq!(m.get("Nope"), None);
    assert_eq!(m.get_all("Nope").count(), 0);
    let keys: Vec<_> = m.fields().map(|f| f.key().to_vec()).collect();
    assert_eq!(keys[2], b"Uniqueid");
    assert_eq!(keys[4], b"Uniqueid");
    assert_eq!(m.fields().next_back().unwrap().value(), b"B=2");
    assert_eq!(m.fields().len(), 9);
}

#[test]
fn classification_is_by_the_first_line() {
    let input = b"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: kit-5\r\nResponse: Success\r\nReason: 4\r\n\r\n\
response: Error\r\nMessage: Permission denied\r\n\r\n\
ACTION: Ping\r\n\r\n\
ActionID: x\r\nEvent: NotFirst\r\n\r\n\
Event\r\nResponse: Success\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m: Vec<_> = messages(&run).into_iter().map(|m| m.message()).collect();
    assert_eq!(m[0].kind(), MessageKind::Event);
    assert_eq!(m[0].event(), Some(&b"OriginateResponse"[..]));
    assert_eq!(m[0].response(), None);
    assert_eq!(m[0].get("Response"), Some(&b"Success"[..]));
    assert_eq!(m[0].privilege(), Some(Classes::CALL));
    assert_eq!(m[1].kind(), MessageKind::Response);
    assert_eq!(m[1].response(), Some(&b"Error"[..]));
    assert_eq!(m[1].event(), None);
    assert_eq!(m[2].kind(), MessageKind::Action);
    assert_eq!(m[2].name(), b"Ping");
    assert_eq!(m[2].action(), Some(&b"Ping"[..]));
    assert_eq!(m[3].kind(), MessageKind::Other);
    assert_eq!(m[3].name(), b"");
    assert_eq!(m[3].event(), None);
    assert_eq!(m[4].kind(), MessageKind::Other, "a colon-less first line");
}

#[test]
fn values_need_not_be_utf8() {
    let input = b"Event: Newchannel\r\nCallerIDName: Jos\xe9 M\xfcller\r\nOk: caf\xc3\xa9\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run)[0].message();
    assert_eq!(m.get("CallerIDName"), Some(&b"Jos\xe9 M\xfcller"[..]));
    assert_eq!(m.get_str("CallerIDName").unwrap(), "José Müller");
    assert!(m.field(1).unwrap().value_utf8().is_err());
    assert!(matches!(m.get_str("Ok"), Some(Cow::Borrowed("café"))));
    assert_eq!(m.field(2).unwrap().value_utf8(), Ok("café"));
    // Latin-1 decoding is lossless.
    let text = decode_text(b"\x80\xff\xe9");
    let back: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
    assert_eq!(back, b"\x80\xff\xe9");
}

#[test]
fn bare_cr_inside_a_line_is_data() {
    let run = same_whatever_the_split(client, b"Event: A\rB\r\nX: 1\r\r\n\r\n");
    let m = messages(&run)[0].message();
    assert_eq!(m.name(), b"A\rB");
    assert_eq!(m.get("X"), Some(&b"1\r"[..]));
}

#[test]
fn incomplete_input_gives_nothing_until_the_empty_line() {
    let mut p = client();
    let input = b"Event: Hangup\r\nCause: 16\r\n\r";
    assert_eq!(p.parse(input).unwrap(), (0, None));
    let full = b"Event: Hangup\r\nCause: 16\r\n\r\nEvent: Next";
    let (n, item) = p.parse(full).unwrap();
    assert_eq!(n, 28);
    assert!(matches!(item, Some(Item::Message(_))));
    assert_eq!(p.parse(&full[n..]).unwrap(), (0, None));
}

// ---------------------------------------------------------------- Command output

#[test]
fn asterisk_14_command_output_is_repeated_fields() {
    let input = b"Response: Success\r\nActionID: cmd-1\r\nMessage: Command output follows\r\nOutput: Channel              Location\r\nOutput:    Members: \r\nOutput: 2 active channels\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run)[0].message();
    assert!(!m.is_follows());
    assert_eq!(m.follows_output().len(), 0);
    assert_eq!(
        m.command_output().collect::<Vec<_>>(),
        [
            &b"Channel              Location"[..],
            b"   Members: ",
            b"2 active channels"
        ]
    );
}

#[test]
fn asterisk_13_response_follows() {
    let input = b"Response: Follows\r\nPrivilege: Command\r\nActionID: c-1\r\n\nChannel              Location\nUptime: 5 days\n\n2 active channels\n--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run);
    assert_eq!(m.len(), 2);
    let follows = m[0].message();
    assert!(follows.is_follows());
    assert_eq!(follows.response(), Some(&b"Follows"[..]));
    assert_eq!(follows.action_id(), Some(&b"c-1"[..]));
    assert_eq!(
        fields(m[0]),
        kv(&[
            ("Response", "Follows"),
            ("Privilege", "Command"),
            ("ActionID", "c-1")
        ])
    );
    let expected: [&[u8]; 5] = [
        b"",
        b"Channel              Location",
        b"Uptime: 5 days",
        b"",
        b"2 active channels",
    ];
    assert_eq!(follows.follows_output().collect::<Vec<_>>(), expected);
    assert_eq!(follows.command_output().collect::<Vec<_>>(), expected);
    assert_eq!(m[1].message().event(), Some(&b"Next"[..]));
    // Written back, it reads the same.
    let mut out = Vec::new();
    follows.write_to(&mut out);
    let again = run_pieces(client(), &[&out]);
    assert_eq!(messages(&again)[0], m[0]);
}

#[test]
fn response_follows_marker_glued_to_the_last_line_and_empty_output() {
    let input = b"Response: Follows\r\nPrivilege: Command\r\nno newline at the end--END COMMAND--\r\n\r\nResponse: Follows\r\nPrivilege: Command\r\n--END COMMAND--\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run);
    assert_eq!(
        m[0].message().follows_output().collect::<Vec<_>>(),
        [&b"no newline at the end"[..]]
    );
    assert!(m[1].message().is_follows());
    assert_eq!(m[1].message().follows_output().len(), 0);
    assert_eq!(m[1].message().len(), 2);
}

#[test]
fn follows_written_by_the_writer_parses_back() {
    let mut out = Vec::new();
    crate::ami::write_command_follows(&mut out, b"c-9", b"a: b\n\nlast");
    let run = run(client(), &out);
    let m = messages(&run)[0].message();
    assert_eq!(m.action_id(), Some(&b"c-9"[..]));
    assert_eq!(
        m.follows_output().collect::<Vec<_>>(),
        [&b"a: b"[..], b"", b"last"]
    );
    let mut again = Vec::new();
    m.write_to(&mut again);
    assert_eq!(again, out);
}

// ---------------------------------------------------------------- client limits

#[test]
fn client_line_limit_counts_the_terminator() {
    let make = || client().with_client_limits(16, 1024);
    // "Key: 0123456789\r\n" is 17 bytes; "Key: 012345678\r\n" is 16.
    let ok = run(make(), b"Key: 012345678\r\n\r\n");
    assert_eq!(ok.items.len(), 1);
    assert_eq!(ok.error, None);
    let ok = run(make(), b"Key: 0123456789\n\n");
    assert_eq!(ok.items.len(), 1);
    let long = same_whatever_the_split(make, b"Event: A\r\n\r\nKey: 0123456789\r\n\r\n");
    assert_eq!(long.error, Some(ParseError::LineTooLong { limit: 16 }));
    assert_eq!(long.items.len(), 1, "the message before is delivered");
    // Without any newline the error comes as soon as the line is sure to be long.
    let mut p = make();
    assert_eq!(p.parse(&[b'x'; 15]).unwrap(), (0, None));
    assert_eq!(
        p.parse(&[b'x'; 16]),
        Err(ParseError::LineTooLong { limit: 16 })
    );
}

#[test]
fn client_message_limit() {
    let make = || client().with_client_limits(64, 30);
    // 27 bytes: fine. 33 (the line "C: 1" ends at byte 31): too long.
    let ok = run(make(), b"Event: A\r\nB: 0123456789\r\n\r\n");
    assert_eq!(ok.error, None);
    assert_eq!(ok.items.len(), 1);
    let long = same_whatever_the_split(make, b"Event: A\r\nB: 0123456789\r\nC: 1\r\n\r\n");
    assert_eq!(long.error, Some(ParseError::MessageTooLong { limit: 30 }));
    // Empty lines before a message do not count towards it.
    let ok = run(make(), b"\r\n\r\n\r\nEvent: A\r\nB: 0123456789\r\n\r\n");
    assert_eq!(ok.error, None);
    // A Follows output without its marker is bounded the same way.
    let make = || client().with_client_limits(64, 100);
    let mut endless = b"Response: Follows\r\nPrivilege: Command\r\n".to_vec();
    endless.extend(std::iter::repeat_n(&b"\r\n"[..], 60).flatten());
    let run = same_whatever_the_split(make, &endless);
    assert_eq!(run.error, Some(ParseError::MessageTooLong { limit: 100 }));
}

/// Skipped events come with their first field only and the raw bytes of the whole
/// message; everything else (other events, responses, limits, every split) is as
/// without skipping.
#[test]
fn skipped_events_keep_their_first_field_and_their_framing() {
    let input: &[u8] = b"Event: VarSet\r\nChannel: A\r\nVariable: x:y\r\nValue: 1\r\n\r\n\
        Event: Newstate\r\nChannel: A\r\n\r\n\
        event: cel\nEventName: HANGUP\n\n\
        Response: Success\r\nMessage: VarSet\r\n\r\n\
        Event: VarSetX\r\nK: v\r\n\r\n";
    let make = || client().skip_events(["VarSet", "CEL"]);
    let skipping = same_whatever_the_split(make, input);
    let plain = run(client(), input);
    assert_eq!(skipping.error, None);
    assert_eq!(skipping.items.len(), 5);
    let (got, all) = (messages(&skipping), messages(&plain));
    assert_eq!(fields(got[0]), kv(&[("Event", "VarSet")]));
    assert_eq!(fields(got[2]), kv(&[("event", "cel")]));
    for i in [1, 3, 4] {
        assert_eq!(got[i], all[i], "message {i} is not skipped");
    }
    // The raw bytes are the whole message in both cases.
    for (a, b) in skipping.items.iter().zip(&plain.items) {
        assert_eq!(a.1, b.1);
    }
    // A skipped event is still bounded.
    let make = || {
        client()
            .skip_events(["VarSet"])
            .with_client_limits(16, 1024)
    };
    let long = same_whatever_the_split(make, b"Event: VarSet\r\nKey: 0123456789\r\n\r\n");
    assert_eq!(long.error, Some(ParseError::LineTooLong { limit: 16 }));
    let make = || client().skip_events(["VarSet"]).with_client_limits(64, 30);
    let long = same_whatever_the_split(make, b"Event: VarSet\r\nB: 0123456789\r\nC: 1\r\n\r\n");
    assert_eq!(long.error, Some(ParseError::MessageTooLong { limit: 30 }));
}

#[test]
fn default_client_limits() {
    let mut line = b"Key: ".to_vec();
    line.resize(CLIENT_MAX_LINE - 2, b'v');
    line.extend_from_slice(b"\r\n\r\n");
    let ok = run(client(), &line);
    assert_eq!(ok.error, None);
    assert_eq!(
        messages(&ok)[0].message().get("Key").unwrap().len(),
        CLIENT_MAX_LINE - 7
    );
    line.insert(6, b'v');
    let long = run(client(), &line);
    assert_eq!(
        long.error,
        Some(ParseError::LineTooLong {
            limit: CLIENT_MAX_LINE
        })
    );
}

#[test]
fn a_big_message_byte_by_byte_is_linear() {
    // 200 KB of Output lines fed one byte at a time: the scan resumes, so this is
    // 200 K steps, not 20 G.
    let mut input = b"Response: Success\r\nMessage: Command output follows\r\n".to_vec();
    for i in 0..10_000 {
        input.extend_from_slice(format!("Output: line {i:05} of the output\r\n").as_bytes());
    }
    input.extend_from_slice(b"\r\n");
    let whole = run(client(), &input);
    assert_eq!(bytewise(client(), &input), whole);
    assert_eq!(
        messages(&whole)[0].message().command_output().count(),
        10_000
    );
}

// ---------------------------------------------------------------- server role

fn server_items(input: &[u8]) -> Vec<OwnedItem> {
    let run = same_whatever_the_split(Parser::server, input);
    assert_eq!(run.error, None);
    run.items.into_iter().map(|(item, _)| item).collect()
}

fn action_names(items: &[OwnedItem]) -> Vec<String> {
    items
        .iter()
        .map(|item| match item {
            OwnedItem::Message(m) => {
                String::from_utf8(m.message().action().unwrap().to_vec()).unwrap()
            }
            OwnedItem::Rejected { error, .. } => format!("{error:?}"),
            OwnedItem::Banner(_) => unreachable!(),
        })
        .collect()
}

#[test]
fn server_reads_actions_like_asterisk() {
    let input = b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n\
Action: Ping\nActionID: lf-1\n\n\
Action:Ping\r\nActionID:nospace-1\r\n\r\n\
action: ping\r\nactionid: lower-1\r\n\r\n\
Action:   Ping  \r\nActionID:\t  blanks-1\r\n\r\n\
ActionID: dup-1\r\nActionID: dup-2\r\nAction: Ping\r\n\r\n";
    let items = server_items(input);
    assert_eq!(items.len(), 6);
    let m: Vec<_> = items
        .iter()
        .map(|i| match i {
            OwnedItem::Message(m) => m.message(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(m[0].action(), Some(&b"Login"[..]));
    assert_eq!(m[0].get("secret"), Some(&b"amp111"[..]));
    assert_eq!(m[1].action_id(), Some(&b"lf-1"[..]));
    assert_eq!(m[2].action(), Some(&b"Ping"[..]));
    assert_eq!(m[2].action_id(), Some(&b"nospace-1"[..]));
    assert_eq!(m[3].action(), Some(&b"ping"[..]));
    assert_eq!(m[3].action_id(), Some(&b"lower-1"[..]));
    // Leading blanks go (ast_skip_blanks), trailing ones stay.
    assert_eq!(m[4].action(), Some(&b"Ping  "[..]));
    assert_eq!(m[4].action_id(), Some(&b"blanks-1"[..]));
    // Action need not come first; the first ActionID wins.
    assert_eq!(m[5].kind(), MessageKind::Other);
    assert_eq!(m[5].action(), Some(&b"Ping"[..]));
    assert_eq!(m[5].action_id(), Some(&b"dup-1"[..]));
}

#[test]
fn server_missing_action() {
    let items = server_items(
        b"ActionID: noaction-1\r\nChannel: x\r\n\r\n\
Action:\r\nActionID: empty-1\r\n\r\n\
Action :Ping\r\n\r\n\
Action: \r\nAction: Ping\r\nActionID: second-1\r\n\r\n",
    );
    assert_eq!(
        items,
        [
            rejected(RequestError::MissingAction, Some("noaction-1")),
            rejected(RequestError::MissingAction, Some("empty-1")),
            rejected(RequestError::MissingAction, None),
            items[3].clone(),
        ]
    );
    let OwnedItem::Message(m) = &items[3] else {
        panic!()
    };
    assert_eq!(m.message().action(), Some(&b"Ping"[..]));
}

#[test]
fn server_answers_every_stray_empty_line() {
    // Asterisk's do_message() runs process_message() on any empty line, even with
    // no header: each one is answered "Missing action in request".
    let items = server_items(b"\r\nAction: Ping\r\n\r\n\r\n\n");
    assert_eq!(
        action_names(&items),
        ["MissingAction", "Ping", "MissingAction", "MissingAction"]
    );
}

#[test]
fn server_error_texts_and_responses() {
    assert_eq!(
        RequestError::LineTooLong.message(),
        "Failed to parse message: line too long"
    );
    assert_eq!(
        RequestError::TooManyLines.message(),
        "Too many lines in message or allocation failure"
    );
    assert_eq!(
        RequestError::MissingAction.message(),
        "Missing action in request"
    );
    assert_eq!(
        RequestError::MissingAction.to_string(),
        "Missing action in request"
    );
    let mut out = Vec::new();
    Rejection {
        error: RequestError::LineTooLong,
        action_id: Some(b"long-1"),
    }
    .write_response(&mut out);
    assert_eq!(
        out,
        b"Response: Error\r\nActionID: long-1\r\nMessage: Failed to parse message: line too long\r\n\r\n"
    );
    let mut out = Vec::new();
    Rejection {
        error: RequestError::MissingAction,
        action_id: Some(b""),
    }
    .write_response(&mut out);
    assert_eq!(
        out,
        b"Response: Error\r\nMessage: Missing action in request\r\n\r\n"
    );
}

fn long_line(key: &str, total: usize) -> Vec<u8> {
    let mut line = format!("{key}: ").into_bytes();
    line.resize(total - 2, b'x');
    line.extend_from_slice(b"\r\n");
    line
}

#[test]
fn server_line_length_limit_is_1024_with_terminator() {
    // 1024 bytes with CRLF: accepted.
    let mut input = b"Action: Ping\r\n".to_vec();
    input.extend(long_line("Data", 1024));
    input.extend_from_slice(b"ActionID: ok-1\r\n\r\n");
    let items = server_items(&input);
    assert_eq!(action_names(&items), ["Ping"]);
    let OwnedItem::Message(m) = &items[0] else {
        panic!()
    };
    assert_eq!(m.message().get("Data").unwrap().len(), 1024 - 8);
    // 1024 bytes with a bare LF: accepted.
    let mut input = b"Action: Ping\r\nData: ".to_vec();
    input.resize(input.len() + 1023 - 6, b'y');
    input.extend_from_slice(b"\n\n");
    assert_eq!(action_names(&server_items(&input)), ["Ping"]);
}

#[test]
fn server_line_too_long_resynchronises_like_asterisk() {
    // A 2000-byte line: Asterisk drops its first 1023 bytes and reads the rest as
    // a header line; the message goes on to its empty line and is answered with
    // the ActionID found among its headers (here after the long line). The next
    // message is read normally.
    let mut input = b"Action: Ping\r\n".to_vec();
    input.extend(long_line("Data", 2000));
    input.extend_from_slice(b"ActionID: long-1\r\n\r\nAction: Ping\r\nActionID: next-1\r\n\r\n");
    let items = server_items(&input);
    assert_eq!(
        items[0],
        rejected(RequestError::LineTooLong, Some("long-1"))
    );
    assert_eq!(action_names(&items), ["LineTooLong", "Ping"]);
    assert_eq!(items.len(), 2);

    // The ActionID before the long line is kept too; a 5000-byte line is several
    // 1023-byte discards in a row.
    let mut input = b"Action: Ping\r\nActionID: before-1\r\n".to_vec();
    input.extend(long_line("Data", 5000));
    input.extend_from_slice(b"ActionID: after-1\r\n\r\n");
    assert_eq!(
        server_items(&input),
        [rejected(RequestError::LineTooLong, Some("before-1"))]
    );

    // Exactly 1025 bytes with CRLF: the CR is the 1024th byte, kept, and pairs with
    // the LF into an empty line, which ends the message there. The headers after
    // it make a message of their own.
    let mut input = b"Action: Ping\r\nActionID: cr-1\r\n".to_vec();
    input.extend(long_line("Data", 1025));
    input.extend_from_slice(b"ActionID: orphan-1\r\n\r\n");
    assert_eq!(
        server_items(&input),
        [
            rejected(RequestError::LineTooLong, Some("cr-1")),
            rejected(RequestError::MissingAction, Some("orphan-1")),
        ]
    );

    // The tail of a long line that looks like a header counts as one.
    let mut input = b"Action: Ping\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'z', 1023));
    input.extend_from_slice(b"ActionID: tail-1\r\n\r\n");
    assert_eq!(
        server_items(&input),
        [rejected(RequestError::LineTooLong, Some("tail-1"))]
    );
}

#[test]
fn server_too_many_lines() {
    let mut input = b"Action: Ping\r\nActionID: many-1\r\n".to_vec();
    for i in 0..126 {
        input.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    // 128 headers: fine.
    let mut ok = input.clone();
    ok.extend_from_slice(b"\r\n");
    assert_eq!(action_names(&server_items(&ok)), ["Ping"]);
    // 129: too many. An ActionID past the 128th is not seen.
    input.extend_from_slice(b"ActionID: late\r\nH: v\r\n\r\nAction: Ping\r\n\r\n");
    let items = server_items(&input);
    assert_eq!(
        items[0],
        rejected(RequestError::TooManyLines, Some("many-1"))
    );
    assert_eq!(action_names(&items), ["TooManyLines", "Ping"]);
    let mut input = b"Action: Ping\r\n".to_vec();
    for _ in 0..200 {
        input.extend_from_slice(b"H: v\r\n");
    }
    input.extend_from_slice(b"ActionID: late\r\n\r\n");
    assert_eq!(
        server_items(&input),
        [rejected(RequestError::TooManyLines, None)]
    );
}

#[test]
fn server_too_many_lines_and_a_long_line_poison_the_next_message() {
    // Asterisk answers "Too many lines" and leaves its line-too-long state set, so
    // the next (valid) action is answered "line too long", after which all is well.
    let mut input = b"Action: Ping\r\nActionID: both-1\r\n".to_vec();
    input.extend(long_line("Data", 1500));
    for _ in 0..130 {
        input.extend_from_slice(b"H: v\r\n");
    }
    input.extend_from_slice(
        b"\r\nAction: Ping\r\nActionID: victim-1\r\n\r\nAction: Ping\r\nActionID: fine-1\r\n\r\n",
    );
    let items = server_items(&input);
    assert_eq!(
        items[..2],
        [
            rejected(RequestError::TooManyLines, Some("both-1")),
            rejected(RequestError::LineTooLong, Some("victim-1")),
        ]
    );
    assert_eq!(action_names(&items[2..]), ["Ping"]);
}

#[test]
fn server_nul_ends_a_line() {
    let items =
        server_items(b"Action: Ping\0junk\r\nActionID: n\0ul\r\n\r\n\0 starts an empty line\r\n");
    assert_eq!(action_names(&items), ["Ping", "MissingAction"]);
    let OwnedItem::Message(m) = &items[0] else {
        panic!()
    };
    assert_eq!(m.message().action_id(), Some(&b"n"[..]));
}

#[test]
fn server_memory_stays_bounded_on_an_endless_line() {
    // 1 MB without a newline, in 4 KB reads: the parser consumes as it goes, so
    // the caller never holds more than a line's worth.
    let mut p = Parser::server();
    let mut buf = b"Action: Ping\r\nActionID: flood-1\r\n".to_vec();
    let chunk = [b'a'; 4096];
    for _ in 0..256 {
        buf.extend_from_slice(&chunk);
        let (n, item) = p.parse(&buf).unwrap();
        assert!(item.is_none());
        buf.drain(..n);
        assert!(buf.len() < SERVER_MAX_LINE, "{} bytes held", buf.len());
    }
    buf.extend_from_slice(b"\r\n\r\n");
    let (n, item) = p.parse(&buf).unwrap();
    assert_eq!(n, buf.len());
    assert_eq!(
        item,
        Some(Item::Rejected(Rejection {
            error: RequestError::LineTooLong,
            action_id: Some(b"flood-1"),
        }))
    );
    // And on endless headers.
    let mut p = Parser::server();
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        buf.extend_from_slice(b"Header: value\r\n");
        let (n, item) = p.parse(&buf).unwrap();
        assert!(item.is_none());
        buf.drain(..n);
    }
    assert!(buf.is_empty(), "past 128 headers everything is consumed");
}

#[test]
fn server_role_has_no_banner_and_no_follows() {
    let items = server_items(b"Response: Follows\r\nPrivilege: Command\r\nsome output\n\r\n");
    assert_eq!(items, [rejected(RequestError::MissingAction, None)]);
}

// ---------------------------------------------------------------- round trips

#[test]
fn write_to_reproduces_asterisk_bytes() {
    let input: &[u8] = b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: Local/200@lab-00000001;1\r\nAccountCode: \r\nExten: 200\r\nVariable: BAZ=a:b=c\r\nOutput:    Members: \r\n\r\n";
    let run = run(client(), input);
    let mut out = Vec::new();
    messages(&run)[0].message().write_to(&mut out);
    assert_eq!(out, input);
}

#[test]
fn write_to_normalises_and_reparses_to_the_same_message() {
    let input: &[u8] = b"Event:NoSpace\nKey:  two spaces\nno colon\n\n";
    let first = run(client(), input);
    let mut out = Vec::new();
    messages(&first)[0].message().write_to(&mut out);
    assert_eq!(
        out,
        b"Event: NoSpace\r\nKey:  two spaces\r\nno colon\r\n\r\n"
    );
    let second = run(client(), &out);
    assert_eq!(messages(&second), messages(&first));
}

#[test]
fn owned_items_compare_by_content() {
    let a = run(client(), b"Event: A\r\nX: 1\r\n\r\n");
    let b = run(client(), b"Event:A\nX:1\n\n");
    assert_eq!(a.items[0].0, b.items[0].0);
    assert_ne!(a.items[0].1, b.items[0].1);
    let c = run(client(), b"Event: A\r\nX: 2\r\n\r\n");
    assert_ne!(a.items[0].0, c.items[0].0);
    assert!(format!("{:?}", a.items[0].0).contains("\"X\": \"1\""));
}

// ---------------------------------------------------------------- splits

#[test]
fn every_split_of_a_session_in_both_roles() {
    let client_stream: &[u8] = b"Asterisk Call Manager/5.0.4\r\nResponse: Success\r\nActionID: ch-1\r\nChallenge: 942327271\r\n\r\n\
Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n\r\n\
Response: Success\r\nActionID: kit-38\r\nMessage: Park successful\n\r\n\r\n\
Response: Follows\r\nPrivilege: Command\r\nActionID: c\r\nout\n\n--END COMMAND--\r\n\r\n\
Event: UserEvent\nUniqueid: 1\nUniqueid: 2\n\nEvent: Trunc";
    let run = same_whatever_the_split(Parser::client, client_stream);
    assert_eq!(run.items.len(), 6);
    assert_eq!(run.leftover, b"Event: Trunc");

    let server_stream: &[u8] = b"Action: Login\r\nUsername: a\r\nSecret: b\r\n\r\n\
Action:Ping\nActionID: 1\n\n\r\nActionID: x\r\n\r\nAction: Events\r\nEventMask: call\r\n\r\nAction: Pi";
    let run = same_whatever_the_split(Parser::server, server_stream);
    assert_eq!(
        action_names(&run.items.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>()),
        ["Login", "Ping", "MissingAction", "MissingAction", "Events"]
    );
    assert_eq!(run.leftover, b"Action: Pi");
}

#[test]
fn a_parser_is_reused_across_many_messages() {
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend_from_slice(format!("Event: E{i}\r\nN: {i}\r\n\r\n").as_bytes());
    }
    let mut p = client();
    let mut at = 0;
    let mut count = 0;
    while let Ok((n, Some(Item::Message(m)))) = p.parse(&input[at..]) {
        assert_eq!(m.get("N"), Some(count.to_string().as_bytes()));
        count += 1;
        at += n;
    }
    assert_eq!(count, 1000);
    assert_eq!(at, input.len());
}

#[test]
fn write_to_never_splits_a_message() {
    // A line holding only a CR (before the CRLF) is a colon-less field whose key
    // is "\r": the writer drops CRs, and must not turn it into an empty line.
    let first = run(client(), b"Event: A\r\n\r\r\nX: 1\r\n\r\n");
    let m = messages(&first)[0].message();
    assert_eq!(m.len(), 3);
    assert_eq!(m.field(1).unwrap().key(), b"\r");
    let mut out = Vec::new();
    m.write_to(&mut out);
    assert_eq!(out, b"Event: A\r\nX: 1\r\n\r\n");
}

#[test]
fn follows_output_ending_with_the_marker_text_round_trips() {
    // Only the LAST line ends the output, so a last output line that itself ends
    // with the marker's text can only be written glued to the marker.
    let input =
        b"Response: Follows\r\nPrivilege: Command\r\nx--END COMMAND----END COMMAND--\r\n\r\n";
    let first = run(client(), input);
    let m = messages(&first)[0].message();
    assert_eq!(
        m.follows_output().collect::<Vec<_>>(),
        [&b"x--END COMMAND--"[..]]
    );
    let mut out = Vec::new();
    m.write_to(&mut out);
    assert_eq!(out, input);
}

// ---------------------------------------------------------------- fast path

/// A field as bytes: key, value, has a colon.
type RawField = (Vec<u8>, Vec<u8>, bool);

/// The fields of each message of `input`, read line by line straight from the
/// module docs (client role, no `Response: Follows`): a line ends at LF, a CR
/// before it is dropped, an empty line ends a message (or is skipped between
/// messages), a field splits at its first colon and loses one space after it.
fn model_messages(input: &[u8]) -> Vec<Vec<RawField>> {
    let mut messages = Vec::new();
    let mut fields = Vec::new();
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    lines.pop(); // after the last LF: incomplete, not a line
    for line in lines {
        let content = line.strip_suffix(b"\r").unwrap_or(line);
        if content.is_empty() {
            if !fields.is_empty() {
                messages.push(std::mem::take(&mut fields));
            }
            continue;
        }
        fields.push(match content.iter().position(|&b| b == b':') {
            None => (content.to_vec(), Vec::new(), false),
            Some(i) => {
                let value = &content[i + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (content[..i].to_vec(), value.to_vec(), true)
            }
        });
    }
    messages
}

fn parsed_messages(run: &Run) -> Vec<Vec<RawField>> {
    messages(run)
        .iter()
        .map(|m| {
            m.message()
                .fields()
                .map(|f| (f.key().to_vec(), f.value().to_vec(), f.has_colon()))
                .collect()
        })
        .collect()
}

#[test]
fn lines_of_every_length_and_alignment_match_the_model() {
    // Every line length from 1 to 40, its colon (none, or one or two) anywhere,
    // CRLF or LF, a lone CR or a space here and there, after a first line whose
    // length moves the rest across the 8-byte words of the scans: colons and LFs
    // fall on every word position, and every split of the input is tried.
    let mut seed = 0x2545_f491_u32;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize % n
    };
    for len in 1..=40 {
        for shift in 0..8 {
            let mut input = format!("Event: {}\r\n", "E".repeat(shift)).into_bytes();
            for _ in 0..3 {
                let mut line: Vec<u8> = (0..len)
                    .map(|_| [b'k', b'v', b':', b' ', b'\r'][next(5)])
                    .collect();
                if next(4) == 0 {
                    line.retain(|&b| b != b':');
                }
                if line.iter().all(|&b| b == b'\r') {
                    line[0] = b'k'; // not an empty line once its CR is dropped
                }
                input.extend_from_slice(&line);
                input.extend_from_slice(if next(2) == 0 { b"\r\n" } else { b"\n" });
            }
            input.extend_from_slice(b"\r\nEvent: Next\nK: v\n\n");
            let run = same_whatever_the_split(client, &input);
            assert_eq!(run.error, None, "{input:?}");
            assert_eq!(parsed_messages(&run), model_messages(&input), "{input:?}");
        }
    }
}

#[test]
fn fast_path_limits_and_follows_are_those_of_the_general_path() {
    // A message fed whole goes through the fast path; byte by byte, through the
    // general path (each line is completed by a resumed scan). Both must agree on
    // the limits, to the byte, and hand a Follows response over.
    let inputs = [
        &b"Event: A\r\nKey: 1234\r\nX: 12345678\r\nY\r\n\r\n"[..],
        b"Event: A\nKey: 1234\nX: 1234567\nY\n\n",
        b"\r\n\nEvent: AB\r\nK:v\r\nLonger: line\r\n\r\n",
    ];
    let mut errors = [0; 3];
    for max_line in 2..=16 {
        for max_message in 2..=48 {
            let make = || client().with_client_limits(max_line, max_message);
            for input in inputs {
                let whole = run(make(), input);
                assert_eq!(bytewise(make(), input), whole, "{max_line} {max_message}");
                errors[match whole.error {
                    None => 0,
                    Some(ParseError::LineTooLong { .. }) => 1,
                    Some(_) => 2,
                }] += 1;
            }
        }
    }
    assert!(errors.iter().all(|&n| n > 0), "{errors:?}");
    let input = b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\nline: 1\n--END COMMAND--\r\nX: y\r\n\r\n";
    let run = same_whatever_the_split(client, input);
    let m = messages(&run)[0].message();
    assert!(m.is_follows());
    assert_eq!(m.follows_output().collect::<Vec<_>>(), [&b"line: 1"[..]]);
    assert_eq!(m.get("X"), Some(&b"y"[..]));
    assert_eq!(m.action_id(), Some(&b"7"[..]));
}
