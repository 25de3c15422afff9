//! One HTTP exchange with the daemon, local or remote, and the reading of its
//! answer: a typed body on success, the error envelope (or whatever else the
//! server sent) on failure.
//!
//! Local mode goes through `UdsClient` and never touches TLS, so the common
//! fail2ban call stays a few milliseconds long; the `ureq` agent is only built
//! in remote mode.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use couic_common::outbound;
use couic_common::uds::UdsClient;
use couic_common::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{Config, Target};

/// Per request, in both modes (§14.1).
pub const TIMEOUT: Duration = Duration::from_secs(5);
pub const USER_AGENT: &str = "CouicClient/1.0.0";
/// Largest response body accepted: a full drop list (2 × 262 144 entries)
/// stays well below it.
const MAX_BODY: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// Everything that can go wrong between asking and getting a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Non-2xx answer carrying the JSON error envelope.
    #[error("{}", envelope_text(*status, body))]
    Api { status: u16, body: ErrorBody },
    /// Non-2xx answer with another body (empty 404/405, text/plain 422...).
    #[error("{}", plain_text(*status, text))]
    Plain { status: u16, text: String },
    #[error("Unix socket does not exist: {}", .0.display())]
    SocketMissing(PathBuf),
    // The cause is printed by the caller's `{:#}` chain, not here.
    #[error("cannot reach couic on {}{}", socket.display(), connect_hint(source))]
    Local { socket: PathBuf, source: io::Error },
    #[error("cannot reach couic at {url}")]
    Remote {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("cannot use ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("unexpected answer from couic (HTTP {status})")]
    Decode {
        status: u16,
        source: serde_json::Error,
    },
}

/// The reference's multi-line rendering (§14.6), plus a hint when the token
/// was refused, since a 401 says nothing about which token was sent.
fn envelope_text(status: u16, body: &ErrorBody) -> String {
    let mut s = format!(
        "Couic error: API error:\n  Status: {status}\n  Code: {}\n  Message: {}",
        body.code, body.message
    );
    if !body.errors.is_empty() {
        s.push_str("\n  Details:");
        for (field, e) in &body.errors {
            s.push_str(&format!(
                "\n    {field}: Code: {}, Message: {}",
                e.code, e.message
            ));
        }
    }
    if status == 401 {
        s.push_str(&format!("\n  Hint: {UNAUTHORIZED_HINT}"));
    }
    s
}

const UNAUTHORIZED_HINT: &str = "the daemon refused the token: it is unknown, or its group may \
not use this command (check client_file or token in the couicctl configuration)";

/// A body that is not the envelope is shown as it is: the status with its
/// reason and the text, instead of the reference's JSON parse error (§18.28).
fn plain_text(status: u16, text: &str) -> String {
    let text = text.trim();
    let message = if text.is_empty() {
        format!("{} (empty response body)", reason_phrase(status))
    } else {
        text.to_string()
    };
    let mut s = format!("Couic error: API error:\n  Status: {status}\n  Message: {message}");
    if status == 401 {
        s.push_str(&format!("\n  Hint: {UNAUTHORIZED_HINT}"));
    }
    s
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "HTTP error",
    }
}

fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => " (is the couic daemon running?)",
        io::ErrorKind::PermissionDenied => " (is this user in the daemon's group?)",
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => " (no answer within 5 s)",
        _ => "",
    }
}

/// Reads a 2xx body as `T`, or any other answer as an [`ApiError`].
pub fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ApiError> {
    if !(200..300).contains(&status) {
        return Err(error_from(status, body));
    }
    // A 204 has no body: let `T = ()` read it as `null`.
    let body = if body.is_empty() { &b"null"[..] } else { body };
    serde_json::from_slice(body).map_err(|source| ApiError::Decode { status, source })
}

fn error_from(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => ApiError::Api { status, body },
        Err(_) => ApiError::Plain {
            status,
            text: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

enum Conn {
    Local { socket: PathBuf, client: UdsClient },
    Remote { base: String, agent: ureq::Agent },
}

/// A connection to the daemon holding the bearer token.
pub struct Api {
    conn: Conn,
    authorization: String,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.conn {
            Conn::Local { socket, .. } => socket.display().to_string(),
            Conn::Remote { base, .. } => base.clone(),
        };
        f.debug_struct("Api")
            .field("target", &target)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(config: &Config) -> Result<Api, ApiError> {
        let conn = match &config.target {
            Target::Local { socket } => {
                // Checked up front so that a stopped daemon (socket removed)
                // gets the reference's message rather than a connect error.
                if !socket.exists() {
                    return Err(ApiError::SocketMissing(socket.clone()));
                }
                Conn::Local {
                    socket: socket.clone(),
                    client: UdsClient::new(socket, TIMEOUT),
                }
            }
            Target::Remote {
                host,
                port,
                tls,
                ca_file,
            } => Conn::Remote {
                base: base_url(host, *port, *tls),
                agent: remote_agent(ca_file.as_deref())?,
            },
        };
        Ok(Api {
            conn,
            authorization: format!("Bearer {}", config.token),
        })
    }

    /// Sends one request and decodes the answer as `T` (use `()` for 204).
    pub fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("wire types always serialise"));
        let (status, bytes) = self.exchange(method, path, body)?;
        decode(status, &bytes)
    }

    pub fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, ApiError> {
        self.call(Method::Get, path, None::<&()>)
    }

    pub fn delete(&mut self, path: &str) -> Result<(), ApiError> {
        let (status, bytes) = self.exchange(Method::Delete, path, None)?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(error_from(status, &bytes))
    }

    fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let headers = [
            ("User-Agent", USER_AGENT),
            ("Authorization", self.authorization.as_str()),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
        ];
        match &mut self.conn {
            Conn::Local { socket, client } => {
                let resp = client
                    .request(method.as_str(), path, &headers, body.as_deref())
                    .map_err(|source| local_error(socket, source))?;
                Ok((resp.status, resp.body))
            }
            Conn::Remote { base, agent } => {
                let url = format!("{base}{path}");
                let mut req = ureq::http::Request::builder()
                    .method(method.as_str())
                    .uri(&url);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let remote = |source| ApiError::Remote {
                    url: url.clone(),
                    source: Box::new(source),
                };
                let result = match body {
                    Some(b) => agent.run(req.body(b).map_err(|e| remote(e.into()))?),
                    // POST and PUT always carry a length, even when empty.
                    None if matches!(method, Method::Post | Method::Put) => {
                        agent.run(req.body(Vec::new()).map_err(|e| remote(e.into()))?)
                    }
                    None => agent.run(req.body(()).map_err(|e| remote(e.into()))?),
                };
                let mut resp = result.map_err(remote)?;
                let status = resp.status().as_u16();
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_BODY)
                    .read_to_vec()
                    .map_err(remote)?;
                Ok((status, bytes))
            }
        }
    }
}

fn local_error(socket: &Path, source: io::Error) -> ApiError {
    if source.kind() == io::ErrorKind::NotFound {
        ApiError::SocketMissing(socket.to_path_buf())
    } else {
        ApiError::Local {
            socket: socket.to_path_buf(),
            source,
        }
    }
}

pub use couic_common::outbound::base_url;

fn remote_agent(ca_file: Option<&Path>) -> Result<ureq::Agent, ApiError> {
    outbound::agent(TIMEOUT, USER_AGENT, ca_file).map_err(|e| ApiError::CaFile {
        path: e.path,
        reason: e.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::{Entry, ErrorCode};

    #[test]
    fn envelope_errors_render_like_the_reference() {
        let body = ErrorBody::new(ErrorCode::Conflict, "submitted entry is not valid").field(
            "cidr",
            ErrorCode::Conflict,
            "192.0.2.7/32 already exists",
        );
        let raw = serde_json::to_vec(&body).unwrap();
        let err = decode::<Entry>(409, &raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Couic error: API error:\n  Status: 409\n  Code: conflict\n  Message: submitted entry is not valid\n  \
             Details:\n    cidr: Code: conflict, Message: 192.0.2.7/32 already exists"
        );
    }

    #[test]
    fn refused_token_gets_a_hint() {
        let raw = br#"{"code":"unauthorized","message":"Unauthorized","errors":{}}"#;
        let text = decode::<()>(401, raw).unwrap_err().to_string();
        assert!(text.contains(
            "  Code: unauthorized\n  Message: Unauthorized\n  Hint: the daemon refused the token"
        ));
    }

    #[test]
    fn other_bodies_show_status_and_text() {
        let err = decode::<()>(422, b"Entry defined in a set cannot be removed").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Couic error: API error:\n  Status: 422\n  Message: Entry defined in a set cannot be removed"
        );
        let err = decode::<()>(404, b"").unwrap_err();
        assert!(err
            .to_string()
            .ends_with("Message: Not Found (empty response body)"));
    }

    #[test]
    fn success_bodies_decode_or_fail_clearly() {
        assert_eq!(decode::<()>(204, b"").unwrap(), ());
        let e: Entry = decode(
            201,
            br#"{"creation":1,"cidr":"1.1.1.1/32","tag":null,"expiration":0}"#,
        )
        .unwrap();
        assert_eq!(e.tag, None);
        let err = decode::<Entry>(200, b"<html>").unwrap_err().to_string();
        assert!(
            err.starts_with("unexpected answer from couic (HTTP 200)"),
            "{err}"
        );
    }

    #[test]
    fn missing_socket_is_named() {
        let cfg = Config {
            target: Target::Local {
                socket: "/nonexistent/couic.sock".into(),
            },
            token: uuid::Uuid::nil(),
            ripestat_url: String::new(),
        };
        let err = Api::new(&cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unix socket does not exist: /nonexistent/couic.sock"
        );
    }
}
