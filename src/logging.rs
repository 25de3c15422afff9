//! Logging: text to stdout, and to a rotating file when `[logging]` is set.
//! Level from `RUST_LOG` (env-filter syntax), `info` by default; the NATS
//! client's own lines from `warn` (couic says what matters of the fleet's
//! connection itself).
//!
//! Capabilities are per thread, so no thread may start before couic has
//! dropped them. Startup therefore logs through [`startup`], which writes
//! synchronously from the calling thread. Once privileges are gone, [`init`]
//! installs the global subscriber, whose outputs are written by background
//! threads: a request never waits on a slow terminal or disk. Their buffers
//! are bounded and, when full under a flood of changes, lines are dropped
//! rather than stalling the API.
//!
//! Log files are mode 0640, owned by the configured `user:group`: they name
//! clients and addresses, which are not for every local account. The files
//! already there are given that mode and owner at startup, while couic may
//! still chown (one it cannot change is warned about); the file of a later rotation is created by couic's own
//! account, and tracing-appender offers no mode for it, so [`startup`]
//! narrows the process umask to 027 (what `systemd/couic.service` sets).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation as AppenderRotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, Logging, Rotation};
use crate::dirs::Owner;

/// Mode of the log files: the owner writes, its group reads.
pub const LOG_FILE_MODE: u32 = 0o640;
/// Bits the process never gives when it creates a file (so 0640 for files).
const UMASK: libc::mode_t = 0o027;
const FILE_PREFIX: &str = "couic";
const FILE_SUFFIX: &str = "log";

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot open log directory {dir}: {source}")]
    File {
        dir: std::path::PathBuf,
        #[source]
        source: tracing_appender::rolling::InitError,
    },
    #[error("cannot give log file {path} mode 0640 and its owner: {source}")]
    Secure {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("logging already initialised: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// `RUST_LOG`, or the default levels.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"))
}

/// A subscriber for the privileged startup: stdout and, when configured, the
/// log file, both written synchronously by the thread that logs. Use it with
/// `tracing::dispatcher::with_default`. Narrows the umask and gives the log
/// files their mode and `owner` (see the module's comment).
pub fn startup(config: Option<&Logging>, owner: Owner) -> Result<tracing::Dispatch, LoggingError> {
    let stdout = fmt::layer().with_target(false).with_filter(filter());
    let Some(config) = config else {
        return Ok(tracing_subscriber::registry().with(stdout).into());
    };
    narrow_umask();
    let appender = appender(config)?;
    let failed = secure_files(&config.dir, owner);
    let file = fmt::layer().with_ansi(false).with_writer(appender);
    let file = match config.format {
        LogFormat::Text => file.boxed(),
        LogFormat::Json => file.json().boxed(),
    };
    let dispatch: tracing::Dispatch = tracing_subscriber::registry()
        .with(stdout)
        .with(file.with_filter(filter()))
        .into();
    tracing::dispatcher::with_default(&dispatch, || {
        for e in &failed {
            tracing::warn!("{e}");
        }
    });
    Ok(dispatch)
}

fn appender(
    config: &Logging,
) -> Result<tracing_appender::rolling::RollingFileAppender, LoggingError> {
    let rotation = match config.rotation {
        Rotation::Daily => AppenderRotation::DAILY,
        Rotation::Weekly => AppenderRotation::WEEKLY,
        Rotation::Never => AppenderRotation::NEVER,
    };
    Builder::new()
        .rotation(rotation)
        .filename_prefix(FILE_PREFIX)
        .filename_suffix(FILE_SUFFIX)
        .max_log_files(config.max_log_files.max(1))
        .build(&config.dir)
        .map_err(|source| LoggingError::File {
            dir: config.dir.clone(),
            source,
        })
}

/// Removes the umask's [`UMASK`] bits from every file the process creates.
fn narrow_umask() {
    // SAFETY: umask only swaps the process's mask; called at startup, before
    // any other thread creates a file, so the read-and-set cannot race.
    unsafe {
        let old = libc::umask(UMASK);
        libc::umask(old | UMASK);
    }
}

/// Gives every log file in `dir` mode 0640 and `owner` (files an older
/// couic, or another umask, left wider). Returns what could not be done: a
/// file left by another account is worth a warning, not a stop.
fn secure_files(dir: &Path, owner: Owner) -> Vec<LoggingError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoggingError::Secure { path, source }
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return vec![err(dir)(e)],
    };
    let mut failed = Vec::new();
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => {
                failed.push(err(dir)(e));
                continue;
            }
        };
        if let Err(e) = secure_file(&path, owner) {
            failed.push(err(&path)(e));
        }
    }
    failed
}

fn secure_file(path: &Path, owner: Owner) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ours =
        name.starts_with(&format!("{FILE_PREFIX}.")) && name.ends_with(&format!(".{FILE_SUFFIX}"));
    let meta = fs::symlink_metadata(path)?;
    if !ours || !meta.is_file() {
        return Ok(());
    }
    if meta.permissions().mode() & 0o7777 != LOG_FILE_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(LOG_FILE_MODE))?;
    }
    owner.apply(path)
}

/// Keeps the background writers alive; dropping it flushes them.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Installs the global subscriber; starts the writer threads.
pub fn init(config: Option<&Logging>) -> Result<LogGuards, LoggingError> {
    let (stdout_writer, stdout_guard) = tracing_appender::non_blocking(std::io::stdout());
    let stdout = fmt::layer()
        .with_target(false)
        .with_writer(stdout_writer)
        .with_filter(filter());
    let Some(config) = config else {
        tracing_subscriber::registry().with(stdout).try_init()?;
        return Ok(LogGuards(vec![stdout_guard]));
    };
    let appender = appender(config)?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let file = fmt::layer().with_ansi(false).with_writer(writer);
    let file = match config.format {
        LogFormat::Text => file.boxed(),
        LogFormat::Json => file.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(stdout)
        .with(file.with_filter(filter()))
        .try_init()?;
    Ok(LogGuards(vec![stdout_guard, guard]))
}
