//! The bounded queue between the HTTP handlers and the aggregator.
//!
//! Its capacity is counted in reports, not batches, since a batch holds
//! anything from one report to a 16 MiB body's worth. A batch that does not
//! fit is refused with 503 and counted; a daemon retries it later (the
//! reference keeps a failed batch and retries it with backoff), so an
//! overload delays reports rather than losing them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::period::Batch;

/// Reports accepted but not yet aggregated, at most. Some 2.5 s of work at
/// 100,000 reports/s, and tens of MB of memory.
pub const QUEUE_CAPACITY: usize = 262_144;

/// Counts what is in the queue against its capacity.
#[derive(Debug)]
pub struct Gate {
    queued: AtomicUsize,
    capacity: usize,
}

impl Gate {
    pub fn new(capacity: usize) -> Self {
        Gate {
            queued: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Makes room for `n` reports if they fit. An empty queue takes any
    /// batch, so that one larger than the capacity is not refused forever.
    pub fn try_reserve(&self, n: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let fits = queued == 0 || queued.saturating_add(n) <= self.capacity;
                fits.then(|| queued.saturating_add(n))
            })
            .is_ok()
    }

    pub fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue to the aggregator is full")]
pub struct Overloaded;

/// The handlers' end.
#[derive(Clone)]
pub struct Queue {
    tx: Sender<Batch>,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
}

/// The aggregator's end.
pub struct Inbox {
    pub rx: Receiver<Batch>,
    pub gate: Arc<Gate>,
}

pub fn queue(capacity: usize, metrics: Arc<Metrics>) -> (Queue, Inbox) {
    let (tx, rx) = channel();
    let gate = Arc::new(Gate::new(capacity));
    let inbox = Inbox {
        rx,
        gate: gate.clone(),
    };
    (Queue { tx, gate, metrics }, inbox)
}

impl Queue {
    pub fn offer(&self, batch: Batch) -> Result<(), Overloaded> {
        let n = batch.reports.len();
        if !self.gate.try_reserve(n) {
            self.metrics.overloaded();
            tracing::warn!(
                reports = n,
                capacity = QUEUE_CAPACITY,
                "queue full, batch refused with 503"
            );
            return Err(Overloaded);
        }
        if self.tx.send(batch).is_err() {
            // The aggregator is gone: the process is stopping.
            self.gate.release(n);
            return Err(Overloaded);
        }
        self.metrics.set_queued(self.gate.queued());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_capacity() {
        let g = Gate::new(10);
        assert!(g.try_reserve(6));
        assert!(g.try_reserve(4));
        assert!(!g.try_reserve(1));
        g.release(4);
        assert!(g.try_reserve(3));
        assert!(!g.try_reserve(2));
        assert_eq!(g.queued(), 9);
        assert!(g.try_reserve(0));
    }

    #[test]
    fn an_empty_queue_takes_an_oversized_batch() {
        let g = Gate::new(10);
        assert!(g.try_reserve(50));
        assert!(!g.try_reserve(1));
        g.release(50);
        assert_eq!(g.queued(), 0);
    }

    #[test]
    fn a_full_queue_refuses_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let (q, inbox) = queue(2, metrics.clone());
        let batch = |n| Batch {
            id: None,
            node: "n".into(),
            reports: vec![
                crate::period::tests::report(
                    couic_common::ReportAction::Add,
                    "1.1.1.1/32",
                    None
                );
                n
            ],
        };
        assert!(q.offer(batch(2)).is_ok());
        assert_eq!(q.offer(batch(1)), Err(Overloaded));
        let got = inbox.rx.try_recv().unwrap();
        inbox.gate.release(got.reports.len());
        assert!(q.offer(batch(1)).is_ok());
        assert!(metrics
            .encode()
            .unwrap()
            .contains("couic_report_overloaded_batches_total 1"));
    }
}
