//! couicctl in remote mode against the real daemon behind a real nginx:
//! TLS on 127.0.0.1 with a certificate signed by a CA the test makes with
//! openssl, `proxy_pass` to the daemon's Unix socket over HTTP/1.1. With
//! `ca_file` every command works; without it (or with another CA) the
//! certificate is refused with a clear error and exit code 1.
//!
//! nginx and openssl are required (CI installs them): a missing one fails
//! the test with a message instead of skipping it.

use std::fs;
use std::path::{Path, PathBuf};

use couic_testkit::ctl::{self, table_rows};
use couic_testkit::nginx::Nginx;
use couic_testkit::pki::Pki;
use couic_testkit::{Daemon, Out, Spec};
use serde_json::json;

const COUIC: &str = env!("CARGO_BIN_EXE_couic");

/// couicctl of this build, next to couic.
fn couicctl_bin() -> &'static Path {
    ctl::couicctl_next_to(Path::new(COUIC))
}

/// Runs `couicctl -c <config> <args>`.
fn couicctl(config: &Path, args: &[&str]) -> Out {
    ctl::run(couicctl_bin(), config, args, &[])
}

/// The daemon, nginx in front of it, and the certificates. Fields drop in
/// order: nginx first, then the daemon, then the certificate directory.
struct Setup {
    nginx: Nginx,
    daemon: Daemon,
    pki: Pki,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::make(dir.path());
        let daemon = Daemon::start(Spec::new(COUIC)).unwrap();
        let upstream = format!("http://unix:{}:", daemon.socket().display());
        let nginx = Nginx::start(dir.path(), &pki, &upstream);
        Setup {
            nginx,
            daemon,
            pki,
            dir,
        }
    }

    /// A remote-mode couicctl.toml for 127.0.0.1 with `token`, plus `extra`.
    fn remote_config(&self, name: &str, token: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(
            &path,
            format!(
                "mode = \"remote\"\nhost = \"127.0.0.1\"\nport = {}\ntls = true\ntoken = \"{token}\"\n{extra}",
                self.nginx.port
            ),
        )
        .unwrap();
        path
    }

    fn with_ca(&self, name: &str, token: &str) -> PathBuf {
        self.remote_config(
            name,
            token,
            &format!("ca_file = \"{}\"\n", self.pki.ca.display()),
        )
    }

    fn nginx_log(&self) -> String {
        fs::read_to_string(&self.nginx.error_log).unwrap_or_default()
    }
}

const ENTRY_HEADER: [&str; 4] = ["Policy", "CIDR", "Tag", "Expiration"];

#[test]
fn remote_mode_through_nginx_with_tls_and_ca_file() {
    let s = Setup::start();
    let d = &s.daemon;
    let token = d.create_client("remote-admin", "admin");
    let cfg = s.with_ca("remote.toml", &token);
    let ctl = |args: &[&str]| couicctl(&cfg, args);

    // add (table, JSON): the daemon really has the entries.
    let out = ctl(&["drop", "add", "192.0.2.77/24", "-t", "remote"]);
    assert_eq!(out.code, 0, "{out:?}\nnginx: {}", s.nginx_log());
    assert_eq!(
        table_rows(out.ok()),
        [
            ENTRY_HEADER.map(String::from).to_vec(),
            ["drop", "192.0.2.0/24", "remote", "never"]
                .map(String::from)
                .to_vec()
        ]
    );
    let e = ctl(&["ignore", "add", "2001:db8::/48", "-e", "1h", "--json"]).json();
    assert_eq!(
        (&e["cidr"], &e["tag"]),
        (&json!("2001:db8::/48"), &json!(null))
    );
    assert_eq!(d.cidrs("drop"), ["192.0.2.0/24"]);
    assert_eq!(d.cidrs("ignore"), ["2001:db8::/48"]);
    let (_, api) = d.call("GET", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(api["tag"], "remote");

    // list (table, quiet, JSON), inspect, check.
    let rows = table_rows(ctl(&["drop", "list"]).ok());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1], ["drop", "192.0.2.0/24", "remote", "never"]);
    assert_eq!(ctl(&["drop", "list", "-q"]).ok(), "192.0.2.0/24\n");
    let (_, api_list) = d.call("GET", "/v1/ignore", None);
    assert_eq!(ctl(&["ignore", "list", "--json"]).json(), api_list);
    assert_eq!(
        ctl(&["drop", "inspect", "192.0.2.1/24", "--json"]).json(),
        api
    );
    assert_eq!(
        ctl(&["check", "192.0.2.9", "--json"]).json()["verdict"],
        "drop"
    );

    // stats, both formats.
    let text = ctl(&["stats", "global"]).ok().to_string();
    assert!(
        text.starts_with("Drop CIDR Count: 1\nIgnore CIDR Count: 1\nXDP Stats:\n"),
        "{text}"
    );
    let (_, api_stats) = d.call("GET", "/v1/stats", None);
    assert_eq!(ctl(&["stats", "global", "--json"]).json(), api_stats);
    assert_eq!(
        table_rows(ctl(&["stats", "drop"]).ok())[1],
        ["remote", "drop", "0", "0"]
    );
    assert_eq!(
        ctl(&["stats", "ignore", "--json"]).json(),
        json!({"tags": {"untagged": {"rx_packets": 0, "rx_bytes": 0}}})
    );

    // Clients and sets go through the proxy too.
    let mut names: Vec<String> = ctl(&["clients", "list", "-q"])
        .ok()
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    assert_eq!(names, ["couicctl", "remote-admin"]);
    ctl(&["sets", "create", "drop", "lan", "10.0.0.0/8"]).ok();
    assert_eq!(
        ctl(&["sets", "reload"]).ok(),
        "Sets reloaded successfully\n"
    );
    assert_eq!(d.cidrs("drop"), ["10.0.0.0/8", "192.0.2.0/24"]);

    // delete: gone from the daemon.
    assert_eq!(ctl(&["drop", "delete", "192.0.2.0/24"]).ok(), "");
    assert_eq!(ctl(&["ignore", "delete", "2001:db8::/48"]).ok(), "");
    assert_eq!(d.call("GET", "/v1/drop/192.0.2.0/24", None).0, 404);
    assert_eq!(d.cidrs("ignore"), Vec::<String>::new());

    // API errors come back through nginx with the same lines.
    assert_eq!(
        ctl(&["drop", "delete", "192.0.2.0/24"]).err(1),
        "Error executing command: Couic error: API error:\n  Status: 404\n  Code: not_found\n  \
         Message: submitted entry not found\n  Details:\n    \
         cidr: Code: not_found, Message: cidr `192.0.2.0/24` not found\n"
    );
    assert_eq!(
        ctl(&["drop", "add", "10.0.0.0/8"]).err(1),
        "Error executing command: Couic error: API error:\n  Status: 409\n  Code: conflict\n  \
         Message: submitted entry is not valid\n  Details:\n    \
         cidr: Code: conflict, Message: 10.0.0.0/8 already exists\n"
    );
    assert_eq!(
        ctl(&["drop", "delete", "10.0.0.0/8"]).err(1),
        "Error executing command: Couic error: API error:\n  Status: 422\n  \
         Message: Entry defined in a set cannot be removed\n"
    );

    // Refused tokens: unknown, or a group without the scope.
    let refused =
        "Error executing command: Couic error: API error:\n  Status: 401\n  Code: unauthorized\n  \
                   Message: Unauthorized\n  Hint: the daemon refused the token";
    let stranger = s.with_ca("stranger.toml", &uuid::Uuid::new_v4().to_string());
    assert!(couicctl(&stranger, &["drop", "list"])
        .err(1)
        .starts_with(refused));
    let ro = s.with_ca("ro.toml", &d.create_client("remote-ro", "clientro"));
    assert_eq!(couicctl(&ro, &["drop", "list", "-q"]).ok(), "10.0.0.0/8\n");
    assert!(couicctl(&ro, &["drop", "add", "192.0.2.0/24"])
        .err(1)
        .starts_with(refused));
    assert_eq!(d.cidrs("drop"), ["10.0.0.0/8"]);
}

#[test]
fn tls_verification_fails_without_the_proxy_ca() {
    let mut s = Setup::start();
    let token = s.daemon.create_client("remote-admin", "admin");
    let url = format!("https://127.0.0.1:{}/v1/drop", s.nginx.port);
    let unreachable = format!("Error executing command: cannot reach couic at {url}: ");

    // Sanity: with the CA the same request works.
    let ok = s.with_ca("ok.toml", &token);
    assert_eq!(couicctl(&ok, &["drop", "list", "-q"]).ok(), "");

    // No ca_file: the public web roots do not know the test CA.
    let cfg = s.remote_config("noca.toml", &token, "");
    let err = couicctl(&cfg, &["drop", "add", "192.0.2.0/24"])
        .err(1)
        .to_string();
    assert!(err.starts_with(&unreachable), "{err}");
    assert_eq!(
        err.matches("invalid peer certificate").count(),
        1,
        "the error says once that the certificate was refused: {err}"
    );
    // Another CA: refused the same way.
    let cfg = s.remote_config(
        "otherca.toml",
        &token,
        &format!("ca_file = \"{}\"\n", s.pki.other_ca.display()),
    );
    let err = couicctl(&cfg, &["drop", "list"]).err(1).to_string();
    assert!(err.starts_with(&unreachable), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert_eq!(
        s.daemon.cidrs("drop"),
        Vec::<String>::new(),
        "nothing added"
    );

    // A ca_file that holds no certificate.
    let cfg = s.remote_config(
        "keyca.toml",
        &token,
        &format!("ca_file = \"{}\"\n", s.pki.key.display()),
    );
    assert_eq!(
        couicctl(&cfg, &["drop", "list"]).err(1),
        format!(
            "Error: cannot use ca_file {}: no PEM certificate found\n",
            s.pki.key.display()
        )
    );

    // The proxy is gone: a connection error, exit 1.
    s.nginx.process.kill();
    let err = couicctl(&ok, &["drop", "list"]).err(1).to_string();
    assert!(
        err.starts_with(&unreachable) && err.contains("Connection refused"),
        "{err}"
    );
}
