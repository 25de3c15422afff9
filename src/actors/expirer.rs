//! Expirer: owns the [`ExpiryIndex`]. It learns of every entry with an
//! expiration from the MapWriter's change events and, every
//! [`SWEEP_PERIOD`], sends the due ones back to the MapWriter in chunks, so
//! requests keep being served while a large wave of entries expires.

use std::time::Duration;

use actix::prelude::*;

use crate::actors::map_writer::{ExpireDue, MapWriter};
use crate::actors::messages::Changed;
use crate::clock::SharedClock;
use crate::expiry::ExpiryIndex;

/// How often due entries are looked for: entries leave well within 1 s.
pub const SWEEP_PERIOD: Duration = Duration::from_millis(250);
/// Entries sent to the MapWriter per message.
pub const SWEEP_CHUNK: usize = 4096;

/// Sweep now (the interval sends it too; tests send it after moving the clock).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sweep;

pub struct Expirer {
    index: ExpiryIndex,
    writer: Addr<MapWriter>,
    clock: SharedClock,
    /// A sweep is waiting for the MapWriter: do not start another.
    busy: bool,
}

impl Expirer {
    /// An Expirer that knows `index` already: the entries put in before
    /// the actors started (durable entries, set files).
    pub fn new(writer: Addr<MapWriter>, clock: SharedClock, index: ExpiryIndex) -> Self {
        Expirer {
            index,
            writer,
            clock,
            busy: false,
        }
    }
}

impl Actor for Expirer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_PERIOD, |_, ctx| ctx.notify(Sweep));
    }
}

impl Handler<Changed> for Expirer {
    type Result = ();

    fn handle(&mut self, msg: Changed, _: &mut Context<Self>) {
        for change in msg.changes.iter() {
            let e = &change.entry;
            if change.kind.present() {
                self.index.insert(change.policy, e.cidr, e.expiration);
            } else {
                self.index.remove(change.policy, e.cidr, e.expiration);
            }
        }
    }
}

impl Handler<Sweep> for Expirer {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) -> Self::Result {
        let due = if self.busy {
            Vec::new()
        } else {
            self.index.pop_due(self.clock.now(), SWEEP_CHUNK)
        };
        if due.is_empty() {
            return Box::pin(fut::ready(()));
        }
        self.busy = true;
        let more = due.len() == SWEEP_CHUNK;
        Box::pin(
            self.writer
                .send(ExpireDue { due })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.busy = false;
                    if let Err(e) = res {
                        tracing::error!(error = %e, "expiry: the MapWriter is gone");
                    } else if more {
                        ctx.notify(Sweep);
                    }
                }),
        )
    }
}
