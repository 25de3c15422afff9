//! couicctl: the operator's command-line tool for couic (not yet implemented).

use clap::Parser;

/// Command-line tool for the couic firewall. Not yet implemented: drive the
/// daemon through its REST API on the Unix socket meanwhile.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("couicctl: not yet implemented");
    std::process::exit(1);
}
