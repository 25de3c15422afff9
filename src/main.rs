//! couic: load and attach the XDP program, then serve the API until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use clap::Parser;

use couic::actors::fleet_sync::{FleetFlush, FleetParts, Marks};
use couic::actors::map_writer::Deliver;
use couic::actors::peer_broadcaster::PeerParts;
use couic::actors::reporter::Flush;
use couic::actors::set_reloader::SetReloader;
use couic::actors::{self, Actors, ReporterParts};
use couic::api::socket::SocketFile;
use couic::api::{self, AppState};
use couic::backoff::{Backoff, FIRST_DELAY, MAX_DELAY};
use couic::bpf::{self, Capacities};
use couic::clock::{Clock, SharedClock, SystemClock};
use couic::config::Config;
use couic::dirs::{Layout, Owner};
use couic::firewall::Firewall;
use couic::fleet::{self, status::FleetCounters};
use couic::journal::{self, Options};
use couic::peering::link::{HttpPeer, Link};
use couic::peering::{PeerCounters, PeerQueue, MAX_BATCH};
use couic::pins::Pins;
use couic::rbac::{self, ClientFiles};
use couic::reporting::delivery::Webhook;
use couic::reporting::{ReportCounters, ReportQueue};
use couic::sets::Sets;
use couic::{logging, privileges, xdp};

/// XDP firewall that drops layer-7 DDoS sources before the kernel network stack.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, default_value = "/etc/couic/couic.toml")]
    config: PathBuf,
    /// Stop filtering for good: remove the pinned XDP links of this
    /// config's instance, then exit. couic must not be running.
    #[arg(long)]
    detach: bool,
    /// Start from a damaged state store: keep the records before the
    /// damage (the damaged file is kept beside, as `.damaged`).
    #[arg(long)]
    salvage_state: bool,
}

fn main() -> ExitCode {
    println!("Starting Couic version {}", couic::VERSION);
    hold_stop_signals(libc::SIG_BLOCK);
    keep_large_buffers_off_the_heap();
    let cli = Cli::parse();
    match try_main(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once logging is up the error is logged where it happened.
            if !e.is::<Logged>() {
                eprintln!("{e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// An error already written to the log.
#[derive(Debug, thiserror::Error)]
#[error("see the log")]
struct Logged;

/// The startup order: config, directories, logging, the privileged part
/// (load, attach, take every handle, drop capabilities), then the actors and
/// the API until a signal.
fn try_main(cli: &Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config).context("Error loading configuration")?;
    if cli.detach {
        return detach(&config);
    }
    let layout = Owner::resolve(&config.user, &config.group)
        .and_then(|owner| Layout::prepare(&config.working_dir, owner))
        .context("Error initializing default directories")?;
    let startup_log = logging::startup(config.logging.as_ref(), layout.owner)
        .context("Error initializing logging")?;
    // The privileged part runs on this thread alone: capabilities are per
    // thread, so any thread started before they are dropped would keep them.
    let acquired = tracing::dispatcher::with_default(&startup_log, || {
        acquire(&config, cli, &layout).inspect_err(|e| tracing::error!("{e:#}"))
    })
    .map_err(|_| Logged)?;
    let _log_guard =
        logging::init(config.logging.as_ref()).context("Error initializing logging")?;
    run(layout, acquired, config.entry_lines_per_second()).map_err(|e| {
        tracing::error!("{e:#}");
        Logged.into()
    })
}

/// Everything taken from the kernel and the filesystem while couic still
/// holds its capabilities.
struct Acquired {
    /// The webhook and what to report, when reporting is on.
    reporting: Option<(Webhook, ReportQueue)>,
    /// One per configured peer, when peering is on.
    peering: Vec<PeerParts>,
    /// The fleet sync, when `[fleet]` is on.
    fleet: Option<FleetParts>,
    /// Filled (durable entries, set files) before it was attached.
    firewall: Firewall,
    links: Vec<xdp::XdpLink>,
    /// Where the links are pinned, when they are.
    pins: Option<Pins>,
    clients: rbac::ClientRegistry,
    client_files: ClientFiles,
    socket: SocketFile,
    listener: std::os::unix::net::UnixListener,
}

/// `couic --detach`: the pins go, and with them the filtering.
fn detach(config: &Config) -> anyhow::Result<()> {
    let pins = Pins::new(config.pin_dir());
    // A running couic holds the state directory and its links.
    let state = couic::dirs::state_dir(&config.working_dir);
    if state.is_dir() && journal::is_locked(&state) {
        anyhow::bail!(
            "couic is running with this config (it holds {}): stop it first",
            state.display()
        );
    }
    let removed = pins
        .detach()
        .with_context(|| format!("cannot remove the pins in {}", pins.dir().display()))?;
    println!(
        "{removed} pinned XDP link(s) removed from {}: nothing is filtered by this couic",
        pins.dir().display()
    );
    Ok(())
}

fn acquire(config: &Config, cli: &Cli, layout: &Layout) -> anyhow::Result<Acquired> {
    let source = cli.config.as_path();
    // The packaged config names no interface: a fresh install must not
    // filter a link the operator did not choose, and must say why it does
    // nothing.
    if config.ifaces.is_empty() {
        tracing::warn!(
            "no interface to attach to: couic filters nothing until one is named in \
             `ifaces` of {}",
            source.display()
        );
    }
    // Peers and their CA files, read while couic may still read any file.
    let mut peering = Vec::new();
    if let Some(p) = config.peering.as_ref().filter(|p| p.enabled) {
        for peer in &p.peers {
            let link = HttpPeer::new(peer)
                .with_context(|| format!("[peering] peer {}", peer.display_name()))?;
            tracing::info!("peer {}", link.shown());
            let counters = Arc::new(PeerCounters::new(&peer.display_name(), link.url()));
            // A peer that was down is tried again at least every
            // resync_interval: it is caught up that soon after it is back.
            let resync_interval = Duration::from_secs(p.resync_interval);
            let backoff = Backoff::new(FIRST_DELAY, MAX_DELAY.min(resync_interval));
            peering.push(PeerParts {
                link: Arc::new(link),
                queue: PeerQueue::new(p.queue_capacity, MAX_BATCH),
                backoff,
                counters,
                resync_interval,
            });
        }
    }

    // The webhook's CA file is read while couic may still read any file.
    let mut fleet = config.fleet.as_ref().filter(|f| f.enabled).map(|f| {
        let node = f.node_name();
        tracing::info!(
            "fleet: node {node}, bucket {} on {}",
            f.bucket,
            f.servers.join(", ")
        );
        FleetParts {
            config: f.clone(),
            counters: Arc::new(FleetCounters::new(&node, &f.bucket, &f.servers)),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            carried: Vec::new(),
            suspects: Vec::new(),
            marks: None,
        }
    });

    let reporting = match config.reporting.as_ref().filter(|r| r.enabled) {
        Some(r) => {
            let webhook = Webhook::new(r).context("[reporting]")?;
            tracing::info!("reports go to {}", webhook.shown());
            let queue = ReportQueue::new(&r.events, r.queue_capacity, r.max_batch);
            Some((webhook, queue))
        }
        None => None,
    };

    // Load the program sized from the config and attach it everywhere (or
    // nowhere: a failed attach drops the links already made).
    let caps = Capacities {
        drop: config.limits.drop_max_entries,
        ignore: config.limits.ignore_max_entries,
        tags: config.limits.max_tags,
    };
    if !privileges::has_effective(privileges::CAP_PERFMON) {
        tracing::warn!(
            "CAP_PERFMON is missing: the verifier adds speculation barriers to the XDP \
             program, which then costs 1.5 to 2.5 times as much per packet; give couic \
             CAP_PERFMON (dropped with the others once loaded)"
        );
    }
    let loaded = bpf::load(caps)?;
    let mut firewall = Firewall::new(loaded.maps, caps);

    // Fill, then attach: the durable entries and the set files are in the
    // maps before the program sees a packet.
    let now = SystemClock.now();
    if config.state.durable {
        let dir = layout.state_dir();
        let mut opened = journal::open(
            &dir,
            layout.owner,
            Options::default(),
            now,
            cli.salvage_state,
        )
        .context("Cannot open the state store")?;
        let deleted = std::mem::take(&mut opened.replayed.live.deleted);
        let restored = firewall
            .restore(opened.replayed.live.into_puts())
            .context("Cannot put back the durable entries")?;
        tracing::info!("{restored} durable entries put back from {}", dir.display());
        firewall.set_journal(opened.journal);
        if let Some(fleet) = fleet.as_mut() {
            // Read once the state is this couic's (its lock taken).
            fleet.carried = carried_deletes(&dir);
            fleet.suspects = deleted.into_iter().collect();
            fleet.marks = Some(Marks::kept_in(dir.clone()));
        } else {
            // Entries made while `[fleet]` is off are stamped without the
            // mark's floor: the mark says nothing of them, so it goes.
            fleet::synced::forget(&dir);
        }
    }
    let target = couic::sets::load_target(&layout.root.join("sets"), layout.owner)
        .context("Failed to load sets")?;
    let (loaded_sets, _) = firewall.reload_sets(&target, now);
    for (policy, c) in loaded_sets.context("Failed to load sets")? {
        tracing::info!("sets loaded: policy={policy}, entries={}", c.created);
    }

    let pins = config.state.pin.then(|| Pins::new(config.pin_dir()));
    let links = match &pins {
        Some(pins) => pins.attach(&loaded.program, &config.ifaces, config.operation_mode)?,
        None => xdp::attach_all(&loaded.program, &config.ifaces, config.operation_mode)?,
    };
    for link in &links {
        tracing::info!(
            "XDP program attached to interface: {} (mode: {})",
            link.iface,
            link.mode
        );
    }

    // API clients: a bad file stops startup, naming the file and why.
    let client_files = ClientFiles::new(layout.clients_dir(), layout.owner);
    let (clients, created) =
        rbac::load_or_init(&client_files).context("Failed to instantiate RBAC service")?;
    if let Some(path) = created {
        tracing::info!("Client file created: {}", path.display());
    }
    // The socket is a handle too: bound and given to user:group while
    // couic may still chown.
    let (socket, listener) = SocketFile::bind(&config.server.socket, layout.owner)
        .context("Failed to bind the API socket")?;

    // Every kernel handle is taken: give up every capability.
    privileges::drop_all().context("Drop all capabilities")?;
    Ok(Acquired {
        reporting,
        peering,
        fleet,
        firewall,
        links,
        pins,
        clients,
        client_files,
        socket,
        listener,
    })
}

fn run(layout: Layout, acquired: Acquired, entry_lines: u32) -> anyhow::Result<()> {
    let Acquired {
        reporting,
        peering,
        fleet,
        firewall,
        links,
        pins,
        clients,
        client_files,
        socket,
        listener,
    } = acquired;
    let system = System::new();
    system.block_on(async move {
        let clock: SharedClock = Arc::new(SystemClock);
        let writer_arbiter = Arbiter::new();
        let report_counters = Arc::new(ReportCounters::default());
        let reporter = reporting.map(|(webhook, queue)| ReporterParts {
            sink: Arc::new(webhook),
            queue,
            tick: couic::actors::reporter::TICK,
            backoff: Backoff::default(),
            counters: report_counters.clone(),
        });
        let peer_counters: Vec<Arc<PeerCounters>> =
            peering.iter().map(|p| p.counters.clone()).collect();
        let fleet_counters = fleet.as_ref().map(|f| f.counters.clone());
        let Actors {
            writer,
            reporter,
            senders_arbiter,
            fleet,
            ..
        } = actors::start(
            &writer_arbiter.handle(),
            firewall,
            clock.clone(),
            reporter,
            peering,
            fleet,
            Vec::new(),
        );

        // The set files were applied before attaching; reloads come later.
        let sets = SetReloader::new(
            Sets::new(layout.root.join("sets"), layout.owner),
            writer.clone(),
        );

        let mut state = AppState::new(writer.clone(), clients, client_files, clock)
            .with_sets(sets)
            .with_entry_log_budget(entry_lines);
        if reporter.is_some() {
            state = state.with_reports(report_counters);
        }
        state = state.with_peers(peer_counters);
        if let Some(counters) = fleet_counters {
            state = state.with_fleet(counters);
        }
        let state = actix_web::web::Data::new(state);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let server = api::serve(listener, state.clone(), workers)
            .context("Failed to start the API server")?;
        let handle = server.handle();
        let mut serving = actix_rt::spawn(server);
        tracing::info!("API listening on {}", socket.path().display());

        let outcome = tokio::select! {
            _ = wait_for_signal() => Ok(()),
            ended = &mut serving => Err(anyhow::anyhow!("the API server stopped: {ended:?}")),
        };
        tracing::info!("shutting down");
        // In-flight requests are answered, then the socket file goes.
        handle.stop(true).await;
        state.entry_log.finish();
        drop(socket);
        // What is queued for the webhook goes now, within a bound: the
        // last changes' events first.
        let _ = writer.send(Deliver).await;
        if let Some(reporter) = reporter {
            if let Ok(sent) = reporter.send(Flush).await {
                tracing::info!("sent {sent} queued reports before stopping");
            }
        }
        if let Some((fleet, arbiter)) = fleet {
            if let Ok(left) = fleet.send(FleetFlush).await {
                if left.waiting == 0 {
                    tracing::info!("fleet: every change of this node is in the bucket");
                } else {
                    let kept = match left.deletes.is_empty() {
                        true => Ok(()),
                        false => fleet::carried::save(&layout.state_dir(), &left.deletes),
                    };
                    tracing::warn!(
                        "fleet: {} changes of this node not written to the bucket: the next \
                         start writes the entries again, and the {} deletes ({})",
                        left.waiting,
                        left.deletes.len(),
                        match kept {
                            Ok(()) => "kept in the state directory".to_string(),
                            Err(e) => format!("lost: {e}"),
                        }
                    );
                }
            }
            arbiter.stop();
        }
        writer_arbiter.stop();
        if let Some(arbiter) = senders_arbiter {
            arbiter.stop();
        }
        outcome
    })?;
    let pinned = links.iter().any(|l| l.pinned);
    drop(links);
    match pins {
        Some(pins) if pinned => tracing::info!(
            "XDP program left attached with the last rules (pinned in {}): \
             `couic --detach` removes it",
            pins.dir().display()
        ),
        _ => tracing::info!("XDP program detached"),
    }
    Ok(())
}

/// The fleet's deletes kept from the last run, their file removed.
fn carried_deletes(state: &std::path::Path) -> Vec<couic::fleet::local::FleetKey> {
    match fleet::carried::take(state) {
        Ok((keys, bad)) => {
            if !keys.is_empty() || bad > 0 {
                tracing::info!(
                    "fleet: {} deletes kept from the last run queued again ({bad} bad lines \
                     skipped)",
                    keys.len()
                );
            }
            keys
        }
        Err(e) => {
            tracing::warn!("fleet: the deletes kept from the last run cannot be read: {e}");
            Vec::new()
        }
    }
}

/// Large buffers (bulk request bodies and their per-item vectors, the
/// store's tables as they grow) go straight to mmap and back to the kernel
/// when freed. glibc's default raises that threshold as big blocks are
/// freed, after which they stay in the heap: tens of MB of RSS kept after a
/// few bulk loads.
fn keep_large_buffers_off_the_heap() {
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// SIGTERM and SIGINT stay blocked (pending) from the start of `main` until
/// the runtime handles them: one sent during startup then stops couic cleanly
/// instead of killing it half-started. Threads inherit the blocked mask.
fn hold_stop_signals(how: libc::c_int) {
    // SAFETY: the set is initialised by sigemptyset before use and lives
    // across the calls; pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    // Handlers are in place: let a signal held since startup through.
    hold_stop_signals(libc::SIG_UNBLOCK);
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
