//! Logging: text to stdout, and to a rotating file when `[logging]` is set.
//! Level from `RUST_LOG` (env-filter syntax), `info` by default.

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

/// Installs the global subscriber; keep the guard alive to flush the file.
pub fn init(config: Option<&Logging>) -> Result<Option<WorkerGuard>, LoggingError> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stdout = fmt::layer().with_target(false).with_filter(filter());
    let Some(config) = config else {
        tracing_subscriber::registry().with(stdout).try_init()?;
        return Ok(None);
    };
    let rotation = match config.rotation {
        Rotation::Daily => AppenderRotation::DAILY,
        Rotation::Weekly => AppenderRotation::WEEKLY,
        Rotation::Never => AppenderRotation::NEVER,
    };
    let appender = Builder::new()
        .rotation(rotation)
        .filename_prefix("couic")
        .filename_suffix("log")
        .max_log_files(config.max_log_files.max(1))
        .build(&config.dir)
        .map_err(|source| LoggingError::File { dir: config.dir.clone(), source })?;
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
    Ok(Some(guard))
}
