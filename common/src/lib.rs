//! Wire and domain types of couic, defined once for the daemon, couicctl and
//! couic-report. Newtypes validate when they are parsed, so bad input is
//! refused at the door (clap, serde or the API) with the contract's message.

pub mod check;
pub mod cidr;
pub mod client;
pub mod entry;
pub mod error;
pub mod fleet;
pub mod names;
pub mod outbound;
pub mod peer;
pub mod policy;
pub mod set;
pub mod stats;
pub mod tag;
pub mod uds;

pub use check::{CheckReason, CheckResult, Origin, Verdict};
pub use cidr::{Cidr, CidrError};
pub use client::{Client, ClientRequest, Group};
pub use entry::{
    Entry, EntryRequest, Metadata, Report, ReportAction, REPORT_BATCH_HEADER, REPORT_NODE_HEADER,
};
pub use error::{ErrorBody, ErrorCode, FieldError};
pub use fleet::FleetStatus;
pub use names::{ClientName, NameError, SetName};
pub use peer::{
    PeerAction, PeerDigest, PeerEntry, PeerJob, PeerState, PeerStatus, ShardDigest, SHARDS,
};
pub use policy::Policy;
pub use set::{Set, SetSummary, SET_FILE_EXTENSION, SET_MAX_FILE_SIZE};
pub use stats::{Metrics, PktStats, ReportStats, Stats, TagStats, XDP_ACTIONS};
pub use tag::{wire_tag, Tag, TagError, SET_TAG_SUFFIX};
