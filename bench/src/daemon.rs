//! The real `couic` daemon for the control-plane figures: the release
//! binary started with a temporary configuration (no interface, user and
//! group root, its own working directory and socket), killed and cleaned up
//! when its guard drops, even when a figure fails half-way.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use couic::dirs::{Layout, Owner};
use couic_common::uds::UdsClient;

/// How long the daemon may take to start answering.
const STARTUP: Duration = Duration::from_secs(30);
/// Read/write timeout of every API connection.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The binaries measured: release builds next to couic-bench.
pub struct Binaries {
    pub couic: PathBuf,
    pub couicctl: PathBuf,
}

impl Binaries {
    /// Builds (or confirms up to date) `couic` and `couicctl` in release
    /// mode, so that the figures are those of the current sources, and
    /// finds them next to this executable. Without cargo at hand (e.g. a
    /// root PATH without it), binaries already built are used, with a
    /// warning.
    pub fn build() -> anyhow::Result<Binaries> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the bench crate sits in the workspace")?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!("  building couic and couicctl (cargo build --release -p couic -p couicctl)");
        match Command::new(&cargo)
            .args(["build", "--release", "-p", "couic", "-p", "couicctl"])
            .current_dir(workspace)
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => bail!("cargo build --release -p couic -p couicctl: {status}"),
            Err(e) => println!("  warning: cannot run cargo ({e}); using the binaries as built"),
        }
        let dir = std::env::current_exe()?
            .parent()
            .context("couic-bench has a directory")?
            .to_path_buf();
        let bins = Binaries {
            couic: dir.join("couic"),
            couicctl: dir.join("couicctl"),
        };
        for bin in [&bins.couic, &bins.couicctl] {
            if !bin.is_file() {
                bail!(
                    "{} missing: run cargo build --release -p couic -p couicctl",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A running daemon and its temporary directory.
pub struct Daemon {
    pub dir: PathBuf,
    pub work: PathBuf,
    pub socket: PathBuf,
    /// The admin token of the default client the daemon creates.
    pub token: String,
    /// When the process was spawned.
    pub spawned: Instant,
    log: PathBuf,
    child: Child,
}

/// A fresh, empty directory under the system temporary directory.
fn temp_dir() -> anyhow::Result<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "couic-bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

impl Daemon {
    /// Prepares a working directory, lets `setup` write files in it (set
    /// files, say), spawns the daemon and returns at once: the caller waits
    /// for it with [`Daemon::ready`] or its own polling.
    pub fn spawn(
        bins: &Binaries,
        setup: impl FnOnce(&Layout) -> anyhow::Result<()>,
    ) -> anyhow::Result<Daemon> {
        let dir = temp_dir()?;
        let work = dir.join("work");
        fs::create_dir(&work)?;
        let layout = Layout::prepare(&work, Owner::current())?;
        setup(&layout)?;
        let socket = dir.join("couic.sock");
        let config = dir.join("couic.toml");
        fs::write(
            &config,
            format!(
                "ifaces = []\nworking_dir = \"{}\"\nuser = \"root\"\ngroup = \"root\"\n\
                 [server]\nsocket = \"{}\"\n\
                 [limits]\ndrop_max_entries = 262144\nignore_max_entries = 65536\n",
                work.display(),
                socket.display()
            ),
        )?;
        let log = dir.join("couic.log");
        let out = fs::File::create(&log)?;
        let spawned = Instant::now();
        let child = Command::new(&bins.couic)
            .arg("-c")
            .arg(&config)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", bins.couic.display()))?;
        Ok(Daemon {
            dir,
            work,
            socket,
            token: String::new(),
            spawned,
            log,
            child,
        })
    }

    /// Spawns the daemon with an empty working directory and waits until
    /// it answers.
    pub fn start(bins: &Binaries) -> anyhow::Result<Daemon> {
        let mut d = Daemon::spawn(bins, |_| Ok(()))?;
        d.ready()?;
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The default client file, created by the daemon at start.
    pub fn client_file(&self) -> PathBuf {
        self.work.join("rbac/clients/couicctl.toml")
    }

    /// Reads the admin token once the daemon has written it.
    pub fn read_token(&mut self) -> anyhow::Result<bool> {
        if !self.token.is_empty() {
            return Ok(true);
        }
        let Ok(text) = fs::read_to_string(self.client_file()) else {
            return Ok(false);
        };
        let token = text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "token").then(|| v.trim().trim_matches('"').to_string())
        });
        match token {
            Some(t) if !t.is_empty() => {
                self.token = t;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Fails with the daemon's output if it exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("couic exited ({status}):\n{}", self.log());
        }
        Ok(())
    }

    /// Polls until `GET /v1/stats` answers 200 with the admin token.
    pub fn ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if self.read_token()? && self.socket.exists() {
                if let Ok((200, _)) = self.api().call("GET", "/v1/stats", None) {
                    return Ok(());
                }
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("couic did not answer within {STARTUP:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A new keep-alive connection with the admin token.
    pub fn api(&self) -> Api {
        Api {
            client: UdsClient::new(&self.socket, TIMEOUT),
            auth: format!("Bearer {}", self.token),
        }
    }

    /// What the daemon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident and peak resident memory in bytes (VmRSS, VmHWM).
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid()))?;
            let kb: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?;
            Ok(kb * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// A local-mode couicctl configuration using the admin client file.
    pub fn couicctl_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("couicctl.toml");
        fs::write(
            &path,
            format!(
                "mode = \"local\"\nsocket = \"{}\"\nclient_file = \"{}\"\n",
                self.socket.display(),
                self.client_file().display()
            ),
        )?;
        Ok(path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes a set file as the daemon wants it: owned by us (root), mode 0600.
pub fn write_set(layout: &Layout, policy: &str, stem: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = layout
        .root
        .join("sets")
        .join(policy)
        .join(format!("{stem}.couic"));
    fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// One keep-alive connection to the API.
pub struct Api {
    client: UdsClient,
    auth: String,
}

impl Api {
    /// One request; a body is sent as JSON. Status and body.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut headers = vec![("Authorization", self.auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let resp = self
            .client
            .request(method, path, &headers, body)
            .with_context(|| format!("{method} {path}"))?;
        Ok((resp.status, resp.body))
    }

    /// A request that must answer `status`; its body parsed as JSON
    /// (null when empty).
    pub fn expect(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        status: u16,
    ) -> anyhow::Result<serde_json::Value> {
        let (got, bytes) = self.call(method, path, body)?;
        if got != status {
            bail!(
                "{method} {path}: {got} (wanted {status}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            );
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// `drop_cidr_count` and `ignore_cidr_count` of `GET /v1/stats`.
    pub fn counts(&mut self) -> anyhow::Result<(u64, u64)> {
        let stats = self.expect("GET", "/v1/stats", None, 200)?;
        let count = |k: &str| {
            stats[k]
                .as_u64()
                .with_context(|| format!("no {k} in {stats}"))
        };
        Ok((count("drop_cidr_count")?, count("ignore_cidr_count")?))
    }
}
