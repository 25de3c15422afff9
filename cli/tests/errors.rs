//! What the operator sees when something is wrong: a bad or missing
//! configuration, a missing socket, a refused token, API errors with and
//! without the envelope; and the exit code of each.

mod support;

use std::os::unix::net::UnixListener;

use serde_json::json;
use support::{run_with, FakeDaemon, Reply, BIN};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn missing_and_malformed_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with(&dir.path().join("nope.toml"), &["drop", "list"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("Error: cannot read configuration file "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nope.toml"));

    let bad = write(dir.path(), "bad.toml", "mode = local\n");
    let out = run_with(&bad, &["drop", "list"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(&format!(
            "Error: invalid configuration file {}: ",
            bad.display()
        )),
        "{}",
        out.stderr
    );

    let no_socket = write(
        dir.path(),
        "nosock.toml",
        "mode = \"local\"\nclient_file = \"/x.toml\"\n",
    );
    let out = run_with(&no_socket, &["drop", "list"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .trim_end()
            .ends_with("socket is required for local mode"),
        "{}",
        out.stderr
    );

    let client = write(
        dir.path(),
        "client.toml",
        "token = \"not-a-uuid\"\ngroup = \"admin\"\n",
    );
    let cfg = write(
        dir.path(),
        "badclient.toml",
        &format!(
            "mode = \"local\"\nsocket = \"/s\"\nclient_file = \"{}\"\n",
            client.display()
        ),
    );
    let out = run_with(&cfg, &["drop", "list"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("Error: invalid client file "),
        "{}",
        out.stderr
    );
}

#[test]
fn remote_mode_without_token_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "r.toml",
        "mode = \"remote\"\nhost = \"127.0.0.1\"\nport = 9\n",
    );
    let out = run_with(&cfg, &["stats", "global"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .trim_end()
            .ends_with("token is required for remote mode"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_socket_and_stopped_daemon() {
    let d = FakeDaemon::start(|_| Reply::empty(204));
    std::fs::remove_file(&d.socket).unwrap();
    let out = d.run(&["drop", "list"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        format!(
            "Error: Unix socket does not exist: {}\n",
            d.socket.display()
        )
    );

    // A socket file nobody listens on (daemon killed): connection refused.
    drop(UnixListener::bind(&d.socket).unwrap());
    let out = d.run(&["drop", "list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("Error executing command: cannot reach couic on "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("is the couic daemon running?"),
        "{}",
        out.stderr
    );
}

#[test]
fn refused_token() {
    let d = FakeDaemon::start(|_| Reply::envelope(401, "unauthorized", "Unauthorized", json!({})));
    let out = d.run(&["clients", "list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "Error executing command: Couic error: API error:\n  Status: 401\n  Code: unauthorized\n  Message: Unauthorized\n  Hint: the daemon refused the token"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn envelope_errors_are_shown_like_the_reference() {
    let d = FakeDaemon::start(|_| {
        Reply::envelope(
            409,
            "conflict",
            "submitted entry is not valid",
            json!({"cidr": {"code": "conflict", "message": "192.0.2.7/32 already exists"}}),
        )
    });
    let out = d.run(&["drop", "add", "192.0.2.7/32"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "Error executing command: Couic error: API error:\n  Status: 409\n  Code: conflict\n  \
         Message: submitted entry is not valid\n  Details:\n    cidr: Code: conflict, Message: 192.0.2.7/32 already exists\n"
    );
}

#[test]
fn bodies_that_are_not_the_envelope_are_shown_plainly() {
    let d = FakeDaemon::start(|r| match r.method.as_str() {
        "DELETE" => Reply::text(422, "Entry defined in a set cannot be removed"),
        _ => Reply::empty(404),
    });
    let out = d.run(&["drop", "delete", "10.0.0.0/8"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "Error executing command: Couic error: API error:\n  Status: 422\n  Message: Entry defined in a set cannot be removed\n"
    );
    let out = d.run(&["stats", "drop"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .ends_with("  Status: 404\n  Message: Not Found (empty response body)\n"),
        "{}",
        out.stderr
    );
    // A daemon without the check route.
    let out = d.run(&["check", "192.0.2.1"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "Error executing command: this couic daemon has no GET /v1/check/{ip} route"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn garbage_success_body_is_an_error() {
    let d = FakeDaemon::start(|_| Reply::text(200, "<html>proxy page</html>"));
    let out = d.run(&["stats", "global"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("Error executing command: unexpected answer from couic (HTTP 200): "),
        "{}",
        out.stderr
    );
}

#[test]
fn help_version_and_docs_need_no_configuration() {
    let nowhere = std::path::Path::new("/nonexistent/couicctl.toml");
    for args in [
        &["-h"][..],
        &["--help"],
        &["drop", "add", "--help"],
        &["--markdown-help"],
        &["completions", "bash"],
    ] {
        let out = run_with(nowhere, args, &[]);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(!out.stdout.is_empty());
    }
    let out = run_with(nowhere, &["-V"], &[]);
    assert_eq!(out.stdout, "couicctl 1.0.2\n");

    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(BIN)
        .arg("man")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dir.path().join("couicctl-drop-add.1").is_file());
}

#[test]
fn bare_couicctl_reads_the_configuration_then_prints_help() {
    let d = FakeDaemon::start(|_| Reply::empty(500));
    let out = d.run(&[]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Usage: couicctl"), "{}", out.stdout);
    assert!(d.requests().is_empty());

    let out = run_with(std::path::Path::new("/nonexistent/couicctl.toml"), &[], &[]);
    assert_eq!(out.code, 1);
    assert!(out
        .stderr
        .starts_with("Error: cannot read configuration file"));
}
