//! The streaming frame reader: turns bytes as they come off the socket, split
//! anywhere, into [`Event`]s, enforcing every RFC 6455 rule a receiver checks.
//!
//! Zero copy: payload bytes are unmasked in place in the caller's buffer and handed out
//! as slices of it, as they arrive. The only bytes the reader keeps are a header or a
//! control frame payload (<= 125 bytes) that arrived split across reads.

use thiserror::Error;

use super::Role;
use super::close::{CloseError, INVALID_PAYLOAD, PROTOCOL_ERROR, TOO_BIG, parse_close_payload};
use super::frame::{
    FrameError, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, Opcode, apply_mask, parse_header,
};
use super::utf8::Utf8Validator;

/// What a [`Reader::read`] call produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A piece of a data message, in order. `first` marks the message's first piece,
    /// `fin` its last (an empty message is one piece with both). For a text message the
    /// bytes seen so far are valid UTF-8, but a piece may end inside a character.
    Data {
        payload: &'a [u8],
        text: bool,
        first: bool,
        fin: bool,
    },
    /// A Ping (to be answered with a Pong carrying the same payload).
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A valid Close frame: `code` is `None` for an empty payload (then `reason` is "").
    /// The peer sends nothing after it (§5.5.1): answer with a Close and stop reading.
    Close {
        code: Option<u16>,
        reason: &'a str,
    },
}

/// A violation by the peer: the connection must be failed with a Close frame carrying
/// [`ReadError::close_code`] (and [`ReadError::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{}", self.reason())]
pub enum ReadError {
    /// An invalid frame header (see [`FrameError`]).
    Frame(FrameError),
    /// Server role: a client frame without a masking key.
    UnmaskedFrame,
    /// Client role: a server frame with a masking key.
    MaskedFrame,
    /// A continuation frame while no fragmented message is in progress.
    UnexpectedContinuation,
    /// A Text or Binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// The message would exceed the reader's `max_message_bytes`.
    MessageTooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// An invalid Close payload (see [`CloseError`]).
    Close(CloseError),
}

impl ReadError {
    /// The code of the Close frame to fail the connection with.
    pub const fn close_code(self) -> u16 {
        match self {
            Self::Frame(_)
            | Self::UnmaskedFrame
            | Self::MaskedFrame
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation => PROTOCOL_ERROR,
            Self::MessageTooBig => TOO_BIG,
            Self::InvalidUtf8 => INVALID_PAYLOAD,
            Self::Close(e) => e.close_code(),
        }
    }

    /// A short reason, suitable for the Close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Frame(e) => e.reason(),
            Self::UnmaskedFrame => "unmasked client frame",
            Self::MaskedFrame => "masked server frame",
            Self::UnexpectedContinuation => "continuation without a message",
            Self::ExpectedContinuation => "new message inside a fragmented one",
            Self::MessageTooBig => "message too big",
            Self::InvalidUtf8 => "invalid UTF-8 in text message",
            Self::Close(e) => e.reason(),
        }
    }
}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

impl From<CloseError> for ReadError {
    fn from(e: CloseError) -> Self {
        Self::Close(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Close,
    Ping,
    Pong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Data(MessageKind),
    Control(Control),
}

/// The frame whose payload is being received.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Payload bytes not received yet.
    remaining: u64,
    kind: FrameKind,
    fin: bool,
    /// The masking key, rotated as the payload arrives so that `mask[0]` applies to the
    /// next payload byte (this saves remembering the position in the payload).
    mask: Option<[u8; 4]>,
}

/// The receiving half of a WebSocket connection. 168 bytes, no heap allocation.
///
/// After [`Reader::read`] returns an error the state is unspecified: fail the
/// connection and drop the reader.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Limit on a data message's total payload, checked against each frame header.
    max_message_bytes: u64,
    /// Payload bytes announced by the frame headers of the data message in progress.
    message_bytes: u64,
    /// The frame whose payload is being received; `None` between frames.
    frame: Option<Frame>,
    /// The data message in progress, from its first frame to the end of its final one.
    message: Option<MessageKind>,
    /// No `Data` event of the message in progress has been emitted yet.
    message_first: bool,
    role: Role,
    /// Validates the text message in progress.
    utf8: Utf8Validator,
    /// Bytes that arrived split across reads: between frames, the beginning of a header
    /// (<= 13 bytes, as 14 always complete one); inside a control frame, the beginning
    /// of its payload (< 125 bytes). Never both at once, so they share the buffer.
    partial: [u8; MAX_CONTROL_PAYLOAD],
    partial_len: u8,
}

// Stays small: the engine keeps one per connection.
const _: () = assert!(std::mem::size_of::<Reader>() <= 168);

impl Reader {
    /// `role` says which side we are (and so whether incoming frames must be masked);
    /// `max_message_bytes` bounds the total payload of a data message.
    pub const fn new(role: Role, max_message_bytes: u64) -> Self {
        Self {
            max_message_bytes,
            message_bytes: 0,
            frame: None,
            message: None,
            message_first: false,
            role,
            utf8: Utf8Validator::new(),
            partial: [0; MAX_CONTROL_PAYLOAD],
            partial_len: 0,
        }
    }

    /// True between frames with no partial header and no fragmented message in progress.
    pub const fn is_idle(&self) -> bool {
        self.frame.is_none() && self.partial_len == 0 && self.message.is_none()
    }

    /// Consumes a prefix of `buf` and returns its length with at most one event. Call
    /// again with the rest of `buf` until it is all consumed: a non-empty `buf` always
    /// makes progress. Payload bytes are unmasked in place and `Data`, `Ping` and `Pong`
    /// payloads borrow `buf`, except a control payload that arrived split across reads,
    /// which borrows the reader.
    pub fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ReadError> {
        let (mut frame, header_len) = match self.frame {
            Some(frame) => (frame, 0),
            None => match self.read_header(buf)? {
                (used, None) => return Ok((used, None)),
                (used, Some(frame)) => (frame, used),
            },
        };
        // A frame just started may have its payload (or part of it) in the same buffer.
        let rest = buf.get_mut(header_len..).unwrap_or_default();
        let n = usize::try_from(frame.remaining)
            .map_or(rest.len(), |remaining| remaining.min(rest.len()));
        let chunk = &mut rest[..n];
        if let Some(mask) = frame.mask.as_mut() {
            apply_mask(chunk, *mask, 0);
            mask.rotate_left(n % 4);
        }
        frame.remaining -= n as u64;
        let done = frame.remaining == 0;
        self.frame = if done { None } else { Some(frame) };

        let consumed = header_len + n;
        let event = match frame.kind {
            FrameKind::Data(kind) => self.on_data(chunk, kind, done && frame.fin)?,
            FrameKind::Control(control) => self.on_control(chunk, control, done)?,
        };
        Ok((consumed, event))
    }

    /// Adds bytes of `buf` to the partial header; once it is complete, checks it and
    /// starts the frame. Returns how many bytes of `buf` belonged to the header.
    fn read_header(&mut self, buf: &[u8]) -> Result<(usize, Option<Frame>), ReadError> {
        let have = usize::from(self.partial_len);
        let mut taken = 0;
        for (slot, &byte) in self
            .partial
            .iter_mut()
            .take(MAX_HEADER_LEN)
            .skip(have)
            .zip(buf)
        {
            *slot = byte;
            taken += 1;
        }
        let available = have + taken;
        match parse_header(self.partial.get(..available).unwrap_or_default())? {
            None => {
                // A header is at most 14 bytes, so `taken` is all of `buf`.
                self.partial_len = available as u8;
                Ok((taken, None))
            }
            Some((header, header_len)) => {
                self.partial_len = 0;
                let frame =
                    self.start_frame(header.fin, header.opcode, header.mask, header.payload_len)?;
                // `header_len > have`: the first `have` bytes alone did not parse.
                Ok((header_len - have, Some(frame)))
            }
        }
    }

    /// Checks a complete header against the role and the message in progress.
    fn start_frame(
        &mut self,
        fin: bool,
        opcode: Opcode,
        mask: Option<[u8; 4]>,
        len: u64,
    ) -> Result<Frame, ReadError> {
        match (self.role, mask) {
            (Role::Server, None) => return Err(ReadError::UnmaskedFrame),
            (Role::Client, Some(_)) => return Err(ReadError::MaskedFrame),
            _ => {}
        }
        // Control frames were checked by `parse_header` (final, <= 125 bytes); they
        // leave the message in progress alone.
        let kind = match opcode {
            Opcode::Close => FrameKind::Control(Control::Close),
            Opcode::Ping => FrameKind::Control(Control::Ping),
            Opcode::Pong => FrameKind::Control(Control::Pong),
            Opcode::Continuation => {
                let kind = self.message.ok_or(ReadError::UnexpectedContinuation)?;
                self.check_size(len)?;
                FrameKind::Data(kind)
            }
            Opcode::Text | Opcode::Binary => {
                if self.message.is_some() {
                    return Err(ReadError::ExpectedContinuation);
                }
                let kind = if opcode == Opcode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                self.message = Some(kind);
                self.message_first = true;
                self.message_bytes = 0;
                self.check_size(len)?;
                FrameKind::Data(kind)
            }
        };
        Ok(Frame {
            remaining: len,
            kind,
            fin,
            mask,
        })
    }

    /// Adds a data frame's length to its message, failing before any of its payload
    /// arrives if the message would exceed the limit.
    fn check_size(&mut self, len: u64) -> Result<(), ReadError> {
        self.message_bytes = self
            .message_bytes
            .checked_add(len)
            .filter(|&total| total <= self.max_message_bytes)
            .ok_or(ReadError::MessageTooBig)?;
        Ok(())
    }

    /// Delivers a piece of data payload. `end_of_message` is set on the final frame's
    /// last byte.
    fn on_data<'a>(
        &mut self,
        chunk: &'a [u8],
        kind: MessageKind,
        end_of_message: bool,
    ) -> Result<Option<Event<'a>>, ReadError> {
        let text = kind == MessageKind::Text;
        if text {
            // Fail fast: the invalid byte is in this chunk, whatever follows.
            self.utf8.feed(chunk).map_err(|_| ReadError::InvalidUtf8)?;
            if end_of_message {
                self.utf8.finish().map_err(|_| ReadError::InvalidUtf8)?;
            }
        }
        if end_of_message {
            self.message = None;
        } else if chunk.is_empty() {
            // An empty frame (or an empty read) in the middle of a message: nothing to say.
            return Ok(None);
        }
        let first = std::mem::replace(&mut self.message_first, false);
        Ok(Some(Event::Data {
            payload: chunk,
            text,
            first,
            fin: end_of_message,
        }))
    }

    /// Delivers a control frame once its whole payload is there.
    fn on_control<'a>(
        &'a mut self,
        chunk: &'a [u8],
        control: Control,
        done: bool,
    ) -> Result<Option<Event<'a>>, ReadError> {
        let payload: &'a [u8] = if done && self.partial_len == 0 {
            // The whole payload is in this read: hand it out in place.
            chunk
        } else {
            let start = usize::from(self.partial_len);
            let end = start + chunk.len();
            // Never fails: `parse_header` bounds a control payload to 125 bytes.
            let slot = self
                .partial
                .get_mut(start..end)
                .ok_or(FrameError::ControlTooLong)?;
            slot.copy_from_slice(chunk);
            if !done {
                self.partial_len = end as u8;
                return Ok(None);
            }
            self.partial_len = 0;
            &self.partial[..end]
        };
        Ok(Some(match control {
            Control::Ping => Event::Ping(payload),
            Control::Pong => Event::Pong(payload),
            Control::Close => {
                let (code, reason) = parse_close_payload(payload)?;
                Event::Close { code, reason }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::close::encode_close_frame;
    use crate::ws::frame::encode_frame;

    const MAX: u64 = 1 << 20;

    /// An event, owned, with the pieces of a data message reassembled.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Msg {
        Data { text: bool, payload: Vec<u8> },
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    /// Feeds chunks to a reader, the way the engine does, and reassembles the events,
    /// checking the `first`/`fin` protocol of `Data` events on the way.
    struct Harness {
        reader: Reader,
        /// The data message being reassembled.
        pending: Option<(bool, Vec<u8>)>,
        msgs: Vec<Msg>,
        /// Bytes fed so far, including the chunk being processed.
        fed: usize,
        data_events: usize,
    }

    impl Harness {
        fn new(role: Role, max: u64) -> Self {
            Self {
                reader: Reader::new(role, max),
                pending: None,
                msgs: Vec::new(),
                fed: 0,
                data_events: 0,
            }
        }

        fn feed(&mut self, chunk: &[u8]) -> Result<(), ReadError> {
            // A fresh buffer per read, as from a socket: the reader unmasks it in place.
            let mut buf = chunk.to_vec();
            self.fed += buf.len();
            let len = buf.len();
            let mut offset = 0;
            while offset < len {
                let (used, event) = self.reader.read(&mut buf[offset..])?;
                assert!(used > 0, "a non-empty buffer must make progress");
                offset += used;
                assert!(offset <= len, "consumed more than it was given");
                if let Some(event) = event {
                    Self::record(
                        &mut self.pending,
                        &mut self.msgs,
                        &mut self.data_events,
                        event,
                    );
                }
            }
            Ok(())
        }

        fn record(
            pending: &mut Option<(bool, Vec<u8>)>,
            msgs: &mut Vec<Msg>,
            data_events: &mut usize,
            event: Event<'_>,
        ) {
            match event {
                Event::Data {
                    payload,
                    text,
                    first,
                    fin,
                } => {
                    *data_events += 1;
                    assert!(fin || !payload.is_empty(), "empty non-final Data event");
                    if first {
                        assert!(
                            pending.is_none(),
                            "first piece while a message is in progress"
                        );
                        *pending = Some((text, Vec::new()));
                    }
                    let (pending_text, bytes) = pending
                        .as_mut()
                        .expect("a non-first piece without a first one");
                    assert_eq!(*pending_text, text, "message type changed between pieces");
                    bytes.extend_from_slice(payload);
                    if fin {
                        let (text, payload) = pending.take().unwrap();
                        msgs.push(Msg::Data { text, payload });
                    }
                }
                Event::Ping(p) => msgs.push(Msg::Ping(p.to_vec())),
                Event::Pong(p) => msgs.push(Msg::Pong(p.to_vec())),
                Event::Close { code, reason } => msgs.push(Msg::Close(code, reason.to_owned())),
            }
        }
    }

    /// Decodes `input` fed in pieces of the given sizes (the rest in one last piece).
    fn decode_in(
        role: Role,
        max: u64,
        input: &[u8],
        sizes: impl IntoIterator<Item = usize>,
    ) -> Result<Vec<Msg>, (ReadError, usize)> {
        let mut h = Harness::new(role, max);
        let mut rest = input;
        let mut sizes = sizes.into_iter();
        while !rest.is_empty() {
            let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(size);
            h.feed(chunk).map_err(|e| (e, h.fed))?;
            rest = tail;
        }
        assert!(h.pending.is_none(), "input ended inside a message");
        Ok(h.msgs)
    }

    fn decode(role: Role, input: &[u8]) -> Result<Vec<Msg>, (ReadError, usize)> {
        decode_in(role, MAX, input, [])
    }

    fn decode_bytewise(role: Role, max: u64, input: &[u8]) -> Result<Vec<Msg>, (ReadError, usize)> {
        decode_in(role, max, input, std::iter::repeat(1))
    }

    /// A tiny seeded PRNG (xorshift64).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn mask(&mut self) -> [u8; 4] {
            (self.next() as u32).to_ne_bytes()
        }
    }

    /// Builds the bytes a peer of `role` sends: masked when we are the server.
    struct Wire {
        role: Role,
        bytes: Vec<u8>,
        rng: XorShift,
    }

    impl Wire {
        fn new(role: Role) -> Self {
            Self {
                role,
                bytes: Vec::new(),
                rng: XorShift(0x2545_F491_4F6C_DD1D),
            }
        }

        fn peer_mask(&mut self) -> Option<[u8; 4]> {
            (self.role == Role::Server).then(|| self.rng.mask())
        }

        fn frame(mut self, opcode: Opcode, fin: bool, payload: &[u8]) -> Self {
            let mask = self.peer_mask();
            encode_frame(&mut self.bytes, opcode, fin, payload, mask);
            self
        }

        fn close(mut self, code: Option<u16>, reason: &str) -> Self {
            let mask = self.peer_mask();
            encode_close_frame(&mut self.bytes, code, reason, mask);
            self
        }

        /// A frame with a hand-written header (e.g. a non-minimal length).
        fn raw(mut self, header: &[u8], payload: &[u8]) -> Self {
            let mut header = header.to_vec();
            let mask = self.peer_mask();
            if let Some(key) = mask {
                header[1] |= 0x80;
                header.extend_from_slice(&key);
            }
            self.bytes.extend_from_slice(&header);
            let start = self.bytes.len();
            self.bytes.extend_from_slice(payload);
            if let Some(key) = mask {
                apply_mask(&mut self.bytes[start..], key, 0);
            }
            self
        }
    }

    fn text(s: &str) -> Msg {
        Msg::Data {
            text: true,
            payload: s.as_bytes().to_vec(),
        }
    }

    fn binary(b: &[u8]) -> Msg {
        Msg::Data {
            text: false,
            payload: b.to_vec(),
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Valid inputs with the messages they decode to, as sent to a reader of `role`.
    fn corpus(role: Role) -> Vec<(&'static str, Vec<u8>, Vec<Msg>)> {
        let w = || Wire::new(role);
        let mut cases = vec![
            (
                "text",
                w().frame(Opcode::Text, true, b"Hello").bytes,
                vec![text("Hello")],
            ),
            (
                "empty text",
                w().frame(Opcode::Text, true, b"").bytes,
                vec![text("")],
            ),
            (
                "empty binary",
                w().frame(Opcode::Binary, true, b"").bytes,
                vec![binary(b"")],
            ),
            (
                "fragmented with interleaved controls",
                w().frame(Opcode::Text, false, b"Hel")
                    .frame(Opcode::Ping, true, b"ping")
                    .frame(Opcode::Continuation, false, b"l")
                    .frame(Opcode::Pong, true, b"")
                    .frame(Opcode::Continuation, false, b"")
                    .frame(Opcode::Continuation, true, b"o")
                    .bytes,
                vec![
                    Msg::Ping(b"ping".to_vec()),
                    Msg::Pong(vec![]),
                    text("Hello"),
                ],
            ),
            (
                "fragmented empty message",
                w().frame(Opcode::Text, false, b"")
                    .frame(Opcode::Continuation, true, b"")
                    .bytes,
                vec![text("")],
            ),
            (
                "message ending with an empty continuation",
                w().frame(Opcode::Binary, false, b"abc")
                    .frame(Opcode::Continuation, true, b"")
                    .bytes,
                vec![binary(b"abc")],
            ),
            (
                "characters split across fragments",
                w().frame(Opcode::Text, false, &"€𝄞".as_bytes()[..2])
                    .frame(Opcode::Continuation, false, &"€𝄞".as_bytes()[2..4])
                    .frame(Opcode::Continuation, true, &"€𝄞".as_bytes()[4..])
                    .bytes,
                vec![text("€𝄞")],
            ),
            (
                "non-minimal lengths",
                w().raw(&[0x81, 126, 0, 5], b"Hello")
                    .raw(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 3], b"abc")
                    .bytes,
                vec![text("Hello"), binary(b"abc")],
            ),
            (
                "close with code and reason",
                w().close(Some(1000), "bye").bytes,
                vec![Msg::Close(Some(1000), "bye".into())],
            ),
            (
                "close with code only",
                w().close(Some(4000), "").bytes,
                vec![Msg::Close(Some(4000), String::new())],
            ),
            (
                "empty close",
                w().close(None, "").bytes,
                vec![Msg::Close(None, String::new())],
            ),
            (
                "125-byte ping and close",
                w().frame(Opcode::Ping, true, &pattern(125))
                    .close(Some(1001), &"é".repeat(61))
                    .bytes,
                vec![
                    Msg::Ping(pattern(125)),
                    Msg::Close(Some(1001), "é".repeat(61)),
                ],
            ),
            (
                "many small messages",
                w().frame(Opcode::Text, true, b"a")
                    .frame(Opcode::Binary, true, b"bc")
                    .frame(Opcode::Ping, true, b"")
                    .frame(Opcode::Text, true, "κόσμε".as_bytes())
                    .bytes,
                vec![text("a"), binary(b"bc"), Msg::Ping(vec![]), text("κόσμε")],
            ),
        ];
        for len in [125, 126, 65535, 65536] {
            let payload = pattern(len);
            cases.push((
                "sized binary",
                w().frame(Opcode::Binary, true, &payload).bytes,
                vec![binary(&payload)],
            ));
        }
        let long_text = "ab€𝄞".repeat(2000);
        cases.push((
            "long text",
            w().frame(Opcode::Text, true, long_text.as_bytes()).bytes,
            vec![text(&long_text)],
        ));
        cases
    }

    /// Split points to try: all of them for small inputs; for large ones, all near
    /// the ends (headers) and a spread in the middle.
    fn split_points(len: usize) -> Vec<usize> {
        if len <= 4096 {
            (0..=len).collect()
        } else {
            (0..=64)
                .chain((64..len - 64).step_by(509))
                .chain(len - 64..=len)
                .collect()
        }
    }

    #[test]
    fn corpus_decodes_identically_however_it_is_split() {
        for role in [Role::Server, Role::Client] {
            for (name, input, expected) in corpus(role) {
                let ctx = format!("{name} ({role:?})");
                assert_eq!(decode(role, &input), Ok(expected.clone()), "{ctx}: whole");
                assert_eq!(
                    decode_bytewise(role, MAX, &input),
                    Ok(expected.clone()),
                    "{ctx}: byte by byte"
                );
                for at in split_points(input.len()) {
                    assert_eq!(
                        decode_in(role, MAX, &input, [at]),
                        Ok(expected.clone()),
                        "{ctx}: split at {at}"
                    );
                }
                let mut rng = XorShift(0x1234_5678 + input.len() as u64);
                for round in 0..20 {
                    let max_piece = 1 + rng.below(input.len().min(300) + 1);
                    let sizes: Vec<usize> =
                        (0..input.len()).map(|_| 1 + rng.below(max_piece)).collect();
                    assert_eq!(
                        decode_in(role, MAX, &input, sizes),
                        Ok(expected.clone()),
                        "{ctx}: random round {round}"
                    );
                }
            }
        }
    }

    #[test]
    fn whole_frames_yield_exactly_one_event_each() {
        // "abc" then an empty final continuation: the empty final piece is still delivered.
        let input = Wire::new(Role::Server)
            .frame(Opcode::Binary, false, b"abc")
            .frame(Opcode::Continuation, true, b"")
            .frame(Opcode::Text, true, b"")
            .bytes;
        let mut buf = input.clone();
        let mut reader = Reader::new(Role::Server, MAX);
        let mut events = Vec::new();
        let mut offset = 0;
        while offset < buf.len() {
            let (used, event) = reader.read(&mut buf[offset..]).unwrap();
            offset += used;
            events.push(event.map(|e| match e {
                Event::Data {
                    payload,
                    text,
                    first,
                    fin,
                } => (payload.to_vec(), text, first, fin),
                other => panic!("unexpected {other:?}"),
            }));
        }
        assert_eq!(
            events,
            [
                Some((b"abc".to_vec(), false, true, false)),
                Some((vec![], false, false, true)),
                Some((vec![], true, true, true)),
            ]
        );
    }

    #[test]
    fn a_split_payload_is_delivered_as_it_arrives() {
        let payload = pattern(1000);
        let input = Wire::new(Role::Server)
            .frame(Opcode::Binary, true, &payload)
            .bytes;
        let mut h = Harness::new(Role::Server, MAX);
        h.feed(&input[..8 + 300]).unwrap();
        assert_eq!(
            h.data_events, 1,
            "the first 300 bytes are delivered before the rest arrives"
        );
        assert_eq!(
            h.pending.as_ref().map(|(_, b)| b.as_slice()),
            Some(&payload[..300])
        );
        h.feed(&input[8 + 300..]).unwrap();
        assert_eq!(h.data_events, 2);
        assert_eq!(h.msgs, [binary(&payload)]);
    }

    #[test]
    fn payload_is_unmasked_in_place_without_copying() {
        // RFC 6455 §5.7: a single-frame masked text message.
        let mut buf = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let expected_at = buf[6..].as_ptr();
        let mut reader = Reader::new(Role::Server, MAX);
        let (used, event) = reader.read(&mut buf).unwrap();
        assert_eq!(used, 11);
        match event {
            Some(Event::Data {
                payload,
                text: true,
                first: true,
                fin: true,
            }) => {
                assert_eq!(payload, b"Hello");
                assert_eq!(
                    payload.as_ptr(),
                    expected_at,
                    "payload must be a slice of the input"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(&buf[6..], b"Hello");
    }

    #[test]
    fn rfc_5_7_examples_decode() {
        let client = Role::Client; // the examples are unmasked server frames...
        assert_eq!(
            decode(client, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
            Ok(vec![text("Hello")])
        );
        assert_eq!(
            decode(
                client,
                &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
            ),
            Ok(vec![text("Hello")])
        );
        assert_eq!(
            decode(client, &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
            Ok(vec![Msg::Ping(b"Hello".to_vec())])
        );
        let mut big = vec![0x82, 0x7E, 0x01, 0x00];
        big.extend_from_slice(&pattern(256));
        assert_eq!(decode(client, &big), Ok(vec![binary(&pattern(256))]));
        let mut huge = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        huge.extend_from_slice(&pattern(65536));
        assert_eq!(decode(client, &huge), Ok(vec![binary(&pattern(65536))]));
        // ...except the masked ones, which a client sends.
        let server = Role::Server;
        assert_eq!(
            decode(
                server,
                &[
                    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
                ]
            ),
            Ok(vec![text("Hello")])
        );
        assert_eq!(
            decode(
                server,
                &[
                    0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
                ]
            ),
            Ok(vec![Msg::Pong(b"Hello".to_vec())])
        );
    }

    /// Decodes `input` whole and byte by byte; both must fail with `expected`, and byte by
    /// byte the failure must come when byte number `at` (1-based) arrives.
    fn assert_fails(role: Role, max: u64, input: &[u8], expected: ReadError, at: usize) {
        assert_eq!(
            decode_in(role, max, input, []).map_err(|(e, _)| e),
            Err(expected),
            "whole"
        );
        assert_eq!(
            decode_bytewise(role, max, input),
            Err((expected, at)),
            "byte by byte"
        );
    }

    #[test]
    fn reserved_bits_are_a_protocol_error() {
        for rsv in [0x40, 0x20, 0x10] {
            let mut input = Wire::new(Role::Client)
                .frame(Opcode::Text, true, b"x")
                .bytes;
            input[0] |= rsv;
            assert_fails(
                Role::Client,
                MAX,
                &input,
                ReadError::Frame(FrameError::ReservedBits),
                1,
            );
        }
        assert_eq!(
            ReadError::Frame(FrameError::ReservedBits).close_code(),
            1002
        );
    }

    #[test]
    fn reserved_opcodes_are_a_protocol_error() {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            let input = Wire::new(Role::Server).raw(&[0x80 | opcode, 0], b"").bytes;
            let err = ReadError::Frame(FrameError::ReservedOpcode);
            assert_fails(Role::Server, MAX, &input, err, 1);
            assert_eq!(err.close_code(), 1002);
        }
    }

    #[test]
    fn masking_must_match_the_role() {
        let unmasked = Wire::new(Role::Client)
            .frame(Opcode::Text, true, b"hi")
            .bytes;
        assert_fails(Role::Server, MAX, &unmasked, ReadError::UnmaskedFrame, 2);
        assert_eq!(ReadError::UnmaskedFrame.close_code(), 1002);

        let masked = Wire::new(Role::Server)
            .frame(Opcode::Text, true, b"hi")
            .bytes;
        assert_fails(Role::Client, MAX, &masked, ReadError::MaskedFrame, 6);
        assert_eq!(ReadError::MaskedFrame.close_code(), 1002);
    }

    #[test]
    fn control_frames_must_be_short_and_final() {
        let ping_126 = Wire::new(Role::Server)
            .frame(Opcode::Ping, true, &[0; 126])
            .bytes;
        assert_fails(
            Role::Server,
            MAX,
            &ping_126,
            ReadError::Frame(FrameError::ControlTooLong),
            2,
        );
        let fragmented = Wire::new(Role::Server)
            .frame(Opcode::Ping, false, b"")
            .bytes;
        assert_fails(
            Role::Server,
            MAX,
            &fragmented,
            ReadError::Frame(FrameError::FragmentedControl),
            1,
        );
        let close_126 = Wire::new(Role::Client)
            .frame(Opcode::Close, true, &[0x03; 126])
            .bytes;
        let err = ReadError::Frame(FrameError::ControlTooLong);
        assert_fails(Role::Client, MAX, &close_126, err, 2);
        assert_eq!(err.close_code(), 1002);
        assert_eq!(
            ReadError::Frame(FrameError::FragmentedControl).close_code(),
            1002
        );
    }

    #[test]
    fn continuation_without_a_message_is_a_protocol_error() {
        let input = Wire::new(Role::Server)
            .frame(Opcode::Continuation, true, b"x")
            .bytes;
        assert_fails(
            Role::Server,
            MAX,
            &input,
            ReadError::UnexpectedContinuation,
            6,
        );
        // Also after a message has ended.
        let input = Wire::new(Role::Client)
            .frame(Opcode::Text, true, b"a")
            .frame(Opcode::Continuation, true, b"b")
            .bytes;
        assert_fails(
            Role::Client,
            MAX,
            &input,
            ReadError::UnexpectedContinuation,
            5,
        );
        assert_eq!(ReadError::UnexpectedContinuation.close_code(), 1002);
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_a_protocol_error() {
        for opcode in [Opcode::Text, Opcode::Binary] {
            let input = Wire::new(Role::Client)
                .frame(Opcode::Binary, false, b"a")
                .frame(Opcode::Ping, true, b"")
                .frame(opcode, true, b"b")
                .bytes;
            assert_fails(
                Role::Client,
                MAX,
                &input,
                ReadError::ExpectedContinuation,
                7,
            );
        }
        assert_eq!(ReadError::ExpectedContinuation.close_code(), 1002);
    }

    #[test]
    fn length_with_the_top_bit_set_is_a_protocol_error() {
        let input = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        let err = ReadError::Frame(FrameError::LengthOverflow);
        assert_fails(Role::Server, u64::MAX, &input, err, 10);
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn invalid_utf8_fails_fast_inside_a_large_frame() {
        let mut payload = vec![b'a'; 100_000];
        payload[10] = 0xFF;
        let input = Wire::new(Role::Server)
            .frame(Opcode::Text, true, &payload)
            .bytes;
        let header_len = 2 + 8 + 4;
        // The header and 11 payload bytes are enough; the other 99 989 never arrive.
        let mut h = Harness::new(Role::Server, MAX);
        assert_eq!(
            h.feed(&input[..header_len + 11]),
            Err(ReadError::InvalidUtf8)
        );
        assert_eq!(ReadError::InvalidUtf8.close_code(), 1007);
        // Byte by byte: on the invalid byte itself.
        assert_eq!(
            decode_bytewise(Role::Server, MAX, &input),
            Err((ReadError::InvalidUtf8, header_len + 11))
        );
    }

    #[test]
    fn impossible_second_byte_fails_when_it_arrives() {
        for bad in [&b"\xF4\x90\x80\x80"[..], b"\xED\xA0\x80", b"\xE0\x80\x80"] {
            let mut payload = b"ok".to_vec();
            payload.extend_from_slice(bad);
            let input = Wire::new(Role::Client)
                .frame(Opcode::Text, true, &payload)
                .bytes;
            // Header 2 bytes, "ok", the lead byte: the next one is fatal.
            assert_fails(Role::Client, MAX, &input, ReadError::InvalidUtf8, 2 + 2 + 2);
        }
    }

    #[test]
    fn invalid_utf8_in_a_later_fragment_fails_on_that_fragment() {
        let input = Wire::new(Role::Server)
            .frame(Opcode::Text, false, "κόσμε".as_bytes())
            .frame(Opcode::Continuation, true, b"ok\xC0\x80")
            .bytes;
        let first_frame_len = 6 + "κόσμε".len();
        let mut h = Harness::new(Role::Server, MAX);
        assert_eq!(
            h.feed(&input[..first_frame_len]),
            Ok(()),
            "the first fragment is valid"
        );
        assert_eq!(h.data_events, 1);
        assert_eq!(
            h.feed(&input[first_frame_len..]),
            Err(ReadError::InvalidUtf8)
        );
        assert_fails(
            Role::Server,
            MAX,
            &input,
            ReadError::InvalidUtf8,
            first_frame_len + 6 + 3,
        );

        // A character started in one fragment and broken in the next.
        let input = Wire::new(Role::Server)
            .frame(Opcode::Text, false, b"\xE2\x82")
            .frame(Opcode::Continuation, true, b"A")
            .bytes;
        assert_fails(
            Role::Server,
            MAX,
            &input,
            ReadError::InvalidUtf8,
            input.len(),
        );
    }

    #[test]
    fn a_message_ending_inside_a_character_is_invalid() {
        let input = Wire::new(Role::Client)
            .frame(Opcode::Text, true, b"ab\xE2\x82")
            .bytes;
        assert_fails(
            Role::Client,
            MAX,
            &input,
            ReadError::InvalidUtf8,
            input.len(),
        );
        // Also when the message ends with an empty continuation frame.
        let input = Wire::new(Role::Client)
            .frame(Opcode::Text, false, b"\xF0\x9D")
            .frame(Opcode::Continuation, true, b"")
            .bytes;
        assert_fails(
            Role::Client,
            MAX,
            &input,
            ReadError::InvalidUtf8,
            input.len(),
        );
    }

    #[test]
    fn binary_messages_are_not_utf8_checked() {
        let input = Wire::new(Role::Server)
            .frame(Opcode::Binary, true, b"\xFF\xC0")
            .bytes;
        assert_eq!(decode(Role::Server, &input), Ok(vec![binary(b"\xFF\xC0")]));
    }

    #[test]
    fn too_big_fails_at_header_time() {
        let max = 100;
        let at_limit = Wire::new(Role::Server)
            .frame(Opcode::Binary, true, &[1; 100])
            .bytes;
        assert_eq!(decode(Role::Server, &at_limit).map(|m| m.len()), Ok(1));
        assert_eq!(
            decode_in(Role::Server, max, &at_limit, []),
            Ok(vec![binary(&[1; 100])])
        );

        let over = Wire::new(Role::Server)
            .frame(Opcode::Text, true, &[b'a'; 101])
            .bytes;
        // Byte by byte: on the header's last byte (2 + 4 masking key), before any payload.
        assert_fails(Role::Server, max, &over, ReadError::MessageTooBig, 6);
        assert_eq!(ReadError::MessageTooBig.close_code(), 1009);
        let mut h = Harness::new(Role::Server, max);
        assert_eq!(h.feed(&over[..6]), Err(ReadError::MessageTooBig));

        // Over the limit only with the second fragment: fails on the second header.
        let fragmented = Wire::new(Role::Client)
            .frame(Opcode::Binary, false, &[1; 60])
            .frame(Opcode::Ping, true, &[2; 50])
            .frame(Opcode::Continuation, true, &[3; 41])
            .bytes;
        assert_fails(
            Role::Client,
            max,
            &fragmented,
            ReadError::MessageTooBig,
            62 + 52 + 2,
        );

        // Control frames do not count towards the message, and the count restarts.
        let under = Wire::new(Role::Client)
            .frame(Opcode::Binary, false, &[1; 60])
            .frame(Opcode::Ping, true, &[2; 50])
            .frame(Opcode::Continuation, true, &[3; 40])
            .frame(Opcode::Text, true, &[b'x'; 100])
            .bytes;
        assert_eq!(
            decode_in(Role::Client, max, &under, []).map(|m| m.len()),
            Ok(3)
        );

        // A continuation announcing 2^63 - 1 bytes fails on its header.
        let mut input = Wire::new(Role::Client)
            .frame(Opcode::Binary, false, b"x")
            .bytes;
        input.extend_from_slice(&[0x80, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_fails(
            Role::Client,
            MAX,
            &input,
            ReadError::MessageTooBig,
            input.len(),
        );
    }

    #[test]
    fn invalid_close_payloads() {
        let one_byte = Wire::new(Role::Server)
            .frame(Opcode::Close, true, b"\x03")
            .bytes;
        assert_fails(
            Role::Server,
            MAX,
            &one_byte,
            ReadError::Close(CloseError::Truncated),
            one_byte.len(),
        );
        assert_eq!(ReadError::Close(CloseError::Truncated).close_code(), 1002);

        for code in [0u16, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000] {
            let input = Wire::new(Role::Server)
                .frame(Opcode::Close, true, &code.to_be_bytes())
                .bytes;
            let err = ReadError::Close(CloseError::InvalidCode(code));
            assert_fails(Role::Server, MAX, &input, err, input.len());
            assert_eq!(err.close_code(), 1002);
        }

        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(b"bye \xED\xA0\x80");
        let input = Wire::new(Role::Client)
            .frame(Opcode::Close, true, &bad_reason)
            .bytes;
        let err = ReadError::Close(CloseError::InvalidReason);
        assert_fails(Role::Client, MAX, &input, err, input.len());
        assert_eq!(err.close_code(), 1007);
    }

    #[test]
    fn valid_close_codes_are_delivered() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1013, 3000, 3999, 4000, 4999,
        ] {
            let input = Wire::new(Role::Server).close(Some(code), "r").bytes;
            assert_eq!(
                decode_bytewise(Role::Server, MAX, &input),
                Ok(vec![Msg::Close(Some(code), "r".into())])
            );
        }
    }

    #[test]
    fn idle_only_between_messages() {
        let mut reader = Reader::new(Role::Client, MAX);
        assert!(reader.is_idle());
        let input = Wire::new(Role::Client)
            .frame(Opcode::Text, false, b"ab")
            .frame(Opcode::Ping, true, b"p")
            .frame(Opcode::Continuation, true, b"c")
            .bytes;
        // Feed byte by byte and record idleness after each byte.
        let mut idle_after = Vec::new();
        for byte in &input {
            let mut buf = [*byte];
            let (used, _) = reader.read(&mut buf).unwrap();
            assert_eq!(used, 1);
            idle_after.push(reader.is_idle());
        }
        // Idle only once the final frame's last byte is in.
        let mut expected = vec![false; input.len()];
        *expected.last_mut().unwrap() = true;
        assert_eq!(idle_after, expected);

        // Between complete single-frame messages and control frames, always idle.
        let mut buf = Wire::new(Role::Client).frame(Opcode::Ping, true, b"").bytes;
        reader.read(&mut buf).unwrap();
        assert!(reader.is_idle());
        let mut partial_header = [0x81];
        reader.read(&mut partial_header).unwrap();
        assert!(!reader.is_idle(), "a partial header is state");
    }

    /// A random stream from a peer of `role`: random messages (text with multi-byte
    /// characters, or binary) cut into random fragments (empty ones included), random
    /// interleaved Pings and Pongs, sometimes a final Close; random masks. Returns the
    /// bytes and the messages they decode to.
    fn random_stream(rng: &mut XorShift, role: Role) -> (Vec<u8>, Vec<Msg>) {
        const CHARS: &[&str] = &[
            "a",
            "z",
            " ",
            "é",
            "€",
            "𝄞",
            "\u{10FFFF}",
            "\u{7FF}",
            "\u{800}",
        ];
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let is_text = rng.below(2) == 0;
            let payload: Vec<u8> = if is_text {
                (0..rng.below(60))
                    .flat_map(|_| CHARS[rng.below(CHARS.len())].bytes())
                    .collect()
            } else {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect()
            };
            // Cut into 1..=4 fragments at random points.
            let mut cuts: Vec<usize> = (0..rng.below(4))
                .map(|_| rng.below(payload.len() + 1))
                .collect();
            cuts.push(0);
            cuts.push(payload.len());
            cuts.sort_unstable();
            for (i, window) in cuts.windows(2).enumerate() {
                let opcode = match (i, is_text) {
                    (0, true) => Opcode::Text,
                    (0, false) => Opcode::Binary,
                    _ => Opcode::Continuation,
                };
                let fin = i + 2 == cuts.len();
                let mask = (role == Role::Server).then(|| rng.mask());
                encode_frame(&mut wire, opcode, fin, &payload[window[0]..window[1]], mask);
                if fin {
                    // A message is complete (and reported) with its final frame.
                    expected.push(Msg::Data {
                        text: is_text,
                        payload: payload.clone(),
                    });
                }
                if rng.below(4) == 0 {
                    let control: Vec<u8> = (0..rng.below(126)).map(|_| rng.next() as u8).collect();
                    let mask = (role == Role::Server).then(|| rng.mask());
                    let opcode = if rng.below(2) == 0 {
                        Opcode::Ping
                    } else {
                        Opcode::Pong
                    };
                    encode_frame(&mut wire, opcode, true, &control, mask);
                    expected.push(if opcode == Opcode::Ping {
                        Msg::Ping(control)
                    } else {
                        Msg::Pong(control)
                    });
                }
            }
        }
        if rng.below(4) == 0 {
            let mask = (role == Role::Server).then(|| rng.mask());
            encode_close_frame(&mut wire, Some(1000), "done", mask);
            expected.push(Msg::Close(Some(1000), "done".into()));
        }
        (wire, expected)
    }

    fn random_role(rng: &mut XorShift) -> Role {
        if rng.below(2) == 0 {
            Role::Server
        } else {
            Role::Client
        }
    }

    fn random_sizes(rng: &mut XorShift, len: usize) -> Vec<usize> {
        let max_piece = 1 + rng.below(40);
        (0..len).map(|_| 1 + rng.below(max_piece)).collect()
    }

    #[test]
    fn random_round_trip() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for iteration in 0..3000 {
            let role = random_role(&mut rng);
            let (wire, expected) = random_stream(&mut rng, role);
            let sizes = random_sizes(&mut rng, wire.len());
            assert_eq!(
                decode_in(role, MAX, &wire, sizes),
                Ok(expected),
                "iteration {iteration}"
            );
        }
    }

    /// What a reader makes of any input: the messages completed, then either the error
    /// or the bytes delivered so far of an unfinished message.
    fn decode_any(
        role: Role,
        input: &[u8],
        sizes: &[usize],
    ) -> (Vec<Msg>, Result<Vec<u8>, ReadError>) {
        let mut h = Harness::new(role, 4096);
        let mut rest = input;
        for &size in sizes.iter().chain(std::iter::repeat(&usize::MAX)) {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
            if let Err(e) = h.feed(chunk) {
                return (h.msgs, Err(e));
            }
            rest = tail;
        }
        (
            h.msgs,
            Ok(h.pending.map(|(_, bytes)| bytes).unwrap_or_default()),
        )
    }

    /// Valid streams with a few random bytes changed, or cut short: whatever the reader
    /// makes of them (messages, then an error or an unfinished message) must not depend
    /// on how the bytes are split, and it must never panic or stall.
    #[test]
    fn corrupted_streams_decode_identically_however_split() {
        let mut rng = XorShift(0x0BAD_C0DE_5EED_0001);
        let mut errors = 0;
        for iteration in 0..3000 {
            let role = random_role(&mut rng);
            let (mut wire, _) = random_stream(&mut rng, role);
            for _ in 0..rng.below(4) {
                let at = rng.below(wire.len());
                wire[at] ^= 1 << rng.below(8);
            }
            wire.truncate(wire.len() - rng.below(wire.len().min(8) + 1));
            let whole = decode_any(role, &wire, &[]);
            errors += usize::from(whole.1.is_err());
            let bytewise = decode_any(role, &wire, &vec![1; wire.len()]);
            assert_eq!(bytewise, whole, "iteration {iteration}: byte by byte");
            let sizes = random_sizes(&mut rng, wire.len());
            assert_eq!(
                decode_any(role, &wire, &sizes),
                whole,
                "iteration {iteration}: random"
            );
        }
        // The corruption does produce errors, so the comparison covers them.
        assert!(errors > 300, "only {errors} corrupted streams failed");
    }
}
