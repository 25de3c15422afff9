//! Bearer authentication and the scope check (§2). Every failure is the
//! same 401; the log says why, and which client when known, but never
//! carries the token. Anyone who can reach the socket can be refused at
//! will, so refusals are logged at most once per [`REFUSAL_LOG_PERIOD`],
//! with how many there were.

use std::fmt;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpRequest;
use couic_common::Group;
use uuid::Uuid;

use super::error::ApiError;
use crate::rbac::{grants, ClientRecord, ClientRegistry, Scope};
use crate::throttle::LogThrottle;

/// At most one warning about refused requests per period.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(1);

/// The authenticated client of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub group: Group,
}

/// Why a request was refused: logged, never answered.
#[derive(Debug)]
enum Refusal<'a> {
    /// No usable `Authorization: Bearer <uuid>` header.
    Header(&'static str),
    UnknownToken,
    NotGranted {
        client: &'a ClientRecord,
        scope: Scope,
    },
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Header(reason) => f.write_str(reason),
            Refusal::UnknownToken => f.write_str("unknown token"),
            Refusal::NotGranted { client, scope } => write!(
                f,
                "scope {} not granted to client {} (group {})",
                scope.as_string(),
                client.name,
                client.group
            ),
        }
    }
}

/// The warnings about refused requests, rate-limited: the first refusal is
/// logged, then at most one a period, counting those left unlogged.
#[derive(Debug)]
pub struct Refusals(Mutex<LogThrottle>);

impl Default for Refusals {
    fn default() -> Self {
        Refusals::new(REFUSAL_LOG_PERIOD)
    }
}

impl Refusals {
    pub fn new(period: Duration) -> Self {
        Refusals(Mutex::new(LogThrottle::new(period)))
    }

    fn log(&self, now: Instant, req: &HttpRequest, refusal: &Refusal<'_>) {
        let due = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_at(1, now);
        if let Some(refused) = due {
            tracing::warn!(
                route = %format_args!("{} {}", req.method(), req.path()),
                refused,
                "unauthorized: {refusal} ({refused} refused since the last such line)"
            );
        }
    }
}

/// The token of `Authorization: Bearer <uuid>`: the literal `Bearer ` prefix
/// (capital B, one space), then any spelling of a UUID.
fn bearer(req: &HttpRequest) -> Result<Uuid, &'static str> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or("missing Authorization header")?;
    let value = value
        .to_str()
        .map_err(|_| "unreadable Authorization header")?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or("not a Bearer authorization")?;
    Uuid::parse_str(token).map_err(|_| "token is not a UUID")
}

fn check<'r>(
    registry: &'r ClientRegistry,
    req: &HttpRequest,
    scope: Scope,
) -> Result<&'r ClientRecord, Refusal<'r>> {
    let token = bearer(req).map_err(Refusal::Header)?;
    let client = registry.authenticate(&token).ok_or(Refusal::UnknownToken)?;
    if !grants(client.group, scope) {
        return Err(Refusal::NotGranted { client, scope });
    }
    Ok(client)
}

/// Authenticates the request and checks that the client's group grants
/// `scope`; a refusal is counted in `refusals`.
pub fn authorize(
    registry: &RwLock<ClientRegistry>,
    refusals: &Refusals,
    req: &HttpRequest,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let registry = registry.read().unwrap_or_else(|e| e.into_inner());
    match check(&registry, req, scope) {
        Ok(client) => Ok(Caller {
            name: client.name.to_string(),
            group: client.group,
        }),
        Err(refusal) => {
            refusals.log(Instant::now(), req, &refusal);
            Err(ApiError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::ClientRecord;
    use actix_web::test::TestRequest;
    use couic_common::ClientName;

    #[test]
    fn bearer_syntax_is_strict() {
        let rec = ClientRecord::generate(ClientName::parse("m").unwrap(), Group::Monitoring);
        let registry = RwLock::new(ClientRegistry::new(vec![rec.clone()]));
        let refusals = Refusals::default();
        let with = |value: &str| {
            let req = TestRequest::default()
                .insert_header(("authorization", value))
                .to_http_request();
            authorize(&registry, &refusals, &req, Scope::STATS_LIST)
        };
        let t = rec.token;
        assert_eq!(with(&format!("Bearer {t}")).unwrap().name, "m");
        assert!(with(&format!("Bearer {}", t.simple())).is_ok());
        assert!(with(&format!("Bearer {}", t.urn())).is_ok());
        assert!(with(&format!("Bearer {}", t.braced())).is_ok());
        for bad in [
            format!("bearer {t}"),
            format!("Bearer  {t}"),
            format!("Basic {t}"),
            format!("{t}"),
        ] {
            assert!(matches!(with(&bad), Err(ApiError::Unauthorized)), "{bad}");
        }
        assert!(with(&format!("Bearer {}", Uuid::new_v4())).is_err());
        let req = TestRequest::default()
            .insert_header(("authorization", format!("Bearer {t}")))
            .to_http_request();
        assert!(
            authorize(&registry, &refusals, &req, Scope::POLICY_LIST).is_err(),
            "monitoring cannot list entries"
        );
        assert!(authorize(
            &registry,
            &refusals,
            &TestRequest::default().to_http_request(),
            Scope::STATS_LIST
        )
        .is_err());
    }

    /// Lines written through `tracing` while `f` runs on this thread.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flood_of_refusals_is_one_line_a_period_with_its_count() {
        let registry = RwLock::new(ClientRegistry::new(Vec::new()));
        let refusals = Refusals::default();
        let token = Uuid::new_v4();
        let req = TestRequest::default()
            .uri("/v1/drop")
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_http_request();
        let lines = logged(|| {
            for _ in 0..1000 {
                assert!(authorize(&registry, &refusals, &req, Scope::POLICY_LIST).is_err());
            }
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
        assert!(lines[0].contains("unauthorized: unknown token (1 refused"));
        assert!(lines[0].contains("GET /v1/drop"));
        assert!(!lines[0].contains(&token.to_string()), "never the token");
        // A period later, the next refusal's line counts the 999 unlogged.
        let later = Instant::now() + REFUSAL_LOG_PERIOD;
        let lines = logged(|| refusals.log(later, &req, &Refusal::UnknownToken));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("(1000 refused since the last such line)"));
    }
}
