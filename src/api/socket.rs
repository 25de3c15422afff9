//! The Unix socket the API listens on: a stale file from an earlier run is
//! replaced, a live one is refused; the socket gets mode 0660 and the
//! configured owner; the file is removed when the guard is dropped.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::dirs::Owner;

/// Mode of the socket: the owner and its group (reverse proxies) may connect.
pub const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{0} is in use by a running process")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    /// Binds `path`, with mode 0660 and owned by `owner`.
    pub fn bind(path: &Path, owner: Owner) -> Result<(SocketFile, UnixListener), SocketError> {
        let io_err = |source| SocketError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(SocketError::InUse(path.to_path_buf()));
                }
                fs::remove_file(path).map_err(io_err)?;
            }
            Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        let guard = SocketFile {
            path: path.to_path_buf(),
        };
        fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(io_err)?;
        owner.apply(path).map_err(io_err)?;
        Ok((guard, listener))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_stale_refuses_live_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("couic.sock");
        let owner = Owner::current();
        // A stale socket: bound, then its listener closed.
        drop(UnixListener::bind(&path).unwrap());
        let (guard, listener) = SocketFile::bind(&path, owner).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, SOCKET_MODE);
        assert!(matches!(
            SocketFile::bind(&path, owner),
            Err(SocketError::InUse(_))
        ));
        drop(listener);
        drop(guard);
        assert!(!path.exists());
        fs::write(&path, "x").unwrap();
        assert!(matches!(
            SocketFile::bind(&path, owner),
            Err(SocketError::NotASocket(_))
        ));
    }
}
