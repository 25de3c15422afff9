//! API clients and their RBAC groups (§2.2, §3.5).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The hard-coded RBAC groups. Serialised (JSON, TOML) in lowercase without
/// underscore; TOML files must use that exact spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Admin,
    Clientro,
    Clientrw,
    Monitoring,
    Peering,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid group: {0}")]
pub struct GroupError(pub String);

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Admin,
        Group::Clientro,
        Group::Clientrw,
        Group::Monitoring,
        Group::Peering,
    ];

    /// The wire and file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Admin => "admin",
            Group::Clientro => "clientro",
            Group::Clientrw => "clientrw",
            Group::Monitoring => "monitoring",
            Group::Peering => "peering",
        }
    }

    /// How couicctl tables show a group (`client_ro`, `client_rw`).
    pub fn display_name(self) -> &'static str {
        match self {
            Group::Clientro => "client_ro",
            Group::Clientrw => "client_rw",
            other => other.as_str(),
        }
    }

    /// Parses the API's `group` field: ASCII case-insensitive, no underscore.
    pub fn parse_insensitive(s: &str) -> Result<Self, GroupError> {
        Group::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| GroupError(s.to_string()))
    }

    /// What [`Group::parse_insensitive`] takes, as a JSON-schema pattern.
    pub fn request_pattern() -> String {
        crate::names::caseless_pattern(&Group::ALL.map(Group::as_str))
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Group {
    type Err = GroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Group::parse_insensitive(s)
    }
}

/// A client as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub name: String,
    pub token: Uuid,
    pub group: Group,
}

/// Body of `POST /v1/client`; both fields are validated after reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub name: String,
    pub group: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_spellings() {
        assert_eq!(Group::parse_insensitive("ADMIN"), Ok(Group::Admin));
        assert_eq!(Group::parse_insensitive("ClientRO"), Ok(Group::Clientro));
        assert_eq!(
            Group::parse_insensitive("client_ro")
                .unwrap_err()
                .to_string(),
            "Invalid group: client_ro"
        );
        assert_eq!(Group::Clientrw.display_name(), "client_rw");
        assert_eq!(
            serde_json::to_string(&Group::Clientro).unwrap(),
            "\"clientro\""
        );
    }

    #[test]
    fn the_pattern_is_the_rule() {
        let pattern = regex_lite::Regex::new(&Group::request_pattern()).unwrap();
        for case in [
            "admin",
            "ADMIN",
            "ClientRo",
            "clientrw",
            "monitoring",
            "PEERING",
            "",
            "client_ro",
            "admin ",
            " admin",
            "admin\n",
            "admins",
            "adm",
            "é",
        ] {
            assert_eq!(
                pattern.is_match(case),
                Group::parse_insensitive(case).is_ok(),
                "{case:?}"
            );
        }
    }
}
