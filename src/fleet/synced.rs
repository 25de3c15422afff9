//! How far this node's own entries are known to be in the bucket, kept in
//! `<working_dir>/state/fleet-synced` as one line, `<bucket> <stream>
//! <before> <revision>`: every API entry of this node's made before
//! `before` (its creation, in seconds) was acknowledged by the bucket whose
//! stream the server made at `stream` (in nanoseconds since 1970), which
//! had reached `revision` then.
//!
//! The reconciliation after a catch-up needs it for an entry of this
//! node's that the bucket lacks. Made after the mark, it may never have
//! reached the bucket (the server was away, the outbox full): it is
//! written again. Made before, it was in the bucket and its key is gone,
//! deleted by another node while this one was away and the delete marker
//! swept since: it is removed here too. A bucket made anew (another
//! `stream`), another bucket, or one whose last revision is below the
//! mark's (a server put back from an older copy, or that lost writes it
//! had acknowledged) says nothing of it: its entries are all written
//! again.

use std::path::Path;

pub const FILE: &str = "fleet-synced";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub bucket: String,
    /// When the server made the bucket's stream: a bucket deleted and made
    /// again under the same name is another.
    pub stream: i128,
    pub before: u64,
    /// The bucket's last revision when the mark was made.
    pub revision: u64,
}

impl Mark {
    /// What the mark says of `bucket`, whose stream was made at `stream`
    /// and is at revision `last`: entries made before this were in it.
    pub fn of(&self, bucket: &str, stream: i128, last: u64) -> Option<u64> {
        (self.bucket == bucket && self.stream == stream && last >= self.revision)
            .then_some(self.before)
    }
}

/// Writes `mark` to `dir`'s file (mode 0600), in place of any before. (A
/// rename lost to a power cut leaves the older mark, which still holds.)
pub fn save(dir: &Path, mark: &Mark) -> std::io::Result<()> {
    let text = format!(
        "{} {} {} {}\n",
        mark.bucket, mark.stream, mark.before, mark.revision
    );
    super::replace_file(dir, FILE, text.as_bytes())
}

/// Removes the mark in `dir`, if any: couic runs without `[fleet]`.
pub fn forget(dir: &Path) {
    if let Err(e) = std::fs::remove_file(dir.join(FILE)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", dir.join(FILE).display());
        }
    }
}

/// The mark in `dir`, if any. A file that is not one is an error, which
/// the caller reports and treats as no mark (every entry of this node's
/// the bucket lacks is written again: nothing is lost).
pub fn load(dir: &Path) -> Result<Option<Mark>, String> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse(&text).map(Some).ok_or_else(|| {
        format!(
            "{} is not `<bucket> <stream> <before> <revision>`",
            path.display()
        )
    })
}

fn parse(text: &str) -> Option<Mark> {
    let mut words = text.split_ascii_whitespace();
    let mark = Mark {
        bucket: words.next()?.to_string(),
        stream: words.next()?.parse().ok()?,
        before: words.next()?.parse().ok()?,
        revision: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_saved_is_loaded_and_holds_for_its_bucket_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        forget(dir.path());
        let mark = Mark {
            bucket: "couic".into(),
            stream: 1_733_450_000_123_456_789,
            before: 1_733_450_100,
            revision: 40,
        };
        save(dir.path(), &mark).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded, mark);
        assert_eq!(loaded.of("couic", mark.stream, 40), Some(1_733_450_100));
        assert_eq!(loaded.of("couic", mark.stream, 41), Some(1_733_450_100));
        assert_eq!(loaded.of("couic", mark.stream + 1, 40), None, "made anew");
        assert_eq!(loaded.of("other", mark.stream, 40), None);
        assert_eq!(loaded.of("couic", mark.stream, 39), None, "lost writes");
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_file_that_is_not_a_mark_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "couic",
            "couic 12",
            "couic x 3 4",
            "couic 1 2",
            "couic 1 2 3 4",
        ] {
            std::fs::write(dir.path().join(FILE), bad).unwrap();
            assert!(load(dir.path()).is_err(), "{bad:?}");
        }
    }
}
