//! Expired entries that another node wrote, purged from the bucket by
//! this one if nobody did.
//!
//! The node that wrote an entry purges its key when it expires. If that
//! node is down, every other node expires the entry on its own, but the
//! key would stay in the bucket until a catch-up met it. So each node
//! notes the keys of others' entries it expired; one still without a new
//! word [`GRACE`] (plus a delay of the node's own, up to [`SPREAD`]
//! seconds, so that the nodes do not all ask at once) after its
//! expiration is purged, on condition that it still holds that entry. The
//! first node to do so wins; its purge marker, a word of the key, lets the
//! others off.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};

use crate::hash::KeyedState;

/// Seconds after its expiration that another node's entry is left to its
/// writer.
pub const GRACE: u64 = 5;
/// The further delay of each node and key: 0 to this many seconds.
pub const SPREAD: u64 = 10;

#[derive(Debug)]
pub struct Lapsed<K> {
    /// When each key is due, and the entry's expiration.
    keys: HashMap<K, (u64, u64)>,
    /// The same, in order of due time.
    queue: BTreeSet<(u64, K)>,
    /// Picks each node's delay for a key.
    spread: KeyedState,
}

impl<K> Default for Lapsed<K> {
    fn default() -> Self {
        Lapsed {
            keys: HashMap::new(),
            queue: BTreeSet::new(),
            spread: KeyedState::default(),
        }
    }
}

impl<K: Hash + Eq + Ord + Clone> Lapsed<K> {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Another node's entry of `key` expired here at `expiration`.
    pub fn expired(&mut self, key: K, expiration: u64) {
        self.forget(&key);
        let due = expiration + GRACE + self.spread.hash_one(&key) % (SPREAD + 1);
        self.queue.insert((due, key.clone()));
        self.keys.insert(key, (due, expiration));
    }

    /// A word of `key` came: whoever wrote it dealt with the key.
    pub fn forget(&mut self, key: &K) {
        if let Some((due, _)) = self.keys.remove(key) {
            self.queue.remove(&(due, key.clone()));
        }
    }

    /// The keys due by `now`, `max` at most, with their expirations; they
    /// are forgotten.
    pub fn due(&mut self, now: u64, max: usize) -> Vec<(K, u64)> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.queue.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let (_, key) = self.queue.pop_first().expect("just seen");
            let (_, expiration) = self.keys.remove(&key).expect("kept in both");
            due.push((key, expiration));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_after_the_grace_and_the_spread_unless_a_word_came() {
        let mut l = Lapsed::default();
        l.expired("a", 100);
        l.expired("b", 100);
        l.expired("c", 100);
        assert!(l.due(100 + GRACE - 1, 10).is_empty(), "the writer's turn");
        l.forget(&"b");
        let mut all = l.due(100 + GRACE + SPREAD, 10);
        all.sort();
        assert_eq!(all, [("a", 100), ("c", 100)]);
        assert!(l.is_empty() && l.due(u64::MAX, 10).is_empty());
    }

    #[test]
    fn a_key_expired_again_is_due_once_and_max_is_kept() {
        let mut l = Lapsed::default();
        l.expired(1, 100);
        l.expired(1, 200);
        for k in 2..10 {
            l.expired(k, 100);
        }
        let mut all = l.due(200 + GRACE + SPREAD, 3);
        assert_eq!(all.len(), 3);
        all.extend(l.due(200 + GRACE + SPREAD, 100));
        assert_eq!(all.len(), 9);
        let ones: Vec<_> = all.iter().filter(|(k, _)| *k == 1).collect();
        assert_eq!(ones, [&(1, 200)]);
        assert!(l.is_empty());
    }
}
