//! `POST /v1/{policy}/bulk`, beyond the reference: many removes and adds
//! in one request, with one result per item.
//!
//! Body: `{"atomic": bool, "remove": ["cidr", ...], "add": [EntryRequest, ...]}`
//! (every key optional). Removes are played first, then adds, each in
//! order, with the rules of the single-entry routes. With `atomic`, every
//! item is validated and played before anything is written, and one failure
//! means nothing is applied (the others answer 424). The answer is 200 with
//! the per-item results whenever the body could be read.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{Cidr, ErrorBody, Metadata};
use serde::{Deserialize, Serialize, Serializer};

use super::body::{self, BodyError};
use super::error::{ApiError, Fields};
use super::policies::{self, EntryParts};
use super::{json, params, AppState};
use crate::actors::map_writer::ApplyBatch;
use crate::actors::messages::EventOrigin;
use crate::batch::Op;
use crate::firewall::WriteError;
use crate::rbac::Scope;

/// Largest bulk body (32 MiB, several hundred thousand entries).
pub const BULK_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The body. Strings borrow from the request bytes where they can: a bulk
/// request may hold hundreds of thousands of entries.
#[derive(Debug, Deserialize)]
pub struct BulkRequest<'a> {
    #[serde(default)]
    pub atomic: bool,
    #[serde(default, borrow)]
    pub remove: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub add: Vec<BulkEntry<'a>>,
}

/// An add item: the fields of `POST /v1/{policy}` (object or positional form).
#[derive(Debug, Deserialize)]
pub struct BulkEntry<'a> {
    #[serde(borrow)]
    pub cidr: Cow<'a, str>,
    #[serde(default, borrow)]
    pub tag: Option<Cow<'a, str>>,
    pub expiration: u64,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

/// The CIDR of an item: normalised when it parsed, as sent otherwise.
#[derive(Debug)]
pub enum ItemCidr<'a> {
    Parsed(Cidr),
    Raw(&'a str),
}

impl Serialize for ItemCidr<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ItemCidr::Parsed(c) => s.collect_str(c),
            ItemCidr::Raw(r) => s.serialize_str(r),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ItemResult<'a> {
    /// The normalised CIDR, or the text sent when it is not one.
    pub cidr: ItemCidr<'a>,
    /// What the single-entry route would have answered: 201 / 204 on
    /// success, 409, 404, 422, 500, or 424 when an atomic batch was refused
    /// because of another item.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Serialize)]
pub struct BulkResponse<'a> {
    pub atomic: bool,
    pub applied: usize,
    pub failed: usize,
    pub remove: Vec<ItemResult<'a>>,
    pub add: Vec<ItemResult<'a>>,
}

fn failure(cidr: ItemCidr<'_>, error: ApiError) -> ItemResult<'_> {
    let (status, body) = error.envelope();
    ItemResult {
        cidr,
        status: status.as_u16(),
        error: Some(body),
    }
}

pub async fn bulk(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_CREATE)?;
    state.authorize(&req, Scope::POLICY_DELETE)?;
    let policy = params::policy(&req)?;
    let bytes = body::read(&req, payload, BULK_BODY_LIMIT)
        .await
        .map_err(BodyError::envelope)?;
    let request: BulkRequest = body::parse(&bytes).map_err(BodyError::envelope)?;
    let now = state.clock.now();

    // Validate every item; each keeps the index of its operation, if valid.
    let mut ops = Vec::with_capacity(request.remove.len() + request.add.len());
    let mut items: Vec<(ItemCidr, Result<usize, ApiError>)> = Vec::with_capacity(ops.capacity());
    for raw in &request.remove {
        items.push(match raw.parse::<Cidr>() {
            Ok(c) => {
                let c = c.normalized();
                ops.push(Op::Remove(c));
                (ItemCidr::Parsed(c), Ok(ops.len() - 1))
            }
            Err(e) => {
                let mut fields = Fields::default();
                fields.invalid("cidr", e);
                (ItemCidr::Raw(raw), Err(ApiError::Validation(fields)))
            }
        });
    }
    for entry in &request.add {
        let parts = EntryParts {
            cidr: &entry.cidr,
            tag: entry.tag.as_deref(),
            expiration: entry.expiration,
            metadata: entry.metadata.clone(),
        };
        items.push(match policies::validate_parts(parts, now) {
            Ok(e) => {
                let cidr = e.cidr;
                ops.push(Op::Add(e));
                (ItemCidr::Parsed(cidr), Ok(ops.len() - 1))
            }
            Err(fields) => (
                ItemCidr::Raw(&entry.cidr),
                Err(ApiError::Validation(fields)),
            ),
        });
    }

    let invalid = items.iter().any(|(_, r)| r.is_err());
    let results = if request.atomic && invalid {
        vec![Err(WriteError::Aborted); ops.len()]
    } else {
        let origin = EventOrigin::Api {
            client: caller.name.clone(),
        };
        state
            .writer
            .send(ApplyBatch {
                policy,
                ops,
                origin,
                protect_sets: true,
                atomic: request.atomic,
            })
            .await?
    };

    let removes = request.remove.len();
    let mut response = BulkResponse {
        atomic: request.atomic,
        applied: 0,
        failed: 0,
        remove: Vec::with_capacity(removes),
        add: Vec::with_capacity(request.add.len()),
    };
    for (i, (cidr, slot)) in items.into_iter().enumerate() {
        let is_remove = i < removes;
        let result = match slot.and_then(|op| results[op].clone().map_err(ApiError::Write)) {
            Ok(()) => {
                response.applied += 1;
                let status = if is_remove {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::CREATED
                };
                ItemResult {
                    cidr,
                    status: status.as_u16(),
                    error: None,
                }
            }
            Err(e) => {
                response.failed += 1;
                failure(cidr, e)
            }
        };
        if is_remove {
            response.remove.push(result);
        } else {
            response.add.push(result);
        }
    }
    tracing::info!(
        client.name = %caller.name,
        %policy,
        atomic = response.atomic,
        applied = response.applied,
        failed = response.failed,
        "bulk request applied"
    );
    Ok(json(StatusCode::OK, &response))
}
