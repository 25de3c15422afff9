//! couic-report: read the config, start the notifiers and the aggregator,
//! then serve on loopback until a signal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use couic_report::aggregator::Aggregator;
use couic_report::config::{Config, DEFAULT_PATH};
use couic_report::delivery::{self, Destination};
use couic_report::metrics::Metrics;
use couic_report::notify::Format;
use couic_report::queue::{self, QUEUE_CAPACITY};
use couic_report::server::{self, State};
use couic_report::worker::Worker;

/// Webhook receiver that aggregates couic reports.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Parse and validate the configuration, print OK or the error, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check_config {
        return match Config::load(&cli.config) {
            Ok(_) => {
                println!("OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("Configuration error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("Configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Text to stdout, `info` unless `RUST_LOG` says otherwise. The HTTP
/// client's own logs stay at `warn` whatever `RUST_LOG` says: at debug
/// they would print the webhook URLs, which hold credentials.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = ["ureq=warn", "ureq_proto=warn", "rustls=warn"]
        .into_iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, EnvFilter::add_directive);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

/// Startup order: notifiers, then the aggregator they are fed by, then the
/// listener that feeds it. Stopping drops them in reverse: the server's end
/// of the queue goes, the aggregator sees it and returns.
fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let mut outboxes = Vec::new();
    for destination in destinations(&config) {
        let (outbox, _thread) = delivery::start(destination, metrics.clone())
            .context("cannot start a notifier thread")?;
        outboxes.push(outbox);
    }
    let (queue, inbox) = queue::queue(QUEUE_CAPACITY, metrics.clone());
    let worker = Worker {
        aggregator: Aggregator::new(config.batch_interval, Instant::now()),
        thresholds: config.thresholds,
        server: config.server.name.clone(),
        outboxes,
        metrics: metrics.clone(),
    };
    let aggregator = worker
        .start(inbox)
        .context("cannot start the aggregator thread")?;
    let state = State {
        secret: config.server.secret.clone(),
        queue,
        metrics,
    };
    actix_web::rt::System::new().block_on(async {
        let server = server::bind(&config.server.addr, config.server.port, state)?;
        tracing::info!(
            addr = %config.server.addr,
            port = config.server.port,
            period_secs = config.batch_interval.as_secs(),
            discord = config.discord.is_some(),
            webhook = config.webhook.is_some(),
            "couic-report listening"
        );
        server.await.context("server stopped")
    })?;
    let _ = aggregator.join();
    Ok(())
}

fn destinations(config: &Config) -> Vec<Destination> {
    let discord = config.discord.as_ref().map(|d| Destination {
        name: "discord",
        url: d.webhook_url.clone(),
        format: Format::Discord { details: d.details },
    });
    let webhook = config.webhook.as_ref().map(|w| Destination {
        name: "webhook",
        url: w.url.clone(),
        format: Format::Webhook,
    });
    discord.into_iter().chain(webhook).collect()
}
