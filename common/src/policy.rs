//! The two rule policies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `drop` or `ignore`; parsing is case-sensitive, as in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Drop,
    Ignore,
}

impl Policy {
    pub const ALL: [Policy; 2] = [Policy::Drop, Policy::Ignore];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Drop => "drop",
            Policy::Ignore => "ignore",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: '{0}' (expected 'drop' or 'ignore')")]
pub struct PolicyError(pub String);

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(Policy::Drop),
            "ignore" => Ok(Policy::Ignore),
            other => Err(PolicyError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_lowercase_only() {
        assert_eq!("drop".parse::<Policy>().unwrap(), Policy::Drop);
        assert_eq!("ignore".parse::<Policy>().unwrap(), Policy::Ignore);
        let err = "DROP".parse::<Policy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid policy: 'DROP' (expected 'drop' or 'ignore')"
        );
    }
}
