//! Support shared by couic's integration tests, couicctl's tests and
//! couic-bench.
//!
//! - [`daemon`]: the `couic` binary started with a temporary configuration
//!   and working directory, polled until it serves, its admin token read,
//!   killed and its directory removed when the guard drops.
//! - [`api`]: a keep-alive connection to the daemon's socket.
//! - [`ctl`]: couicctl runs and their output, local-mode configurations.
//! - [`process`]: a child process killed when its guard drops.
//! - [`net`]: network namespaces and veth pairs removed on drop, UDP
//!   senders and receivers inside them.
//! - [`pki`]: a private CA and a server certificate made with openssl.
//! - [`nginx`]: nginx (TLS or plain) in front of a daemon or a loopback server.
//! - [`nats`]: a JetStream nats-server on loopback, its store temporary.
//! - [`http`]: an HTTP server on loopback that records requests and answers
//!   as told: the stand-in for a webhook, a chat service or a peer.
//!
//! Everything that waits polls; nothing sleeps for a fixed time. Every
//! guard cleans up on drop, so a failing test leaves nothing behind.
//!
//! The crate needs no libbpf: couicctl's tests build it too.

pub mod api;
pub mod ctl;
pub mod daemon;
pub mod http;
pub mod nats;
pub mod net;
pub mod nginx;
pub mod pki;
pub mod process;

use std::time::{Duration, Instant};

pub use api::Api;
pub use ctl::Out;
pub use daemon::{Daemon, Spec};
pub use process::{status_field, Guard};

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes
/// (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Current Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A free TCP port on 127.0.0.1 (released before returning, so another
/// process may take it before the caller binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
