//! Static sets (§7): `.couic` files under `working_dir/sets/{drop,ignore}/`,
//! loaded at start and reloaded on demand.
//!
//! A reload reads and validates every file of both policies first, off the
//! actors' threads; only then is the whole target sent to the MapWriter in
//! one message, which applies the difference with the current set entries.
//! A bad file therefore changes nothing, and the error names it.

pub mod file;
pub mod parse;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use couic_common::{NameError, Policy, Set, SetName, SetSummary};

pub use crate::firewall::set_plan::{PolicyTarget, ReloadCounts, ReloadSummary, SetsTarget};
pub use file::Owner;
use file::WriteMode;
pub use parse::LineError;

/// A set file that a reload (or a read through the API) refuses.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("Sets directory does not exist: {}", .0.display())]
    DirMissing(PathBuf),
    #[error("Set file {} has wrong permissions: {detail}", path.display())]
    Permissions { path: PathBuf, detail: String },
    #[error("File {} exceeds the maximum allowed size of 5 MB", path.display())]
    TooLarge { path: PathBuf },
    #[error("Invalid set name: {reason} ({})", path.display())]
    InvalidName { path: PathBuf, reason: NameError },
    #[error("Set file {} is not valid UTF-8 (line {line})", path.display())]
    Encoding { path: PathBuf, line: usize },
    #[error(
        "error parsing set: {}. Offending line: {} (line {}: {})",
        path.display(), error.line, error.number, error.reason
    )]
    Line { path: PathBuf, error: LineError },
    /// Removed between listing the directory and opening it.
    #[error("Set file {} disappeared", .0.display())]
    Vanished(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SetError {
    /// Whether the error is the files' content or attributes (422), rather
    /// than the system failing to read them (500).
    pub fn is_invalid_file(&self) -> bool {
        !matches!(
            self,
            SetError::DirMissing(_) | SetError::Io { .. } | SetError::Vanished(_)
        )
    }
}

/// An operation of the set API that failed.
#[derive(Debug, thiserror::Error)]
pub enum SetOpError {
    #[error("Set '{name}' not found for policy '{policy}'")]
    NotFound { name: SetName, policy: Policy },
    #[error("Set '{name}' already exists for policy '{policy}'")]
    Exists { name: SetName, policy: Policy },
    /// Lines of the file that are not CIDRs (every one of them).
    #[error("Invalid set file")]
    Lines(Vec<LineError>),
    #[error(transparent)]
    File(SetError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The set files of this node: their directory and its owner. Shared by
/// startup, the API and reloads (`actors::set_reloader`).
pub struct Sets {
    root: PathBuf,
    owner: Owner,
    /// API writes of one process do not interleave (a replace checks that
    /// the set exists, then renames over it).
    writing: Mutex<()>,
}

impl Sets {
    /// `sets_root` is `working_dir/sets`.
    pub fn new(sets_root: impl Into<PathBuf>, owner: Owner) -> Arc<Sets> {
        Arc::new(Sets {
            root: sets_root.into(),
            owner,
            writing: Mutex::new(()),
        })
    }

    pub fn dir(&self, policy: Policy) -> PathBuf {
        file::policy_dir(&self.root, policy)
    }

    /// Reads and validates every file of both policies (blocking): the
    /// target of a reload. Nothing is applied here.
    pub fn load_target(&self) -> Result<SetsTarget, SetError> {
        load_target(&self.root, self.owner)
    }

    /// The summaries of a policy's sets, in name order. The same selection
    /// and checks as a reload apply: a listing never shows a directory that
    /// a reload would refuse as fine.
    pub fn list(&self, policy: Policy) -> Result<Vec<SetSummary>, SetError> {
        let mut out = Vec::new();
        for path in file::candidates(&self.dir(policy))? {
            let checked = match file::read_checked(&path, self.owner) {
                Ok(checked) => checked,
                Err(SetError::Vanished(_)) => continue,
                Err(e) => return Err(e),
            };
            out.push(SetSummary {
                name: checked.name.to_string(),
                entry_count: parse::count_entries(&checked.text),
                file_size: checked.size,
            });
        }
        Ok(out)
    }

    /// A set as written in its file (comments and blank lines left out).
    pub fn get(&self, policy: Policy, name: &SetName) -> Result<Set, SetOpError> {
        let path = file::set_path(&self.dir(policy), name);
        let checked = match file::read_checked(&path, self.owner) {
            Ok(checked) => checked,
            Err(SetError::Vanished(_)) => {
                return Err(SetOpError::NotFound {
                    name: name.clone(),
                    policy,
                })
            }
            Err(e) => return Err(SetOpError::File(e)),
        };
        let entries = parse::entries_as_written(&checked.text).map_err(SetOpError::Lines)?;
        Ok(Set {
            name: name.to_string(),
            entries,
        })
    }

    /// Writes a new set; refuses to replace one, even one created at the
    /// same moment by someone else.
    pub fn create(
        &self,
        policy: Policy,
        name: &SetName,
        entries: &[String],
    ) -> Result<(), SetOpError> {
        self.write(policy, name, entries, WriteMode::Create)
    }

    /// Replaces an existing set whole.
    pub fn replace(
        &self,
        policy: Policy,
        name: &SetName,
        entries: &[String],
    ) -> Result<(), SetOpError> {
        self.write(policy, name, entries, WriteMode::Replace)
    }

    pub fn delete(&self, policy: Policy, name: &SetName) -> Result<(), SetOpError> {
        let dir = self.dir(policy);
        let _guard = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        file::delete_set(&dir, name).map_err(|e| self.op_error(policy, name, &dir, e))
    }

    fn write(
        &self,
        policy: Policy,
        name: &SetName,
        entries: &[String],
        mode: WriteMode,
    ) -> Result<(), SetOpError> {
        let dir = self.dir(policy);
        let content = parse::render(entries);
        let _guard = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        file::write_set(&dir, name, &content, self.owner, mode)
            .map_err(|e| self.op_error(policy, name, &dir, e))
    }

    fn op_error(&self, policy: Policy, name: &SetName, dir: &Path, e: io::Error) -> SetOpError {
        match e.kind() {
            io::ErrorKind::NotFound if dir.is_dir() => SetOpError::NotFound {
                name: name.clone(),
                policy,
            },
            io::ErrorKind::AlreadyExists => SetOpError::Exists {
                name: name.clone(),
                policy,
            },
            _ => SetOpError::Io {
                path: file::set_path(dir, name),
                source: e,
            },
        }
    }
}

/// Reads and validates every set file, ignore first then drop, into the
/// target of a reload. Nothing is applied here.
pub fn load_target(sets_root: &Path, owner: Owner) -> Result<SetsTarget, SetError> {
    let mut target = SetsTarget::default();
    for policy in [Policy::Ignore, Policy::Drop] {
        let policy_target = target.policy_mut(policy);
        for path in file::candidates(&file::policy_dir(sets_root, policy))? {
            let checked = match file::read_checked(&path, owner) {
                Ok(checked) => checked,
                Err(SetError::Vanished(_)) => continue,
                Err(e) => return Err(e),
            };
            let cidrs = parse::parse_entries(&checked.text)
                .map_err(|error| SetError::Line { path, error })?;
            policy_target.add_file(checked.name.as_str(), cidrs);
        }
    }
    Ok(target)
}
