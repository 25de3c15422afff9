//! After a catch-up: what this node holds that the bucket does not.
//!
//! The catch-up delivers the last word of every key. A fleet entry held
//! here whose key had no word is gone from the fleet (its key purged while
//! this node was away): removed. An API entry of this node's without a
//! word is either of two, told apart by the mark of [`super::synced`]:
//! made before it, it was in the bucket and was deleted by another node
//! while this one was away, the delete marker swept since: removed too;
//! made after it (or with no mark), it never reached the bucket (made
//! before `[fleet]` was on, or dropped from a full outbox): written
//! again. Nothing else is touched.

use std::collections::HashSet;

use couic_common::{Cidr, Policy};

use crate::origin::Origin;
use crate::store::StoredEntry;

#[derive(Debug, Default, PartialEq)]
pub struct Reconciled {
    pub remove: Vec<(Policy, Cidr)>,
    /// Of `remove`, the entries of this node's.
    pub withdrawn: usize,
    pub publish: Vec<(Policy, StoredEntry)>,
}

/// What the MapWriter holds of the API and the fleet, not expired.
#[derive(Debug, Default)]
pub struct Held {
    pub entries: Vec<(Policy, StoredEntry)>,
    /// API entries of this node's hidden under set entries: they come back
    /// when the set line goes, so the bucket must have them too.
    pub hidden: Vec<(Policy, StoredEntry)>,
}

/// `acked_before`: this node's entries made before it were in the bucket.
pub fn reconcile(
    held: Held,
    seen: &HashSet<(Policy, Cidr)>,
    acked_before: Option<u64>,
) -> Reconciled {
    let mut out = Reconciled::default();
    // A hidden entry the bucket lacks is written again, never removed: a
    // set file may have hidden it before it was ever sent.
    for (policy, entry) in held.hidden {
        if !seen.contains(&(policy, entry.cidr)) {
            out.publish.push((policy, entry));
        }
    }
    for (policy, entry) in held.entries {
        if seen.contains(&(policy, entry.cidr)) {
            continue;
        }
        match entry.origin {
            Origin::Fleet { .. } => out.remove.push((policy, entry.cidr)),
            Origin::Api { .. } if acked_before.is_some_and(|m| entry.creation < m) => {
                out.remove.push((policy, entry.cidr));
                out.withdrawn += 1;
            }
            Origin::Api { .. } => out.publish.push((policy, entry)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cidr: &str, origin: Origin) -> StoredEntry {
        StoredEntry {
            cidr: cidr.parse().unwrap(),
            tag: String::new(),
            creation: 1,
            expiration: 0,
            origin,
        }
    }

    #[test]
    fn unseen_fleet_entries_go_and_unseen_api_entries_are_written_again() {
        let held = vec![
            (Policy::Drop, entry("10.0.0.1/32", Origin::fleet("b"))),
            (Policy::Drop, entry("10.0.0.2/32", Origin::fleet("b"))),
            (Policy::Drop, entry("10.0.0.3/32", Origin::api("admin"))),
            (Policy::Ignore, entry("10.0.0.4/32", Origin::api("admin"))),
            (Policy::Drop, entry("10.0.0.5/32", Origin::peer("p"))),
        ];
        let seen = HashSet::from([
            (Policy::Drop, "10.0.0.2/32".parse().unwrap()),
            (Policy::Ignore, "10.0.0.4/32".parse().unwrap()),
        ]);
        let r = reconcile(
            Held {
                entries: held,
                hidden: Vec::new(),
            },
            &seen,
            None,
        );
        assert_eq!(r.remove, [(Policy::Drop, "10.0.0.1/32".parse().unwrap())]);
        assert_eq!(r.withdrawn, 0);
        assert_eq!(r.publish.len(), 1);
        assert_eq!(r.publish[0].1.cidr, "10.0.0.3/32".parse().unwrap());
    }

    #[test]
    fn an_entry_of_this_nodes_missing_goes_if_the_mark_says_it_was_in_the_bucket() {
        let at = |cidr: &str, creation| StoredEntry {
            creation,
            ..entry(cidr, Origin::api("admin"))
        };
        let held = vec![
            (Policy::Drop, at("10.0.0.1/32", 99)),
            (Policy::Drop, at("10.0.0.2/32", 100)),
            (Policy::Ignore, at("10.0.0.3/32", 101)),
        ];
        let hidden = vec![(Policy::Drop, at("10.0.0.9/32", 1))];
        let r = reconcile(
            Held {
                entries: held.clone(),
                hidden,
            },
            &HashSet::new(),
            Some(100),
        );
        assert_eq!(r.remove, [(Policy::Drop, "10.0.0.1/32".parse().unwrap())]);
        assert_eq!(r.withdrawn, 1);
        let published: Vec<Cidr> = r.publish.iter().map(|(_, e)| e.cidr).collect();
        let want: Vec<Cidr> = ["10.0.0.9/32", "10.0.0.2/32", "10.0.0.3/32"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        // Hidden under a set entry, whatever its age; made in the mark's
        // second or after: maybe never sent.
        assert_eq!(published, want);
        // No mark (or one of another bucket): all written again.
        let all = Held {
            entries: held,
            hidden: Vec::new(),
        };
        assert_eq!(reconcile(all, &HashSet::new(), None).publish.len(), 3);
    }
}
