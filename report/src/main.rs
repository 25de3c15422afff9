//! couic-report: the webhook receiver for couic reports (not yet implemented).

use clap::Parser;

/// Webhook receiver that aggregates couic reports. Not yet implemented.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("couic-report: not yet implemented");
    std::process::exit(1);
}
