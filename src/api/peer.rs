//! `POST /v1/{policy}/peer` (§4.5): a batch of jobs from a peer node.
//!
//! Unlike the reference (§18.4, §18.5), the batch is all or nothing (a set
//! entry to remove or a full map answers the contract's status with nothing
//! applied) and idempotent ([`Mode::Peer`]): a batch retried after a lost
//! answer succeeds again, an add or a remove never touches an entry of
//! another origin, and a peer cannot remove a set entry. Body rejections
//! keep the framework's plain-text style that reference senders receive.
//!
//! Catch-up (README, "Peering"): `GET /v1/{policy}/peer/digest` tells the
//! calling peer what this node holds from it, per shard; `PUT
//! /v1/{policy}/peer/shard/{k}` makes what it holds from it in shard `k`
//! exactly the entries sent.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use couic_common::peer::shard_of;
use couic_common::{Cidr, PeerAction, PeerEntry, PeerJob, Tag, SHARDS};

use super::body::{self, BodyError, BODY_LIMIT};
use super::error::ApiError;
use super::policies::EXPIRATION_MESSAGE;
use super::{json, params, AppState};
use crate::actors::map_writer::{ApplyBatch, DigestOfPeer, ReplacePeerShard};
use crate::actors::messages::Origin;
use crate::batch::{Mode, Op, Rules};
use crate::firewall::{NewEntry, WriteError};
use crate::rbac::Scope;

/// Where in a body an entry is: job `k`'s entry (`[3].entry`) or shard
/// entry `k` (`[3]`). Only written out for an error.
#[derive(Clone, Copy)]
enum At {
    Job(usize),
    Shard(usize),
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Job(k) => write!(f, "[{k}].entry"),
            At::Shard(k) => write!(f, "[{k}]"),
        }
    }
}

/// A job's or a shard entry's field refused.
fn invalid(at: At, field: &str, message: &dyn std::fmt::Display) -> BodyError {
    BodyError::Data(format!("{at}.{field}: {message}"))
}

/// The entry's CIDR, normalised, and its tag ("" when untagged), checked as
/// the reference's deserialiser did.
fn cidr_and_tag(entry: &PeerEntry, at: At) -> Result<(Cidr, String), BodyError> {
    let cidr = entry
        .cidr
        .parse::<Cidr>()
        .map_err(|e| invalid(at, "cidr", &e))?
        .normalized();
    let tag = Tag::parse_optional(entry.tag.as_deref()).map_err(|e| invalid(at, "tag", &e))?;
    Ok((cidr, tag.map(Tag::into_string).unwrap_or_default()))
}

/// Validates each job like the reference's deserialiser did; returns the
/// operations and the jobs to echo (normalised CIDRs).
fn validate(mut jobs: Vec<PeerJob>, now: u64) -> Result<(Vec<Op>, Vec<PeerJob>), BodyError> {
    let mut ops = Vec::with_capacity(jobs.len());
    for (k, job) in jobs.iter_mut().enumerate() {
        let at = At::Job(k);
        let (cidr, tag) = cidr_and_tag(&job.entry, at)?;
        if job.entry.expiration != 0 && job.entry.expiration <= now {
            return Err(invalid(at, "expiration", &EXPIRATION_MESSAGE));
        }
        job.entry.cidr = cidr.to_string();
        ops.push(match job.action {
            PeerAction::Add => Op::Add(NewEntry {
                cidr,
                tag,
                expiration: job.entry.expiration,
                metadata: job.entry.metadata.clone(),
            }),
            PeerAction::Remove => Op::Remove(cidr),
        });
    }
    Ok((ops, jobs))
}

/// The first failure of a batch applied as a whole (the others are
/// `Aborted`), or success.
fn first_failure(results: Vec<Result<(), WriteError>>) -> Result<(), ApiError> {
    match results
        .into_iter()
        .filter_map(Result::err)
        .find(|e| !matches!(e, WriteError::Aborted))
    {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// `GET /v1/{policy}/peer/digest`.
pub async fn digest(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_PEER)?;
    let policy = params::policy(&req)?;
    let origin = Origin::peer(&caller.name);
    let digest = state.writer.send(DigestOfPeer { policy, origin }).await?;
    Ok(json(StatusCode::OK, &digest))
}

/// Checks the entries of a shard like jobs; entries already expired (the
/// sender's clock may be behind ours) are left out: they are absent here.
fn validate_shard(
    entries: Vec<PeerEntry>,
    shard: usize,
    now: u64,
) -> Result<Vec<NewEntry>, BodyError> {
    let mut out = Vec::with_capacity(entries.len());
    for (k, entry) in entries.into_iter().enumerate() {
        let at = At::Shard(k);
        let (cidr, tag) = cidr_and_tag(&entry, at)?;
        if shard_of(cidr) != shard {
            let message = format!("{cidr} is not in shard {shard}");
            return Err(invalid(at, "cidr", &message));
        }
        if entry.expiration != 0 && entry.expiration <= now {
            continue;
        }
        out.push(NewEntry {
            cidr,
            tag,
            expiration: entry.expiration,
            metadata: None,
        });
    }
    Ok(out)
}

/// `PUT /v1/{policy}/peer/shard/{shard}`: 204 once applied.
pub async fn shard(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_PEER)?;
    let policy = params::policy(&req)?;
    let shard = params::shard(&req, SHARDS)?;
    let bytes = body::read(&req, payload, BODY_LIMIT, state.body_deadline)
        .await
        .map_err(BodyError::plain)?;
    let entries: Vec<PeerEntry> = body::parse(&bytes).map_err(BodyError::plain)?;
    let entries = validate_shard(entries, shard, state.clock.now()).map_err(BodyError::plain)?;
    let count = entries.len();
    let origin = Origin::peer(&caller.name);
    let results = state
        .writer
        .send(ReplacePeerShard {
            policy,
            origin,
            shard,
            entries,
        })
        .await?
        .await;
    first_failure(results)?;
    tracing::info!(%policy, shard, entries = count, client.name = %caller.name, "peer shard resynchronized");
    Ok(HttpResponse::NoContent().finish())
}

pub async fn batch(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_PEER)?;
    let policy = params::policy(&req)?;
    let bytes = body::read(&req, payload, BODY_LIMIT, state.body_deadline)
        .await
        .map_err(BodyError::plain)?;
    let jobs: Vec<PeerJob> = body::parse(&bytes).map_err(BodyError::plain)?;
    let (ops, echo) = validate(jobs, state.clock.now()).map_err(BodyError::plain)?;
    let count = ops.len();
    let results = state
        .writer
        .send(ApplyBatch {
            policy,
            ops,
            origin: Origin::peer(&caller.name),
            rules: Rules {
                protect_sets: true,
                atomic: true,
                mode: Mode::Peer,
            },
        })
        .await?
        .await;
    // The first job that failed on its own tells the status.
    first_failure(results)?;
    tracing::info!(%policy, jobs_count = count, "peer entries synchronized");
    if prefers_minimal(&req) {
        // A valid answer for any sender (§4.5: "echo or `[]`"), and the
        // batch not sent back.
        return Ok(HttpResponse::build(StatusCode::CREATED)
            .content_type("application/json")
            .insert_header(("Preference-Applied", "return=minimal"))
            .body("[]"));
    }
    Ok(json(StatusCode::CREATED, &echo))
}

/// `Prefer: return=minimal` (RFC 7240), as couic's senders ask.
fn prefers_minimal(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(text: &str) -> Vec<PeerJob> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn normalises_and_rejects_like_the_reference() {
        let (ops, echo) = validate(
            jobs(r#"[{"action":"add","entry":{"cidr":"10.1.2.3/8","tag":null,"expiration":0,"metadata":null}},
                     {"action":"remove","entry":{"cidr":"::1/128","tag":"","expiration":0}}]"#),
            100,
        )
        .unwrap();
        assert_eq!(echo[0].entry.cidr, "10.0.0.0/8");
        assert_eq!(echo[1].entry.tag.as_deref(), Some(""));
        assert!(matches!(&ops[1], Op::Remove(c) if c.to_string() == "::1/128"));
        for bad in [
            r#"[{"action":"add","entry":{"cidr":"10.0.0.0","expiration":0}}]"#,
            r#"[{"action":"add","entry":{"cidr":"10.0.0.0/8","tag":"untagged","expiration":0}}]"#,
            r#"[{"action":"add","entry":{"cidr":"10.0.0.0/8","expiration":100}}]"#,
        ] {
            assert!(
                matches!(validate(jobs(bad), 100), Err(BodyError::Data(_))),
                "{bad}"
            );
        }
    }
}
