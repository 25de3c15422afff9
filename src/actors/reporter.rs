//! Reporter: owns the [`ReportQueue`]. Subscribed to the MapWriter's change
//! events, it queues a report per reported change and, every [`TICK`],
//! sends what is queued to the webhook in batches, one at a time, on the
//! blocking pool; a whole batch (`max_batch`) goes at once. A failed batch stays at the head and is retried with
//! backoff; a batch the webhook refuses for good is dropped and counted.
//! `Flush` sends what is left before the daemon stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::messages::ChangedBatch;
use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::reporting::delivery::{Outcome, Webhook};
use crate::reporting::{Batch, ReportCounters, ReportQueue};
use crate::throttle::LogThrottle;

/// The send cadence (the documented period).
pub const TICK: Duration = Duration::from_millis(500);
/// A full queue is logged at most this often.
pub const OVERFLOW_WARN_PERIOD: Duration = Duration::from_secs(10);
/// What `Flush` may take at most.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// Where batches go: the webhook, or a stand-in in tests.
pub trait Sink: Send + Sync + 'static {
    fn post(&self, batch: &Batch) -> Outcome;
    /// What may be logged of the destination (never a secret).
    fn shown(&self) -> &str;
}

impl Sink for Webhook {
    fn post(&self, batch: &Batch) -> Outcome {
        Webhook::post(self, batch)
    }

    fn shown(&self) -> &str {
        Webhook::shown(self)
    }
}

/// Send everything queued, within [`FLUSH_DEADLINE`]; answers how many
/// reports were delivered.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Flush;

pub struct Reporter {
    queue: ReportQueue,
    /// How often what is queued is sent ([`TICK`]; tests lengthen it).
    tick: Duration,
    sink: Arc<dyn Sink>,
    backoff: Backoff,
    counters: Arc<ReportCounters>,
    clock: SharedClock,
    /// A batch is being posted.
    sending: bool,
    /// The last tick's newest report: everything up to it goes, batch after
    /// batch, before the next tick.
    drain_until: u64,
    /// After a failure: no attempt before this.
    not_before: Option<Instant>,
    /// Full-queue drops not logged yet, and when the last warning was.
    overflow_log: LogThrottle,
    /// The status of the last refusal logged, so a refusing webhook is
    /// logged once, not once per batch.
    last_refusal: Option<u16>,
}

impl Reporter {
    pub fn new(
        queue: ReportQueue,
        tick: Duration,
        sink: Arc<dyn Sink>,
        backoff: Backoff,
        counters: Arc<ReportCounters>,
        clock: SharedClock,
    ) -> Self {
        Reporter {
            queue,
            tick,
            sink,
            backoff,
            counters,
            clock,
            sending: false,
            drain_until: 0,
            not_before: None,
            overflow_log: LogThrottle::new(OVERFLOW_WARN_PERIOD),
            last_refusal: None,
        }
    }

    fn publish_queued(&self) {
        let queued = self.queue.len() as u64;
        self.counters.queued.store(queued, Ordering::Relaxed);
    }

    /// Posts the next batch unless one is on its way or a backoff runs.
    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.sending || self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(batch) = self.queue.next_batch() else {
            return;
        };
        self.sending = true;
        let sink = Arc::clone(&self.sink);
        let posting = tokio::task::spawn_blocking(move || sink.post(&batch));
        ctx.spawn(posting.into_actor(self).map(|result, act, ctx| {
            let outcome = result.unwrap_or_else(|e| Outcome::Retry {
                reason: format!("the sending thread failed: {e}"),
                retry_after: None,
            });
            act.settle(outcome, ctx);
        }));
    }

    fn settle(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        self.sending = false;
        let shown = self.sink.shown().to_string();
        match outcome {
            Outcome::Delivered => {
                let n = self.queue.settle() as u64;
                self.counters.sent.fetch_add(n, Ordering::Relaxed);
                let now = self.clock.now();
                self.counters.last_success.store(now, Ordering::Relaxed);
                if self.not_before.take().is_some() || self.last_refusal.take().is_some() {
                    tracing::info!("reports reach {shown} again");
                }
                self.backoff.reset();
                tracing::debug!("Sent {n} reports successfully to {shown}");
                // What the tick found goes now, batch after batch, and so
                // does a whole batch; the rest waits for the next tick.
                if self.queue.waits_for(self.drain_until) || self.queue.has_full_batch() {
                    self.send_next(ctx);
                }
            }
            Outcome::Retry {
                reason,
                retry_after,
            } => {
                self.counters
                    .failed_attempts
                    .fetch_add(1, Ordering::Relaxed);
                let delay = self.backoff.failed(retry_after);
                self.not_before = Some(Instant::now() + delay);
                tracing::error!(
                    "cannot send reports to {shown}: {reason}; {} kept, next try in {:.1} s",
                    self.queue.len(),
                    delay.as_secs_f64()
                );
            }
            Outcome::Refused { status } => {
                let n = self.queue.settle() as u64;
                self.counters
                    .dropped_refused
                    .fetch_add(n, Ordering::Relaxed);
                if self.last_refusal != Some(status) {
                    tracing::error!(
                        "{shown} refused a batch of reports with HTTP {status}: dropped, \
                         not retried (later refusals with this status are counted, not logged)"
                    );
                }
                self.last_refusal = Some(status);
            }
        }
        self.publish_queued();
    }

    /// Everything queued now is to go before the next tick.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if let Some(seq) = self.queue.last_waiting_seq() {
            self.drain_until = seq;
        }
        self.send_next(ctx);
    }

    fn count_overflow(&mut self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        self.counters
            .dropped_queue_full
            .fetch_add(dropped, Ordering::Relaxed);
        if let Some(n) = self.overflow_log.add(dropped) {
            tracing::warn!("report queue full: {n} reports dropped since the last warning");
        }
    }
}

impl Actor for Reporter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.tick, |act, ctx| act.tick(ctx));
    }
}

impl Handler<ChangedBatch> for Reporter {
    type Result = ();

    fn handle(&mut self, msg: ChangedBatch, ctx: &mut Context<Self>) {
        for event in msg.0.iter() {
            let dropped = self.queue.push_event(event);
            self.count_overflow(dropped);
        }
        self.publish_queued();
        // Under load a whole batch goes at once: waiting for the tick would
        // let a burst fill the queue.
        if self.queue.has_full_batch() {
            self.send_next(ctx);
        }
    }
}

impl Handler<Flush> for Reporter {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        // The batch being retried goes first, with the same id: a receiver
        // that got it already drops the copy.
        let batches = self.queue.drain_batches();
        self.publish_queued();
        let sink = Arc::clone(&self.sink);
        let counters = Arc::clone(&self.counters);
        Box::pin(async move {
            let deadline = Instant::now() + FLUSH_DEADLINE;
            let mut delivered = 0;
            for batch in batches {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                let sink = Arc::clone(&sink);
                let n = batch.reports.len();
                let posting = tokio::task::spawn_blocking(move || sink.post(&batch));
                match tokio::time::timeout(left, posting).await {
                    Ok(Ok(Outcome::Delivered)) => delivered += n,
                    _ => break,
                }
            }
            counters.sent.fetch_add(delivered as u64, Ordering::Relaxed);
            delivered
        })
    }
}
