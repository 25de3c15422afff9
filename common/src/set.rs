//! Static sets as the API shows them (§3.5, §7).

use serde::{Deserialize, Serialize};

pub const SET_FILE_EXTENSION: &str = "couic";
/// Largest set file accepted, in bytes (5 MiB).
pub const SET_MAX_FILE_SIZE: u64 = 5 * 1024 * 1024;

/// A set and its entries as written (not normalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub name: String,
    pub entries: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSummary {
    pub name: String,
    pub entry_count: usize,
    pub file_size: u64,
}
