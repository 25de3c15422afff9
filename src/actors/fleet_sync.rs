//! FleetSync: this node's connection to the fleet's bucket (see
//! [`crate::fleet`]).
//!
//! The MapWriter queues this node's API changes, and the entries it wrote
//! that expired, in the outbox of [`Local`] as it applies them. A task on
//! this actor's thread holds the connection: it writes the outbox to the
//! bucket, tells the MapWriter what was acknowledged and sends a notice of
//! it to the other nodes; it hands the bucket's words to the MapWriter in
//! batches (the gate is applied there), and starts over, with backoff,
//! whenever the server goes away or fails a write. Each start writes what
//! was queued meanwhile first, then catches up by watching the whole
//! bucket, then reconciles; from then on, words come from the nodes'
//! notices, put in revision order by a [`Sequencer`], what is missing read
//! from the bucket.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::jetstream::kv;
use async_nats::Event;
use couic_common::{Cidr, Policy};
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};

use crate::actors::map_writer::{
    ApplyFleet, FleetAcked, FleetHeld, FleetSettled, MapWriter, Republish,
};
use crate::backoff::Backoff;
use crate::cadence::Cadence;
use crate::clock::SharedClock;
use crate::config;
use crate::firewall::fleet::FleetApplied;
use crate::firewall::Committed;
use crate::fleet::key;
use crate::fleet::link::{self, Link, LinkError};
use crate::fleet::local::{FleetKey, Local};
use crate::fleet::notice::{Draft, Notice, Said};
use crate::fleet::outbox::{Op, Pending};
use crate::fleet::reconcile::reconcile;
use crate::fleet::sequencer::Sequencer;
use crate::fleet::status::FleetCounters;
use crate::fleet::synced::{self, Mark};
use crate::fleet::value::{Value, ValueError, Word};

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
/// How long a revision may be missing while later ones came, before it
/// is read from the bucket (a node's notice follows its writes by the
/// time their acknowledgements take).
pub const GAP_WAIT: Duration = Duration::from_millis(200);
/// How often the bucket's last revision is asked: one the bucket had at
/// the last asking and no notice brought is read from the bucket.
pub const POLL: Duration = Duration::from_secs(1);
/// Revisions missing past this many (or held waiting for them): the node
/// catches up again with the watch rather than reading each.
pub const GAP_LIMIT: usize = 16_384;
/// Others' expired keys purged a second at most.
pub const LAPSED_BATCH: usize = 1024;
/// Revisions read from the bucket at once.
pub const READ_BATCH: usize = 64;
/// A node writing more than [`NOTICE_QUIET`] words in this long sends a
/// notice this often at most: words acknowledged meanwhile wait for the
/// next (a notice a word would cost every node a batch each). Below, each
/// goes at once.
pub const NOTICE_EVERY: Duration = Duration::from_millis(100);
pub const NOTICE_QUIET: usize = 8;
/// A notice of this many words goes without waiting.
pub const NOTICE_WORDS: usize = 1024;
/// This node's mark ([`crate::fleet::synced`]) is asked for at each
/// [`POLL`] once caught up, kept once this old (or `tombstone_retention`,
/// if shorter: a mark is for nodes away longer than that)...
pub const MARK_DELAY: Duration = Duration::from_secs(300);
/// ...and saved this often at most.
pub const MARK_EVERY: Duration = Duration::from_secs(5);
/// Marks waiting for [`MARK_DELAY`], at most (one per [`POLL`]).
const MARK_PENDING: usize = 1024;

/// What the FleetSync is made of.
pub struct FleetParts {
    pub config: config::Fleet,
    pub counters: Arc<FleetCounters>,
    /// Deletes kept from the last run (see [`crate::fleet::carried`]).
    pub carried: Vec<FleetKey>,
    /// Keys the state's journals deleted (see [`Local::suspect`]).
    pub suspects: Vec<FleetKey>,
    /// The first delay between two connection attempts, doubled up to
    /// [`crate::backoff::MAX_DELAY`].
    pub backoff: Backoff,
    /// This node's mark and where it is kept: with `[state] durable` only
    /// (without, no entry outlives a restart to be told apart).
    pub marks: Option<Marks>,
}

/// This node's mark of [`crate::fleet::synced`], kept in `dir`.
pub struct Marks {
    dir: PathBuf,
    mark: Option<Mark>,
    /// Marks the MapWriter gave, not kept until [`Marks::delay`] old: a
    /// server acknowledges a write before its disk has it (JetStream's
    /// file store syncs every 2 minutes by default), so a mark trails what
    /// a server that crashed could have lost.
    pending: VecDeque<(Instant, Mark)>,
    delay: Duration,
    saved: Option<Instant>,
    /// The last failure to save it, said once.
    failure: Option<String>,
}

impl Marks {
    /// The mark kept in `dir` (the state directory), if it can be read.
    pub fn kept_in(dir: PathBuf) -> Marks {
        let mark = synced::load(&dir).unwrap_or_else(|e| {
            tracing::warn!(
                "fleet: {e}: this node's entries the bucket lacks will all be written again"
            );
            None
        });
        Marks {
            dir,
            mark,
            pending: VecDeque::new(),
            delay: MARK_DELAY,
            saved: None,
            failure: None,
        }
    }

    /// Marks trail by [`MARK_DELAY`], or `retention` if shorter.
    fn trail(&mut self, retention: u64) {
        self.delay = MARK_DELAY.min(Duration::from_secs(retention));
    }

    /// The time no API entry may be stamped before (see [`Local::stamp`]).
    pub fn floor(&self) -> u64 {
        self.mark.as_ref().map_or(0, |m| m.before)
    }

    /// What the mark says of `bucket`, whose stream was made at `stream`
    /// and is at revision `last`.
    fn acked_before(&self, bucket: &str, stream: i128, last: u64) -> Option<u64> {
        let mark = self.mark.as_ref()?;
        let before = mark.of(bucket, stream, last);
        if before.is_none() {
            tracing::info!(
                "fleet: the bucket is not as this node last marked it (made anew, another, \
                 or back at revision {last} of {}): its entries the bucket lacks are written \
                 again",
                mark.revision
            );
        }
        before
    }

    /// A mark the MapWriter gave now: kept once [`Marks::delay`] old, and
    /// saved [`MARK_EVERY`] at most.
    fn offer(&mut self, mark: Mark) {
        let now = Instant::now();
        if self.pending.len() >= MARK_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((now, mark));
        let mut ripe = None;
        while let Some((at, _)) = self.pending.front() {
            if now.duration_since(*at) < self.delay {
                break;
            }
            ripe = self.pending.pop_front().map(|(_, m)| m);
        }
        let due = self.saved.is_none_or(|at| at.elapsed() >= MARK_EVERY);
        if let Some(mark) = ripe.filter(|_| due) {
            self.keep(mark);
        }
    }

    /// Keeps `mark` if it says more than the one kept.
    fn keep(&mut self, mark: Mark) {
        let newer = self.mark.as_ref().is_none_or(|m| {
            m.bucket != mark.bucket || m.stream != mark.stream || m.before < mark.before
        });
        if !newer {
            return;
        }
        self.saved = Some(Instant::now());
        match synced::save(&self.dir, &mark) {
            Ok(()) => {
                self.mark = Some(mark);
                self.failure = None;
            }
            Err(e) => {
                let message = e.to_string();
                if self.failure.as_ref() != Some(&message) {
                    tracing::warn!(
                        "fleet: cannot keep {} in {}: {message}",
                        synced::FILE,
                        self.dir.display()
                    );
                    self.failure = Some(message);
                }
            }
        }
    }
}

/// Write what is queued, within [`FLUSH_DEADLINE`] (before the daemon
/// stops); answers what is left.
#[derive(Message)]
#[rtype(result = "Leftover")]
pub struct FleetFlush;

/// What [`FleetFlush`] could not write.
#[derive(Debug, Default)]
pub struct Leftover {
    /// Changes queued or in flight.
    pub waiting: usize,
    /// The keys of the deletes among them.
    pub deletes: Vec<FleetKey>,
}

pub struct FleetSync {
    local: Arc<Local>,
    /// Taken by the task when the actor starts.
    start: Option<(FleetParts, Addr<MapWriter>, SharedClock)>,
}

impl FleetSync {
    /// The sync of `local`, which the MapWriter was given.
    pub fn new(
        parts: FleetParts,
        local: Arc<Local>,
        writer: Addr<MapWriter>,
        clock: SharedClock,
    ) -> Self {
        FleetSync {
            local,
            start: Some((parts, writer, clock)),
        }
    }
}

impl Actor for FleetSync {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        if let Some((parts, writer, clock)) = self.start.take() {
            actix_rt::spawn(run(self.local.clone(), parts, writer, clock));
        }
    }
}

impl Handler<FleetFlush> for FleetSync {
    type Result = ResponseFuture<Leftover>;

    fn handle(&mut self, _: FleetFlush, _: &mut Context<Self>) -> Self::Result {
        let local = self.local.clone();
        Box::pin(async move {
            let deadline = Instant::now() + FLUSH_DEADLINE;
            while local.waiting() > 0 && Instant::now() < deadline {
                local.wake.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Leftover {
                waiting: local.waiting(),
                deletes: local.deletes(),
            }
        })
    }
}

/// Connects, runs a session until it fails, waits, and again.
async fn run(local: Arc<Local>, parts: FleetParts, writer: Addr<MapWriter>, clock: SharedClock) {
    let FleetParts {
        config,
        counters,
        mut backoff,
        mut marks,
        ..
    } = parts;
    if let Some(marks) = marks.as_mut() {
        marks.trail(config.tombstone_retention);
    }
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
                    local.node
                );
                last_error.clear();
                backoff.reset();
                let mut session = Session {
                    local: &local,
                    retention: config.tombstone_retention,
                    bucket: &config.bucket,
                    marks: marks.as_mut(),
                    link: &link,
                    writer: &writer,
                    clock: &clock,
                    seen: None,
                    through: 0,
                    draft: Draft::new(&local.node, link.notice_limit()),
                    due: None,
                    cadence: Cadence::new(NOTICE_EVERY, NOTICE_QUIET),
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
                local.waiting()
            );
            last_error = message;
        }
        tokio::time::sleep(backoff.failed(None)).await;
    }
}

/// Waits until `due`, if any.
async fn until(due: Option<tokio::time::Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// One connection's work.
struct Session<'a> {
    local: &'a Local,
    /// `[fleet] tombstone_retention`.
    retention: u64,
    bucket: &'a str,
    marks: Option<&'a mut Marks>,
    link: &'a Link,
    writer: &'a Addr<MapWriter>,
    clock: &'a SharedClock,
    /// The keys met while catching up; `None` once caught up.
    seen: Option<HashSet<(Policy, Cidr)>>,
    /// Every revision up to this one is applied (or gone from the bucket).
    through: u64,
    /// The next notice of this node's words, and when it goes.
    draft: Draft,
    due: Option<tokio::time::Instant>,
    cadence: Cadence,
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
        // than what the bucket holds for their keys. (Those made while
        // these go wait for the watch: a busy API must not keep it off.)
        let mut backlog = self.local.queued();
        while backlog > 0 && self.local.queued() > 0 {
            backlog = backlog.saturating_sub(self.send_some().await?);
        }
        let (messages, last) = self.link.state().await?;
        // Notices are listened to before the watch begins: a word written
        // after the watch ends is in one.
        let notices = self.link.notices().await?;
        let mut watch = self.link.watch().await?;
        self.seen = Some(HashSet::new());
        if messages == 0 {
            self.through = last;
            self.caught_up().await?;
        }
        while self.seen.is_some() {
            tokio::select! {
                // Catching up, and no word for a while: the bucket may
                // have been emptied since it was asked (a purge).
                _ = tokio::time::sleep(STALL) => {
                    let (messages, now_last) = self.link.state().await?;
                    if messages == 0 {
                        self.through = self.through.max(now_last);
                        self.caught_up().await?;
                    }
                }
                entry = watch.next() => {
                    let Some(entry) = entry else { return Ok(()) };
                    let mut batch = vec![entry.map_err(|e| LinkError::Watch(e.to_string()))?];
                    // The words ready go in the same batch. (Asked through
                    // a timeout already due: with `now_or_never` batches
                    // came out smaller, and a catch-up of 262,144 keys
                    // took a quarter longer.)
                    let now = tokio::time::Instant::now();
                    while batch.len() < WORD_BATCH {
                        match tokio::time::timeout_at(now, watch.next()).await {
                            Ok(Some(entry)) => {
                                batch.push(entry.map_err(|e| LinkError::Watch(e.to_string()))?)
                            }
                            _ => break,
                        }
                    }
                    self.words(batch, last).await?;
                }
                _ = self.local.wake.notified() => self.send_queued().await?,
                _ = until(self.due), if self.due.is_some() => self.notify().await,
            }
        }
        drop(watch);
        self.live(notices).await
    }

    /// Once caught up: the words of the nodes' notices, in revision order,
    /// what is missing read from the bucket.
    async fn live(&mut self, mut notices: async_nats::Subscriber) -> Result<(), LinkError> {
        let mut order = Sequencer::new(self.through);
        let mut poll = tokio::time::interval(POLL);
        // The bucket's last revision at the last asking.
        let mut known = 0;
        loop {
            tokio::select! {
                message = notices.next() => {
                    let Some(message) = message else {
                        return Err(LinkError::Watch("the server ended the notices".into()));
                    };
                    self.notice(&mut order, &message.payload);
                    // Those ready go in the same batch; a small batch waits
                    // LINGER for more (one write and one sync for many).
                    let start = tokio::time::Instant::now();
                    while order.held() < WORD_BATCH {
                        let until = match order.held() < LINGER_BELOW {
                            true => start + LINGER,
                            false => start,
                        };
                        match tokio::time::timeout_at(until, notices.next()).await {
                            Ok(Some(message)) => self.notice(&mut order, &message.payload),
                            _ => break,
                        }
                    }
                    self.release(&mut order).await;
                    self.fill_overdue(&mut notices, &mut order).await?;
                }
                _ = tokio::time::sleep(GAP_WAIT), if order.held() > 0 => {
                    self.fill_overdue(&mut notices, &mut order).await?;
                }
                _ = poll.tick() => {
                    let last = match self.drop_bogus(&mut order).await {
                        Ok(last) => last,
                        Err(LinkError::Gone) => return Err(LinkError::Gone),
                        // The client reconnects on its own; asked again
                        // at the next tick.
                        Err(e) => {
                            tracing::debug!("fleet: {e}");
                            continue;
                        }
                    };
                    self.local
                        .counters
                        .lag
                        .store(last.saturating_sub(order.done()), Ordering::Relaxed);
                    // A revision the bucket had a poll ago that no notice
                    // brought: a lost notice, or another program's word.
                    if order.done() < known {
                        self.drain(&mut notices, &mut order);
                        self.release(&mut order).await;
                    }
                    if order.done() < known {
                        let missing = order.unheld(known, GAP_LIMIT + 1);
                        self.read(&mut order, missing).await?;
                        self.release(&mut order).await;
                    }
                    known = last;
                    self.purge_lapsed().await?;
                    self.mark(last).await;
                }
                _ = self.local.wake.notified() => self.send_queued().await?,
                _ = until(self.due), if self.due.is_some() => self.notify().await,
            }
        }
    }

    /// Offers this node's mark, if everything of its is in the bucket
    /// (asked of the MapWriter, which applies the API's changes), the
    /// bucket being at revision `last`.
    async fn mark(&mut self, last: u64) {
        let Some(marks) = self.marks.as_deref_mut() else {
            return;
        };
        if let Ok(Some(before)) = self.writer.send(FleetSettled).await {
            marks.offer(Mark {
                bucket: self.bucket.to_string(),
                stream: self.link.stream_made(),
                before,
                revision: last,
            });
        }
    }

    /// Reads from the bucket the revisions missing for [`GAP_WAIT`] while
    /// later ones came, once the notices received are in.
    async fn fill_overdue(
        &mut self,
        notices: &mut async_nats::Subscriber,
        order: &mut Sequencer,
    ) -> Result<(), LinkError> {
        if order.overdue(Instant::now(), GAP_WAIT).is_none() {
            return Ok(());
        }
        self.drain(notices, order);
        self.release(order).await;
        let Some(missing) = order.overdue(Instant::now(), GAP_WAIT) else {
            return Ok(());
        };
        if missing.end() - missing.start() >= GAP_LIMIT as u64 {
            // So many missing: is the word after them the bucket's?
            self.drop_bogus(order).await?;
        }
        if let Some(missing) = order.overdue(Instant::now(), GAP_WAIT) {
            self.read(order, missing.take(GAP_LIMIT + 1).collect())
                .await?;
            self.release(order).await;
        }
        Ok(())
    }

    /// Drops the words of notices past the bucket's last revision (a
    /// notice that lies): its revision, asked now.
    async fn drop_bogus(&self, order: &mut Sequencer) -> Result<u64, LinkError> {
        let (_, last) = self.link.state().await?;
        let bogus = order.drop_above(last);
        if bogus > 0 {
            self.local
                .counters
                .rejected
                .fetch_add(bogus as u64, Ordering::Relaxed);
            tracing::warn!(
                "fleet: {bogus} words of notices past the bucket's last revision {last}: skipped"
            );
        }
        Ok(last)
    }

    /// Purges others' expired entries still in the bucket past their
    /// grace (see [`crate::fleet::lapsed`]), [`LAPSED_BATCH`] at most.
    async fn purge_lapsed(&mut self) -> Result<(), LinkError> {
        let now = self.clock.now();
        let mut said = Vec::new();
        for ((policy, cidr), expiration) in self.local.lapsed(now, LAPSED_BATCH) {
            let key = key::encode(policy, cidr);
            if let Some(revision) = self.link.purge_expired(&key, expiration, now).await? {
                self.local.counters.purged.fetch_add(1, Ordering::Relaxed);
                said.push(Said {
                    key,
                    revision,
                    value: None,
                });
            }
        }
        self.announce(&said).await;
        Ok(())
    }

    /// Offers the notices already received to `order`: none of their
    /// words is read from the bucket (a node slow to apply would otherwise
    /// read what it holds already).
    fn drain(&self, notices: &mut async_nats::Subscriber, order: &mut Sequencer) {
        while let Some(Some(message)) = notices.next().now_or_never() {
            self.notice(order, &message.payload);
        }
    }

    /// Offers the words of a notice to `order`.
    fn notice(&self, order: &mut Sequencer, payload: &[u8]) {
        let counters = &self.local.counters;
        let notice = match Notice::parse(payload) {
            Ok(notice) => notice,
            Err(e) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("fleet: {e}: skipped (its words are read from the bucket)");
                return;
            }
        };
        for said in notice.words {
            if said.revision <= order.done() {
                continue;
            }
            let value = said.check().map(|()| said.value);
            let word = self.word(&said.key, said.revision, value);
            order.offer(said.revision, word);
        }
    }

    /// Reads `revisions` from the bucket into `order`; too many, and the
    /// session ends to catch up again.
    async fn read(&self, order: &mut Sequencer, revisions: Vec<u64>) -> Result<(), LinkError> {
        if revisions.len() > GAP_LIMIT || order.held() > GAP_LIMIT {
            return Err(LinkError::Watch(format!(
                "{} revisions missing after {}: catching up again",
                revisions.len().max(order.held()),
                order.done()
            )));
        }
        for chunk in revisions.chunks(READ_BATCH) {
            let reads = chunk.iter().map(|&r| self.link.read(r));
            for (&revision, read) in chunk.iter().zip(join_all(reads).await) {
                let word = read?.and_then(|read| {
                    let value = (!read.marker).then(|| Value::parse(&read.payload));
                    self.word(&read.key, revision, value.transpose())
                });
                order.offer(revision, word);
            }
        }
        self.local
            .counters
            .fetched
            .fetch_add(revisions.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Applies the words `order` can release.
    async fn release(&mut self, order: &mut Sequencer) {
        let words = order.release(Instant::now());
        self.through = order.done();
        self.local
            .counters
            .last_revision
            .store(order.done(), Ordering::Relaxed);
        if !words.is_empty() {
            self.apply(ApplyFleet { words }).await;
        }
    }

    /// The word of `key` at `revision` (`value` none: a marker), from
    /// the watch, a notice or a read; none, counted, when the key or the
    /// value (as checked) is not couic's.
    fn word(
        &self,
        key: &str,
        revision: u64,
        value: Result<Option<Value>, ValueError>,
    ) -> Option<Word> {
        let counters = &self.local.counters;
        let Some((policy, cidr)) = key::decode(key) else {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("fleet: key {key:?} is not couic's: skipped");
            return None;
        };
        let value = match value {
            Ok(value) => value,
            Err(e) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("fleet: key {key} revision {revision}: {e}: skipped");
                return None;
            }
        };
        Some(Word {
            policy,
            cidr,
            revision,
            value,
        })
    }

    /// Sends what is queued, a batch at a time, ringing again if more is.
    async fn send_queued(&mut self) -> Result<(), LinkError> {
        self.send_some().await?;
        if self.local.queued() > 0 {
            self.local.wake.notify_one();
        }
        Ok(())
    }

    /// Words delivered by the watch while catching up: checked, then
    /// handed to the MapWriter (its gate decides which apply); expired
    /// ones are purged, and old delete markers swept.
    async fn words(&mut self, batch: Vec<kv::Entry>, last: u64) -> Result<(), LinkError> {
        let counters = &self.local.counters;
        let retention = self.retention;
        let now = self.clock.now();
        let mut words = Vec::with_capacity(batch.len());
        let mut purge = Vec::new();
        let mut sweep = Vec::new();
        let mut undo = Vec::new();
        let mut done = false;
        for entry in batch {
            counters
                .last_revision
                .store(entry.revision, Ordering::Relaxed);
            counters.lag.store(entry.delta, Ordering::Relaxed);
            self.through = self.through.max(entry.revision);
            // The word the bucket ended on when the watch began, or none
            // left to deliver: everything before is in.
            done |= entry.revision >= last || entry.delta == 0;
            let value = (entry.operation == kv::Operation::Put).then(|| Value::parse(&entry.value));
            let Some(word) = self.word(&entry.key, entry.revision, value.transpose()) else {
                continue;
            };
            let key = (word.policy, word.cidr);
            match &word.value {
                // This node deleted it before it stopped, and the delete
                // did not reach the bucket (a crash): not brought back.
                Some(v) if *v.node == *self.local.node && self.local.undone(&key) => {
                    undo.push((entry.key, entry.revision));
                    continue;
                }
                _ => self.local.cleared(&key),
            }
            if let Some(seen) = &mut self.seen {
                seen.insert((word.policy, word.cidr));
            }
            match &word.value {
                Some(v) if v.expired(now) => purge.push((entry.key, entry.revision)),
                None => {
                    let written = u64::try_from(entry.created.unix_timestamp()).unwrap_or(0);
                    if now.saturating_sub(written) >= retention {
                        sweep.push((entry.key, entry.revision));
                    }
                }
                Some(_) => {}
            }
            words.push(word);
        }
        self.apply(ApplyFleet { words }).await;
        let mut purged = Vec::new();
        for (key, revision) in purge {
            if let Some(marker) = self.link.purge_at(&key, revision).await? {
                counters.purged.fetch_add(1, Ordering::Relaxed);
                purged.push(Said {
                    key,
                    revision: marker,
                    value: None,
                });
            }
        }
        for (key, revision) in undo {
            if let Some(marker) = self.link.delete_at(&key, revision).await? {
                tracing::info!(
                    "fleet: {key} was deleted here before the last stop and is deleted from \
                     the bucket now"
                );
                purged.push(Said {
                    key,
                    revision: marker,
                    value: None,
                });
            }
        }
        self.announce(&purged).await;
        for (key, revision) in sweep {
            if self.link.sweep(&key, revision).await? {
                counters.swept.fetch_add(1, Ordering::Relaxed);
            }
        }
        if done && self.seen.is_some() {
            // Revisions up to `last` not delivered are gone.
            self.through = self.through.max(last);
            self.caught_up().await?;
        }
        Ok(())
    }

    /// Adds `words`, this node's, just acknowledged, to the next notice,
    /// which goes when its [`Cadence`] says, or at once when it holds
    /// [`NOTICE_WORDS`].
    async fn announce(&mut self, words: &[Said<'_>]) {
        if words.is_empty() {
            return;
        }
        for word in words {
            self.draft.push(word);
        }
        let now = Instant::now();
        let due = self.cadence.due(words.len(), now);
        if self.draft.words() >= NOTICE_WORDS || due <= now {
            self.notify().await;
        } else if self.due.is_none() {
            self.due = Some(tokio::time::Instant::from_std(due));
        }
    }

    /// Sends the notices written. One that fails is only logged: the
    /// others read its words from the bucket.
    async fn notify(&mut self) {
        self.due = None;
        self.cadence.sent(Instant::now());
        for bytes in self.draft.take() {
            if let Err(e) = self.link.announce(bytes).await {
                tracing::debug!("fleet: a notice was not sent: {e}");
            }
        }
    }

    /// The catch-up is over: reconcile with what the bucket holds.
    async fn caught_up(&mut self) -> Result<(), LinkError> {
        let seen = self.seen.take().unwrap_or_default();
        self.local.clear_suspects();
        let held = self
            .writer
            .send(FleetHeld)
            .await
            .map_err(|e| LinkError::Watch(format!("the MapWriter is gone: {e}")))?;
        // The stream asked again: a bucket made anew during the catch-up
        // is not the one the watch began on (`Gone`: start over).
        let (_, last) = self.link.state().await?;
        let stream = self.link.stream_made();
        let acked_before = self
            .marks
            .as_deref()
            .and_then(|m| m.acked_before(self.bucket, stream, last));
        let reconciled = reconcile(held, &seen, acked_before);
        let withdrawn = reconciled.withdrawn;
        let removed = reconciled.remove.len();
        let published = reconciled.publish.len();
        // Through the gate too: a key changed here since stays.
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
        self.apply(ApplyFleet { words: gone }).await;
        self.writer
            .send(Republish {
                entries: reconciled.publish,
            })
            .await
            .map_err(|e| LinkError::Watch(format!("the MapWriter is gone: {e}")))?;
        let counters = &self.local.counters;
        counters.caught_up.store(true, Ordering::Relaxed);
        tracing::info!(
            "fleet: caught up with bucket at revision {} ({} keys; {removed} entries gone \
             from the fleet removed, {withdrawn} of them this node's, deleted elsewhere while \
             it was away; {published} of this node's written again)",
            counters.last_revision.load(Ordering::Relaxed),
            seen.len()
        );
        Ok(())
    }

    /// Sends `msg` to the MapWriter and waits until what it applied is
    /// durable.
    async fn apply<M>(&self, msg: M)
    where
        M: Message<Result = Committed<FleetApplied>> + Send + 'static,
        MapWriter: Handler<M>,
    {
        let results = match self.writer.send(msg).await {
            Ok(committed) => committed.await,
            Err(e) => {
                tracing::error!("fleet: the MapWriter is gone: {e}");
                return;
            }
        };
        for result in results {
            match result {
                Ok(done) => {
                    if done.full > 0 {
                        tracing::warn!(
                            "fleet: {} entries of the fleet refused: the map is full",
                            done.full
                        );
                    }
                    let applied = (done.written + done.unchanged + done.full) as u64;
                    self.local
                        .counters
                        .applied
                        .fetch_add(applied, Ordering::Relaxed);
                }
                Err(e) => tracing::error!("fleet: words not applied: {e}"),
            }
        }
    }

    /// Writes up to [`SEND_BATCH`] queued changes: all sent, then their
    /// acknowledgements awaited in order; how many. What was not
    /// acknowledged goes back to the head of the outbox.
    async fn send_some(&mut self) -> Result<usize, LinkError> {
        let mut taken = self.local.take(SEND_BATCH);
        let count = taken.len();
        let (acked, error) = match self.send(&taken).await {
            Ok(()) => (taken.len(), None),
            Err((acked, e)) => (acked, Some(e)),
        };
        let unsent = taken.split_off(acked);
        self.local.put_back(unsent);
        match error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// Sends `taken`; on failure, how many were acknowledged (a prefix).
    async fn send(&mut self, taken: &[Pending<FleetKey>]) -> Result<(), (usize, LinkError)> {
        let mut acks = Vec::with_capacity(taken.len());
        for p in taken {
            if let Op::Expired { .. } = p.op {
                acks.push(None);
                continue;
            }
            let (policy, cidr) = p.key;
            match self.link.send(&key::encode(policy, cidr), &p.op).await {
                Ok(ack) => acks.push(Some(ack)),
                Err(e) => {
                    // Nothing after this one was sent: wait for what was.
                    let sent = acks.len();
                    self.acknowledge(taken, acks).await?;
                    return Err((sent, e));
                }
            }
        }
        self.acknowledge(taken, acks).await
    }

    /// Awaits the acknowledgements of `acks` (the first changes of
    /// `taken`), purging expired keys in their turn, and tells the
    /// MapWriter what is in the bucket, even when one fails.
    async fn acknowledge(
        &mut self,
        taken: &[Pending<FleetKey>],
        acks: Vec<Option<impl std::future::Future<Output = Result<u64, LinkError>>>>,
    ) -> Result<(), (usize, LinkError)> {
        let counters = &self.local.counters;
        let mut acked = Vec::with_capacity(acks.len());
        let mut said = Vec::with_capacity(acks.len());
        let mut failure = None;
        for (i, (p, ack)) in taken.iter().zip(acks).enumerate() {
            let (policy, cidr) = p.key;
            let outcome = match (ack, &p.op) {
                (Some(ack), op) => ack.await.map(|revision| {
                    acked.push((p.key, p.generation, revision));
                    said.push(Said {
                        key: key::encode(policy, cidr),
                        revision,
                        value: match op {
                            Op::Put(value) => Some(&**value),
                            _ => None,
                        },
                    });
                    counters.published.fetch_add(1, Ordering::Relaxed);
                }),
                (None, Op::Expired { expiration }) => {
                    let now = self.clock.now();
                    let key = key::encode(policy, cidr);
                    self.link
                        .purge_expired(&key, *expiration, now)
                        .await
                        .map(|marker| {
                            if let Some(revision) = marker {
                                counters.purged.fetch_add(1, Ordering::Relaxed);
                                said.push(Said {
                                    key,
                                    revision,
                                    value: None,
                                });
                            }
                        })
                }
                (None, _) => Ok(()),
            };
            if let Err(e) = outcome {
                failure = Some((i, e));
                break;
            }
        }
        if !acked.is_empty() {
            self.apply(FleetAcked { acks: acked }).await;
        }
        self.announce(&said).await;
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(before: u64) -> Mark {
        Mark {
            bucket: "couic".into(),
            stream: 7,
            before,
            revision: before,
        }
    }

    #[test]
    fn a_mark_is_kept_only_once_it_is_as_old_as_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let mut marks = Marks::kept_in(dir.path().to_path_buf());
        marks.trail(3_600);
        marks.offer(mark(100));
        assert_eq!(synced::load(dir.path()), Ok(None), "too young");
        assert_eq!(marks.floor(), 0);
        // A delay past: the newest mark that old is kept, and saved.
        marks.delay = Duration::ZERO;
        marks.offer(mark(200));
        assert_eq!(synced::load(dir.path()), Ok(Some(mark(200))));
        assert_eq!(marks.floor(), 200);
        assert_eq!(marks.acked_before("couic", 7, 200), Some(200));
        assert_eq!(marks.acked_before("couic", 7, 199), None);
        // Saved MARK_EVERY at most.
        marks.offer(mark(300));
        assert_eq!(synced::load(dir.path()), Ok(Some(mark(200))));
    }
}
