//! Direct addresses: `client.<id>` reaches one connection. The id is 42 lowercase hex
//! digits: the connection's shard (2), its slot on that shard (8), and a 128-bit secret
//! drawn from the OS's random source when the connection opened (32). Shard and slot
//! let the router and the shard find the connection without any registry; the secret
//! makes the address unguessable and tells one connection in a slot from the next.

use crate::topic::DIRECT_PREFIX;

/// Hex digits of an id.
pub const ID_LEN: usize = 2 + 8 + 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectAddress {
    pub shard: u8,
    pub slot: u32,
    pub secret: u128,
}

impl DirectAddress {
    /// The id (without `client.`), as sent in the connection's hello.
    pub fn id(&self) -> String {
        format!("{:02x}{:08x}{:032x}", self.shard, self.slot, self.secret)
    }

    /// The address in a topic `client.<id>`; `None` for any other topic, including
    /// one in the `client` namespace that is not exactly such an id.
    pub fn from_topic(topic: &str) -> Option<DirectAddress> {
        let id = topic.strip_prefix(DIRECT_PREFIX)?;
        let lower_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if id.len() != ID_LEN || !id.bytes().all(lower_hex) {
            return None;
        }
        Some(DirectAddress {
            shard: u8::from_str_radix(&id[..2], 16).ok()?,
            slot: u32::from_str_radix(&id[2..10], 16).ok()?,
            secret: u128::from_str_radix(&id[10..], 16).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_topic() {
        let a = DirectAddress {
            shard: 0x1f,
            slot: 0x0001_0203,
            secret: 0xfedc_ba98_7654_3210_0123_4567_89ab_cdef,
        };
        let id = a.id();
        assert_eq!(id, "1f00010203fedcba98765432100123456789abcdef");
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(DirectAddress::from_topic(&format!("client.{id}")), Some(a));
        let zero = DirectAddress {
            shard: 0,
            slot: 0,
            secret: 1,
        };
        assert_eq!(
            DirectAddress::from_topic(&format!("client.{}", zero.id())),
            Some(zero)
        );
    }

    #[test]
    fn rejects_anything_but_an_exact_id() {
        let good = "1f00010203fedcba98765432100123456789abcdef";
        for bad in [
            format!("clients.{good}"),
            good.to_string(),
            format!("client.{}", &good[1..]),
            format!("client.{good}0"),
            format!("client.{}", good.to_uppercase()),
            format!("client.{}x", &good[1..]),
            format!("client.{good}.sub"),
            "client.".to_string(),
        ] {
            assert_eq!(DirectAddress::from_topic(&bad), None, "{bad}");
        }
    }
}
