//! Schemathesis, a schema-driven fuzzer, against the real daemon behind
//! nginx: requests generated from `openapi/openapi.json` (valid ones, and
//! ones breaking each constraint), every check on, a fixed seed and a
//! bounded number of examples per operation (about a minute in all). It
//! passes when the server does what the document says: no 5xx, documented
//! statuses, headers and bodies, valid data accepted, invalid data refused,
//! an `Allow` header on every 405. `tests/schemathesis.toml` lists the
//! statuses the contract gives to requests no schema can rule out.
//!
//! The fuzzer authenticates as the daemon's default admin client,
//! `couicctl`, which the API cannot reach: deleting it answers 422 and
//! nothing changes a client or its token. The run checks it still works
//! at the end.
//!
//! Schemathesis is required: `make deps` installs the pinned version into
//! `target/schemathesis` (or set `SCHEMATHESIS` to a binary). A missing one
//! fails the test instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use couic_testkit::nginx::Nginx;
use couic_testkit::{Daemon, Spec};

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Test cases per operation and phase; with the seed, what makes the run
/// last about a minute and the same every time.
const MAX_EXAMPLES: &str = "300";
const SEED: &str = "20261205";

fn schemathesis() -> PathBuf {
    let bin = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target/schemathesis/bin/schemathesis"));
    assert!(
        bin.is_file(),
        "{} is missing: `make deps` installs schemathesis (or set SCHEMATHESIS)",
        bin.display()
    );
    bin
}

#[test]
fn the_daemon_does_what_its_document_says() {
    let bin = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(Spec::new(COUIC)).unwrap();
    let nginx = Nginx::plain(dir.path(), &Nginx::socket_upstream(&daemon.socket()));
    let started = Instant::now();
    let out = Command::new(&bin)
        .arg("--config-file")
        .arg(Path::new(ROOT).join("tests/schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(Path::new(ROOT).join("openapi/openapi.json"))
        .args(["--url", &format!("http://127.0.0.1:{}", nginx.port)])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", daemon.token()),
        ])
        .args(["--checks", "all"])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none"])
        // Its reports and caches go to the temporary directory.
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .rev()
        .find(|l| l.starts_with('='))
        .unwrap_or("");
    // "Test cases:" then "<n> generated, <n> passed, ...".
    let cases = text
        .lines()
        .skip_while(|l| l.trim() != "Test cases:")
        .nth(1)
        .unwrap_or("")
        .trim();
    eprintln!(
        "schemathesis: {cases} {summary} ({:.0?})",
        started.elapsed()
    );
    assert!(
        out.status.success() && !summary.contains("failure") && !summary.contains("error"),
        "schemathesis failed ({}):\n{text}\n{}\ncouic said:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(cases.contains(" passed"), "no test case ran:\n{text}");
    // Still serving, and the fuzzer's own client untouched.
    let (status, _) = daemon.call("GET", "/v1/client/couicctl", None);
    assert_eq!(status, 200, "couic said:\n{}", daemon.log());
}
