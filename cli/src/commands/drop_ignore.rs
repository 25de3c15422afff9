//! `drop` and `ignore`: add, delete, inspect and list entries of a policy.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use couic_common::{Cidr, Entry, EntryRequest, Policy, Tag};

use super::Ctx;
use crate::output::{self, now_secs};
use crate::transport::Method;

const EXPIRATION_HELP: &str =
    "Lifetime: a duration such as 30s, 10m, 2h, 1day or \"1h 30m\"; 0 = never expires";

#[derive(Debug, Subcommand)]
pub enum DropCommand {
    /// Drop traffic from a CIDR
    Add(DropAddArgs),
    #[command(flatten)]
    Common(EntryCommand),
}

#[derive(Debug, Subcommand)]
pub enum IgnoreCommand {
    /// Always let traffic from a CIDR pass
    Add(IgnoreAddArgs),
    #[command(flatten)]
    Common(EntryCommand),
}

#[derive(Debug, Args)]
pub struct DropAddArgs {
    /// Network as address/prefix (host bits are cleared)
    pub cidr: Cidr,
    /// Tag: letters, digits, - and _, at most 64
    #[arg(short, long, default_value = "couicctl")]
    pub tag: Tag,
    #[arg(short, long, default_value = "0", help = EXPIRATION_HELP)]
    pub expiration: String,
    /// Print the entry as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IgnoreAddArgs {
    /// Network as address/prefix (host bits are cleared)
    pub cidr: Cidr,
    /// Tag: letters, digits, - and _, at most 64 (default: untagged)
    #[arg(short, long)]
    pub tag: Option<Tag>,
    #[arg(short, long, default_value = "0", help = EXPIRATION_HELP)]
    pub expiration: String,
    /// Print the entry as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Remove an entry
    Delete {
        /// Network as address/prefix (host bits are cleared)
        cidr: Cidr,
    },
    /// Show one entry (exact network, no longest-prefix search)
    Inspect {
        /// Network as address/prefix (host bits are cleared)
        cidr: Cidr,
        /// Print the entry as JSON
        #[arg(long)]
        json: bool,
    },
    /// List entries
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print only the CIDRs, one per line
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    /// Keep entries whose tag matches one of these comma-separated patterns;
    /// `*` matches any run of characters (fail2ban-*, *ssh*, couicctl)
    #[arg(short, long, value_name = "PATTERNS")]
    pub tags: Option<String>,
    /// Print the entries as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run_drop(command: DropCommand, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        DropCommand::Add(a) => add(
            ctx,
            out,
            Policy::Drop,
            a.cidr,
            Some(a.tag),
            &a.expiration,
            a.json,
        ),
        DropCommand::Common(c) => run_common(Policy::Drop, c, ctx, out),
    }
}

pub fn run_ignore(
    command: IgnoreCommand,
    ctx: &mut Ctx,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        IgnoreCommand::Add(a) => add(
            ctx,
            out,
            Policy::Ignore,
            a.cidr,
            a.tag,
            &a.expiration,
            a.json,
        ),
        IgnoreCommand::Common(c) => run_common(Policy::Ignore, c, ctx, out),
    }
}

fn add(
    ctx: &mut Ctx,
    out: &mut dyn Write,
    policy: Policy,
    cidr: Cidr,
    tag: Option<Tag>,
    expiration: &str,
    json: bool,
) -> anyhow::Result<()> {
    let request = EntryRequest {
        cidr: cidr.normalized().to_string(),
        tag: tag.map(Tag::into_string),
        expiration: parse_expiration(expiration, now_secs())?,
        metadata: None,
    };
    let entry: Entry = ctx
        .api
        .call(Method::Post, &format!("/v1/{policy}"), Some(&request))?;
    show_entry(out, policy, &entry, json)
}

fn run_common(
    policy: Policy,
    command: EntryCommand,
    ctx: &mut Ctx,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        EntryCommand::Delete { cidr } => {
            ctx.api.delete(&entry_path(policy, cidr))?;
            Ok(())
        }
        EntryCommand::Inspect { cidr, json } => {
            let entry: Entry = ctx.api.get(&entry_path(policy, cidr))?;
            show_entry(out, policy, &entry, json)
        }
        EntryCommand::List(args) => {
            let mut entries: Vec<Entry> = ctx.api.get(&format!("/v1/{policy}"))?;
            if let Some(patterns) = &args.tags {
                let filter = TagFilter::parse(patterns);
                entries.retain(|e| filter.matches(e.tag.as_deref()));
            }
            if args.quiet {
                for e in &entries {
                    writeln!(out, "{}", e.cidr)?;
                }
            } else if args.json {
                output::print_json(out, &entries)?;
            } else {
                output::print_table(out, &output::entry_table(policy, &entries, now_secs()))?;
            }
            Ok(())
        }
    }
}

fn show_entry(
    out: &mut dyn Write,
    policy: Policy,
    entry: &Entry,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        output::print_json(out, entry)?;
    } else {
        output::print_table(
            out,
            &output::entry_table(policy, std::slice::from_ref(entry), now_secs()),
        )?;
    }
    Ok(())
}

/// `/v1/<policy>/<address>/<prefix>` of the normalised network.
fn entry_path(policy: Policy, cidr: Cidr) -> String {
    format!("/v1/{policy}/{}", cidr.normalized().path())
}

#[derive(Debug, thiserror::Error)]
pub enum ExpirationError {
    #[error(
        "Invalid expiration format: '{text}' ({reason}); use a duration such as 30s, 10m, 2h or 1day, or 0 for never"
    )]
    Format {
        text: String,
        reason: humantime::DurationError,
    },
    #[error("Invalid expiration format: '{0}' is too far in the future")]
    TooLarge(String),
}

/// `0` means never; anything else is a human duration (`30s`, `1h 30m`,
/// `1day`) turned into the absolute Unix second the API expects. A bare
/// number has no unit and is refused.
pub fn parse_expiration(text: &str, now: u64) -> Result<u64, ExpirationError> {
    if text.trim() == "0" {
        return Ok(0);
    }
    let duration: Duration =
        humantime::parse_duration(text.trim()).map_err(|reason| ExpirationError::Format {
            text: text.to_string(),
            reason,
        })?;
    now.checked_add(duration.as_secs())
        .ok_or_else(|| ExpirationError::TooLarge(text.to_string()))
}

/// Client-side tag filter of `list -t`: comma-separated glob patterns, each
/// trimmed, case-sensitive. `*` matches any run of characters, so `*`, `x*`,
/// `*x` and `*x*` mean anything, prefix, suffix and contains; a pattern
/// without `*` is exact. A `null` tag never matches; an untagged entry as the
/// list returns it (`""`) is matched by `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter(Vec<String>);

impl TagFilter {
    pub fn parse(patterns: &str) -> TagFilter {
        TagFilter(patterns.split(',').map(|p| p.trim().to_string()).collect())
    }

    pub fn matches(&self, tag: Option<&str>) -> bool {
        tag.is_some_and(|t| self.0.iter().any(|p| glob(p, t)))
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = &parts[..] else {
        return pattern == text; // no `*`: one part
    };
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    // Leftmost matching of the middle parts is enough for `*` globs.
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_zero_duration_or_error() {
        let now = 1_700_000_000;
        assert_eq!(parse_expiration("0", now).unwrap(), 0);
        assert_eq!(parse_expiration("30s", now).unwrap(), now + 30);
        assert_eq!(parse_expiration("10m", now).unwrap(), now + 600);
        assert_eq!(parse_expiration("2h", now).unwrap(), now + 7_200);
        assert_eq!(parse_expiration("1day", now).unwrap(), now + 86_400);
        assert_eq!(parse_expiration("1h 30m", now).unwrap(), now + 5_400);
        assert_eq!(parse_expiration("0s", now).unwrap(), now);
        for bad in ["5", "", "soon", "-1m", "1 fortnight"] {
            let err = parse_expiration(bad, now).unwrap_err().to_string();
            assert!(err.starts_with("Invalid expiration format"), "{bad}: {err}");
        }
        assert!(matches!(
            parse_expiration("1m", u64::MAX - 10),
            Err(ExpirationError::TooLarge(_))
        ));
    }

    #[test]
    fn tag_patterns() {
        let f = |p: &str, t: Option<&str>| TagFilter::parse(p).matches(t);
        assert!(f("*", Some("anything")) && f("*", Some("")) && f("**", Some("x")));
        assert!(!f("*", None));
        assert!(f("fail2ban-*", Some("fail2ban-sshd")) && !f("fail2ban-*", Some("x-fail2ban-")));
        assert!(f("*sshd", Some("fail2ban-sshd")) && !f("*sshd", Some("sshd-x")));
        assert!(
            f("*ban*", Some("fail2ban-sshd")) && f("*ban*", Some("ban")) && !f("*ban*", Some("bn"))
        );
        assert!(f("couicctl", Some("couicctl")) && !f("couicctl", Some("Couicctl")));
        assert!(f(" a , couicctl ", Some("couicctl")));
        assert!(f("f*-*d", Some("fail2ban-sshd")) && !f("f*-*d", Some("fail2bansshd")));
        assert!(!f("ab*ba", Some("aba")));
        assert!(f("lan.couic", Some("lan.couic")) && f("*.couic", Some("lan.couic")));
    }

    #[test]
    fn entry_paths_are_normalised() {
        let c: Cidr = "2001:DB8::1/32".parse().unwrap();
        assert_eq!(entry_path(Policy::Drop, c), "/v1/drop/2001:db8::/32");
        let c: Cidr = "192.0.2.77/24".parse().unwrap();
        assert_eq!(entry_path(Policy::Ignore, c), "/v1/ignore/192.0.2.0/24");
    }
}
