//! `GET /v1/fleet`: this node's sync with its fleet (beyond the reference).

use serde::{Deserialize, Serialize};

/// Never a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// `[fleet] enabled`; every other field is empty or 0 when false.
    pub enabled: bool,
    pub node: String,
    pub bucket: String,
    pub servers: Vec<String>,
    /// Connected to a server now.
    pub connected: bool,
    /// The catch-up with the bucket is done since the last (re)connection.
    pub caught_up: bool,
    /// The revision of the last word of the bucket applied here.
    pub last_revision: u64,
    /// Revisions of the bucket not applied here yet (once caught up, as
    /// of the last asking: once a second).
    pub lag: u64,
    /// This node's changes waiting to be written to the bucket.
    pub queued: u64,
    /// This node's changes dropped when the queue was full.
    pub dropped: u64,
    /// This node's changes written to the bucket.
    pub published: u64,
    /// Words of the bucket applied here (this node's own included).
    pub applied: u64,
    /// Words skipped as not couic's or malformed.
    pub rejected: u64,
    /// Expired keys purged from the bucket by this node.
    pub purged: u64,
    /// Delete markers older than `tombstone_retention` removed by this
    /// node.
    pub swept: u64,
    /// Words read from the bucket one at a time because no notice brought
    /// them: a lost notice, or a word another program wrote.
    pub fetched: u64,
    pub reconnects: u64,
    /// The last failure, and when (Unix seconds); null when none yet.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}
