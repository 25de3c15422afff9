//! `sets`: static set files, edited through the API and applied by `reload`.
//! `create` can take its CIDRs from a file or from the prefixes an AS
//! announces, as RIPEstat reports them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use couic_common::{Cidr, Policy, Set, SetName, SetSummary};
use serde::{Deserialize, Serialize};

use super::{policy_parser, Ctx};
use crate::output;
use crate::transport::Method;

const RELOAD_NOTE: &str = "Note: Run 'couicctl sets reload' to apply changes";
const RIPESTAT_TIMEOUT: Duration = Duration::from_secs(30);
const RIPESTAT_USER_AGENT: &str = concat!(
    "couicctl/",
    env!("CARGO_PKG_VERSION"),
    " (+https://couic.net)"
);

#[derive(Debug, Subcommand)]
pub enum SetsCommand {
    /// List the sets of a policy
    List {
        #[arg(value_parser = policy_parser())]
        policy: Policy,
        /// Print the summaries as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the entries of a set
    Inspect {
        #[arg(value_parser = policy_parser())]
        policy: Policy,
        /// Set name: 1 to 48 letters, digits, - and _
        name: SetName,
        /// Print the set as JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a set from CIDRs, a file or an AS number
    Create(CreateArgs),
    /// Replace the entries of a set (no entries empties it)
    Update {
        #[arg(value_parser = policy_parser())]
        policy: Policy,
        /// Set name: 1 to 48 letters, digits, - and _
        name: SetName,
        /// CIDRs as address/prefix
        entries: Vec<Cidr>,
    },
    /// Delete a set file
    Delete {
        #[arg(value_parser = policy_parser())]
        policy: Policy,
        /// Set name: 1 to 48 letters, digits, - and _
        name: SetName,
    },
    /// Load the set files of both policies into the firewall
    Reload,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["entries", "from_asn", "from_file"])))]
pub struct CreateArgs {
    #[arg(value_parser = policy_parser())]
    pub policy: Policy,
    /// Set name: 1 to 48 letters, digits, - and _
    pub name: SetName,
    /// CIDRs as address/prefix
    pub entries: Vec<Cidr>,
    /// Use the prefixes announced by this AS (RIPEstat), e.g. AS3333
    #[arg(long, value_name = "ASN")]
    pub from_asn: Option<String>,
    /// Read one CIDR per line; blank lines and # comments are skipped
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
}

pub fn run(command: SetsCommand, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        SetsCommand::List { policy, json } => {
            let sets: Vec<SetSummary> = ctx.api.get(&format!("/v1/sets/{policy}"))?;
            if json {
                output::print_json(out, &sets)?;
            } else if sets.is_empty() {
                writeln!(out, "No sets found for policy '{policy}'")?;
            } else {
                for s in &sets {
                    writeln!(
                        out,
                        "{}: {} entries ({} bytes)",
                        s.name, s.entry_count, s.file_size
                    )?;
                }
            }
        }
        SetsCommand::Inspect { policy, name, json } => {
            let set: Set = ctx.api.get(&format!("/v1/sets/{policy}/{name}"))?;
            if json {
                output::print_json(out, &set)?;
            } else {
                writeln!(
                    out,
                    "Set: {}\nEntry count: {}\nEntries:",
                    set.name,
                    set.entries.len()
                )?;
                for e in &set.entries {
                    writeln!(out, "\t{e}")?;
                }
            }
        }
        SetsCommand::Create(args) => create(args, ctx, out)?,
        SetsCommand::Update {
            policy,
            name,
            entries,
        } => {
            let body = set_body(&name, &entries);
            let set: Set = ctx.api.call(
                Method::Put,
                &format!("/v1/sets/{policy}/{name}"),
                Some(&body),
            )?;
            writeln!(
                out,
                "Set '{}' updated with {} entries\n{RELOAD_NOTE}",
                set.name,
                set.entries.len()
            )?;
        }
        SetsCommand::Delete { policy, name } => {
            let _: serde_json::Value = ctx.api.call(
                Method::Delete,
                &format!("/v1/sets/{policy}/{name}"),
                None::<&()>,
            )?;
            writeln!(out, "Set '{name}' deleted\n{RELOAD_NOTE}")?;
        }
        SetsCommand::Reload => {
            let _: serde_json::Value =
                ctx.api.call(Method::Post, "/v1/sets/reload", None::<&()>)?;
            writeln!(out, "Sets reloaded successfully")?;
        }
    }
    Ok(())
}

fn set_body(name: &SetName, entries: &[Cidr]) -> Set {
    Set {
        name: name.to_string(),
        // Canonical text of the parsed value, host bits kept (§7.6).
        entries: entries.iter().map(Cidr::to_string).collect(),
    }
}

fn create(args: CreateArgs, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let entries = if let Some(path) = &args.from_file {
        writeln!(out, "Reading CIDRs from file: {}", path.display())?;
        let cidrs = read_cidr_file(path)?;
        writeln!(out, "Loaded {} CIDRs from file", cidrs.len())?;
        cidrs
    } else if let Some(asn) = &args.from_asn {
        writeln!(out, "Fetching prefixes for ASN: {asn}")?;
        out.flush()?;
        let cidrs = fetch_announced_prefixes(&ctx.ripestat_url, &parse_asn(asn)?)?;
        writeln!(
            out,
            "Retrieved {} prefixes from RIPE NCC RIPEstat",
            cidrs.len()
        )?;
        cidrs
    } else {
        args.entries
    };
    let body = set_body(&args.name, &entries);
    let set: Set = ctx.api.call(
        Method::Post,
        &format!("/v1/sets/{}", args.policy),
        Some(&body),
    )?;
    writeln!(
        out,
        "Set '{}' created with {} entries\n{RELOAD_NOTE}",
        set.name,
        set.entries.len()
    )?;
    Ok(())
}

fn read_cidr_file(path: &Path) -> anyhow::Result<Vec<Cidr>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_cidr_lines(&text)
}

/// One CIDR per line, trimmed; blank and `#` lines skipped; every bad line is
/// reported at once. Duplicates are kept and host bits are not cleared.
pub fn parse_cidr_lines(text: &str) -> anyhow::Result<Vec<Cidr>> {
    let mut cidrs = Vec::new();
    let mut failures = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<Cidr>() {
            Ok(c) => cidrs.push(c),
            Err(e) => failures.push(format!("  line {}: {line} ({e})", i + 1)),
        }
    }
    if !failures.is_empty() {
        bail!(
            "Failed to parse {} CIDR(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    if cidrs.is_empty() {
        bail!("No valid CIDRs found in file");
    }
    Ok(cidrs)
}

/// The digits of an AS number: `AS3333`, `as3333` or `3333` (trimmed).
pub fn parse_asn(input: &str) -> anyhow::Result<String> {
    let trimmed = input.trim();
    let digits = trimmed
        .strip_prefix("AS")
        .or_else(|| trimmed.strip_prefix("as"))
        .unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        bail!("Invalid ASN format: '{input}' (expected AS<number> or <number>)");
    }
    Ok(digits.to_string())
}

pub fn announced_prefixes_url(base: &str, asn_digits: &str) -> String {
    format!(
        "{}/data/announced-prefixes/data.json?resource=AS{asn_digits}",
        base.trim_end_matches('/')
    )
}

#[derive(Debug, Deserialize, Serialize)]
struct RipeStatAnswer {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    messages: Vec<Vec<String>>,
    data: Option<RipeStatData>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RipeStatData {
    #[serde(default)]
    prefixes: Vec<RipeStatPrefix>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RipeStatPrefix {
    prefix: String,
}

/// `data.prefixes[].prefix` of an announced-prefixes answer. Prefixes that do
/// not parse are skipped, unless none does.
pub fn parse_ripestat(body: &[u8]) -> anyhow::Result<Vec<Cidr>> {
    let answer: RipeStatAnswer =
        serde_json::from_slice(body).context("RIPEstat answer is not the expected JSON")?;
    if let Some(status) = answer.status.as_deref().filter(|s| *s != "ok") {
        let messages: Vec<String> = answer.messages.iter().map(|m| m.join(": ")).collect();
        bail!(
            "RIPEstat answered status '{status}': {}",
            messages.join("; ")
        );
    }
    let prefixes = answer.data.map(|d| d.prefixes).unwrap_or_default();
    let cidrs: Vec<Cidr> = prefixes
        .iter()
        .filter_map(|p| p.prefix.parse().ok())
        .collect();
    if cidrs.is_empty() && !prefixes.is_empty() {
        bail!(
            "none of the {} prefixes returned by RIPEstat could be parsed",
            prefixes.len()
        );
    }
    Ok(cidrs)
}

fn fetch_announced_prefixes(base: &str, asn_digits: &str) -> anyhow::Result<Vec<Cidr>> {
    let url = announced_prefixes_url(base, asn_digits);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(RIPESTAT_TIMEOUT))
        .user_agent(RIPESTAT_USER_AGENT)
        .build()
        .new_agent();
    let mut resp = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot fetch {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .with_context(|| format!("cannot read the answer of {url}"))?;
    if !(200..300).contains(&status) {
        bail!("RIPEstat answered HTTP {status} for {url}");
    }
    parse_ripestat(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn_forms() {
        assert_eq!(parse_asn("AS3333").unwrap(), "3333");
        assert_eq!(parse_asn(" as64496 ").unwrap(), "64496");
        assert_eq!(parse_asn("3333").unwrap(), "3333");
        for bad in ["As3333", "AS", "", "AS-1", "AS 3333", "ASx", "3333a"] {
            let err = parse_asn(bad).unwrap_err().to_string();
            assert!(err.starts_with("Invalid ASN format"), "{bad}: {err}");
        }
    }

    #[test]
    fn ripestat_url() {
        assert_eq!(
            announced_prefixes_url("https://stat.ripe.net/", "3333"),
            "https://stat.ripe.net/data/announced-prefixes/data.json?resource=AS3333"
        );
    }

    #[test]
    fn ripestat_answers() {
        let ok = br#"{"status":"ok","data":{"resource":"3333","prefixes":[
            {"prefix":"193.0.0.0/21","timelines":[]},{"prefix":"2001:67c:2e8::/48"},{"prefix":"bogus"}]}}"#;
        let cidrs = parse_ripestat(ok).unwrap();
        let text: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["193.0.0.0/21", "2001:67c:2e8::/48"]);

        assert!(parse_ripestat(br#"{"status":"ok","data":{"prefixes":[]}}"#)
            .unwrap()
            .is_empty());
        let err = parse_ripestat(br#"{"data":{"prefixes":[{"prefix":"x"}]}}"#).unwrap_err();
        assert!(err.to_string().contains("none of the 1 prefixes"), "{err}");
        let err = parse_ripestat(
            br#"{"status":"error","messages":[["error","bad resource"]],"data":{}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "RIPEstat answered status 'error': error: bad resource"
        );
        assert!(parse_ripestat(b"<html>").is_err());
    }

    #[test]
    fn cidr_files() {
        let ok = parse_cidr_lines("# lan\n\n 10.0.0.1/8 \n10.0.0.1/8\n2001:db8::/32\n").unwrap();
        let text: Vec<String> = ok.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["10.0.0.1/8", "10.0.0.1/8", "2001:db8::/32"]);

        let err = parse_cidr_lines("1.1.1.1/32\nfoo\n\n2.2.2.2\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Failed to parse 2 CIDR(s):\n  line 2: foo (invalid IP address syntax)\n  \
             line 4: 2.2.2.2 (invalid IP address syntax)"
        );
        let err = parse_cidr_lines("# nothing\n\n").unwrap_err().to_string();
        assert_eq!(err, "No valid CIDRs found in file");
    }
}
