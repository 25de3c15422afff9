//! Messages shared by several actors: the change event every subscriber
//! of the MapWriter receives (defined with the changes themselves, in
//! `firewall`, so that the plain structs that read it need no actor).

pub use crate::firewall::{Changed, ChangedBatch};
pub use crate::origin::Origin;
