//! Direct addresses on a shard: every WebSocket and SSE connection gets a 128-bit
//! secret, straight from the OS's random source, and with it the address
//! `client.<shard><slot><secret>` (see `switchboard_proto::address`). The shard keeps
//! one secret per slot (16 bytes a connection, in pages allocated on first use): a
//! message for an address is delivered if the slot's current secret matches, so there
//! is no registry to keep in step with the router, and a message for a connection that
//! has gone (its slot cleared or reused) is dropped and counted. Random bytes are read
//! from `/dev/urandom` a page at a time (one read per 256 secrets): no user-space
//! generator stands between the kernel's CSPRNG and the secret.

use std::fs::File;
use std::io::{self, Read};

/// Bytes of a secret.
const SECRET_BYTES: usize = 16;
/// Random bytes read from the OS at once.
const POOL_BYTES: usize = 4096;
/// Secrets per page of the table (as the connection table's pages).
const PAGE_SLOTS: usize = 1024;

/// A shard's source of secrets.
pub struct SecretSource {
    urandom: File,
    pool: Box<[u8; POOL_BYTES]>,
    /// Bytes of `pool` already used.
    used: usize,
}

impl SecretSource {
    pub fn new() -> io::Result<SecretSource> {
        Ok(SecretSource {
            urandom: File::open("/dev/urandom")?,
            pool: Box::new([0; POOL_BYTES]),
            used: POOL_BYTES,
        })
    }

    /// A fresh secret, never 0 (0 marks a slot without one). Each pool byte is used
    /// once and wiped.
    pub fn next(&mut self) -> io::Result<u128> {
        if self.used + SECRET_BYTES > POOL_BYTES {
            self.urandom.read_exact(&mut self.pool[..])?;
            self.used = 0;
        }
        let bytes = &mut self.pool[self.used..self.used + SECRET_BYTES];
        let secret = u128::from_ne_bytes(bytes.try_into().expect("16 bytes"));
        bytes.fill(0);
        self.used += SECRET_BYTES;
        Ok(secret.max(1))
    }
}

/// The current secret of each slot (0: no address).
pub struct Secrets {
    pages: Vec<Option<Box<[u128; PAGE_SLOTS]>>>,
}

impl Secrets {
    pub fn new(slots: u32) -> Secrets {
        Secrets {
            pages: (0..(slots as usize).div_ceil(PAGE_SLOTS))
                .map(|_| None)
                .collect(),
        }
    }

    pub fn set(&mut self, slot: u32, secret: u128) {
        let (page, i) = (slot as usize / PAGE_SLOTS, slot as usize % PAGE_SLOTS);
        self.pages[page].get_or_insert_with(|| Box::new([0; PAGE_SLOTS]))[i] = secret;
    }

    pub fn clear(&mut self, slot: u32) {
        let (page, i) = (slot as usize / PAGE_SLOTS, slot as usize % PAGE_SLOTS);
        if let Some(Some(page)) = self.pages.get_mut(page) {
            page[i] = 0;
        }
    }

    /// Whether `slot` currently holds the address with `secret`.
    pub fn matches(&self, slot: u32, secret: u128) -> bool {
        let (page, i) = (slot as usize / PAGE_SLOTS, slot as usize % PAGE_SLOTS);
        let Some(Some(page)) = self.pages.get(page) else {
            return false;
        };
        page[i] != 0 && page[i] == secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_never_zero() {
        let mut src = SecretSource::new().unwrap();
        let mut seen = std::collections::HashSet::new();
        // Several pools' worth: refills work and nothing repeats.
        for _ in 0..1000 {
            let s = src.next().unwrap();
            assert_ne!(s, 0);
            assert!(seen.insert(s), "a secret repeated");
        }
    }

    #[test]
    fn a_slot_matches_only_its_current_secret() {
        let mut t = Secrets::new(5000);
        assert!(!t.matches(4999, 7), "nothing set");
        assert!(!t.matches(99_999, 7), "beyond the table");
        t.set(4999, 7);
        assert!(t.matches(4999, 7));
        assert!(!t.matches(4999, 8));
        assert!(!t.matches(4998, 7));
        t.clear(4999);
        assert!(!t.matches(4999, 7), "cleared");
        assert!(!t.matches(4999, 0), "0 is never an address");
        assert_eq!(t.pages.iter().filter(|p| p.is_some()).count(), 1);
    }
}
