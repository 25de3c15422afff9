//! The binary's command line and startup: --check-config, configuration
//! errors naming their key, a bind failure naming its address.

mod support;

use std::net::TcpListener;
use std::process::{Command, Output};

use support::*;

fn check(config: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(BIN)
        .args(["--check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap()
}

fn with_secret(rest: &str) -> String {
    format!("{rest}\n[server]\nsecret = \"{SECRET}\"\n")
}

#[test]
fn check_config_prints_ok() {
    let out = check(&with_secret(
        "batch_interval_secs = 60\n[thresholds]\nthreshold_min = \"red\"",
    ));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
}

#[test]
fn check_config_names_each_bad_key() {
    let cases = [
        (
            with_secret("batch_interval_secs = 0"),
            "batch_interval_secs",
        ),
        (
            with_secret("batch_interval_secs = \"15m\""),
            "batch_interval_secs",
        ),
        ("[server]\nport = 8000\n".to_string(), "server.secret"),
        ("".to_string(), "server.secret"),
        ("[server]\nsecret = \"\"\n".to_string(), "server.secret"),
        (
            "[server]\nsecret = \"00000000-0000-0000-0000-000000000000\"\n".to_string(),
            "server.secret",
        ),
        (
            format!("[server]\nsecret = \"{SECRET}\"\naddr = \"0.0.0.0\"\n"),
            "server.addr",
        ),
        (
            format!("[server]\nsecret = \"{SECRET}\"\nport = 70000\n"),
            "server.port",
        ),
        (
            format!("[server]\nsecret = \"{SECRET}\"\nname = 1\n"),
            "server.name",
        ),
        (
            with_secret("[thresholds]\norange = 50\nred = 50"),
            "thresholds.red",
        ),
        (
            with_secret("[thresholds]\norange = -3"),
            "thresholds.orange",
        ),
        (
            with_secret("[thresholds]\nthreshold_min = \"amber\""),
            "thresholds.threshold_min",
        ),
        (
            with_secret("[discord]\ndetails = true"),
            "discord.webhook_url",
        ),
        (
            with_secret("[discord]\nwebhook_url = \"discord.com\""),
            "discord.webhook_url",
        ),
        (with_secret("[webhook]\nurl = 5"), "webhook.url"),
        (with_secret("batch_interval = 60"), "batch_interval"),
        (with_secret("[slack]\nurl = \"http://x\""), "slack"),
    ];
    for (config, key) in cases {
        let out = check(&config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{config}");
        assert!(
            err.starts_with(&format!("Configuration error: {key}: ")),
            "{config}\n=> {err}"
        );
        assert!(!err.contains(SECRET), "{err}");
    }
}

#[test]
fn check_config_reports_syntax_and_missing_files() {
    let out = check(&format!("[server]\nsecret = \"{SECRET}\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.starts_with("Configuration error: line 2, column "),
        "{err}"
    );
    assert!(!err.contains("5b8f3c1e"), "{err}");
    let out = Command::new(BIN)
        .args(["--check-config", "-c", "/nonexistent/couic-report.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/"));
}

#[test]
fn a_bad_config_stops_the_start_with_its_key() {
    let port = free_port();
    let r = Receiver::spawn("batch_interval_secs = 0\n", port);
    let (status, logs) = r.wait();
    assert_eq!(status.code(), Some(1));
    assert!(
        logs.contains("Configuration error: batch_interval_secs: must be from 1 to"),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn a_taken_port_is_an_error_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = format!("[server]\nport = {port}\nsecret = \"{SECRET}\"\n");
    let (status, logs) = Receiver::spawn(&config, port).wait();
    assert_eq!(status.code(), Some(1));
    assert!(
        logs.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}
