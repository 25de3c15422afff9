//! Where a change comes from, and so where an entry came from: one type for
//! the store, the change bus and everything that subscribes to it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An API call by this client.
    Api { client: Arc<str> },
    /// A batch sent by this peer client (the API client the peer node
    /// authenticates as).
    Peer { client: Arc<str> },
    /// A word of the fleet's bucket written by this node (`[fleet]`).
    Fleet { node: Arc<str> },
    /// A set file.
    Set,
    /// Entries leaving at their expiration. Only ever the cause of a change:
    /// an entry keeps the origin it was added with.
    Expiry,
}

impl Origin {
    pub fn api(client: &str) -> Origin {
        Origin::Api {
            client: client.into(),
        }
    }

    pub fn peer(client: &str) -> Origin {
        Origin::Peer {
            client: client.into(),
        }
    }

    pub fn fleet(node: &str) -> Origin {
        Origin::Fleet { node: node.into() }
    }

    /// The API client behind an API or peer change, the node behind a
    /// fleet one.
    pub fn client(&self) -> Option<&str> {
        match self {
            Origin::Api { client } | Origin::Peer { client } => Some(client),
            Origin::Fleet { node } => Some(node),
            Origin::Set | Origin::Expiry => None,
        }
    }

    /// As the API and the logs name it: `api`, `peer`, `fleet`, `set`,
    /// `expiry`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Api { .. } => "api",
            Origin::Peer { .. } => "peer",
            Origin::Fleet { .. } => "fleet",
            Origin::Set => "set",
            Origin::Expiry => "expiry",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client() {
            Some(client) => write!(f, "{}:{client}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// An interned [`Origin`], two bytes, as the store's records keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginId(u16);

impl OriginId {
    /// Set entries: fixed, so a record says it is one without a lookup.
    pub const SET: OriginId = OriginId(0);
}

/// Every origin the store has seen, by id. Origins are few (one per API
/// client and peer client that ever wrote, plus sets) and never forgotten:
/// a client deleted and created again gets its old id back.
#[derive(Debug)]
pub struct OriginTable {
    origins: Vec<Origin>,
    ids: HashMap<Origin, OriginId>,
}

impl Default for OriginTable {
    fn default() -> Self {
        OriginTable {
            origins: vec![Origin::Set],
            ids: HashMap::from([(Origin::Set, OriginId::SET)]),
        }
    }
}

impl OriginTable {
    /// The id of `origin`, given one if it is new. Past 65,535 distinct
    /// origins (a client created and used that many times), the newest
    /// share the last id: entries stay correct, only their named origin
    /// blurs.
    pub fn intern(&mut self, origin: &Origin) -> OriginId {
        if let Some(&id) = self.ids.get(origin) {
            return id;
        }
        let Ok(n) = u16::try_from(self.origins.len()) else {
            return OriginId(u16::MAX);
        };
        let id = OriginId(n);
        self.origins.push(origin.clone());
        self.ids.insert(origin.clone(), id);
        id
    }

    /// The id of `origin` if it was ever seen, without giving it one.
    pub fn find(&self, origin: &Origin) -> Option<OriginId> {
        self.ids.get(origin).copied()
    }

    pub fn get(&self, id: OriginId) -> &Origin {
        &self.origins[usize::from(id.0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_sets_are_fixed() {
        let mut table = OriginTable::default();
        assert_eq!(table.intern(&Origin::Set), OriginId::SET);
        let a = table.intern(&Origin::api("admin"));
        let p = table.intern(&Origin::peer("admin"));
        assert_ne!(a, p, "an API and a peer client of one name differ");
        assert_eq!(table.intern(&Origin::api("admin")), a);
        assert_eq!(table.get(p), &Origin::peer("admin"));
        assert_eq!(table.get(OriginId::SET), &Origin::Set);
    }

    #[test]
    fn display_names_the_kind_and_client() {
        assert_eq!(Origin::api("f2b").to_string(), "api:f2b");
        assert_eq!(Origin::peer("node-b").to_string(), "peer:node-b");
        assert_eq!(Origin::Expiry.to_string(), "expiry");
    }
}
