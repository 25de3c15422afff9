//! `couic.toml`: the contract's keys (§12.1) plus `[limits]`.
//!
//! Unlike the reference, an unknown key is an error naming it: a typo in a
//! firewall's config should not be silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How the program is attached (`operation_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationMode {
    Generic,
    Native,
    Offloaded,
    /// Native, falling back to generic with a warning.
    #[default]
    Auto,
}

impl fmt::Display for OperationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperationMode::Generic => "generic",
            OperationMode::Native => "native",
            OperationMode::Offloaded => "offloaded",
            OperationMode::Auto => "auto",
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    #[default]
    Daily,
    Weekly,
    Never,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub dir: PathBuf,
    #[serde(default)]
    pub rotation: Rotation,
    #[serde(default = "default_max_log_files")]
    pub max_log_files: usize,
    #[serde(default)]
    pub format: LogFormat,
    /// `entry created` / `entry deleted` lines a second (stdout and file)
    /// before they are summarised, one line a second per client and policy.
    #[serde(default = "default_entry_lines_per_second")]
    pub entry_lines_per_second: u32,
}

fn default_max_log_files() -> usize {
    7
}

fn default_entry_lines_per_second() -> u32 {
    crate::api::entry_log::DEFAULT_BUDGET
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub socket: PathBuf,
}

/// Capacities, fixed when the program is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Drop entries per address family.
    pub drop_max_entries: u32,
    /// Ignore entries per address family.
    pub ignore_max_entries: u32,
    /// Distinct tags with their own counters.
    pub max_tags: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            drop_max_entries: crate::bpf::DEFAULT_DROP_MAX,
            ignore_max_entries: crate::bpf::DEFAULT_IGNORE_MAX,
            max_tags: crate::bpf::DEFAULT_TAG_MAX,
        }
    }
}

/// Which changes are reported (`[reporting] events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportEvent {
    /// Adds and deletes through the API (single and bulk routes).
    Api,
    /// Entries leaving at their expiration.
    Expiry,
    /// Changes received from a peer.
    Peer,
    /// Set entries added or removed by a reload.
    Sets,
}

/// `[reporting]`: the reference's two keys, then ours (all optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporting {
    pub enabled: bool,
    /// Used verbatim; it holds a secret and is never logged whole.
    pub webhook: String,
    #[serde(default = "Reporting::default_events")]
    pub events: Vec<ReportEvent>,
    /// Reports per POST at most.
    #[serde(default = "Reporting::default_max_batch")]
    pub max_batch: usize,
    /// Reports held at most, the batch being retried included.
    #[serde(default = "Reporting::default_queue_capacity")]
    pub queue_capacity: usize,
    /// PEM file of a CA to trust for an https webhook, beyond the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This node's name in the `X-Couic-Node` header; the host name when
    /// unset.
    #[serde(default)]
    pub node: Option<String>,
}

impl Reporting {
    fn default_events() -> Vec<ReportEvent> {
        vec![ReportEvent::Api, ReportEvent::Expiry]
    }

    fn default_max_batch() -> usize {
        5_000
    }

    fn default_queue_capacity() -> usize {
        65_536
    }

    fn validate(&self) -> Result<(), String> {
        let scheme = self.webhook.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("http" | "https"))
            || self.webhook.parse::<ureq::http::Uri>().is_err()
        {
            return Err("reporting: webhook must be an http:// or https:// URL".into());
        }
        if !(1..=100_000).contains(&self.max_batch) {
            return Err("reporting: max_batch must be between 1 and 100000".into());
        }
        if self.queue_capacity < self.max_batch || self.queue_capacity > 1 << 24 {
            return Err(
                "reporting: queue_capacity must be at least max_batch and at most 16777216".into(),
            );
        }
        if self.node.as_deref().is_some_and(|n| {
            n.is_empty() || n.len() > 253 || !n.bytes().all(|b| b.is_ascii_graphic())
        }) {
            return Err("reporting: node must be 1 to 253 printable ASCII characters".into());
        }
        Ok(())
    }
}

/// `[[peering.peers]]`: the reference's four keys, then ours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Never logged nor shown.
    pub token: uuid::Uuid,
    /// PEM file of a CA to trust for this peer, instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Shown in logs, status and metrics; `host:port` when unset.
    #[serde(default)]
    pub name: Option<String>,
}

impl Peer {
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// `[peering]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peering {
    pub enabled: bool,
    pub peers: Vec<Peer>,
    /// Jobs held per peer at most; past it the peer is behind.
    #[serde(default = "Peering::default_queue_capacity")]
    pub queue_capacity: usize,
    /// Seconds between two digest comparisons with each peer.
    #[serde(default = "Peering::default_resync_interval")]
    pub resync_interval: u64,
}

impl Peering {
    fn default_queue_capacity() -> usize {
        65_536
    }

    fn default_resync_interval() -> u64 {
        60
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=1 << 24).contains(&self.queue_capacity) {
            return Err("peering: queue_capacity must be between 1 and 16777216".into());
        }
        if !(1..=86_400).contains(&self.resync_interval) {
            return Err("peering: resync_interval must be between 1 and 86400 seconds".into());
        }
        let mut names = std::collections::HashSet::new();
        for peer in &self.peers {
            if peer.host.is_empty() {
                return Err("peering.peers: host must not be empty".into());
            }
            if peer.name.as_deref().is_some_and(|n| {
                n.is_empty() || n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic())
            }) {
                return Err(
                    "peering.peers: name must be 1 to 64 printable ASCII characters".into(),
                );
            }
            if !names.insert(peer.display_name()) {
                return Err(format!(
                    "peering.peers: name '{}' is used twice",
                    peer.display_name()
                ));
            }
        }
        Ok(())
    }
}

/// A secret from the config (a token, a password): shown as `***` by
/// `{:?}`, so that no log line or error message carries it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `[fleet]`: sync with the other nodes of a fleet through a NATS
/// JetStream key-value bucket (see [`crate::fleet`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub enabled: bool,
    /// `nats://host:port` or `tls://host:port`, tried in turn.
    pub servers: Vec<String>,
    /// One way to log in at most: a token, a user and password, an nkey
    /// seed file or a credentials (JWT) file.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// PEM file of the CA that signed the servers' certificates; TLS is
    /// then required.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The key-value bucket, made when missing.
    #[serde(default = "Fleet::default_bucket")]
    pub bucket: String,
    /// Copies of the bucket kept by the JetStream cluster when couic makes
    /// it (1, 3 or 5).
    #[serde(default = "Fleet::default_replicas")]
    pub replicas: usize,
    /// This node's name in the fleet: the host name when unset.
    #[serde(default)]
    pub node: Option<String>,
    /// This node's own changes held while the server is away, one per
    /// policy and CIDR (the last); past it the oldest are dropped, counted.
    #[serde(default = "Fleet::default_queue_capacity")]
    pub queue_capacity: usize,
    /// Seconds a delete stays in the bucket as a marker: a node away
    /// longer than this learns of the delete by the key's absence.
    #[serde(default = "Fleet::default_tombstone_retention")]
    pub tombstone_retention: u64,
}

impl Fleet {
    fn default_bucket() -> String {
        "couic".into()
    }

    fn default_replicas() -> usize {
        1
    }

    fn default_queue_capacity() -> usize {
        262_144
    }

    fn default_tombstone_retention() -> u64 {
        86_400
    }

    /// `node`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(crate::fleet::host_name)
    }

    fn validate(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("fleet: servers must name at least one nats:// or tls:// URL".into());
        }
        for url in &self.servers {
            let rest = url
                .strip_prefix("nats://")
                .or_else(|| url.strip_prefix("tls://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(['/', ' '])) {
                return Err(format!(
                    "fleet: server '{url}' is not a nats://host:port or tls://host:port URL"
                ));
            }
            if url.contains('@') {
                // It would be shown in logs and status.
                return Err(
                    "fleet: servers carry no login: use token, user and password, nkey_file \
                     or creds_file"
                        .into(),
                );
            }
        }
        let logins = [
            self.token.is_some(),
            self.user.is_some(),
            self.nkey_file.is_some(),
            self.creds_file.is_some(),
        ];
        if logins.iter().filter(|l| **l).count() > 1 {
            return Err(
                "fleet: give one of token, user and password, nkey_file or creds_file".into(),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("fleet: user and password go together".into());
        }
        if !crate::fleet::valid_bucket(&self.bucket) {
            return Err(format!(
                "fleet: bucket '{}' must be 1 to 64 of A-Z a-z 0-9 - _",
                self.bucket
            ));
        }
        if ![1, 3, 5].contains(&self.replicas) {
            return Err("fleet: replicas must be 1, 3 or 5".into());
        }
        if !crate::fleet::valid_node(&self.node_name()) {
            return Err(format!(
                "fleet: node '{}' must be 1 to 64 of A-Z a-z 0-9 - _ .",
                self.node_name()
            ));
        }
        if !(1..=1 << 24).contains(&self.queue_capacity) {
            return Err("fleet: queue_capacity must be between 1 and 16777216".into());
        }
        if !(1..=31_536_000).contains(&self.tombstone_retention) {
            return Err("fleet: tombstone_retention must be between 1 and 31536000 seconds".into());
        }
        Ok(())
    }
}

/// `[state]`: what outlives the process (all optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    /// API and peer entries are on disk (`working_dir/state/`) before the
    /// API answers, and put back at start.
    pub durable: bool,
    /// The XDP links are pinned in bpffs: filtering goes on while couic
    /// restarts or is stopped, until `couic --detach`.
    pub pin: bool,
    /// Where bpffs is mounted.
    pub bpffs: PathBuf,
    /// The pins' directory under `<bpffs>/couic/`: by default the working
    /// directory's path with `/` as `-` and other characters but letters,
    /// digits, `-` and `_` as `_` (`var-lib-couic`), so that two couic
    /// with their own working directories never share pins.
    pub instance: Option<String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            durable: true,
            pin: true,
            bpffs: PathBuf::from("/sys/fs/bpf"),
            instance: None,
        }
    }
}

impl State {
    fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.instance {
            if name.is_empty()
                || name.len() > 200
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                // bpffs refuses names with a dot.
                return Err("state: instance must be 1 to 200 of A-Z a-z 0-9 - _".into());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ifaces: Vec<String>,
    #[serde(default)]
    pub operation_mode: OperationMode,
    pub working_dir: PathBuf,
    pub user: String,
    pub group: String,
    #[serde(default)]
    pub logging: Option<Logging>,
    pub server: Server,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub reporting: Option<Reporting>,
    #[serde(default)]
    pub peering: Option<Peering>,
    #[serde(default)]
    pub fleet: Option<Fleet>,
    #[serde(default)]
    pub state: State,
}

impl Config {
    /// The pins' directory: `<bpffs>/couic/<instance>`.
    pub fn pin_dir(&self) -> PathBuf {
        let instance = self.state.instance.clone().unwrap_or_else(|| {
            let path = self.working_dir.to_string_lossy();
            let name: String = path
                .trim_matches('/')
                .chars()
                .map(|c| match c {
                    '/' => '-',
                    c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
                    _ => '_',
                })
                .collect();
            if name.is_empty() {
                "root".into()
            } else {
                name
            }
        });
        self.state.bpffs.join("couic").join(instance)
    }

    /// The budget of single entry lines a second, `[logging]` or not.
    pub fn entry_lines_per_second(&self) -> u32 {
        self.logging
            .as_ref()
            .map_or_else(default_entry_lines_per_second, |l| l.entry_lines_per_second)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.drop_max_entries == 0 || l.ignore_max_entries == 0 {
            return Err(
                "limits: drop_max_entries and ignore_max_entries must be at least 1".into(),
            );
        }
        if l.max_tags < 2 || l.max_tags > crate::bpf::MAX_TAGS {
            return Err(format!(
                "limits: max_tags must be between 2 and {}",
                crate::bpf::MAX_TAGS
            ));
        }
        if let Some(iface) = self.ifaces.iter().find(|i| i.is_empty() || i.len() > 15) {
            return Err(format!("ifaces: '{iface}' is not a valid interface name"));
        }
        if let Some(reporting) = self.reporting.as_ref().filter(|r| r.enabled) {
            reporting.validate()?;
        }
        if let Some(peering) = self.peering.as_ref().filter(|p| p.enabled) {
            peering.validate()?;
        }
        if let Some(fleet) = self.fleet.as_ref().filter(|f| f.enabled) {
            fleet.validate()?;
        }
        self.state.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        ifaces = ["eth0"]
        working_dir = "/var/lib/couic"
        user = "couic"
        group = "couic"
        [server]
        socket = "/run/couic/couic.sock"
    "#;

    #[test]
    fn defaults() {
        let c = Config::parse(Path::new("c.toml"), MINIMAL).unwrap();
        assert_eq!(c.operation_mode, OperationMode::Auto);
        assert_eq!(c.limits, Limits::default());
        assert!(c.reporting.is_none() && c.peering.is_none() && c.logging.is_none());
        assert_eq!(c.entry_lines_per_second(), 20);
    }

    #[test]
    fn the_entry_line_budget_is_a_logging_key() {
        let text = format!("{MINIMAL}\n[logging]\ndir = \"/var/log/couic\"\n");
        let c = Config::parse(Path::new("c.toml"), &text).unwrap();
        assert_eq!(c.entry_lines_per_second(), 20);
        let c = Config::parse(
            Path::new("c.toml"),
            &format!("{text}entry_lines_per_second = 0\n"),
        )
        .unwrap();
        assert_eq!(c.entry_lines_per_second(), 0);
    }

    #[test]
    fn reporting_keys_have_defaults_and_bounds() {
        let text = format!(
            "{MINIMAL}\n[reporting]\nenabled = true\nwebhook = \"http://127.0.0.1:8000/v1/reports/x\"\n"
        );
        let c = Config::parse(Path::new("c.toml"), &text).unwrap();
        let r = c.reporting.unwrap();
        assert_eq!(r.events, [ReportEvent::Api, ReportEvent::Expiry]);
        assert_eq!((r.max_batch, r.queue_capacity), (5_000, 65_536));
        for (extra, key) in [
            ("max_batch = 0", "max_batch"),
            ("queue_capacity = 10", "queue_capacity"),
            ("events = [\"everything\"]", "everything"),
            ("node = \"\"", "node"),
        ] {
            let err = Config::parse(Path::new("c.toml"), &format!("{text}{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        for url in ["ftp://x/", "127.0.0.1:8000/v1/reports/x", "http://"] {
            let bad = text.replace("http://127.0.0.1:8000/v1/reports/x", url);
            let err = Config::parse(Path::new("c.toml"), &bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("webhook"), "{url}: {err}");
        }
        // Disabled: the reference did not check the URL, neither do we.
        let off = text
            .replace("enabled = true", "enabled = false")
            .replace("http://127.0.0.1:8000/v1/reports/x", "not a url");
        assert!(Config::parse(Path::new("c.toml"), &off).is_ok());
    }

    #[test]
    fn peering_keys_have_defaults_and_bounds() {
        let text = format!(
            "{MINIMAL}\n[peering]\nenabled = true\n[[peering.peers]]\nhost = \"::1\"\nport = 2900\ntls = false\ntoken = \"00000000-0000-0000-0000-000000000001\"\n"
        );
        let c = Config::parse(Path::new("c.toml"), &text).unwrap();
        let p = c.peering.unwrap();
        assert_eq!((p.queue_capacity, p.resync_interval), (65_536, 60));
        assert_eq!(p.peers[0].display_name(), "[::1]:2900");
        let with_key =
            |key: &str| text.replace("[[peering.peers]]", &format!("{key}\n[[peering.peers]]"));
        for (extra, key) in [
            (with_key("queue_capacity = 0"), "queue_capacity"),
            (with_key("resync_interval = 0"), "resync_interval"),
            (format!("{text}name = \"\"\n"), "name"),
            (
                format!("{text}{}", &text[text.find("[[peering.peers]]").unwrap()..]),
                "used twice",
            ),
        ] {
            let err = Config::parse(Path::new("c.toml"), &extra)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let text = format!("{MINIMAL}\nbogus_key = 1\n");
        let err = Config::parse(Path::new("c.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus_key"), "{err}");
        let text = MINIMAL.replace("[server]", "[server]\nsockett = \"x\"");
        let err = Config::parse(Path::new("c.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sockett"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let text = MINIMAL.replace(
            "ifaces = [\"eth0\"]",
            "ifaces = [\"eth0\"]\noperation_mode = \"turbo\"",
        );
        assert!(Config::parse(Path::new("c.toml"), &text).is_err());
        let text = format!("{MINIMAL}\n[limits]\nmax_tags = 1\n");
        let err = Config::parse(Path::new("c.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_tags"), "{err}");
        let text = format!("{MINIMAL}\n[limits]\nmax_tags = 16777217\n");
        let err = Config::parse(Path::new("c.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_tags must be between 2 and 16777216"),
            "{err}"
        );
        let text = MINIMAL.replace("user = \"couic\"\n", "");
        assert!(Config::parse(Path::new("c.toml"), &text)
            .unwrap_err()
            .to_string()
            .contains("user"));
    }
}
