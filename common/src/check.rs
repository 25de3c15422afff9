//! The answer of `GET /v1/check/{ip}`: which verdict the data path would give
//! a source address, and the entry that decides it (ignore before drop, then
//! longest prefix within a policy, §5.6).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::entry::Entry;
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Drop,
}

/// Why the verdict was reached: an ignore entry matched, a drop entry
/// matched, or nothing matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckReason {
    Ignore,
    Drop,
    None,
}

/// Where the deciding entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Api,
    Peer,
    Set,
    /// Another node of the fleet (`[fleet]`), through the bucket.
    Fleet,
}

/// `{"ip", "verdict", "reason", "entry", "policy", "origin"}`; the last three
/// are `null` when no entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub ip: IpAddr,
    pub verdict: Verdict,
    pub reason: CheckReason,
    pub entry: Option<Entry>,
    pub policy: Option<Policy>,
    pub origin: Option<Origin>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let hit = CheckResult {
            ip: "192.0.2.7".parse().unwrap(),
            verdict: Verdict::Drop,
            reason: CheckReason::Drop,
            entry: Some(Entry {
                creation: 1,
                cidr: "192.0.2.0/24".into(),
                tag: Some("fail2ban-sshd".into()),
                expiration: 0,
            }),
            policy: Some(Policy::Drop),
            origin: Some(Origin::Api),
        };
        assert_eq!(
            serde_json::to_string(&hit).unwrap(),
            r#"{"ip":"192.0.2.7","verdict":"drop","reason":"drop","entry":{"creation":1,"cidr":"192.0.2.0/24","tag":"fail2ban-sshd","expiration":0},"policy":"drop","origin":"api"}"#
        );
        let miss: CheckResult = serde_json::from_str(
            r#"{"ip":"2001:db8::1","verdict":"pass","reason":"none","entry":null,"policy":null,"origin":null}"#,
        )
        .unwrap();
        assert_eq!(
            (miss.verdict, miss.reason, miss.entry),
            (Verdict::Pass, CheckReason::None, None)
        );
    }
}
