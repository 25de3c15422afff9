//! Helpers for the couicctl tests against the real daemon: start `couic`
//! with a temporary configuration (killed when its guard drops, even when
//! the test panics), find or build the `couicctl` binary, run it and read
//! its exit code and output, and talk to the API directly to check that the
//! daemon state really changed.
//!
//! Used by `tests/cli_daemon.rs` and `tests/cli_nginx.rs` with
//! `mod cli_support;`; each uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use couic_common::uds::UdsClient;
use serde_json::Value;

pub const COUIC: &str = env!("CARGO_BIN_EXE_couic");

/// How long the daemon (or nginx) may take to start answering.
pub const STARTUP: Duration = Duration::from_secs(20);

/// The `couicctl` binary: the sibling of `couic` that `cargo test
/// --workspace` builds; built with `cargo build -p couicctl` when absent
/// (e.g. `cargo test --test cli_daemon`).
pub fn couicctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = Path::new(COUIC)
            .parent()
            .expect("couic has a directory")
            .join("couicctl");
        if !bin.is_file() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "couicctl"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build -p couicctl");
            assert!(status.success(), "cargo build -p couicctl failed");
        }
        assert!(
            bin.is_file(),
            "couicctl not found at {} after building it",
            bin.display()
        );
        bin
    })
}

/// What one couicctl run produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Stdout of a run that must have succeeded with nothing on stderr.
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
    pub fn json(&self) -> Value {
        let text = self.ok();
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Stderr of a run that must have failed with `code` and printed
    /// nothing on stdout.
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

/// Runs `couicctl -c <config> <args>` and collects its output.
pub fn couicctl(config: &Path, args: &[&str]) -> Out {
    let out = Command::new(couicctl_bin())
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("COUICCTL_RIPESTAT_URL")
        .output()
        .expect("run couicctl");
    Out {
        code: out
            .status
            .code()
            .unwrap_or_else(|| panic!("couicctl killed by a signal: {:?}", out.status)),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
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

/// Current Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `token = "..."` of an RBAC client file.
pub fn token_of(client_file: &Path) -> String {
    let text = fs::read_to_string(client_file).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table
        .get("token")
        .and_then(|t| t.as_str())
        .unwrap_or_else(|| panic!("no token in {}: {text}", client_file.display()))
        .to_string()
}

/// A `couic` daemon started from its binary with a temporary working
/// directory, `user = group = root`, no interface, its socket in the
/// temporary directory; killed on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub work: PathBuf,
    pub socket: PathBuf,
    /// The daemon-created default admin client file.
    pub client_file: PathBuf,
    /// A couicctl.toml in local mode using `client_file`.
    pub ctl: PathBuf,
    pub admin_token: String,
    log: PathBuf,
    child: Child,
}

impl Daemon {
    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let socket = dir.path().join("couic.sock");
        let config = dir.path().join("couic.toml");
        fs::write(
            &config,
            format!(
                "ifaces = []\nworking_dir = \"{}\"\nuser = \"root\"\ngroup = \"root\"\n\
                 [server]\nsocket = \"{}\"\n\
                 [limits]\ndrop_max_entries = 1024\nignore_max_entries = 1024\n",
                work.display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("couic.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(COUIC)
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn couic");
        let client_file = work.join("rbac/clients/couicctl.toml");
        let ctl = dir.path().join("couicctl.toml");
        let mut d = Daemon {
            dir,
            work,
            socket,
            client_file,
            ctl,
            admin_token: String::new(),
            log,
            child,
        };
        d.wait_ready();
        d.admin_token = token_of(&d.client_file);
        d.ctl = d.local_config("couicctl.toml", &d.client_file.clone());
        d
    }

    /// Polls the socket until the daemon answers (401 without a token).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if self.socket.exists() {
                let mut c = UdsClient::new(&self.socket, Duration::from_secs(5));
                if let Ok(resp) = c.request("GET", "/v1/stats", &[], None) {
                    assert_eq!(resp.status, 401, "unauthenticated GET /v1/stats");
                    assert!(self.client_file.is_file(), "default client file created");
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("couic exited during startup ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "couic did not answer on {} within {STARTUP:?}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon (SIGKILL: its socket file stays) and waits for it;
    /// the temporary directory is kept until the guard drops.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the daemon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes a local-mode couicctl.toml named `name` in the temporary
    /// directory, using `client_file`.
    pub fn local_config(&self, name: &str, client_file: &Path) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(
            &path,
            format!(
                "mode = \"local\"\nsocket = \"{}\"\nclient_file = \"{}\"\n",
                self.socket.display(),
                client_file.display()
            ),
        )
        .unwrap();
        path
    }

    /// Runs couicctl with the admin local configuration.
    pub fn ctl(&self, args: &[&str]) -> Out {
        couicctl(&self.ctl, args)
    }

    /// One API request with the admin token: status and JSON body
    /// (`Value::Null` when empty, a string when not JSON).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(&self.admin_token, method, path, body)
    }

    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let resp = UdsClient::new(&self.socket, Duration::from_secs(5))
            .request(method, path, &headers, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let value = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body).unwrap_or_else(|_| Value::String(resp.text()))
        };
        (resp.status, value)
    }

    /// The CIDRs of a policy, as the API lists them, sorted.
    pub fn cidrs(&self, policy: &str) -> Vec<String> {
        let (status, list) = self.api("GET", &format!("/v1/{policy}"), None);
        assert_eq!(status, 200, "{list}");
        let mut cidrs: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cidr"].as_str().unwrap().to_string())
            .collect();
        cidrs.sort();
        cidrs
    }

    /// Creates a client through the API; returns its token.
    pub fn create_client(&self, name: &str, group: &str) -> String {
        let (status, client) = self.api(
            "POST",
            "/v1/client",
            Some(serde_json::json!({"name": name, "group": group})),
        );
        assert_eq!(status, 201, "{client}");
        client["token"].as_str().unwrap().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (released before returning, so there is a
/// small window where another process could take it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
