//! The working directory layout (§7.1, §8.1, §15.1 step 4) and the account
//! that owns it.
//!
//! couic never changes uid or gid: it only makes sure that what it creates
//! belongs to the configured `user:group`, and refuses to start when an
//! existing directory has another owner or mode, since RBAC tokens and set
//! files live there.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode every directory of the layout must have, exactly.
pub const DIR_MODE: u32 = 0o755;
/// The layout, created in this order (parents first).
pub const LAYOUT: [&str; 5] = ["rbac", "sets", "rbac/clients", "sets/ignore", "sets/drop"];

#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("unknown group '{0}'")]
    UnknownGroup(String),
    #[error("working directory {0} does not exist or is not a directory")]
    NoWorkingDir(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} must be owned by {uid}:{gid} with mode 0755 (found {found_uid}:{found_gid}, mode {found_mode:o})")]
    WrongAttributes {
        path: PathBuf,
        uid: u32,
        gid: u32,
        found_uid: u32,
        found_gid: u32,
        found_mode: u32,
    },
    #[error("{0} exists but is not a directory")]
    NotADirectory(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DirsError + '_ {
    move |source| DirsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The numeric owner of every file couic writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// Resolves the configured user and group names.
    pub fn resolve(user: &str, group: &str) -> Result<Owner, DirsError> {
        let uid = lookup_uid(user).ok_or_else(|| DirsError::UnknownUser(user.to_string()))?;
        let gid = lookup_gid(group).ok_or_else(|| DirsError::UnknownGroup(group.to_string()))?;
        Ok(Owner { uid, gid })
    }

    /// The process's effective uid and gid.
    pub fn current() -> Owner {
        // SAFETY: geteuid/getegid take no arguments and cannot fail.
        unsafe {
            Owner {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        }
    }

    /// Gives `path` to this owner unless it already belongs to it, so a
    /// daemon running as its own user needs no CAP_CHOWN.
    pub fn apply(&self, path: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        if meta.uid() == self.uid && meta.gid() == self.gid {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
    }

    /// Whether `meta` belongs to this owner.
    pub fn owns(&self, meta: &fs::Metadata) -> bool {
        meta.uid() == self.uid && meta.gid() == self.gid
    }
}

fn lookup_uid(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; zeroed is a valid initial value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage; the
    // string fields written into `pwd` point into `buf`, which outlives the call.
    let ret = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (ret == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

fn lookup_gid(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: group is plain old data; zeroed is a valid initial value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in lookup_uid.
    let ret = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (ret == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// `<working_dir>/state/`: the durable entries (see [`crate::journal`]),
/// found by `couic --detach` too, which prepares no layout.
pub fn state_dir(working_dir: &Path) -> PathBuf {
    working_dir.join("state")
}

/// Paths of the working directory, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
    pub owner: Owner,
}

impl Layout {
    /// `rbac/clients`: one TOML file per API client.
    pub fn clients_dir(&self) -> PathBuf {
        self.root.join("rbac/clients")
    }

    /// `state/`: the durable entries (see [`crate::journal`]).
    pub fn state_dir(&self) -> PathBuf {
        state_dir(&self.root)
    }

    /// `sets/<policy>`: the set files of a policy.
    pub fn sets_dir(&self, policy: couic_common::Policy) -> PathBuf {
        self.root.join("sets").join(policy.as_str())
    }

    /// Checks that `root` exists, then creates each directory of [`LAYOUT`]
    /// (mode 0755, owned by `owner`) or checks the existing one.
    pub fn prepare(root: &Path, owner: Owner) -> Result<Layout, DirsError> {
        if !root.is_dir() {
            return Err(DirsError::NoWorkingDir(root.to_path_buf()));
        }
        for sub in LAYOUT {
            ensure_dir(&root.join(sub), owner)?;
        }
        Ok(Layout {
            root: root.to_path_buf(),
            owner,
        })
    }
}

fn ensure_dir(path: &Path, owner: Owner) -> Result<(), DirsError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(DirsError::NotADirectory(path.to_path_buf()));
            }
            let mode = meta.mode() & 0o7777;
            if !owner.owns(&meta) || mode != DIR_MODE {
                return Err(DirsError::WrongAttributes {
                    path: path.to_path_buf(),
                    uid: owner.uid,
                    gid: owner.gid,
                    found_uid: meta.uid(),
                    found_gid: meta.gid(),
                    found_mode: mode,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(path).map_err(io_err(path))?;
            // The umask may have narrowed the mode: set it explicitly.
            fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_err(path))?;
            owner.apply(path).map_err(io_err(path))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_accepts_the_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let owner = Owner::current();
        let layout = Layout::prepare(tmp.path(), owner).unwrap();
        for sub in LAYOUT {
            let meta = fs::metadata(tmp.path().join(sub)).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o755, "{sub}");
        }
        assert_eq!(layout.clients_dir(), tmp.path().join("rbac/clients"));
        // A second start finds everything in place.
        Layout::prepare(tmp.path(), owner).unwrap();
    }

    #[test]
    fn refuses_a_wrong_mode_or_a_missing_root() {
        let tmp = tempfile::tempdir().unwrap();
        let owner = Owner::current();
        Layout::prepare(tmp.path(), owner).unwrap();
        let clients = tmp.path().join("rbac/clients");
        fs::set_permissions(&clients, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Layout::prepare(tmp.path(), owner).unwrap_err().to_string();
        assert!(err.contains("rbac/clients") && err.contains("777"), "{err}");
        let err = Layout::prepare(&tmp.path().join("nope"), owner).unwrap_err();
        assert!(matches!(err, DirsError::NoWorkingDir(_)));
    }

    #[test]
    fn resolves_root_and_refuses_unknown_names() {
        assert_eq!(
            Owner::resolve("root", "root").unwrap(),
            Owner { uid: 0, gid: 0 }
        );
        assert!(matches!(
            Owner::resolve("no-such-user-x", "root"),
            Err(DirsError::UnknownUser(_))
        ));
        assert!(matches!(
            Owner::resolve("root", "no-such-group-x"),
            Err(DirsError::UnknownGroup(_))
        ));
    }
}
