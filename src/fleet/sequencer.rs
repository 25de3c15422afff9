//! Puts the words of notices back in the bucket's revision order.
//!
//! Once caught up, a node learns new words from the notices of every node
//! (see [`super::notice`]), its own included. Two nodes' notices may come
//! in either order, and one may be lost, but the bucket gives every word,
//! marker and purge the next revision, one after the other. So words are
//! held until every revision before theirs is in, then released in order,
//! exactly as the watch would have delivered them: the gate and the
//! MapWriter see no difference. A revision still missing a while later
//! (a lost notice, a word written by another program, a node that died
//! before its notice) is read from the bucket; one that is gone from it
//! was replaced by a later word of its key and is passed over.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::value::Word;

#[derive(Debug)]
pub struct Sequencer {
    /// Every revision up to this one was released.
    done: u64,
    /// Revisions come ahead of a missing one: a word, or `None` for one
    /// with nothing to apply (a key not couic's, a bad value, a message
    /// gone from the bucket).
    ahead: BTreeMap<u64, Option<Word>>,
    /// Since when a revision is missing before those held.
    missing_since: Option<Instant>,
}

impl Sequencer {
    /// Revisions up to `done` are applied already (the catch-up's).
    pub fn new(done: u64) -> Self {
        Sequencer {
            done,
            ahead: BTreeMap::new(),
            missing_since: None,
        }
    }

    /// The last revision released.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Revisions held, waiting for an earlier one.
    pub fn held(&self) -> usize {
        self.ahead.len()
    }

    /// The word of `revision` (`None`: nothing to apply). One released
    /// or held already is ignored: the first to come is kept (notices and
    /// reads of one revision agree).
    pub fn offer(&mut self, revision: u64, word: Option<Word>) {
        if revision > self.done {
            self.ahead.entry(revision).or_insert(word);
        }
    }

    /// The words that follow the last released without a hole, in order.
    pub fn release(&mut self, now: Instant) -> Vec<Word> {
        let mut words = Vec::new();
        let before = self.done;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.done + 1 {
                break;
            }
            self.done += 1;
            words.extend(entry.remove());
        }
        self.missing_since = match self.ahead.is_empty() {
            true => None,
            // A new hole, or the same one still.
            false if self.done != before => Some(now),
            false => self.missing_since.or(Some(now)),
        };
        words
    }

    /// The revisions missing before the first held, once they have been
    /// missing for `wait`.
    pub fn overdue(&self, now: Instant, wait: Duration) -> Option<RangeInclusive<u64>> {
        let since = self.missing_since?;
        let first = *self.ahead.keys().next()?;
        (now.saturating_duration_since(since) >= wait).then_some(self.done + 1..=first - 1)
    }

    /// Drops the revisions held past `last`, the bucket's last revision:
    /// no word can be newer than the bucket (a notice that lies). How many.
    pub fn drop_above(&mut self, last: u64) -> usize {
        let bogus = self.ahead.split_off(&(last + 1)).len();
        if self.ahead.is_empty() {
            self.missing_since = None;
        }
        bogus
    }

    /// The revisions from the next to `last` not held (to read from the
    /// bucket), `max` of them at most.
    pub fn unheld(&self, last: u64, max: usize) -> Vec<u64> {
        (self.done + 1..=last)
            .filter(|r| !self.ahead.contains_key(r))
            .take(max)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::Policy;

    fn word(revision: u64) -> Option<Word> {
        Some(Word {
            policy: Policy::Drop,
            cidr: format!("192.0.2.{}/32", revision % 256).parse().unwrap(),
            revision,
            value: None,
        })
    }

    fn revisions(words: Vec<Word>) -> Vec<u64> {
        words.into_iter().map(|w| w.revision).collect()
    }

    #[test]
    fn words_come_out_in_revision_order_whatever_order_they_came_in() {
        let t = Instant::now();
        let mut s = Sequencer::new(10);
        s.offer(13, word(13));
        s.offer(12, word(12));
        assert!(s.release(t).is_empty(), "11 is missing");
        assert_eq!(s.held(), 2);
        s.offer(11, word(11));
        s.offer(9, word(9));
        s.offer(12, None);
        assert_eq!(revisions(s.release(t)), [11, 12, 13]);
        assert_eq!((s.done(), s.held()), (13, 0));
        s.offer(12, word(12));
        assert!(s.release(t).is_empty(), "released revisions are not again");
    }

    #[test]
    fn revisions_with_nothing_to_apply_still_move_on() {
        let t = Instant::now();
        let mut s = Sequencer::new(0);
        s.offer(1, None);
        s.offer(2, word(2));
        s.offer(3, None);
        assert_eq!(revisions(s.release(t)), [2]);
        assert_eq!(s.done(), 3);
    }

    #[test]
    fn a_hole_is_overdue_after_the_wait_and_only_then() {
        let t = Instant::now();
        let wait = Duration::from_millis(50);
        let mut s = Sequencer::new(5);
        assert_eq!(s.overdue(t + wait, wait), None, "nothing held, no hole");
        s.offer(9, word(9));
        s.release(t);
        assert_eq!(s.overdue(t + wait / 2, wait), None);
        assert_eq!(s.overdue(t + wait, wait), Some(6..=8));
        // 6 comes: the hole left (7, 8) is timed from then.
        s.offer(6, word(6));
        s.release(t + wait);
        assert_eq!(s.overdue(t + wait, wait), None);
        assert_eq!(s.overdue(t + 2 * wait, wait), Some(7..=8));
        s.offer(7, None);
        s.offer(8, None);
        assert_eq!(revisions(s.release(t + 2 * wait)), [9]);
        assert_eq!(s.overdue(t + 9 * wait, wait), None);
    }

    #[test]
    fn revisions_past_the_bucket_are_dropped() {
        let t = Instant::now();
        let mut s = Sequencer::new(3);
        s.offer(5, word(5));
        s.offer(u64::MAX, word(6));
        s.release(t);
        assert_eq!(s.drop_above(5), 1);
        assert_eq!(s.held(), 1);
        assert_eq!(
            s.overdue(t + Duration::from_secs(1), Duration::ZERO),
            Some(4..=4)
        );
        assert_eq!(s.drop_above(3), 1);
        assert_eq!(s.overdue(t + Duration::from_secs(1), Duration::ZERO), None);
    }

    #[test]
    fn unheld_revisions_are_those_to_read() {
        let mut s = Sequencer::new(3);
        s.offer(5, word(5));
        assert_eq!(s.unheld(7, 10), [4, 6, 7]);
        assert_eq!(s.unheld(7, 2), [4, 6]);
        assert!(s.unheld(3, 10).is_empty());
    }
}
