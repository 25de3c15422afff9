//! Webhook reports (§11): which changes make a report, and the bounded
//! queue they wait in, cut into batches. Plain structs; the Reporter actor
//! (`actors/reporter.rs`) drives them and `delivery` sends the batches.

pub mod delivery;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use couic_common::{Cidr, Entry, Metadata, Policy, Report, ReportAction, ReportStats};

use crate::config::ReportEvent;
use crate::firewall::{Change, ChangeKind, Changed};
use crate::origin::Origin;

/// A POST body holds at most this many bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The metadata of an expiry report, as the public reporting documentation
/// shows it.
pub fn expired_metadata() -> Metadata {
    Metadata {
        kind: "expired".into(),
        detail: "Rule expired".into(),
        extra: None,
    }
}

/// The class of changes an event's cause belongs to.
fn event_class(cause: &Origin) -> ReportEvent {
    match cause {
        Origin::Api { .. } => ReportEvent::Api,
        // Another node's change, as a peer's is.
        Origin::Peer { .. } | Origin::Fleet { .. } => ReportEvent::Peer,
        Origin::Set => ReportEvent::Sets,
        Origin::Expiry => ReportEvent::Expiry,
    }
}

/// One report waiting, compact: no allocation but a shared tag and, rarely,
/// metadata. 65,536 of them take about 5 MB.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub seq: u64,
    pub action: ReportAction,
    pub policy: Policy,
    pub cidr: Cidr,
    /// "" when untagged: an add reports it as `null`, a remove as `""`.
    pub tag: Arc<str>,
    pub creation: u64,
    pub expiration: u64,
    pub metadata: Option<Box<Metadata>>,
}

impl Queued {
    /// The wire form (§3.5).
    pub fn to_report(&self) -> Report {
        let tag = couic_common::wire_tag(&self.tag, self.action == ReportAction::Add);
        Report {
            action: self.action,
            policy: self.policy,
            entry: Entry {
                creation: self.creation,
                cidr: self.cidr.to_string(),
                tag,
                expiration: self.expiration,
            },
            metadata: self.metadata.as_deref().cloned(),
        }
    }

    /// An upper bound of its compact JSON size, to cut batches under
    /// [`MAX_BODY_BYTES`] before serialising them.
    fn size_bound(&self) -> usize {
        // Keys, punctuation, numbers and the longest CIDR text.
        const FIXED: usize = 200;
        // A string may grow sixfold when escaped (`\u00XX`).
        let metadata = self.metadata.as_deref().map_or(0, |m| {
            let extra = m
                .extra
                .as_ref()
                .map_or(0, |e| serde_json::to_string(e).map_or(0, |s| s.len()));
            6 * (m.kind.len() + m.detail.len()) + 6 * extra + 64
        });
        FIXED + 6 * self.tag.len() + metadata
    }
}

/// The Reporter's counters, shared with the API (`/v1/stats`, metrics).
#[derive(Debug, Default)]
pub struct ReportCounters {
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_refused: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Unix seconds of the last delivery; 0 before the first.
    pub last_success: AtomicU64,
}

impl ReportCounters {
    pub fn read(&self, now: u64) -> ReportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last = get(&self.last_success);
        ReportStats {
            queued: get(&self.queued),
            sent: get(&self.sent),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_refused: get(&self.dropped_refused),
            failed_attempts: get(&self.failed_attempts),
            seconds_since_success: (last > 0).then(|| now.saturating_sub(last)),
        }
    }
}

/// What the queue counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub accepted: u64,
    /// Dropped because the queue was full: the newest report goes.
    pub dropped_full: u64,
}

/// A batch handed out for delivery; it stays the queue's until acknowledged
/// or dropped, and counts against its capacity meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The same on every attempt: `X-Couic-Batch`.
    pub id: String,
    pub reports: Arc<Vec<Queued>>,
}

/// Reports waiting, in the order the changes were applied, bounded.
#[derive(Debug)]
pub struct ReportQueue {
    events: HashSet<ReportEvent>,
    capacity: usize,
    max_batch: usize,
    waiting: VecDeque<Queued>,
    /// Handed out, not yet delivered or dropped.
    pending: Option<Batch>,
    /// The last tag seen, shared by the reports that follow with the same.
    last_tag: Arc<str>,
    counts: QueueCounts,
}

impl ReportQueue {
    pub fn new(events: &[ReportEvent], capacity: usize, max_batch: usize) -> Self {
        ReportQueue {
            events: events.iter().copied().collect(),
            capacity,
            max_batch: max_batch.max(1),
            waiting: VecDeque::new(),
            pending: None,
            last_tag: Arc::from(""),
            counts: QueueCounts::default(),
        }
    }

    /// Reports held, the pending batch included.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.pending.as_ref().map_or(0, |b| b.reports.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The seq of the newest report waiting, if any.
    pub fn last_waiting_seq(&self) -> Option<u64> {
        self.waiting.back().map(|q| q.seq)
    }

    /// Whether reports up to `seq` still wait.
    pub fn waits_for(&self, seq: u64) -> bool {
        self.waiting.front().is_some_and(|q| q.seq <= seq)
    }

    /// Whether a whole batch waits: it goes without waiting for the tick.
    pub fn has_full_batch(&self) -> bool {
        self.waiting.len() >= self.max_batch
    }

    pub fn counts(&self) -> QueueCounts {
        self.counts
    }

    /// Queues the reports an event makes, if its class is reported. Returns
    /// how many were dropped for want of room.
    pub fn push_event(&mut self, event: &Changed) -> u64 {
        let class = event_class(&event.origin);
        if !self.events.contains(&class) {
            return 0;
        }
        let mut dropped = 0;
        for change in event.changes.iter() {
            if let Some(action) = action_of(change.kind) {
                if self.len() >= self.capacity {
                    dropped += 1;
                    continue;
                }
                let queued = self.queued(change, action, class);
                self.waiting.push_back(queued);
                self.counts.accepted += 1;
            }
        }
        self.counts.dropped_full += dropped;
        dropped
    }

    fn queued(&mut self, change: &Change, action: ReportAction, class: ReportEvent) -> Queued {
        let e = &change.entry;
        if *self.last_tag != *e.tag {
            self.last_tag = Arc::from(e.tag.as_str());
        }
        let metadata = match (action, class) {
            (ReportAction::Remove, ReportEvent::Expiry) => Some(Box::new(expired_metadata())),
            // An API delete carries no metadata (§11.3).
            (ReportAction::Remove, _) => None,
            (ReportAction::Add, _) => change.metadata.clone(),
        };
        Queued {
            seq: change.seq,
            action,
            policy: change.policy,
            cidr: e.cidr,
            tag: self.last_tag.clone(),
            creation: e.creation,
            expiration: e.expiration,
            metadata,
        }
    }

    /// The batch to send: the pending one again, or the oldest waiting
    /// reports, at most `max_batch` of them and [`MAX_BODY_BYTES`] of body.
    pub fn next_batch(&mut self) -> Option<Batch> {
        if self.pending.is_none() && !self.waiting.is_empty() {
            let mut bytes = 2;
            let mut count = 0;
            for q in self.waiting.iter().take(self.max_batch) {
                let size = q.size_bound() + 1;
                if count > 0 && bytes + size > MAX_BODY_BYTES {
                    break;
                }
                bytes += size;
                count += 1;
            }
            let reports: Vec<Queued> = self.waiting.drain(..count).collect();
            self.pending = Some(Batch {
                id: uuid::Uuid::new_v4().to_string(),
                reports: Arc::new(reports),
            });
        }
        self.pending.clone()
    }

    /// The pending batch was delivered (or refused for good): it leaves the
    /// queue. Returns how many reports it held.
    pub fn settle(&mut self) -> usize {
        self.pending.take().map_or(0, |b| b.reports.len())
    }

    /// Everything held, pending batch first, as batches: for the last
    /// flush before stopping.
    pub fn drain_batches(&mut self) -> Vec<Batch> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch() {
            self.settle();
            batches.push(batch);
        }
        batches
    }
}

fn action_of(kind: ChangeKind) -> Option<ReportAction> {
    match kind {
        ChangeKind::Added => Some(ReportAction::Add),
        ChangeKind::Removed => Some(ReportAction::Remove),
        // Set reloads hiding and giving back an entry are not adds or removes.
        ChangeKind::Hidden | ChangeKind::Restored => None,
    }
}

/// The JSON body of a batch: an array of reports, compact.
pub fn body_of(batch: &Batch) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(batch.reports.len() * 160);
    body.push(b'[');
    for (i, q) in batch.reports.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &q.to_report())?;
    }
    body.push(b']');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredEntry;

    fn change(seq: u64, kind: ChangeKind, cidr: &str, tag: &str) -> Change {
        Change {
            seq,
            kind,
            policy: Policy::Drop,
            entry: StoredEntry {
                cidr: cidr.parse().unwrap(),
                tag: tag.into(),
                creation: 100,
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

    fn queue(capacity: usize, max_batch: usize) -> ReportQueue {
        ReportQueue::new(
            &[ReportEvent::Api, ReportEvent::Expiry],
            capacity,
            max_batch,
        )
    }

    #[test]
    fn reports_the_chosen_classes_and_never_hidden_entries() {
        let mut q = queue(100, 100);
        let mut add = change(1, ChangeKind::Added, "10.0.0.1/32", "");
        add.metadata = Some(Box::new(Metadata {
            kind: "ban".into(),
            detail: "ssh".into(),
            extra: None,
        }));
        q.push_event(&event(Origin::api("a"), vec![add]));
        q.push_event(&event(
            Origin::peer("b"),
            vec![change(2, ChangeKind::Added, "10.0.0.2/32", "")],
        ));
        q.push_event(&event(
            Origin::Set,
            vec![
                change(3, ChangeKind::Hidden, "10.0.0.1/32", ""),
                change(4, ChangeKind::Added, "10.0.0.1/32", "s.couic"),
            ],
        ));
        q.push_event(&event(
            Origin::Expiry,
            vec![change(5, ChangeKind::Removed, "10.0.0.3/32", "")],
        ));
        q.push_event(&event(
            Origin::api("a"),
            vec![change(6, ChangeKind::Removed, "10.0.0.4/32", "")],
        ));
        let batch = q.next_batch().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body_of(&batch).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!([
                {"action": "add", "policy": "drop", "entry": {"creation": 100, "cidr": "10.0.0.1/32", "tag": null, "expiration": 0},
                 "metadata": {"kind": "ban", "detail": "ssh", "extra": null}},
                {"action": "remove", "policy": "drop", "entry": {"creation": 100, "cidr": "10.0.0.3/32", "tag": "", "expiration": 0},
                 "metadata": {"kind": "expired", "detail": "Rule expired", "extra": null}},
                {"action": "remove", "policy": "drop", "entry": {"creation": 100, "cidr": "10.0.0.4/32", "tag": "", "expiration": 0},
                 "metadata": null},
            ])
        );
        let seqs: Vec<u64> = batch.reports.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 5, 6]);
    }

    #[test]
    fn batches_are_cut_by_count_and_kept_until_settled() {
        let mut q = queue(100, 2);
        let changes = (1..=5)
            .map(|i| change(i, ChangeKind::Added, &format!("10.0.0.{i}/32"), "t"))
            .collect();
        q.push_event(&event(Origin::api("a"), changes));
        let first = q.next_batch().unwrap();
        assert_eq!(first.reports.len(), 2);
        assert_eq!(q.next_batch().unwrap(), first, "retried whole, same id");
        assert_eq!(q.len(), 5, "the pending batch still counts");
        assert_eq!(q.settle(), 2);
        let second = q.next_batch().unwrap();
        assert_ne!(second.id, first.id);
        assert_eq!(second.reports[0].seq, 3);
        let rest: Vec<usize> = q.drain_batches().iter().map(|b| b.reports.len()).collect();
        assert_eq!(rest, [2, 1]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_counts_them() {
        let mut q = queue(3, 2);
        let changes: Vec<Change> = (1..=5)
            .map(|i| change(i, ChangeKind::Added, &format!("10.0.0.{i}/32"), "t"))
            .collect();
        assert_eq!(q.push_event(&event(Origin::api("a"), changes.clone())), 2);
        q.next_batch();
        // The pending batch holds its room until it is settled.
        assert_eq!(q.push_event(&event(Origin::api("a"), changes)), 5);
        assert_eq!(
            q.counts(),
            QueueCounts {
                accepted: 3,
                dropped_full: 7
            }
        );
        let kept: Vec<u64> = q
            .drain_batches()
            .iter()
            .flat_map(|b| b.reports.iter().map(|r| r.seq))
            .collect();
        assert_eq!(kept, [1, 2, 3], "the oldest are kept");
    }

    #[test]
    fn batches_stay_under_the_body_limit() {
        let mut q = queue(100_000, 100_000);
        let tag = "x".repeat(64);
        let changes = (0..20_000u32)
            .map(|i| {
                let cidr = format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255);
                change(u64::from(i) + 1, ChangeKind::Added, &cidr, &tag)
            })
            .collect();
        q.push_event(&event(Origin::api("a"), changes));
        let mut total = 0;
        while let Some(batch) = q.next_batch() {
            let body = body_of(&batch).unwrap();
            assert!(body.len() <= MAX_BODY_BYTES, "{}", body.len());
            let more = q.len() > batch.reports.len();
            assert!(
                !more || body.len() > MAX_BODY_BYTES / 4,
                "cut needlessly small"
            );
            total += q.settle();
        }
        assert_eq!(total, 20_000);
    }
}
