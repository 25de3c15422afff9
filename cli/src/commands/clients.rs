//! `clients`: API clients (name, RBAC group, token).

use std::io::Write;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Subcommand;
use couic_common::{Client, ClientName, ClientRequest, Group};

use super::Ctx;
use crate::output;
use crate::transport::Method;

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Create a client; the daemon generates its token
    Add {
        /// Name: 1 to 48 letters, digits, - and _
        #[arg(short, long)]
        name: ClientName,
        /// RBAC group (case-insensitive)
        #[arg(short, long, ignore_case = true, value_parser = group_parser())]
        group: Group,
        /// Print the client as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one client
    Inspect {
        /// Name: 1 to 48 letters, digits, - and _
        name: ClientName,
        /// Print the client as JSON
        #[arg(long)]
        json: bool,
    },
    /// List clients
    List {
        /// Print only the names, one per line
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        /// Print the clients as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a client; its token stops working at once
    Delete {
        /// Name: 1 to 48 letters, digits, - and _
        name: ClientName,
    },
}

fn group_parser() -> impl TypedValueParser<Value = Group> {
    PossibleValuesParser::new(Group::ALL.map(Group::as_str))
        .map(|s| Group::parse_insensitive(&s).expect("one of the possible values"))
}

pub fn run(command: ClientsCommand, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        ClientsCommand::Add { name, group, json } => {
            let request = ClientRequest {
                name: name.to_string(),
                group: group.as_str().to_string(),
            };
            let client: Client = ctx.api.call(Method::Post, "/v1/client", Some(&request))?;
            show(out, std::slice::from_ref(&client), json, &client)
        }
        ClientsCommand::Inspect { name, json } => {
            let client: Client = ctx.api.get(&format!("/v1/client/{name}"))?;
            show(out, std::slice::from_ref(&client), json, &client)
        }
        ClientsCommand::List { quiet, json } => {
            let clients: Vec<Client> = ctx.api.get("/v1/client")?;
            if quiet {
                for c in &clients {
                    writeln!(out, "{}", c.name)?;
                }
                return Ok(());
            }
            show(out, &clients, json, &clients)
        }
        ClientsCommand::Delete { name } => Ok(ctx.api.delete(&format!("/v1/client/{name}"))?),
    }
}

/// A table of `rows`, or `as_json` pretty-printed.
fn show(
    out: &mut dyn Write,
    rows: &[Client],
    json: bool,
    as_json: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if json {
        output::print_json(out, as_json)?;
    } else {
        output::print_table(out, &output::client_table(rows))?;
    }
    Ok(())
}
