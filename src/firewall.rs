//! The rules as one consistent whole: the entry store and the kernel maps.
//!
//! Every change is checked against the store, written to the kernel, and
//! only then recorded in the store; a failed kernel write leaves the store as
//! it was. The MapWriter actor owns the only `Firewall`.

use std::collections::HashSet;
use std::sync::Arc;

use couic_common::{Cidr, Policy};

use crate::bpf::{self, KernelMaps, RULE_MAPS};
use crate::hash::KeyedState;
use crate::origin::{Origin, OriginId};
use crate::store::{EntryStore, Record, StoredEntry};
use crate::tags::Acquired;

mod change;
pub mod fleet;
mod journaled;
pub mod maps;
mod queries;
pub mod set_plan;
mod sets;

pub use change::{Change, ChangeKind, Changed, ChangedBatch, ItemResult, NewEntry, WriteError};
pub(crate) use change::{Puts, Stamp};
pub use journaled::Committed;
pub use maps::{MemoryMaps, RuleMaps};
pub use queries::{Snapshot, Verdict};

pub struct Firewall {
    store: EntryStore,
    maps: Box<dyn RuleMaps>,
    /// Where API and peer changes are made durable, when they are.
    journal: Option<crate::journal::Journal>,
}

impl Firewall {
    /// A firewall over `maps`: the kernel's ([`KernelMaps`]), or
    /// [`MemoryMaps`] in tests.
    pub fn new(maps: impl RuleMaps + 'static, caps: bpf::Capacities) -> Self {
        Firewall {
            store: EntryStore::new(caps.drop as usize, caps.ignore as usize, caps.tags),
            maps: Box::new(maps),
            journal: None,
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
        origin: &Origin,
        atomic: bool,
        now: u64,
    ) -> (Vec<ItemResult>, Vec<Change>) {
        let mut refused: Vec<Option<WriteError>> = Vec::with_capacity(items.len());
        let mut seen = HashSet::with_capacity_and_hasher(items.len(), KeyedState::default());
        let mut pending = [0usize; 2];
        let capacity = self.store.capacity(policy);
        for item in &items {
            let family = usize::from(!item.cidr.is_ipv4());
            refused.push(
                if self.store.record(policy, item.cidr).is_some() || !seen.insert(item.cidr) {
                    Some(WriteError::Duplicate(item.cidr))
                } else if self.store.family_len(policy, family == 0) + pending[family] >= capacity {
                    Some(WriteError::Full { max: capacity })
                } else {
                    pending[family] += 1;
                    None
                },
            );
        }
        if atomic && refused.iter().any(Option::is_some) {
            return (abort(refused), Vec::new());
        }
        let accepted = not_refused(items, &refused);
        let (written, changes) = self.write_additions(policy, accepted, origin, atomic, now);
        (merge(refused, written, &changes), changes)
    }

    /// Writes additions already checked against the store (absent, distinct,
    /// within capacity): one result per item and the applied changes, in
    /// order. With `atomic`, a kernel refusal rolls the others back.
    pub(crate) fn write_additions(
        &mut self,
        policy: Policy,
        items: Vec<NewEntry>,
        origin: &Origin,
        atomic: bool,
        now: u64,
    ) -> (Vec<Result<(), WriteError>>, Vec<Change>) {
        let puts = Puts {
            items,
            stamp: Stamp::Same {
                creation: now,
                origin: origin.clone(),
            },
            replaced_as: ChangeKind::Removed,
            put_as: ChangeKind::Added,
        };
        self.write_puts(policy, puts, atomic)
    }

    /// The one way an entry goes in: tag references taken, the kernel
    /// written (per table), then the store, each applied put published as
    /// `put_as` after the entry it replaced, if any, as `replaced_as`. One
    /// result per put. With `atomic` (puts of new entries only), a kernel
    /// refusal rolls the others back and nothing is applied.
    pub(crate) fn write_puts(
        &mut self,
        policy: Policy,
        puts: Puts,
        atomic: bool,
    ) -> (Vec<Result<(), WriteError>>, Vec<Change>) {
        let Puts {
            items,
            stamp,
            replaced_as,
            put_as,
        } = puts;
        let acquired = self.acquire_tags(policy, items.iter().map(|p| p.tag.as_str()));
        let cidrs: Vec<Cidr> = items.iter().map(|p| p.cidr).collect();
        let slots: Vec<u32> = acquired.iter().map(|a| a.slot).collect();
        let written = self.write(policy, &cidrs, Some(&slots));
        if atomic && written.iter().any(Result::is_err) {
            // Roll back what went in so the batch stays all-or-nothing.
            let ok: Vec<Cidr> = cidrs
                .iter()
                .zip(&written)
                .filter(|(_, w)| w.is_ok())
                .map(|(c, _)| *c)
                .collect();
            self.write(policy, &ok, None);
            for a in &acquired {
                self.store.tags_mut(policy).release(a.id);
            }
            let results = written
                .into_iter()
                .map(|w| w.and(Err(WriteError::Aborted)))
                .collect();
            return (results, Vec::new());
        }

        // A batch usually has one origin: intern it once.
        let mut last_origin: Option<(&Origin, OriginId)> = None;
        let mut changes = Vec::with_capacity(items.len());
        for (i, ((item, w), a)) in items.into_iter().zip(&written).zip(&acquired).enumerate() {
            if w.is_err() {
                self.store.tags_mut(policy).release(a.id);
                continue;
            }
            let (creation, origin) = stamp.of(i);
            let origin_id = match last_origin {
                Some((o, id)) if std::ptr::eq(o, origin) || *o == *origin => id,
                _ => {
                    let id = self.store.origin_id(origin);
                    last_origin = Some((origin, id));
                    id
                }
            };
            let record = Record {
                creation,
                expiration: item.expiration,
                tag: a.id,
                origin: origin_id,
            };
            if let Some(old) = self.store.insert(policy, item.cidr, record) {
                let entry = self.store.view(policy, item.cidr, &old);
                self.store.tags_mut(policy).release(old.tag);
                changes.push(Change::of(replaced_as, policy, entry));
            }
            changes.push(Change {
                seq: 0,
                kind: put_as,
                policy,
                // The interned name is the item's own tag text.
                entry: StoredEntry {
                    cidr: item.cidr,
                    tag: item.tag,
                    creation,
                    expiration: item.expiration,
                    origin: origin.clone(),
                },
                metadata: item.metadata.map(Box::new),
            });
        }
        (written, changes)
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
        let mut refused: Vec<Option<WriteError>> = Vec::with_capacity(cidrs.len());
        let mut seen = HashSet::with_capacity_and_hasher(cidrs.len(), KeyedState::default());
        for &cidr in &cidrs {
            refused.push(match self.store.record(policy, cidr) {
                None => Some(WriteError::NotFound(cidr)),
                Some(_) if !seen.insert(cidr) => Some(WriteError::NotFound(cidr)),
                Some(r) if protect_sets && self.store.is_set_record(policy, &r) => {
                    Some(WriteError::SetEntry(cidr))
                }
                Some(_) => None,
            });
        }
        if atomic && refused.iter().any(Option::is_some) {
            return (abort(refused), Vec::new());
        }
        let accepted = not_refused(cidrs, &refused);
        let (written, changes) = self.write_removals(policy, &accepted);
        (merge(refused, written, &changes), changes)
    }

    /// Removes entries known to be in the store, each once: one result per
    /// CIDR and the applied changes, in order.
    pub(crate) fn write_removals(
        &mut self,
        policy: Policy,
        cidrs: &[Cidr],
    ) -> (Vec<Result<(), WriteError>>, Vec<Change>) {
        let written = self.write(policy, cidrs, None);
        let mut changes = Vec::with_capacity(cidrs.len());
        for (&cidr, w) in cidrs.iter().zip(&written) {
            if w.is_ok() {
                let entry = self
                    .store
                    .remove(policy, cidr)
                    .expect("checked by the caller");
                changes.push(Change::of(ChangeKind::Removed, policy, entry));
            }
        }
        (written, changes)
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

    /// One tag reference per name. A run of equal names (a batch usually
    /// carries one tag) is looked up once.
    fn acquire_tags<'a>(
        &mut self,
        policy: Policy,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Acquired> {
        let mut acquired: Vec<Acquired> = Vec::new();
        let mut run: Option<(&str, Acquired, usize)> = None;
        for name in names {
            match &mut run {
                Some((last, first, extra)) if same_tag(last, name) => {
                    *extra += 1;
                    acquired.push(Acquired {
                        fresh_slot: false,
                        ..*first
                    });
                }
                _ => {
                    if let Some((_, first, extra)) = run.take() {
                        self.store.tags_mut(policy).retain(first.id, extra);
                    }
                    let first = self.acquire_tag(policy, name);
                    acquired.push(first);
                    run = Some((name, first, 0));
                }
            }
        }
        if let Some((_, first, extra)) = run {
            self.store.tags_mut(policy).retain(first.id, extra);
        }
        acquired
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

    /// Inserts (`slots` given) or deletes `cidrs` in the kernel, grouped by
    /// rule map; each item gets its own result.
    fn write(
        &mut self,
        policy: Policy,
        cidrs: &[Cidr],
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

/// `a == b`, but two untagged names compare without calling `memcmp`: glibc's
/// AVX-512 `memcmp` of length 0 still issues a masked load from the dangling
/// pointer of an empty string, which costs a microcode assist on AMD (it
/// was 4 % of a bulk load of untagged entries).
fn same_tag(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// The items no check refused, in order.
fn not_refused<T>(items: impl IntoIterator<Item = T>, refused: &[Option<WriteError>]) -> Vec<T> {
    items
        .into_iter()
        .zip(refused)
        .filter(|(_, r)| r.is_none())
        .map(|(item, _)| item)
        .collect()
}

/// An atomic batch refused before anything was written.
fn abort(refused: Vec<Option<WriteError>>) -> Vec<ItemResult> {
    refused
        .into_iter()
        .map(|r| Err(r.unwrap_or(WriteError::Aborted)))
        .collect()
}

/// Per item: its refusal, or the result of its write, whose successes are
/// the `changes` in order.
fn merge(
    refused: Vec<Option<WriteError>>,
    written: Vec<Result<(), WriteError>>,
    changes: &[Change],
) -> Vec<ItemResult> {
    let mut written = written.into_iter();
    let mut changes = changes.iter();
    refused
        .into_iter()
        .map(|r| match r {
            Some(e) => Err(e),
            None => written
                .next()
                .expect("one write per accepted item")
                .map(|()| changes.next().expect("one change per write").entry.clone()),
        })
        .collect()
}
