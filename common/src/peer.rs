//! Peer batch jobs (§3.4), exchanged on `POST /v1/{policy}/peer`.

use serde::{Deserialize, Serialize};

use crate::entry::Metadata;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerAction {
    Add,
    Remove,
}

/// The entry part of a job; text fields are validated by the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub cidr: String,
    #[serde(default)]
    pub tag: Option<String>,
    pub expiration: u64,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerJob {
    pub action: PeerAction,
    pub entry: PeerEntry,
}
