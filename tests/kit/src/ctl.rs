//! couicctl runs: the binary, its exit code and output, the tables it
//! prints, and the local-mode configurations it reads.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// What one couicctl run produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Stdout of a run that must have succeeded with nothing on stderr.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "couicctl failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stderr, "", "stderr of a successful run");
        &self.stdout
    }

    /// Stdout of a successful run, parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let text = self.ok();
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Stderr of a run that must have failed with `code` and printed
    /// nothing on stdout.
    #[track_caller]
    pub fn err(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stdout, "", "stdout of a failed run");
        &self.stderr
    }
}

/// Runs `<bin> -c <config> <args>` with `env` added (and
/// `COUICCTL_RIPESTAT_URL` removed, so that no run reaches the Internet by
/// accident), stdin closed, and collects its output.
pub fn run(bin: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("COUICCTL_RIPESTAT_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    Out {
        code: out
            .status
            .code()
            .unwrap_or_else(|| panic!("couicctl killed by a signal: {:?}", out.status)),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// The `couicctl` binary next to `couic` (the same target directory and
/// profile), built with `cargo build -p couicctl` when absent, e.g. after
/// `cargo test --test cli_daemon`. Looked up once per process.
pub fn couicctl_next_to(couic: &Path) -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| bin_next_to(couic, "couicctl"))
}

/// The `couic-report` binary next to `couic`, built when absent.
pub fn couic_report_next_to(couic: &Path) -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| bin_next_to(couic, "couic-report"))
}

/// The binary of workspace package `package` (named as it) in the same
/// target directory and profile as `beside`, built with `cargo build -p`
/// when absent.
fn bin_next_to(beside: &Path, package: &str) -> PathBuf {
    let bin = beside
        .parent()
        .expect("the binary has a directory")
        .join(package);
    if !bin.is_file() {
        // This crate sits in tests/kit of the workspace.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", package])
            .current_dir(workspace)
            .status()
            .unwrap_or_else(|e| panic!("run cargo build -p {package}: {e}"));
        assert!(status.success(), "cargo build -p {package} failed");
    }
    assert!(
        bin.is_file(),
        "{package} not found at {} after building it",
        bin.display()
    );
    bin
}

/// Writes a local-mode couicctl configuration at `path`.
pub fn write_local_config(path: &Path, socket: &Path, client_file: &Path) {
    fs::write(
        path,
        format!(
            "mode = \"local\"\nsocket = \"{}\"\nclient_file = \"{}\"\n",
            socket.display(),
            client_file.display()
        ),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The `token = "..."` of an RBAC client file, if the file holds one.
pub fn token_in(client_file: &Path) -> Option<String> {
    let text = fs::read_to_string(client_file).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let token = table.get("token")?.as_str()?;
    (!token.is_empty()).then(|| token.to_string())
}

/// The data rows of a couicctl table (`│ a ┆ b │`), cells trimmed; the
/// header row comes first.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| {
            l.trim_start_matches('│')
                .trim_end_matches('│')
                .split('┆')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}
