//! `GET /v1/peers`: how this node's links to its peers are doing (never a
//! token). An empty array when peering is off.

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use couic_common::PeerStatus;

use super::error::ApiError;
use super::{json, AppState};
use crate::rbac::Scope;

pub async fn list(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::PEERS_LIST)?;
    let peers: Vec<PeerStatus> = state.peers.iter().map(|p| p.read()).collect();
    Ok(json(StatusCode::OK, &peers))
}
