//! The PBX's byte stream as it arrives, read after read, handed to the parser where
//! it lies: only the message cut by the end of a read is copied (and completed from
//! the start of the next read before the rest of that read is parsed in place).
//! At a few hundred MB/s of events, copying every read would cost as much as
//! parsing it.

/// The bytes left over from earlier reads: the start of a message cut by a read's end.
#[derive(Debug, Default)]
pub struct Input {
    left: Vec<u8>,
}

impl Input {
    /// Hands the stream's unconsumed bytes, `data` being the newest read, to `parse`
    /// (called once or more, with what is to be parsed next; it returns how many
    /// bytes it consumed, all of them it can) and keeps what it did not consume.
    pub fn feed(&mut self, mut data: &[u8], mut parse: impl FnMut(&[u8]) -> usize) {
        if !self.left.is_empty() {
            // Complete the cut message first: up to the first empty line of `data`.
            let (head, rest) = data.split_at(message_end(data).unwrap_or(data.len()));
            self.left.extend_from_slice(head);
            let used = parse(&self.left);
            self.left.drain(..used.min(self.left.len()));
            if !self.left.is_empty() {
                // Not a message end after all (a legacy command output has empty
                // lines): parse the rest from the copy too.
                self.left.extend_from_slice(rest);
                let used = parse(&self.left);
                self.left.drain(..used.min(self.left.len()));
                return;
            }
            data = rest;
        }
        let used = parse(data);
        self.left
            .extend_from_slice(data.get(used..).unwrap_or_default());
    }

    /// Forgets the leftover (a new connection).
    pub fn clear(&mut self) {
        self.left.clear();
    }

    /// Bytes left over from earlier reads.
    pub fn pending(&self) -> usize {
        self.left.len()
    }
}

/// The end of the first empty line of `data` (`\n\n` or `\n\r\n`), if any.
fn message_end(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = data
        .get(at..)
        .and_then(|d| d.iter().position(|&b| b == b'\n'))
    {
        let lf = at + i;
        match data.get(lf + 1..lf + 3) {
            Some([b'\n', _]) => return Some(lf + 2),
            Some([b'\r', b'\n']) => return Some(lf + 3),
            None if data.get(lf + 1) == Some(&b'\n') => return Some(lf + 2),
            _ => {}
        }
        at = lf + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::ami::{OwnedItem, Parser};

    fn messages(reads: &[&[u8]]) -> (Vec<OwnedItem>, usize) {
        let mut parser = Parser::client().skip_banner();
        let mut input = Input::default();
        let mut out = Vec::new();
        let mut biggest_copy = 0;
        for read in reads {
            input.feed(read, |bytes| {
                let mut pos = 0;
                loop {
                    let (n, item) = parser.parse(&bytes[pos..]).expect("parses");
                    pos += n;
                    match item {
                        Some(item) => out.push(item.into_owned()),
                        None => return pos,
                    }
                }
            });
            biggest_copy = biggest_copy.max(input.pending());
        }
        (out, biggest_copy)
    }

    #[test]
    fn every_split_parses_as_whole_and_copies_only_cut_messages() {
        let stream: &[u8] = b"Event: A\r\nK: 1\r\n\r\n\nEvent: B\nK: 2\n\nResponse: Follows\r\nPrivilege: Command\r\n\nline two\n--END COMMAND--\r\n\r\nEvent: C\r\nK: a:b\r\n\r\n";
        let (whole, _) = messages(&[stream]);
        assert_eq!(whole.len(), 4);
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (split, _) = messages(&[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(split, whole, "split at {a} and {b}");
            }
        }
        // Byte by byte: what is kept is never more than one message.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (split, copied) = messages(&bytes);
        assert_eq!(split, whole);
        assert!(copied <= 70, "{copied} bytes kept");
    }

    #[test]
    fn message_ends() {
        assert_eq!(message_end(b"A: 1\r\n\r\nB"), Some(8));
        assert_eq!(message_end(b"A: 1\n\nB"), Some(6));
        assert_eq!(message_end(b"\r\n"), None);
        assert_eq!(message_end(b"\n\n"), Some(2));
        assert_eq!(message_end(b"A: 1\r\n"), None);
        assert_eq!(message_end(b"A: 1\r\n\r"), None);
        assert_eq!(message_end(b""), None);
    }
}
