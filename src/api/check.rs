//! `GET /v1/check/{ip}` (beyond the reference, for `couicctl check`): the
//! verdict the data path gives a source address and the entry deciding it.

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{CheckReason, CheckResult, Origin as WireOrigin, Policy, Verdict};

use super::error::ApiError;
use super::{json, params, AppState};
use crate::actors::map_writer::CheckAddress;
use crate::origin::Origin;
use crate::rbac::Scope;

fn wire_origin(origin: &Origin) -> WireOrigin {
    match origin {
        // An entry never keeps `Expiry`, the cause of a removal only.
        Origin::Api { .. } | Origin::Expiry => WireOrigin::Api,
        Origin::Peer { .. } => WireOrigin::Peer,
        Origin::Fleet { .. } => WireOrigin::Fleet,
        Origin::Set => WireOrigin::Set,
    }
}

pub async fn check(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::POLICY_GET)?;
    let ip = params::ip(&req)?;
    let found = state.writer.send(CheckAddress { ip }).await?;
    let (verdict, reason) = match found.policy {
        Some(Policy::Ignore) => (Verdict::Pass, CheckReason::Ignore),
        Some(Policy::Drop) => (Verdict::Drop, CheckReason::Drop),
        None => (Verdict::Pass, CheckReason::None),
    };
    let result = CheckResult {
        ip,
        verdict,
        reason,
        origin: found.entry.as_ref().map(|e| wire_origin(&e.origin)),
        entry: found.entry.as_ref().map(|e| e.to_wire(false)),
        policy: found.policy,
    };
    Ok(json(StatusCode::OK, &result))
}
