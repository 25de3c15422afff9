//! `check <ip>`: the verdict the data path gives packets from an address
//! (ignore first, then drop, longest prefix within a policy) and the entry
//! that decides it, as `GET /v1/check/{ip}` reports it.

use std::io::Write;
use std::net::IpAddr;

use clap::Args;
use couic_common::{CheckReason, CheckResult, Origin};

use super::Ctx;
use crate::output::{self, now_secs};
use crate::transport::ApiError;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Source address to check (IPv4 or IPv6, no prefix)
    pub ip: IpAddr,
    /// Print the answer as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let result: CheckResult = match ctx.api.get(&format!("/v1/check/{}", args.ip)) {
        // An unknown route is a bare 404; a known one always has a body.
        Err(ApiError::Plain { status: 404, .. }) => anyhow::bail!(
            "this couic daemon has no GET /v1/check/{{ip}} route (404 without an error body); \
             it is older than `couicctl check`"
        ),
        other => other?,
    };
    if args.json {
        output::print_json(out, &result)?;
    } else {
        out.write_all(render(&result, now_secs()).as_bytes())?;
    }
    Ok(())
}

/// `Key: value` lines, one fact each, easy to read and to grep.
pub fn render(r: &CheckResult, now: u64) -> String {
    let verdict = match r.verdict {
        couic_common::Verdict::Pass => "pass",
        couic_common::Verdict::Drop => "drop",
    };
    let mut s = format!("IP: {}\nVerdict: {verdict}\n", r.ip);
    let Some(entry) = &r.entry else {
        s.push_str("Reason: no ignore or drop entry matches\n");
        return s;
    };
    let reason = match r.reason {
        CheckReason::Ignore => format!(
            "ignore entry {} matches (ignore entries win over drop entries)",
            entry.cidr
        ),
        CheckReason::Drop => format!("drop entry {} matches and no ignore entry does", entry.cidr),
        CheckReason::None => "no ignore or drop entry matches".to_string(),
    };
    let tag = match entry.tag.as_deref() {
        None | Some("") => "(untagged)",
        Some(t) => t,
    };
    let origin = match r.origin {
        Some(Origin::Api) => "api",
        Some(Origin::Peer) => "peer",
        Some(Origin::Set) => "set",
        Some(Origin::Fleet) => "fleet",
        None => "-",
    };
    let policy = r.policy.map_or("-", |p| p.as_str());
    s.push_str(&format!(
        "Reason: {reason}\nEntry: {}\nPolicy: {policy}\nTag: {tag}\nOrigin: {origin}\nExpiration: {}\n",
        entry.cidr,
        output::format_remaining(entry.expiration, now)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::{Entry, Policy, Verdict};

    #[test]
    fn renders_hit_and_miss() {
        let hit = CheckResult {
            ip: "192.0.2.7".parse().unwrap(),
            verdict: Verdict::Drop,
            reason: CheckReason::Drop,
            entry: Some(Entry {
                creation: 1,
                cidr: "192.0.2.0/24".into(),
                tag: Some("fail2ban-sshd".into()),
                expiration: 1_090,
            }),
            policy: Some(Policy::Drop),
            origin: Some(Origin::Api),
        };
        assert_eq!(
            render(&hit, 1_000),
            "IP: 192.0.2.7\nVerdict: drop\nReason: drop entry 192.0.2.0/24 matches and no ignore entry does\n\
             Entry: 192.0.2.0/24\nPolicy: drop\nTag: fail2ban-sshd\nOrigin: api\nExpiration: 1m30s\n"
        );
        let miss = CheckResult {
            ip: "2001:db8::1".parse().unwrap(),
            verdict: Verdict::Pass,
            reason: CheckReason::None,
            entry: None,
            policy: None,
            origin: None,
        };
        assert_eq!(
            render(&miss, 0),
            "IP: 2001:db8::1\nVerdict: pass\nReason: no ignore or drop entry matches\n"
        );
    }
}
