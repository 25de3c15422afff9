//! What goes through the firewall: entries to add, the changes it
//! publishes (the change bus's payload), and why a write fails.

use std::sync::Arc;

use actix::Message;

use couic_common::{Cidr, Metadata, Policy};

use crate::origin::Origin;
use crate::store::StoredEntry;

/// An entry to add; `cidr` is normalised, `tag` is "" when untagged.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub cidr: Cidr,
    pub tag: String,
    pub expiration: u64,
    /// Only carried along to the change event (reports).
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("{0} already exists")]
    Duplicate(Cidr),
    #[error("couic underlying ebpf map is full: max {max} entries")]
    Full { max: usize },
    #[error("cidr `{0}` not found")]
    NotFound(Cidr),
    #[error("Entry defined in a set cannot be removed")]
    SetEntry(Cidr),
    #[error("not applied: another item of the atomic batch failed")]
    Aborted,
    /// The state store could not take the change (nothing applied), or
    /// could not sync it (see [`crate::journal`]).
    #[error(transparent)]
    Storage(Arc<crate::journal::JournalError>),
    #[error("kernel map {map}: {source}")]
    Kernel {
        map: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    /// An API or peer entry kept aside under a set entry of the same CIDR
    /// (which is published as `Added` next). Not a delete: it comes back
    /// when the set line goes.
    Hidden,
    /// A hidden entry back in place of the set entry removed before it.
    Restored,
}

impl ChangeKind {
    /// Whether the entry is in the store after the change.
    pub fn present(self) -> bool {
        matches!(self, ChangeKind::Added | ChangeKind::Restored)
    }
}

/// One applied change, as published to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// One more than the change published before it, from 1; given by the
    /// MapWriter when it publishes (0 until then).
    pub seq: u64,
    pub kind: ChangeKind,
    pub policy: Policy,
    pub entry: StoredEntry,
    /// Boxed: most entries have none, and a bulk request publishes a
    /// change per item.
    pub metadata: Option<Box<Metadata>>,
}

impl Change {
    /// A change without metadata, not numbered yet.
    pub fn of(kind: ChangeKind, policy: Policy, entry: StoredEntry) -> Change {
        Change {
            seq: 0,
            kind,
            policy,
            entry,
            metadata: None,
        }
    }
}

pub type ItemResult = Result<StoredEntry, WriteError>;

/// Entries to write at their CIDRs, checked against the store by the
/// caller: new, or in place of the entries there (see
/// [`Firewall::write_puts`]). The items are the request's own: a bulk add
/// moves its vector through without a copy.
#[derive(Debug)]
pub(crate) struct Puts {
    pub items: Vec<NewEntry>,
    /// Creation and origin: the same for every item, or one per item.
    pub stamp: Stamp,
    /// How an entry replaced, if any, is published.
    pub replaced_as: ChangeKind,
    /// How an entry put is published.
    pub put_as: ChangeKind,
}

#[derive(Debug)]
pub(crate) enum Stamp {
    Same {
        creation: u64,
        origin: Origin,
    },
    /// Entries put back as they were (a set line gone).
    Each(Vec<(u64, Origin)>),
}

impl Stamp {
    pub fn of(&self, i: usize) -> (u64, &Origin) {
        match self {
            Stamp::Same { creation, origin } => (*creation, origin),
            Stamp::Each(each) => (each[i].0, &each[i].1),
        }
    }
}

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

/// Events in order, handed at once to a subscriber on another thread
/// (one wake-up of it for the lot).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ChangedBatch(pub Arc<Vec<Changed>>);

impl Changed {
    /// The sequence number of the last change of the event.
    pub fn last_seq(&self) -> u64 {
        self.changes.last().map_or(0, |c| c.seq)
    }
}
