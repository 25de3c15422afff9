//! Entries as the API returns them, the add request, metadata and reports.

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// An entry of a policy (§3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix seconds at which this node stored the entry.
    pub creation: u64,
    /// Normalised network, `addr/len`.
    pub cidr: String,
    /// `null` in POST responses and `add` reports when untagged, `""` elsewhere.
    pub tag: Option<String>,
    /// Absolute Unix seconds; 0 = never.
    pub expiration: u64,
}

/// Free-form context an API client attaches to an add; only reported (§3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub kind: String,
    pub detail: String,
    #[serde(default)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Body of `POST /v1/{policy}` (§3.2). `cidr` and `tag` stay text here: a bad
/// value is a 422 with a field error, while a body serde cannot read is a 400.
/// Derived deserialisation also takes the positional array form
/// `["cidr", "tag", expiration, metadata?]`, which the reference accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryRequest {
    pub cidr: String,
    #[serde(default)]
    pub tag: Option<String>,
    pub expiration: u64,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportAction {
    Add,
    Remove,
}

/// Request header of a webhook POST naming its batch: unique per batch and
/// the same on each retry of it, so that a receiver counts a batch once.
/// Reference daemons send none.
pub const REPORT_BATCH_HEADER: &str = "X-Couic-Batch";
/// Request header of a webhook POST naming the node that sent it.
pub const REPORT_NODE_HEADER: &str = "X-Couic-Node";

/// One element of a webhook body (§3.5, §11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub action: ReportAction,
    pub policy: Policy,
    pub entry: Entry,
    pub metadata: Option<Metadata>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_accepts_object_and_positional_forms() {
        let a: EntryRequest =
            serde_json::from_str(r#"{"cidr":"1.1.1.1/32","expiration":0}"#).unwrap();
        let b: EntryRequest = serde_json::from_str(r#"["1.1.1.1/32", null, 0]"#).unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<EntryRequest>(r#"{"cidr":"1.1.1.1/32"}"#).is_err());
        assert!(
            serde_json::from_str::<EntryRequest>(r#"{"cidr":"1.1.1.1/32","expiration":-1}"#)
                .is_err()
        );
        let bad_meta = r#"{"cidr":"1.1.1.1/32","expiration":0,"metadata":{"kind":"k","detail":"d","extra":[1]}}"#;
        assert!(serde_json::from_str::<EntryRequest>(bad_meta).is_err());
    }
}
