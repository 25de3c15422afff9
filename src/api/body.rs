//! Reading JSON bodies: content type, size limit, deadline, then
//! deserialisation.
//!
//! Done by hand rather than with an extractor so that authentication and
//! path parameters are checked first (§1.3), and so each route chooses how
//! a bad body is answered: the envelope (`Invalid JSON format: ...`) or the
//! plain-text framework style of the peer route (415/413/400/422).
//!
//! A client holding a token must not hold a connection for ever: a declared
//! `Content-Length` over the limit is refused before a byte of the body is
//! read (as the reference's framework did), and a body must have arrived
//! within its deadline, else the answer is 408.

use std::pin::Pin;
use std::time::Duration;

use actix::prelude::Stream;
use actix_web::http::{header, StatusCode};
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;

/// Largest body of every route but the bulk one (2 MiB).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Time a whole body has to arrive, from when the handler starts reading
/// it: 32 MiB of bulk body needs well under a second on a local socket.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// Past the limit of a body sent without a declared length, at most this
/// much more is read and thrown away (within the deadline) so the client
/// can read the answer; beyond it the connection is closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    ContentType,
    TooLarge,
    /// The body did not arrive within the deadline.
    TimedOut(Duration),
    Read(String),
    Syntax(String),
    Data(String),
}

impl BodyError {
    pub fn message(&self) -> String {
        match self {
            BodyError::ContentType => {
                "Expected request with `Content-Type: application/json`".into()
            }
            BodyError::TooLarge => {
                "Failed to buffer the request body: length limit exceeded".into()
            }
            BodyError::TimedOut(d) => format!(
                "Request body not received within {} seconds",
                d.as_secs_f64()
            ),
            BodyError::Read(e) => format!("Failed to buffer the request body: {e}"),
            BodyError::Syntax(e) => format!("Failed to parse the request body as JSON: {e}"),
            BodyError::Data(e) => {
                format!("Failed to deserialize the JSON body into the target type: {e}")
            }
        }
    }

    /// As an envelope route answers it: 400, as the reference does for
    /// every unreadable body, too large included; 408 when too slow.
    pub fn envelope(self) -> ApiError {
        match self {
            BodyError::TimedOut(_) => ApiError::BodyTimeout(self.message()),
            _ => ApiError::InvalidJson(self.message()),
        }
    }

    /// As the peer route answers it, in plain text; a body too slow gets
    /// the envelope's 408 there too, the framework having had no deadline.
    pub fn plain(self) -> ApiError {
        let status = match self {
            BodyError::TimedOut(_) => return self.envelope(),
            BodyError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Read(_) | BodyError::Syntax(_) => StatusCode::BAD_REQUEST,
            BodyError::Data(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::Plain {
            status,
            message: self.message(),
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", sub)) => sub == "json" || (sub.ends_with("+json") && sub.len() > 5),
        _ => false,
    }
}

async fn next_chunk(payload: &mut Payload) -> Option<Result<Bytes, String>> {
    std::future::poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx))
        .await
        .map(|r| r.map_err(|e| e.to_string()))
}

/// Reads at most `limit` bytes of a JSON body within `deadline`.
pub async fn read(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    if !is_json(req) {
        return Err(BodyError::ContentType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refused unread: a client declaring 2^64-1 bytes would otherwise be
    // waited for. actix closes a connection whose body is left unread a
    // second after the answer (reading and dropping it meanwhile).
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let until = tokio::time::Instant::now() + deadline;
    let capacity = declared.map_or(0, |len| len as usize);
    let read = tokio::time::timeout_at(until, collect(&mut payload, limit, capacity))
        .await
        .map_err(|_| BodyError::TimedOut(deadline))?;
    if read == Err(BodyError::TooLarge) {
        // Whatever the drain ends with, the answer is the same.
        let _ = tokio::time::timeout_at(until, drain(&mut payload)).await;
    }
    read
}

/// The body, or `TooLarge` as soon as it passes `limit`.
async fn collect(payload: &mut Payload, limit: usize, capacity: usize) -> Result<Bytes, BodyError> {
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = next_chunk(payload).await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Throws away the rest of a refused body, within reason.
async fn drain(payload: &mut Payload) {
    let mut seen = 0;
    while let Some(Ok(chunk)) = next_chunk(payload).await {
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// Deserialises, telling syntax errors (400) from shape errors (422).
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, BodyError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => BodyError::Data(e.to_string()),
        _ => BodyError::Syntax(e.to_string()),
    })
}

/// Reads and deserialises a body of an envelope route.
pub async fn json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
    deadline: Duration,
) -> Result<T, ApiError> {
    let bytes = read(req, payload, limit, deadline)
        .await
        .map_err(BodyError::envelope)?;
    parse(&bytes).map_err(BodyError::envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn json_content_types() {
        let with = |ct: &str| {
            is_json(
                &TestRequest::default()
                    .insert_header(("content-type", ct))
                    .to_http_request(),
            )
        };
        assert!(with("application/json"));
        assert!(with("application/json; charset=utf-8"));
        assert!(with("Application/JSON"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("application/+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/xml"));
        assert!(!is_json(&TestRequest::default().to_http_request()));
    }

    #[test]
    fn syntax_and_shape_errors_differ() {
        assert!(matches!(parse::<Vec<u8>>(b""), Err(BodyError::Syntax(_))));
        assert!(matches!(
            parse::<Vec<u8>>(b"[1,"),
            Err(BodyError::Syntax(_))
        ));
        assert!(matches!(parse::<Vec<u8>>(b"{}"), Err(BodyError::Data(_))));
        assert_eq!(parse::<Vec<u8>>(b"[1]"), Ok(vec![1]));
    }
}
