//! The path secret of `POST /v1/reports/{secret}`: compared in constant
//! time and never shown, not even by `Debug`.

use std::fmt;

use uuid::Uuid;

/// The configured secret in the only form the route accepts: lowercase,
/// hyphenated, as the reference compares it (§13).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Any form `uuid` reads is accepted in the file; the nil UUID is not a
    /// secret (the reference gets it when `[server]` is missing).
    pub fn new(uuid: Uuid) -> Option<Self> {
        (!uuid.is_nil()).then(|| Secret(uuid.hyphenated().to_string()))
    }

    /// Whether `candidate` is the secret. The time taken depends on the
    /// length of the secret only, never on where the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate.as_bytes())
    }

    /// The text to put in a URL, for tests and the load example only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Compares every byte of `expected` whatever `given` holds; a length
/// difference is folded into the same accumulator instead of returning early.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = (expected.len() ^ given.len()) as u64;
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= u64::from(e ^ g);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "5b8f3c1e-2a4d-4f6b-9c7e-1d2f3a4b5c6d";

    #[test]
    fn only_the_lowercase_hyphenated_form_matches() {
        let secret = Secret::new(Uuid::parse_str(&TEXT.to_uppercase()).unwrap()).unwrap();
        assert!(secret.matches(TEXT));
        assert!(!secret.matches(&TEXT.to_uppercase()));
        assert!(!secret.matches(&format!("{{{TEXT}}}")));
        assert!(!secret.matches(&TEXT.replace('-', "")));
        assert!(!secret.matches(&TEXT[..35]));
        assert!(!secret.matches(&format!("{TEXT}0")));
        assert!(!secret.matches(""));
        assert!(!secret.matches(&TEXT.replace("6d", "6e")));
    }

    #[test]
    fn nil_is_refused_and_debug_hides_the_value() {
        assert!(Secret::new(Uuid::nil()).is_none());
        let secret = Secret::new(Uuid::parse_str(TEXT).unwrap()).unwrap();
        assert!(!format!("{secret:?}").contains("5b8f"));
    }

    #[test]
    fn equal_lengths_and_contents_only() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }
}
