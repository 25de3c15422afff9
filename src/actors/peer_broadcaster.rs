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
use crate::actors::messages::ChangedBatch;
use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::origin::Origin;
use crate::peering::link::{Answer, Failure, Link};
use crate::peering::{PeerCounters, PeerQueue};
use crate::throttle::LogThrottle;

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
    overflow_log: LogThrottle,
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
            overflow_log: LogThrottle::new(OVERFLOW_WARN_PERIOD),
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
                    tracing::info!(
                        "Peering sync successful with {} ({n} jobs)",
                        act.link.shown()
                    );
                    act.succeeded(false);
                    // A whole batch waiting goes now; less waits for the
                    // next tick, so that a busy node sends few large
                    // batches rather than a stream of small ones.
                    if act.queue.has_full_batch() {
                        act.send_next(ctx);
                    }
                }
                Err(failure) if failure.refused => {
                    // The same batch would be refused again: drop it and
                    // let a resync repair what it carried.
                    let n = act.queue.settle(policy) as u64;
                    act.counters.dropped.fetch_add(n, Ordering::Relaxed);
                    act.behind = true;
                    act.resync_due = true;
                    tracing::error!(
                        "{} refused a batch of {n} jobs ({}): dropped; a resync follows",
                        act.link.shown(),
                        failure.reason
                    );
                    act.failed(failure);
                }
                Err(failure) => act.failed(failure),
            }
            act.publish();
        }));
    }

    /// A batch or (`resync`) a resync went through.
    fn succeeded(&mut self, resync: bool) {
        let now = self.clock.now();
        self.counters.last_success.store(now, Ordering::Relaxed);
        if self.failing {
            tracing::info!("{} answers again", self.link.shown());
            // What was it missing while down (a restart loses entries)?
            // Unless this was the resync.
            self.resync_due |= !resync;
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
        // The peer gets a snapshot holding what adds still queued add: a
        // remove queued later must be sent, not cancel them.
        self.queue.hold_merges(true);
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
        ctx.spawn(
            resync
                .into_actor(self)
                .map(|result: Result<Resynced, Failure>, act, ctx| {
                    act.busy = false;
                    act.resyncing = false;
                    act.queue.hold_merges(false);
                    match result {
                        Ok(resynced) => {
                            act.last_resync = Instant::now();
                            act.resynced(resynced);
                            act.succeeded(true);
                            act.publish();
                            act.send_next(ctx);
                        }
                        Err(failure) if failure.refused => {
                            // Refused (a bad token, a full map): changes go on
                            // meanwhile, and the next interval tries again.
                            act.last_resync = Instant::now();
                            tracing::error!(
                                "{} refused a resync ({}): retried in {} s",
                                act.link.shown(),
                                failure.reason,
                                act.resync_interval.as_secs()
                            );
                            act.failed(failure);
                        }
                        Err(failure) => {
                            act.resync_due = true;
                            act.failed(failure);
                        }
                    }
                    act.publish();
                }),
        );
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
        if let Some(n) = self.overflow_log.add(dropped) {
            tracing::warn!(
                "peer queue of {} full: {n} jobs dropped since the last warning; \
                 it is behind and gets a resync",
                self.link.shown()
            );
        }
    }
}

fn thread_failure(e: tokio::task::JoinError) -> Failure {
    Failure::new(format!("the sending thread failed: {e}"))
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
        .map_err(|e| Failure::new(format!("cannot list the entries: {e}")))?;
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

impl Handler<ChangedBatch> for PeerBroadcaster {
    type Result = ();

    fn handle(&mut self, msg: ChangedBatch, _: &mut Context<Self>) {
        for event in msg.0.iter() {
            if let Some(dropped) = self.queue.push_event(event) {
                self.count_overflow(dropped);
            }
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

#[cfg(test)]
mod tests {
    //! The PeerBroadcaster over in-memory maps and a scripted link.

    use std::collections::VecDeque;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use couic_common::PeerAction;

    use super::*;
    use crate::actors::map_writer::AddEntries;
    use crate::bpf::Capacities;
    use crate::clock::ManualClock;
    use crate::firewall::{Firewall, MemoryMaps, NewEntry};
    use crate::peering::link::Answer;
    use crate::peering::Job;

    const T0: u64 = 1_000_000;

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Post(Policy, Vec<(PeerAction, String)>),
        Digest(Policy),
        Shard(Policy, usize, Vec<String>),
    }

    /// Records every call; posts answer from a script, then succeed.
    #[derive(Default)]
    struct FakeLink {
        calls: Mutex<Vec<Call>>,
        posts: Mutex<VecDeque<Result<(), Failure>>>,
        /// What the drop digest says the peer holds (default: nothing;
        /// nothing of ignore).
        digest: Mutex<PeerDigest>,
        /// While set, every call fails.
        down: AtomicBool,
    }

    impl FakeLink {
        fn check(&self) -> Result<(), Failure> {
            match self.down.load(Ordering::SeqCst) {
                true => Err(Failure::new("down")),
                false => Ok(()),
            }
        }
    }

    impl Link for FakeLink {
        fn post(&self, policy: Policy, jobs: &[Job]) -> Result<(), Failure> {
            let jobs = jobs
                .iter()
                .map(|j| (j.action, j.cidr.to_string()))
                .collect();
            self.calls.lock().unwrap().push(Call::Post(policy, jobs));
            self.check()?;
            self.posts.lock().unwrap().pop_front().unwrap_or(Ok(()))
        }

        fn digest(&self, policy: Policy) -> Result<Answer<PeerDigest>, Failure> {
            self.calls.lock().unwrap().push(Call::Digest(policy));
            self.check()?;
            Ok(Answer::Done(match policy {
                Policy::Drop => self.digest.lock().unwrap().clone(),
                Policy::Ignore => PeerDigest::default(),
            }))
        }

        fn put_shard(
            &self,
            policy: Policy,
            shard: usize,
            entries: &[PeerEntry],
        ) -> Result<Answer<()>, Failure> {
            let cidrs = entries.iter().map(|e| e.cidr.clone()).collect();
            let call = Call::Shard(policy, shard, cidrs);
            self.calls.lock().unwrap().push(call);
            Ok(Answer::Done(()))
        }

        fn shown(&self) -> &str {
            "fake"
        }
    }

    struct Fixture {
        writer: Addr<MapWriter>,
        peer: Addr<PeerBroadcaster>,
        link: Arc<FakeLink>,
        counters: Arc<PeerCounters>,
        _arbiter: Arbiter,
    }

    fn start(link: Arc<FakeLink>, capacity: usize) -> Fixture {
        let caps = Capacities {
            drop: 1024,
            ignore: 1024,
            tags: 16,
        };
        let firewall = Firewall::new(MemoryMaps::default(), caps);
        let clock: SharedClock = Arc::new(ManualClock::new(T0));
        let counters = Arc::new(PeerCounters::new("fake", "http://fake:1"));
        let parts = PeerParts {
            link: link.clone(),
            queue: PeerQueue::new(capacity, 100),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(20)),
            counters: counters.clone(),
            resync_interval: Duration::from_secs(3600),
        };
        let arbiter = Arbiter::new();
        let actors = crate::actors::start(
            &arbiter.handle(),
            firewall,
            clock,
            None,
            vec![parts],
            None,
            Vec::new(),
        );
        Fixture {
            writer: actors.writer,
            peer: actors.peers[0].clone(),
            link,
            counters,
            _arbiter: arbiter,
        }
    }

    impl Fixture {
        async fn add(&self, cidrs: &[&str]) {
            let entries = cidrs
                .iter()
                .map(|c| NewEntry {
                    cidr: c.parse().unwrap(),
                    tag: String::new(),
                    expiration: 0,
                    metadata: None,
                })
                .collect();
            let msg = AddEntries {
                policy: Policy::Drop,
                entries,
                origin: Origin::api("admin"),
                atomic: true,
            };
            let results = self.writer.send(msg).await.unwrap().await;
            assert!(results.iter().all(Result::is_ok));
        }

        fn calls(&self) -> Vec<Call> {
            self.link.calls.lock().unwrap().clone()
        }

        /// Ticks until the peer is in `state`, for at most two seconds.
        async fn until_state(&self, state: PeerState) {
            for _ in 0..200 {
                if self.counters.read().state == state {
                    return;
                }
                self.peer.send(Tick).await.unwrap();
                actix::clock::sleep(Duration::from_millis(10)).await;
            }
            panic!("not {state}: {:?}", self.counters.read());
        }

        /// Ticks until `done(calls)`, for at most two seconds.
        async fn until(&self, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
            for _ in 0..200 {
                let calls = self.calls();
                if done(&calls) {
                    return calls;
                }
                self.peer.send(Tick).await.unwrap();
                actix::clock::sleep(Duration::from_millis(10)).await;
            }
            panic!("not done: {:?}", self.calls());
        }
    }

    fn posts(calls: &[Call]) -> Vec<Vec<(PeerAction, String)>> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Post(_, jobs) => Some(jobs.clone()),
                _ => None,
            })
            .collect()
    }

    fn adds(cidrs: &[&str]) -> Vec<(PeerAction, String)> {
        cidrs
            .iter()
            .map(|c| (PeerAction::Add, c.to_string()))
            .collect()
    }

    #[actix::test]
    async fn a_failed_batch_is_retried_whole_before_anything_after_it() {
        let link = Arc::new(FakeLink::default());
        link.posts.lock().unwrap().extend([
            Err(Failure::of_status(502, None)),
            Err(Failure::new("timed out")),
        ]);
        let f = start(link, 1000);
        // The first resync (nothing on either side) comes before batches.
        f.until(|c| c.len() >= 2).await;
        f.add(&["10.0.0.1/32", "10.0.0.2/32"]).await;
        f.until(|c| !posts(c).is_empty()).await;
        f.add(&["10.0.0.3/32"]).await;
        let calls = f.until(|c| posts(c).len() >= 4).await;
        let first = adds(&["10.0.0.1/32", "10.0.0.2/32"]);
        assert_eq!(
            posts(&calls),
            [first.clone(), first.clone(), first, adds(&["10.0.0.3/32"])]
        );
        assert_eq!(
            calls[..2],
            [Call::Digest(Policy::Drop), Call::Digest(Policy::Ignore)]
        );
        let status = f.counters.read();
        assert_eq!(
            (status.jobs_sent, status.queued, status.state),
            (3, 0, PeerState::Ok)
        );
        assert_eq!(status.last_error.as_deref(), Some("timed out"));
    }

    #[actix::test]
    async fn a_refused_batch_is_dropped_and_repaired_by_a_resync() {
        let link = Arc::new(FakeLink::default());
        link.posts
            .lock()
            .unwrap()
            .push_back(Err(Failure::of_status(422, None)));
        let f = start(link, 1000);
        f.until(|c| c.len() >= 2).await;
        f.add(&["10.0.0.1/32"]).await;
        let calls = f
            .until(|c| c.iter().any(|c| matches!(c, Call::Shard(..))))
            .await;
        let shard = couic_common::peer::shard_of("10.0.0.1/32");
        assert!(
            calls.contains(&Call::Shard(
                Policy::Drop,
                shard,
                vec!["10.0.0.1/32".into()]
            )),
            "{calls:?}"
        );
        assert_eq!(posts(&calls).len(), 1, "not retried");
        let status = f.counters.read();
        assert_eq!(status.jobs_dropped, 1);
        assert_eq!(status.shards_resynced, 1);
        assert_eq!(status.state, PeerState::Ok);
    }

    #[actix::test]
    async fn an_overflow_marks_the_peer_behind_until_a_resync_sends_what_differs() {
        let link = Arc::new(FakeLink::default());
        // The peer already holds 10.0.0.1.
        let mut held = PeerDigest::default();
        held.add("10.0.0.1/32", "", 0);
        *link.digest.lock().unwrap() = held.clone();
        let f = start(link, 3);
        f.until(|c| c.len() >= 2).await;
        f.link.down.store(true, Ordering::SeqCst);
        f.add(&["10.0.0.1/32"]).await;
        f.until(|c| !posts(c).is_empty()).await;
        f.add(&["10.0.0.2/32", "10.0.0.3/32", "10.0.0.4/32"]).await;
        f.until_state(PeerState::Behind).await;
        assert_eq!(f.counters.read().jobs_dropped, 4);
        assert_eq!(f.counters.read().queued, 0);

        let before = f.calls().len();
        let resynced_before = f.counters.read().shards_resynced;
        f.link.down.store(false, Ordering::SeqCst);
        f.until_state(PeerState::Ok).await;
        let sent: Vec<usize> = f.calls()[before..]
            .iter()
            .filter_map(|c| match c {
                Call::Shard(_, k, _) => Some(*k),
                _ => None,
            })
            .collect();
        let mut expected = PeerDigest::default();
        for c in ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32", "10.0.0.4/32"] {
            expected.add(c, "", 0);
        }
        assert!(!sent.is_empty());
        assert_eq!(
            sent,
            expected.differing(&held),
            "only the shards that differ"
        );
        let resynced = f.counters.read().shards_resynced - resynced_before;
        assert_eq!(resynced, sent.len() as u64);
    }
}
