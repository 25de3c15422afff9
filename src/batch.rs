//! Ordered batches of adds and removes (peer batches, the bulk route).
//!
//! A batch is first played in order against the store without touching
//! anything, as if each operation ran alone after the ones before it: that
//! gives every operation its own result (duplicate, not found, set entry,
//! full) up front. Only then is the batch's net effect written: the removals
//! of entries that existed before, then the additions that remain at the
//! end. With `atomic`, one failing operation means nothing is written.
//!
//! A peer batch is idempotent ([`Mode::Peer`]), so that a batch retried
//! after a lost answer, or replayed after a resync, is safe: the peer's
//! last word on a CIDR wins over its own entry, an entry of any other
//! origin is left as it is, and a remove of what is absent is done already.
//!
//! Past 400 lines with its unit tests; the code is under 300.

use std::collections::HashMap;

use couic_common::{Cidr, Policy};

use crate::firewall::{Change, Firewall, NewEntry, WriteError};
use crate::hash::{CidrMap, KeyedState};
use crate::origin::{Origin, OriginId};
use crate::store::{EntryStore, Record, StoredEntry};

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Add(NewEntry),
    Remove(Cidr),
}

impl Op {
    pub fn cidr(&self) -> Cidr {
        match self {
            Op::Add(e) => e.cidr,
            Op::Remove(c) => *c,
        }
    }
}

/// How a batch meets what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The bulk route: an add of a present CIDR is a duplicate, a remove of
    /// an absent one is not found.
    Strict,
    /// A peer batch, from the batch's origin: an add of a CIDR holding that
    /// peer's entry replaces it (nothing is written when it is the same),
    /// an add or a remove of a CIDR holding an entry of another origin
    /// succeeds and leaves it, a remove of an absent CIDR succeeds. Set
    /// entries stay protected: their removal fails.
    Peer,
}

/// What a CIDR looks like after the operations played so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    /// As in the store before the batch; `mine` when it came from the
    /// batch's peer.
    Stored {
        set_entry: bool,
        mine: bool,
        record: Record,
    },
    /// Added by the operation at this index.
    Added(usize),
}

/// The outcome of playing a batch against the store.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One result per operation, in order.
    pub results: Vec<Result<(), WriteError>>,
    /// Entries present before the batch and absent or replaced after it.
    pub removes: Vec<Cidr>,
    /// Operation indexes of the additions present after the batch.
    pub adds: Vec<usize>,
}

impl Plan {
    pub fn failed(&self) -> bool {
        self.results.iter().any(Result::is_err)
    }
}

/// Plays `ops` in order against `store` (nothing is changed). In
/// [`Mode::Peer`], `origin` is the peer's.
pub fn plan(
    store: &EntryStore,
    policy: Policy,
    ops: &[Op],
    protect_sets: bool,
    mode: Mode,
    origin: &Origin,
) -> Plan {
    let peer: Option<OriginId> = match mode {
        Mode::Strict => None,
        Mode::Peer => store.find_origin(origin),
    };
    let idempotent = mode == Mode::Peer;
    let capacity = store.capacity(policy);
    let mut counts = [
        store.family_len(policy, true),
        store.family_len(policy, false),
    ];
    // Per CIDR, in the order they were first met: the CIDR, whether it was
    // stored before the batch, and its state now.
    let mut index: CidrMap<Cidr, u32> =
        CidrMap::with_capacity_and_hasher(ops.len(), KeyedState::default());
    let mut cidrs: Vec<(Cidr, bool, State)> = Vec::with_capacity(ops.len());
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let cidr = op.cidr();
        let family = usize::from(!cidr.is_ipv4());
        let slot = *index.entry(cidr).or_insert_with(|| {
            cidrs.push(match store.record(policy, cidr) {
                Some(r) => (
                    cidr,
                    true,
                    State::Stored {
                        set_entry: store.is_set_record(policy, &r),
                        mine: peer == Some(r.origin),
                        record: r,
                    },
                ),
                None => (cidr, false, State::Absent),
            });
            (cidrs.len() - 1) as u32
        });
        let state = &mut cidrs[slot as usize].2;
        let result = match (op, *state) {
            (Op::Add(_), State::Stored { .. } | State::Added(_)) if !idempotent => {
                Err(WriteError::Duplicate(cidr))
            }
            (
                Op::Add(e),
                State::Stored {
                    mine: true, record, ..
                },
            ) => {
                if !same_entry(store, policy, &record, e) {
                    *state = State::Added(i);
                }
                Ok(())
            }
            (Op::Add(_), State::Stored { mine: false, .. }) => Ok(()),
            (Op::Add(_), State::Added(_)) => {
                *state = State::Added(i);
                Ok(())
            }
            (Op::Add(_), State::Absent) if counts[family] >= capacity => {
                Err(WriteError::Full { max: capacity })
            }
            (Op::Add(_), State::Absent) => {
                counts[family] += 1;
                *state = State::Added(i);
                Ok(())
            }
            (Op::Remove(_), State::Absent) if idempotent => Ok(()),
            (Op::Remove(_), State::Absent) => Err(WriteError::NotFound(cidr)),
            (
                Op::Remove(_),
                State::Stored {
                    set_entry: true, ..
                },
            ) if protect_sets => Err(WriteError::SetEntry(cidr)),
            (Op::Remove(_), State::Stored { mine: false, .. }) if idempotent => Ok(()),
            (Op::Remove(_), _) => {
                counts[family] -= 1;
                *state = State::Absent;
                Ok(())
            }
        };
        results.push(result);
    }

    // Net effect: what existed and is gone or replaced is removed; what is
    // added at the end is added.
    let mut removes = Vec::new();
    let mut adds = Vec::with_capacity(cidrs.len());
    for (cidr, existed, state) in cidrs {
        match (existed, state) {
            (true, State::Absent) => removes.push(cidr),
            (existed, State::Added(i)) => {
                if existed {
                    removes.push(cidr);
                }
                adds.push(i);
            }
            _ => {}
        }
    }
    Plan {
        results,
        removes,
        adds,
    }
}

/// Whether the stored `record` is what `entry` would write (the creation
/// time aside).
pub(crate) fn same_entry(
    store: &EntryStore,
    policy: Policy,
    record: &Record,
    entry: &NewEntry,
) -> bool {
    record.expiration == entry.expiration && store.tags(policy).name(record.tag) == entry.tag
}

/// How a batch is played and written.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub protect_sets: bool,
    pub atomic: bool,
    pub mode: Mode,
}

/// Plays and applies a batch; returns one result per operation and the
/// applied changes (to publish as one event).
pub fn apply(
    firewall: &mut Firewall,
    policy: Policy,
    ops: Vec<Op>,
    origin: &Origin,
    rules: Rules,
    now: u64,
) -> (Vec<Result<(), WriteError>>, Vec<Change>) {
    let Rules {
        protect_sets,
        atomic,
        mode,
    } = rules;
    let mut plan = plan(firewall.store(), policy, &ops, protect_sets, mode, origin);
    if atomic && plan.failed() {
        let results = plan
            .results
            .into_iter()
            .map(|r| r.and(Err(WriteError::Aborted)))
            .collect();
        return (results, Vec::new());
    }

    // The plan checked every write against the store. Validated entries can
    // still be refused by the kernel (memory): such a failure is given to
    // every operation on that CIDR.
    let (removed, mut changes) = firewall.write_removals(policy, &plan.removes);
    let mut kernel_failures: HashMap<Cidr, WriteError> = HashMap::new();
    for (cidr, result) in plan.removes.iter().zip(removed) {
        if let Err(e) = result {
            kernel_failures.insert(*cidr, e);
        }
    }
    // The additions are moved out of `ops`; failures are told by CIDR.
    let cidrs: Vec<Cidr> = ops.iter().map(Op::cidr).collect();
    let adds: Vec<usize> = if atomic && !kernel_failures.is_empty() {
        Vec::new()
    } else if kernel_failures.is_empty() {
        plan.adds
    } else {
        plan.adds
            .into_iter()
            .filter(|i| !kernel_failures.contains_key(&cidrs[*i]))
            .collect()
    };
    let entries = additions(ops, &adds);
    let (added, add_changes) = if kernel_failures.is_empty() {
        firewall.write_additions(policy, entries, origin, atomic, now)
    } else {
        // A refused removal left its entry in place: check the additions
        // again (capacity) as if they came alone.
        let (added, changes) = firewall.add(policy, entries, origin, atomic, now);
        (added.into_iter().map(|r| r.map(drop)).collect(), changes)
    };
    if changes.is_empty() {
        changes = add_changes;
    } else {
        changes.extend(add_changes);
    }
    for (&i, result) in adds.iter().zip(added) {
        if let Err(e) = result {
            if !matches!(e, WriteError::Aborted) {
                kernel_failures.insert(cidrs[i], e);
            }
        }
    }
    if kernel_failures.is_empty() {
        return (plan.results, changes);
    }

    if atomic {
        // Put back what the batch removed: a failed atomic batch publishes
        // nothing, but an entry that could not be put back is really gone.
        let changes = restore(firewall, policy, changes);
        let first = kernel_failures.values().next().cloned().expect("not empty");
        let results = cidrs
            .iter()
            .map(|cidr| {
                Err(kernel_failures
                    .get(cidr)
                    .cloned()
                    .unwrap_or_else(|| first.clone()))
            })
            .collect();
        return (results, changes);
    }
    for (i, cidr) in cidrs.iter().enumerate() {
        if let (Ok(()), Some(e)) = (&plan.results[i], kernel_failures.get(cidr)) {
            plan.results[i] = Err(e.clone());
        }
    }
    (plan.results, changes)
}

/// The entries of the additions at `adds` (indexes into `ops`), in that
/// order. In operation order, the usual case, the list is built in the
/// memory of `ops` (an `Op` and a `NewEntry` have the same size): a bulk
/// request carries hundreds of thousands of them.
fn additions(ops: Vec<Op>, adds: &[usize]) -> Vec<NewEntry> {
    let take = |op: Op| match op {
        Op::Add(e) => e,
        Op::Remove(_) => unreachable!("adds index additions"),
    };
    if adds.windows(2).all(|w| w[0] < w[1]) {
        let mut wanted = adds.iter().copied().peekable();
        return ops
            .into_iter()
            .enumerate()
            .filter_map(|(i, op)| wanted.next_if_eq(&i).map(|_| take(op)))
            .collect();
    }
    let mut ops: Vec<Option<Op>> = ops.into_iter().map(Some).collect();
    adds.iter()
        .map(|&i| take(ops[i].take().expect("each addition once")))
        .collect()
}

/// Puts back the entries an atomic batch removed before the kernel refused
/// one of its additions (the additions were already rolled back), each as
/// it was (tag, creation, expiration, origin). Returns the removals that
/// could not be undone: the only changes such a batch publishes.
fn restore(firewall: &mut Firewall, policy: Policy, removed: Vec<Change>) -> Vec<Change> {
    let mut lost = Vec::new();
    for change in removed {
        let StoredEntry {
            cidr,
            tag,
            creation,
            expiration,
            origin,
        } = change.entry.clone();
        let entry = NewEntry {
            cidr,
            tag,
            expiration,
            metadata: change.metadata.as_deref().cloned(),
        };
        let (result, _) = firewall.add(policy, vec![entry], &origin, false, creation);
        if let Some(Err(e)) = result.first() {
            tracing::error!(%cidr, error = %e, "cannot restore an entry after a failed batch");
            lost.push(change);
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn add(s: &str) -> Op {
        Op::Add(NewEntry {
            cidr: cidr(s),
            tag: String::new(),
            expiration: 0,
            metadata: None,
        })
    }

    fn store_with(entries: &[(&str, &str)], capacity: usize) -> EntryStore {
        let mut store = EntryStore::new(capacity, capacity, 16);
        for (c, tag) in entries {
            let id = store.tags_mut(Policy::Drop).acquire(tag).id;
            let origin = if tag.ends_with(".couic") {
                Origin::Set
            } else {
                Origin::api("test")
            };
            let origin = store.origin_id(&origin);
            let record = Record {
                creation: 1,
                expiration: 0,
                tag: id,
                origin,
            };
            store.insert(Policy::Drop, cidr(c), record);
        }
        store
    }

    #[test]
    fn plays_operations_in_order() {
        let store = store_with(&[("10.0.0.1/32", "")], 10);
        let ops = vec![
            add("10.0.0.1/32"),
            Op::Remove(cidr("10.0.0.1/32")),
            add("10.0.0.1/32"),
            add("10.0.0.2/32"),
            Op::Remove(cidr("10.0.0.2/32")),
            Op::Remove(cidr("10.0.0.3/32")),
            add("10.0.0.4/32"),
            add("10.0.0.4/32"),
        ];
        let plan = plan(&store, Policy::Drop, &ops, true, Mode::Strict, &Origin::Set);
        let errors: Vec<Option<WriteError>> =
            plan.results.iter().map(|r| r.clone().err()).collect();
        assert!(matches!(errors[0], Some(WriteError::Duplicate(_))));
        assert!(errors[1..5].iter().all(Option::is_none));
        assert!(matches!(errors[5], Some(WriteError::NotFound(_))));
        assert!(errors[6].is_none());
        assert!(
            matches!(errors[7], Some(WriteError::Duplicate(_))),
            "duplicate within the batch"
        );
        // 10.0.0.1 replaced, 10.0.0.2 came and went, 10.0.0.4 added once.
        assert_eq!(plan.removes, vec![cidr("10.0.0.1/32")]);
        assert_eq!(plan.adds, vec![2, 6]);
    }

    #[test]
    fn additions_come_out_in_the_order_asked() {
        let ops = || {
            vec![
                add("1.1.1.1/32"),
                Op::Remove(cidr("2.2.2.2/32")),
                add("3.3.3.3/32"),
            ]
        };
        let cidrs = |entries: Vec<NewEntry>| -> Vec<String> {
            entries.iter().map(|e| e.cidr.to_string()).collect()
        };
        assert_eq!(
            cidrs(additions(ops(), &[0, 2])),
            ["1.1.1.1/32", "3.3.3.3/32"]
        );
        assert_eq!(
            cidrs(additions(ops(), &[2, 0])),
            ["3.3.3.3/32", "1.1.1.1/32"]
        );
        assert!(additions(ops(), &[]).is_empty());
    }

    #[test]
    fn set_entries_are_protected_and_capacity_counted() {
        let store = store_with(&[("10.0.0.0/8", "lan.couic"), ("10.0.0.1/32", "")], 3);
        let ops = vec![
            Op::Remove(cidr("10.0.0.0/8")),
            add("1.1.1.1/32"),
            add("1.1.1.2/32"),
        ];
        let plan_protected = plan(&store, Policy::Drop, &ops, true, Mode::Strict, &Origin::Set);
        assert!(matches!(
            plan_protected.results[0],
            Err(WriteError::SetEntry(_))
        ));
        assert!(plan_protected.results[1].is_ok());
        assert!(matches!(
            plan_protected.results[2],
            Err(WriteError::Full { max: 3 })
        ));
        let plan_open = plan(
            &store,
            Policy::Drop,
            &ops,
            false,
            Mode::Strict,
            &Origin::Set,
        );
        assert_eq!(plan_open.results.len(), ops.len());
        assert!(
            plan_open.results.iter().all(Result::is_ok),
            "a removal frees a slot"
        );
        // IPv6 has its own capacity.
        let v6 = plan(
            &store,
            Policy::Drop,
            &[add("::1/128"), add("::2/128")],
            true,
            Mode::Strict,
            &Origin::Set,
        );
        assert!(!v6.failed());
    }

    #[test]
    fn peer_batches_are_idempotent_and_touch_only_the_peers_entries() {
        let mut store = store_with(&[("10.0.0.1/32", ""), ("10.0.0.0/8", "lan.couic")], 10);
        let peer = Origin::peer("node-a");
        let origin = store.origin_id(&peer);
        for (c, tag) in [("10.0.0.2/32", "t"), ("10.0.0.3/32", "t")] {
            let tag = store.tags_mut(Policy::Drop).acquire(tag).id;
            let record = Record {
                creation: 1,
                expiration: 0,
                tag,
                origin,
            };
            store.insert(Policy::Drop, cidr(c), record);
        }
        let tagged = |c: &str, tag: &str| {
            Op::Add(NewEntry {
                cidr: cidr(c),
                tag: tag.into(),
                expiration: 0,
                metadata: None,
            })
        };
        let ops = vec![
            // Another origin's entry: left as it is, both ways.
            add("10.0.0.1/32"),
            Op::Remove(cidr("10.0.0.1/32")),
            // The peer's own entry, the same: nothing to write.
            tagged("10.0.0.2/32", "t"),
            // The peer's own entry, another tag: replaced.
            tagged("10.0.0.3/32", "u"),
            // Absent: a remove is done already; twice added, the last wins.
            Op::Remove(cidr("10.0.0.4/32")),
            tagged("10.0.0.5/32", "a"),
            tagged("10.0.0.5/32", "b"),
        ];
        let plan = plan(&store, Policy::Drop, &ops, true, Mode::Peer, &peer);
        assert!(!plan.failed(), "{:?}", plan.results);
        assert_eq!(plan.removes, vec![cidr("10.0.0.3/32")]);
        assert_eq!(plan.adds, vec![3, 6]);
        // Set entries stay protected; the same batch is strict for the API.
        let set = plan_of(&store, &[Op::Remove(cidr("10.0.0.0/8"))], Mode::Peer, &peer);
        assert!(matches!(set.results[0], Err(WriteError::SetEntry(_))));
        let strict = plan_of(&store, &ops, Mode::Strict, &peer);
        assert!(matches!(strict.results[0], Err(WriteError::Duplicate(_))));
        assert!(matches!(strict.results[4], Err(WriteError::NotFound(_))));
    }

    fn plan_of(store: &EntryStore, ops: &[Op], mode: Mode, origin: &Origin) -> Plan {
        plan(store, Policy::Drop, ops, true, mode, origin)
    }
}
