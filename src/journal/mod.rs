//! Durable entries: every API and peer change is appended to a journal
//! under `working_dir/state/` and synced before the API answers.
//!
//! - **Group commit.** The MapWriter queues its records and goes on; one
//!   flusher thread writes whatever was queued since its last sync and
//!   syncs it, and every request waiting on a part of it is answered.
//!   Concurrent requests share a sync (see [`flusher`]).
//! - **Zero-filled ahead.** Records are written into space already
//!   allocated and zeroed, so a sync writes data only (no file size or
//!   block allocation to commit): about 0.1 ms here instead of 1.8 ms for
//!   an append. A full disk shows when that space is made, before a change
//!   is applied: [`Journal::reserve`] refuses it and nothing changes.
//! - **Snapshots.** Past [`Options::rotate_at`] bytes the journal is
//!   closed and a new one started; a thread folds the closed one into
//!   `snapshot-N` (the live entries, expired ones left out).
//!
//! Sets are files of their own and are not journaled; expiries are not
//! either (an entry read back after its expiration is left out).

pub mod files;
mod flusher;
pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dirs::Owner;
use crate::firewall::{Change, ChangeKind};
use files::{Ending, Listing, Replayed, FILE_HEADER, JOURNAL_MAGIC};
use flusher::Flusher;
use record::durable;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no space left on the device of the state store ({path}): nothing was applied")]
    NoSpace { path: PathBuf },
    #[error(
        "state file {path} is damaged at offset {offset} ({why}); start once with \
         `couic --salvage-state` to keep the records before the damage, or move the \
         state directory aside to start without its entries"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: &'static str,
    },
    #[error("the state store failed to sync ({0}): couic refuses changes until it is restarted")]
    Failed(String),
    #[error("another couic is using the state directory {0}")]
    Locked(PathBuf),
}

impl JournalError {
    fn io(path: &Path, source: io::Error) -> JournalError {
        let full = matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        if full {
            JournalError::NoSpace {
                path: path.to_path_buf(),
            }
        } else {
            JournalError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Sizes; the defaults suit a production node, tests make them small.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Bytes zero-filled ahead of the writer at a time.
    pub chunk: u64,
    /// A journal past this size is closed and folded into a snapshot.
    pub rotate_at: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk: 4 << 20,
            rotate_at: 64 << 20,
        }
    }
}

/// The writing end: owned by the [`crate::firewall::Firewall`].
pub struct Journal {
    dir: PathBuf,
    /// `user:group`: the files' owner, when couic may still give them one.
    owner: Owner,
    options: Options,
    index: u64,
    file: Arc<File>,
    /// Next write offset in `file`, and the end of its zeroed space.
    pos: u64,
    zeroed: u64,
    buf: Vec<u8>,
    flusher: Flusher,
    /// Held while the journal is open: one couic per state directory.
    _lock: File,
    compacting: Arc<AtomicBool>,
}

/// A state directory opened: its entries read back, its journal ready.
pub struct Opened {
    pub journal: Journal,
    pub replayed: Replayed,
}

/// Opens (creating) `dir`: locks it, replays its files, drops expired
/// entries, starts a new journal. `salvage` keeps the records before a
/// damaged one instead of stopping (and writes a clean snapshot).
pub fn open(
    dir: &Path,
    owner: Owner,
    options: Options,
    now: u64,
    salvage: bool,
) -> Result<Opened, JournalError> {
    prepare_dir(dir, owner)?;
    let lock = lock(dir)?;
    let listing = Listing::read(dir)?;
    for partial in &listing.partial {
        let _ = fs::remove_file(partial);
    }
    let mut replayed = files::replay(dir, &listing, None, salvage)?;
    replayed.live.drop_expired(now);
    for torn in &replayed.torn {
        if let Ending::Torn { path, offset } = torn {
            tracing::warn!(
                "state file {}: a record cut short at offset {offset} (a crash while \
                 writing) was skipped, with what follows it",
                path.display()
            );
        }
    }
    let index = listing.next();
    if !replayed.torn.is_empty() {
        // Fold the damaged files into a clean snapshot now, so that the
        // warning is not repeated at every start; keep them for a look.
        for torn in &replayed.torn {
            if let Ending::Torn { path, .. } = torn {
                let _ = fs::hard_link(path, path.with_extension("damaged"));
            }
        }
        // As of the last journal read: the new one comes after it.
        files::write_snapshot(dir, index - 1, &replayed.live)?;
    }
    let (file, zeroed) = create_journal(dir, index, owner, options.chunk)?;
    let file = Arc::new(file);
    Ok(Opened {
        journal: Journal {
            dir: dir.to_path_buf(),
            owner,
            options,
            index,
            file,
            pos: FILE_HEADER as u64,
            zeroed,
            buf: Vec::new(),
            flusher: Flusher::new(),
            _lock: lock,
            compacting: Arc::new(AtomicBool::new(false)),
        },
        replayed,
    })
}

/// Creates `path` for writing, readable by its owner only.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn prepare_dir(dir: &Path, owner: Owner) -> Result<(), JournalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| JournalError::io(dir, e))?;
    let fix = |path: &Path, mode: u32| -> Result<(), JournalError> {
        let meta = fs::metadata(path).map_err(|e| JournalError::io(path, e))?;
        if meta.permissions().mode() & 0o777 != mode {
            tracing::warn!(
                "{} had mode {:o}: set to {mode:o} (the state holds every API entry)",
                path.display(),
                meta.permissions().mode() & 0o777
            );
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| JournalError::io(path, e))?;
        }
        if !owner.owns(&meta) {
            owner.apply(path).map_err(|e| JournalError::io(path, e))?;
        }
        Ok(())
    };
    fix(dir, 0o700)?;
    for entry in fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))? {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            fix(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// One couic per state directory: an exclusive lock, held until exit.
fn lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    if !take_lock(&file) {
        return Err(JournalError::Locked(dir.to_path_buf()));
    }
    Ok(file)
}

/// An exclusive lock on `file`, at once or not at all; held until the
/// file is closed.
fn take_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller keeps open across the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Whether another process holds the state directory's lock (made by
/// the first start, so none yet is none held).
pub fn is_locked(dir: &Path) -> bool {
    File::open(dir.join("lock")).is_ok_and(|file| !take_lock(&file))
}

/// A new journal: its header, `chunk` zeroed bytes, synced with its
/// directory entry. Returns the end of the zeroed space.
fn create_journal(
    dir: &Path,
    index: u64,
    owner: Owner,
    chunk: u64,
) -> Result<(File, u64), JournalError> {
    let path = files::journal_path(dir, index);
    let make = || -> io::Result<(File, u64)> {
        let file = create_private(&path)?;
        let _ = owner.apply(&path);
        file.write_all_at(&files::header(JOURNAL_MAGIC, index), 0)?;
        // On a nearly full disk, a page: the writer asks for more as needed.
        let zeroed =
            zero_fill(&file, FILE_HEADER as u64, FILE_HEADER as u64 + chunk).or_else(|_| {
                file.set_len(0)?;
                file.write_all_at(&files::header(JOURNAL_MAGIC, index), 0)?;
                zero_fill(&file, FILE_HEADER as u64, FILE_HEADER as u64 + 1)
            })?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok((file, zeroed))
    };
    make().map_err(|e| {
        let _ = fs::remove_file(&path);
        JournalError::io(&path, e)
    })
}

/// Writes zeros from `from` to `to` (rounded up to a page); returns the end.
fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<u64> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let end = to.next_multiple_of(4096);
    let mut at = from;
    while at < end {
        let n = (end - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(end)
}

impl Journal {
    fn path(&self) -> PathBuf {
        files::journal_path(&self.dir, self.index)
    }

    fn failure(&self) -> Option<JournalError> {
        self.flusher.failure().map(JournalError::Failed)
    }

    /// Makes sure `bytes` more can be appended without allocating: called
    /// before a change is applied, so that a full disk refuses it whole.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), JournalError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if self.pos >= self.options.rotate_at && !self.compacting.load(Ordering::Acquire) {
            self.rotate();
        }
        let need = self.pos + bytes as u64;
        if need <= self.zeroed {
            return Ok(());
        }
        // A chunk ahead, or on a nearly full disk just what is needed.
        let mut outcome = Ok(self.zeroed);
        for to in [need.max(self.zeroed + self.options.chunk), need] {
            outcome = zero_fill(&self.file, self.zeroed, to);
            if outcome.is_ok() {
                break;
            }
            // Give back what was taken: the file stays as it was.
            let _ = self.file.set_len(self.zeroed);
        }
        match outcome {
            Ok(end) => {
                self.zeroed = end;
                Ok(())
            }
            Err(e) => Err(JournalError::io(&self.path(), e)),
        }
    }

    /// Appends the durable part of `changes` (API and peer entries put or
    /// removed); returns the count to wait for with [`Journal::durable`],
    /// or `None` when there was nothing to write.
    pub fn log(&mut self, changes: &[Change]) -> Result<Option<u64>, JournalError> {
        self.buf.clear();
        for c in changes {
            let e = &c.entry;
            match c.kind {
                ChangeKind::Added if durable(&e.origin) => record::encode_put(
                    &mut self.buf,
                    c.policy,
                    e.cidr,
                    &e.tag,
                    e.creation,
                    e.expiration,
                    &e.origin,
                    c.metadata.as_deref(),
                ),
                ChangeKind::Removed if durable(&e.origin) => {
                    record::encode_delete(&mut self.buf, c.policy, e.cidr)
                }
                _ => {}
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let len = self.buf.len() as u64;
        if self.pos + len > self.zeroed {
            // Not reserved (a bound too small): written past the zeroed space.
            self.zeroed = self.pos + len;
        }
        // Handed over whole: a bulk's records are not copied again, nor
        // kept here once written.
        let records = std::mem::take(&mut self.buf);
        let ticket = self
            .flusher
            .append(&self.file, self.pos, records)
            .map_err(|e| JournalError::io(&self.dir, e))?;
        self.pos += len;
        Ok(Some(ticket))
    }

    /// What was appended up to `ticket`, to wait for until it is on disk.
    pub fn pending(&self, ticket: u64) -> Pending {
        Pending(self.flusher.pending(ticket))
    }

    /// Closes this journal for a new one and folds it into a snapshot on a
    /// thread of its own. A failure keeps the current journal.
    fn rotate(&mut self) {
        let next = self.index + 1;
        let made = create_journal(&self.dir, next, self.owner, self.options.chunk);
        let (file, zeroed) = match made {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!("cannot start a new journal, going on with this one: {e}");
                return;
            }
        };
        // The closed journal's last records may still be queued: the
        // compaction reads it once they are on disk.
        let written = self.flusher.pending(self.flusher.appended());
        self.file = Arc::new(file);
        self.pos = FILE_HEADER as u64;
        self.zeroed = zeroed;
        let closed = self.index;
        self.index = next;
        self.compacting.store(true, Ordering::Release);
        let (dir, compacting) = (self.dir.clone(), self.compacting.clone());
        let spawned = std::thread::Builder::new()
            .name("couic-compact".into())
            .spawn(move || {
                let folded = written
                    .block()
                    .map_err(JournalError::Failed)
                    .and_then(|()| compact(&dir, closed));
                if let Err(e) = folded {
                    tracing::warn!("state compaction failed, the journals stay: {e}");
                }
                compacting.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.compacting.store(false, Ordering::Release);
        }
    }
}

/// Folds the newest snapshot and the journals up to `upto` into
/// `snapshot-upto`, expired entries left out.
pub fn compact(dir: &Path, upto: u64) -> Result<(), JournalError> {
    let listing = Listing::read(dir)?;
    let mut replayed = files::replay(dir, &listing, Some(upto), false)?;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    replayed.live.drop_expired(now);
    files::write_snapshot(dir, upto, &replayed.live)
}

/// Records appended to the journal, not known to be on disk yet: wait for
/// them by a callback ([`Pending::on_durable`]) or a future
/// ([`Pending::wait`]).
pub struct Pending(flusher::Pending);

impl Pending {
    /// Calls `then` once the records are on disk (or the journal failed):
    /// on the flusher's thread right after its sync, or at once if that is
    /// done, so that whoever waits is woken once, by that thread.
    pub fn on_durable(self, then: impl FnOnce(Result<(), Arc<JournalError>>) + Send + 'static) {
        self.0
            .on_durable(Box::new(move |r| then(r.map_err(failed))));
    }

    /// Resolves once the records are on disk (or the journal failed).
    pub async fn wait(self) -> Result<(), Arc<JournalError>> {
        self.0.wait().await.map_err(failed)
    }
}

fn failed(message: String) -> Arc<JournalError> {
    Arc::new(JournalError::Failed(message))
}
