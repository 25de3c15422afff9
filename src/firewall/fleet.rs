//! Words of the fleet's bucket applied to the rules (see [`crate::fleet`]).
//!
//! The fleet's last word on a CIDR replaces what this node's API or the
//! fleet put there, and leaves alone what a set file or an HTTP peer put
//! there: those are this node's own business. A word already in place
//! writes nothing, so a node applying its own words back, or the whole
//! bucket again after a reconnection, changes nothing.

use std::collections::HashMap;

use couic_common::{Cidr, Policy};

use super::{ChangeKind, Firewall, NewEntry, Puts, Stamp, WriteError};
use crate::batch;
use crate::firewall::Change;
use crate::journal::record;
use crate::origin::Origin;
use crate::store::{EntryStore, Record};

/// One word: an entry as its node wrote it, or a delete.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetOp {
    Put {
        entry: NewEntry,
        creation: u64,
        origin: Origin,
    },
    Delete(Cidr),
}

impl FleetOp {
    fn cidr(&self) -> Cidr {
        match self {
            FleetOp::Put { entry, .. } => entry.cidr,
            FleetOp::Delete(cidr) => *cidr,
        }
    }
}

/// What a batch of words did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FleetApplied {
    /// Entries put, replaced or removed.
    pub written: usize,
    /// Words with nothing to do: in place already, or a CIDR held by a set
    /// file or a peer.
    pub unchanged: usize,
    /// Puts refused: the policy's map is full.
    pub full: usize,
    /// Writes the kernel refused.
    pub failed: usize,
}

impl FleetApplied {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &FleetApplied) {
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.full += other.full;
        self.failed += other.failed;
    }
}

/// Whether the fleet's word replaces `record`: an API or fleet entry.
fn replaceable(store: &EntryStore, policy: Policy, record: &Record) -> bool {
    !store.is_set_record(policy, record)
        && matches!(
            store.origin(record.origin),
            Origin::Api { .. } | Origin::Fleet { .. }
        )
}

impl Firewall {
    /// Room in the state store for the records of `ops`.
    pub fn reserve_fleet<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a FleetOp>,
    ) -> Result<(), WriteError> {
        let bytes = |op: &FleetOp| match op {
            FleetOp::Put { entry, origin, .. } => {
                record::put_bound(entry, origin) + record::DELETE_MAX
            }
            FleetOp::Delete(_) => record::DELETE_MAX,
        };
        let total: usize = ops.into_iter().map(bytes).sum();
        // Fleet records are all journaled: any fleet origin says so.
        self.reserve_bytes(&Origin::fleet(""), total)
    }

    /// Applies words of `policy` in the bucket's order (the last word of a
    /// CIDR wins); puts already expired at `now` count as deletes.
    pub fn apply_fleet(
        &mut self,
        policy: Policy,
        ops: Vec<FleetOp>,
        now: u64,
    ) -> (FleetApplied, Vec<Change>) {
        let mut done = FleetApplied::default();
        let mut last: HashMap<Cidr, usize> = HashMap::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            last.insert(op.cidr(), i);
        }
        done.unchanged += ops.len() - last.len();
        let capacity = self.store.capacity(policy);
        let mut counts = [
            self.store.family_len(policy, true),
            self.store.family_len(policy, false),
        ];
        let mut removes = Vec::new();
        let mut items = Vec::new();
        let mut stamps = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let cidr = op.cidr();
            if last[&cidr] != i {
                continue;
            }
            let family = usize::from(!cidr.is_ipv4());
            let held = self.store.record(policy, cidr);
            let mine = held.is_some_and(|r| replaceable(&self.store, policy, &r));
            match op {
                FleetOp::Put {
                    entry,
                    creation,
                    origin,
                } if entry.expiration == 0 || entry.expiration > now => match held {
                    Some(r) if !mine || batch::same_entry(&self.store, policy, &r, &entry) => {
                        done.unchanged += 1;
                    }
                    Some(_) => {
                        items.push(entry);
                        stamps.push((creation, origin));
                    }
                    None if counts[family] >= capacity => done.full += 1,
                    None => {
                        counts[family] += 1;
                        items.push(entry);
                        stamps.push((creation, origin));
                    }
                },
                // A delete, or a put that expired: the CIDR's entry goes.
                _ if mine => {
                    counts[family] -= 1;
                    removes.push(cidr);
                }
                _ => done.unchanged += 1,
            }
        }
        let (removed, mut changes) = self.write_removals(policy, &removes);
        let puts = Puts {
            items,
            stamp: Stamp::Each(stamps),
            replaced_as: ChangeKind::Removed,
            put_as: ChangeKind::Added,
        };
        let (put, put_changes) = self.write_puts(policy, puts, false);
        changes.extend(put_changes);
        for result in removed.into_iter().chain(put) {
            match result {
                Ok(_) => done.written += 1,
                Err(e) => {
                    tracing::warn!(%policy, error = %e, "fleet: a word could not be applied");
                    done.failed += 1;
                }
            }
        }
        (done, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::Capacities;
    use crate::firewall::MemoryMaps;

    const NOW: u64 = 1_800_000_000;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn put(c: &str, tag: &str, expiration: u64, node: &str) -> FleetOp {
        FleetOp::Put {
            entry: NewEntry {
                cidr: cidr(c),
                tag: tag.into(),
                expiration,
                metadata: None,
            },
            creation: NOW - 10,
            origin: Origin::fleet(node),
        }
    }

    fn firewall(capacity: u32) -> Firewall {
        Firewall::new(
            MemoryMaps::default(),
            Capacities {
                drop: capacity,
                ignore: capacity,
                tags: 16,
            },
        )
    }

    fn api_add(fw: &mut Firewall, c: &str, tag: &str) {
        let entry = NewEntry {
            cidr: cidr(c),
            tag: tag.into(),
            expiration: 0,
            metadata: None,
        };
        let (r, _) = fw.add(Policy::Drop, vec![entry], &Origin::api("admin"), false, NOW);
        assert!(r[0].is_ok());
    }

    #[test]
    fn the_last_word_of_a_cidr_wins_and_keeps_its_node_and_creation() {
        let mut fw = firewall(8);
        let ops = vec![
            put("10.0.0.1/32", "a", 0, "n1"),
            put("10.0.0.2/32", "b", 0, "n1"),
            put("10.0.0.1/32", "c", 0, "n2"),
            FleetOp::Delete(cidr("10.0.0.2/32")),
        ];
        let (done, changes) = fw.apply_fleet(Policy::Drop, ops, NOW);
        assert_eq!(done.written, 1);
        assert_eq!(done.unchanged, 3);
        let e = fw.store().get(Policy::Drop, cidr("10.0.0.1/32")).unwrap();
        assert_eq!((e.tag.as_str(), e.creation), ("c", NOW - 10));
        assert_eq!(e.origin, Origin::fleet("n2"));
        assert!(fw.store().get(Policy::Drop, cidr("10.0.0.2/32")).is_none());
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn words_replace_api_and_fleet_entries_but_not_set_entries() {
        let mut fw = firewall(8);
        api_add(&mut fw, "10.0.0.1/32", "mine");
        let (done, changes) = fw.apply_fleet(
            Policy::Drop,
            vec![put("10.0.0.1/32", "theirs", 0, "n2")],
            NOW,
        );
        assert_eq!(done.written, 1);
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [ChangeKind::Removed, ChangeKind::Added]
        );
        let (done, _) = fw.apply_fleet(
            Policy::Drop,
            vec![FleetOp::Delete(cidr("10.0.0.1/32"))],
            NOW,
        );
        assert_eq!(done.written, 1);
        assert!(fw.store().get(Policy::Drop, cidr("10.0.0.1/32")).is_none());

        let mut target = crate::firewall::set_plan::SetsTarget::default();
        target
            .policy_mut(Policy::Drop)
            .add_file("blocklist", [cidr("10.0.0.9/32")]);
        let (loaded, _) = fw.reload_sets(&target, NOW);
        loaded.unwrap();
        let ops = vec![
            put("10.0.0.9/32", "x", 0, "n2"),
            FleetOp::Delete(cidr("10.0.0.9/32")),
        ];
        let (done, changes) = fw.apply_fleet(Policy::Drop, ops, NOW);
        assert_eq!((done.written, done.unchanged), (0, 2));
        assert!(changes.is_empty());
        assert!(fw.store().get(Policy::Drop, cidr("10.0.0.9/32")).is_some());
    }

    #[test]
    fn a_word_in_place_writes_nothing_and_an_expired_put_removes() {
        let mut fw = firewall(8);
        let word = put("10.0.0.1/32", "a", NOW + 60, "n1");
        assert_eq!(
            fw.apply_fleet(Policy::Drop, vec![word.clone()], NOW)
                .0
                .written,
            1
        );
        let (done, changes) = fw.apply_fleet(Policy::Drop, vec![word], NOW);
        assert_eq!((done.written, done.unchanged), (0, 1));
        assert!(changes.is_empty());
        let expired = put("10.0.0.1/32", "a", NOW, "n1");
        assert_eq!(
            fw.apply_fleet(Policy::Drop, vec![expired], NOW).0.written,
            1
        );
        assert_eq!(fw.store().len(Policy::Drop), 0);
    }

    #[test]
    fn a_full_map_refuses_new_cidrs_and_counts_them() {
        let mut fw = firewall(1);
        let ops = vec![
            put("10.0.0.1/32", "", 0, "n"),
            put("10.0.0.2/32", "", 0, "n"),
        ];
        let (done, _) = fw.apply_fleet(Policy::Drop, ops, NOW);
        assert_eq!((done.written, done.full), (1, 1));
    }
}
