//! The config file (§12.3): the reference's keys and defaults, plus
//! `[discord].details` and `[webhook]` (see README.md).
//!
//! Unlike the reference, every bad value is an error naming its key, and so
//! is a key nobody reads: a typo should not silently leave a default in
//! place. The file is read as a TOML table first and then key by key, so an
//! error says `server.port`, never just a line; no error repeats a value,
//! since the secret and the webhook URLs are credentials.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};
use uuid::Uuid;

use crate::secret::Secret;
use crate::thresholds::{Level, Thresholds};

pub const DEFAULT_PATH: &str = "/etc/couic-report/config.toml";
pub const DEFAULT_BATCH_INTERVAL_SECS: u64 = 900;
/// Longest period accepted: 31 days. Anything longer is surely a typo, and
/// it keeps deadline arithmetic far from overflow.
pub const MAX_BATCH_INTERVAL_SECS: u64 = 31 * 24 * 3600;
pub const DEFAULT_SERVER_NAME: &str = "localhost";
pub const DEFAULT_ADDR: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8000;
/// The reference's choice: a receiver reachable from this host only.
pub const LOOPBACK_ADDRS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
pub const DEFAULT_ORANGE: u64 = 10;
pub const DEFAULT_RED: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML. The line and column, without the source line the toml crate
    /// would quote: it may hold the secret.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{key}: {problem}")]
    Key { key: String, problem: Problem },
}

impl ConfigError {
    /// The dotted key at fault, when the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// What is wrong with a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("required")]
    Missing,
    #[error("unknown key")]
    Unknown,
    #[error("expected {0}")]
    Type(&'static str),
    #[error("must be {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The aggregation period.
    pub batch_interval: Duration,
    pub server: Server,
    pub thresholds: Thresholds,
    pub discord: Option<Discord>,
    pub webhook: Option<Webhook>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Shown in notifications.
    pub name: String,
    /// One of [`LOOPBACK_ADDRS`].
    pub addr: String,
    pub port: u16,
    pub secret: Secret,
}

/// `[discord]`: the reference's notifier.
#[derive(Clone, PartialEq)]
pub struct Discord {
    pub webhook_url: String,
    /// Adds the figures the reference does not have to the embed, after its
    /// three fields. Off by default: the embed is then exactly §13's.
    pub details: bool,
}

/// `[webhook]`: one JSON POST per period to any endpoint.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    pub url: String,
}

// Webhook URLs carry credentials (Discord's has its token in the path).
impl fmt::Debug for Discord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discord")
            .field("webhook_url", &"<redacted>")
            .field("details", &self.details)
            .finish()
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &"<redacted>")
            .finish()
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = position(text, e.span().map_or(0, |s| s.start));
            ConfigError::Syntax {
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        let mut top = Keys::new("", &table);
        let batch_interval_secs = top
            .u64("batch_interval_secs")?
            .unwrap_or(DEFAULT_BATCH_INTERVAL_SECS);
        if !(1..=MAX_BATCH_INTERVAL_SECS).contains(&batch_interval_secs) {
            return Err(top.invalid(
                "batch_interval_secs",
                format!("from 1 to {MAX_BATCH_INTERVAL_SECS} seconds"),
            ));
        }
        let empty = Table::new();
        let server = server(top.table("server")?.unwrap_or(&empty))?;
        let thresholds = thresholds(top.table("thresholds")?.unwrap_or(&empty))?;
        let discord = top.table("discord")?.map(discord).transpose()?;
        let webhook = top.table("webhook")?.map(webhook).transpose()?;
        top.finish()?;
        Ok(Config {
            batch_interval: Duration::from_secs(batch_interval_secs),
            server,
            thresholds,
            discord,
            webhook,
        })
    }
}

fn server(table: &Table) -> Result<Server, ConfigError> {
    let mut keys = Keys::new("server", table);
    let name = keys
        .string("name")?
        .unwrap_or(DEFAULT_SERVER_NAME)
        .to_string();
    let addr = keys.string("addr")?.unwrap_or(DEFAULT_ADDR);
    if !LOOPBACK_ADDRS.contains(&addr) {
        return Err(keys.invalid("addr", "localhost, 127.0.0.1 or ::1".into()));
    }
    let port = match keys.u64("port")? {
        None => DEFAULT_PORT,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| keys.invalid("port", "from 1 to 65535".into()))?,
    };
    let secret = keys
        .string("secret")?
        .ok_or_else(|| keys.error("secret", Problem::Missing))?;
    let secret = Uuid::parse_str(secret)
        .map_err(|_| keys.invalid("secret", "a UUID".into()))
        .and_then(|uuid| {
            Secret::new(uuid).ok_or_else(|| keys.invalid("secret", "a UUID other than nil".into()))
        })?;
    let addr = addr.to_string();
    keys.finish()?;
    Ok(Server {
        name,
        addr,
        port,
        secret,
    })
}

fn thresholds(table: &Table) -> Result<Thresholds, ConfigError> {
    let mut keys = Keys::new("thresholds", table);
    let orange = keys.u64("orange")?.unwrap_or(DEFAULT_ORANGE);
    let red = keys.u64("red")?.unwrap_or(DEFAULT_RED);
    if red <= orange {
        return Err(keys.invalid("red", format!("greater than thresholds.orange ({orange})")));
    }
    let min = match keys.string("threshold_min")? {
        None => Level::Green,
        Some(text) => text
            .parse()
            .map_err(|_| keys.invalid("threshold_min", "green, orange or red".into()))?,
    };
    keys.finish()?;
    Ok(Thresholds { orange, red, min })
}

fn discord(table: &Table) -> Result<Discord, ConfigError> {
    let mut keys = Keys::new("discord", table);
    let webhook_url = keys.url("webhook_url")?;
    let details = keys.bool("details")?.unwrap_or(false);
    keys.finish()?;
    Ok(Discord {
        webhook_url,
        details,
    })
}

fn webhook(table: &Table) -> Result<Webhook, ConfigError> {
    let mut keys = Keys::new("webhook", table);
    let url = keys.url("url")?;
    keys.finish()?;
    Ok(Webhook { url })
}

/// Reads the keys of one table by name and type, remembering which were
/// read so that [`Keys::finish`] can name the first one nobody asked for.
struct Keys<'a> {
    prefix: &'static str,
    table: &'a Table,
    read: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn new(prefix: &'static str, table: &'a Table) -> Self {
        Keys {
            prefix,
            table,
            read: Vec::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn error(&self, key: &str, problem: Problem) -> ConfigError {
        ConfigError::Key {
            key: self.path(key),
            problem,
        }
    }

    fn invalid(&self, key: &str, what: String) -> ConfigError {
        self.error(key, Problem::Invalid(what))
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.table.get(key)
    }

    fn u64(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(n)) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| self.invalid(key, "zero or more".into())),
            Some(_) => Err(self.error(key, Problem::Type("an integer"))),
        }
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(key, Problem::Type("true or false"))),
        }
    }

    fn string(&mut self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(key, Problem::Type("a string"))),
        }
    }

    fn table(&mut self, key: &'static str) -> Result<Option<&'a Table>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(self.error(key, Problem::Type("a table"))),
        }
    }

    /// A required http(s) URL with a host.
    fn url(&mut self, key: &'static str) -> Result<String, ConfigError> {
        let url = self
            .string(key)?
            .ok_or_else(|| self.error(key, Problem::Missing))?;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(url.to_string()),
            _ => Err(self.invalid(key, "an http:// or https:// URL".into())),
        }
    }

    fn finish(self) -> Result<(), ConfigError> {
        let mut unknown: Vec<&String> = self
            .table
            .keys()
            .filter(|k| !self.read.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            Some(key) => Err(self.error(key, Problem::Unknown)),
            None => Ok(()),
        }
    }
}

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "5b8f3c1e-2a4d-4f6b-9c7e-1d2f3a4b5c6d";

    fn with_secret(rest: &str) -> String {
        format!("{rest}\n[server]\nsecret = \"{SECRET}\"\n")
    }

    fn key_of(text: &str) -> String {
        let err = Config::parse(text).unwrap_err();
        let key = err.key().unwrap_or_else(|| panic!("{err}")).to_string();
        assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        key
    }

    #[test]
    fn the_reference_defaults() {
        let c = Config::parse(&with_secret("")).unwrap();
        assert_eq!(c.batch_interval, Duration::from_secs(900));
        assert_eq!(c.server.name, "localhost");
        assert_eq!(c.server.addr, "127.0.0.1");
        assert_eq!(c.server.port, 8000);
        assert!(c.server.secret.matches(SECRET));
        assert_eq!(
            c.thresholds,
            Thresholds {
                orange: 10,
                red: 100,
                min: Level::Green
            }
        );
        assert!(c.discord.is_none() && c.webhook.is_none());
    }

    #[test]
    fn the_reference_sample() {
        let text = format!(
            r#"batch_interval_secs = 3600

[server]
name = "couic-report"
addr = "::1"
port = 9000
secret = "{}"

[thresholds]
orange = 5
red = 50
threshold_min = "orange"

[discord]
webhook_url = "https://discord.com/api/webhooks/1/abc"
"#,
            SECRET.to_uppercase()
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.batch_interval, Duration::from_secs(3600));
        assert_eq!(c.server.name, "couic-report");
        assert_eq!(c.server.addr, "::1");
        assert_eq!(c.server.port, 9000);
        assert!(c.server.secret.matches(SECRET));
        assert_eq!(c.thresholds.min, Level::Orange);
        let discord = c.discord.unwrap();
        assert_eq!(
            discord.webhook_url,
            "https://discord.com/api/webhooks/1/abc"
        );
        assert!(!discord.details);
    }

    #[test]
    fn our_notifier_keys() {
        let c = Config::parse(&with_secret(
            "[discord]\nwebhook_url = \"http://127.0.0.1:1/d\"\ndetails = true\n\
             [webhook]\nurl = \"http://127.0.0.1:2/w\"\n",
        ))
        .unwrap();
        assert!(c.discord.unwrap().details);
        assert_eq!(c.webhook.unwrap().url, "http://127.0.0.1:2/w");
    }

    #[test]
    fn every_bad_value_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("batch_interval_secs = 0", "batch_interval_secs"),
            ("batch_interval_secs = -5", "batch_interval_secs"),
            ("batch_interval_secs = 2678401", "batch_interval_secs"),
            ("batch_interval_secs = \"900\"", "batch_interval_secs"),
            ("batch_interval_secs = 1.5", "batch_interval_secs"),
            ("batch_interval = 900", "batch_interval"),
            ("[thresholds]\norange = 100\nred = 100", "thresholds.red"),
            ("[thresholds]\norange = 100", "thresholds.red"),
            ("[thresholds]\norange = -1", "thresholds.orange"),
            ("[thresholds]\nred = \"x\"", "thresholds.red"),
            (
                "[thresholds]\nthreshold_min = \"blue\"",
                "thresholds.threshold_min",
            ),
            (
                "[thresholds]\nthreshold_min = \"Green\"",
                "thresholds.threshold_min",
            ),
            ("[thresholds]\nyellow = 3", "thresholds.yellow"),
            ("[discord]\n", "discord.webhook_url"),
            ("[discord]\nwebhook_url = \"\"", "discord.webhook_url"),
            (
                "[discord]\nwebhook_url = \"ftp://x\"",
                "discord.webhook_url",
            ),
            (
                "[discord]\nwebhook_url = \"https:///x\"",
                "discord.webhook_url",
            ),
            ("[discord]\nwebhook_url = 3", "discord.webhook_url"),
            (
                "[discord]\nwebhook_url = \"http://h\"\ndetails = 1",
                "discord.details",
            ),
            ("[discord]\nwebhook = \"http://h\"", "discord.webhook_url"),
            ("[webhook]\n", "webhook.url"),
            ("[webhook]\nurl = \"h\"", "webhook.url"),
            (
                "[webhook]\nurl = \"http://h\"\ntimeout = 3",
                "webhook.timeout",
            ),
            ("discord = \"x\"", "discord"),
        ];
        for (rest, key) in cases {
            assert_eq!(key_of(&with_secret(rest)), *key, "{rest}");
        }
        let server: &[(&str, &str)] = &[
            ("", "server.secret"),
            ("secret = \"\"", "server.secret"),
            ("secret = \"not-a-uuid\"", "server.secret"),
            ("secret = 5", "server.secret"),
            (
                "secret = \"00000000-0000-0000-0000-000000000000\"",
                "server.secret",
            ),
            ("addr = \"0.0.0.0\"", "server.addr"),
            ("addr = \"192.168.1.1\"", "server.addr"),
            ("port = 0", "server.port"),
            ("port = 65536", "server.port"),
            ("port = \"80\"", "server.port"),
            ("name = 3", "server.name"),
            ("colour = 3", "server.colour"),
        ];
        for (rest, key) in server {
            let with = if key == &"server.secret" {
                format!("[server]\n{rest}")
            } else {
                format!("[server]\nsecret = \"{SECRET}\"\n{rest}")
            };
            assert_eq!(key_of(&with), *key, "{rest}");
        }
        assert_eq!(key_of(""), "server.secret");
        assert_eq!(key_of("server = 1"), "server");
    }

    #[test]
    fn errors_never_repeat_a_credential() {
        let err = Config::parse("[server]\nsecret = \"5b8f3c1e-2a4d-4f6b-9c7e\"").unwrap_err();
        assert!(!err.to_string().contains("5b8f"), "{err}");
        let err = Config::parse("[server]\nsecret = \"5b8f3c1e-2a4d-4f6b-9c7e").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err}");
        assert!(!err.to_string().contains("5b8f"), "{err}");
        let err = Config::parse(&with_secret("[webhook]\nurl = \"ftp://tok3n\"")).unwrap_err();
        assert!(!err.to_string().contains("tok3n"), "{err}");
    }
}
