//! The REST API on a Unix socket (§1-§5, §8, §9).
//!
//! Handlers are thin: authorise, read path and body, send one message to
//! the MapWriter, map its answer. The order of checks is the contract's
//! (§1.3): routing (404/405, empty bodies, no auth) is actix's; each handler
//! then authorises (401) before it reads path parameters (400) and the body
//! (400/422). [`configure`] builds every route so that tests can run the App
//! in process as well as behind the real socket of [`serve`].

pub mod auth;
pub mod body;
pub mod bulk;
pub mod check;
pub mod clients;
pub mod entry_log;
pub mod error;
pub mod params;
pub mod peer;
pub mod peers;
pub mod policies;
pub mod schema;
pub mod sets;
pub mod socket;
pub mod stats;

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::dev::Server;
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Data};
use actix_web::{
    App, FromRequest, Handler, HttpRequest, HttpResponse, HttpServer, Resource, Responder,
};
use serde::Serialize;

use crate::actors::map_writer::MapWriter;
use crate::actors::set_reloader::SetReloader;
use crate::clock::SharedClock;
use crate::fleet::status::FleetCounters;
use crate::peering::PeerCounters;
use crate::rbac::{ClientFiles, ClientRegistry, Scope};
use crate::reporting::ReportCounters;

pub use auth::Caller;
pub use error::ApiError;

/// Seconds in-flight requests get to finish once a stop is asked for.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// What every handler needs.
pub struct AppState {
    pub writer: Addr<MapWriter>,
    pub clients: clients::ClientsState,
    pub clock: SharedClock,
    /// The set files and their reload; `None` answers the set routes 500.
    pub sets: Option<Arc<SetReloader>>,
    /// The webhook reporter's counters, when reporting is on.
    pub reports: Option<Arc<ReportCounters>>,
    /// Each peer's status, in the order configured (empty: no peering).
    pub peers: Vec<Arc<PeerCounters>>,
    /// The fleet sync's status, when `[fleet]` is on.
    pub fleet: Option<Arc<FleetCounters>>,
    /// Time a request body has to arrive ([`body::BODY_DEADLINE`]).
    pub body_deadline: Duration,
    /// The `entry created` / `entry deleted` lines, within their budget.
    pub entry_log: entry_log::EntryLogger,
}

impl AppState {
    pub fn new(
        writer: Addr<MapWriter>,
        registry: ClientRegistry,
        files: ClientFiles,
        clock: SharedClock,
    ) -> Self {
        AppState {
            writer,
            clients: clients::ClientsState::new(registry, files),
            sets: None,
            reports: None,
            peers: Vec::new(),
            fleet: None,
            body_deadline: body::BODY_DEADLINE,
            entry_log: entry_log::EntryLogger::new(entry_log::DEFAULT_BUDGET, clock.clone()),
            clock,
        }
    }

    /// Gives single `entry created` / `entry deleted` lines a budget of
    /// `lines` a second instead of the default; past it, summaries.
    pub fn with_entry_log_budget(mut self, lines: u32) -> Self {
        self.entry_log = entry_log::EntryLogger::new(lines, self.clock.clone());
        self
    }

    /// Gives request bodies `deadline` to arrive instead of the default.
    pub fn with_body_deadline(mut self, deadline: Duration) -> Self {
        self.body_deadline = deadline;
        self
    }

    /// Serves the set routes with `sets`.
    pub fn with_sets(mut self, sets: Arc<SetReloader>) -> Self {
        self.sets = Some(sets);
        self
    }

    /// Shows the webhook reporter's counters in the statistics.
    pub fn with_reports(mut self, counters: Arc<ReportCounters>) -> Self {
        self.reports = Some(counters);
        self
    }

    /// Shows the peers' status (`/v1/peers`, metrics).
    pub fn with_peers(mut self, peers: Vec<Arc<PeerCounters>>) -> Self {
        self.peers = peers;
        self
    }

    /// Shows the fleet sync's status (`/v1/fleet`, metrics).
    pub fn with_fleet(mut self, counters: Arc<FleetCounters>) -> Self {
        self.fleet = Some(counters);
        self
    }

    pub fn report_stats(&self) -> Option<couic_common::ReportStats> {
        let now = self.clock.now();
        self.reports.as_ref().map(|c| c.read(now))
    }

    /// Authenticates the request and checks its client may use `scope`.
    pub fn authorize(&self, req: &HttpRequest, scope: Scope) -> Result<Caller, ApiError> {
        auth::authorize(&self.clients.registry, &self.clients.refusals, req, scope)
    }
}

/// A compact JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a response");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// A route of the API and the scopes it needs: the table the RBAC and
/// OpenAPI tests check the running server against.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub scopes: &'static [Scope],
}

const fn route(method: &'static str, path: &'static str, scopes: &'static [Scope]) -> RouteSpec {
    RouteSpec {
        method,
        path,
        scopes,
    }
}

/// Every route served (HEAD is also served wherever GET is).
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/v1/stats", &[Scope::STATS_LIST]),
    route("GET", "/v1/stats/tags/{policy}", &[Scope::STATS_GET]),
    route("GET", "/v1/metrics", &[Scope::STATS_LIST]),
    route("GET", "/v1/client", &[Scope::CLIENTS_LIST]),
    route("POST", "/v1/client", &[Scope::CLIENTS_CREATE]),
    route("GET", "/v1/client/{name}", &[Scope::CLIENTS_GET]),
    route("DELETE", "/v1/client/{name}", &[Scope::CLIENTS_DELETE]),
    route("GET", "/v1/check/{ip}", &[Scope::POLICY_GET]),
    route("POST", "/v1/sets/reload", &[Scope::SETS_CREATE]),
    route("GET", "/v1/sets/{policy}", &[Scope::SETS_LIST]),
    route("POST", "/v1/sets/{policy}", &[Scope::SETS_CREATE]),
    route("GET", "/v1/sets/{policy}/{name}", &[Scope::SETS_GET]),
    route("PUT", "/v1/sets/{policy}/{name}", &[Scope::SETS_UPDATE]),
    route("DELETE", "/v1/sets/{policy}/{name}", &[Scope::SETS_DELETE]),
    route("GET", "/v1/peers", &[Scope::PEERS_LIST]),
    route("GET", "/v1/fleet", &[Scope::PEERS_LIST]),
    route("POST", "/v1/{policy}/peer", &[Scope::POLICY_PEER]),
    route("GET", "/v1/{policy}/peer/digest", &[Scope::POLICY_PEER]),
    route(
        "PUT",
        "/v1/{policy}/peer/shard/{shard}",
        &[Scope::POLICY_PEER],
    ),
    route(
        "POST",
        "/v1/{policy}/bulk",
        &[Scope::POLICY_CREATE, Scope::POLICY_DELETE],
    ),
    route("GET", "/v1/{policy}", &[Scope::POLICY_LIST]),
    route("POST", "/v1/{policy}", &[Scope::POLICY_CREATE]),
    route("GET", "/v1/{policy}/{ip}/{prefix}", &[Scope::POLICY_GET]),
    route(
        "DELETE",
        "/v1/{policy}/{ip}/{prefix}",
        &[Scope::POLICY_DELETE],
    ),
];

/// A GET route that also answers HEAD (same status and headers, no body).
fn get_and_head<F, Args>(resource: Resource, handler: F) -> Resource
where
    F: Handler<Args> + Clone,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
}

/// Registers every route. Resources with literal segments come first:
/// actix tries resources in order, so `/v1/stats` is never a `{policy}`.
/// Then `/v1/{policy}`, the route of single adds: each resource with a
/// `{name}` before it is a regular expression tried on every request.
/// It takes two segments and no other dynamic resource does, so the
/// order among them decides nothing else.
/// Other methods on a known path get actix's 405 (empty, with `Allow`);
/// unknown paths a 404 with an empty body.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_and_head(web::resource("/v1/stats"), stats::global))
        .service(get_and_head(web::resource("/v1/metrics"), stats::metrics))
        .service(
            get_and_head(web::resource("/v1/client"), clients::list)
                .route(web::post().to(clients::create)),
        )
        .service(get_and_head(web::resource("/v1/peers"), peers::list))
        .service(get_and_head(web::resource("/v1/fleet"), peers::fleet))
        .service(
            get_and_head(web::resource("/v1/{policy}"), policies::list)
                .route(web::post().to(policies::add)),
        )
        .service(get_and_head(
            web::resource("/v1/stats/tags/{policy}"),
            stats::tags,
        ))
        .service(
            get_and_head(web::resource("/v1/client/{name}"), clients::get)
                .route(web::delete().to(clients::delete)),
        )
        .service(get_and_head(web::resource("/v1/check/{ip}"), check::check))
        .configure(sets::configure)
        .service(web::resource("/v1/{policy}/peer").route(web::post().to(peer::batch)))
        .service(get_and_head(
            web::resource("/v1/{policy}/peer/digest"),
            peer::digest,
        ))
        .service(web::resource("/v1/{policy}/peer/shard/{shard}").route(web::put().to(peer::shard)))
        .service(web::resource("/v1/{policy}/bulk").route(web::post().to(bulk::bulk)))
        .service(
            get_and_head(web::resource("/v1/{policy}/{ip}/{prefix}"), policies::get)
                .route(web::delete().to(policies::delete)),
        )
        .default_service(web::to(|| async { HttpResponse::NotFound().finish() }));
}

/// [`configure`] with the state attached: `App::new().configure(with_state(state))`.
pub fn with_state(state: Data<AppState>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        cfg.app_data(state.clone());
        configure(cfg);
    }
}

/// Starts serving on `listener` (HTTP/1.1, keep-alive). The caller runs the
/// returned server and stops it through its handle: a graceful stop lets
/// in-flight requests finish within [`SHUTDOWN_TIMEOUT_SECS`]. Summaries of
/// entry lines are written every [`entry_log::FLUSH_PERIOD`] on the
/// caller's arbiter, so a storm's last second is told when it ends.
pub fn serve(
    listener: UnixListener,
    state: Data<AppState>,
    workers: usize,
) -> std::io::Result<Server> {
    let flushed = state.clone();
    actix_rt::spawn(async move {
        let mut every = actix_rt::time::interval(entry_log::FLUSH_PERIOD);
        loop {
            every.tick().await;
            flushed.entry_log.flush();
        }
    });
    let server = HttpServer::new(move || App::new().configure(with_state(state.clone())))
        .workers(workers.max(1))
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen_uds(listener)?
        .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, TestRequest};

    /// Routing answers before any handler (and so before authentication):
    /// no state is needed to see it.
    #[actix_web::test]
    async fn routing_is_decided_before_the_handlers() {
        let app = init_service(App::new().configure(configure)).await;
        for (method, path, status) in [
            ("GET", "/v1/nope/a/b/c", 404),
            ("GET", "/v1/drop/", 404),
            ("PUT", "/v1/drop", 405),
            ("DELETE", "/v1/stats", 405),
            ("GET", "/v1/drop/peer", 405),
            ("OPTIONS", "/v1/client", 405),
        ] {
            let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
            let req = TestRequest::default()
                .method(method.clone())
                .uri(path)
                .to_request();
            let resp = call_service(&app, req).await;
            assert_eq!(resp.status().as_u16(), status, "{method} {path}");
            let body = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
            assert!(body.is_empty(), "{method} {path}");
        }
    }

    /// A route's path with each parameter given a value it takes.
    fn concrete(path: &str) -> String {
        path.replace("{policy}", "drop")
            .replace("{ip}", "10.0.0.0")
            .replace("{prefix}", "8")
            .replace("{shard}", "0")
            .replace("{name}", "x")
    }

    /// Every other method on every route's path answers 405 with an `Allow`
    /// header naming exactly the methods served there (RFC 9110 §15.5.6).
    #[actix_web::test]
    async fn every_405_says_what_is_allowed() {
        use std::collections::{BTreeMap, BTreeSet};
        let app = init_service(App::new().configure(configure)).await;
        let mut served: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for route in ROUTES {
            let methods = served.entry(route.path).or_default();
            methods.insert(route.method);
            if route.method == "GET" {
                methods.insert("HEAD");
            }
        }
        const METHODS: [&str; 8] = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
        ];
        for (path, methods) in &served {
            let uri = concrete(path);
            for method in METHODS.iter().filter(|m| !methods.contains(*m)) {
                let req = TestRequest::default()
                    .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
                    .uri(&uri)
                    .to_request();
                let resp = call_service(&app, req).await;
                assert_eq!(
                    resp.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}"
                );
                let allow = resp
                    .headers()
                    .get(header::ALLOW)
                    .unwrap_or_else(|| panic!("{method} {uri}: no Allow"))
                    .to_str()
                    .unwrap();
                let allowed: BTreeSet<&str> = allow.split(',').map(str::trim).collect();
                assert_eq!(&allowed, methods, "{method} {uri}");
            }
        }
    }
}
