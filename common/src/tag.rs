//! Entry tags (§5.3): up to 64 ASCII letters, digits, `-` or `_`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Suffix reserved for entries loaded from set files (`lan.couic`).
pub const SET_TAG_SUFFIX: &str = ".couic";
pub const TAG_MAX_LEN: usize = 64;
/// The tag kept for untagged entries in statistics, refused in any case.
pub const RESERVED_TAG: &str = "untagged";
/// The charset as a JSON-schema pattern (the API document states it with
/// [`TAG_MAX_LEN`] and [`RESERVED_TAG`]; a test checks it is
/// [`Tag::parse`]'s rule). No `.`, so no [`SET_TAG_SUFFIX`] either.
pub const TAG_PATTERN: &str = "^[A-Za-z0-9_-]*$";

/// A validated, non-empty tag an API client may give. The empty string means
/// "untagged" and is not a `Tag`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tag(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("Tag must be at most 64 characters")]
    TooLong,
    #[error("Tag cannot end with special suffix: .couic")]
    SetSuffix,
    #[error("Tag cannot be 'untagged' (reserved for display)")]
    Reserved,
    #[error("Tag can only contain alphanumeric characters, hyphens, and underscores")]
    Charset,
}

impl Tag {
    /// Validates in the contract's order: length, suffix, reserved, charset.
    pub fn parse(s: &str) -> Result<Self, TagError> {
        if s.len() > TAG_MAX_LEN {
            return Err(TagError::TooLong);
        }
        if s.ends_with(SET_TAG_SUFFIX) {
            return Err(TagError::SetSuffix);
        }
        if s.eq_ignore_ascii_case(RESERVED_TAG) {
            return Err(TagError::Reserved);
        }
        if !s.bytes().all(crate::names::is_name_byte) {
            return Err(TagError::Charset);
        }
        Ok(Tag(s.to_string()))
    }

    /// An optional client tag: `None` and `""` both mean untagged.
    pub fn parse_optional(s: Option<&str>) -> Result<Option<Self>, TagError> {
        match s {
            None | Some("") => Ok(None),
            Some(s) => Tag::parse(s).map(Some),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tag::parse(s)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tag::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A stored tag ("" when untagged) as the wire carries it: an untagged add
/// (a POST answer, an add report, an add job) says `null`, everything else
/// the text, `""` included (the reference's mix, §18.17, kept as is).
pub fn wire_tag(tag: &str, untagged_as_null: bool) -> Option<String> {
    if tag.is_empty() && untagged_as_null {
        None
    } else {
        Some(tag.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_contract_order() {
        assert_eq!(Tag::parse(&"a".repeat(65)), Err(TagError::TooLong));
        assert!(Tag::parse(&"a".repeat(64)).is_ok());
        assert_eq!(Tag::parse("x.couic"), Err(TagError::SetSuffix));
        assert_eq!(Tag::parse("UnTagged"), Err(TagError::Reserved));
        assert_eq!(Tag::parse("a.b"), Err(TagError::Charset));
        assert_eq!(Tag::parse("é"), Err(TagError::Charset));
        assert_eq!(
            Tag::parse("fail2ban-sshd_1").unwrap().as_str(),
            "fail2ban-sshd_1"
        );
        assert_eq!(Tag::parse_optional(Some("")), Ok(None));
    }

    /// What the API document says of a tag: the pattern, at most
    /// [`TAG_MAX_LEN`] characters, and not [`RESERVED_TAG`] in any case.
    #[test]
    fn the_pattern_is_the_rule() {
        let pattern = regex_lite::Regex::new(TAG_PATTERN).unwrap();
        let mut cases: Vec<String> = (0..=0x7f_u8)
            .chain([0xc3, 0xff])
            .map(|b| format!("a{}", char::from(b)))
            .collect();
        cases.extend(
            [
                "",
                "untagged",
                "UnTagged",
                "untagged1",
                "x.couic",
                "a\n",
                "é",
            ]
            .map(String::from),
        );
        cases.extend(["t".repeat(64), "t".repeat(65)]);
        for case in cases {
            let by_schema = pattern.is_match(&case)
                && case.chars().count() <= TAG_MAX_LEN
                && !case.eq_ignore_ascii_case(RESERVED_TAG);
            assert_eq!(
                Tag::parse_optional(Some(&case)).is_ok(),
                by_schema,
                "{case:?}"
            );
        }
    }
}
