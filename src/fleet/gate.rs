//! Keeps a word of the bucket from undoing a newer change of this node's
//! still on its way there.
//!
//! A node applies its own API changes at once, then writes them to the
//! bucket. Meanwhile the watch may deliver an older word of the same key
//! (this node's or another's): applied, it would undo the local change
//! until the change's own word comes back. So while a key has a local
//! change not acknowledged, its words wait (the newest kept); once the
//! change is in the bucket at revision R, a waiting word newer than R is
//! applied, an older one is not, nor any word older than R delivered
//! later, nor the word at R (the change itself, in place already). Every
//! node so ends on the bucket's last word for every key.

use std::collections::HashMap;
use std::hash::Hash;

use super::value::Word;

#[derive(Debug, Default)]
struct Own {
    /// The generation of the newest local change of the key.
    latest: u64,
    /// The newest generation acknowledged, and its revision.
    acked: u64,
    revision: u64,
    /// The newest word delivered while a change was on its way.
    waiting: Option<Word>,
}

#[derive(Debug)]
pub struct Gate<K> {
    keys: HashMap<K, Own>,
}

impl<K> Default for Gate<K> {
    fn default() -> Self {
        Gate {
            keys: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Gate<K> {
    /// Keys with a local change on its way or just acknowledged.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A local change of `key` was queued as `generation`.
    pub fn local(&mut self, key: &K, generation: u64) {
        let own = self.keys.entry(key.clone()).or_default();
        own.latest = own.latest.max(generation);
    }

    /// The change `generation` of `key` is in the bucket at `revision`:
    /// the word to apply now, if one waited that is newer.
    pub fn acked(&mut self, key: &K, generation: u64, revision: u64) -> Option<Word> {
        let own = self.keys.get_mut(key)?;
        own.acked = own.acked.max(generation);
        own.revision = own.revision.max(revision);
        if own.acked < own.latest {
            return None;
        }
        let waiting = own.waiting.take()?;
        let revision = own.revision;
        if waiting.revision >= revision {
            // The watch already passed this node's word.
            self.keys.remove(key);
        }
        (waiting.revision > revision).then_some(waiting)
    }

    /// The local change of `key` will never be acknowledged (dropped from
    /// the outbox): the word waiting, if any, to apply now.
    pub fn abandoned(&mut self, key: &K) -> Option<Word> {
        let own = self.keys.get_mut(key)?;
        own.latest = own.acked;
        let waiting = own.waiting.take();
        if own.acked == 0 {
            self.keys.remove(key);
        }
        waiting.filter(|w| w.revision > 0)
    }

    /// A word delivered by the watch: returned when it is to be applied.
    pub fn watched(&mut self, key: &K, word: Word) -> Option<Word> {
        let Some(own) = self.keys.get_mut(key) else {
            return Some(word);
        };
        if own.acked < own.latest {
            if own
                .waiting
                .as_ref()
                .is_none_or(|w| w.revision < word.revision)
            {
                own.waiting = Some(word);
            }
            return None;
        }
        if word.revision < own.revision {
            return None;
        }
        let echo = word.revision == own.revision;
        self.keys.remove(key);
        // The word at the acknowledged revision is this node's change
        // itself, in place already.
        (!echo).then_some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::Policy;

    fn word(revision: u64) -> Word {
        Word {
            policy: Policy::Drop,
            cidr: "192.0.2.1/32".parse().unwrap(),
            revision,
            value: None,
        }
    }

    #[test]
    fn words_of_keys_without_local_changes_pass() {
        let mut g: Gate<&str> = Gate::default();
        assert_eq!(g.watched(&"k", word(3)), Some(word(3)));
    }

    #[test]
    fn an_older_word_waits_and_is_dropped_when_the_local_change_lands_after_it() {
        let mut g: Gate<&str> = Gate::default();
        g.local(&"k", 1);
        assert_eq!(g.watched(&"k", word(4)), None);
        assert_eq!(g.acked(&"k", 1, 5), None);
        // Words older than the local change, delivered late, stay out.
        assert_eq!(g.watched(&"k", word(4)), None);
        // The local change's own word, in place already, ends the watch on
        // the key; later words pass.
        assert_eq!(g.watched(&"k", word(5)), None);
        assert!(g.is_empty());
        assert_eq!(g.watched(&"k", word(6)), Some(word(6)));
    }

    #[test]
    fn a_newer_word_that_waited_is_applied_once_the_local_change_lands_before_it() {
        let mut g: Gate<&str> = Gate::default();
        g.local(&"k", 1);
        assert_eq!(g.watched(&"k", word(5)), None);
        assert_eq!(g.watched(&"k", word(6)), None);
        assert_eq!(g.acked(&"k", 1, 4), Some(word(6)));
        assert!(g.is_empty());
    }

    #[test]
    fn words_wait_for_the_newest_local_change() {
        let mut g: Gate<&str> = Gate::default();
        g.local(&"k", 1);
        g.local(&"k", 2);
        assert_eq!(g.watched(&"k", word(7)), None);
        assert_eq!(g.acked(&"k", 1, 6), None);
        assert_eq!(g.watched(&"k", word(8)), None);
        assert_eq!(g.acked(&"k", 2, 9), None);
        assert_eq!(g.watched(&"k", word(9)), None);
        assert_eq!(g.watched(&"k", word(10)), Some(word(10)));
    }

    #[test]
    fn an_abandoned_change_releases_the_word_waiting() {
        let mut g: Gate<&str> = Gate::default();
        g.local(&"k", 1);
        assert_eq!(g.watched(&"k", word(3)), None);
        assert_eq!(g.abandoned(&"k"), Some(word(3)));
        assert!(g.is_empty());
        assert_eq!(g.watched(&"k", word(4)), Some(word(4)));
    }
}
