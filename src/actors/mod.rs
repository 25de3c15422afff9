//! The daemon's actors. Each owns one part of the state; they talk only
//! through the messages of their own file and `messages.rs`. [`start`]
//! starts them in the daemon's order, for `main` and the tests alike.

pub mod expirer;
pub mod map_writer;
pub mod messages;
pub mod peer_broadcaster;
pub mod reporter;
pub mod set_reloader;

use std::sync::Arc;

use actix::prelude::*;

use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::firewall::Firewall;
use crate::reporting::{ReportCounters, ReportQueue};
use expirer::Expirer;
use map_writer::MapWriter;
use messages::Changed;
use peer_broadcaster::{PeerBroadcaster, PeerParts};
use reporter::{Reporter, Sink};

/// What the Reporter is made of, when reporting is on.
pub struct ReporterParts {
    pub sink: Arc<dyn Sink>,
    pub queue: ReportQueue,
    pub backoff: Backoff,
    pub counters: Arc<ReportCounters>,
}

/// The running actors.
pub struct Actors {
    pub writer: Addr<MapWriter>,
    pub expirer: Addr<Expirer>,
    pub reporter: Option<Addr<Reporter>>,
    /// One per peer, in the order configured.
    pub peers: Vec<Addr<PeerBroadcaster>>,
}

/// Starts the MapWriter on `arbiter` with its subscribers beside it: the
/// Expirer, the Reporter when given, a PeerBroadcaster per peer, then
/// `also`. Change events reach them
/// without waking another thread on every API write; the Reporter only
/// queues there, and cuts, serialises and sends on the blocking pool.
pub fn start(
    arbiter: &ArbiterHandle,
    firewall: Firewall,
    clock: SharedClock,
    reporter: Option<ReporterParts>,
    peers: Vec<PeerParts>,
    also: Vec<Recipient<Changed>>,
) -> Actors {
    let (tx, rx) = std::sync::mpsc::channel();
    let subscriber_clock = clock.clone();
    let writer = MapWriter::start_on(arbiter, firewall, clock, move |writer| {
        let expirer = Expirer::new(writer.clone(), subscriber_clock.clone()).start();
        let mut subscribers = vec![expirer.clone().recipient()];
        let reporter = reporter.map(|parts| {
            let ReporterParts {
                sink,
                queue,
                backoff,
                counters,
            } = parts;
            Reporter::new(queue, sink, backoff, counters, subscriber_clock.clone()).start()
        });
        if let Some(reporter) = &reporter {
            subscribers.push(reporter.clone().recipient());
        }
        let peers: Vec<Addr<PeerBroadcaster>> = peers
            .into_iter()
            .map(|parts| {
                PeerBroadcaster::new(parts, writer.clone(), subscriber_clock.clone()).start()
            })
            .collect();
        subscribers.extend(peers.iter().map(|p| p.clone().recipient()));
        subscribers.extend(also);
        tx.send((expirer, reporter, peers))
            .expect("start waits for its subscribers");
        subscribers
    });
    let (expirer, reporter, peers) = rx.recv().expect("the subscribers were started");
    Actors {
        writer,
        expirer,
        reporter,
        peers,
    }
}
