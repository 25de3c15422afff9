//! Peer sync (§10): which changes make a peer job, the bounded queue of one
//! peer, cut into batches, and its status. Plain structs; the
//! PeerBroadcaster actor (`actors/peer_broadcaster.rs`) drives them and
//! `link` talks to the peer.

pub mod link;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use couic_common::{Cidr, PeerAction, PeerEntry, PeerJob, PeerState, PeerStatus, Policy};

use crate::firewall::{ChangeKind, Changed};
use crate::hash::KeyedState;
use crate::origin::Origin;

/// Jobs per POST at most. A job takes at most about 210 bytes (an IPv6
/// CIDR, a 64-character tag): 4,096 stay under 1 MiB, nginx's default
/// `client_max_body_size` in front of the peer, and its 2 MiB limit.
pub const MAX_BATCH: usize = 4_096;

/// One job waiting for a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub action: PeerAction,
    pub cidr: Cidr,
    /// "" when untagged.
    pub tag: Arc<str>,
    pub expiration: u64,
}

impl Job {
    /// The wire form (§3.4): an untagged add says `null`, a remove carries
    /// the stored tag (`""` when untagged) as the reference; metadata is
    /// never forwarded.
    pub fn to_wire(&self) -> PeerJob {
        let tag = couic_common::wire_tag(&self.tag, self.action == PeerAction::Add);
        PeerJob {
            action: self.action,
            entry: PeerEntry {
                cidr: self.cidr.to_string(),
                tag,
                expiration: self.expiration,
                metadata: None,
            },
        }
    }
}

/// The jobs an event makes: API adds and removes only. Changes from a peer
/// are not sent on (no loops), nor set changes (node-local) or expiries
/// (expirations are absolute: every node expires on its own).
pub fn jobs_of(event: &Changed) -> impl Iterator<Item = (Policy, Job)> + '_ {
    let api = matches!(event.origin, Origin::Api { .. });
    // A run of equal tags (a bulk request carries one) shares one, and
    // untagged entries (most) share one for good.
    static UNTAGGED: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
    let mut last: Option<Arc<str>> = None;
    event
        .changes
        .iter()
        .filter(move |_| api)
        .filter_map(move |c| {
            let action = match c.kind {
                ChangeKind::Added => PeerAction::Add,
                ChangeKind::Removed => PeerAction::Remove,
                ChangeKind::Hidden | ChangeKind::Restored => return None,
            };
            let job = Job {
                action,
                cidr: c.entry.cidr,
                tag: match &last {
                    _ if c.entry.tag.is_empty() => UNTAGGED.clone(),
                    Some(t) if **t == *c.entry.tag => t.clone(),
                    _ => last.insert(Arc::from(c.entry.tag.as_str())).clone(),
                },
                expiration: c.entry.expiration,
            };
            Some((c.policy, job))
        })
}

/// A batch handed out for sending; it stays the queue's until settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub policy: Policy,
    pub jobs: Arc<Vec<Job>>,
}

/// The jobs of one policy, in the order applied. A cancelled job leaves a
/// hole (`None`) rather than shifting the others.
#[derive(Debug)]
struct PolicyQueue {
    slots: VecDeque<Option<Job>>,
    /// The position of `slots[0]` since the queue was made.
    base: u64,
    /// Jobs in `slots` that are not holes.
    live: usize,
    /// Per CIDR, the position of its last job still waiting (empty while
    /// merges are held).
    last: HashMap<Cidr, u64, KeyedState>,
    merging: bool,
    pending: Option<Arc<Vec<Job>>>,
}

impl Default for PolicyQueue {
    fn default() -> Self {
        PolicyQueue {
            slots: VecDeque::new(),
            base: 0,
            live: 0,
            last: HashMap::default(),
            merging: true,
            pending: None,
        }
    }
}

impl PolicyQueue {
    fn len(&self) -> usize {
        self.live + self.pending.as_ref().map_or(0, |p| p.len())
    }

    /// Queues `job`. An add still waiting followed by a remove of the same
    /// CIDR cancel out: the receiver ends the same either way (absent), and
    /// no job on another CIDR moves.
    fn push(&mut self, job: Job) {
        if job.action == PeerAction::Remove {
            if let Some(&at) = self.last.get(&job.cidr) {
                let slot = &mut self.slots[(at - self.base) as usize];
                if slot.as_ref().is_some_and(|j| j.action == PeerAction::Add) {
                    *slot = None;
                    self.live -= 1;
                    self.last.remove(&job.cidr);
                    return;
                }
            }
        }
        let at = self.base + self.slots.len() as u64;
        if self.merging {
            self.last.insert(job.cidr, at);
        }
        self.slots.push_back(Some(job));
        self.live += 1;
    }

    /// The batch being sent, or the next one cut from the head.
    fn next_batch(&mut self, max: usize) -> Option<Arc<Vec<Job>>> {
        if let Some(pending) = &self.pending {
            return Some(Arc::clone(pending));
        }
        let mut jobs = Vec::new();
        while jobs.len() < max {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            let at = self.base;
            self.base += 1;
            if let Some(job) = slot {
                if self.last.get(&job.cidr) == Some(&at) {
                    self.last.remove(&job.cidr);
                }
                self.live -= 1;
                jobs.push(job);
            }
        }
        if jobs.is_empty() {
            return None;
        }
        let jobs = Arc::new(jobs);
        self.pending = Some(Arc::clone(&jobs));
        Some(jobs)
    }

    fn clear(&mut self) {
        self.base += self.slots.len() as u64;
        self.slots.clear();
        self.last.clear();
        self.live = 0;
        self.pending = None;
    }
}

/// The jobs waiting for one peer, bounded. Drop and ignore jobs go to
/// their own routes, each policy in the order its changes were applied.
#[derive(Debug)]
pub struct PeerQueue {
    capacity: usize,
    max_batch: usize,
    drop: PolicyQueue,
    ignore: PolicyQueue,
}

impl PeerQueue {
    pub fn new(capacity: usize, max_batch: usize) -> Self {
        PeerQueue {
            capacity,
            max_batch: max_batch.max(1),
            drop: PolicyQueue::default(),
            ignore: PolicyQueue::default(),
        }
    }

    fn of(&mut self, policy: Policy) -> &mut PolicyQueue {
        match policy {
            Policy::Drop => &mut self.drop,
            Policy::Ignore => &mut self.ignore,
        }
    }

    /// Jobs held, the batches being sent included.
    /// Whether a whole batch waits: it goes without waiting for the tick.
    pub fn has_full_batch(&self) -> bool {
        self.len() >= self.max_batch
    }

    pub fn len(&self) -> usize {
        self.drop.len() + self.ignore.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues the jobs of an event. On overflow every job is dropped (the
    /// peer is then behind and needs a resync): returns how many.
    pub fn push_event(&mut self, event: &Changed) -> Option<u64> {
        for (i, (policy, job)) in jobs_of(event).enumerate() {
            if self.len() >= self.capacity {
                // The rest of this event is lost as well: count it too.
                let rest = (jobs_of(event).count() - i) as u64;
                let dropped = self.len() as u64 + rest;
                self.clear();
                return Some(dropped);
            }
            self.of(policy).push(job);
        }
        None
    }

    /// The batch to send: the one being retried first, drop jobs before
    /// ignore jobs (the two policies are independent stores).
    pub fn next_batch(&mut self) -> Option<Batch> {
        let max = self.max_batch;
        for policy in [Policy::Drop, Policy::Ignore] {
            if let Some(jobs) = self.of(policy).pending.clone() {
                return Some(Batch { policy, jobs });
            }
        }
        for policy in [Policy::Drop, Policy::Ignore] {
            if let Some(jobs) = self.of(policy).next_batch(max) {
                return Some(Batch { policy, jobs });
            }
        }
        None
    }

    /// The batch of `policy` was delivered: forget it. Returns its size (0
    /// when the queue was dropped meanwhile).
    pub fn settle(&mut self, policy: Policy) -> usize {
        self.of(policy).pending.take().map_or(0, |p| p.len())
    }

    /// No job already queued is cancelled by a later one, and while
    /// `hold`, none at all. A resync sends the peer a snapshot that may hold
    /// what an add still queued adds: a remove queued later must then reach
    /// it. So merges are held from the start of a resync to its end, and
    /// what was queued until then is sealed.
    pub fn hold_merges(&mut self, hold: bool) {
        for q in [&mut self.drop, &mut self.ignore] {
            q.last.clear();
            q.merging = !hold;
        }
    }

    /// Drops every job (the peer is behind).
    pub fn clear(&mut self) {
        self.drop.clear();
        self.ignore.clear();
    }
}

/// A peer's status, shared with the API (`/v1/peers`, metrics).
#[derive(Debug)]
pub struct PeerCounters {
    pub name: String,
    pub url: String,
    state: AtomicU8,
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub shards_resynced: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Unix seconds; 0 before the first.
    pub last_success: AtomicU64,
    last_error: Mutex<Option<(String, u64)>>,
}

impl PeerCounters {
    pub fn new(name: &str, url: &str) -> Self {
        PeerCounters {
            name: name.into(),
            url: url.into(),
            state: AtomicU8::new(0),
            queued: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            shards_resynced: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn set_state(&self, state: PeerState) {
        let n = match state {
            PeerState::Ok => 0,
            PeerState::Retrying => 1,
            PeerState::Behind => 2,
            PeerState::Resyncing => 3,
        };
        self.state.store(n, Ordering::Relaxed);
    }

    pub fn state(&self) -> PeerState {
        match self.state.load(Ordering::Relaxed) {
            0 => PeerState::Ok,
            1 => PeerState::Retrying,
            2 => PeerState::Behind,
            _ => PeerState::Resyncing,
        }
    }

    pub fn failed(&self, reason: &str, now: u64) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((reason.into(), now));
    }

    pub fn read(&self) -> PeerStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last = get(&self.last_success);
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        PeerStatus {
            name: self.name.clone(),
            url: self.url.clone(),
            state: self.state(),
            queued: get(&self.queued),
            jobs_sent: get(&self.sent),
            jobs_dropped: get(&self.dropped),
            shards_resynced: get(&self.shards_resynced),
            last_success: (last > 0).then_some(last),
            last_error_at: error.as_ref().map(|e| e.1),
            last_error: error.map(|e| e.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::Change;
    use crate::store::StoredEntry;

    fn change(kind: ChangeKind, policy: Policy, cidr: &str) -> Change {
        Change {
            seq: 0,
            kind,
            policy,
            entry: StoredEntry {
                cidr: cidr.parse().unwrap(),
                tag: "t".into(),
                creation: 1,
                expiration: 0,
                origin: Origin::api("admin"),
            },
            metadata: None,
        }
    }

    fn event(origin: Origin, changes: Vec<Change>) -> Changed {
        Changed {
            origin,
            changes: Arc::new(changes),
        }
    }

    fn api(changes: &[(ChangeKind, &str)]) -> Changed {
        let changes = changes
            .iter()
            .map(|(k, c)| change(*k, Policy::Drop, c))
            .collect();
        event(Origin::api("admin"), changes)
    }

    fn flat(batch: &Batch) -> Vec<(PeerAction, String)> {
        batch
            .jobs
            .iter()
            .map(|j| (j.action, j.cidr.to_string()))
            .collect()
    }

    use ChangeKind::{Added as A, Removed as R};
    use PeerAction::{Add, Remove};

    #[test]
    fn only_api_adds_and_removes_become_jobs() {
        let mut q = PeerQueue::new(100, 100);
        for origin in [Origin::peer("b"), Origin::Set, Origin::Expiry] {
            q.push_event(&event(origin, vec![change(A, Policy::Drop, "10.0.0.1/32")]));
        }
        q.push_event(&event(
            Origin::api("a"),
            vec![
                change(ChangeKind::Hidden, Policy::Drop, "10.0.0.2/32"),
                change(A, Policy::Ignore, "10.0.0.3/32"),
            ],
        ));
        assert_eq!(q.len(), 1);
        let batch = q.next_batch().unwrap();
        assert_eq!(batch.policy, Policy::Ignore, "ignore stays ignore");
        // Wire form: an untagged add says null; metadata is never sent.
        let wire = serde_json::to_value(batch.jobs[0].to_wire()).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"action": "add", "entry": {"cidr": "10.0.0.3/32", "tag": "t", "expiration": 0, "metadata": null}})
        );
    }

    #[test]
    fn order_is_kept_and_only_add_then_remove_cancels() {
        let mut q = PeerQueue::new(100, 100);
        q.push_event(&api(&[
            (A, "10.0.0.1/32"),
            (A, "10.0.0.2/32"),
            (R, "10.0.0.1/32"),
            (A, "10.0.0.1/32"),
            (R, "10.0.0.3/32"),
            (A, "10.0.0.3/32"),
            (A, "10.0.0.4/32"),
        ]));
        let batch = q.next_batch().unwrap();
        assert_eq!(
            flat(&batch),
            [
                (Add, "10.0.0.2/32".into()),
                (Add, "10.0.0.1/32".into()),
                (Remove, "10.0.0.3/32".into()),
                (Add, "10.0.0.3/32".into()),
                (Add, "10.0.0.4/32".into()),
            ],
            "a remove then an add is kept: their end state differs from the add alone on a strict receiver"
        );
        // An add already handed out is not cancelled by a later remove.
        q.push_event(&api(&[(R, "10.0.0.4/32")]));
        assert_eq!(q.next_batch().unwrap(), batch, "the batch is retried whole");
        assert_eq!(q.len(), 6);
        assert_eq!(q.settle(Policy::Drop), 5);
        assert_eq!(
            flat(&q.next_batch().unwrap()),
            [(Remove, "10.0.0.4/32".into())]
        );
    }

    #[test]
    fn batches_are_cut_and_policies_kept_apart() {
        let mut q = PeerQueue::new(100, 2);
        q.push_event(&event(
            Origin::api("a"),
            vec![
                change(A, Policy::Ignore, "10.0.0.9/32"),
                change(A, Policy::Drop, "10.0.0.1/32"),
                change(A, Policy::Drop, "10.0.0.2/32"),
                change(A, Policy::Drop, "10.0.0.3/32"),
            ],
        ));
        let mut seen = Vec::new();
        while let Some(b) = q.next_batch() {
            seen.push((b.policy, b.jobs.len()));
            q.settle(b.policy);
        }
        assert_eq!(
            seen,
            [(Policy::Drop, 2), (Policy::Drop, 1), (Policy::Ignore, 1)]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn an_overflow_drops_everything_and_says_how_much() {
        let mut q = PeerQueue::new(3, 2);
        assert_eq!(
            q.push_event(&api(&[(A, "10.0.0.1/32"), (A, "10.0.0.2/32")])),
            None
        );
        q.next_batch();
        // The batch being sent holds its room.
        assert_eq!(
            q.push_event(&api(&[(A, "10.0.0.3/32"), (A, "10.0.0.4/32")])),
            Some(4)
        );
        assert!(q.is_empty());
        assert!(q.next_batch().is_none());
        assert_eq!(q.settle(Policy::Drop), 0, "the batch in flight is gone too");
        // Bounded from then on as well.
        for i in 0..10 {
            q.push_event(&api(&[(A, &format!("10.1.0.{i}/32"))]));
            assert!(q.len() <= 3);
        }
    }

    #[test]
    fn a_full_batch_of_the_largest_jobs_stays_under_one_mib() {
        let job = Job {
            action: PeerAction::Remove,
            cidr: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"
                .parse()
                .unwrap(),
            tag: Arc::from("t".repeat(couic_common::tag::TAG_MAX_LEN).as_str()),
            expiration: u64::MAX,
        };
        let wire: Vec<PeerJob> = vec![job.to_wire(); MAX_BATCH];
        let body = serde_json::to_vec(&wire).unwrap();
        assert!(body.len() < 1 << 20, "{} bytes", body.len());
    }

    #[test]
    fn no_merge_across_a_resync() {
        let mut q = PeerQueue::new(100, 100);
        q.push_event(&api(&[(A, "10.0.0.1/32")]));
        q.hold_merges(true);
        q.push_event(&api(&[(R, "10.0.0.1/32"), (A, "10.0.0.2/32")]));
        q.hold_merges(false);
        q.push_event(&api(&[
            (R, "10.0.0.2/32"),
            (A, "10.0.0.3/32"),
            (R, "10.0.0.3/32"),
        ]));
        assert_eq!(
            flat(&q.next_batch().unwrap()),
            [
                (Add, "10.0.0.1/32".into()),
                (Remove, "10.0.0.1/32".into()),
                (Add, "10.0.0.2/32".into()),
                (Remove, "10.0.0.2/32".into()),
            ],
            "only jobs queued after the resync cancel out"
        );
    }
}
