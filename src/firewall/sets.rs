//! Applying a set reload to the store and the kernel maps.
//!
//! The target comes whole; only its difference with the current set entries
//! is written. Capacity is checked for both policies before anything is
//! written, so a reload that would not fit changes nothing. Each kernel write
//! is recorded in the store only once the kernel took it, so store and maps
//! agree even if the kernel fails half-way.

use couic_common::{Cidr, Policy};

use super::set_plan::{self, Existing, PolicyTarget, ReloadCounts, ReloadSummary, SetsTarget};
use super::{Change, ChangeKind, Firewall, WriteError};
use crate::origin::OriginId;
use crate::store::{EntryStore, Record, Shadowed, StoredEntry};
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

    fn apply_step(
        &mut self,
        step: Step,
        target: &PolicyTarget,
        now: u64,
        changes: &mut Vec<Change>,
        counts: &mut ReloadCounts,
    ) -> Result<(), WriteError> {
        let policy = step.policy;
        let mut first_error: Option<WriteError> = None;

        let written = self.write(policy, &step.delete, None);
        for (&cidr, w) in step.delete.iter().zip(written) {
            match w {
                Ok(()) => {
                    let entry = self
                        .store
                        .remove(policy, cidr)
                        .expect("a set entry of the plan");
                    // A hidden entry that expired meanwhile goes with it.
                    self.store.take_shadow(policy, cidr);
                    changes.push(change(ChangeKind::Removed, policy, entry));
                    counts.removed += 1;
                }
                Err(e) => keep_first(&mut first_error, e),
            }
        }
        fail_on(&mut first_error)?;

        let items: Vec<(Cidr, &str)> = step
            .restore
            .iter()
            .map(|(c, s)| (*c, s.tag.as_str()))
            .collect();
        for ((cidr, hidden), r) in step.restore.iter().zip(self.upsert(policy, &items)) {
            match r {
                Ok(tag) => {
                    let record = Record {
                        creation: hidden.creation,
                        expiration: hidden.expiration,
                        tag,
                        origin: self.store.origin_id(&hidden.origin),
                    };
                    let kinds = [ChangeKind::Removed, ChangeKind::Restored];
                    self.replace(policy, *cidr, record, kinds, changes);
                    self.store.take_shadow(policy, *cidr);
                    counts.removed += 1;
                    counts.restored += 1;
                }
                Err(e) => keep_first(&mut first_error, e),
            }
        }
        fail_on(&mut first_error)?;

        let items: Vec<(Cidr, &str)> = step
            .retag
            .iter()
            .map(|&(c, t)| (c, target.tag(t)))
            .collect();
        for (&(cidr, _), r) in step.retag.iter().zip(self.upsert(policy, &items)) {
            match r {
                Ok(tag) => {
                    let record = Record {
                        creation: now,
                        expiration: 0,
                        tag,
                        origin: OriginId::SET,
                    };
                    let kinds = [ChangeKind::Removed, ChangeKind::Added];
                    self.replace(policy, cidr, record, kinds, changes);
                    counts.updated += 1;
                }
                Err(e) => keep_first(&mut first_error, e),
            }
        }
        fail_on(&mut first_error)?;

        let new: Vec<(Cidr, u32)> = step.cover.into_iter().chain(step.insert).collect();
        let items: Vec<(Cidr, &str)> = new.iter().map(|&(c, t)| (c, target.tag(t))).collect();
        for (&(cidr, _), r) in new.iter().zip(self.upsert(policy, &items)) {
            match r {
                Ok(tag) => {
                    let record = Record {
                        creation: now,
                        expiration: 0,
                        tag,
                        origin: OriginId::SET,
                    };
                    if self.store.record(policy, cidr).is_some() {
                        let kinds = [ChangeKind::Hidden, ChangeKind::Added];
                        let hidden = self.replace(policy, cidr, record, kinds, changes);
                        let shadow = Shadowed {
                            tag: hidden.tag,
                            creation: hidden.creation,
                            expiration: hidden.expiration,
                            origin: hidden.origin,
                        };
                        self.store.shadow(policy, cidr, shadow);
                    } else {
                        self.store.insert(policy, cidr, record);
                        changes.push(change(
                            ChangeKind::Added,
                            policy,
                            self.store.view(policy, cidr, &record),
                        ));
                    }
                    counts.created += 1;
                }
                Err(e) => keep_first(&mut first_error, e),
            }
        }
        fail_on(&mut first_error)
    }

    /// Writes each CIDR with its tag's counter slot (inserting or replacing
    /// the kernel value). Per item: the tag reference now held, or the error
    /// (no reference held).
    fn upsert(&mut self, policy: Policy, items: &[(Cidr, &str)]) -> Vec<Result<TagId, WriteError>> {
        let acquired = self.acquire_tags(policy, items.iter().map(|&(_, tag)| tag));
        let slots: Vec<u32> = acquired.iter().map(|a| a.slot).collect();
        let cidrs: Vec<Cidr> = items.iter().map(|(c, _)| *c).collect();
        let written = self.write(policy, &cidrs, Some(&slots));
        written
            .into_iter()
            .zip(acquired)
            .map(|(w, a)| match w {
                Ok(()) => Ok(a.id),
                Err(e) => {
                    self.store.tags_mut(policy).release(a.id);
                    Err(e)
                }
            })
            .collect()
    }

    /// Puts `record` in the place of the entry at `cidr` (already rewritten
    /// in the kernel), publishes both sides as `kinds` (what became of the
    /// old entry, then how the new one came) and returns the replaced entry.
    fn replace(
        &mut self,
        policy: Policy,
        cidr: Cidr,
        record: Record,
        kinds: [ChangeKind; 2],
        changes: &mut Vec<Change>,
    ) -> StoredEntry {
        let old = self
            .store
            .insert(policy, cidr, record)
            .expect("replaces an existing entry");
        let old_entry = self.store.view(policy, cidr, &old);
        self.store.tags_mut(policy).release(old.tag);
        changes.push(change(kinds[0], policy, old_entry.clone()));
        changes.push(change(
            kinds[1],
            policy,
            self.store.view(policy, cidr, &record),
        ));
        old_entry
    }
}

fn change(kind: ChangeKind, policy: Policy, entry: StoredEntry) -> Change {
    Change {
        seq: 0,
        kind,
        policy,
        entry,
        metadata: None,
    }
}

fn keep_first(first: &mut Option<WriteError>, e: WriteError) {
    first.get_or_insert(e);
}

fn fail_on(first: &mut Option<WriteError>) -> Result<(), WriteError> {
    first.take().map_or(Ok(()), Err)
}
