//! This node's side of the fleet as the write path sees it: its changes
//! queued for the bucket ([`Outbox`]) and the [`Gate`] every word of the
//! bucket passes before it is applied.
//!
//! The MapWriter calls [`Local::changed`] when it publishes a change, and
//! [`Local::admit`] and [`Local::acked`] when it applies words: all three
//! on its one thread, so that a local change and a word of the same key
//! are put in order by the MapWriter itself. (Were the gate kept by the
//! sync task, a word could pass it between an API change being applied
//! and being registered, and undo that change on this node only.) The
//! sync task takes from the outbox what to send.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use couic_common::{Cidr, Policy};

use super::gate::Gate;
use super::lapsed::Lapsed;
use super::outbox::{Op, Outbox, Pending};
use super::status::FleetCounters;
use super::value::{Value, Word};
use crate::firewall::fleet::FleetOp;
use crate::firewall::{Change, ChangeKind};
use crate::origin::Origin;
use crate::store::StoredEntry;

/// Operations for each policy, drop first.
pub type PolicyOps = [Vec<FleetOp>; 2];

/// What the outbox and the gate know a key by: its policy and CIDR (the
/// bucket's key text is made when a change is sent).
pub type FleetKey = (Policy, Cidr);

pub struct Local {
    pub node: Arc<str>,
    outbox: Mutex<Outbox<FleetKey>>,
    gate: Mutex<Gate<FleetKey>>,
    /// Others' entries expired here, to purge if their writer does not.
    lapsed: Mutex<Lapsed<FleetKey>>,
    /// Keys this node deleted before it last stopped, whose delete may not
    /// have reached the bucket (a crash): checked at the next catch-up.
    suspects: Mutex<HashSet<FleetKey>>,
    /// The origin of each node met, made once.
    origins: Mutex<HashMap<String, Origin>>,
    /// Changes taken from the outbox and not acknowledged yet, and the
    /// keys of the deletes among them.
    in_flight: AtomicUsize,
    deletes_in_flight: Mutex<Vec<FleetKey>>,
    /// The changes dropped from a full outbox when the last reconciliation
    /// listed the entries held (`None` before one): see [`Local::settled`].
    listed_at_drops: Mutex<Option<u64>>,
    /// No API entry is stamped earlier than this: the last mark of
    /// [`super::synced`], which a clock set back must not get under.
    floor: AtomicU64,
    /// Rung when a change is queued.
    pub wake: tokio::sync::Notify,
    pub counters: Arc<FleetCounters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Local {
    pub fn new(node: &str, capacity: usize, counters: Arc<FleetCounters>) -> Self {
        Local {
            node: node.into(),
            outbox: Mutex::new(Outbox::new(capacity)),
            gate: Mutex::new(Gate::default()),
            lapsed: Mutex::new(Lapsed::default()),
            suspects: Mutex::new(HashSet::new()),
            origins: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            deletes_in_flight: Mutex::new(Vec::new()),
            listed_at_drops: Mutex::new(None),
            floor: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            counters,
        }
    }

    /// Changes just applied, caused by `cause`: an API change is queued for
    /// the bucket (and its key gated), an entry this node wrote that
    /// expired is queued for a purge; others are not this node's to write.
    /// Returns the operations of words that waited for a change dropped
    /// from a full outbox, to apply now.
    pub fn changed(&self, cause: &Origin, changes: &[Change]) -> PolicyOps {
        if !matches!(cause, Origin::Api { .. } | Origin::Expiry) {
            return PolicyOps::default();
        }
        let mut released = Vec::new();
        let mut queued = false;
        for change in changes {
            let op = match (cause, change.kind) {
                (Origin::Api { .. }, ChangeKind::Added) => {
                    self.cleared(&(change.policy, change.entry.cidr));
                    Op::Put(Box::new(
                        self.value(&change.entry, change.metadata.as_deref()),
                    ))
                }
                (Origin::Api { .. }, ChangeKind::Removed) => Op::Delete,
                (Origin::Expiry, ChangeKind::Removed) if self.wrote(&change.entry.origin) => {
                    Op::Expired {
                        expiration: change.entry.expiration,
                    }
                }
                (Origin::Expiry, ChangeKind::Removed)
                    if matches!(change.entry.origin, Origin::Fleet { .. }) =>
                {
                    lock(&self.lapsed)
                        .expired((change.policy, change.entry.cidr), change.entry.expiration);
                    continue;
                }
                _ => continue,
            };
            released.extend(self.queue((change.policy, change.entry.cidr), op));
            queued = true;
        }
        if queued {
            self.wake.notify_one();
        }
        self.ops(released)
    }

    /// Queues a put of `entry`, as this node's (the reconciliation).
    pub fn republish(&self, policy: Policy, entry: &StoredEntry) -> PolicyOps {
        let op = Op::Put(Box::new(self.value(entry, None)));
        let released = self.queue((policy, entry.cidr), op);
        self.wake.notify_one();
        self.ops(released.into_iter().collect())
    }

    /// Words of the bucket: the operations of those to apply now (the
    /// others wait for, or are older than, a local change).
    pub fn admit(&self, words: Vec<Word>) -> PolicyOps {
        let mut lapsed = lock(&self.lapsed);
        if !lapsed.is_empty() {
            for word in &words {
                lapsed.forget(&(word.policy, word.cidr));
            }
        }
        drop(lapsed);
        let mut gate = lock(&self.gate);
        let admitted = words
            .into_iter()
            .filter_map(|word| gate.watched(&(word.policy, word.cidr), word))
            .collect();
        drop(gate);
        self.ops(admitted)
    }

    /// Changes of this node's in the bucket: `(key, generation, revision)`.
    /// The operations of the words that waited for them and are newer.
    pub fn acked(&self, acks: &[(FleetKey, u64, u64)]) -> PolicyOps {
        let mut gate = lock(&self.gate);
        let released = acks
            .iter()
            .filter_map(|(key, generation, revision)| gate.acked(key, *generation, *revision))
            .collect();
        drop(gate);
        self.ops(released)
    }

    /// Keys deleted here before the last stop (the state's journals say
    /// so), whose delete may not have reached the bucket.
    pub fn suspect(&self, keys: impl IntoIterator<Item = FleetKey>) {
        lock(&self.suspects).extend(keys);
    }

    /// Whether the bucket's put of `key`, by this node, is one this node
    /// deleted before it last stopped: to delete again, not to apply. Asked
    /// once per key: the answer is forgotten.
    pub fn undone(&self, key: &FleetKey) -> bool {
        lock(&self.suspects).remove(key)
    }

    /// `key` needs no check any more: written since, or seen otherwise in
    /// the bucket.
    pub fn cleared(&self, key: &FleetKey) {
        let mut suspects = lock(&self.suspects);
        if !suspects.is_empty() {
            suspects.remove(key);
        }
    }

    /// The catch-up is over: keys the bucket did not hold need nothing.
    pub fn clear_suspects(&self) {
        lock(&self.suspects).clear();
    }

    /// Others' expired entries still in the bucket by `now`, past their
    /// grace: `max` at most, with their expirations, to purge.
    pub fn lapsed(&self, now: u64, max: usize) -> Vec<(FleetKey, u64)> {
        lock(&self.lapsed).due(now, max)
    }

    /// Up to `max` queued changes, oldest first, now in flight.
    pub fn take(&self, max: usize) -> Vec<Pending<FleetKey>> {
        // Counted in flight under the outbox's lock: [`Local::waiting`]
        // never sees them neither queued nor in flight.
        let mut outbox = lock(&self.outbox);
        let taken = outbox.take(max);
        self.in_flight.store(taken.len(), Ordering::Relaxed);
        drop(outbox);
        *lock(&self.deletes_in_flight) = taken
            .iter()
            .filter(|p| p.op == Op::Delete)
            .map(|p| p.key)
            .collect();
        taken
    }

    /// The changes of the last [`Local::take`] that were not acknowledged.
    pub fn put_back(&self, unsent: Vec<Pending<FleetKey>>) {
        let mut outbox = lock(&self.outbox);
        outbox.put_back(unsent);
        self.in_flight.store(0, Ordering::Relaxed);
        lock(&self.deletes_in_flight).clear();
        self.counters
            .queued
            .store(outbox.len() as u64, Ordering::Relaxed);
    }

    /// The deletes queued or in flight (see [`super::carried`]).
    pub fn deletes(&self) -> Vec<FleetKey> {
        let mut deletes = lock(&self.outbox).deletes();
        let queued: HashSet<FleetKey> = deletes.iter().copied().collect();
        let in_flight = lock(&self.deletes_in_flight);
        deletes.extend(in_flight.iter().filter(|key| !queued.contains(key)));
        deletes
    }

    /// Queues again deletes kept from the last run.
    pub fn carry(&self, keys: Vec<FleetKey>) {
        for key in keys {
            // A dropped change releases nothing here: the gate is empty.
            let _ = self.queue(key, Op::Delete);
        }
        self.wake.notify_one();
    }

    /// Changes queued or in flight.
    pub fn waiting(&self) -> usize {
        let outbox = lock(&self.outbox);
        outbox.len() + self.in_flight.load(Ordering::Relaxed)
    }

    /// The reconciliation lists the entries held (on the MapWriter's
    /// thread): those of this node's the bucket lacks are queued again.
    pub fn listed(&self) {
        *lock(&self.listed_at_drops) = Some(self.counters.dropped.load(Ordering::Relaxed));
    }

    /// Asked on the MapWriter's thread at `now`: whether every API change
    /// applied so far is in the bucket (none queued or in flight, none
    /// dropped since the last reconciliation queued again what the bucket
    /// lacked). If so, entries made before `now` were all acknowledged:
    /// the mark to keep, below which no entry is stamped from now on.
    pub fn settled(&self, now: u64) -> Option<u64> {
        // A drop needs a full outbox: one counted after this reads 0 is
        // seen in `dropped` below.
        let idle = self.waiting() == 0;
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if !idle || *lock(&self.listed_at_drops) != Some(dropped) {
            return None;
        }
        self.floor.fetch_max(now, Ordering::Relaxed);
        Some(now)
    }

    /// The time to stamp an API entry made at `now` with: not before the
    /// last mark, so that an entry made after it is never taken for one
    /// the bucket acknowledged (a clock set back).
    pub fn stamp(&self, now: u64) -> u64 {
        now.max(self.floor.load(Ordering::Relaxed))
    }

    /// The mark kept from the last run (see [`Local::stamp`]).
    pub fn keep_above(&self, before: u64) {
        self.floor.fetch_max(before, Ordering::Relaxed);
    }

    pub fn queued(&self) -> usize {
        lock(&self.outbox).len()
    }

    /// Whether this node wrote an entry of `origin`.
    fn wrote(&self, origin: &Origin) -> bool {
        match origin {
            Origin::Api { .. } => true,
            Origin::Fleet { node } => *node == self.node,
            _ => false,
        }
    }

    fn value(&self, entry: &StoredEntry, metadata: Option<&couic_common::Metadata>) -> Value {
        Value {
            node: self.node.to_string(),
            tag: couic_common::wire_tag(&entry.tag, true),
            creation: entry.creation,
            expiration: entry.expiration,
            metadata: metadata.cloned(),
        }
    }

    /// Queues `op`; the word released if a change was dropped for room.
    fn queue(&self, key: FleetKey, op: Op) -> Option<Word> {
        let local = !matches!(op, Op::Expired { .. });
        let mut outbox = lock(&self.outbox);
        let pushed = outbox.push(key, op);
        let mut gate = lock(&self.gate);
        if let (Some(generation), true) = (pushed.generation, local) {
            gate.local(&key, generation);
        }
        self.counters
            .queued
            .store(outbox.len() as u64, Ordering::Relaxed);
        let dropped = pushed.dropped?;
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if dropped.op == Op::Delete {
            // Its entry is checked at the next catch-up instead.
            lock(&self.suspects).insert(dropped.key);
        }
        gate.abandoned(&dropped.key)
    }

    /// Words as operations, per policy.
    fn ops(&self, words: Vec<Word>) -> PolicyOps {
        let mut ops: PolicyOps = [Vec::new(), Vec::new()];
        if words.is_empty() {
            return ops;
        }
        let mut origins = lock(&self.origins);
        for word in words {
            let op = match word.value {
                Some(v) => {
                    let origin = match origins.get(&v.node) {
                        Some(origin) => origin.clone(),
                        None => {
                            let origin = Origin::fleet(&v.node);
                            origins.insert(v.node.clone(), origin.clone());
                            origin
                        }
                    };
                    FleetOp::Put {
                        creation: v.creation,
                        origin,
                        entry: v.into_entry(word.cidr),
                    }
                }
                None => FleetOp::Delete(word.cidr),
            };
            ops[usize::from(word.policy == Policy::Ignore)].push(op);
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::Cidr;

    fn local() -> Local {
        Local::new("b", 16, Arc::new(FleetCounters::default()))
    }

    fn cidr() -> Cidr {
        "192.0.2.1/32".parse().unwrap()
    }

    fn added(tag: &str) -> Change {
        Change::of(
            ChangeKind::Added,
            Policy::Drop,
            StoredEntry {
                cidr: cidr(),
                tag: tag.into(),
                creation: 1,
                expiration: 0,
                origin: Origin::api("admin"),
            },
        )
    }

    #[test]
    fn a_delete_dropped_from_a_full_outbox_is_checked_at_the_next_catch_up() {
        let l = Local::new("b", 1, Arc::new(FleetCounters::default()));
        let api = Origin::api("admin");
        let mut gone = added("t");
        gone.kind = ChangeKind::Removed;
        l.changed(&api, &[gone]);
        // Another key's change takes the only room: the delete is dropped.
        let mut other = added("u");
        other.entry.cidr = "192.0.2.2/32".parse().unwrap();
        l.changed(&api, &[other]);
        assert_eq!(l.counters.dropped.load(Ordering::Relaxed), 1);
        let key = (Policy::Drop, cidr());
        assert!(l.undone(&key), "the bucket's put of it is to delete");
        assert!(!l.undone(&key), "once");
        // Added again since: nothing to delete.
        l.suspect([key]);
        l.changed(&api, &[added("v")]);
        assert!(!l.undone(&key));
        l.suspect([key]);
        l.clear_suspects();
        assert!(!l.undone(&key));
    }

    fn word(node: &str, tag: &str, revision: u64) -> Word {
        let value = Value {
            node: node.into(),
            tag: Some(tag.into()),
            creation: 1,
            expiration: 0,
            metadata: None,
        };
        Word {
            policy: Policy::Drop,
            cidr: cidr(),
            revision,
            value: Some(value),
        }
    }

    fn tags(ops: &PolicyOps) -> Vec<String> {
        ops[0]
            .iter()
            .map(|op| match op {
                FleetOp::Put { entry, .. } => entry.tag.clone(),
                FleetOp::Delete(_) => "-".into(),
            })
            .collect()
    }

    /// B's API adds X just before A's add of X reaches it; the bucket
    /// orders A's first. B must end on its own (the bucket's last word),
    /// as A does.
    #[test]
    fn a_word_older_than_a_local_change_never_undoes_it() {
        let b = local();
        let ops = b.changed(&Origin::api("admin"), &[added("b")]);
        assert!(tags(&ops).is_empty());
        let sent = b.take(10);
        assert_eq!(sent.len(), 1);
        // A's word (revision 1) comes before B's acknowledgement (2).
        assert!(tags(&b.admit(vec![word("a", "a", 1)])).is_empty());
        let key = sent[0].key;
        assert!(tags(&b.acked(&[(key, sent[0].generation, 2)])).is_empty());
        // B's own word, in place already.
        assert!(tags(&b.admit(vec![word("b", "b", 2)])).is_empty());
        // A later word passes.
        assert_eq!(tags(&b.admit(vec![word("a", "c", 3)])), ["c"]);
    }

    #[test]
    fn a_newer_word_that_waited_is_applied_at_the_acknowledgement() {
        let b = local();
        b.changed(&Origin::api("admin"), &[added("b")]);
        let sent = b.take(10);
        assert!(tags(&b.admit(vec![word("a", "a", 5)])).is_empty());
        let key = sent[0].key;
        assert_eq!(tags(&b.acked(&[(key, sent[0].generation, 4)])), ["a"]);
    }

    #[test]
    fn settled_only_once_listed_with_nothing_waiting_nor_dropped_since() {
        let l = Local::new("b", 1, Arc::new(FleetCounters::default()));
        let api = Origin::api("admin");
        assert_eq!(l.settled(100), None, "no reconciliation yet");
        l.listed();
        assert_eq!(l.settled(100), Some(100));
        l.changed(&api, &[added("t")]);
        assert_eq!(l.settled(101), None, "queued");
        assert_eq!(l.take(10).len(), 1);
        assert_eq!(l.settled(101), None, "in flight");
        l.put_back(Vec::new());
        assert_eq!(l.settled(102), Some(102), "acknowledged");
        // Two changes for a room of one: one dropped, never to be taken
        // for one in the bucket until a reconciliation wrote it again.
        let mut other = added("u");
        other.entry.cidr = "192.0.2.2/32".parse().unwrap();
        l.changed(&api, &[added("v"), other]);
        assert_eq!(l.take(10).len(), 1);
        l.put_back(Vec::new());
        assert_eq!(l.waiting(), 0);
        assert_eq!(l.settled(103), None, "dropped since the listing");
        l.listed();
        assert_eq!(l.settled(104), Some(104));
    }

    #[test]
    fn no_entry_is_stamped_before_the_last_mark() {
        let l = local();
        l.keep_above(500);
        assert_eq!(l.stamp(400), 500, "a clock set back");
        assert_eq!(l.stamp(600), 600);
        l.listed();
        assert_eq!(l.settled(700), Some(700));
        assert_eq!(l.stamp(650), 700);
    }

    #[test]
    fn only_api_changes_and_this_nodes_expiries_are_queued() {
        let b = local();
        b.changed(&Origin::fleet("a"), &[added("x")]);
        b.changed(&Origin::Set, &[added("x")]);
        assert_eq!(b.waiting(), 0);
        let mut gone = added("x");
        gone.kind = ChangeKind::Removed;
        gone.entry.origin = Origin::fleet("a");
        b.changed(&Origin::Expiry, std::slice::from_ref(&gone));
        assert_eq!(b.waiting(), 0, "another node's entry is its to purge");
        gone.entry.origin = Origin::fleet("b");
        b.changed(&Origin::Expiry, &[gone]);
        assert_eq!(b.take(10)[0].op, Op::Expired { expiration: 0 });
    }
}
