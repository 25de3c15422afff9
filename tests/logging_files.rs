//! Log files are mode 0640 and belong to the configured `user:group`: the
//! one opened at startup, one an older couic left 0644, and one created
//! later (as a rotation does). Its own binary, since startup narrows the
//! process's umask.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use couic::config::{LogFormat, Logging, Rotation};
use couic::dirs::Owner;
use couic::logging::{self, LOG_FILE_MODE};

/// An account other than root's, so that a file left to root is seen.
const NOBODY: Owner = Owner {
    uid: 65534,
    gid: 65534,
};

fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
    let meta = fs::metadata(path).unwrap();
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

#[test]
fn log_files_are_0640_and_owned_by_user_and_group() {
    assert_eq!(LOG_FILE_MODE, 0o640);
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("couic.2020-01-01.log");
    fs::write(&old, "an older couic's line\n").unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
    let config = Logging {
        dir: dir.path().to_path_buf(),
        rotation: Rotation::Daily,
        max_log_files: 7,
        format: LogFormat::Text,
        entry_lines_per_second: 20,
    };

    let dispatch = logging::startup(Some(&config), NOBODY).unwrap();
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("a line"));

    let files: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for path in &files {
        assert_eq!(
            mode_and_owner(path),
            (0o640, NOBODY.uid, NOBODY.gid),
            "{}",
            path.display()
        );
    }
    let today = files.iter().find(|p| **p != old).unwrap();
    assert!(fs::read_to_string(today).unwrap().contains("a line"));

    // A file rotation creates later gets 0640 from the narrowed umask.
    let rotated = dir.path().join("couic.2099-01-01.log");
    fs::File::create(&rotated).unwrap();
    assert_eq!(mode_and_owner(&rotated).0, 0o640);
}
