//! Remote mode: HTTP to a loopback server standing for the reverse proxy,
//! then HTTPS with a private CA (`ca_file`) through `openssl s_server`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use couic_testkit::pki::Pki;
use couic_testkit::{free_port, Guard};
use serde_json::json;
use support::{entry, run_with, FakeTcp, Reply};

/// How long `openssl s_server` may take to listen.
const STARTUP: Duration = Duration::from_secs(10);
const REMOTE_TOKEN: &str = "9e8d7c6b-5a49-4382-9716-0a1b2c3d4e5f";

fn remote_config(dir: &Path, host: &str, port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("remote.toml");
    std::fs::write(
        &path,
        format!("mode = \"remote\"\nhost = \"{host}\"\nport = {port}\ntoken = \"{REMOTE_TOKEN}\"\n{extra}"),
    )
    .unwrap();
    path
}

#[test]
fn remote_requests_carry_the_contract_headers() {
    let server = FakeTcp::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v1/drop") => Reply::json(201, entry("192.0.2.0/24", json!("couicctl"), 0)),
        ("DELETE", _) => Reply::empty(204),
        ("POST", "/v1/sets/reload") => Reply::json(201, json!({"reload_status": "OK"})),
        _ => Reply::envelope(404, "not_found", "Client not found: ghost", json!({})),
    });
    let dir = tempfile::tempdir().unwrap();
    // No client_file: remote mode does not need one.
    let cfg = remote_config(dir.path(), "127.0.0.1", server.port, "tls = false\n");

    let out = run_with(&cfg, &["drop", "add", "192.0.2.9/24"], &[]);
    assert!(
        out.ok()
            .contains("│ drop   ┆ 192.0.2.0/24 ┆ couicctl ┆ never      │"),
        "{}",
        out.stdout
    );
    let r = &server.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/drop"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {REMOTE_TOKEN}").as_str())
    );
    assert_eq!(r.header("user-agent"), Some("CouicClient/1.0.0"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["cidr"], "192.0.2.0/24");

    assert_eq!(
        run_with(&cfg, &["drop", "delete", "192.0.2.9/24"], &[]).ok(),
        ""
    );
    assert_eq!(server.requests()[1].path, "/v1/drop/192.0.2.0/24");
    assert_eq!(
        run_with(&cfg, &["sets", "reload"], &[]).ok(),
        "Sets reloaded successfully\n"
    );
    assert_eq!(server.requests()[2].header("content-length"), Some("0"));

    let out = run_with(&cfg, &["clients", "inspect", "ghost"], &[]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "Error executing command: Couic error: API error:\n  Status: 404\n  Code: not_found\n  Message: Client not found: ghost\n"
    );
}

#[test]
fn unreachable_proxy_is_a_clear_error() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = remote_config(dir.path(), "127.0.0.1", port, "");
    let out = run_with(&cfg, &["stats", "global"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(&format!(
            "Error executing command: cannot reach couic at http://127.0.0.1:{port}/v1/stats: "
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn unusable_ca_file_is_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, "not a certificate\n").unwrap();
    let cfg = remote_config(
        dir.path(),
        "127.0.0.1",
        9,
        &format!("tls = true\nca_file = \"{}\"\n", pem.display()),
    );
    let out = run_with(&cfg, &["stats", "global"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with(&format!("Error: cannot use ca_file {}: ", pem.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn https_with_a_private_ca() {
    // openssl is a test dependency (`make deps`, CI): missing, this fails.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::make(dir.path());
    // `s_server -WWW` serves files under its working directory: the stats
    // document stands for the daemon's answer behind a TLS proxy.
    std::fs::create_dir_all(dir.path().join("v1")).unwrap();
    let stats = json!({"drop_cidr_count": 5, "ignore_cidr_count": 0, "xdp": {}});
    std::fs::write(dir.path().join("v1/stats"), stats.to_string()).unwrap();
    let port = free_port();
    let server = Command::new("openssl")
        .current_dir(dir.path())
        .args(["s_server", "-quiet", "-WWW"])
        .arg("-cert")
        .arg(&pki.cert)
        .arg("-key")
        .arg(&pki.key)
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start openssl s_server ({e}): this test needs openssl (`make deps`)")
        });
    let mut server = Guard::new("openssl s_server", server);
    server
        .wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), STARTUP)
        .unwrap();

    let trusted = remote_config(
        dir.path(),
        "127.0.0.1",
        port,
        &format!("tls = true\nca_file = \"{}\"\n", pki.ca.display()),
    );
    let out = run_with(&trusted, &["stats", "global", "--json"], &[]);
    let printed: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(printed["drop_cidr_count"], 5);

    // Without the private CA the certificate is not trusted.
    let untrusted = remote_config(dir.path(), "127.0.0.1", port, "tls = true\n");
    let out = run_with(&untrusted, &["stats", "global"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(&format!(
            "Error executing command: cannot reach couic at https://127.0.0.1:{port}/v1/stats: "
        )),
        "{}",
        out.stderr
    );
}
