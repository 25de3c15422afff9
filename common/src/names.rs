//! Client and set names (§8.2, §7.2): 1 to 48 ASCII letters, digits, `-`, `_`.
//!
//! The reference also accepts Unicode letters (§18.19); couic keeps to the
//! documented ASCII set, which every conforming client already uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const NAME_MAX_LEN: usize = 48;
/// The rule as a JSON-schema pattern (the API document states it; a test
/// checks it is [`check`]'s rule): at least one of the bytes [`is_name_byte`]
/// takes, and nothing else.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_-]+$";

/// A JSON-schema pattern matching exactly one of `words`, in any ASCII case
/// (ECMA 262 has no case-insensitive flag inside a pattern, so each letter
/// is a class of its two cases).
pub fn caseless_pattern(words: &[&str]) -> String {
    let words: Vec<String> = words
        .iter()
        .map(|w| {
            w.chars()
                .map(|c| match (c.to_ascii_uppercase(), c.to_ascii_lowercase()) {
                    (u, l) if u != l => format!("[{u}{l}]"),
                    _ => c.to_string(),
                })
                .collect()
        })
        .collect();
    format!("^(?:{})$", words.join("|"))
}

/// A byte a name may hold.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0} name cannot be empty")]
    Empty(&'static str),
    #[error("{0} name must be at most 48 characters")]
    TooLong(&'static str),
    #[error("{0} name can only contain alphanumeric characters, hyphens, and underscores")]
    Charset(&'static str),
}

fn check(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty(kind));
    }
    if s.len() > NAME_MAX_LEN {
        return Err(NameError::TooLong(kind));
    }
    if !s.bytes().all(is_name_byte) {
        return Err(NameError::Charset(kind));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check($kind, s).map(|()| $ty(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::parse(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of an API client: the stem of its file in `rbac/clients/`.
    ClientName,
    "Client"
);
name_type!(
    /// The name of a set: the stem of its `.couic` file.
    SetName,
    "Set"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_name_messages() {
        assert_eq!(
            ClientName::parse("").unwrap_err().to_string(),
            "Client name cannot be empty"
        );
        assert_eq!(
            ClientName::parse(&"a".repeat(49)).unwrap_err().to_string(),
            "Client name must be at most 48 characters"
        );
        assert_eq!(
            ClientName::parse("a b").unwrap_err().to_string(),
            "Client name can only contain alphanumeric characters, hyphens, and underscores"
        );
        assert!(ClientName::parse("couicctl").is_ok());
        assert!(SetName::parse("lan.couic").is_err());
        assert!(SetName::parse("été").is_err());
        assert!(SetName::parse(&"x".repeat(48)).is_ok());
    }

    #[test]
    fn the_pattern_is_the_rule() {
        let pattern = regex_lite::Regex::new(NAME_PATTERN).unwrap();
        let mut cases: Vec<String> = (0..=0x7f_u8)
            .chain([0xc3, 0xff])
            .map(|b| char::from(b).to_string())
            .collect();
        cases.extend(["", "a\n", "\na", "é", "a\u{0}", "a b"].map(String::from));
        cases.extend(["x".repeat(48), "x".repeat(49)]);
        for case in cases {
            let by_schema = pattern.is_match(&case) && case.chars().count() <= NAME_MAX_LEN;
            assert_eq!(ClientName::parse(&case).is_ok(), by_schema, "{case:?}");
        }
    }
}
