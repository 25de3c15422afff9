//! The rules as one consistent whole: the entry store and the kernel maps.
//!
//! Every change is checked against the store, written to the kernel, and
//! only then recorded in the store; a failed kernel write leaves the store as
//! it was. The MapWriter actor owns the only `Firewall`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use couic_common::{Cidr, Metadata, Policy};

use crate::bpf::{self, BpfError, Counter, KernelMaps, RULE_MAPS, STAT_SLOTS};
use crate::store::{EntryStore, Origin, Record, StoredEntry};
use crate::tags::Acquired;

mod sets;

/// An entry to add; `cidr` is normalised, `tag` is "" when untagged.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub cidr: Cidr,
    pub tag: String,
    pub expiration: u64,
    /// Only carried along to the change event (reports).
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("{0} already exists")]
    Duplicate(Cidr),
    #[error("couic underlying ebpf map is full: max {max} entries")]
    Full { max: usize },
    #[error("cidr `{0}` not found")]
    NotFound(Cidr),
    #[error("Entry defined in a set cannot be removed")]
    SetEntry(Cidr),
    #[error("not applied: another item of the atomic batch failed")]
    Aborted,
    #[error("kernel map {map}: {source}")]
    Kernel {
        map: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
}

/// One applied change, as published to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub policy: Policy,
    pub entry: StoredEntry,
    pub metadata: Option<Metadata>,
}

pub type ItemResult = Result<StoredEntry, WriteError>;

/// Counters read from the kernel, with the store's sizes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub drop_count: usize,
    pub ignore_count: usize,
    /// By `couic_stat` index: the five XDP actions, then malformed frames.
    pub xdp: [Counter; STAT_SLOTS],
    pub drop_tags: Vec<(String, Counter)>,
    pub ignore_tags: Vec<(String, Counter)>,
}

/// What the data path would answer for one source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The deciding policy: `Ignore` (pass), `Drop`, or `None` (pass).
    pub policy: Option<Policy>,
    pub entry: Option<StoredEntry>,
}

pub struct Firewall {
    store: EntryStore,
    maps: KernelMaps,
    /// Entries per rule map, by `couic_map_index`.
    counts: [usize; RULE_MAPS],
    active: [u8; RULE_MAPS],
}

impl Firewall {
    pub fn new(maps: KernelMaps, caps: bpf::Capacities) -> Self {
        Firewall {
            store: EntryStore::new(caps.drop as usize, caps.ignore as usize, caps.tags),
            maps,
            counts: [0; RULE_MAPS],
            active: [0; RULE_MAPS],
        }
    }

    pub fn store(&self) -> &EntryStore {
        &self.store
    }

    /// Adds `items` in order. With `atomic`, either every item is applied or
    /// none is (the others then fail with [`WriteError::Aborted`]).
    pub fn add(
        &mut self,
        policy: Policy,
        items: Vec<NewEntry>,
        origin: Origin,
        atomic: bool,
        now: u64,
    ) -> (Vec<ItemResult>, Vec<Change>) {
        let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
        let mut seen = HashSet::new();
        let mut pending = [0usize; 2];
        let capacity = self.store.capacity(policy);
        for (i, item) in items.iter().enumerate() {
            let family = usize::from(!item.cidr.is_ipv4());
            let error = if self.store.record(policy, item.cidr).is_some() || !seen.insert(item.cidr)
            {
                Some(WriteError::Duplicate(item.cidr))
            } else if self.store.family_len(policy, family == 0) + pending[family] >= capacity {
                Some(WriteError::Full { max: capacity })
            } else {
                pending[family] += 1;
                None
            };
            results[i] = error.map(Err);
        }
        if atomic && results.iter().any(Option::is_some) {
            return (abort(results), Vec::new());
        }

        // Write the accepted items, grouped by rule map.
        let accepted: Vec<usize> = (0..items.len()).filter(|i| results[*i].is_none()).collect();
        let slots: Vec<u32> = accepted
            .iter()
            .map(|&i| self.acquire_slot(policy, &items[i].tag))
            .collect();
        for &i in &accepted {
            self.activate(bpf::rule_map_index(policy, items[i].cidr));
        }
        let written = self.write(
            policy,
            accepted.iter().map(|&i| items[i].cidr).collect(),
            Some(&slots),
        );
        if atomic && written.iter().any(Result::is_err) {
            // Roll back what went in so the batch stays all-or-nothing.
            let ok: Vec<Cidr> = accepted
                .iter()
                .zip(&written)
                .filter(|(_, w)| w.is_ok())
                .map(|(&i, _)| items[i].cidr)
                .collect();
            self.write(policy, ok, None);
            for &i in &accepted {
                let id = self.store.tags(policy).id_of(&items[i].tag);
                self.store.tags_mut(policy).release(id);
            }
            for (&i, w) in accepted.iter().zip(written) {
                results[i] = Some(w.err().map_or(Err(WriteError::Aborted), Err));
            }
            self.sync_active();
            return (abort(results), Vec::new());
        }

        let mut changes = Vec::new();
        for (&i, w) in accepted.iter().zip(written) {
            let item = &items[i];
            let tag = self.store.tags(policy).id_of(&item.tag);
            results[i] = Some(match w {
                Ok(()) => {
                    self.counts[bpf::rule_map_index(policy, item.cidr)] += 1;
                    let record = Record {
                        creation: now,
                        expiration: item.expiration,
                        tag,
                        origin,
                    };
                    self.store.insert(policy, item.cidr, record);
                    let entry = self.store.view(policy, item.cidr, &record);
                    changes.push(Change {
                        kind: ChangeKind::Added,
                        policy,
                        entry: entry.clone(),
                        metadata: item.metadata.clone(),
                    });
                    Ok(entry)
                }
                Err(e) => {
                    self.store.tags_mut(policy).release(tag);
                    Err(e)
                }
            });
        }
        self.sync_active();
        (
            results
                .into_iter()
                .map(|r| r.expect("every item decided"))
                .collect(),
            changes,
        )
    }

    /// Removes `cidrs` in order. `protect_sets` refuses set entries (API
    /// deletes); `atomic` as in [`Firewall::add`].
    pub fn remove(
        &mut self,
        policy: Policy,
        cidrs: Vec<Cidr>,
        protect_sets: bool,
        atomic: bool,
    ) -> (Vec<ItemResult>, Vec<Change>) {
        let mut results: Vec<Option<ItemResult>> = vec![None; cidrs.len()];
        let mut seen = HashSet::new();
        for (i, cidr) in cidrs.iter().enumerate() {
            results[i] = match self.store.get(policy, *cidr) {
                None => Some(Err(WriteError::NotFound(*cidr))),
                Some(_) if !seen.insert(*cidr) => Some(Err(WriteError::NotFound(*cidr))),
                Some(e) if protect_sets && e.is_set_entry() => {
                    Some(Err(WriteError::SetEntry(*cidr)))
                }
                Some(_) => None,
            };
        }
        if atomic && results.iter().any(Option::is_some) {
            return (abort(results), Vec::new());
        }
        let accepted: Vec<usize> = (0..cidrs.len()).filter(|i| results[*i].is_none()).collect();
        let written = self.write(policy, accepted.iter().map(|&i| cidrs[i]).collect(), None);
        let mut changes = Vec::new();
        for (&i, w) in accepted.iter().zip(written) {
            results[i] = Some(match w {
                Ok(()) => {
                    self.counts[bpf::rule_map_index(policy, cidrs[i])] -= 1;
                    let entry = self.store.remove(policy, cidrs[i]).expect("checked above");
                    changes.push(Change {
                        kind: ChangeKind::Removed,
                        policy,
                        entry: entry.clone(),
                        metadata: None,
                    });
                    Ok(entry)
                }
                Err(e) => Err(e),
            });
        }
        self.sync_active();
        (
            results
                .into_iter()
                .map(|r| r.expect("every item decided"))
                .collect(),
            changes,
        )
    }

    /// Removes the listed entries that are still due: same expiration as when
    /// they were indexed, and `0 < expiration <= now`.
    pub fn expire(&mut self, due: &[(Policy, Cidr, u64)], now: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        for policy in Policy::ALL {
            let cidrs: Vec<Cidr> = due
                .iter()
                .filter(|(p, c, exp)| {
                    *p == policy
                        && *exp > 0
                        && *exp <= now
                        && self
                            .store
                            .record(policy, *c)
                            .is_some_and(|r| r.expiration == *exp)
                })
                .map(|(_, c, _)| *c)
                .collect();
            changes.extend(self.remove(policy, cidrs, false, false).1);
        }
        changes
    }

    /// The verdict the data path gives `ip`: any ignore match wins.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        for policy in [Policy::Ignore, Policy::Drop] {
            if let Some(entry) = self.store.longest_match(policy, ip) {
                return Verdict {
                    policy: Some(policy),
                    entry: Some(entry),
                };
            }
        }
        Verdict {
            policy: None,
            entry: None,
        }
    }

    pub fn snapshot(&self) -> Result<Snapshot, BpfError> {
        let tags = |policy| -> Result<Vec<(String, Counter)>, BpfError> {
            self.store
                .tags(policy)
                .counted()
                .map(|(name, slot)| Ok((name.to_string(), self.maps.read_tag(policy, slot)?)))
                .collect()
        };
        Ok(Snapshot {
            drop_count: self.store.len(Policy::Drop),
            ignore_count: self.store.len(Policy::Ignore),
            xdp: self.maps.read_stats()?,
            drop_tags: tags(Policy::Drop)?,
            ignore_tags: tags(Policy::Ignore)?,
        })
    }

    fn acquire_slot(&mut self, policy: Policy, tag: &str) -> u32 {
        self.acquire_tag(policy, tag).slot
    }

    fn acquire_tag(&mut self, policy: Policy, tag: &str) -> Acquired {
        let acquired = self.store.tags_mut(policy).acquire(tag);
        if acquired.fresh_slot {
            if let Err(e) = self.maps.reset_tag(policy, acquired.slot) {
                tracing::warn!(error = %e, tag, "cannot zero the counters of a reused tag slot");
            }
        }
        acquired
    }

    /// Marks a rule map as holding entries before anything is inserted.
    fn activate(&mut self, index: usize) {
        if self.active[index] == 0 {
            self.active[index] = 1;
            if let Err(e) = self.maps.set_active(self.active) {
                tracing::error!(error = %e, "cannot update couic_active");
            }
        }
    }

    /// Clears the flag of every rule map left empty.
    fn sync_active(&mut self) {
        let wanted: [u8; RULE_MAPS] = std::array::from_fn(|i| u8::from(self.counts[i] > 0));
        if wanted != self.active {
            self.active = wanted;
            if let Err(e) = self.maps.set_active(self.active) {
                tracing::error!(error = %e, "cannot update couic_active");
            }
        }
    }

    /// Inserts (`slots` given) or deletes `cidrs` in the kernel, grouped by
    /// rule map; each item gets its own result.
    fn write(
        &mut self,
        policy: Policy,
        cidrs: Vec<Cidr>,
        slots: Option<&[u32]>,
    ) -> Vec<Result<(), WriteError>> {
        let mut results: Vec<Result<(), WriteError>> = vec![Ok(()); cidrs.len()];
        let mut groups: [Vec<usize>; RULE_MAPS] = Default::default();
        for (i, cidr) in cidrs.iter().enumerate() {
            groups[bpf::rule_map_index(policy, *cidr)].push(i);
        }
        for (index, members) in groups.iter().enumerate().filter(|(_, m)| !m.is_empty()) {
            let written = match slots {
                Some(slots) => {
                    let items: Vec<(Cidr, u32)> =
                        members.iter().map(|&i| (cidrs[i], slots[i])).collect();
                    self.maps.insert(index, &items)
                }
                None => {
                    let group: Vec<Cidr> = members.iter().map(|&i| cidrs[i]).collect();
                    self.maps.remove(index, &group)
                }
            };
            for (&i, w) in members.iter().zip(written) {
                if let Err(e) = w {
                    results[i] = Err(WriteError::Kernel {
                        map: KernelMaps::rule_map_name(index),
                        source: Arc::new(e),
                    });
                }
            }
        }
        results
    }
}

fn abort(results: Vec<Option<ItemResult>>) -> Vec<ItemResult> {
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(WriteError::Aborted)))
        .collect()
}
