//! The state directory's files, read back: which to replay, each one
//! scanned frame by frame, and the live entries they add up to.
//!
//! `snapshot-N` holds every entry live at the end of `journal-N`; replay
//! is the newest snapshot, then every journal after it, in order.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use couic_common::{Cidr, Policy};

use super::record::{read_frame, Frame, Put, Record, FRAME_HEADER};
use super::JournalError;

pub const JOURNAL_MAGIC: &[u8; 8] = b"COUICJ1\n";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"COUICS1\n";
/// Magic, then the file's number.
pub const FILE_HEADER: usize = 16;

pub fn journal_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("journal-{index:016x}"))
}

pub fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("snapshot-{index:016x}"))
}

pub fn header(magic: &[u8; 8], index: u64) -> [u8; FILE_HEADER] {
    let mut h = [0; FILE_HEADER];
    h[..8].copy_from_slice(magic);
    h[8..].copy_from_slice(&index.to_le_bytes());
    h
}

/// The files of a state directory, by kind and number.
#[derive(Debug, Default)]
pub struct Listing {
    pub snapshots: Vec<u64>,
    pub journals: Vec<u64>,
    /// Left by a compaction that did not finish.
    pub partial: Vec<PathBuf>,
}

impl Listing {
    pub fn read(dir: &Path) -> Result<Listing, JournalError> {
        let mut listing = Listing::default();
        let entries = fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| JournalError::io(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let number = |prefix: &str| {
                name.strip_prefix(prefix)
                    .filter(|n| n.len() == 16)
                    .and_then(|n| u64::from_str_radix(n, 16).ok())
            };
            if name.ends_with(".tmp") {
                listing.partial.push(entry.path());
            } else if let Some(n) = number("snapshot-") {
                listing.snapshots.push(n);
            } else if let Some(n) = number("journal-") {
                listing.journals.push(n);
            }
        }
        listing.snapshots.sort_unstable();
        listing.journals.sort_unstable();
        Ok(listing)
    }

    /// The newest snapshot, if any.
    pub fn base(&self) -> Option<u64> {
        self.snapshots.last().copied()
    }

    /// The journals to replay after the base, in order.
    pub fn replayed(&self) -> Vec<u64> {
        let base = self.base();
        self.journals
            .iter()
            .copied()
            .filter(|&j| base.is_none_or(|b| j > b))
            .collect()
    }

    /// The number the next journal takes.
    pub fn next(&self) -> u64 {
        let last = self.journals.last().copied().max(self.base());
        last.map_or(1, |n| n + 1)
    }
}

/// How a file's records ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Clean,
    /// A record cut short by a crash, with nothing valid after it: skipped.
    Torn {
        path: PathBuf,
        offset: u64,
    },
}

/// Calls `visit` with each record of the file, in order. A damaged record
/// with nothing valid after it is a torn end; one followed by valid
/// records is corruption, which stops the replay (unless `salvage`, which
/// keeps what comes before it and says so).
pub fn scan(
    path: &Path,
    magic: &[u8; 8],
    salvage: bool,
    mut visit: impl FnMut(Record),
) -> Result<Ending, JournalError> {
    let data = fs::read(path).map_err(|e| JournalError::io(path, e))?;
    if data.len() < FILE_HEADER || &data[..8] != magic {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            why: "not a couic state file (bad header)",
        });
    }
    let mut at = FILE_HEADER;
    loop {
        match read_frame(&data[at..]) {
            Frame::Record(record, len) => {
                visit(record);
                at += len;
            }
            Frame::End if only_zeros(&data[at..]) => return Ok(Ending::Clean),
            Frame::End | Frame::Bad => {
                let offset = at as u64;
                if !salvage && valid_record_after(&data, at + 1) {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        offset,
                        why: "a damaged record with valid records after it",
                    });
                }
                return Ok(Ending::Torn {
                    path: path.to_path_buf(),
                    offset,
                });
            }
        }
    }
}

fn only_zeros(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

/// Whether a valid record starts anywhere from `from` on. Only run on
/// damage, so a byte-by-byte search is fine: most offsets fail on the
/// length alone.
fn valid_record_after(data: &[u8], from: usize) -> bool {
    (from..data.len().saturating_sub(FRAME_HEADER))
        .any(|at| matches!(read_frame(&data[at..]), Frame::Record(..)))
}

/// Keys deleted in the journals that [`Live`] remembers, at most: a start
/// after a crash checks these against the fleet's bucket.
pub const DELETED_KEPT: usize = 262_144;

/// The entries the files add up to, by policy and CIDR.
#[derive(Debug, Default)]
pub struct Live {
    pub entries: HashMap<(Policy, Cidr), Put>,
    /// Keys whose entry a journal deleted and no later record put back
    /// ([`DELETED_KEPT`] at most; snapshots hold no deletes).
    pub deleted: HashSet<(Policy, Cidr)>,
}

impl Live {
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Put(p) => {
                self.deleted.remove(&(p.policy, p.entry.cidr));
                self.entries.insert((p.policy, p.entry.cidr), p);
            }
            Record::Delete { policy, cidr } => {
                self.entries.remove(&(policy, cidr));
                if self.deleted.len() < DELETED_KEPT {
                    self.deleted.insert((policy, cidr));
                }
            }
        }
    }

    /// The entries, in no order.
    pub fn into_puts(self) -> Vec<Put> {
        self.entries.into_values().collect()
    }

    /// Drops the entries whose expiration has passed.
    pub fn drop_expired(&mut self, now: u64) {
        self.entries
            .retain(|_, p| p.entry.expiration == 0 || p.entry.expiration > now);
    }
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replayed {
    pub live: Live,
    pub torn: Vec<Ending>,
    /// Files read: the base snapshot's number, then the journals'.
    pub base: Option<u64>,
    pub journals: Vec<u64>,
}

/// Replays the newest snapshot and the journals after it, up to `upto`
/// (all of them when `None`).
pub fn replay(
    dir: &Path,
    listing: &Listing,
    upto: Option<u64>,
    salvage: bool,
) -> Result<Replayed, JournalError> {
    let mut out = Replayed {
        base: listing.base(),
        ..Replayed::default()
    };
    if let Some(base) = out.base {
        let path = snapshot_path(dir, base);
        let ending = scan(&path, SNAPSHOT_MAGIC, salvage, |r| out.live.apply(r))?;
        if ending != Ending::Clean && !salvage {
            // A snapshot is renamed into place only once synced whole.
            return Err(JournalError::Corrupt {
                path,
                offset: match ending {
                    Ending::Torn { offset, .. } => offset,
                    Ending::Clean => 0,
                },
                why: "a snapshot cut short",
            });
        }
    }
    for j in listing.replayed() {
        if upto.is_some_and(|u| j > u) {
            break;
        }
        let path = journal_path(dir, j);
        let ending = scan(&path, JOURNAL_MAGIC, salvage, |r| out.live.apply(r))?;
        if ending != Ending::Clean {
            out.torn.push(ending);
        }
        out.journals.push(j);
    }
    Ok(out)
}

/// Writes `live` as `snapshot-index` (through a temporary file, synced,
/// renamed, the directory synced), then removes what it replaces.
pub fn write_snapshot(dir: &Path, index: u64, live: &Live) -> Result<(), JournalError> {
    use std::io::Write;
    let path = snapshot_path(dir, index);
    let tmp = path.with_extension("tmp");
    let mut buf = Vec::with_capacity(FILE_HEADER + live.entries.len() * 64);
    buf.extend_from_slice(&header(SNAPSHOT_MAGIC, index));
    for put in live.entries.values() {
        super::record::encode(&mut buf, put);
    }
    let write = || -> io::Result<()> {
        let mut file = super::create_private(&tmp)?;
        file.write_all(&buf)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        JournalError::io(&path, e)
    })?;
    // Replaced: the older snapshots and the journals folded in.
    let listing = Listing::read(dir)?;
    for s in listing.snapshots.iter().filter(|&&s| s < index) {
        let _ = fs::remove_file(snapshot_path(dir, *s));
    }
    for j in listing.journals.iter().filter(|&&j| j <= index) {
        let _ = fs::remove_file(journal_path(dir, *j));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::record::encode_delete;
    use super::*;
    use crate::firewall::NewEntry;
    use crate::origin::Origin;

    fn put_frame(buf: &mut Vec<u8>, cidr: &str, expiration: u64) {
        super::super::record::encode_put(
            buf,
            Policy::Drop,
            cidr.parse().unwrap(),
            "t",
            1,
            expiration,
            &Origin::api("admin"),
            None,
        );
    }

    fn journal(dir: &Path, index: u64, frames: &[u8], tail: &[u8]) -> PathBuf {
        let path = journal_path(dir, index);
        let mut data = header(JOURNAL_MAGIC, index).to_vec();
        data.extend_from_slice(frames);
        data.extend_from_slice(tail);
        data.extend_from_slice(&[0; 4096]);
        fs::write(&path, data).unwrap();
        path
    }

    fn cidrs(replayed: &Replayed) -> Vec<String> {
        let mut v: Vec<String> = replayed
            .live
            .entries
            .keys()
            .map(|(_, c)| c.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn snapshot_then_later_journals_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = Live::default();
        for cidr in ["192.0.2.1/32", "192.0.2.2/32"] {
            live.apply(Record::Put(Put {
                policy: Policy::Drop,
                entry: NewEntry {
                    cidr: cidr.parse().unwrap(),
                    tag: String::new(),
                    expiration: 0,
                    metadata: None,
                },
                creation: 1,
                origin: Origin::api("admin"),
            }));
        }
        // Journal 1 is folded into snapshot 1 (and removed by it).
        journal(dir.path(), 1, &[], &[]);
        write_snapshot(dir.path(), 1, &live).unwrap();
        let mut frames = Vec::new();
        encode_delete(&mut frames, Policy::Drop, "192.0.2.1/32".parse().unwrap());
        put_frame(&mut frames, "192.0.2.3/32", 0);
        journal(dir.path(), 2, &frames, &[]);
        let listing = Listing::read(dir.path()).unwrap();
        assert_eq!(listing.journals, vec![2]);
        assert_eq!(listing.next(), 3);
        let replayed = replay(dir.path(), &listing, None, false).unwrap();
        assert_eq!(cidrs(&replayed), ["192.0.2.2/32", "192.0.2.3/32"]);
        assert!(replayed.torn.is_empty());
        // The journal's delete is remembered, for the fleet's catch-up.
        let deleted: Vec<_> = replayed.live.deleted.iter().collect();
        assert_eq!(deleted, [&(Policy::Drop, "192.0.2.1/32".parse().unwrap())]);
    }

    #[test]
    fn a_key_put_back_after_its_delete_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut frames = Vec::new();
        put_frame(&mut frames, "192.0.2.1/32", 0);
        encode_delete(&mut frames, Policy::Drop, "192.0.2.1/32".parse().unwrap());
        put_frame(&mut frames, "192.0.2.1/32", 0);
        encode_delete(&mut frames, Policy::Drop, "192.0.2.9/32".parse().unwrap());
        journal(dir.path(), 1, &frames, &[]);
        let listing = Listing::read(dir.path()).unwrap();
        let replayed = replay(dir.path(), &listing, None, false).unwrap();
        assert_eq!(cidrs(&replayed), ["192.0.2.1/32"]);
        let deleted: Vec<_> = replayed.live.deleted.iter().collect();
        assert_eq!(deleted, [&(Policy::Drop, "192.0.2.9/32".parse().unwrap())]);
    }

    #[test]
    fn a_torn_end_is_skipped_and_named_but_damage_before_records_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut frames = Vec::new();
        put_frame(&mut frames, "192.0.2.1/32", 0);
        let good = frames.len();
        put_frame(&mut frames, "192.0.2.2/32", 0);
        // The second record cut short by a crash.
        frames.truncate(frames.len() - 5);
        journal(dir.path(), 1, &frames, &[]);
        let listing = Listing::read(dir.path()).unwrap();
        let replayed = replay(dir.path(), &listing, None, false).unwrap();
        assert_eq!(cidrs(&replayed), ["192.0.2.1/32"]);
        let offset = (FILE_HEADER + good) as u64;
        assert_eq!(
            replayed.torn,
            vec![Ending::Torn {
                path: journal_path(dir.path(), 1),
                offset
            }]
        );

        // One flipped byte in the first of two records: corruption.
        let mut frames = Vec::new();
        put_frame(&mut frames, "192.0.2.1/32", 0);
        put_frame(&mut frames, "192.0.2.2/32", 0);
        frames[12] ^= 0xff;
        journal(dir.path(), 1, &frames, &[]);
        let err = replay(dir.path(), &listing, None, false).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { offset, .. } if offset == FILE_HEADER as u64),
            "{err}"
        );
        // Salvaging keeps what came before the damage.
        let replayed = replay(dir.path(), &listing, None, true).unwrap();
        assert!(replayed.live.entries.is_empty());
        assert_eq!(replayed.torn.len(), 1);
    }

    #[test]
    fn expired_entries_are_not_kept() {
        let mut live = Live::default();
        let mut frames = Vec::new();
        put_frame(&mut frames, "192.0.2.1/32", 100);
        put_frame(&mut frames, "192.0.2.2/32", 200);
        put_frame(&mut frames, "192.0.2.3/32", 0);
        let mut at = 0;
        while let Frame::Record(r, len) = read_frame(&frames[at..]) {
            live.apply(r);
            at += len;
        }
        live.drop_expired(100);
        assert_eq!(live.entries.len(), 2);
    }
}
