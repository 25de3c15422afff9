//! The expiry index: entries with an expiration, ordered by deadline, so
//! expiring is popping the front instead of scanning every entry.

use std::collections::BTreeSet;

use couic_common::{Cidr, Policy};

#[derive(Debug, Default)]
pub struct ExpiryIndex {
    by_deadline: BTreeSet<(u64, Policy, Cidr)>,
}

impl ExpiryIndex {
    pub fn insert(&mut self, policy: Policy, cidr: Cidr, expiration: u64) {
        if expiration > 0 {
            self.by_deadline.insert((expiration, policy, cidr));
        }
    }

    pub fn remove(&mut self, policy: Policy, cidr: Cidr, expiration: u64) {
        if expiration == 0 {
            return; // never indexed
        }
        self.by_deadline.remove(&(expiration, policy, cidr));
    }

    /// Takes out at most `max` entries whose deadline is `<= now`, earliest first.
    pub fn pop_due(&mut self, now: u64, max: usize) -> Vec<(Policy, Cidr, u64)> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.by_deadline.first() {
                Some(&(exp, policy, cidr)) if exp <= now => {
                    self.by_deadline.pop_first();
                    due.push((policy, cidr, exp));
                }
                _ => break,
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn pops_only_due_entries_in_deadline_order() {
        let mut idx = ExpiryIndex::default();
        idx.insert(Policy::Drop, c("1.1.1.1/32"), 30);
        idx.insert(Policy::Drop, c("2.2.2.2/32"), 10);
        idx.insert(Policy::Ignore, c("3.3.3.3/32"), 20);
        idx.insert(Policy::Drop, c("4.4.4.4/32"), 0);
        assert_eq!(idx.len(), 3, "expiration 0 is never indexed");
        assert!(idx.pop_due(9, 10).is_empty());
        let due = idx.pop_due(20, 10);
        assert_eq!(
            due,
            vec![
                (Policy::Drop, c("2.2.2.2/32"), 10),
                (Policy::Ignore, c("3.3.3.3/32"), 20)
            ]
        );
        idx.remove(Policy::Drop, c("1.1.1.1/32"), 30);
        assert!(idx.is_empty());
    }

    #[test]
    fn pop_respects_the_chunk_size() {
        let mut idx = ExpiryIndex::default();
        for i in 0..10u8 {
            idx.insert(Policy::Drop, c(&format!("10.0.0.{i}/32")), 5);
        }
        assert_eq!(idx.pop_due(5, 4).len(), 4);
        assert_eq!(idx.len(), 6);
    }
}
