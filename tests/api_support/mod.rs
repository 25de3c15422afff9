//! An in-process daemon for the API and set tests: the real BPF program
//! (loaded, not attached), the MapWriter, the Expirer on a manual clock, the
//! sets of a temporary working directory, and the API on a real Unix socket.
//! A recorder subscribed to the MapWriter keeps every published event.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use couic::actors::expirer::{Expirer, Sweep};
use couic::actors::map_writer::{AddEntries, LastSeq, MapWriter};
use couic::actors::messages::{Changed, Origin};
use couic::actors::peer_broadcaster::PeerParts;
use couic::actors::reporter::Reporter;
use couic::actors::set_reloader::SetReloader;
use couic::actors::ReporterParts;
use couic::api::socket::SocketFile;
use couic::api::{self, AppState};
use couic::backoff::Backoff;
use couic::bpf::{self, Capacities};
use couic::clock::{ManualClock, SharedClock};
use couic::config::Reporting;
use couic::dirs::{Layout, Owner};
use couic::firewall::{Firewall, NewEntry};
use couic::peering::PeerCounters;
use couic::rbac::{self, ClientFiles, DEFAULT_CLIENT};
use couic::reporting::delivery::Webhook;
use couic::reporting::{ReportCounters, ReportQueue};
use couic::sets::Sets;
use couic_common::uds::{Response, UdsClient};
use couic_common::Policy;
use libbpf_rs::ProgramHandle;
use serde_json::Value;

/// The manual clock starts here (2025-01-01).
pub const T0: u64 = 1_735_689_600;

/// Keeps every event the MapWriter publishes.
struct Recorder(Arc<Mutex<Vec<Changed>>>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<Changed> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Changed, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(msg);
    }
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub admin: String,
    pub clock: ManualClock,
    pub writer: Addr<MapWriter>,
    pub expirer: Addr<Expirer>,
    pub reporter: Option<Addr<Reporter>>,
    pub reports: Arc<ReportCounters>,
    pub peers: Vec<Arc<PeerCounters>>,
    pub sets: Arc<SetReloader>,
    pub program: ProgramHandle,
    pub events: Arc<Mutex<Vec<Changed>>>,
    /// The `seq` of the last change `take_events` returned.
    taken_seq: AtomicU64,
    server: ServerHandle,
    system: System,
    thread: Option<JoinHandle<()>>,
    _socket_file: SocketFile,
}

/// Runs a future to completion from a test thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(Capacities {
            drop: 4096,
            ignore: 4096,
            tags: 64,
        })
    }

    pub fn start_with(caps: Capacities) -> Daemon {
        Daemon::start_full(caps, None, Vec::new(), None)
    }

    /// A daemon whose reports go to `reporting.webhook`; its counters are
    /// `Daemon::reports`.
    pub fn start_reporting(reporting: Reporting, backoff: Backoff) -> Daemon {
        Daemon::start_reporting_every(reporting, backoff, couic::actors::reporter::TICK)
    }

    /// The same, sending what is queued every `tick`.
    pub fn start_reporting_every(reporting: Reporting, backoff: Backoff, tick: Duration) -> Daemon {
        let caps = Capacities {
            drop: 65_536,
            ignore: 4096,
            tags: 64,
        };
        Daemon::start_full(caps, Some((reporting, backoff, tick)), Vec::new(), None)
    }

    /// A daemon that sends its API changes to `peers`; their status is
    /// `Daemon::peers`.
    pub fn start_peering(peers: Vec<PeerParts>) -> Daemon {
        let caps = Capacities {
            drop: 65_536,
            ignore: 4096,
            tags: 64,
        };
        Daemon::start_peering_with(caps, peers)
    }

    /// [`Daemon::start_peering`] with maps of `caps`.
    pub fn start_peering_with(caps: Capacities, peers: Vec<PeerParts>) -> Daemon {
        Daemon::start_full(caps, None, peers, None)
    }

    /// A daemon whose request bodies have `deadline` to arrive.
    pub fn start_body_deadline(deadline: Duration) -> Daemon {
        let caps = Capacities {
            drop: 4096,
            ignore: 4096,
            tags: 64,
        };
        Daemon::start_full(caps, None, Vec::new(), Some(deadline))
    }

    fn start_full(
        caps: Capacities,
        reporting: Option<(Reporting, Backoff, Duration)>,
        peering: Vec<PeerParts>,
        body_deadline: Option<Duration>,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let layout = Layout::prepare(&work, Owner::current()).unwrap();
        let files = ClientFiles::new(layout.clients_dir(), layout.owner);
        let (registry, _) = rbac::load_or_init(&files).unwrap();
        let admin = registry.get(DEFAULT_CLIENT).unwrap().token.to_string();
        let socket = dir.path().join("couic.sock");
        let (socket_file, listener) = SocketFile::bind(&socket, layout.owner).unwrap();

        let loaded = bpf::load(caps).expect("load the XDP program (run as root)");
        let program = loaded.program;
        let firewall = Firewall::new(loaded.maps, caps);
        let clock = ManualClock::new(T0);
        let shared: SharedClock = Arc::new(clock.clone());
        let events = Arc::new(Mutex::new(Vec::new()));
        let recorded = events.clone();
        let sets_root = work.join("sets");
        let owner = layout.owner;

        let reports = Arc::new(ReportCounters::default());
        let reporter = reporting.map(|(config, backoff, tick)| ReporterParts {
            sink: Arc::new(Webhook::new(&config).unwrap()),
            queue: ReportQueue::new(&config.events, config.queue_capacity, config.max_batch),
            tick,
            backoff,
            counters: reports.clone(),
        });
        let counters = reporter.as_ref().map(|_| reports.clone());
        let peers: Vec<Arc<PeerCounters>> = peering.iter().map(|p| p.counters.clone()).collect();
        let peer_counters = peers.clone();

        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = System::new();
            system.block_on(async move {
                // As in main, with a recorder among the subscribers.
                let writer_arbiter = Arbiter::new();
                let recorder = Recorder(recorded).start().recipient();
                let actors = couic::actors::start(
                    &writer_arbiter.handle(),
                    firewall,
                    shared.clone(),
                    reporter,
                    peering,
                    None,
                    vec![recorder],
                );
                let writer = actors.writer;
                let sets = SetReloader::new(Sets::new(sets_root, owner), writer.clone());
                let mut state =
                    AppState::new(writer.clone(), registry, files, shared).with_sets(sets.clone());
                if let Some(counters) = counters {
                    state = state.with_reports(counters);
                }
                state = state.with_peers(peer_counters);
                if let Some(deadline) = body_deadline {
                    state = state.with_body_deadline(deadline);
                }
                let server = api::serve(listener, actix_web::web::Data::new(state), 2).unwrap();
                tx.send((
                    server.handle(),
                    writer,
                    actors.expirer,
                    actors.reporter,
                    sets,
                    System::current(),
                ))
                .unwrap();
                actix_rt::spawn(server);
            });
            system.run().unwrap();
        });
        let (server, writer, expirer, reporter, sets, system) = rx.recv().unwrap();
        Daemon {
            dir,
            socket,
            admin,
            clock,
            writer,
            expirer,
            reporter,
            reports,
            peers,
            sets,
            program,
            events,
            taken_seq: AtomicU64::new(0),
            server,
            system,
            thread: Some(thread),
            _socket_file: socket_file,
        }
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `work/sets/<policy>/`.
    pub fn set_dir(&self, policy: &str) -> PathBuf {
        self.work_dir().join("sets").join(policy)
    }

    /// Writes `file` in the policy's set directory with `mode` (owner: us).
    pub fn write_file(&self, policy: &str, file: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.set_dir(policy).join(file);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A valid set file (mode 0600) named `<stem>.couic`.
    pub fn write_set(&self, policy: &str, stem: &str, content: &str) -> PathBuf {
        self.write_file(policy, &format!("{stem}.couic"), content, 0o600)
    }

    /// A client speaking with the admin token.
    pub fn admin(&self) -> Api {
        self.client(Some(&self.admin))
    }

    pub fn client(&self, token: Option<&str>) -> Api {
        Api {
            uds: UdsClient::new(&self.socket, Duration::from_secs(30)),
            token: token.map(String::from),
        }
    }

    /// Expires what the manual clock says is due, as the interval would.
    pub fn sweep(&self) {
        block_on(self.expirer.send(Sweep)).unwrap();
    }

    /// Takes the events published so far: asks the MapWriter for the last
    /// sequence number it published, then polls until the recorder holds
    /// it. Sequence numbers follow on without gaps across the events taken.
    pub fn take_events(&self) -> Vec<Changed> {
        let last = block_on(self.writer.send(LastSeq)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let taken_before = self.taken_seq.load(Ordering::SeqCst);
        loop {
            {
                let mut events = self.events.lock().unwrap();
                let seen = events.last().map_or(taken_before, Changed::last_seq);
                if seen >= last {
                    let taken = std::mem::take(&mut *events);
                    let seqs: Vec<u64> = std::iter::once(taken_before)
                        .chain(taken.iter().flat_map(|e| e.changes.iter().map(|c| c.seq)))
                        .collect();
                    assert!(
                        seqs.windows(2).all(|w| w[1] == w[0] + 1),
                        "sequence numbers with a gap or out of order: {seqs:?}"
                    );
                    self.taken_seq.store(seen, Ordering::SeqCst);
                    return taken;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "events up to seq {last} never arrived"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Adds a set entry (tag `<name>.couic`) as a set reload would.
    pub fn add_set_entry(&self, policy: Policy, cidr: &str, set: &str) {
        let entry = NewEntry {
            cidr: cidr.parse().unwrap(),
            tag: format!("{set}.couic"),
            expiration: 0,
            metadata: None,
        };
        let msg = AddEntries {
            policy,
            entries: vec![entry],
            origin: Origin::Set,
            atomic: true,
        };
        let results = block_on(async { self.writer.send(msg).await.unwrap().await });
        assert!(results[0].is_ok(), "{results:?}");
    }

    /// Creates a client of `group` through the API; returns its token.
    pub fn create_client(&self, name: &str, group: &str) -> String {
        let resp = self.admin().post(
            "/v1/client",
            &format!(r#"{{"name":"{name}","group":"{group}"}}"#),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        json(&resp)["token"].as_str().unwrap().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        block_on(self.server.stop(true));
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn json(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.text()))
}

/// A keep-alive connection, with a bearer token or none.
pub struct Api {
    pub uds: UdsClient,
    pub token: Option<String>,
}

impl Api {
    /// Any request; `Authorization` added when the client has a token.
    pub fn raw(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("Authorization", auth));
        }
        self.uds.request(method, path, &all, body).expect("request")
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.raw("GET", path, &[], None)
    }

    pub fn delete(&mut self, path: &str) -> Response {
        self.raw("DELETE", path, &[], None)
    }

    /// `method` with a JSON body.
    pub fn send(&mut self, method: &str, path: &str, body: &str) -> Response {
        self.raw(
            method,
            path,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    }

    /// POST with `Content-Type: application/json`.
    pub fn post(&mut self, path: &str, body: &str) -> Response {
        self.send("POST", path, body)
    }

    /// `POST /v1/sets/reload`, no body.
    pub fn reload(&mut self) -> Response {
        self.raw("POST", "/v1/sets/reload", &[], None)
    }

    /// POSTs an entry; returns the response.
    pub fn add(
        &mut self,
        policy: &str,
        cidr: &str,
        tag: Option<&str>,
        expiration: u64,
    ) -> Response {
        let body = serde_json::json!({"cidr": cidr, "tag": tag, "expiration": expiration});
        self.post(&format!("/v1/{policy}"), &body.to_string())
    }

    /// The entries of a policy, as `cidr -> (tag, expiration)`, sorted.
    pub fn entries(&mut self, policy: &str) -> Vec<(String, String, u64)> {
        let resp = self.get(&format!("/v1/{policy}"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        let mut out: Vec<(String, String, u64)> = json(&resp)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["cidr"].as_str().unwrap().to_string(),
                    e["tag"].as_str().unwrap().to_string(),
                    e["expiration"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Number of entries of a policy.
    pub fn count(&mut self, policy: &str) -> usize {
        let resp = self.get(&format!("/v1/{policy}"));
        assert_eq!(resp.status, 200);
        json(&resp).as_array().unwrap().len()
    }
}
