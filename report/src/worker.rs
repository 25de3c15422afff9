//! The aggregator's thread: takes batches from the [`Inbox`], closes each
//! period on time and hands the notices to the destinations' outboxes.
//! All the figures live on this one thread, so they need no lock.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::aggregator::{Aggregator, Ingested};
use crate::delivery::Outbox;
use crate::metrics::{Metrics, PeriodOutcome};
use crate::notify::Notice;
use crate::period::Summary;
use crate::queue::Inbox;
use crate::thresholds::Thresholds;

pub struct Worker {
    pub aggregator: Aggregator,
    pub thresholds: Thresholds,
    /// `[server].name`, for the notices.
    pub server: String,
    pub outboxes: Vec<Outbox>,
    pub metrics: Arc<Metrics>,
}

impl Worker {
    /// Runs on a thread of its own until every sender of the inbox is gone.
    pub fn start(self, inbox: Inbox) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("aggregator".into())
            .spawn(move || self.run(inbox))
    }

    fn run(mut self, inbox: Inbox) {
        loop {
            self.close_due(Instant::now());
            let wait = self
                .aggregator
                .period_end()
                .saturating_duration_since(Instant::now());
            match inbox.rx.recv_timeout(wait) {
                Ok(batch) => {
                    inbox.gate.release(batch.reports.len());
                    self.metrics.set_queued(inbox.gate.queued());
                    let now = Instant::now();
                    self.close_due(now);
                    match self.aggregator.ingest(batch, now) {
                        Ingested::Counted(tally) => self.metrics.counted(&tally),
                        Ingested::Duplicate => {
                            tracing::debug!("duplicate batch acknowledged, not counted");
                            self.metrics.duplicate();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn close_due(&mut self, now: Instant) {
        if let Some(summary) = self.aggregator.close_due(now) {
            self.conclude(summary);
        }
    }

    fn conclude(&self, summary: Summary) {
        let level = self.thresholds.level(summary.total);
        let outcome = if summary.total == 0 {
            PeriodOutcome::Empty
        } else if self.thresholds.should_notify(summary.total) {
            PeriodOutcome::Notified
        } else {
            PeriodOutcome::BelowThreshold
        };
        self.metrics.period(outcome);
        if outcome == PeriodOutcome::Empty {
            return;
        }
        tracing::info!(
            total = summary.total,
            distinct = summary.distinct,
            removed_expired = summary.removed_expired,
            removed_deleted = summary.removed_deleted,
            nodes = summary.nodes,
            %level,
            ?outcome,
            "period closed"
        );
        if outcome != PeriodOutcome::Notified {
            return;
        }
        let notice = Arc::new(Notice {
            summary,
            level,
            server: self.server.clone(),
            at: chrono::Utc::now(),
        });
        for outbox in &self.outboxes {
            outbox.offer(notice.clone());
        }
    }
}
