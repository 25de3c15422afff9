//! `/v1/client` and `/v1/client/{name}` (§4.8): API clients and their files.
//!
//! Changes are serialised by one async lock; the file is written (or
//! removed) first, off the async threads, and memory follows only when the
//! file operation succeeded, so memory and disk never disagree (§18.10).

use std::sync::RwLock;

use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{Client, ClientName, ClientRequest, Group};

use super::auth::Refusals;
use super::body::{self, BODY_LIMIT};
use super::error::{ApiError, Fields};
use super::{json, params, AppState};
use crate::rbac::{ClientFiles, ClientRecord, ClientRegistry, Scope, DEFAULT_CLIENT};

/// The clients in memory, their files, and the lock that orders changes.
pub struct ClientsState {
    pub registry: RwLock<ClientRegistry>,
    /// The rate-limited warnings about refused requests.
    pub refusals: Refusals,
    files: ClientFiles,
    changes: tokio::sync::Mutex<()>,
}

impl ClientsState {
    pub fn new(registry: ClientRegistry, files: ClientFiles) -> Self {
        ClientsState {
            registry: RwLock::new(registry),
            refusals: Refusals::default(),
            files,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ClientRegistry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ClientRegistry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn validate(request: &ClientRequest) -> Result<(ClientName, Group), ApiError> {
    let mut fields = Fields::default();
    let name = ClientName::parse(&request.name)
        .map_err(|e| fields.invalid("name", e))
        .ok();
    let group = Group::parse_insensitive(&request.group)
        .map_err(|e| fields.invalid("group", e))
        .ok();
    match (name, group) {
        (Some(name), Some(group)) => Ok((name, group)),
        _ => Err(ApiError::Validation(fields)),
    }
}

fn not_found(name: &ClientName) -> ApiError {
    ApiError::NotFound(format!("Client not found: {name}"))
}

pub async fn list(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::CLIENTS_LIST)?;
    let clients: Vec<Client> = state
        .clients
        .read()
        .list()
        .map(ClientRecord::to_wire)
        .collect();
    Ok(json(StatusCode::OK, &clients))
}

pub async fn create(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::CLIENTS_CREATE)?;
    let request: ClientRequest = body::json(&req, payload, BODY_LIMIT, state.body_deadline).await?;
    let (name, group) = validate(&request)?;

    let clients = &state.clients;
    let _change = clients.changes.lock().await;
    if clients.read().contains(name.as_str()) {
        return Err(ApiError::Invalid(format!(
            "Client name already exists: {name}"
        )));
    }
    let record = ClientRecord::generate(name, group);
    let files = clients.files.clone();
    let to_write = record.clone();
    let path = web::block(move || files.write(&to_write))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    clients.write().insert(record.clone());
    tracing::info!("Client file created: {}", path.display());
    tracing::info!(
        actor.name = %caller.name,
        actor.group = %caller.group,
        created.name = %record.name,
        created.group = %record.group,
        "client created"
    );
    Ok(json(StatusCode::CREATED, &record.to_wire()))
}

pub async fn get(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::CLIENTS_GET)?;
    let name = params::client_name(&req)?;
    let client = state
        .clients
        .read()
        .get(name.as_str())
        .map(ClientRecord::to_wire);
    let client = client.ok_or_else(|| not_found(&name))?;
    Ok(json(StatusCode::OK, &client))
}

pub async fn delete(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::CLIENTS_DELETE)?;
    let name = params::client_name(&req)?;
    if name.as_str() == DEFAULT_CLIENT {
        return Err(ApiError::Invalid("Cannot delete default client".into()));
    }

    let clients = &state.clients;
    let _change = clients.changes.lock().await;
    let Some(record) = clients.read().get(name.as_str()).cloned() else {
        return Err(not_found(&name));
    };
    let files = clients.files.clone();
    let path = files.path(name.as_str());
    let to_remove = name.clone();
    let existed = web::block(move || files.remove(to_remove.as_str()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    clients.write().remove(name.as_str());
    if existed {
        tracing::info!("Client file removed: {}", path.display());
    } else {
        tracing::warn!("Client file was already missing: {}", path.display());
    }
    tracing::info!(
        actor.name = %caller.name,
        actor.group = %caller.group,
        deleted.name = %record.name,
        deleted.group = %record.group,
        "client deleted"
    );
    Ok(HttpResponse::NoContent().finish())
}
