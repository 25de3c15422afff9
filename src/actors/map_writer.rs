//! MapWriter: owns the [`Firewall`] (entry store + the only writable BPF map
//! handles). The API, the Expirer and later the set loader and peer receiver
//! send it changes; it applies them, answers with per-item results, then
//! publishes one [`Changed`] event to its subscribers.

use std::net::IpAddr;
use std::sync::Arc;

use actix::prelude::*;
use couic_common::{Cidr, Policy};

use crate::actors::messages::{Changed, EventOrigin};
use crate::batch::{self, Op};
use crate::bpf::BpfError;
use crate::clock::SharedClock;
use crate::firewall::{Change, Firewall, ItemResult, NewEntry, Snapshot, Verdict, WriteError};
use crate::sets::{ReloadSummary, SetsTarget};
use crate::store::{Origin, StoredEntry};

/// Add entries, in order. `atomic`: all or none.
#[derive(Message)]
#[rtype(result = "Vec<ItemResult>")]
pub struct AddEntries {
    pub policy: Policy,
    pub entries: Vec<NewEntry>,
    pub origin: EventOrigin,
    pub atomic: bool,
}

/// Remove entries by CIDR, in order. `protect_sets` refuses set entries.
#[derive(Message)]
#[rtype(result = "Vec<ItemResult>")]
pub struct RemoveEntries {
    pub policy: Policy,
    pub cidrs: Vec<Cidr>,
    pub origin: EventOrigin,
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
    pub origin: EventOrigin,
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
/// [`EventOrigin::Set`].
#[derive(Message)]
#[rtype(result = "Result<ReloadSummary, WriteError>")]
pub struct ReloadSets {
    pub target: SetsTarget,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub subscriber: Recipient<Changed>,
}

pub struct MapWriter {
    firewall: Firewall,
    clock: SharedClock,
    subscribers: Vec<Recipient<Changed>>,
}

impl MapWriter {
    pub fn new(firewall: Firewall, clock: SharedClock) -> Self {
        MapWriter {
            firewall,
            clock,
            subscribers: Vec::new(),
        }
    }

    fn publish(&self, origin: EventOrigin, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
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

fn store_origin(origin: &EventOrigin) -> Origin {
    match origin {
        EventOrigin::Peer => Origin::Peer,
        EventOrigin::Set => Origin::Set,
        EventOrigin::Api { .. } | EventOrigin::Expiry => Origin::Api,
    }
}

impl Handler<AddEntries> for MapWriter {
    type Result = Vec<ItemResult>;

    fn handle(&mut self, msg: AddEntries, _: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let (results, changes) = self.firewall.add(
            msg.policy,
            msg.entries,
            store_origin(&msg.origin),
            msg.atomic,
            now,
        );
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
        let origin = store_origin(&msg.origin);
        let (results, changes) = batch::apply(
            &mut self.firewall,
            msg.policy,
            msg.ops,
            origin,
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
        self.publish(EventOrigin::Expiry, changes);
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
        self.publish(EventOrigin::Set, changes);
        result
    }
}

impl Handler<Subscribe> for MapWriter {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribers.push(msg.subscriber);
    }
}
