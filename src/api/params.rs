//! Path parameters (§4, §4.4): every problem is gathered into one 400.

use std::net::IpAddr;

use actix_web::HttpRequest;
use couic_common::{Cidr, ClientName, Policy};

use super::error::{ApiError, Fields};

fn segment<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or("")
}

fn policy_into(req: &HttpRequest, fields: &mut Fields) -> Option<Policy> {
    segment(req, "policy")
        .parse::<Policy>()
        .map_err(|e| fields.invalid("policy", e))
        .ok()
}

/// `{policy}`.
pub fn policy(req: &HttpRequest) -> Result<Policy, ApiError> {
    let mut fields = Fields::default();
    let policy = policy_into(req, &mut fields);
    fields.check(ApiError::BadRequest)?;
    Ok(policy.expect("no error means parsed"))
}

/// `{shard}`: a shard number below `shards`.
pub fn shard(req: &HttpRequest, shards: usize) -> Result<usize, ApiError> {
    let raw = segment(req, "shard");
    let mut fields = Fields::default();
    let shard = raw.parse::<usize>().ok().filter(|&k| k < shards);
    if shard.is_none() {
        fields.invalid(
            "shard",
            format!("{raw} is not a shard number (0 to {})", shards - 1),
        );
    }
    fields.check(ApiError::BadRequest)?;
    Ok(shard.expect("no error means parsed"))
}

fn ip_into(raw: &str, fields: &mut Fields) -> Option<IpAddr> {
    raw.parse::<IpAddr>()
        .map_err(|_| fields.invalid("ip", format!("{raw} is not a valid IP address")))
        .ok()
}

/// `{policy}/{ip}/{prefix}`: the normalised network (host bits cleared).
pub fn entry(req: &HttpRequest) -> Result<(Policy, Cidr), ApiError> {
    let mut fields = Fields::default();
    let policy = policy_into(req, &mut fields);
    let ip = ip_into(segment(req, "ip"), &mut fields);
    let raw_prefix = segment(req, "prefix");
    let prefix = match raw_prefix.parse::<u8>() {
        Ok(p) => Some(p),
        Err(_) => {
            fields.invalid(
                "prefix",
                format!("{raw_prefix} is not a valid prefix value"),
            );
            None
        }
    };
    let mut cidr = None;
    if let (Some(ip), Some(prefix)) = (ip, prefix) {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match Cidr::new(ip, prefix) {
            Ok(c) => cidr = Some(c.normalized()),
            Err(_) => fields.invalid(
                "prefix",
                format!("Prefix must be between 0 and {max}, got {prefix}"),
            ),
        }
    }
    fields.check(ApiError::BadRequest)?;
    Ok((policy.expect("checked"), cidr.expect("checked")))
}

/// `{ip}` of the check route.
pub fn ip(req: &HttpRequest) -> Result<IpAddr, ApiError> {
    let mut fields = Fields::default();
    let ip = ip_into(segment(req, "ip"), &mut fields);
    fields.check(ApiError::BadRequest)?;
    Ok(ip.expect("checked"))
}

/// `{name}` of the client routes.
pub fn client_name(req: &HttpRequest) -> Result<ClientName, ApiError> {
    ClientName::parse(segment(req, "name")).map_err(|e| {
        let mut fields = Fields::default();
        fields.invalid("name", e);
        ApiError::BadRequest(fields)
    })
}
