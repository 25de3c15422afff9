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
