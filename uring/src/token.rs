//! `user_data` tokens: every submission carries `kind | generation | slot` so that its
//! completion can be routed without a lookup, and a late completion for a slot that has
//! since been freed and reused is recognised by its stale generation and dropped.

/// What an operation was for. Stored in the top byte of `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The shard's multishot accept on its listener (slot and generation unused).
    Accept = 1,
    /// A connection's multishot recv.
    Recv = 2,
    /// A send of one buffer on a connection.
    Send = 3,
    /// `shutdown(SHUT_WR)` of a connection that is closing.
    Shutdown = 4,
    /// Cancellation of every operation still pending on a connection's fixed file.
    Cancel = 5,
    /// Close of a connection's fixed file.
    Close = 6,
    /// The shard's periodic tick (timer wheel).
    Tick = 7,
    /// A wake-up posted into this ring by another thread (`IORING_OP_MSG_RING`).
    Wake = 8,
    /// A wake-up this ring posted into another ring; only failures complete here.
    WakeSent = 9,
    /// Cancellation of one connection's recv (to stop reading) or of the accept (to
    /// drain); only failures complete.
    CancelRecv = 10,
    /// `IORING_OP_SOCKET` into a chosen fixed-file slot: the first link of a connect chain.
    Socket = 11,
    /// `setsockopt` through `IORING_OP_URING_CMD` (`IP_BIND_ADDRESS_NO_PORT`) in a chain.
    SockOpt = 12,
    /// `IORING_OP_BIND` of a connect chain (the source address).
    Bind = 13,
    /// `IORING_OP_CONNECT` of a connect chain.
    Connect = 14,
    /// The linked timeout that bounds a chain's connect.
    ConnectTimeout = 15,
    /// A single-shot accept that reports the peer's address (slot: its address buffer).
    AcceptPeer = 16,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Accept,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::Shutdown,
            5 => Kind::Cancel,
            6 => Kind::Close,
            7 => Kind::Tick,
            8 => Kind::Wake,
            9 => Kind::WakeSent,
            10 => Kind::CancelRecv,
            11 => Kind::Socket,
            12 => Kind::SockOpt,
            13 => Kind::Bind,
            14 => Kind::Connect,
            15 => Kind::ConnectTimeout,
            16 => Kind::AcceptPeer,
            _ => return None,
        })
    }
}

/// Generations wrap within 24 bits; a slot must be reused 16 million times while a
/// completion is outstanding for a stale one to be mistaken for current.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A decoded `user_data`: 8 bits of kind, 24 of generation, 32 of slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub generation: u32,
    pub slot: u32,
}

impl Token {
    pub const fn new(kind: Kind, generation: u32, slot: u32) -> Token {
        Token {
            kind,
            generation: generation & GENERATION_MASK,
            slot,
        }
    }

    /// A token for ring-wide operations that belong to no connection.
    pub const fn ring(kind: Kind) -> Token {
        Token::new(kind, 0, 0)
    }

    pub const fn encode(self) -> u64 {
        ((self.kind as u64) << 56)
            | (((self.generation & GENERATION_MASK) as u64) << 32)
            | self.slot as u64
    }

    /// `None` for a `user_data` this program never produced.
    pub fn decode(user_data: u64) -> Option<Token> {
        let kind = Kind::from_u8((user_data >> 56) as u8)?;
        Some(Token {
            kind,
            generation: ((user_data >> 32) as u32) & GENERATION_MASK,
            slot: user_data as u32,
        })
    }
}

/// The next generation of a slot, skipping none: generations are compared for equality only.
pub const fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) & GENERATION_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_and_extreme_fields() {
        let kinds = [
            Kind::Accept,
            Kind::Recv,
            Kind::Send,
            Kind::Shutdown,
            Kind::Cancel,
            Kind::Close,
            Kind::Tick,
            Kind::Wake,
            Kind::WakeSent,
            Kind::CancelRecv,
            Kind::Socket,
            Kind::SockOpt,
            Kind::Bind,
            Kind::Connect,
            Kind::ConnectTimeout,
        ];
        for kind in kinds {
            for generation in [0, 1, GENERATION_MASK] {
                for slot in [0, 1, 19_999, u32::MAX] {
                    let t = Token::new(kind, generation, slot);
                    assert_eq!(Token::decode(t.encode()), Some(t));
                }
            }
        }
    }

    #[test]
    fn generation_is_truncated_to_24_bits_and_wraps() {
        let t = Token::new(Kind::Recv, GENERATION_MASK + 5, 7);
        assert_eq!(t.generation, 4);
        assert_eq!(next_generation(GENERATION_MASK), 0);
        assert_eq!(next_generation(41), 42);
    }

    #[test]
    fn foreign_user_data_is_rejected() {
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(0xff << 56), None);
    }
}
