//! Logging: text to stdout, and to a rotating file when `[logging]` is set.
//! Level from `RUST_LOG` (env-filter syntax), `info` by default.
//!
//! Capabilities are per thread, so no thread may start before couic has
//! dropped them. Startup therefore logs through [`startup`], which writes
//! synchronously from the calling thread. Once privileges are gone, [`init`]
//! installs the global subscriber, whose outputs are written by background
//! threads: a request never waits on a slow terminal or disk. Their buffers
//! are bounded and, when full under a flood of changes, lines are dropped
//! rather than stalling the API.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation as AppenderRotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, Logging, Rotation};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot open log directory {dir}: {source}")]
    File {
        dir: std::path::PathBuf,
        #[source]
        source: tracing_appender::rolling::InitError,
    },
    #[error("logging already initialised: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// A subscriber for the privileged startup: stdout and, when configured, the
/// log file, both written synchronously by the thread that logs. Use it with
/// `tracing::dispatcher::with_default`.
pub fn startup(config: Option<&Logging>) -> Result<tracing::Dispatch, LoggingError> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stdout = fmt::layer().with_target(false).with_filter(filter());
    let Some(config) = config else {
        return Ok(tracing_subscriber::registry().with(stdout).into());
    };
    let file = fmt::layer().with_ansi(false).with_writer(appender(config)?);
    let file = match config.format {
        LogFormat::Text => file.boxed(),
        LogFormat::Json => file.json().boxed(),
    };
    Ok(tracing_subscriber::registry()
        .with(stdout)
        .with(file.with_filter(filter()))
        .into())
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
        .filename_prefix("couic")
        .filename_suffix("log")
        .max_log_files(config.max_log_files.max(1))
        .build(&config.dir)
        .map_err(|source| LoggingError::File {
            dir: config.dir.clone(),
            source,
        })
}

/// Keeps the background writers alive; dropping it flushes them.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Installs the global subscriber; starts the writer threads.
pub fn init(config: Option<&Logging>) -> Result<LogGuards, LoggingError> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
