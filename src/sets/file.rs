//! Set files on disk: which files are sets, the checks every reload applies
//! (§7.2), and atomic writes for the API.
//!
//! A file is opened once and checked through its open descriptor, so the
//! file that was checked is the file that is read.
//!
//! Past 400 lines with its unit tests; the code is under 300.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use couic_common::{Policy, SetName, SET_FILE_EXTENSION, SET_MAX_FILE_SIZE};

use super::SetError;

pub use crate::dirs::Owner;

/// Permission bits every set file must have, exactly.
pub const SET_FILE_MODE: u32 = 0o600;

/// `sets/drop` or `sets/ignore` under the sets directory.
pub fn policy_dir(sets_dir: &Path, policy: Policy) -> PathBuf {
    sets_dir.join(policy.as_str())
}

/// The path of set `name` in `dir`.
pub fn set_path(dir: &Path, name: &SetName) -> PathBuf {
    dir.join(format!("{name}.{SET_FILE_EXTENSION}"))
}

/// Whether a directory entry's name selects it as a set: last extension
/// `couic` (`Path::extension` already leaves out dot-files like `.couic`).
fn is_set_file_name(name: &OsStr) -> bool {
    Path::new(name).extension() == Some(OsStr::new(SET_FILE_EXTENSION))
}

/// The set files of `dir`, sorted by file name: regular files (symlinks
/// followed) with the `couic` extension.
pub fn candidates(dir: &Path) -> Result<Vec<PathBuf>, SetError> {
    let io_err = |source| SetError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SetError::DirMissing(dir.to_path_buf()))
        }
        Err(e) => return Err(io_err(e)),
    };
    let mut files = Vec::new();
    for entry in read {
        let entry = entry.map_err(io_err)?;
        if !is_set_file_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push(path),
            Ok(_) => {}
            // A dangling symlink, or a file removed while listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(SetError::Io { path, source }),
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// A set file that passed every check of §7.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    pub path: PathBuf,
    pub name: SetName,
    pub text: String,
    pub size: u64,
}

/// The stem of a selected path (`lan` for `lan.couic`).
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Opens `path` and applies the checks in the contract's order: owner and
/// mode, size, name, encoding.
pub fn read_checked(path: &Path, owner: Owner) -> Result<CheckedFile, SetError> {
    let io_err = |source| SetError::Io {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: a FIFO swapped in after the listing must not hang us.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SetError::Vanished(path.to_path_buf()),
            _ => io_err(e),
        })?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(SetError::Permissions {
            path: path.to_path_buf(),
            detail: "not a regular file".into(),
        });
    }
    check_owner_mode(path, &meta, owner)?;
    if meta.len() > SET_MAX_FILE_SIZE {
        return Err(SetError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let name = SetName::parse(&stem(path)).map_err(|reason| SetError::InvalidName {
        path: path.to_path_buf(),
        reason,
    })?;
    // Read at most one byte past the limit: the file may grow after fstat.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(SET_MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > SET_MAX_FILE_SIZE {
        return Err(SetError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let size = bytes.len() as u64;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        SetError::Encoding {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
        }
    })?;
    Ok(CheckedFile {
        path: path.to_path_buf(),
        name,
        text,
        size,
    })
}

/// uid, gid and permission bits exactly as configured.
pub fn check_owner_mode(path: &Path, meta: &fs::Metadata, owner: Owner) -> Result<(), SetError> {
    let mode = meta.mode() & 0o7777;
    if meta.uid() == owner.uid && meta.gid() == owner.gid && mode == SET_FILE_MODE {
        return Ok(());
    }
    Err(SetError::Permissions {
        path: path.to_path_buf(),
        detail: format!(
            "expected owner {}:{} and mode {SET_FILE_MODE:04o}, found owner {}:{} and mode {mode:04o}",
            owner.uid,
            owner.gid,
            meta.uid(),
            meta.gid()
        ),
    })
}

/// How [`write_set`] treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail with `AlreadyExists` if the set exists, even if another writer
    /// creates it at the same moment.
    Create,
    /// Fail with `NotFound` unless the set exists; replace it whole.
    Replace,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `content` as set `name` in `dir`: a unique temp file
/// (`<name>.couic.<pid>-<n>.tmp`, never selected as a set) owned by `owner`
/// with mode 0600, synced, then renamed into place.
pub fn write_set(
    dir: &Path,
    name: &SetName,
    content: &str,
    owner: Owner,
    mode: WriteMode,
) -> io::Result<()> {
    let target = set_path(dir, name);
    if mode == WriteMode::Replace && !target.try_exists()? {
        return Err(io::Error::new(io::ErrorKind::NotFound, "set not found"));
    }
    let (temp_path, mut temp) = create_temp(dir, name)?;
    let result = (|| {
        temp.write_all(content.as_bytes())?;
        std::os::unix::fs::fchown(&temp, Some(owner.uid), Some(owner.gid))?;
        // The umask may have cleared bits: set the mode explicitly.
        temp.set_permissions(fs::Permissions::from_mode(SET_FILE_MODE))?;
        temp.sync_all()?;
        match mode {
            WriteMode::Create => rename_noreplace(&temp_path, &target),
            WriteMode::Replace => fs::rename(&temp_path, &target),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result?;
    // Make the rename durable; failing here does not undo the write.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot sync the sets directory");
    }
    Ok(())
}

fn create_temp(dir: &Path, name: &SetName) -> io::Result<(PathBuf, File)> {
    loop {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "{name}.{SET_FILE_EXTENSION}.{}-{seq}.tmp",
            std::process::id()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SET_FILE_MODE)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`), as one
/// atomic step: renameat2(RENAME_NOREPLACE), or link + unlink on file
/// systems without it.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c_from = CString::new(from.as_os_str().as_bytes())?;
    let c_to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        _ => Err(err),
    }
}

/// Removes set `name` from `dir`; `NotFound` if absent.
pub fn delete_set(dir: &Path, name: &SetName) -> io::Result<()> {
    fs::remove_file(set_path(dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner::current()
    }

    fn write(dir: &Path, file: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(file);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn selection_keeps_couic_regular_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "b.couic",
            "a.couic",
            "x.txt",
            ".couic",
            "c.couic.tmp",
            "a.b.couic",
        ] {
            write(dir.path(), f, b"", 0o600);
        }
        fs::create_dir(dir.path().join("d.couic")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.couic"), dir.path().join("link.couic"))
            .unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("nowhere"),
            dir.path().join("dangling.couic"),
        )
        .unwrap();
        let names: Vec<String> = candidates(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.b.couic", "a.couic", "b.couic", "link.couic"]);
        assert!(matches!(
            candidates(&dir.path().join("none")),
            Err(SetError::DirMissing(_))
        ));
    }

    #[test]
    fn checks_in_contract_order() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(dir.path(), "ok.couic", b"1.1.1.1/32\n", 0o600);
        let file = read_checked(&ok, me()).unwrap();
        assert_eq!((file.name.as_str(), file.size), ("ok", 11));

        let wide = write(dir.path(), "wide.couic", b"", 0o644);
        let err = read_checked(&wide, me()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "Set file {} has wrong permissions: ",
                wide.display()
            )),
            "{err}"
        );
        assert!(err.contains("mode 0644"), "{err}");

        let other = Owner {
            uid: me().uid + 1,
            gid: me().gid,
        };
        assert!(matches!(
            read_checked(&ok, other),
            Err(SetError::Permissions { .. })
        ));

        let big = write(
            dir.path(),
            "big.couic",
            &vec![b'#'; SET_MAX_FILE_SIZE as usize + 1],
            0o600,
        );
        assert_eq!(
            read_checked(&big, me()).unwrap_err().to_string(),
            format!(
                "File {} exceeds the maximum allowed size of 5 MB",
                big.display()
            )
        );
        let exact = write(
            dir.path(),
            "exact.couic",
            &vec![b'#'; SET_MAX_FILE_SIZE as usize],
            0o600,
        );
        assert!(read_checked(&exact, me()).is_ok());

        let dotted = write(dir.path(), "a.b.couic", b"", 0o600);
        let err = read_checked(&dotted, me()).unwrap_err().to_string();
        assert!(err.starts_with("Invalid set name: "), "{err}");
        let long = write(dir.path(), &format!("{}.couic", "n".repeat(49)), b"", 0o600);
        assert!(matches!(
            read_checked(&long, me()),
            Err(SetError::InvalidName { .. })
        ));

        let latin1 = write(dir.path(), "enc.couic", b"1.1.1.1/32\n\xe9\n", 0o600);
        assert!(matches!(
            read_checked(&latin1, me()),
            Err(SetError::Encoding { line: 2, .. })
        ));
    }

    #[test]
    fn writes_are_atomic_owned_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let name = SetName::parse("lan").unwrap();
        write_set(dir.path(), &name, "1.1.1.1/32", me(), WriteMode::Create).unwrap();
        let path = set_path(dir.path(), &name);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1.1.1.1/32");

        let err = write_set(dir.path(), &name, "2.2.2.2/32", me(), WriteMode::Create).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1.1.1.1/32");

        write_set(dir.path(), &name, "2.2.2.2/32", me(), WriteMode::Replace).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "2.2.2.2/32");
        let other = SetName::parse("other").unwrap();
        let err = write_set(dir.path(), &other, "", me(), WriteMode::Replace).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        delete_set(dir.path(), &name).unwrap();
        assert_eq!(
            delete_set(dir.path(), &name).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn concurrent_creates_make_exactly_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let name = SetName::parse("race").unwrap();
        let results: Vec<io::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (dir, name) = (dir.path(), &name);
                    s.spawn(move || {
                        write_set(
                            dir,
                            name,
                            &format!("10.0.0.{i}/32"),
                            me(),
                            WriteMode::Create,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
