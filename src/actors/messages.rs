//! Messages shared by several actors: the change event every subscriber
//! receives.

use std::sync::Arc;

use actix::prelude::*;

use crate::firewall::Change;

/// What caused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOrigin {
    /// An API call by this client.
    Api { client: String },
    /// A batch from a peer node.
    Peer,
    /// A set reload.
    Set,
    /// The expiry of entries.
    Expiry,
}

/// Changes applied together, published once to every subscriber, in the
/// order the MapWriter applied them.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Changed {
    pub origin: EventOrigin,
    /// Shared, not copied: a bulk request publishes one change per item.
    pub changes: Arc<Vec<Change>>,
}
