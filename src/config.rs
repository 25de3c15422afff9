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
}

fn default_max_log_files() -> usize {
    7
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporting {
    pub enabled: bool,
    pub webhook: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub token: uuid::Uuid,
    /// PEM file of a CA to trust for this peer, beyond the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peering {
    pub enabled: bool,
    pub peers: Vec<Peer>,
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
}

impl Config {
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
        Ok(())
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
