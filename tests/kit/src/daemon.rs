//! The real `couic` binary started with a temporary configuration: a
//! directory holding `couic.toml`, the working directory, the socket and
//! the daemon's output; `user = group = root`. The daemon is killed and the
//! directory removed when the guard drops, even when a test panics or a
//! bench figure fails half-way.
//!
//! ```text
//! <tmp>/couic.toml     the configuration written from the Spec
//! <tmp>/work/          working_dir (rbac/, sets/ made by the daemon)
//! <tmp>/couic.sock     [server] socket
//! <tmp>/couic.log      the daemon's stdout and stderr
//! <tmp>/logs/          [logging] dir, when asked for
//! <tmp>/couicctl.toml  a local-mode couicctl configuration, admin client
//! ```

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use couic_common::uds::UdsClient;
use serde_json::Value;

use crate::api::Api;
use crate::ctl::{self, Out};
use crate::process::Guard;

/// How long the daemon may take to start answering.
pub const STARTUP: Duration = Duration::from_secs(30);
/// Read/write timeout of the API connections the daemon hands out.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What to start: the binary, what goes into `couic.toml`, and how the
/// process is launched.
#[derive(Clone, Debug)]
pub struct Spec {
    couic: PathBuf,
    couicctl: Option<PathBuf>,
    ifaces: Vec<String>,
    operation_mode: Option<String>,
    drop_max_entries: u32,
    ignore_max_entries: u32,
    log_dir: bool,
    netns: Option<PathBuf>,
    only_caps: Option<String>,
    env: Vec<(String, String)>,
    extra: String,
    /// Where the temporary directory goes (the system's by default).
    under: Option<PathBuf>,
}

impl Spec {
    /// `couic` with no interface and 1024 drop and ignore entries per
    /// family.
    pub fn new(couic: impl Into<PathBuf>) -> Spec {
        Spec {
            couic: couic.into(),
            couicctl: None,
            ifaces: Vec::new(),
            operation_mode: None,
            drop_max_entries: 1024,
            ignore_max_entries: 1024,
            log_dir: false,
            netns: None,
            only_caps: None,
            env: Vec::new(),
            extra: String::new(),
            under: None,
        }
    }

    /// The couicctl binary [`Daemon::ctl`] runs.
    pub fn couicctl(mut self, bin: impl Into<PathBuf>) -> Spec {
        self.couicctl = Some(bin.into());
        self
    }

    /// `ifaces` and `operation_mode`.
    pub fn attach(mut self, ifaces: &[&str], mode: &str) -> Spec {
        self.ifaces = ifaces.iter().map(|i| i.to_string()).collect();
        self.operation_mode = Some(mode.to_string());
        self
    }

    /// `[limits]`: drop and ignore entries per family.
    pub fn limits(mut self, drop: u32, ignore: u32) -> Spec {
        self.drop_max_entries = drop;
        self.ignore_max_entries = ignore;
        self
    }

    /// A `[logging]` section writing to `<tmp>/logs`, so the daemon runs
    /// its log writer threads.
    pub fn log_dir(mut self) -> Spec {
        self.log_dir = true;
        self
    }

    /// Runs the daemon in the network namespace at `path` (`nsenter`).
    pub fn netns(mut self, path: impl Into<PathBuf>) -> Spec {
        self.netns = Some(path.into());
        self
    }

    /// Runs the daemon under `setpriv` with only `caps` (`+bpf,+net_admin`)
    /// in its bounding set and none inheritable.
    pub fn only_caps(mut self, caps: &str) -> Spec {
        self.only_caps = Some(caps.to_string());
        self
    }

    /// Adds a variable to the daemon's environment (`RUST_LOG`, ...).
    pub fn env(mut self, key: &str, value: &str) -> Spec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Makes the temporary directory (working directory, socket, state)
    /// in `dir`: a tmpfs, say, for daemons that must not share a disk.
    pub fn under(mut self, dir: impl Into<PathBuf>) -> Spec {
        self.under = Some(dir.into());
        self
    }

    /// TOML sections appended to `couic.toml` (`[reporting]`, ...).
    pub fn extra(mut self, toml: &str) -> Spec {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    fn config_text(&self, work: &Path, socket: &Path, logs: &Path) -> String {
        let ifaces: Vec<String> = self.ifaces.iter().map(|i| format!("\"{i}\"")).collect();
        let mut text = format!("ifaces = [{}]\n", ifaces.join(", "));
        if let Some(mode) = &self.operation_mode {
            text.push_str(&format!("operation_mode = \"{mode}\"\n"));
        }
        text.push_str(&format!(
            "working_dir = \"{}\"\nuser = \"root\"\ngroup = \"root\"\n\
             [server]\nsocket = \"{}\"\n\
             [limits]\ndrop_max_entries = {}\nignore_max_entries = {}\n",
            work.display(),
            socket.display(),
            self.drop_max_entries,
            self.ignore_max_entries
        ));
        if self.log_dir {
            text.push_str(&format!("[logging]\ndir = \"{}\"\n", logs.display()));
        }
        text.push_str(&self.extra);
        text
    }
}

/// Pinned links outlive couic: a test's go with its daemon.
impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = self.detach();
    }
}

/// A couic daemon, its temporary directory, and its process once spawned.
pub struct Daemon {
    // Fields drop in order: the process dies before its directory goes.
    process: Option<Guard>,
    dir: tempfile::TempDir,
    spec: Spec,
    token: Option<String>,
    spawned: Option<Instant>,
    /// Given to the next spawns after `-c <config>`.
    args: Vec<OsString>,
}

impl Daemon {
    /// Writes the configuration and the empty working directory; nothing
    /// runs yet. Files the daemon should find at start (set files, client
    /// files) go in [`Daemon::work`] before [`Daemon::spawn`].
    pub fn new(spec: Spec) -> anyhow::Result<Daemon> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("couic-test.");
        let dir = match &spec.under {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .context("create a temporary directory")?;
        let d = Daemon {
            process: None,
            dir,
            spec,
            token: None,
            spawned: None,
            args: Vec::new(),
        };
        fs::create_dir(d.work()).context("create the working directory")?;
        if d.spec.log_dir {
            fs::create_dir(d.logs_dir()).context("create the log directory")?;
        }
        let text = d.spec.config_text(&d.work(), &d.socket(), &d.logs_dir());
        fs::write(d.config(), text).context("write couic.toml")?;
        Ok(d)
    }

    /// Arguments for the next spawns, after `-c <config>`.
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(OsString::from).collect();
    }

    /// [`Daemon::new`], [`Daemon::spawn`], then [`Daemon::wait_ready`].
    pub fn start(spec: Spec) -> anyhow::Result<Daemon> {
        let mut d = Daemon::new(spec)?;
        d.spawn()?;
        d.wait_ready()?;
        Ok(d)
    }

    /// Starts `couic -c <config>` and returns at once, its output going to
    /// the log file (started afresh). A daemon already running is an
    /// error; one that exited may be started again in the same directory.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if let Some(p) = &mut self.process {
            if p.exited()?.is_none() {
                bail!("couic is already running (pid {})", p.id());
            }
        }
        self.process = None;
        self.token = None;
        let out = fs::File::create(self.log_path()).context("create couic.log")?;
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(ns) = &self.spec.netns {
            argv.push("nsenter".into());
            argv.push(format!("--net={}", ns.display()).into());
        }
        if let Some(caps) = &self.spec.only_caps {
            argv.extend(
                [
                    "setpriv".to_string(),
                    format!("--bounding-set=-all,{caps}"),
                    "--inh-caps=-all".to_string(),
                    "--".to_string(),
                ]
                .map(OsString::from),
            );
        }
        argv.push(self.spec.couic.clone().into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("-c")
            .arg(self.config())
            .args(&self.args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        // Taken before the fork: the bench times spawn to filtering.
        let spawned = Instant::now();
        let child = cmd.spawn().with_context(|| format!("spawn {argv:?}"))?;
        self.spawned = Some(spawned);
        self.process = Some(Guard::new("couic", child));
        Ok(())
    }

    /// Polls `probe` every `every` until it gives a value. The daemon
    /// exiting first is an error with its output, and so is `timeout`
    /// passing (`what` says what did not happen).
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut probe: impl FnMut(&mut Daemon) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe(self)? {
                return Ok(value);
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                bail!("{what} within {timeout:?}; couic said:\n{}", self.log());
            }
            std::thread::sleep(every);
        }
    }

    /// Polls until the daemon serves: `GET /v1/stats` answers 401 without
    /// a token, the default admin client file holds a token, and with it
    /// the same request answers 200. Then writes the admin couicctl
    /// configuration ([`Daemon::ctl_config`]).
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let socket = self.socket();
        let what = format!("couic did not answer on {}", socket.display());
        self.wait_for(&what, STARTUP, Duration::from_millis(5), |_| {
            let mut client = UdsClient::new(&socket, Duration::from_secs(5));
            match client.request("GET", "/v1/stats", &[], None) {
                Ok(resp) if resp.status == 401 => Ok(Some(())),
                Ok(resp) => bail!(
                    "unauthenticated GET /v1/stats answered {}: {}",
                    resp.status,
                    resp.text()
                ),
                Err(_) => Ok(None),
            }
        })?;
        let Some(token) = self.read_token() else {
            bail!(
                "couic serves, but {} holds no token",
                self.client_file().display()
            );
        };
        let token = token.to_string();
        Api::new(&socket, Some(&token), TIMEOUT)
            .expect("GET", "/v1/stats", None, 200)
            .context("the admin token of the default client")?;
        ctl::write_local_config(&self.ctl_config(), &socket, &self.client_file());
        Ok(())
    }

    /// The admin token, read from the default client file once the daemon
    /// has written it.
    pub fn read_token(&mut self) -> Option<&str> {
        if self.token.is_none() {
            self.token = ctl::token_in(&self.client_file());
        }
        self.token.as_deref()
    }

    /// The admin token of a daemon that is ready.
    pub fn token(&self) -> &str {
        self.token
            .as_deref()
            .expect("the admin token is read once the daemon is ready")
    }

    /// An error with the daemon's output if it exited (or never ran).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(p) = &mut self.process else {
            bail!("couic was not started");
        };
        if let Some(status) = p.exited()? {
            bail!("couic exited ({status}); it said:\n{}", self.log());
        }
        Ok(())
    }

    /// The pid of the running daemon (that of `nsenter` and `setpriv`
    /// too: they exec it).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("couic was started").id()
    }

    /// When the daemon was last spawned (just before the fork).
    pub fn spawned(&self) -> Instant {
        self.spawned.expect("couic was started")
    }

    /// Its exit status if it has exited, without waiting.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let p = self.process.as_mut().context("couic was not started")?;
        Ok(p.exited()?)
    }

    /// SIGTERM, the way systemd stops it.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        let p = self.process.as_mut().context("couic was not started")?;
        p.signal(libc::SIGTERM)
    }

    /// Polls until the daemon exits; killed and an error after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let p = self.process.as_mut().context("couic was not started")?;
        p.wait_exit(timeout)
    }

    /// Spawns the daemon and waits for it to exit by itself, as it does
    /// when startup fails: the exit status and what it printed. Still
    /// running after `timeout` is an error (it is killed).
    pub fn run_to_exit(&mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, String)> {
        self.spawn()?;
        let status = self
            .wait_exit(timeout)
            .with_context(|| format!("couic said:\n{}", self.log()))?;
        Ok((status, self.log()))
    }

    /// SIGKILL (the socket file stays behind) and reap; the directory is
    /// kept until the guard drops.
    pub fn kill(&mut self) {
        if let Some(p) = &mut self.process {
            p.kill();
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir().join("couic.toml")
    }

    /// `couic -c <config> --detach`: the pins of this daemon's instance
    /// go, and so its links once no process holds them.
    pub fn detach(&self) -> anyhow::Result<Output> {
        Command::new(&self.spec.couic)
            .arg("-c")
            .arg(self.config())
            .arg("--detach")
            .output()
            .context("run couic --detach")
    }

    /// `working_dir`.
    pub fn work(&self) -> PathBuf {
        self.dir().join("work")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("couic.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("couic.log")
    }

    /// `[logging] dir`, when the spec asks for one.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir().join("logs")
    }

    /// The default admin client file the daemon creates at first start.
    pub fn client_file(&self) -> PathBuf {
        self.work().join("rbac/clients/couicctl.toml")
    }

    /// A local-mode couicctl configuration with the admin client file,
    /// written once the daemon is ready.
    pub fn ctl_config(&self) -> PathBuf {
        self.dir().join("couicctl.toml")
    }

    /// What the daemon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Writes `work/sets/<policy>/<stem>.couic` as the daemon wants it:
    /// owned by us (root), mode 0600. The directory must exist (the
    /// daemon, or `couic::dirs::Layout::prepare`, makes it).
    pub fn write_set(&self, policy: &str, stem: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self
            .work()
            .join("sets")
            .join(policy)
            .join(format!("{stem}.couic"));
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }

    /// A new keep-alive connection with the admin token.
    pub fn api(&self) -> Api {
        Api::new(&self.socket(), Some(self.token()), TIMEOUT)
    }

    /// For tests: one request with the admin token, on a connection of its
    /// own; status and JSON body (see [`Api::json`]).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(self.token(), method, path, body)
    }

    /// [`Daemon::call`] with another token.
    pub fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        Api::new(&self.socket(), Some(token), TIMEOUT).json(method, path, body.as_ref())
    }

    /// For tests: the CIDRs of a policy, as the API lists them, sorted.
    pub fn cidrs(&self, policy: &str) -> Vec<String> {
        let (status, list) = self.call("GET", &format!("/v1/{policy}"), None);
        assert_eq!(status, 200, "{list}");
        let mut cidrs: Vec<String> = list
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {list}"))
            .iter()
            .map(|e| e["cidr"].as_str().expect("a cidr").to_string())
            .collect();
        cidrs.sort();
        cidrs
    }

    /// For tests: creates a client through the API; returns its token.
    pub fn create_client(&self, name: &str, group: &str) -> String {
        let body = serde_json::json!({"name": name, "group": group});
        let (status, client) = self.call("POST", "/v1/client", Some(body));
        assert_eq!(status, 201, "{client}");
        client["token"].as_str().expect("a token").to_string()
    }

    /// Writes a local-mode couicctl configuration named `name` in the
    /// temporary directory, using `client_file`.
    pub fn local_config(&self, name: &str, client_file: &Path) -> PathBuf {
        let path = self.dir().join(name);
        ctl::write_local_config(&path, &self.socket(), client_file);
        path
    }

    /// Runs the spec's couicctl with the admin configuration.
    pub fn ctl(&self, args: &[&str]) -> Out {
        let bin = self
            .spec
            .couicctl
            .as_deref()
            .expect("Spec::couicctl names the binary");
        ctl::run(bin, &self.ctl_config(), args, &[])
    }
}
