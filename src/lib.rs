//! couic, the daemon: an XDP program that drops blocklisted sources and the
//! control plane that keeps its rules.
//!
//! Plain domain types (`store`, `tags`, `expiry`, `firewall`, `config`) hold
//! the logic; `actors` wrap them; `api` serves them on a Unix socket.

pub mod actors;
pub mod api;
pub mod backoff;
pub mod batch;
pub mod bpf;
pub mod cadence;
pub mod clock;
pub mod config;
pub mod dirs;
pub mod expiry;
pub mod firewall;
pub mod fleet;
pub mod hash;
pub mod journal;
pub mod logging;
pub mod origin;
pub mod peering;
pub mod pins;
pub mod privileges;
pub mod rbac;
pub mod reporting;
pub mod sets;
pub mod store;
pub mod tags;
pub mod throttle;
pub mod trim;
pub mod xdp;

/// The daemon's version, as `couic -V` and the webhook User-Agent show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
