//! `GET /v1/peers`: how this node's links to its peers are doing (never a
//! token). An empty array when peering is off. `GET /v1/fleet`: how the
//! sync with the fleet's bucket is doing (`enabled: false` when off).

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use couic_common::PeerStatus;

use crate::fleet::status::FleetCounters;

use super::error::ApiError;
use super::{json, AppState};
use crate::rbac::Scope;

pub async fn list(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::PEERS_LIST)?;
    let peers: Vec<PeerStatus> = state.peers.iter().map(|p| p.read()).collect();
    Ok(json(StatusCode::OK, &peers))
}

pub async fn fleet(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::PEERS_LIST)?;
    let status = match &state.fleet {
        Some(counters) => counters.read(),
        None => FleetCounters::disabled(),
    };
    Ok(json(StatusCode::OK, &status))
}
