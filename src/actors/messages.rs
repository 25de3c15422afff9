//! Messages shared by several actors: the change event every subscriber
//! of the MapWriter receives.

use std::sync::Arc;

use actix::prelude::*;

use crate::firewall::Change;
pub use crate::origin::Origin;

/// Changes applied together, published once to every subscriber, in the
/// order the MapWriter applied them. Their `seq` numbers follow on from the
/// event before, with no gap: a subscriber that sees one missing has lost
/// an event.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Changed {
    /// What caused the changes (an API client, a peer, a set reload, expiry).
    pub origin: Origin,
    /// Shared, not copied: a bulk request publishes one change per item.
    pub changes: Arc<Vec<Change>>,
}

impl Changed {
    /// The sequence number of the last change of the event.
    pub fn last_seq(&self) -> u64 {
        self.changes.last().map_or(0, |c| c.seq)
    }
}
