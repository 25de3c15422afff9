//! MapWriter: owns the [`Firewall`] (entry store + the only writable BPF map
//! handles). The API, the Expirer and later the set loader and peer receiver
//! send it changes; it applies them, answers with per-item results, then
//! publishes one [`Changed`] event to its subscribers.

use std::net::IpAddr;
use std::sync::Arc;

use actix::prelude::*;
use couic_common::{Cidr, Policy};

use crate::actors::messages::{Changed, Origin};
use crate::batch::{self, Op};
use crate::bpf::BpfError;
use crate::clock::SharedClock;
use crate::firewall::set_plan::{ReloadSummary, SetsTarget};
use crate::firewall::{Change, Firewall, ItemResult, NewEntry, Snapshot, Verdict, WriteError};
use crate::store::StoredEntry;

/// Add entries, in order. `atomic`: all or none.
#[derive(Message)]
#[rtype(result = "Vec<ItemResult>")]
pub struct AddEntries {
    pub policy: Policy,
    pub entries: Vec<NewEntry>,
    pub origin: Origin,
    pub atomic: bool,
}

/// Remove entries by CIDR, in order. `protect_sets` refuses set entries.
#[derive(Message)]
#[rtype(result = "Vec<ItemResult>")]
pub struct RemoveEntries {
    pub policy: Policy,
    pub cidrs: Vec<Cidr>,
    pub origin: Origin,
    pub protect_sets: bool,
    pub atomic: bool,
}

/// An ordered batch of adds and removes (peer batches, the bulk route),
/// played against the store before anything is written; see [`batch`].
#[derive(Message)]
#[rtype(result = "Vec<Result<(), WriteError>>")]
pub struct ApplyBatch {
    pub policy: Policy,
    pub ops: Vec<Op>,
    pub origin: Origin,
    pub protect_sets: bool,
    pub atomic: bool,
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

/// The sequence number of the last change published (0 before any).
#[derive(Message)]
#[rtype(result = "u64")]
pub struct LastSeq;

pub struct MapWriter {
    firewall: Firewall,
    clock: SharedClock,
    /// Given at construction: every change, from the first, reaches them.
    subscribers: Vec<Recipient<Changed>>,
    /// The `seq` of the last change published.
    seq: u64,
}

impl MapWriter {
    pub fn new(
        firewall: Firewall,
        clock: SharedClock,
        subscribers: Vec<Recipient<Changed>>,
    ) -> Self {
        MapWriter {
            firewall,
            clock,
            subscribers,
            seq: 0,
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
        F: FnOnce(&Addr<MapWriter>) -> Vec<Recipient<Changed>> + Send + 'static,
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

    /// Numbers the changes and sends them to every subscriber as one event.
    fn publish(&mut self, origin: Origin, mut changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        for change in &mut changes {
            self.seq += 1;
            change.seq = self.seq;
        }
        let event = Changed {
            origin,
            changes: Arc::new(changes),
        };
        for subscriber in &self.subscribers {
            subscriber.do_send(event.clone());
        }
    }
}

impl Actor for MapWriter {
    type Context = Context<Self>;
}

impl Handler<AddEntries> for MapWriter {
    type Result = Vec<ItemResult>;

    fn handle(&mut self, msg: AddEntries, _: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let (results, changes) =
            self.firewall
                .add(msg.policy, msg.entries, &msg.origin, msg.atomic, now);
        self.publish(msg.origin, changes);
        results
    }
}

impl Handler<RemoveEntries> for MapWriter {
    type Result = Vec<ItemResult>;

    fn handle(&mut self, msg: RemoveEntries, _: &mut Context<Self>) -> Self::Result {
        let (results, changes) =
            self.firewall
                .remove(msg.policy, msg.cidrs, msg.protect_sets, msg.atomic);
        self.publish(msg.origin, changes);
        results
    }
}

impl Handler<ApplyBatch> for MapWriter {
    type Result = Vec<Result<(), WriteError>>;

    fn handle(&mut self, msg: ApplyBatch, _: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let (results, changes) = batch::apply(
            &mut self.firewall,
            msg.policy,
            msg.ops,
            &msg.origin,
            msg.protect_sets,
            msg.atomic,
            now,
        );
        self.publish(msg.origin, changes);
        results
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

impl Handler<LastSeq> for MapWriter {
    type Result = u64;

    fn handle(&mut self, _: LastSeq, _: &mut Context<Self>) -> u64 {
        self.seq
    }
}
