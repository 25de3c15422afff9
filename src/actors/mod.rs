//! The daemon's actors. Each owns one part of the state; they talk only
//! through the messages of their own file and `messages.rs`. [`start`]
//! starts them in the daemon's order, for `main` and the tests alike.

pub mod expirer;
pub mod fleet_sync;
pub mod map_writer;
pub mod messages;
pub mod peer_broadcaster;
pub mod reporter;
pub mod set_reloader;

use std::sync::Arc;

use actix::prelude::*;
use couic_common::Policy;

use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::expiry::ExpiryIndex;
use crate::firewall::Firewall;
use crate::reporting::{ReportCounters, ReportQueue};
use expirer::Expirer;
use fleet_sync::{FleetParts, FleetSync};
use map_writer::{AttachFleet, Subscribers};

use crate::fleet::local::Local;
use map_writer::MapWriter;
use messages::Changed;
use peer_broadcaster::{PeerBroadcaster, PeerParts};
use reporter::{Reporter, Sink};

/// What the Reporter is made of, when reporting is on.
pub struct ReporterParts {
    pub sink: Arc<dyn Sink>,
    pub queue: ReportQueue,
    /// [`reporter::TICK`] but in tests.
    pub tick: std::time::Duration,
    pub backoff: Backoff,
    pub counters: Arc<ReportCounters>,
}

/// The running actors.
pub struct Actors {
    pub writer: Addr<MapWriter>,
    pub expirer: Addr<Expirer>,
    pub reporter: Option<Addr<Reporter>>,
    /// The thread of the Reporter and the PeerBroadcasters, when any.
    pub senders_arbiter: Option<Arbiter>,
    /// One per peer, in the order configured.
    pub peers: Vec<Addr<PeerBroadcaster>>,
    /// The fleet sync and its thread, when `[fleet]` is on.
    pub fleet: Option<(Addr<FleetSync>, Arbiter)>,
}

/// Starts the MapWriter on `arbiter` with its subscribers: the Expirer
/// beside it (its events need no other thread woken); the Reporter when
/// given and a PeerBroadcaster per peer on one thread of their own, so
/// that sending batch after batch never waits for the MapWriter to finish
/// a bulk write, and queuing never holds up the MapWriter (they post on
/// the blocking pool; their events come paced, a wake-up of that thread
/// per batch of changes); the FleetSync when given, on a thread of its own;
/// then `also`.
pub fn start(
    arbiter: &ArbiterHandle,
    firewall: Firewall,
    clock: SharedClock,
    reporter: Option<ReporterParts>,
    peers: Vec<PeerParts>,
    fleet: Option<FleetParts>,
    also: Vec<Recipient<Changed>>,
) -> Actors {
    let (tx, rx) = std::sync::mpsc::channel();
    let subscriber_clock = clock.clone();
    let senders_arbiter = (reporter.is_some() || !peers.is_empty()).then(Arbiter::new);
    let senders = senders_arbiter.as_ref().map(Arbiter::handle);
    let fleet_arbiter = fleet.is_some().then(Arbiter::new);
    let fleet_thread = fleet_arbiter.as_ref().map(Arbiter::handle);
    let mut index = ExpiryIndex::default();
    for policy in Policy::ALL {
        for (cidr, record) in firewall.store().iter(policy) {
            index.insert(policy, cidr, record.expiration);
        }
    }
    let writer = MapWriter::start_on(arbiter, firewall, clock, move |writer| {
        let expirer = Expirer::new(writer.clone(), subscriber_clock.clone(), index).start();
        let mut subscribers = Subscribers::from(vec![expirer.clone().recipient()]);
        // Made above whenever there is a Reporter or a peer.
        let senders = senders.as_ref();
        let reporter = reporter.map(|parts| {
            let handle = senders.expect("a thread for the senders");
            let ReporterParts {
                sink,
                queue,
                tick,
                backoff,
                counters,
            } = parts;
            let clock = subscriber_clock.clone();
            Reporter::start_in_arbiter(handle, move |_| {
                Reporter::new(queue, tick, sink, backoff, counters, clock)
            })
        });
        if let Some(reporter) = &reporter {
            subscribers.paced.push(reporter.clone().recipient());
        }
        let peers: Vec<Addr<PeerBroadcaster>> = peers
            .into_iter()
            .map(|parts| {
                let handle = senders.expect("a thread for the senders");
                let (writer, clock) = (writer.clone(), subscriber_clock.clone());
                PeerBroadcaster::start_in_arbiter(handle, move |_| {
                    PeerBroadcaster::new(parts, writer, clock)
                })
            })
            .collect();
        subscribers
            .paced
            .extend(peers.iter().map(|p| p.clone().recipient()));
        let fleet = fleet.map(|mut parts| {
            let handle = fleet_thread.as_ref().expect("a thread for the fleet");
            let local = Arc::new(Local::new(
                &parts.config.node_name(),
                parts.config.queue_capacity,
                parts.counters.clone(),
            ));
            if let Some(marks) = &parts.marks {
                local.keep_above(marks.floor());
            }
            local.carry(std::mem::take(&mut parts.carried));
            local.suspect(std::mem::take(&mut parts.suspects));
            // Queued first: before any change reaches the MapWriter.
            writer.do_send(AttachFleet(local.clone()));
            let (writer, clock) = (writer.clone(), subscriber_clock.clone());
            FleetSync::start_in_arbiter(handle, move |_| {
                FleetSync::new(parts, local, writer, clock)
            })
        });
        subscribers.now.extend(also);
        tx.send((expirer, reporter, peers, fleet))
            .expect("start waits for its subscribers");
        subscribers
    });
    let (expirer, reporter, peers, fleet) = rx.recv().expect("the subscribers were started");
    Actors {
        writer,
        expirer,
        reporter,
        senders_arbiter,
        peers,
        fleet: fleet.zip(fleet_arbiter),
    }
}
