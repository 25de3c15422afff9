//! MapWriter: owns the [`Firewall`] (entry store + the only writable BPF map
//! handles). The API (the peer receiver included), the Expirer and the set
//! reloader send it changes; it applies them, answers with per-item
//! results, then publishes one numbered [`Changed`] event to the
//! subscribers it was built with: at once to the Expirer beside it, and in
//! batches at a [`Cadence`] to those on the senders' thread (the Reporter,
//! the PeerBroadcasters), which then wake once per batch, not per change.
//!
//! Long: its messages, the actor and its tests (over in-memory maps); the
//! logic lives in [`Firewall`], [`Cadence`] and the fleet's `Local`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use couic_common::peer::shard_of;
use couic_common::{Cidr, PeerDigest, Policy};

use crate::actors::messages::{Changed, ChangedBatch, Origin};
use crate::batch::{self, Op, Rules};
use crate::bpf::BpfError;
use crate::cadence::Cadence;
use crate::clock::SharedClock;
use crate::firewall::fleet::FleetApplied;
use crate::firewall::set_plan::{ReloadSummary, SetsTarget};
use crate::firewall::{
    Change, Committed, Firewall, ItemResult, NewEntry, Snapshot, Verdict, WriteError,
};
use crate::fleet::local::{FleetKey, Local, PolicyOps};
use crate::fleet::reconcile::Held;
use crate::fleet::value::Word;
use crate::store::StoredEntry;
use crate::trim::{self, Check, Trim};

/// Add entries, in order. `atomic`: all or none. The answer is to be
/// awaited again: it resolves once the change is durable.
#[derive(Message)]
#[rtype(result = "Committed<StoredEntry>")]
pub struct AddEntries {
    pub policy: Policy,
    pub entries: Vec<NewEntry>,
    pub origin: Origin,
    pub atomic: bool,
}

/// `msg` ([`AddEntries`] or [`RemoveEntries`]) with its results sent to
/// `reply` once durable, rather than answered at once and awaited again:
/// the caller is woken once, by the journal's thread after its sync.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Answered<M> {
    pub msg: M,
    pub reply: tokio::sync::oneshot::Sender<Vec<ItemResult>>,
}

/// Remove entries by CIDR, in order. `protect_sets` refuses set entries.
/// Awaited again like [`AddEntries`].
#[derive(Message)]
#[rtype(result = "Committed<StoredEntry>")]
pub struct RemoveEntries {
    pub policy: Policy,
    pub cidrs: Vec<Cidr>,
    pub origin: Origin,
    pub protect_sets: bool,
    pub atomic: bool,
}

/// An ordered batch of adds and removes (peer batches, the bulk route),
/// played against the store before anything is written; see [`batch`].
/// Awaited again like [`AddEntries`].
#[derive(Message)]
#[rtype(result = "Committed<()>")]
pub struct ApplyBatch {
    pub policy: Policy,
    pub ops: Vec<Op>,
    pub origin: Origin,
    pub rules: Rules,
}

#[derive(Message)]
#[rtype(result = "Option<StoredEntry>")]
pub struct GetEntry {
    pub policy: Policy,
    pub cidr: Cidr,
}

#[derive(Message)]
#[rtype(result = "Vec<StoredEntry>")]
pub struct ListEntries {
    pub policy: Policy,
}

/// Kernel counters and store sizes.
#[derive(Message)]
#[rtype(result = "Result<Snapshot, BpfError>")]
pub struct ReadSnapshot;

/// The verdict the data path gives a source address.
#[derive(Message)]
#[rtype(result = "Verdict")]
pub struct CheckAddress {
    pub ip: IpAddr,
}

/// Entries the Expirer found due: (policy, cidr, expiration it indexed).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ExpireDue {
    pub due: Vec<(Policy, Cidr, u64)>,
}

/// Make the set entries of both policies what the (already validated) set
/// files say, applying only the difference; published as one event with
/// [`Origin::Set`].
#[derive(Message)]
#[rtype(result = "Result<ReloadSummary, WriteError>")]
pub struct ReloadSets {
    pub target: SetsTarget,
}

/// What this node holds from a peer client (entries of origin `origin`,
/// not yet expired), per shard: catch-up compares it with the peer's own.
#[derive(Message)]
#[rtype(result = "PeerDigest")]
pub struct DigestOfPeer {
    pub policy: Policy,
    pub origin: Origin,
}

/// Makes the entries held from a peer in `shard` exactly `entries` (all of
/// that shard): the others of that peer's are removed, the missing added,
/// the changed replaced, as one idempotent peer batch. Awaited again
/// like [`AddEntries`].
#[derive(Message)]
#[rtype(result = "Committed<()>")]
pub struct ReplacePeerShard {
    pub policy: Policy,
    pub origin: Origin,
    pub shard: usize,
    pub entries: Vec<NewEntry>,
}

/// From now on, this node's changes go to the fleet's outbox and the
/// bucket's words pass its gate (see [`crate::fleet::local`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachFleet(pub Arc<Local>);

/// Words of the fleet's bucket, in the bucket's order:
/// those the gate admits are applied (see [`crate::firewall::fleet`]).
/// Awaited again like [`AddEntries`].
#[derive(Message)]
#[rtype(result = "Committed<FleetApplied>")]
pub struct ApplyFleet {
    pub words: Vec<Word>,
}

/// This node's changes in the bucket, `(key, generation, revision)`: the
/// words that waited for them and are newer are applied. Awaited again
/// like [`AddEntries`].
#[derive(Message)]
#[rtype(result = "Committed<FleetApplied>")]
pub struct FleetAcked {
    pub acks: Vec<(FleetKey, u64, u64)>,
}

/// Entries of this node's API that the fleet's bucket lacks (see
/// [`crate::fleet::reconcile`]): queued for it again, those still held as
/// they were.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Republish {
    pub entries: Vec<(Policy, StoredEntry)>,
}

/// The API and fleet entries held, not expired: what the fleet's
/// reconciliation compares with the bucket.
#[derive(Message)]
#[rtype(result = "Held")]
pub struct FleetHeld;

/// Whether every API change applied so far is in the fleet's bucket:
/// the time before which this node's entries all reached it (see
/// [`crate::fleet::synced`]).
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct FleetSettled;

/// The sequence number of the last change published (0 before any).
#[derive(Message)]
#[rtype(result = "u64")]
pub struct LastSeq;

/// Events to the paced subscribers go at most this often under load...
pub const PACED_EVERY: Duration = Duration::from_millis(10);
/// ...and at once while there are this many changes at most in
/// [`PACED_EVERY`]: a lone ban is sent on without waiting.
pub const PACED_QUIET: usize = 8;

/// Send what is waiting for the paced subscribers, now (the MapWriter's
/// own timer; `main` before it flushes the Reporter).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver;

/// Who gets the change events. Given at construction: every change, from
/// the first, reaches them, in order.
#[derive(Default)]
pub struct Subscribers {
    /// On the MapWriter's own thread: each event at once.
    pub now: Vec<Recipient<Changed>>,
    /// On another thread: events in batches, at [`PACED_EVERY`].
    pub paced: Vec<Recipient<ChangedBatch>>,
}

impl From<Vec<Recipient<Changed>>> for Subscribers {
    fn from(now: Vec<Recipient<Changed>>) -> Self {
        Subscribers {
            now,
            paced: Vec::new(),
        }
    }
}

/// The paced subscribers and the events waiting for them.
struct Paced {
    to: Vec<Recipient<ChangedBatch>>,
    cadence: Cadence,
    waiting: Vec<Changed>,
    /// A [`Deliver`] is on its way.
    armed: bool,
}

impl Paced {
    fn deliver(&mut self) {
        self.armed = false;
        if self.waiting.is_empty() {
            return;
        }
        self.cadence.sent(Instant::now());
        let batch = ChangedBatch(Arc::new(std::mem::take(&mut self.waiting)));
        for subscriber in &self.to {
            subscriber.do_send(batch.clone());
        }
    }
}

pub struct MapWriter {
    firewall: Firewall,
    clock: SharedClock,
    subscribers: Vec<Recipient<Changed>>,
    paced: Paced,
    /// This actor's own address, for the [`Deliver`] timer (weak: it does
    /// not keep the MapWriter alive).
    me: Option<actix::WeakAddr<MapWriter>>,
    /// The `seq` of the last change published.
    seq: u64,
    /// This node's side of the fleet, when `[fleet]` is on.
    fleet: Option<Arc<Local>>,
    /// When the memory of a burst of large writes goes back to the kernel.
    trim: Trim,
}

impl MapWriter {
    pub fn new(
        firewall: Firewall,
        clock: SharedClock,
        subscribers: impl Into<Subscribers>,
    ) -> Self {
        let subscribers = subscribers.into();
        MapWriter {
            firewall,
            clock,
            subscribers: subscribers.now,
            paced: Paced {
                to: subscribers.paced,
                cadence: Cadence::new(PACED_EVERY, PACED_QUIET),
                waiting: Vec::new(),
                armed: false,
            },
            me: None,
            seq: 0,
            fleet: None,
            trim: Trim::new(trim::QUIET, trim::LARGE),
        }
    }

    /// Starts the MapWriter on `arbiter`. `subscribe` is called there with
    /// the MapWriter's address before it handles any message, and returns
    /// its subscribers: actors that need the address (the Expirer sends
    /// back due entries) are started inside it.
    pub fn start_on<F>(
        arbiter: &ArbiterHandle,
        firewall: Firewall,
        clock: SharedClock,
        subscribe: F,
    ) -> Addr<MapWriter>
    where
        F: FnOnce(&Addr<MapWriter>) -> Subscribers + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let spawned = arbiter.spawn_fn(move || {
            let ctx = Context::new();
            let addr = ctx.address();
            let subscribers = subscribe(&addr);
            ctx.run(MapWriter::new(firewall, clock, subscribers));
            let _ = tx.send(addr);
        });
        assert!(spawned, "the MapWriter's arbiter is running");
        rx.recv().expect("the MapWriter starts")
    }

    /// Journals the durable part of `changes` and publishes them; the
    /// caller answers `results` once the journal has them on disk.
    fn commit<T>(
        &mut self,
        origin: Origin,
        changes: Vec<Change>,
        results: Vec<Result<T, WriteError>>,
    ) -> Committed<T> {
        let durable = self.firewall.log(&changes);
        if let Some(at) = self.trim.wrote(changes.len(), Instant::now()) {
            self.send_at(at, TrimMemory);
        }
        self.publish(origin, changes);
        Committed::new(results, durable)
    }

    /// Sends itself `msg` at `at` (nothing once the MapWriter is gone).
    fn send_at<M>(&self, at: Instant, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        MapWriter: Handler<M>,
    {
        let me = self.me.clone();
        actix::spawn(async move {
            actix::clock::sleep_until(at.into()).await;
            if let Some(me) = me.and_then(|me| me.upgrade()) {
                me.do_send(msg);
            }
        });
    }

    /// Numbers the changes and sends them to every subscriber as one event.
    fn publish(&mut self, origin: Origin, mut changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        for change in &mut changes {
            self.seq += 1;
            change.seq = self.seq;
        }
        let released = match &self.fleet {
            Some(fleet) => fleet.changed(&origin, &changes),
            None => Default::default(),
        };
        let event = Changed {
            origin,
            changes: Arc::new(changes),
        };
        for subscriber in &self.subscribers {
            subscriber.do_send(event.clone());
        }
        self.pace(event);
        if released.iter().any(|ops| !ops.is_empty()) {
            // Words that waited for a change dropped from the outbox: the
            // sync does not wait for this write to be durable.
            drop(self.apply_fleet(released));
        }
    }

    /// Hands `event` to the paced subscribers now, or arms a [`Deliver`]
    /// for when their [`Cadence`] says.
    fn pace(&mut self, event: Changed) {
        if self.paced.to.is_empty() {
            return;
        }
        let now = Instant::now();
        let due = self.paced.cadence.due(event.changes.len(), now);
        self.paced.waiting.push(event);
        if due <= now {
            self.paced.deliver();
        } else if !self.paced.armed {
            self.paced.armed = true;
            self.send_at(due, Deliver);
        }
    }

    /// The time an API change applied now is stamped with: with `[fleet]`,
    /// never before the fleet's last mark ([`Local::stamp`]).
    fn stamp(&self) -> u64 {
        let now = self.clock.now();
        self.fleet.as_ref().map_or(now, |fleet| fleet.stamp(now))
    }

    /// Applies fleet operations of both policies as one change.
    fn apply_fleet(&mut self, ops: PolicyOps) -> Committed<FleetApplied> {
        // Room for both policies first: refused, nothing is applied.
        if let Err(e) = self.firewall.reserve_fleet(ops.iter().flatten()) {
            return Committed::now(vec![Err(e)]);
        }
        let mut done = FleetApplied::default();
        let mut changes = Vec::new();
        let now = self.clock.now();
        for (policy, ops) in Policy::ALL.into_iter().zip(ops) {
            if ops.is_empty() {
                continue;
            }
            let (applied, applied_changes) = self.firewall.apply_fleet(policy, ops, now);
            done.add(&applied);
            changes.extend(applied_changes);
        }
        let cause = changes
            .first()
            .map_or_else(|| Origin::fleet("-"), |c| c.entry.origin.clone());
        self.commit(cause, changes, vec![Ok(done)])
    }
}

/// `count` items refused before anything was applied.
fn refuse<T>(count: usize, e: WriteError) -> Committed<T> {
    Committed::now((0..count).map(|_| Err(e.clone())).collect())
}

impl Actor for MapWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.me = Some(ctx.address().downgrade());
        // The startup (durable entries restored, set files loaded) was a
        // burst of large writes too.
        if let Some(at) = self.trim.wrote(trim::LARGE, Instant::now()) {
            self.send_at(at, TrimMemory);
        }
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Nothing waits in the MapWriter once it is gone.
        self.paced.deliver();
        Running::Stop
    }
}

impl Handler<Deliver> for MapWriter {
    type Result = ();

    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {
        self.paced.deliver();
    }
}

/// A burst of large writes may be over: if so, its freed memory goes back
/// to the kernel (see [`crate::trim`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrimMemory;

impl Handler<TrimMemory> for MapWriter {
    type Result = ();

    fn handle(&mut self, _: TrimMemory, _: &mut Context<Self>) {
        match self.trim.check(Instant::now()) {
            Check::Again(at) => self.send_at(at, TrimMemory),
            // On a thread of its own: it walks every arena, under their
            // locks, and the MapWriter goes on meanwhile.
            Check::Now => {
                let spawned = std::thread::Builder::new()
                    .name("couic-trim".into())
                    .spawn(|| {
                        let started = Instant::now();
                        let released = trim::release_free_memory();
                        tracing::debug!(
                            released,
                            took = ?started.elapsed(),
                            "free memory handed back after a burst of large writes"
                        );
                    });
                if let Err(e) = spawned {
                    tracing::debug!("cannot trim free memory: {e}");
                }
            }
        }
    }
}

impl Handler<AddEntries> for MapWriter {
    type Result = MessageResult<AddEntries>;

    fn handle(&mut self, msg: AddEntries, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.firewall.reserve_adds(&msg.entries, &msg.origin) {
            return MessageResult(refuse(msg.entries.len(), e));
        }
        let now = self.stamp();
        let (results, changes) =
            self.firewall
                .add(msg.policy, msg.entries, &msg.origin, msg.atomic, now);
        MessageResult(self.commit(msg.origin, changes, results))
    }
}

impl Handler<RemoveEntries> for MapWriter {
    type Result = MessageResult<RemoveEntries>;

    fn handle(&mut self, msg: RemoveEntries, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.firewall.reserve_removals(msg.cidrs.len(), &msg.origin) {
            return MessageResult(refuse(msg.cidrs.len(), e));
        }
        let (results, changes) =
            self.firewall
                .remove(msg.policy, msg.cidrs, msg.protect_sets, msg.atomic);
        MessageResult(self.commit(msg.origin, changes, results))
    }
}

/// The messages [`Answered`] may carry: those answered with entries.
pub trait Answerable: Message<Result = Committed<StoredEntry>> + Sized {
    /// Handled by `writer` as when sent alone.
    fn apply(self, writer: &mut MapWriter, ctx: &mut Context<MapWriter>) -> Self::Result;
}

impl Answerable for AddEntries {
    fn apply(self, writer: &mut MapWriter, ctx: &mut Context<MapWriter>) -> Self::Result {
        writer.handle(self, ctx).0
    }
}

impl Answerable for RemoveEntries {
    fn apply(self, writer: &mut MapWriter, ctx: &mut Context<MapWriter>) -> Self::Result {
        writer.handle(self, ctx).0
    }
}

impl<M: Answerable> Handler<Answered<M>> for MapWriter {
    type Result = ();

    /// `M` handled as ever, its results sent once durable.
    fn handle(&mut self, msg: Answered<M>, ctx: &mut Context<Self>) {
        let committed = msg.msg.apply(self, ctx);
        committed.answer(move |results| {
            // The caller may have gone (a closed connection): nothing to do.
            let _ = msg.reply.send(results);
        });
    }
}

impl Handler<ApplyBatch> for MapWriter {
    type Result = MessageResult<ApplyBatch>;

    fn handle(&mut self, msg: ApplyBatch, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.firewall.reserve_ops(&msg.ops, &msg.origin) {
            return MessageResult(refuse(msg.ops.len(), e));
        }
        let now = self.stamp();
        let (results, changes) = batch::apply(
            &mut self.firewall,
            msg.policy,
            msg.ops,
            &msg.origin,
            msg.rules,
            now,
        );
        MessageResult(self.commit(msg.origin, changes, results))
    }
}

impl Handler<GetEntry> for MapWriter {
    type Result = Option<StoredEntry>;

    fn handle(&mut self, msg: GetEntry, _: &mut Context<Self>) -> Self::Result {
        self.firewall.store().get(msg.policy, msg.cidr)
    }
}

impl Handler<ListEntries> for MapWriter {
    type Result = Vec<StoredEntry>;

    fn handle(&mut self, msg: ListEntries, _: &mut Context<Self>) -> Self::Result {
        self.firewall.store().list(msg.policy)
    }
}

impl Handler<ReadSnapshot> for MapWriter {
    type Result = Result<Snapshot, BpfError>;

    fn handle(&mut self, _: ReadSnapshot, _: &mut Context<Self>) -> Self::Result {
        self.firewall.snapshot()
    }
}

impl Handler<CheckAddress> for MapWriter {
    type Result = MessageResult<CheckAddress>;

    fn handle(&mut self, msg: CheckAddress, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.firewall.check(msg.ip))
    }
}

impl Handler<ExpireDue> for MapWriter {
    type Result = usize;

    fn handle(&mut self, msg: ExpireDue, _: &mut Context<Self>) -> Self::Result {
        let changes = self.firewall.expire(&msg.due, self.clock.now());
        let removed = changes.len();
        if removed > 0 {
            tracing::info!("cleanup: removed {removed} expired entries");
        }
        self.publish(Origin::Expiry, changes);
        removed
    }
}

impl Handler<ReloadSets> for MapWriter {
    type Result = Result<ReloadSummary, WriteError>;

    fn handle(&mut self, msg: ReloadSets, _: &mut Context<Self>) -> Self::Result {
        let (result, changes) = self.firewall.reload_sets(&msg.target, self.clock.now());
        match &result {
            Ok(counts) => {
                for (policy, c) in counts {
                    tracing::info!(
                        "sets reload: policy={policy}, updated={}, removed={}, created={}",
                        c.updated,
                        c.removed,
                        c.created
                    );
                    if c.restored > 0 {
                        tracing::info!(
                            "sets reload: policy={policy}, restored {} hidden entries",
                            c.restored
                        );
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, applied = changes.len(), "sets reload failed"),
        }
        self.publish(Origin::Set, changes);
        result
    }
}

impl Handler<DigestOfPeer> for MapWriter {
    type Result = MessageResult<DigestOfPeer>;

    fn handle(&mut self, msg: DigestOfPeer, _: &mut Context<Self>) -> Self::Result {
        let store = self.firewall.store();
        let now = self.clock.now();
        let mut digest = PeerDigest::default();
        if let Some(id) = store.find_origin(&msg.origin) {
            let tags = store.tags(msg.policy);
            for (cidr, record) in store.iter(msg.policy) {
                let live = record.expiration == 0 || record.expiration > now;
                if record.origin == id && live {
                    let tag = tags.name(record.tag);
                    digest.add(cidr, tag, record.expiration);
                }
            }
        }
        MessageResult(digest)
    }
}

impl Handler<ReplacePeerShard> for MapWriter {
    type Result = MessageResult<ReplacePeerShard>;

    fn handle(&mut self, msg: ReplacePeerShard, _: &mut Context<Self>) -> Self::Result {
        let store = self.firewall.store();
        let kept: HashSet<Cidr> = msg.entries.iter().map(|e| e.cidr).collect();
        let mut ops: Vec<Op> = Vec::with_capacity(msg.entries.len());
        if let Some(id) = store.find_origin(&msg.origin) {
            ops.extend(
                store
                    .iter(msg.policy)
                    .filter(|(cidr, record)| {
                        record.origin == id && !kept.contains(cidr) && shard_of(cidr) == msg.shard
                    })
                    .map(|(cidr, _)| Op::Remove(cidr)),
            );
        }
        ops.extend(msg.entries.into_iter().map(Op::Add));
        let rules = Rules {
            protect_sets: true,
            atomic: true,
            mode: batch::Mode::Peer,
        };
        if let Err(e) = self.firewall.reserve_ops(&ops, &msg.origin) {
            return MessageResult(refuse(ops.len(), e));
        }
        let now = self.clock.now();
        let (results, changes) =
            batch::apply(&mut self.firewall, msg.policy, ops, &msg.origin, rules, now);
        MessageResult(self.commit(msg.origin, changes, results))
    }
}

impl Handler<AttachFleet> for MapWriter {
    type Result = ();

    fn handle(&mut self, msg: AttachFleet, _: &mut Context<Self>) {
        self.fleet = Some(msg.0);
    }
}

impl Handler<ApplyFleet> for MapWriter {
    type Result = MessageResult<ApplyFleet>;

    fn handle(&mut self, msg: ApplyFleet, _: &mut Context<Self>) -> Self::Result {
        let ops = match &self.fleet {
            Some(fleet) => fleet.admit(msg.words),
            None => Default::default(),
        };
        MessageResult(self.apply_fleet(ops))
    }
}

impl Handler<FleetAcked> for MapWriter {
    type Result = MessageResult<FleetAcked>;

    fn handle(&mut self, msg: FleetAcked, _: &mut Context<Self>) -> Self::Result {
        let ops = match &self.fleet {
            Some(fleet) => fleet.acked(&msg.acks),
            None => Default::default(),
        };
        MessageResult(self.apply_fleet(ops))
    }
}

impl Handler<Republish> for MapWriter {
    type Result = ();

    fn handle(&mut self, msg: Republish, _: &mut Context<Self>) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        for (policy, entry) in msg.entries {
            // Deleted or replaced here since it was listed: not again.
            let store = self.firewall.store();
            let held = store.get(policy, entry.cidr).as_ref() == Some(&entry)
                || store
                    .shadowed(policy, entry.cidr)
                    .is_some_and(|s| s.view(entry.cidr) == entry);
            if !held {
                continue;
            }
            let released = fleet.republish(policy, &entry);
            if released.iter().any(|ops| !ops.is_empty()) {
                drop(self.apply_fleet(released));
            }
        }
    }
}

impl Handler<FleetHeld> for MapWriter {
    type Result = MessageResult<FleetHeld>;

    fn handle(&mut self, _: FleetHeld, _: &mut Context<Self>) -> Self::Result {
        if let Some(fleet) = &self.fleet {
            fleet.listed();
        }
        let store = self.firewall.store();
        let now = self.clock.now();
        let live = |expiration: u64| expiration == 0 || expiration > now;
        let mut held = Held::default();
        for policy in Policy::ALL {
            for (cidr, record) in store.iter(policy) {
                let kind = store.origin(record.origin);
                if live(record.expiration)
                    && matches!(kind, Origin::Api { .. } | Origin::Fleet { .. })
                    && !store.is_set_record(policy, record)
                {
                    held.entries
                        .push((policy, store.view(policy, cidr, record)));
                }
            }
            held.hidden.extend(
                store
                    .shadows(policy)
                    .filter(|e| live(e.expiration) && matches!(e.origin, Origin::Api { .. }))
                    .map(|e| (policy, e)),
            );
        }
        MessageResult(held)
    }
}

impl Handler<FleetSettled> for MapWriter {
    type Result = Option<u64>;

    fn handle(&mut self, _: FleetSettled, _: &mut Context<Self>) -> Self::Result {
        self.fleet.as_ref()?.settled(self.clock.now())
    }
}

impl Handler<LastSeq> for MapWriter {
    type Result = u64;

    fn handle(&mut self, _: LastSeq, _: &mut Context<Self>) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    //! The MapWriter and the Expirer over in-memory maps: no kernel, no root.

    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::actors::expirer::{Expirer, Sweep};
    use crate::bpf::{rule_map_index, Capacities};
    use crate::clock::ManualClock;
    use crate::firewall::set_plan::SetsTarget;
    use crate::firewall::ItemResult;
    use crate::firewall::{ChangeKind, MemoryMaps};

    const T0: u64 = 1_000_000;

    /// Keeps every message it is sent: the events of a subscriber at
    /// once, or the batches of a paced one.
    struct Keeper<M>(Arc<Mutex<Vec<M>>>);

    impl<M: Unpin + 'static> Actor for Keeper<M> {
        type Context = Context<Self>;
    }

    impl<M: Message<Result = ()> + Unpin + Send + 'static> Handler<M> for Keeper<M> {
        type Result = ();

        fn handle(&mut self, msg: M, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(msg);
        }
    }

    struct Fixture {
        writer: Addr<MapWriter>,
        expirer: Addr<Expirer>,
        maps: MemoryMaps,
        clock: ManualClock,
        events: Arc<Mutex<Vec<Changed>>>,
        batches: Arc<Mutex<Vec<ChangedBatch>>>,
        _arbiter: Arbiter,
    }

    impl Fixture {
        /// A MapWriter on its own arbiter, as in `main`, with the Expirer
        /// and a recorder as subscribers, and a paced recorder of batches.
        fn start(capacity: u32) -> Fixture {
            let maps = MemoryMaps::default();
            let caps = Capacities {
                drop: capacity,
                ignore: capacity,
                tags: 16,
            };
            let firewall = Firewall::new(maps.clone(), caps);
            let clock = ManualClock::new(T0);
            let shared: SharedClock = Arc::new(clock.clone());
            let events = Arc::new(Mutex::new(Vec::new()));
            let recorded = events.clone();
            let batches = Arc::new(Mutex::new(Vec::new()));
            let batched = batches.clone();
            let arbiter = Arbiter::new();
            let (tx, rx) = std::sync::mpsc::channel();
            let expiry_clock = shared.clone();
            let writer = MapWriter::start_on(&arbiter.handle(), firewall, shared, move |w| {
                let expirer = Expirer::new(w.clone(), expiry_clock, Default::default()).start();
                tx.send(expirer.clone()).unwrap();
                Subscribers {
                    now: vec![expirer.recipient(), Keeper(recorded).start().recipient()],
                    paced: vec![Keeper(batched).start().recipient()],
                }
            });
            Fixture {
                writer,
                expirer: rx.recv().unwrap(),
                maps,
                clock,
                events,
                batches,
                _arbiter: arbiter,
            }
        }

        /// Every event published so far: asks for the last seq, then polls
        /// until the recorder holds it.
        async fn events(&self) -> Vec<Changed> {
            let last = self.writer.send(LastSeq).await.unwrap();
            for _ in 0..5000 {
                {
                    let events = self.events.lock().unwrap();
                    if events.last().map_or(0, Changed::last_seq) == last {
                        return events.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("events up to seq {last} never arrived");
        }

        async fn add(&self, policy: Policy, cidrs: &[&str], expiration: u64) -> Vec<ItemResult> {
            let entries = cidrs
                .iter()
                .map(|c| NewEntry {
                    cidr: cidr(c),
                    tag: "t".into(),
                    expiration,
                    metadata: None,
                })
                .collect();
            let msg = AddEntries {
                policy,
                entries,
                origin: Origin::api("admin"),
                atomic: false,
            };
            self.writer.send(msg).await.unwrap().await
        }

        async fn stored(&self, policy: Policy, c: &str) -> Option<StoredEntry> {
            let msg = GetEntry {
                policy,
                cidr: cidr(c),
            };
            self.writer.send(msg).await.unwrap()
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse::<Cidr>().unwrap().normalized()
    }

    /// (seq, kind, cidr) of every change, in the order received.
    fn flat(events: &[Changed]) -> Vec<(u64, ChangeKind, String)> {
        events
            .iter()
            .flat_map(|e| e.changes.iter())
            .map(|c| (c.seq, c.kind, c.entry.cidr.to_string()))
            .collect()
    }

    #[actix::test]
    async fn subscribers_get_every_change_from_the_first_in_order() {
        let f = Fixture::start(64);
        // Sent at once: nothing may be applied before the subscribers listen.
        f.add(Policy::Drop, &["10.0.0.1/32", "10.0.0.2/32"], 0)
            .await;
        let remove = RemoveEntries {
            policy: Policy::Drop,
            cidrs: vec![cidr("10.0.0.1/32")],
            origin: Origin::api("admin"),
            protect_sets: true,
            atomic: false,
        };
        f.writer.send(remove).await.unwrap().await;
        let batch = ApplyBatch {
            policy: Policy::Ignore,
            ops: vec![
                Op::Add(NewEntry {
                    cidr: cidr("192.0.2.0/24"),
                    tag: String::new(),
                    expiration: 0,
                    metadata: None,
                }),
                Op::Remove(cidr("192.0.2.0/24")),
                Op::Add(NewEntry {
                    cidr: cidr("2001:db8::/48"),
                    tag: String::new(),
                    expiration: 0,
                    metadata: None,
                }),
            ],
            origin: Origin::peer("node-b"),
            rules: STRICT,
        };
        let results = f.writer.send(batch).await.unwrap().await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let events = f.events().await;
        assert_eq!(
            flat(&events),
            [
                (1, ChangeKind::Added, "10.0.0.1/32".into()),
                (2, ChangeKind::Added, "10.0.0.2/32".into()),
                (3, ChangeKind::Removed, "10.0.0.1/32".into()),
                (4, ChangeKind::Added, "2001:db8::/48".into()),
            ]
        );
        assert_eq!(events[0].origin, Origin::api("admin"));
        assert_eq!(events[2].origin, Origin::peer("node-b"));
        assert_eq!(events[2].changes[0].entry.origin, Origin::peer("node-b"));
        let table = rule_map_index(Policy::Drop, cidr("10.0.0.2/32"));
        assert_eq!(
            f.maps.rules(table).len(),
            1,
            "the kernel holds what the store holds"
        );
    }

    #[actix::test]
    async fn paced_subscribers_get_every_change_in_order_in_few_batches() {
        let f = Fixture::start(1024);
        // A lone add goes at once; a burst goes in a few batches.
        f.add(Policy::Drop, &["10.0.0.1/32"], 0).await;
        let burst: Vec<_> = (2..=201)
            .map(|i| {
                f.writer.send(AddEntries {
                    policy: Policy::Drop,
                    entries: vec![entry(&format!("10.0.{}.{}/32", i / 256, i % 256))],
                    origin: Origin::api("admin"),
                    atomic: false,
                })
            })
            .collect();
        for sent in futures_util::future::join_all(burst).await {
            sent.unwrap().await;
        }
        let last = f.writer.send(LastSeq).await.unwrap();
        assert_eq!(last, 201);
        let mut seqs = Vec::new();
        for _ in 0..5000 {
            let batches = f.batches.lock().unwrap().clone();
            seqs = batches
                .iter()
                .flat_map(|b| b.0.iter().flat_map(|e| e.changes.iter().map(|c| c.seq)))
                .collect();
            if seqs.last() == Some(&last) {
                assert!(
                    batches.len() <= 40,
                    "201 changes, {} batches: not paced",
                    batches.len()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "every change, in order"
        );
    }

    #[actix::test]
    async fn a_failed_atomic_batch_publishes_nothing_and_changes_nothing() {
        let f = Fixture::start(64);
        f.add(Policy::Drop, &["10.0.0.1/32"], 0).await;
        let before = f.events().await;
        let table = rule_map_index(Policy::Drop, cidr("10.0.0.1/32"));

        // Refused by the plan: a duplicate.
        let dup = ApplyBatch {
            policy: Policy::Drop,
            ops: vec![
                Op::Remove(cidr("10.0.0.1/32")),
                Op::Add(entry("10.0.0.9/32")),
                Op::Add(entry("10.0.0.9/32")),
            ],
            origin: Origin::api("admin"),
            rules: STRICT,
        };
        let results = f.writer.send(dup).await.unwrap().await;
        assert!(results.iter().all(Result::is_err), "{results:?}");

        // Refused by the kernel after the removal was written: the removed
        // entry is put back as it was, and nothing is published.
        f.maps.refuse(cidr("10.0.0.7/32"));
        let refused = ApplyBatch {
            policy: Policy::Drop,
            ops: vec![
                Op::Remove(cidr("10.0.0.1/32")),
                Op::Add(entry("10.0.0.7/32")),
            ],
            origin: Origin::api("admin"),
            rules: STRICT,
        };
        let results = f.writer.send(refused).await.unwrap().await;
        assert!(results.iter().all(Result::is_err), "{results:?}");

        assert_eq!(flat(&f.events().await), flat(&before), "nothing published");
        let kept = f.stored(Policy::Drop, "10.0.0.1/32").await.unwrap();
        assert_eq!((kept.creation, kept.tag.as_str()), (T0, "t"));
        assert_eq!(f.maps.rules(table).len(), 1);
        assert!(f.stored(Policy::Drop, "10.0.0.7/32").await.is_none());
    }

    const STRICT: Rules = Rules {
        protect_sets: true,
        atomic: true,
        mode: batch::Mode::Strict,
    };

    fn entry(c: &str) -> NewEntry {
        NewEntry {
            cidr: cidr(c),
            tag: String::new(),
            expiration: 0,
            metadata: None,
        }
    }

    #[actix::test]
    async fn expiry_removes_due_entries_as_expiry() {
        let f = Fixture::start(64);
        f.add(Policy::Drop, &["10.0.0.1/32"], T0 + 10).await;
        f.add(Policy::Drop, &["10.0.0.2/32"], T0 + 100).await;
        f.add(Policy::Drop, &["10.0.0.3/32"], 0).await;
        // The Expirer indexes from the same events: wait for them.
        f.events().await;
        f.clock.advance(10);
        f.expirer.send(Sweep).await.unwrap();
        let events = f.events().await;
        let last = events.last().unwrap();
        assert_eq!(last.origin, Origin::Expiry);
        assert_eq!(
            flat(std::slice::from_ref(last)),
            [(4, ChangeKind::Removed, "10.0.0.1/32".into())]
        );
        assert_eq!(last.changes[0].entry.origin, Origin::api("admin"));
        assert_eq!(f.maps.len(), 2);
    }

    #[actix::test]
    async fn a_set_line_hides_an_api_entry_and_gives_it_back() {
        let f = Fixture::start(64);
        f.add(Policy::Drop, &["10.0.0.0/24"], 0).await;
        let mut target = SetsTarget::default();
        target
            .policy_mut(Policy::Drop)
            .add_file("bad", [cidr("10.0.0.0/24")]);
        f.writer.send(ReloadSets { target }).await.unwrap().unwrap();
        let events = f.events().await;
        assert_eq!(events[1].origin, Origin::Set);
        let kinds: Vec<_> = flat(&events[1..]).into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(kinds, [ChangeKind::Hidden, ChangeKind::Added]);

        let target = SetsTarget::default();
        f.writer.send(ReloadSets { target }).await.unwrap().unwrap();
        let events = f.events().await;
        let kinds: Vec<_> = flat(&events[2..]).into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(kinds, [ChangeKind::Removed, ChangeKind::Restored]);
        let back = &events[2].changes[1].entry;
        assert_eq!(
            (back.tag.as_str(), &back.origin),
            ("t", &Origin::api("admin"))
        );
    }
}
