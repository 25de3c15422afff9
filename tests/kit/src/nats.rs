//! A real `nats-server` with JetStream (Debian's package) on a loopback
//! port, its store in a temporary directory: the fleet's server in tests
//! and the bench. Killed on drop; [`NatsServer::restart`] keeps the port
//! and the store.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::process::Guard;

/// Where Debian puts it.
pub const NATS_SERVER: &str = "nats-server";

pub struct NatsServer {
    process: Option<Guard>,
    pub port: u16,
    /// Given after the defaults: a login, TLS.
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream; `token`: clients must give it.
    pub fn start(token: Option<&str>) -> anyhow::Result<NatsServer> {
        let args = token.map_or_else(Vec::new, |t| vec!["--auth".to_string(), t.to_string()]);
        NatsServer::start_with(&args)
    }

    /// Starts a server with JetStream and `args` (`--user`, `--tls`, ...).
    pub fn start_with(args: &[String]) -> anyhow::Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix("couic-nats.")
            .tempdir()
            .context("a directory for the JetStream store")?;
        let mut server = NatsServer {
            process: None,
            port: crate::free_port(),
            args: args.to_vec(),
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `tls://localhost:<port>`, for a server started with `--tls`.
    pub fn tls_url(&self) -> String {
        format!("tls://localhost:{}", self.port)
    }

    /// The process id, for its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Guard::id)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("nats.log"))?;
        let mut cmd = Command::new(NATS_SERVER);
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
        ])
        .arg(self.dir.path().join("store"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        cmd.args(&self.args);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {NATS_SERVER} (apt install nats-server)"))?;
        let mut guard = Guard::new("nats-server", child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        guard.wait_listening(addr, Duration::from_secs(10))?;
        self.process = Some(guard);
        Ok(())
    }

    /// Kills the server (SIGKILL): clients see it vanish.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Starts it again on the same port with an empty store: a server
    /// that lost its disk.
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.stop();
        std::fs::remove_dir_all(self.dir.path().join("store"))?;
        self.spawn()
    }
}
