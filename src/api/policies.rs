//! `/v1/{policy}` and `/v1/{policy}/{ip}/{prefix}` (§4.2-§4.4): list, add,
//! get and delete entries. Validation here; the change itself is the
//! MapWriter's, and success is answered only once it applied it.

use actix::Handler;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{Cidr, EntryRequest, Metadata, Tag};
use serde::Serialize;

use super::body::{self, BODY_LIMIT};
use super::entry_log::{Change, Key};
use super::error::{ApiError, Fields};
use super::{json, params, AppState};
use crate::actors::map_writer::{
    AddEntries, Answered, GetEntry, ListEntries, MapWriter, RemoveEntries,
};
use crate::actors::messages::Origin;
use crate::firewall::{ItemResult, NewEntry};
use crate::rbac::Scope;
use crate::store::StoredEntry;

pub const EXPIRATION_MESSAGE: &str = "expiration timestamp must be in the future or zero";

/// The fields of an add request (§3.2), however they were read.
pub struct EntryParts<'a> {
    pub cidr: &'a str,
    pub tag: Option<&'a str>,
    pub expiration: u64,
    pub metadata: Option<Metadata>,
}

/// Checks an add request against the rules of §4.3, gathering every field
/// error: `cidr`, `tag`, `expiration` (0 or after `now`).
pub fn validate(request: &EntryRequest, now: u64) -> Result<NewEntry, Fields> {
    validate_parts(
        EntryParts {
            cidr: &request.cidr,
            tag: request.tag.as_deref(),
            expiration: request.expiration,
            metadata: request.metadata.clone(),
        },
        now,
    )
}

pub fn validate_parts(parts: EntryParts<'_>, now: u64) -> Result<NewEntry, Fields> {
    let mut fields = Fields::default();
    let cidr = parts
        .cidr
        .parse::<Cidr>()
        .map_err(|e| fields.invalid("cidr", e))
        .ok();
    let tag = Tag::parse_optional(parts.tag)
        .map_err(|e| fields.invalid("tag", e))
        .ok();
    if parts.expiration != 0 && parts.expiration <= now {
        fields.invalid("expiration", EXPIRATION_MESSAGE);
    }
    match (cidr, tag) {
        (Some(cidr), Some(tag)) if fields.is_empty() => Ok(NewEntry {
            cidr: cidr.normalized(),
            tag: tag.map(Tag::into_string).unwrap_or_default(),
            expiration: parts.expiration,
            metadata: parts.metadata,
        }),
        _ => Err(fields),
    }
}

/// An entry as GET and list render it (untagged = `""`), without copying.
#[derive(Serialize)]
struct Listed<'a> {
    creation: u64,
    cidr: Cidr,
    tag: &'a str,
    expiration: u64,
}

impl<'a> From<&'a StoredEntry> for Listed<'a> {
    fn from(e: &'a StoredEntry) -> Self {
        Listed {
            creation: e.creation,
            cidr: e.cidr,
            tag: &e.tag,
            expiration: e.expiration,
        }
    }
}

pub async fn list(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::POLICY_LIST)?;
    let policy = params::policy(&req)?;
    let entries = state.writer.send(ListEntries { policy }).await?;
    let listed: Vec<Listed> = entries.iter().map(Listed::from).collect();
    Ok(json(StatusCode::OK, &listed))
}

pub async fn add(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_CREATE)?;
    let policy = params::policy(&req)?;
    let request: EntryRequest = body::json(&req, payload, BODY_LIMIT, state.body_deadline).await?;
    let entry = validate(&request, state.clock.now()).map_err(ApiError::Validation)?;
    let origin = Origin::api(&caller.name);
    let add = AddEntries {
        policy,
        entries: vec![entry],
        origin,
        atomic: true,
    };
    let added = durably(&state, add).await??;
    let key = Key::new(&caller, Change::Created, policy);
    state.entry_log.log(key, added.cidr, || {
        tracing::info!(
            client.name = %caller.name,
            client.group = %caller.group,
            %policy,
            cidr = %added.cidr,
            tag = %added.tag,
            expiration = added.expiration,
            "entry created"
        )
    });
    Ok(json(StatusCode::CREATED, &added.to_wire(true)))
}

pub async fn get(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::POLICY_GET)?;
    let (policy, cidr) = params::entry(&req)?;
    let entry = state
        .writer
        .send(GetEntry { policy, cidr })
        .await?
        .ok_or(ApiError::Write(crate::firewall::WriteError::NotFound(cidr)))?;
    Ok(json(StatusCode::OK, &Listed::from(&entry)))
}

/// A single add or delete through the MapWriter, its result once durable.
/// The answer comes from the journal's thread right after its sync, so the
/// worker is woken once per request, not by the MapWriter and again by the
/// sync. Queued unconditionally: each connection has one request in flight.
async fn durably<M>(state: &AppState, msg: M) -> Result<ItemResult, ApiError>
where
    M: Send + 'static,
    MapWriter: Handler<Answered<M>>,
{
    let (reply, results) = tokio::sync::oneshot::channel();
    state.writer.do_send(Answered { msg, reply });
    results
        .await
        .map_err(|_| ApiError::internal("the map writer is unavailable"))?
        .pop()
        .ok_or_else(|| ApiError::internal("no result"))
}

pub async fn delete(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_DELETE)?;
    let (policy, cidr) = params::entry(&req)?;
    let origin = Origin::api(&caller.name);
    let remove = RemoveEntries {
        policy,
        cidrs: vec![cidr],
        origin,
        protect_sets: true,
        atomic: true,
    };
    let removed = durably(&state, remove).await??;
    let key = Key::new(&caller, Change::Deleted, policy);
    state.entry_log.log(key, removed.cidr, || {
        tracing::info!(
            client.name = %caller.name,
            client.group = %caller.group,
            %policy,
            cidr = %removed.cidr,
            tag = %removed.tag,
            "entry deleted"
        )
    });
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cidr: &str, tag: Option<&str>, expiration: u64) -> EntryRequest {
        EntryRequest {
            cidr: cidr.into(),
            tag: tag.map(Into::into),
            expiration,
            metadata: None,
        }
    }

    #[test]
    fn validation_gathers_every_field() {
        let ok = validate(&req("192.168.1.100/24", Some(""), 0), 100).unwrap();
        assert_eq!(
            (ok.cidr.to_string(), ok.tag.as_str()),
            ("192.168.1.0/24".into(), "")
        );
        assert!(validate(&req("::1/128", Some("t"), 101), 100).is_ok());
        let fields = validate(&req("1.1.1.1", Some("x.couic"), 100), 100).unwrap_err();
        let mut expected = Fields::default();
        expected.invalid("cidr", "invalid IP address syntax");
        expected.invalid("tag", "Tag cannot end with special suffix: .couic");
        expected.invalid("expiration", EXPIRATION_MESSAGE);
        assert_eq!(fields, expected);
    }
}
