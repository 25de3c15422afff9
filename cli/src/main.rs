//! couicctl: the operator's command-line tool for couic, and what fail2ban
//! calls on every ban. Parse the command line, read the configuration, open
//! the transport, run the command; exit 0 on success, 1 on any failure,
//! 2 on a usage error (clap).

mod commands;
mod config;
mod output;
mod transport;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use commands::{Cli, Ctx};
use config::Config;
use transport::Api;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();

    if cli.markdown_help {
        return finish(
            out.write_all(commands::docs::markdown().as_bytes())
                .map_err(Into::into),
        );
    }
    if let Some(result) = cli
        .command
        .as_ref()
        .and_then(|c| commands::run_offline(c, &mut out))
    {
        return finish(result.map_err(Into::into));
    }

    // As in the reference, the configuration is read even before printing
    // the help of a bare `couicctl`.
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return fail(&format!("Error: {e}")),
    };
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    let api = match Api::new(&config) {
        Ok(api) => api,
        Err(e) => return fail(&format!("Error: {e}")),
    };
    let mut ctx = Ctx {
        api,
        ripestat_url: config.ripestat_url,
    };
    finish(commands::run(command, &mut ctx, &mut out))
}

/// Maps a command's result to the exit code. A reader that went away
/// (`couicctl drop list | head`) is not a failure.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    let _ = io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("Error executing command: {e:#}")),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}
