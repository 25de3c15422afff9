//! `/v1/sets/...` (§7.6): read and write set files, and reload them.
//!
//! Writes touch files only; nothing is applied before `POST
//! /v1/sets/reload`. File work runs on the blocking pool; the reload itself
//! is [`Sets::reload`]: every file validated first, then one MapWriter
//! message.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{Cidr, ErrorBody, ErrorCode, Policy, Set, SetName, SET_MAX_FILE_SIZE};
use serde_json::json as json_value;

use super::body;
use super::error::{ApiError, Fields};
use super::{get_and_head, json, AppState, Caller};
use crate::actors::set_reloader::{ReloadError, SetReloader};
use crate::rbac::Scope;
use crate::sets::{SetError, SetOpError, Sets};

/// Largest body of the set routes. Above the 2 MiB of other routes so that
/// a set of the full 5 MiB file size can be sent as JSON (quotes and commas
/// add at most about half again), unlike the reference (§18.16).
pub const SET_BODY_LIMIT: usize = 12 * 1024 * 1024;

/// Registers the set routes; they must come before the `/v1/{policy}/...`
/// routes so that `sets` is never taken for a policy.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/sets/reload").route(web::post().to(reload)))
        .service(
            get_and_head(web::resource("/v1/sets/{policy}"), list).route(web::post().to(create)),
        )
        .service(
            get_and_head(web::resource("/v1/sets/{policy}/{name}"), get)
                .route(web::put().to(update))
                .route(web::delete().to(delete)),
        );
}

fn reloader_of(state: &AppState) -> Result<&Arc<SetReloader>, ApiError> {
    state
        .sets
        .as_ref()
        .ok_or_else(|| ApiError::Internal("sets are not configured".into()))
}

fn sets_of(state: &AppState) -> Result<Arc<Sets>, ApiError> {
    reloader_of(state).map(|r| Arc::clone(r.files()))
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(ApiError::internal)
}

/// `{policy}` and `{name}`, every problem in one 400.
fn set_path(req: &HttpRequest) -> Result<(Policy, SetName), ApiError> {
    let mut fields = Fields::default();
    let segment = |name| req.match_info().get(name).unwrap_or("");
    let policy = segment("policy")
        .parse::<Policy>()
        .map_err(|e| fields.invalid("policy", e))
        .ok();
    let name = SetName::parse(segment("name"))
        .map_err(|e| fields.invalid("name", e))
        .ok();
    match (policy, name) {
        (Some(policy), Some(name)) => Ok((policy, name)),
        _ => Err(ApiError::BadRequest(fields)),
    }
}

/// A validated body: its name and its entries in canonical text (parsed,
/// not normalised), which is what is written and echoed.
pub fn validate(body: &Set) -> Result<(SetName, Vec<String>), Fields> {
    let mut fields = Fields::default();
    let name = SetName::parse(&body.name)
        .map_err(|e| fields.invalid("name", e))
        .ok();
    let mut entries = Vec::with_capacity(body.entries.len());
    for (i, raw) in body.entries.iter().enumerate() {
        match raw.parse::<Cidr>() {
            Ok(cidr) => entries.push(cidr.to_string()),
            Err(e) => fields.invalid(format!("entries[{i}]"), e),
        }
    }
    // The exact size of the file to write: entries joined by newlines.
    let size = entries
        .iter()
        .map(|e| e.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    if size as u64 > SET_MAX_FILE_SIZE {
        fields.invalid(
            "entries",
            "Set file would exceed the maximum allowed size of 5 MB",
        );
    }
    match name {
        Some(name) if fields.is_empty() => Ok((name, entries)),
        _ => Err(fields),
    }
}

fn envelope(status: StatusCode, body: ErrorBody) -> HttpResponse {
    json(status, &body)
}

/// How a failed set operation is answered.
fn op_failure(e: SetOpError) -> Result<HttpResponse, ApiError> {
    match e {
        SetOpError::NotFound { .. } => Err(ApiError::NotFound(e.to_string())),
        SetOpError::Exists { .. } => Ok(envelope(
            StatusCode::CONFLICT,
            ErrorBody::new(ErrorCode::Conflict, e.to_string()),
        )),
        SetOpError::Lines(ref lines) => {
            let mut body = ErrorBody::new(ErrorCode::Invalid, e.to_string());
            for l in lines {
                body = body.field(
                    format!("line {}", l.number),
                    ErrorCode::Invalid,
                    format!("{}: {}", l.reason, l.line),
                );
            }
            Ok(envelope(StatusCode::UNPROCESSABLE_ENTITY, body))
        }
        SetOpError::File(SetError::Permissions { path, detail }) => {
            Err(ApiError::Invalid(format!(
                "Set file has wrong permissions: {}: {detail}",
                path.display()
            )))
        }
        SetOpError::File(e) => Err(file_error(e)),
        SetOpError::Io { .. } => Err(ApiError::internal(e)),
    }
}

/// A file refused (422) or unreadable (500).
fn file_error(e: SetError) -> ApiError {
    if e.is_invalid_file() {
        ApiError::Invalid(e.to_string())
    } else {
        ApiError::internal(e)
    }
}

fn log_change(caller: &Caller, policy: Policy, name: &SetName, what: &'static str) {
    tracing::info!(
        client.name = %caller.name,
        client.group = %caller.group,
        policy = %policy,
        set = %name,
        "set {what}"
    );
}

pub async fn list(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::SETS_LIST)?;
    let policy = super::params::policy(&req)?;
    let sets = sets_of(&state)?;
    let summaries = blocking(move || sets.list(policy))
        .await?
        .map_err(file_error)?;
    Ok(json(StatusCode::OK, &summaries))
}

pub async fn get(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::SETS_GET)?;
    let (policy, name) = set_path(&req)?;
    let sets = sets_of(&state)?;
    match blocking(move || sets.get(policy, &name)).await? {
        Ok(set) => Ok(json(StatusCode::OK, &set)),
        Err(e) => op_failure(e),
    }
}

pub async fn create(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::SETS_CREATE)?;
    let policy = super::params::policy(&req)?;
    let body: Set = body::json(&req, payload, SET_BODY_LIMIT, state.body_deadline).await?;
    let (name, entries) = validate(&body).map_err(ApiError::Validation)?;
    let sets = sets_of(&state)?;
    let written = (name.clone(), entries.clone());
    match blocking(move || sets.create(policy, &written.0, &written.1)).await? {
        Ok(()) => {
            log_change(&caller, policy, &name, "created");
            Ok(json(
                StatusCode::CREATED,
                &Set {
                    name: name.to_string(),
                    entries,
                },
            ))
        }
        Err(e) => op_failure(e),
    }
}

pub async fn update(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::SETS_UPDATE)?;
    let (policy, name) = set_path(&req)?;
    let body: Set = body::json(&req, payload, SET_BODY_LIMIT, state.body_deadline).await?;
    // The body's name must be valid, but the path names the set.
    let (_, entries) = validate(&body).map_err(ApiError::Validation)?;
    let sets = sets_of(&state)?;
    let written = (name.clone(), entries.clone());
    match blocking(move || sets.replace(policy, &written.0, &written.1)).await? {
        Ok(()) => {
            log_change(&caller, policy, &name, "updated");
            Ok(json(
                StatusCode::OK,
                &Set {
                    name: name.to_string(),
                    entries,
                },
            ))
        }
        Err(e) => op_failure(e),
    }
}

pub async fn delete(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::SETS_DELETE)?;
    let (policy, name) = set_path(&req)?;
    let sets = sets_of(&state)?;
    let target = name.clone();
    match blocking(move || sets.delete(policy, &target)).await? {
        Ok(()) => {
            log_change(&caller, policy, &name, "deleted");
            Ok(json(
                StatusCode::OK,
                &json_value!({"deleted": true, "reload_required": true}),
            ))
        }
        Err(e) => op_failure(e),
    }
}

/// No body is read: any or no Content-Type is fine.
pub async fn reload(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::SETS_CREATE)?;
    match reloader_of(&state)?.reload().await {
        Ok(counts) => {
            let summary: Vec<String> = counts
                .iter()
                .map(|(p, c)| format!("{p}: +{} -{} ~{}", c.created, c.removed, c.updated))
                .collect();
            tracing::info!(
                client.name = %caller.name,
                client.group = %caller.group,
                changes = %summary.join(", "),
                "sets reloaded"
            );
            Ok(json(
                StatusCode::CREATED,
                &json_value!({"reload_status": "OK"}),
            ))
        }
        Err(ReloadError::File(e)) => Err(file_error(e)),
        Err(ReloadError::Write(e)) => Err(ApiError::Write(e)),
        Err(e @ ReloadError::Internal(_)) => Err(ApiError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::parse;

    fn body(name: &str, entries: &[&str]) -> Set {
        Set {
            name: name.into(),
            entries: entries.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn entries_are_echoed_parsed_but_not_normalised() {
        let (name, entries) =
            validate(&body("lan", &["192.168.1.5/24", "2001:DB8::1/32"])).unwrap();
        assert_eq!(name.as_str(), "lan");
        assert_eq!(entries, ["192.168.1.5/24", "2001:db8::1/32"]);
    }

    #[test]
    fn every_problem_is_a_field() {
        let fields = validate(&body("a.b", &["1.1.1.1/32", "1.1.1.1", " 2.2.2.2/32"])).unwrap_err();
        let (_, envelope) = ApiError::Validation(fields).envelope();
        let keys: Vec<&str> = envelope.errors.keys().map(String::as_str).collect();
        assert_eq!(keys, ["entries[1]", "entries[2]", "name"]);
        assert_eq!(envelope.message, "Validation failed");
    }

    #[test]
    fn size_is_the_exact_file_size() {
        // 16-byte lines: "10.0.0.1/32" padded by using /32 hosts of 3-digit octets.
        let line = "100.100.100.1/32";
        let fits = (SET_MAX_FILE_SIZE as usize + 1) / (line.len() + 1);
        let entries: Vec<&str> = vec![line; fits];
        assert!(validate(&body("big", &entries)).is_ok());
        let entries: Vec<&str> = vec![line; fits + 1];
        let fields = validate(&body("big", &entries)).unwrap_err();
        assert!(!fields.is_empty());
        assert!(validate(&body("empty", &[])).is_ok());
    }

    #[test]
    fn lines_error_names_each_line() {
        let lines = parse::entries_as_written("1.1.1.1/32\nbad\n#c\nworse\n").unwrap_err();
        let response = op_failure(SetOpError::Lines(lines)).unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
