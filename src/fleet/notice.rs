//! Notices: the words a node just wrote to the bucket, sent once on
//! `couic.fleet.<bucket>` so that the other nodes need not each read them
//! from the bucket one message at a time.
//!
//! Watching the bucket costs the server one delivery per word and watcher:
//! 10,000 changes a second on a fleet of 100 is a million deliveries a
//! second. A notice carries up to a batch of acknowledged words in one
//! message, `{"node":"n1","words":[{"key":"drop.192_0_2_0.24",
//! "revision":7,"value":{...}},{"key":"...","revision":8}]}`, a word
//! without `value` being a delete or purge marker. Notices are plain NATS
//! messages, at most once: a node that misses one (or a word written by
//! another program) sees a hole in the revisions and reads what is missing
//! from the bucket (see [`super::sequencer`]). The bucket stays the truth.

use serde::{Deserialize, Serialize};

use super::value::{Value, ValueError};

/// The subject of the notices of `bucket`.
pub fn subject(bucket: &str) -> String {
    format!("couic.fleet.{bucket}")
}

/// What a notice holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Notice {
    pub node: String,
    pub words: Vec<NoticeWord>,
}

/// A word as a notice holds it: the bucket's key text and revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeWord {
    pub key: String,
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NoticeError {
    #[error("notice is not couic's JSON: {0}")]
    Json(String),
}

impl NoticeWord {
    /// Its value checked as one read from the bucket is.
    pub fn check(&self) -> Result<(), ValueError> {
        self.value.as_ref().map_or(Ok(()), Value::check)
    }
}

impl Notice {
    pub fn parse(bytes: &[u8]) -> Result<Notice, NoticeError> {
        serde_json::from_slice(bytes).map_err(|e| NoticeError::Json(e.to_string()))
    }
}

/// A word as a notice is written, borrowing its value.
#[derive(Debug, Serialize)]
pub struct Said<'a> {
    pub key: String,
    pub revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a Value>,
}

/// Notices being written, a word at a time as they are acknowledged: each
/// of `limit` bytes at most (a word too large for one alone is left out:
/// the others will read it from the bucket).
#[derive(Debug)]
pub struct Draft {
    head: Vec<u8>,
    limit: usize,
    current: Vec<u8>,
    /// Words in `current`.
    count: usize,
    /// Words in all.
    words: usize,
    /// Notices complete.
    full: Vec<Vec<u8>>,
}

impl Draft {
    pub fn new(node: &str, limit: usize) -> Self {
        let head = format!(
            r#"{{"node":{},"words":["#,
            serde_json::to_string(node).unwrap()
        );
        Draft {
            head: head.clone().into_bytes(),
            limit,
            current: head.into_bytes(),
            count: 0,
            words: 0,
            full: Vec::new(),
        }
    }

    pub fn push<W: Serialize>(&mut self, word: &W) {
        let bytes = serde_json::to_vec(word).expect("a word always serialises");
        if self.head.len() + bytes.len() + 2 > self.limit {
            return;
        }
        if self.current.len() + bytes.len() + 3 > self.limit {
            self.close();
        }
        if self.count > 0 {
            self.current.push(b',');
        }
        self.current.extend_from_slice(&bytes);
        self.count += 1;
        self.words += 1;
    }

    /// Words written and not taken.
    pub fn words(&self) -> usize {
        self.words
    }

    /// The notices written, emptying the draft.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        if self.count > 0 {
            self.close();
        }
        self.words = 0;
        std::mem::take(&mut self.full)
    }

    fn close(&mut self) {
        let mut done = std::mem::replace(&mut self.current, self.head.clone());
        done.extend_from_slice(b"]}");
        self.full.push(done);
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `words` of `node` as notices of `limit` bytes at most each.
    fn encode<W: Serialize>(node: &str, words: &[W], limit: usize) -> Vec<Vec<u8>> {
        let mut draft = Draft::new(node, limit);
        for word in words {
            draft.push(word);
        }
        draft.take()
    }

    fn word(revision: u64, value: bool) -> NoticeWord {
        NoticeWord {
            key: format!("drop.192_0_2_{revision}.32"),
            revision,
            value: value.then(|| Value {
                node: "n1".into(),
                tag: Some("ssh".into()),
                creation: 1_800_000_000,
                expiration: 0,
                metadata: None,
            }),
        }
    }

    #[test]
    fn notices_round_trip_and_deletes_have_no_value() {
        let words = vec![word(7, true), word(8, false)];
        let notices = encode("n1", &words, 1 << 20);
        assert_eq!(notices.len(), 1);
        let text = std::str::from_utf8(&notices[0]).unwrap();
        assert!(text.starts_with(r#"{"node":"n1","words":[{"key":"drop.192_0_2_7.32""#));
        assert!(text.ends_with(r#"{"key":"drop.192_0_2_8.32","revision":8}]}"#));
        let notice = Notice::parse(&notices[0]).unwrap();
        assert_eq!((notice.node.as_str(), notice.words), ("n1", words));
    }

    #[test]
    fn notices_are_split_at_the_limit_and_oversized_words_left_out() {
        let words: Vec<_> = (0..100).map(|r| word(r, true)).collect();
        let one = serde_json::to_vec(&words[0]).unwrap().len();
        let limit = 40 + 10 * (one + 1);
        let notices = encode("n1", &words, limit);
        assert!(notices.len() >= 10, "{}", notices.len());
        let mut back = Vec::new();
        for n in &notices {
            assert!(n.len() <= limit, "{} > {limit}", n.len());
            back.extend(Notice::parse(n).unwrap().words);
        }
        assert_eq!(back, words);
        assert!(encode("n1", &words[..1], one).is_empty());
        assert!(encode::<NoticeWord>("n1", &[], 1 << 20).is_empty());
    }

    #[test]
    fn bad_notices_and_values_are_refused() {
        assert!(Notice::parse(b"{\"node\":\"a\"}").is_err());
        assert!(Notice::parse(b"[]").is_err());
        let mut bad = word(3, true);
        bad.value.as_mut().unwrap().tag = Some("no way".into());
        assert!(bad.check().is_err());
        assert!(word(4, true).check().is_ok() && word(5, false).check().is_ok());
    }
}
