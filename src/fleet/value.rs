//! Bucket values: an entry's last word as JSON,
//! `{"node","tag","creation","expiration","metadata"}`, with `tag` `null`
//! when untagged and `metadata` left out when there is none. A delete is
//! the bucket's own delete marker (no value). Values from the bucket are
//! checked as the API checks a client's: a bad one is skipped and counted,
//! never applied.

use couic_common::{Cidr, Metadata, Policy, Tag};
use serde::{Deserialize, Serialize};

use crate::firewall::NewEntry;

/// The largest value couic writes or reads (a put with its metadata).
pub const MAX_VALUE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    /// The node whose API took the change.
    pub node: String,
    pub tag: Option<String>,
    /// Unix seconds.
    pub creation: u64,
    /// Unix seconds; 0 never.
    pub expiration: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValueError {
    #[error("value of {0} bytes, over {MAX_VALUE}")]
    TooLarge(usize),
    #[error("value is not couic's JSON: {0}")]
    Json(String),
    #[error("bad tag: {0}")]
    Tag(String),
    #[error("bad node name")]
    Node,
}

impl Value {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a value always serialises")
    }

    /// A value read from the bucket, checked.
    pub fn parse(bytes: &[u8]) -> Result<Value, ValueError> {
        if bytes.len() > MAX_VALUE {
            return Err(ValueError::TooLarge(bytes.len()));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ValueError::Json(e.to_string()))?;
        value.check()?;
        Ok(value)
    }

    /// Checks what JSON alone does not: the tag's rules and the node's
    /// name.
    pub fn check(&self) -> Result<(), ValueError> {
        Tag::parse_optional(self.tag.as_deref()).map_err(|e| ValueError::Tag(e.to_string()))?;
        if !super::valid_node(&self.node) {
            return Err(ValueError::Node);
        }
        Ok(())
    }

    /// The entry it holds for `cidr`.
    pub fn into_entry(self, cidr: Cidr) -> NewEntry {
        NewEntry {
            cidr,
            tag: self.tag.unwrap_or_default(),
            expiration: self.expiration,
            metadata: self.metadata,
        }
    }

    /// Whether the entry it holds is gone by `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expiration != 0 && self.expiration <= now
    }
}

/// One word of the bucket, as the watch delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub policy: Policy,
    pub cidr: Cidr,
    pub revision: u64,
    /// `None`: a delete or purge marker.
    pub value: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value() -> Value {
        Value {
            node: "edge-1".into(),
            tag: Some("ssh".into()),
            creation: 1_800_000_000,
            expiration: 1_800_000_600,
            metadata: None,
        }
    }

    #[test]
    fn values_round_trip_and_leave_out_absent_metadata() {
        let v = value();
        let bytes = v.to_bytes();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"node":"edge-1","tag":"ssh","creation":1800000000,"expiration":1800000600}"#
        );
        assert_eq!(Value::parse(&bytes), Ok(v));
    }

    #[test]
    fn bad_values_are_refused() {
        let cases: [&[u8]; 5] = [
            b"",
            b"{\"node\":\"a\"}",
            br#"{"node":"a","tag":"no way","creation":1,"expiration":2}"#,
            br#"{"node":"a b","tag":null,"creation":1,"expiration":2}"#,
            br#"{"node":"a","tag":null,"creation":-1,"expiration":2}"#,
        ];
        for bytes in cases {
            assert!(Value::parse(bytes).is_err(), "{bytes:?}");
        }
        let big = vec![b' '; MAX_VALUE + 1];
        assert_eq!(Value::parse(&big), Err(ValueError::TooLarge(MAX_VALUE + 1)));
    }

    #[test]
    fn untagged_is_null_and_expiry_is_absolute() {
        let mut v = value();
        v.tag = None;
        let cidr: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(!v.expired(1_800_000_599) && v.expired(1_800_000_600));
        assert_eq!(v.clone().into_entry(cidr).tag, "");
        v.expiration = 0;
        assert!(!v.expired(u64::MAX));
    }
}
