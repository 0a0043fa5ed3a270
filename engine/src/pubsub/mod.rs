//! Publish/subscribe between shards: the router thread that sequences and encodes every
//! message and keeps each topic's bounded history, and the bounded links that carry
//! messages, interest, barriers and replays between it and the shards. No shard ever
//! touches another shard's connections.

pub mod history;
pub mod link;
pub mod router;

/// Most shards one process runs (the width of [`ShardSet`]).
pub const MAX_SHARDS: usize = 256;

/// A set of shard indices below [`MAX_SHARDS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardSet([u64; MAX_SHARDS / 64]);

impl ShardSet {
    pub fn insert(&mut self, shard: usize) {
        self.0[shard / 64] |= 1 << (shard % 64);
    }

    pub fn remove(&mut self, shard: usize) {
        self.0[shard / 64] &= !(1 << (shard % 64));
    }

    pub fn contains(&self, shard: usize) -> bool {
        self.0[shard / 64] & (1 << (shard % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub fn union_with(&mut self, other: &ShardSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_set_holds_every_index_once() {
        let mut set = ShardSet::default();
        assert!(set.is_empty());
        for s in [0, 1, 63, 64, 200, 255] {
            set.insert(s);
        }
        set.insert(63);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 63, 64, 200, 255]);
        set.remove(64);
        assert!(!set.contains(64) && set.contains(63) && set.contains(255));
        let mut other = ShardSet::default();
        other.insert(5);
        set.union_with(&other);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 5, 63, 200, 255]);
    }
}
