//! Statistics objects of `/v1/stats`, `/v1/stats/tags/{policy}` and `/v1/metrics`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The XDP actions, in kernel order (index = action value).
pub const XDP_ACTIONS: [&str; 5] = [
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_TX",
    "XDP_REDIRECT",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PktStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub drop_cidr_count: usize,
    pub ignore_cidr_count: usize,
    /// Always the five keys of [`XDP_ACTIONS`].
    pub xdp: BTreeMap<String, PktStats>,
    /// Webhook reports, when reporting is enabled (not in the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<ReportStats>,
}

/// The webhook reporter's counters since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportStats {
    /// Waiting to be sent, the batch being retried included.
    pub queued: u64,
    pub sent: u64,
    /// Dropped because the queue was full (the newest go).
    pub dropped_queue_full: u64,
    /// Dropped because the webhook refused their batch for good (4xx other
    /// than 408 and 429).
    pub dropped_refused: u64,
    /// Attempts that failed and were retried.
    pub failed_attempts: u64,
    /// Since the last batch delivered; `null` before the first.
    pub seconds_since_success: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagStats {
    pub tags: BTreeMap<String, PktStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub stats: Stats,
    pub drop_tags: TagStats,
    pub ignore_tags: TagStats,
}
