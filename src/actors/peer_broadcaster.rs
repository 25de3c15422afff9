//! PeerBroadcaster: one per peer, owns that peer's [`PeerQueue`].
//! Subscribed to the MapWriter's change events, it queues a job per API add
//! and remove and, every [`TICK`], sends what is queued to its peer, batch
//! after batch, on the blocking pool: a slow or dead peer holds only its
//! own queue. A failed batch stays at the head and is retried with backoff.
//! On overflow the queue is dropped and the peer is *behind*; a resync
//! (digests compared, differing shards sent whole; see README) repairs it,
//! and also runs after a reconnect and every `resync_interval`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use couic_common::{PeerDigest, PeerEntry, PeerState, Policy, SHARDS};

use crate::actors::map_writer::{ListEntries, MapWriter};
use crate::actors::messages::Changed;
use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::origin::Origin;
use crate::peering::link::{Answer, Failure, Link};
use crate::peering::{PeerCounters, PeerQueue};

/// The send cadence (the documented period).
pub const TICK: Duration = Duration::from_millis(250);
/// An overflowing queue is logged at most this often.
pub const OVERFLOW_WARN_PERIOD: Duration = Duration::from_secs(10);

/// What a peer is made of.
pub struct PeerParts {
    pub link: Arc<dyn Link>,
    pub queue: PeerQueue,
    pub backoff: Backoff,
    pub counters: Arc<PeerCounters>,
    pub resync_interval: Duration,
}

/// Send what is queued, now (the interval sends it; tests too).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// Compare digests at the next tick, as the interval would.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

/// How a resync ended.
enum Resynced {
    Done {
        shards: u64,
    },
    /// The peer has no catch-up routes (a reference peer).
    Unsupported,
}

pub struct PeerBroadcaster {
    queue: PeerQueue,
    link: Arc<dyn Link>,
    writer: Addr<MapWriter>,
    backoff: Backoff,
    counters: Arc<PeerCounters>,
    clock: SharedClock,
    resync_interval: Duration,
    /// A batch or a resync is on its way.
    busy: bool,
    resyncing: bool,
    /// After a failure: no attempt before this.
    not_before: Option<Instant>,
    /// The last attempt failed: the next success is a reconnect.
    failing: bool,
    /// Jobs were dropped: a resync is needed to repair the peer.
    behind: bool,
    resync_due: bool,
    last_resync: Instant,
    /// The peer answered 404/405 to the catch-up routes.
    deltas_only: bool,
    unlogged_drops: u64,
    last_overflow_warning: Option<Instant>,
}

impl PeerBroadcaster {
    pub fn new(parts: PeerParts, writer: Addr<MapWriter>, clock: SharedClock) -> Self {
        PeerBroadcaster {
            queue: parts.queue,
            link: parts.link,
            writer,
            backoff: parts.backoff,
            counters: parts.counters,
            clock,
            resync_interval: parts.resync_interval,
            busy: false,
            resyncing: false,
            not_before: None,
            failing: false,
            behind: false,
            // A node that starts compares digests with its peers first.
            resync_due: true,
            last_resync: Instant::now(),
            deltas_only: false,
            unlogged_drops: 0,
            last_overflow_warning: None,
        }
    }

    fn publish(&self) {
        let state = if self.resyncing {
            PeerState::Resyncing
        } else if self.behind {
            PeerState::Behind
        } else if self.failing {
            PeerState::Retrying
        } else {
            PeerState::Ok
        };
        self.counters.set_state(state);
        let queued = self.queue.len() as u64;
        self.counters.queued.store(queued, Ordering::Relaxed);
    }

    /// Starts the next resync or batch unless one is on its way or a
    /// backoff runs.
    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if !self.deltas_only && self.last_resync.elapsed() >= self.resync_interval {
            self.resync_due = true;
        }
        if self.resync_due && !self.deltas_only {
            self.start_resync(ctx);
            return;
        }
        let Some(batch) = self.queue.next_batch() else {
            return;
        };
        self.busy = true;
        let link = Arc::clone(&self.link);
        let policy = batch.policy;
        let posting = tokio::task::spawn_blocking(move || link.post(policy, &batch.jobs));
        ctx.spawn(posting.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            match result.unwrap_or_else(|e| Err(thread_failure(e))) {
                Ok(()) => {
                    let n = act.queue.settle(policy) as u64;
                    act.counters.sent.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(
                        "Peering sync successful with {} ({n} jobs)",
                        act.link.shown()
                    );
                    act.succeeded();
                    // Everything queued goes in this tick, batch after batch.
                    act.send_next(ctx);
                }
                Err(failure) => act.failed(failure),
            }
            act.publish();
        }));
    }

    fn succeeded(&mut self) {
        let now = self.clock.now();
        self.counters.last_success.store(now, Ordering::Relaxed);
        if self.failing {
            tracing::info!("{} answers again", self.link.shown());
            // What was it missing while down (a restart loses entries)?
            self.resync_due = true;
        }
        self.failing = false;
        self.not_before = None;
        self.backoff.reset();
    }

    fn failed(&mut self, failure: Failure) {
        self.counters.failed(&failure.reason, self.clock.now());
        let delay = self.backoff.failed(failure.retry_after);
        self.not_before = Some(Instant::now() + delay);
        self.failing = true;
        tracing::error!(
            "Failed to peer with {}: {}; {} jobs kept, next try in {:.1} s",
            self.link.shown(),
            failure.reason,
            self.queue.len(),
            delay.as_secs_f64()
        );
    }

    /// Compares digests of both policies and sends the shards that differ.
    /// Batches wait meanwhile: jobs queued before the snapshot are replayed
    /// after it, which the idempotent receiver makes harmless.
    fn start_resync(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        self.resyncing = true;
        self.resync_due = false;
        self.publish();
        let link = Arc::clone(&self.link);
        let writer = self.writer.clone();
        let now = self.clock.now();
        let resync = async move {
            let mut shards = 0;
            for policy in [Policy::Drop, Policy::Ignore] {
                match resync_policy(&link, &writer, policy, now).await? {
                    Some(n) => shards += n,
                    None => return Ok(Resynced::Unsupported),
                }
            }
            Ok(Resynced::Done { shards })
        };
        ctx.spawn(resync.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            act.resyncing = false;
            match result {
                Ok(resynced) => {
                    act.last_resync = Instant::now();
                    act.resynced(resynced);
                    act.succeeded();
                    act.publish();
                    act.send_next(ctx);
                }
                Err(failure) => {
                    act.resync_due = true;
                    act.failed(failure);
                }
            }
            act.publish();
        }));
    }

    fn resynced(&mut self, resynced: Resynced) {
        match resynced {
            Resynced::Done { shards } => {
                self.counters
                    .shards_resynced
                    .fetch_add(shards, Ordering::Relaxed);
                if shards > 0 || self.behind {
                    tracing::info!("resynced {} ({shards} shards sent)", self.link.shown());
                }
            }
            Resynced::Unsupported => {
                self.deltas_only = true;
                tracing::warn!(
                    "{} has no catch-up routes (a reference couic?): sending changes only, \
                     a restart or an outage of it may leave it missing entries",
                    self.link.shown()
                );
                if self.behind {
                    tracing::warn!(
                        "{}: the jobs dropped while it was behind are lost for it",
                        self.link.shown()
                    );
                }
            }
        }
        // An overflow during the resync leaves it due again.
        if !self.resync_due {
            self.behind = false;
        }
    }

    fn count_overflow(&mut self, dropped: u64) {
        self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.behind = true;
        self.resync_due = true;
        self.unlogged_drops += dropped;
        let due = self
            .last_overflow_warning
            .is_none_or(|t| t.elapsed() >= OVERFLOW_WARN_PERIOD);
        if due {
            tracing::warn!(
                "peer queue of {} full: {} jobs dropped since the last warning; \
                 it is behind and gets a resync",
                self.link.shown(),
                self.unlogged_drops
            );
            self.unlogged_drops = 0;
            self.last_overflow_warning = Some(Instant::now());
        }
    }
}

fn thread_failure(e: tokio::task::JoinError) -> Failure {
    Failure {
        reason: format!("the sending thread failed: {e}"),
        retry_after: None,
    }
}

/// One policy's resync: `None` when the peer has no catch-up routes, else
/// the number of shards sent.
async fn resync_policy(
    link: &Arc<dyn Link>,
    writer: &Addr<MapWriter>,
    policy: Policy,
    now: u64,
) -> Result<Option<u64>, Failure> {
    let l = Arc::clone(link);
    let remote = match tokio::task::spawn_blocking(move || l.digest(policy))
        .await
        .map_err(thread_failure)??
    {
        Answer::Done(digest) => digest,
        Answer::Unsupported => return Ok(None),
    };
    // Taken after the peer's digest: what was sent before is in both.
    let entries = writer
        .send(ListEntries { policy })
        .await
        .map_err(|e| Failure {
            reason: format!("cannot list the entries: {e}"),
            retry_after: None,
        })?;
    let mut local = PeerDigest::default();
    let mut by_shard: Vec<Vec<PeerEntry>> = vec![Vec::new(); SHARDS];
    let own = entries.into_iter().filter(|e| {
        matches!(e.origin, Origin::Api { .. }) && (e.expiration == 0 || e.expiration > now)
    });
    for e in own {
        let cidr = e.cidr.to_string();
        let shard = local.add(&cidr, &e.tag, e.expiration);
        by_shard[shard].push(PeerEntry {
            cidr,
            tag: (!e.tag.is_empty()).then_some(e.tag),
            expiration: e.expiration,
            metadata: None,
        });
    }
    let mut sent = 0;
    for shard in local.differing(&remote) {
        let l = Arc::clone(link);
        let entries = std::mem::take(&mut by_shard[shard]);
        let put = tokio::task::spawn_blocking(move || l.put_shard(policy, shard, &entries));
        match put.await.map_err(thread_failure)?? {
            Answer::Done(()) => sent += 1,
            Answer::Unsupported => return Ok(None),
        }
    }
    Ok(Some(sent))
}

impl Actor for PeerBroadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.publish();
        ctx.run_interval(TICK, |act, ctx| act.send_next(ctx));
    }
}

impl Handler<Changed> for PeerBroadcaster {
    type Result = ();

    fn handle(&mut self, msg: Changed, _: &mut Context<Self>) {
        if let Some(dropped) = self.queue.push_event(&msg) {
            self.count_overflow(dropped);
        }
        self.publish();
    }
}

impl Handler<Tick> for PeerBroadcaster {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.send_next(ctx);
    }
}

impl Handler<Resync> for PeerBroadcaster {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.resync_due = true;
        self.send_next(ctx);
    }
}
