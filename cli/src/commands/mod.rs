//! The command line (§14) and the dispatch of each command to its module.

pub mod check;
pub mod clients;
pub mod docs;
pub mod drop_ignore;
pub mod fleet;
pub mod peers;
pub mod sets;
pub mod stats;

use std::io::Write;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use clap_complete::Shell;
use couic_common::Policy;

use crate::config::DEFAULT_CONFIG_PATH;
use crate::transport::Api;

const CONFIG_HELP: &str = "\
Configuration (couicctl.toml):
  mode         = \"local\" | \"remote\"
  socket       = Unix socket of the daemon (local mode)
  client_file  = RBAC client file whose token is used (local mode)
  host, port   = reverse proxy in front of the socket (remote mode)
  tls          = use https (remote mode, default false)
  token        = bearer token, a UUID (remote mode, required)
  ca_file      = PEM file of the CA that signed the proxy's certificate
                 (remote mode with tls; default: the public web roots)
  ripestat_url = RIPEstat base URL for --from-asn (default https://stat.ripe.net;
                 the COUICCTL_RIPESTAT_URL environment variable overrides it)";

/// Command-line tool for the couic XDP firewall.
#[derive(Debug, Parser)]
#[command(name = "couicctl", version, about, after_long_help = CONFIG_HELP)]
pub struct Cli {
    /// Configuration file
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, global = true)]
    pub config: PathBuf,

    /// Print the whole help as Markdown
    #[arg(long, hide = true)]
    pub markdown_help: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage API clients and their tokens
    Clients {
        #[command(subcommand)]
        command: clients::ClientsCommand,
    },
    /// Show packet statistics
    Stats {
        #[command(subcommand)]
        command: stats::StatsCommand,
    },
    /// Manage static sets (files of CIDRs loaded at start and on reload)
    Sets {
        #[command(subcommand)]
        command: sets::SetsCommand,
    },
    /// Manage drop entries (traffic from them is dropped)
    Drop {
        #[command(subcommand)]
        command: drop_ignore::DropCommand,
    },
    /// Manage ignore entries (traffic from them always passes, before any drop entry)
    Ignore {
        #[command(subcommand)]
        command: drop_ignore::IgnoreCommand,
    },
    /// Show the verdict couic gives packets from an address, and why
    Check(check::CheckArgs),
    /// Show how the links to peer nodes are doing
    Peers(peers::PeersArgs),
    /// Show how the sync with the fleet's NATS bucket is doing
    Fleet(fleet::FleetArgs),
    /// Print a shell completion script
    Completions {
        /// Target shell
        shell: Shell,
    },
    /// Write man pages into a directory
    #[command(hide = true)]
    Man {
        /// Output directory (created if missing)
        dir: PathBuf,
    },
}

/// Runs the commands built from the definitions alone (completions, man
/// pages), which packaging calls with no configuration or daemon; `None` for
/// every other command.
pub fn run_offline(command: &Command, out: &mut dyn Write) -> Option<std::io::Result<()>> {
    match command {
        Command::Completions { shell } => Some(docs::completions(*shell, out)),
        Command::Man { dir } => Some(docs::man_pages(dir)),
        _ => None,
    }
}

/// What commands talking to the daemon need.
pub struct Ctx {
    pub api: Api,
    pub ripestat_url: String,
}

impl Ctx {
    /// `GET path` of a route beyond the reference: a bare 404 means a
    /// daemon older than `couicctl <command>`, and says so.
    pub fn get_newer<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        command: &str,
    ) -> anyhow::Result<T> {
        match self.api.get(path) {
            Err(crate::transport::ApiError::Plain { status: 404, .. }) => anyhow::bail!(
                "this couic daemon has no GET {path} route (404 without an error body); \
                 it is older than `couicctl {command}`"
            ),
            other => Ok(other?),
        }
    }
}

/// Runs a command that talks to the daemon.
pub fn run(command: Command, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Clients { command } => clients::run(command, ctx, out),
        Command::Stats { command } => stats::run(command, ctx, out),
        Command::Sets { command } => sets::run(command, ctx, out),
        Command::Drop { command } => drop_ignore::run_drop(command, ctx, out),
        Command::Ignore { command } => drop_ignore::run_ignore(command, ctx, out),
        Command::Check(args) => check::run(args, ctx, out),
        Command::Peers(args) => peers::run(args, ctx, out),
        Command::Fleet(args) => fleet::run(args, ctx, out),
        offline @ (Command::Completions { .. } | Command::Man { .. }) => {
            run_offline(&offline, out).expect("an offline command")?;
            Ok(())
        }
    }
}

/// `drop` or `ignore`, exactly (case-sensitive), with both offered to
/// completion scripts.
pub fn policy_parser() -> impl TypedValueParser<Value = Policy> {
    PossibleValuesParser::new(["drop", "ignore"])
        .map(|s| s.parse::<Policy>().expect("one of the possible values"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parse_errors_are_usage_errors() {
        for args in [
            &["couicctl", "drop", "add", "192.0.2.7"][..],
            &["couicctl", "drop", "add", "192.0.2.7/32", "-t", "a.b"],
            &["couicctl", "drop", "list", "-q", "--json"],
            &["couicctl", "sets", "list", "DROP"],
            &["couicctl", "clients", "add", "-n", "x", "-g", "client_ro"],
            &["couicctl", "clients", "inspect", "a b"],
            &["couicctl", "sets", "create", "drop", "s"],
            &[
                "couicctl",
                "sets",
                "create",
                "drop",
                "s",
                "1.1.1.1/32",
                "--from-asn",
                "3333",
            ],
            &["couicctl", "stats", "global", "--live", "--json"],
            &["couicctl", "check", "192.0.2.0/24"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn drop_add_defaults() {
        let cli = Cli::try_parse_from(["couicctl", "drop", "add", "192.0.2.7/24"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("/etc/couic/couicctl.toml"));
        let Some(Command::Drop {
            command: drop_ignore::DropCommand::Add(args),
        }) = cli.command
        else {
            panic!("not drop add");
        };
        assert_eq!(args.tag.as_str(), "couicctl");
        assert_eq!(args.expiration, "0");
        assert_eq!(args.cidr.normalized().to_string(), "192.0.2.0/24");
    }

    #[test]
    fn groups_parse_case_insensitively() {
        let cli = Cli::try_parse_from(["couicctl", "clients", "add", "-n", "ro", "-g", "ClientRO"])
            .unwrap();
        let Some(Command::Clients {
            command: clients::ClientsCommand::Add { group, .. },
        }) = cli.command
        else {
            panic!("not clients add");
        };
        assert_eq!(group, couic_common::Group::Clientro);
    }
}
