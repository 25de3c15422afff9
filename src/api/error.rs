//! The one error type of the API and how each kind becomes a response: the
//! JSON envelope of §1.1, or the plain-text bodies of §1.2.

use std::collections::BTreeMap;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use couic_common::{ErrorBody, ErrorCode, FieldError};

use crate::firewall::WriteError;

/// Per-field errors, accumulated before answering.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields(BTreeMap<String, FieldError>);

impl Fields {
    pub fn add(&mut self, field: impl Into<String>, code: ErrorCode, message: impl ToString) {
        self.0.insert(
            field.into(),
            FieldError {
                code,
                message: message.to_string(),
            },
        );
    }

    pub fn invalid(&mut self, field: impl Into<String>, message: impl ToString) {
        self.add(field, ErrorCode::Invalid, message);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else `error(fields)`.
    pub fn check(self, error: fn(Fields) -> ApiError) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(error(self))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication or authorisation failed (403 is never used, §2).
    #[error("Unauthorized")]
    Unauthorized,
    /// Invalid path parameters.
    #[error("Bad request")]
    BadRequest(Fields),
    /// A body that cannot be read or deserialised (envelope routes).
    #[error("Invalid JSON format: {0}")]
    InvalidJson(String),
    /// A body that did not arrive within its deadline (408).
    #[error("{0}")]
    BodyTimeout(String),
    /// Semantic validation of a body.
    #[error("Validation failed")]
    Validation(Fields),
    /// A 422 with a message of its own and no field details.
    #[error("{0}")]
    Invalid(String),
    /// A 404 with a message of its own and no field details.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{0}")]
    Internal(String),
    /// A framework-style rejection with a plain-text body (peer route, query).
    #[error("{message}")]
    Plain { status: StatusCode, message: String },
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    /// The status and the envelope. A set-entry removal, which the single
    /// DELETE answers in plain text, gets an envelope here (bulk results).
    pub fn envelope(&self) -> (StatusCode, ErrorBody) {
        let with_fields = |code: ErrorCode, message: String, fields: &Fields| ErrorBody {
            code,
            message,
            errors: fields.0.clone(),
        };
        let plain = |code: ErrorCode, message: String| ErrorBody::new(code, message);
        let body = match self {
            ApiError::Unauthorized => plain(ErrorCode::Unauthorized, self.to_string()),
            ApiError::BadRequest(f) => with_fields(ErrorCode::BadRequest, self.to_string(), f),
            ApiError::InvalidJson(_) => plain(ErrorCode::BadRequest, self.to_string()),
            ApiError::BodyTimeout(m) => plain(ErrorCode::BadRequest, m.clone()),
            ApiError::Validation(f) => with_fields(ErrorCode::Invalid, self.to_string(), f),
            ApiError::Invalid(m) => plain(ErrorCode::Invalid, m.clone()),
            ApiError::NotFound(m) => plain(ErrorCode::NotFound, m.clone()),
            ApiError::Internal(m) => plain(ErrorCode::Internal, m.clone()),
            ApiError::Plain { status, message } => {
                let code = if status.is_server_error() {
                    ErrorCode::Internal
                } else {
                    ErrorCode::BadRequest
                };
                plain(code, message.clone())
            }
            ApiError::Write(e) => write_envelope(e),
        };
        let status = match self {
            ApiError::Plain { status, .. } => *status,
            ApiError::Write(WriteError::Aborted) => StatusCode::FAILED_DEPENDENCY,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::from_u16(body.code.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        (status, body)
    }
}

fn write_envelope(e: &WriteError) -> ErrorBody {
    match e {
        WriteError::Duplicate(_) => ErrorBody::new(
            ErrorCode::Conflict,
            "submitted entry is not valid",
        )
        .field("cidr", ErrorCode::Conflict, e.to_string()),
        WriteError::Full { .. } => ErrorBody::new(ErrorCode::Conflict, e.to_string()),
        WriteError::NotFound(_) => ErrorBody::new(ErrorCode::NotFound, "submitted entry not found")
            .field("cidr", ErrorCode::NotFound, e.to_string()),
        WriteError::SetEntry(_) | WriteError::Aborted => {
            ErrorBody::new(ErrorCode::Invalid, e.to_string())
        }
        WriteError::Kernel { .. } | WriteError::Storage(_) => {
            ErrorBody::new(ErrorCode::Internal, e.to_string())
        }
    }
}

fn text(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ))
        .body(message)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.envelope().0
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Plain { status, message } => text(*status, message.clone()),
            // The contract's plain-text quirk for DELETE of a set entry (§4.4).
            ApiError::Write(e @ WriteError::SetEntry(_)) => {
                text(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            _ => {
                let (status, body) = self.envelope();
                if status.is_server_error() {
                    tracing::error!(error = %self, "request failed");
                }
                super::json(status, &body)
            }
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Internal(format!("the map writer is unavailable: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_match_the_contract() {
        let cidr = "10.0.0.0/8".parse().unwrap();
        let (status, body) = ApiError::Write(WriteError::Duplicate(cidr)).envelope();
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"code":"conflict","message":"submitted entry is not valid","errors":{"cidr":{"code":"conflict","message":"10.0.0.0/8 already exists"}}}"#
        );
        let (status, body) = ApiError::Write(WriteError::NotFound(cidr)).envelope();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body.errors["cidr"].message, "cidr `10.0.0.0/8` not found");
        let (status, body) = ApiError::Write(WriteError::Full { max: 4 }).envelope();
        assert_eq!(
            (status.as_u16(), body.message.as_str()),
            (409, "couic underlying ebpf map is full: max 4 entries")
        );
        let (status, body) = ApiError::InvalidJson("x".into()).envelope();
        assert_eq!(
            (status.as_u16(), body.message.as_str()),
            (400, "Invalid JSON format: x")
        );
        let mut fields = Fields::default();
        fields.invalid("tag", "bad");
        let (status, body) = ApiError::Validation(fields).envelope();
        assert_eq!(
            (status.as_u16(), body.message.as_str()),
            (422, "Validation failed")
        );
        assert_eq!(
            ApiError::Unauthorized.envelope().0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = ApiError::BodyTimeout("slow".into()).envelope();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"code":"bad_request","message":"slow","errors":{}}"#
        );
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    }
}
