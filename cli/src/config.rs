//! `couicctl.toml` (§12.2): where the daemon is and which token to present.
//!
//! Local mode talks to the Unix socket with the token of an RBAC client file;
//! remote mode talks HTTP(S) to a reverse proxy with the `token` key. Unlike
//! the reference, remote mode needs no `client_file` and refuses a missing
//! `token` instead of sending the nil UUID (§18.29).

use std::fs;
use std::path::{Path, PathBuf};

use couic_common::Group;
use serde::Deserialize;
use uuid::Uuid;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/couic/couicctl.toml";
pub const DEFAULT_RIPESTAT_URL: &str = "https://stat.ripe.net";
/// Overrides `ripestat_url`, so tests can point `--from-asn` at a local server.
pub const RIPESTAT_URL_ENV: &str = "COUICCTL_RIPESTAT_URL";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {}: {detail}", path.display())]
    Parse {
        path: PathBuf,
        /// One line: where, then what.
        detail: String,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("invalid client file {}: {reason}", path.display())]
    ClientFile { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Local,
    Remote,
}

/// The file as written; unknown keys are ignored, as in the reference.
#[derive(Debug, Deserialize)]
struct RawConfig {
    mode: Mode,
    client_file: Option<PathBuf>,
    socket: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    #[serde(default)]
    tls: bool,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    ripestat_url: Option<String>,
}

/// An RBAC client file: the token local mode presents.
#[derive(Debug, Deserialize)]
struct ClientFile {
    token: String,
    #[allow(dead_code)] // Read only to refuse a file the daemon would refuse.
    group: Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local {
        socket: PathBuf,
    },
    Remote {
        host: String,
        port: u16,
        tls: bool,
        /// PEM bundle of the CA that signed the proxy's certificate.
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub target: Target,
    pub token: Uuid,
    pub ripestat_url: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let env_url = std::env::var(RIPESTAT_URL_ENV)
            .ok()
            .filter(|v| !v.is_empty());
        Config::parse(path, &text, env_url)
    }

    /// Validates the file's text; `path` only names it in messages (relative
    /// paths inside are taken from the working directory, as in the reference).
    fn parse(path: &Path, text: &str, env_url: Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: describe_toml_error(text, &source),
            source: Box::new(source),
        })?;
        let invalid = |reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let ripestat_url = env_url
            .or(raw.ripestat_url)
            .unwrap_or_else(|| DEFAULT_RIPESTAT_URL.to_string());
        match raw.mode {
            Mode::Local => {
                let socket = raw
                    .socket
                    .ok_or_else(|| invalid("socket is required for local mode"))?;
                let client_file = raw
                    .client_file
                    .ok_or_else(|| invalid("client_file is required for local mode"))?;
                let token = read_client_token(&client_file)?;
                Ok(Config {
                    target: Target::Local { socket },
                    token,
                    ripestat_url,
                })
            }
            Mode::Remote => {
                let host = raw
                    .host
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| invalid("host is required for remote mode"))?;
                let port = raw
                    .port
                    .ok_or_else(|| invalid("port is required for remote mode"))?;
                let token = raw
                    .token
                    .ok_or_else(|| invalid("token is required for remote mode"))?;
                let token = Uuid::parse_str(&token)
                    .map_err(|e| invalid(&format!("token is not a valid UUID: {e}")))?;
                if raw.ca_file.is_some() && !raw.tls {
                    return Err(invalid("ca_file needs tls = true"));
                }
                Ok(Config {
                    target: Target::Remote {
                        host,
                        port,
                        tls: raw.tls,
                        ca_file: raw.ca_file,
                    },
                    token,
                    ripestat_url,
                })
            }
        }
    }
}

/// Reads the token of an RBAC client file, refusing what the daemon would
/// refuse: not a regular `.toml` file, no token, no valid group.
fn read_client_token(path: &Path) -> Result<Uuid, ConfigError> {
    let bad = |reason: String| ConfigError::ClientFile {
        path: path.to_path_buf(),
        reason,
    };
    if path.extension().and_then(|e| e.to_str()) != Some("toml") {
        return Err(bad("the file name must end with .toml".into()));
    }
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let text = fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let file: ClientFile =
        toml::from_str(&text).map_err(|e| bad(e.message().trim_end().to_string()))?;
    Uuid::parse_str(&file.token).map_err(|e| bad(format!("token is not a valid UUID: {e}")))
}

/// `line <n>: <message>` on one line, so the error stays a single line.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', ", ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0b7f5d8e-4c2a-4e8f-9a51-2f7c3d9e1a64";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("couicctl.toml"), text, None)
    }

    fn client_file(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("couicctl.toml");
        fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn local_mode_takes_the_token_from_the_client_file() {
        let dir = tempfile::tempdir().unwrap();
        let cf = client_file(
            dir.path(),
            &format!("token = \"{TOKEN}\"\ngroup = \"admin\"\n"),
        );
        let cfg = parse(&format!(
            "mode = \"local\"\nsocket = \"/run/couic/couic.sock\"\nclient_file = \"{}\"\ntoken = \"{}\"\n",
            cf.display(),
            Uuid::nil()
        ))
        .unwrap();
        assert_eq!(cfg.token.to_string(), TOKEN);
        assert_eq!(
            cfg.target,
            Target::Local {
                socket: "/run/couic/couic.sock".into()
            }
        );
        assert_eq!(cfg.ripestat_url, DEFAULT_RIPESTAT_URL);
    }

    #[test]
    fn local_mode_requires_socket_and_a_valid_client_file() {
        let err = parse("mode = \"local\"\nclient_file = \"/x.toml\"\n").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("socket is required for local mode"),
            "{err}"
        );
        let err = parse("mode = \"local\"\nsocket = \"/s\"\n").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("client_file is required for local mode"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        for (body, want) in [
            ("group = \"admin\"\n", "missing field `token`"),
            (
                &format!("token = \"{TOKEN}\"\n") as &str,
                "missing field `group`",
            ),
            (
                &format!("token = \"{TOKEN}\"\ngroup = \"client_ro\"\n"),
                "unknown variant",
            ),
            (
                "token = \"nope\"\ngroup = \"admin\"\n",
                "token is not a valid UUID",
            ),
        ] {
            let cf = client_file(dir.path(), body);
            let text = format!(
                "mode = \"local\"\nsocket = \"/s\"\nclient_file = \"{}\"\n",
                cf.display()
            );
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("invalid client file"), "{err}");
            assert!(err.contains(want), "{err} lacks {want}");
        }
        let err = parse("mode = \"local\"\nsocket = \"/s\"\nclient_file = \"/etc/passwd\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("must end with .toml"), "{err}");
        let text = format!(
            "mode = \"local\"\nsocket = \"/s\"\nclient_file = \"{}\"\n",
            dir.path().display()
        );
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, ConfigError::ClientFile { .. }));
    }

    #[test]
    fn remote_mode_needs_host_port_and_token_but_no_client_file() {
        let cfg = parse(&format!(
            "mode = \"remote\"\nhost = \"fw.example\"\nport = 8443\ntls = true\ntoken = \"{TOKEN}\"\nca_file = \"/ca.pem\"\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.target,
            Target::Remote {
                host: "fw.example".into(),
                port: 8443,
                tls: true,
                ca_file: Some("/ca.pem".into())
            }
        );
        for (text, want) in [
            (format!("mode = \"remote\"\nport = 1\ntoken = \"{TOKEN}\""), "host is required for remote mode"),
            (format!("mode = \"remote\"\nhost = \"h\"\ntoken = \"{TOKEN}\""), "port is required for remote mode"),
            ("mode = \"remote\"\nhost = \"h\"\nport = 1".to_string(), "token is required for remote mode"),
            ("mode = \"remote\"\nhost = \"h\"\nport = 1\ntoken = \"x\"".to_string(), "token is not a valid UUID"),
            (format!("mode = \"remote\"\nhost = \"h\"\nport = 1\ntoken = \"{TOKEN}\"\nca_file = \"/c\""), "ca_file needs tls = true"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.ends_with(want) || err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse("mode = \"local\"\nsocket = 3\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid configuration file couicctl.toml: line 2: invalid type: integer `3`, expected path string"
        );
        let err = parse("mode = local\n").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid configuration file couicctl.toml: line 1: "),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn syntax_and_type_errors_are_parse_errors() {
        for text in [
            "mode = ",
            "mode = \"cloud\"",
            "mode = \"remote\"\nport = 70000",
            "",
        ] {
            assert!(
                matches!(parse(text), Err(ConfigError::Parse { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn ripestat_url_from_env_then_file_then_default() {
        let text = format!("mode = \"remote\"\nhost = \"h\"\nport = 1\ntoken = \"{TOKEN}\"\nripestat_url = \"http://file\"\n");
        let p = Path::new("c.toml");
        assert_eq!(
            Config::parse(p, &text, None).unwrap().ripestat_url,
            "http://file"
        );
        let env = Some("http://127.0.0.1:9".to_string());
        assert_eq!(
            Config::parse(p, &text, env).unwrap().ripestat_url,
            "http://127.0.0.1:9"
        );
    }
}
