//! A child process that is killed and reaped when its guard drops, so a
//! failed assertion leaves no daemon, proxy or server running.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A spawned child; SIGKILL and `wait` on drop.
pub struct Guard {
    child: Child,
    name: String,
}

impl Guard {
    /// Guards `child`; `name` labels its errors.
    pub fn new(name: impl Into<String>, child: Child) -> Guard {
        Guard {
            child,
            name: name.into(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, to take its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited (reaped then), without waiting.
    pub fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends `signal` to a child that has not exited yet. A child already
    /// reaped is an error: its pid may belong to another process by now.
    pub fn signal(&mut self, signal: i32) -> anyhow::Result<()> {
        if let Some(status) = self.exited()? {
            bail!("{} already exited ({status})", self.name);
        }
        let pid = i32::try_from(self.child.id()).context("pid fits in pid_t")?;
        // SAFETY: kill(2) on the pid of our own child, not reaped yet (it
        // was still running just above), so the pid is still its own.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("signal {signal} to {}", self.name));
        }
        Ok(())
    }

    /// Polls until the child exits; after `timeout` it is killed and that
    /// is an error.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls until `addr` accepts TCP connections. The child exiting first,
    /// or `timeout` passing, is an error.
    pub fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.exited()? {
                bail!("{} exited ({status}) before listening on {addr}", self.name);
            }
            if Instant::now() >= deadline {
                bail!("{} not listening on {addr} within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (if still running) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `field` (`RssAnon`, `CapEff`, ...) in `/proc/<pid>/status`:
/// its first word, without the unit.
pub fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().to_string()
}
