//! The HTTP side: `POST /v1/reports/{secret}` and `GET /metrics`.
//!
//! Checks in this order, each before any work the next one needs: the
//! secret (401, body unread), the headers (400), the body's size (413), its
//! JSON (400), room in the queue (503). Only then is anything counted. The
//! path, hence the secret, is never logged.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Payload, ServiceConfig};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use couic_common::{Report, REPORT_BATCH_HEADER, REPORT_NODE_HEADER};

use crate::metrics::{self, Metrics};
use crate::period::Batch;
use crate::queue::Queue;
use crate::secret::Secret;

/// Largest body accepted. Our daemon sends at most 1 MiB per POST; a
/// reference daemon sends everything it has buffered in one POST (its
/// buffer grows during an outage), so the limit is well above the
/// reference receiver's 2 MiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest `X-Couic-Batch` id accepted, and longest node name kept.
pub const MAX_ID_LEN: usize = 128;
pub const MAX_NODE_LEN: usize = 128;
/// The node of a request that names none.
pub const UNKNOWN_NODE: &str = "unknown";
pub const RECEIVED: &str = "reports received";
/// Seconds a refused sender is asked to wait when the queue is full.
pub const RETRY_AFTER_SECS: u32 = 1;

const TEXT: &str = "text/plain; charset=utf-8";

pub struct State {
    pub secret: Secret,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
}

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/v1/reports/{secret}").route(web::post().to(receive)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Binds every address `addr` names (`localhost` may be two) and returns
/// the server, to be awaited on an actix system.
pub fn bind(addr: &str, port: u16, state: State) -> Result<Server, BindError> {
    let shown = if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    };
    let failed = |source| BindError {
        addr: shown.clone(),
        source,
    };
    let addrs: Vec<SocketAddr> = (addr, port).to_socket_addrs().map_err(failed)?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        let refused =
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a loopback address");
        return Err(failed(refused));
    }
    let state = Data::new(state);
    let mut server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(configure));
    for a in addrs {
        server = server.bind(a).map_err(|source| BindError {
            addr: a.to_string(),
            source,
        })?;
    }
    Ok(server.run())
}

async fn receive(req: HttpRequest, payload: Payload, state: Data<State>) -> HttpResponse {
    let response = match accept(&req, payload, &state).await {
        Ok(()) => text(StatusCode::OK, RECEIVED.to_string()),
        Err(refusal) => refusal.response(),
    };
    state.metrics.request(response.status().as_u16());
    response
}

/// Why a POST is not counted.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Unauthorized,
    BadRequest(String),
    TooLarge,
    Overloaded,
}

impl Refusal {
    fn response(&self) -> HttpResponse {
        match self {
            Refusal::Unauthorized => HttpResponse::Unauthorized().finish(),
            Refusal::BadRequest(why) => text(StatusCode::BAD_REQUEST, why.clone()),
            Refusal::TooLarge => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY_BYTES} bytes"),
            ),
            Refusal::Overloaded => HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS))
                .content_type(TEXT)
                .body("queue full, retry later"),
        }
    }
}

async fn accept(req: &HttpRequest, payload: Payload, state: &State) -> Result<(), Refusal> {
    let given = req.match_info().get("secret").unwrap_or("");
    if !state.secret.matches(given) {
        return Err(Refusal::Unauthorized);
    }
    let headers = req.headers();
    let id = batch_id(headers).map_err(Refusal::BadRequest)?;
    let node = node(headers);
    if content_length(headers).is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(Refusal::TooLarge);
    }
    let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return Err(Refusal::BadRequest(format!("cannot read the body: {e}"))),
        Err(_) => return Err(Refusal::TooLarge),
    };
    let reports: Vec<Report> = serde_json::from_slice(&body).map_err(|e| {
        Refusal::BadRequest(format!(
            "invalid reports: expected a JSON array of reports: {e}"
        ))
    })?;
    tracing::debug!(node, reports = reports.len(), "batch received");
    state
        .queue
        .offer(Batch { id, node, reports })
        .map_err(|_| Refusal::Overloaded)
}

/// `X-Couic-Batch`: absent (reference daemons), or 1 to [`MAX_ID_LEN`]
/// visible ASCII characters.
fn batch_id(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(REPORT_BATCH_HEADER) else {
        return Ok(None);
    };
    let valid = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value.as_bytes().iter().all(u8::is_ascii_graphic);
    if !valid {
        return Err(format!(
            "X-Couic-Batch: expected 1 to {MAX_ID_LEN} visible ASCII characters"
        ));
    }
    Ok(Some(String::from_utf8_lossy(value.as_bytes()).into_owned()))
}

/// Who sent the batch: `X-Couic-Node` (our daemon), else `User-Agent`
/// (reference daemons say `couic/<version>`), else [`UNKNOWN_NODE`].
fn node(headers: &HeaderMap) -> String {
    let named = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut node = named(REPORT_NODE_HEADER)
        .or_else(|| named(header::USER_AGENT.as_str()))
        .unwrap_or_else(|| UNKNOWN_NODE.to_string());
    if node.len() > MAX_NODE_LEN {
        let mut end = MAX_NODE_LEN;
        while !node.is_char_boundary(end) {
            end -= 1;
        }
        node.truncate(end);
    }
    node
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn metrics(state: Data<State>) -> HttpResponse {
    match state.metrics.encode() {
        Ok(body) => HttpResponse::Ok()
            .content_type(metrics::CONTENT_TYPE)
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

fn text(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status).content_type(TEXT).body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use uuid::Uuid;

    const SECRET: &str = "5b8f3c1e-2a4d-4f6b-9c7e-1d2f3a4b5c6d";

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn node_from_our_header_then_user_agent() {
        let both = headers(&[("x-couic-node", b"edge-1"), ("user-agent", b"couic/1.0.2")]);
        assert_eq!(node(&both), "edge-1");
        assert_eq!(
            node(&headers(&[("user-agent", b"couic/1.0.2")])),
            "couic/1.0.2"
        );
        assert_eq!(node(&headers(&[("x-couic-node", b"  ")])), UNKNOWN_NODE);
        assert_eq!(node(&headers(&[])), UNKNOWN_NODE);
        let long = "n".repeat(500);
        assert_eq!(
            node(&headers(&[("x-couic-node", long.as_bytes())])).len(),
            MAX_NODE_LEN
        );
    }

    #[test]
    fn batch_ids_are_short_visible_ascii() {
        assert_eq!(batch_id(&headers(&[])), Ok(None));
        assert_eq!(
            batch_id(&headers(&[("x-couic-batch", b"0190-abc")])),
            Ok(Some("0190-abc".into()))
        );
        assert!(batch_id(&headers(&[("x-couic-batch", b"a b")])).is_err());
        assert!(batch_id(&headers(&[("x-couic-batch", b"")])).is_err());
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(batch_id(&headers(&[("x-couic-batch", long.as_bytes())])).is_err());
    }

    fn state(capacity: usize) -> (State, crate::queue::Inbox) {
        let metrics = Arc::new(Metrics::new());
        let (queue, inbox) = crate::queue::queue(capacity, metrics.clone());
        let state = State {
            secret: Secret::new(Uuid::parse_str(SECRET).unwrap()).unwrap(),
            queue,
            metrics,
        };
        (state, inbox)
    }

    fn one_add() -> &'static str {
        r#"[{"action":"add","policy":"drop","entry":{"creation":0,"cidr":"1.1.1.1/32","tag":null,"expiration":0},"metadata":null}]"#
    }

    #[actix_web::test]
    async fn the_secret_is_checked_before_the_body() {
        let (state, inbox) = state(100);
        let app = init_service(App::new().app_data(Data::new(state)).configure(configure)).await;
        let wrong = TestRequest::post()
            .uri(&format!("/v1/reports/{}", SECRET.to_uppercase()))
            .set_payload("not json")
            .to_request();
        let res = call_service(&app, wrong).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(read_body(res).await.is_empty());
        let right = TestRequest::post()
            .uri(&format!("/v1/reports/{SECRET}"))
            .set_payload("[]")
            .to_request();
        let res = call_service(&app, right).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(read_body(res).await, RECEIVED);
        assert!(inbox.rx.try_recv().unwrap().reports.is_empty());
    }

    #[actix_web::test]
    async fn a_full_queue_answers_503_with_retry_after() {
        let (state, inbox) = state(1);
        let app = init_service(App::new().app_data(Data::new(state)).configure(configure)).await;
        let post = || {
            TestRequest::post()
                .uri(&format!("/v1/reports/{SECRET}"))
                .set_payload(one_add())
                .to_request()
        };
        assert_eq!(call_service(&app, post()).await.status(), StatusCode::OK);
        // Nobody drains the queue: the next batch does not fit.
        let res = call_service(&app, post()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let batch = inbox.rx.try_recv().unwrap();
        inbox.gate.release(batch.reports.len());
        assert!(
            inbox.rx.try_recv().is_err(),
            "the refused batch was not queued"
        );
        assert_eq!(call_service(&app, post()).await.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn a_body_over_the_limit_is_413_even_without_content_length() {
        let (state, inbox) = state(100);
        let app = init_service(App::new().app_data(Data::new(state)).configure(configure)).await;
        let mut body = b"[".to_vec();
        body.resize(MAX_BODY_BYTES + 1, b' ');
        let mut req = TestRequest::post()
            .uri(&format!("/v1/reports/{SECRET}"))
            .set_payload(body)
            .to_request();
        // As a chunked body would come: the size is found while reading.
        req.headers_mut().remove(header::CONTENT_LENGTH);
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(inbox.rx.try_recv().is_err());
    }
}
