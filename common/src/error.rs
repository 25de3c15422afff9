//! The JSON error envelope of every API error (§1.1).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Invalid,
    Unauthorized,
    NotFound,
    Conflict,
    Internal,
    Processing,
    NotImplemented,
}

impl ErrorCode {
    /// The HTTP status the contract pairs with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Invalid => 422,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Internal => 500,
            ErrorCode::Processing => 202,
            ErrorCode::NotImplemented => 501,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
            ErrorCode::Processing => "processing",
            ErrorCode::NotImplemented => "not_implemented",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub code: ErrorCode,
    pub message: String,
}

/// `{"code", "message", "errors": {field: {code, message}}}`; `errors` is
/// always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub errors: BTreeMap<String, FieldError>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    pub fn field(
        mut self,
        name: impl Into<String>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        self.errors.insert(
            name.into(),
            FieldError {
                code,
                message: message.into(),
            },
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let body = ErrorBody::new(ErrorCode::Invalid, "Validation failed").field(
            "cidr",
            ErrorCode::Invalid,
            "invalid IP address syntax",
        );
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"code":"invalid","message":"Validation failed","errors":{"cidr":{"code":"invalid","message":"invalid IP address syntax"}}}"#
        );
        let empty = ErrorBody::new(ErrorCode::Unauthorized, "Unauthorized");
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"code":"unauthorized","message":"Unauthorized","errors":{}}"#
        );
    }
}
