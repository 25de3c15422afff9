//! FleetSync: this node's side of the fleet's bucket (see [`crate::fleet`]).
//!
//! Subscribed to the MapWriter's change events, it queues this node's API
//! changes in the outbox, and the entries it wrote that expired, for a
//! purge. A task on its thread holds the connection: it writes the outbox
//! to the bucket, watches the bucket and hands its words to the MapWriter
//! in batches, and starts over, with backoff, whenever the server goes
//! away or fails a request. Each start writes what was queued meanwhile
//! first, then catches up with the whole bucket, then reconciles.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::jetstream::kv;
use async_nats::Event;
use couic_common::{Cidr, Policy};
use futures_util::StreamExt;

use crate::actors::map_writer::{ApplyFleet, FleetHeld, MapWriter};
use crate::actors::messages::Changed;
use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::config;
use crate::firewall::fleet::FleetOp;
use crate::firewall::ChangeKind;
use crate::fleet::gate::Gate;
use crate::fleet::key;
use crate::fleet::link::{self, Link, LinkError};
use crate::fleet::outbox::{Op, Outbox, Pending};
use crate::fleet::reconcile::reconcile;
use crate::fleet::status::FleetCounters;
use crate::fleet::value::{Value, Word};
use crate::origin::Origin;

/// Words handed to the MapWriter at once, at most.
pub const WORD_BATCH: usize = 4096;
/// How long a small batch of words waits for more, once caught up.
pub const LINGER: Duration = Duration::from_millis(2);
/// A batch of this many words goes without waiting.
pub const LINGER_BELOW: usize = 256;
/// This node's changes sent before their acknowledgements are awaited.
pub const SEND_BATCH: usize = 1024;
/// A catch-up with no word for this long checks the bucket is not empty.
pub const STALL: Duration = Duration::from_secs(1);
/// What `FleetFlush` may take at most.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(3);

/// What the FleetSync is made of.
pub struct FleetParts {
    pub config: config::Fleet,
    pub counters: Arc<FleetCounters>,
    /// The first delay between two connection attempts, doubled up to
    /// [`crate::backoff::MAX_DELAY`].
    pub backoff: Backoff,
}

/// Write what is queued, within [`FLUSH_DEADLINE`] (before the daemon
/// stops); answers how many changes are left.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct FleetFlush;

/// What the actor and its task share.
struct Shared {
    node: Arc<str>,
    /// `[fleet] tombstone_retention`.
    retention: u64,
    outbox: Mutex<Outbox>,
    gate: Mutex<Gate>,
    /// Changes taken from the outbox and not acknowledged yet.
    in_flight: AtomicUsize,
    /// Words the gate let go outside the watch, for the task to apply.
    released: Mutex<Vec<Word>>,
    wake: tokio::sync::Notify,
    counters: Arc<FleetCounters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn queue(&self, key: String, op: Op) {
        let local = !matches!(op, Op::Expired { .. });
        let mut outbox = lock(&self.outbox);
        let pushed = outbox.push(key.clone(), op);
        let mut gate = lock(&self.gate);
        if let (Some(generation), true) = (pushed.generation, local) {
            gate.local(&key, generation);
        }
        if let Some(dropped) = pushed.dropped {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(word) = gate.abandoned(&dropped) {
                lock(&self.released).push(word);
            }
        }
        self.counters
            .queued
            .store(outbox.len() as u64, Ordering::Relaxed);
    }

    fn waiting(&self) -> usize {
        lock(&self.outbox).len() + self.in_flight.load(Ordering::Relaxed)
    }
}

pub struct FleetSync {
    shared: Arc<Shared>,
    /// Taken by the task when the actor starts.
    start: Option<(FleetParts, Addr<MapWriter>, SharedClock)>,
}

impl FleetSync {
    pub fn new(parts: FleetParts, writer: Addr<MapWriter>, clock: SharedClock) -> Self {
        let shared = Arc::new(Shared {
            node: parts.config.node_name().into(),
            retention: parts.config.tombstone_retention,
            outbox: Mutex::new(Outbox::new(parts.config.queue_capacity)),
            gate: Mutex::new(Gate::default()),
            in_flight: AtomicUsize::new(0),
            released: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            counters: parts.counters.clone(),
        });
        FleetSync {
            shared,
            start: Some((parts, writer, clock)),
        }
    }
}

impl Actor for FleetSync {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        if let Some((parts, writer, clock)) = self.start.take() {
            actix_rt::spawn(run(self.shared.clone(), parts, writer, clock));
        }
    }
}

impl Handler<Changed> for FleetSync {
    type Result = ();

    fn handle(&mut self, msg: Changed, _: &mut Context<Self>) {
        let shared = &self.shared;
        match &msg.origin {
            Origin::Api { .. } => {
                for change in msg.changes.iter() {
                    let op = match change.kind {
                        ChangeKind::Added => Op::Put(
                            Value {
                                node: shared.node.to_string(),
                                tag: couic_common::wire_tag(&change.entry.tag, true),
                                creation: change.entry.creation,
                                expiration: change.entry.expiration,
                                metadata: change.metadata.as_deref().cloned(),
                            }
                            .to_bytes(),
                        ),
                        ChangeKind::Removed => Op::Delete,
                        ChangeKind::Hidden | ChangeKind::Restored => continue,
                    };
                    shared.queue(key::encode(change.policy, change.entry.cidr), op);
                }
            }
            Origin::Expiry => {
                for change in msg.changes.iter() {
                    let written_here = match &change.entry.origin {
                        Origin::Api { .. } => true,
                        Origin::Fleet { node } => *node == shared.node,
                        _ => false,
                    };
                    if written_here && change.kind == ChangeKind::Removed {
                        let expiration = change.entry.expiration;
                        let key = key::encode(change.policy, change.entry.cidr);
                        shared.queue(key, Op::Expired { expiration });
                    }
                }
            }
            _ => return,
        }
        shared.wake.notify_one();
    }
}

impl Handler<FleetFlush> for FleetSync {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: FleetFlush, _: &mut Context<Self>) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            let deadline = Instant::now() + FLUSH_DEADLINE;
            while shared.waiting() > 0 && Instant::now() < deadline {
                shared.wake.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shared.waiting()
        })
    }
}

/// Connects, runs a session until it fails, waits, and again.
async fn run(shared: Arc<Shared>, parts: FleetParts, writer: Addr<MapWriter>, clock: SharedClock) {
    let FleetParts {
        config,
        counters,
        mut backoff,
    } = parts;
    let mut last_error = String::new();
    loop {
        let events = counters.clone();
        let on_event = move |event: Event| match event {
            Event::Connected => events.connected_now(),
            Event::Disconnected | Event::Closed => events.connected.store(false, Ordering::Relaxed),
            _ => {}
        };
        let opened = match link::options(&config, on_event).await {
            Ok(options) => {
                Link::open(options, &config.servers, &config.bucket, config.replicas).await
            }
            Err(e) => Err(e),
        };
        let failure = match opened {
            Ok(link) => {
                counters.connected.store(true, Ordering::Relaxed);
                tracing::info!(
                    "fleet: connected to {}, bucket {} (node {})",
                    config.servers.join(", "),
                    config.bucket,
                    shared.node
                );
                last_error.clear();
                backoff.reset();
                let mut session = Session {
                    shared: &shared,
                    link: &link,
                    writer: &writer,
                    clock: &clock,
                    seen: None,
                    origins: HashMap::new(),
                };
                session.run().await
            }
            Err(e) => e,
        };
        counters.connected.store(false, Ordering::Relaxed);
        counters.caught_up.store(false, Ordering::Relaxed);
        counters.failed(&failure.to_string(), clock.now());
        let message = failure.to_string();
        if message != last_error {
            tracing::warn!(
                "fleet: {message}; filtering goes on with the rules held, this node's \
                 changes are queued ({} waiting)",
                shared.waiting()
            );
            last_error = message;
        }
        tokio::time::sleep(backoff.failed(None)).await;
    }
}

/// One connection's work.
struct Session<'a> {
    shared: &'a Shared,
    link: &'a Link,
    writer: &'a Addr<MapWriter>,
    clock: &'a SharedClock,
    /// The keys met while catching up; `None` once caught up.
    seen: Option<HashSet<(Policy, Cidr)>>,
    /// The origin of each node met, made once.
    origins: HashMap<String, Origin>,
}

impl Session<'_> {
    /// Runs until the connection fails.
    async fn run(&mut self) -> LinkError {
        match self.serve().await {
            Ok(()) => LinkError::Watch("the server ended the watch".into()),
            Err(e) => e,
        }
    }

    async fn serve(&mut self) -> Result<(), LinkError> {
        // This node's changes made while away go first: they are newer
        // than what the bucket holds for their keys.
        while !lock(&self.shared.outbox).is_empty() {
            self.send_some().await?;
        }
        let (messages, last) = self.link.state().await?;
        let mut watch = self.link.watch().await?;
        self.seen = Some(HashSet::new());
        if messages == 0 {
            self.caught_up().await?;
        }
        loop {
            tokio::select! {
                // Catching up, and no word for a while: the bucket may
                // have been emptied since it was asked (a purge).
                _ = tokio::time::sleep(STALL), if self.seen.is_some() => {
                    if self.link.state().await?.0 == 0 {
                        self.caught_up().await?;
                    }
                }
                entry = watch.next() => {
                    let Some(entry) = entry else { return Ok(()) };
                    let mut batch = vec![entry.map_err(|e| LinkError::Watch(e.to_string()))?];
                    // The words ready go in the same batch; once caught
                    // up, a small batch waits LINGER for more (one write
                    // and one sync for many when words come fast).
                    let start = tokio::time::Instant::now();
                    while batch.len() < WORD_BATCH {
                        let linger = self.seen.is_none() && batch.len() < LINGER_BELOW;
                        let until = if linger { start + LINGER } else { start };
                        match tokio::time::timeout_at(until, watch.next()).await {
                            Ok(Some(entry)) => {
                                batch.push(entry.map_err(|e| LinkError::Watch(e.to_string()))?)
                            }
                            _ => break,
                        }
                    }
                    self.words(batch, last).await?;
                }
                _ = self.shared.wake.notified() => {
                    self.send_some().await?;
                    if !lock(&self.shared.outbox).is_empty() {
                        self.shared.wake.notify_one();
                    }
                }
            }
            let released = std::mem::take(&mut *lock(&self.shared.released));
            self.apply(released).await;
        }
    }

    /// Words delivered by the watch: checked, let through the gate,
    /// applied; expired ones met while catching up are purged.
    async fn words(&mut self, batch: Vec<kv::Entry>, last: u64) -> Result<(), LinkError> {
        let counters = &self.shared.counters;
        let now = self.clock.now();
        let mut words = Vec::with_capacity(batch.len());
        let mut purge = Vec::new();
        let mut sweep = Vec::new();
        let mut done = false;
        for entry in batch {
            counters
                .last_revision
                .store(entry.revision, Ordering::Relaxed);
            counters.lag.store(entry.delta, Ordering::Relaxed);
            // The word the bucket ended on when the watch began, or none
            // left to deliver: everything before is in.
            done |= entry.revision >= last || entry.delta == 0;
            let Some((policy, cidr)) = key::decode(&entry.key) else {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("fleet: key {:?} is not couic's: skipped", entry.key);
                continue;
            };
            let value = match entry.operation {
                kv::Operation::Put => match Value::parse(&entry.value) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "fleet: key {} revision {}: {e}: skipped",
                            entry.key,
                            entry.revision
                        );
                        continue;
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            if let Some(seen) = &mut self.seen {
                seen.insert((policy, cidr));
                match &value {
                    Some(v) if v.expired(now) => purge.push((entry.key.clone(), entry.revision)),
                    None => {
                        let written = u64::try_from(entry.created.unix_timestamp()).unwrap_or(0);
                        if now.saturating_sub(written) >= self.shared.retention {
                            sweep.push((entry.key.clone(), entry.revision));
                        }
                    }
                    Some(_) => {}
                }
            }
            let word = Word {
                policy,
                cidr,
                revision: entry.revision,
                value,
            };
            if let Some(word) = lock(&self.shared.gate).watched(&entry.key, word) {
                words.push(word);
            }
        }
        self.apply(words).await;
        for (key, revision) in purge {
            if self.link.purge_at(&key, revision).await? {
                counters.purged.fetch_add(1, Ordering::Relaxed);
            }
        }
        for (key, revision) in sweep {
            if self.link.sweep(&key, revision).await? {
                counters.swept.fetch_add(1, Ordering::Relaxed);
            }
        }
        if done && self.seen.is_some() {
            self.caught_up().await?;
        }
        Ok(())
    }

    /// The catch-up is over: reconcile with what the bucket holds.
    async fn caught_up(&mut self) -> Result<(), LinkError> {
        let seen = self.seen.take().unwrap_or_default();
        let held = self
            .writer
            .send(FleetHeld)
            .await
            .map_err(|e| LinkError::Watch(format!("the MapWriter is gone: {e}")))?;
        let reconciled = reconcile(held, &seen);
        let removed = reconciled.remove.len();
        let published = reconciled.publish.len();
        let gone = reconciled
            .remove
            .into_iter()
            .map(|(policy, cidr)| Word {
                policy,
                cidr,
                revision: 0,
                value: None,
            })
            .collect();
        self.apply(gone).await;
        for (policy, entry) in reconciled.publish {
            let value = Value {
                node: self.shared.node.to_string(),
                tag: couic_common::wire_tag(&entry.tag, true),
                creation: entry.creation,
                expiration: entry.expiration,
                metadata: None,
            };
            self.shared
                .queue(key::encode(policy, entry.cidr), Op::Put(value.to_bytes()));
        }
        if published > 0 {
            self.shared.wake.notify_one();
        }
        let counters = &self.shared.counters;
        counters.caught_up.store(true, Ordering::Relaxed);
        tracing::info!(
            "fleet: caught up with bucket at revision {} ({} keys; {removed} entries gone \
             from the fleet removed, {published} of this node's written again)",
            counters.last_revision.load(Ordering::Relaxed),
            seen.len()
        );
        Ok(())
    }

    /// Hands words to the MapWriter, one batch per policy, and waits until
    /// they are applied and durable.
    async fn apply(&mut self, words: Vec<Word>) {
        if words.is_empty() {
            return;
        }
        let count = words.len() as u64;
        let mut ops: [Vec<FleetOp>; 2] = [Vec::new(), Vec::new()];
        for word in words {
            let op = match word.value {
                Some(v) => {
                    let origin = match self.origins.get(&v.node) {
                        Some(origin) => origin.clone(),
                        None => {
                            let origin = Origin::fleet(&v.node);
                            self.origins.insert(v.node.clone(), origin.clone());
                            origin
                        }
                    };
                    FleetOp::Put {
                        entry: v.entry(word.cidr),
                        creation: v.creation,
                        origin,
                    }
                }
                None => FleetOp::Delete(word.cidr),
            };
            ops[usize::from(word.policy == Policy::Ignore)].push(op);
        }
        for (policy, ops) in Policy::ALL.into_iter().zip(ops) {
            if ops.is_empty() {
                continue;
            }
            let results = match self.writer.send(ApplyFleet { policy, ops }).await {
                Ok(committed) => committed.await,
                Err(e) => {
                    tracing::error!("fleet: the MapWriter is gone: {e}");
                    return;
                }
            };
            for result in results {
                match result {
                    Ok(done) if done.full > 0 => tracing::warn!(
                        "fleet: {} {policy} entries of the fleet refused: the map is full",
                        done.full
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!("fleet: words not applied: {e}"),
                }
            }
        }
        self.shared
            .counters
            .applied
            .fetch_add(count, Ordering::Relaxed);
    }

    /// Writes up to [`SEND_BATCH`] queued changes: all sent, then their
    /// acknowledgements awaited in order. What was not acknowledged goes
    /// back to the head of the outbox.
    async fn send_some(&mut self) -> Result<(), LinkError> {
        let shared = self.shared;
        let taken = lock(&shared.outbox).take(SEND_BATCH);
        shared.in_flight.store(taken.len(), Ordering::Relaxed);
        let result = self.send(&taken).await;
        let (acked, error) = match result {
            Ok(()) => (taken.len(), None),
            Err((acked, e)) => (acked, Some(e)),
        };
        let mut rest: Vec<Pending> = taken;
        let unsent = rest.split_off(acked);
        if !unsent.is_empty() {
            lock(&shared.outbox).put_back(unsent);
        }
        shared.in_flight.store(0, Ordering::Relaxed);
        shared
            .counters
            .queued
            .store(lock(&shared.outbox).len() as u64, Ordering::Relaxed);
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends `taken`; on failure, how many were acknowledged (a prefix).
    async fn send(&mut self, taken: &[Pending]) -> Result<(), (usize, LinkError)> {
        let counters = &self.shared.counters;
        let mut acks = Vec::with_capacity(taken.len());
        for p in taken {
            if let Op::Expired { .. } = p.op {
                acks.push(None);
                continue;
            }
            match self.link.send(&p.key, &p.op).await {
                Ok(ack) => acks.push(Some(ack)),
                Err(e) => {
                    // Nothing after this one was sent: wait for what was.
                    let sent = acks.len();
                    self.acknowledge(taken, acks).await?;
                    return Err((sent, e));
                }
            }
        }
        self.acknowledge(taken, acks).await?;
        counters
            .published
            .fetch_add(taken.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Awaits the acknowledgements of `acks` (the first changes of
    /// `taken`), purging expired keys in their turn.
    async fn acknowledge(
        &mut self,
        taken: &[Pending],
        acks: Vec<Option<impl std::future::Future<Output = Result<u64, LinkError>>>>,
    ) -> Result<(), (usize, LinkError)> {
        let mut released = Vec::new();
        for (i, (p, ack)) in taken.iter().zip(acks).enumerate() {
            match (ack, &p.op) {
                (Some(ack), _) => {
                    let revision = ack.await.map_err(|e| (i, e))?;
                    if let Some(word) =
                        lock(&self.shared.gate).acked(&p.key, p.generation, revision)
                    {
                        released.push(word);
                    }
                }
                (None, Op::Expired { expiration }) => {
                    let now = self.clock.now();
                    let purged = self
                        .link
                        .purge_expired(&p.key, *expiration, now)
                        .await
                        .map_err(|e| (i, e))?;
                    if purged {
                        self.shared.counters.purged.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (None, _) => {}
            }
        }
        self.apply(released).await;
        Ok(())
    }
}
