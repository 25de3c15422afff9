//! Applying a set reload to the store and the kernel maps.
//!
//! The target comes whole; only its difference with the current set entries
//! is written. Capacity is checked for both policies before anything is
//! written, so a reload that would not fit changes nothing. Each kernel write
//! is recorded in the store only once the kernel took it, so store and maps
//! agree even if the kernel fails half-way.

use couic_common::{Cidr, Policy};

use super::set_plan::{self, Existing, PolicyTarget, ReloadCounts, ReloadSummary, SetsTarget};
use super::{Change, ChangeKind, Firewall, NewEntry, Puts, Stamp, WriteError};
use crate::origin::{Origin, OriginId};
use crate::store::{EntryStore, Shadowed};
use crate::tags::TagId;

/// The store as the reload plan sees one policy: tags compared by id, so
/// an unchanged entry costs one lookup.
struct StoreView<'a> {
    store: &'a EntryStore,
    policy: Policy,
}

impl set_plan::Current for StoreView<'_> {
    type Tag = TagId;

    fn file_tag(&self, tag: &str) -> Option<TagId> {
        let id = self.store.tags(self.policy).id_of(tag);
        (id != TagId::UNTAGGED).then_some(id)
    }

    fn existing(&self, cidr: Cidr) -> Existing<TagId> {
        match self.store.record(self.policy, cidr) {
            None => Existing::Absent,
            Some(r) if r.origin == OriginId::SET => Existing::Set(r.tag),
            Some(_) => Existing::Other,
        }
    }

    fn set_count(&self) -> usize {
        self.set_records().count()
    }

    fn set_entries(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.set_records()
    }
}

impl StoreView<'_> {
    fn set_records(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.store
            .iter(self.policy)
            .filter(|(_, r)| r.origin == OriginId::SET)
            .map(|(c, _)| c)
    }
}

/// A policy's reload, classified against the store before anything is
/// written. Tags are indexes into the policy's target.
struct Step {
    policy: Policy,
    /// Set entries to delete: nothing live is hidden under them.
    delete: Vec<Cidr>,
    /// Set entries whose hidden API/peer entry comes back in their place.
    restore: Vec<(Cidr, Shadowed)>,
    /// Set entries moving to another file.
    retag: Vec<(Cidr, u32)>,
    /// New set entries where there is no entry.
    insert: Vec<(Cidr, u32)>,
    /// New set entries over an API/peer entry, which is kept aside.
    cover: Vec<(Cidr, u32)>,
}

impl Firewall {
    /// Makes the set entries of both policies what `target` says, ignore
    /// first (anti-lock-out), and returns what changed. A capacity error
    /// changes nothing; a kernel error stops the reload where it happened.
    pub fn reload_sets(
        &mut self,
        target: &SetsTarget,
        now: u64,
    ) -> (Result<ReloadSummary, WriteError>, Vec<Change>) {
        let steps = [Policy::Ignore, Policy::Drop].map(|p| self.classify(p, target.policy(p), now));
        for step in &steps {
            if let Err(e) = self.check_capacity(step) {
                return (Err(e), Vec::new());
            }
        }
        let mut changes = Vec::new();
        let mut counts = [
            (Policy::Ignore, ReloadCounts::default()),
            (Policy::Drop, ReloadCounts::default()),
        ];
        for (step, (policy, counts)) in steps.into_iter().zip(counts.iter_mut()) {
            let result = self.apply_step(step, target.policy(*policy), now, &mut changes, counts);
            if let Err(e) = result {
                return (Err(e), changes);
            }
        }
        (Ok(counts), changes)
    }

    fn classify(&self, policy: Policy, target: &PolicyTarget, now: u64) -> Step {
        let store = &self.store;
        let plan = set_plan::plan(target, &StoreView { store, policy });
        let mut step = Step {
            policy,
            delete: Vec::new(),
            restore: Vec::new(),
            retag: plan.retag,
            insert: Vec::new(),
            cover: Vec::new(),
        };
        for cidr in plan.remove {
            match store.shadowed(policy, cidr) {
                Some(s) if s.expiration == 0 || s.expiration > now => {
                    step.restore.push((cidr, s.clone()))
                }
                _ => step.delete.push(cidr),
            }
        }
        for (cidr, tag) in plan.add {
            if store.record(policy, cidr).is_some() {
                step.cover.push((cidr, tag));
            } else {
                step.insert.push((cidr, tag));
            }
        }
        step
    }

    /// Whether each family of the policy still fits once the step is done.
    /// Deletes come before inserts, so no intermediate state is larger.
    fn check_capacity(&self, step: &Step) -> Result<(), WriteError> {
        let capacity = self.store.capacity(step.policy);
        for ipv4 in [true, false] {
            let added = step
                .insert
                .iter()
                .filter(|(c, _)| c.is_ipv4() == ipv4)
                .count();
            let deleted = step.delete.iter().filter(|c| c.is_ipv4() == ipv4).count();
            if self.store.family_len(step.policy, ipv4) + added > capacity + deleted {
                return Err(WriteError::Full { max: capacity });
            }
        }
        Ok(())
    }

    /// Applies one policy's step in four phases, each through the
    /// firewall's one write path; a kernel error stops after its phase.
    fn apply_step(
        &mut self,
        step: Step,
        target: &PolicyTarget,
        now: u64,
        changes: &mut Vec<Change>,
        counts: &mut ReloadCounts,
    ) -> Result<(), WriteError> {
        let policy = step.policy;

        // Set lines gone with nothing under them.
        let (written, removed) = self.write_removals(policy, &step.delete);
        for change in &removed {
            // A hidden entry that expired meanwhile goes with it.
            self.store.take_shadow(policy, change.entry.cidr);
        }
        counts.removed += removed.len();
        changes.extend(removed);
        first_error(written)?;

        // Set lines gone with a hidden entry under them: it comes back.
        let (items, stamps) = step
            .restore
            .into_iter()
            .map(|(cidr, hidden)| {
                let item = NewEntry {
                    cidr,
                    tag: hidden.tag,
                    expiration: hidden.expiration,
                    metadata: None,
                };
                (item, (hidden.creation, hidden.origin))
            })
            .unzip();
        let restore = Puts {
            items,
            stamp: Stamp::Each(stamps),
            replaced_as: ChangeKind::Removed,
            put_as: ChangeKind::Restored,
        };
        let (written, restored) = self.write_puts(policy, restore, false);
        for change in restored.iter().filter(|c| c.kind == ChangeKind::Restored) {
            self.store.take_shadow(policy, change.entry.cidr);
            counts.removed += 1;
            counts.restored += 1;
        }
        changes.extend(restored);
        first_error(written)?;

        // Set entries moving to another file.
        let retag = set_puts(&step.retag, target, now, ChangeKind::Removed);
        let (written, retagged) = self.write_puts(policy, retag, false);
        counts.updated += retagged
            .iter()
            .filter(|c| c.kind == ChangeKind::Added)
            .count();
        changes.extend(retagged);
        first_error(written)?;

        // New set lines, over an API or peer entry (hidden) or not.
        let new: Vec<(Cidr, u32)> = step.cover.into_iter().chain(step.insert).collect();
        let new = set_puts(&new, target, now, ChangeKind::Hidden);
        let (written, added) = self.write_puts(policy, new, false);
        for change in &added {
            match change.kind {
                ChangeKind::Hidden => {
                    let hidden = change.entry.clone();
                    let shadow = Shadowed {
                        tag: hidden.tag,
                        creation: hidden.creation,
                        expiration: hidden.expiration,
                        origin: hidden.origin,
                    };
                    self.store.shadow(policy, hidden.cidr, shadow);
                }
                _ => counts.created += 1,
            }
        }
        changes.extend(added);
        first_error(written)
    }
}

/// Set entries of the target's tags, never expiring; an entry one
/// replaces, if any, is published as `replaced_as`.
fn set_puts(
    lines: &[(Cidr, u32)],
    target: &PolicyTarget,
    now: u64,
    replaced_as: ChangeKind,
) -> Puts {
    let items = lines
        .iter()
        .map(|&(cidr, t)| NewEntry {
            cidr,
            tag: target.tag(t).to_string(),
            expiration: 0,
            metadata: None,
        })
        .collect();
    Puts {
        items,
        stamp: Stamp::Same {
            creation: now,
            origin: Origin::Set,
        },
        replaced_as,
        put_as: ChangeKind::Added,
    }
}

fn first_error(written: Vec<Result<(), WriteError>>) -> Result<(), WriteError> {
    written
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}
