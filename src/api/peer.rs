//! `POST /v1/{policy}/peer` (§4.5): a batch of jobs from a peer node.
//!
//! Unlike the reference (§18.4, §18.5), the batch is all or nothing (a set
//! entry to remove or a full map answers the contract's status with nothing
//! applied) and idempotent ([`Mode::Peer`]): a batch retried after a lost
//! answer succeeds again, an add or a remove never touches an entry of
//! another origin, and a peer cannot remove a set entry. Body rejections
//! keep the framework's plain-text style that reference senders receive.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{Cidr, PeerAction, PeerJob, Tag};

use super::body::{self, BodyError, BODY_LIMIT};
use super::error::ApiError;
use super::policies::EXPIRATION_MESSAGE;
use super::{json, params, AppState};
use crate::actors::map_writer::ApplyBatch;
use crate::actors::messages::Origin;
use crate::batch::{Mode, Op, Rules};
use crate::firewall::{NewEntry, WriteError};
use crate::rbac::Scope;

/// Validates each job like the reference's deserialiser did; returns the
/// operations and the jobs to echo (normalised CIDRs).
fn validate(mut jobs: Vec<PeerJob>, now: u64) -> Result<(Vec<Op>, Vec<PeerJob>), BodyError> {
    let mut ops = Vec::with_capacity(jobs.len());
    for (k, job) in jobs.iter_mut().enumerate() {
        let invalid = |field: &str, message: &dyn std::fmt::Display| {
            BodyError::Data(format!("[{k}].entry.{field}: {message}"))
        };
        let cidr = job
            .entry
            .cidr
            .parse::<Cidr>()
            .map_err(|e| invalid("cidr", &e))?
            .normalized();
        let tag = Tag::parse_optional(job.entry.tag.as_deref()).map_err(|e| invalid("tag", &e))?;
        if job.entry.expiration != 0 && job.entry.expiration <= now {
            return Err(invalid("expiration", &EXPIRATION_MESSAGE));
        }
        job.entry.cidr = cidr.to_string();
        ops.push(match job.action {
            PeerAction::Add => Op::Add(NewEntry {
                cidr,
                tag: tag.map(Tag::into_string).unwrap_or_default(),
                expiration: job.entry.expiration,
                metadata: job.entry.metadata.clone(),
            }),
            PeerAction::Remove => Op::Remove(cidr),
        });
    }
    Ok((ops, jobs))
}

pub async fn batch(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_PEER)?;
    let policy = params::policy(&req)?;
    let bytes = body::read(&req, payload, BODY_LIMIT)
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
        .await?;
    // The first job that failed on its own tells the status.
    if let Some(error) = results
        .into_iter()
        .filter_map(Result::err)
        .find(|e| !matches!(e, WriteError::Aborted))
    {
        return Err(error.into());
    }
    tracing::info!(%policy, jobs_count = count, "peer entries synchronized");
    Ok(json(StatusCode::CREATED, &echo))
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
