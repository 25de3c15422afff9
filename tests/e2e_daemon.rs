//! The real `couic` binary and the loader: attach and detach on a veth in
//! a namespace made by the test, errors that name the interface and mode,
//! and loading with CAP_BPF + CAP_NET_ADMIN only.

use std::fs;
use std::path::Path;
use std::time::Duration;

use couic::bpf::{self, Capacities};
use couic::config::OperationMode;
use couic::privileges::{CAP_BPF, CAP_NET_ADMIN};
use couic::xdp;
use couic_testkit::net::VethPair;
use couic_testkit::{status_field, wait_until, Daemon, Spec};

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
/// How long a failing start may take to exit, and a stop to finish.
const EXIT: Duration = Duration::from_secs(20);

/// couic attaching to `ifaces` in `mode`, run inside the receiving
/// namespace of `pair`.
fn spec(pair: &VethPair, ifaces: &[&str], mode: &str) -> Spec {
    Spec::new(COUIC)
        .attach(ifaces, mode)
        .netns(pair.rx.path())
        .env("RUST_LOG", "info")
}

/// The capability sets of `pid` (`CapBnd`, `CapEff`, ...) from /proc.
fn cap_mask(pid: u32, set: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, set), 16).unwrap()
}

/// Whether the `couic` process (nsenter and setpriv exec into it, so it
/// has the pid they were spawned with) has attached.
fn couic_started(d: &Daemon) -> bool {
    let exe = fs::read_link(format!("/proc/{}/exe", d.pid())).unwrap_or_default();
    exe.ends_with("couic") && d.log().contains("attached")
}

/// couic spawned from `spec` and attached, with its log so far.
fn started(spec: Spec) -> (Daemon, String) {
    let mut d = Daemon::new(spec).unwrap();
    d.spawn().unwrap();
    let started = wait_until(EXIT, || couic_started(&d) || d.exited().unwrap().is_some());
    let out = d.log();
    assert!(
        started && d.exited().unwrap().is_none(),
        "couic exited: {out}"
    );
    (d, out)
}

#[test]
fn missing_interface_is_named_and_nothing_stays_attached() {
    let pair = VethPair::new();
    let mut d = Daemon::new(spec(&pair, &[&pair.rx_if, "nosuch0"], "native")).unwrap();
    let (status, out) = d.run_to_exit(EXIT).unwrap();
    assert!(!status.success(), "couic must fail: {out}");
    assert!(
        out.contains("nosuch0"),
        "the error names the interface: {out}"
    );
    assert!(
        !pair.rx.has_xdp(&pair.rx_if),
        "the first interface was released"
    );
}

#[test]
fn refused_attach_names_interface_and_mode() {
    let pair = VethPair::new();
    // veth has no hardware offload.
    let mut d = Daemon::new(spec(&pair, &[&pair.rx_if], "offloaded")).unwrap();
    let (status, out) = d.run_to_exit(EXIT).unwrap();
    assert!(!status.success(), "couic must fail: {out}");
    assert!(
        out.contains(&pair.rx_if) && out.contains("offloaded"),
        "{out}"
    );
    assert!(!pair.rx.has_xdp(&pair.rx_if));
    assert!(
        !out.contains("CAP_PERFMON"),
        "root holds CAP_PERFMON: no warning: {out}"
    );
}

#[test]
fn daemon_attaches_with_bpf_and_net_admin_only_and_stays_pinned_until_detach() {
    let pair = VethPair::new();
    let spec = spec(&pair, &[&pair.rx_if], "auto").only_caps("+bpf,+net_admin");
    let (mut d, out) = started(spec);
    assert_eq!(
        cap_mask(d.pid(), "CapBnd"),
        (1 << CAP_BPF) | (1 << CAP_NET_ADMIN),
        "couic ran with CAP_BPF + CAP_NET_ADMIN only"
    );
    assert!(
        out.contains(&format!("interface: {} (mode: native)", pair.rx_if)),
        "the mode is logged per interface: {out}"
    );
    assert!(
        out.contains("CAP_PERFMON is missing"),
        "the cost of loading without CAP_PERFMON is said: {out}"
    );
    assert!(pair.rx.has_xdp(&pair.rx_if));

    d.sigterm().unwrap();
    let status = d.wait_exit(EXIT).unwrap();
    let out = d.log();
    assert!(status.success(), "clean exit on SIGTERM: {out}");
    assert!(
        pair.rx.has_xdp(&pair.rx_if),
        "the pinned link keeps filtering after couic stops: {out}"
    );
    assert!(out.contains("`couic --detach` removes it"), "{out}");

    // Stopping for good is explicit.
    let detach = d.detach().unwrap();
    assert!(detach.status.success(), "{detach:?}");
    assert!(!pair.rx.has_xdp(&pair.rx_if), "detached by --detach");
    assert!(
        String::from_utf8_lossy(&detach.stdout).contains("1 pinned XDP link(s) removed"),
        "{detach:?}"
    );
}

/// `[state] bpffs` where no bpffs is mounted: couic filters all the same,
/// unpinned, says why at start, and the program goes with the process.
#[test]
fn without_bpffs_couic_filters_unpinned_and_says_why() {
    let pair = VethPair::new();
    let plain = tempfile::tempdir().unwrap();
    assert!(!couic::pins::is_bpffs(plain.path()));
    let toml = format!("[state]\nbpffs = \"{}\"\n", plain.path().display());
    let (mut d, out) = started(spec(&pair, &[&pair.rx_if], "native").extra(&toml));
    assert!(pair.rx.has_xdp(&pair.rx_if), "filtering: {out}");
    let said = format!("no bpffs is mounted at {}", plain.path().display());
    assert!(out.contains(&said), "{said}: {out}");
    d.sigterm().unwrap();
    assert!(d.wait_exit(EXIT).unwrap().success(), "{}", d.log());
    assert!(
        !pair.rx.has_xdp(&pair.rx_if),
        "an unpinned link goes with couic"
    );
    assert!(
        fs::read_dir(plain.path()).unwrap().next().is_none(),
        "nothing written where bpffs should be"
    );
}

/// The loader alone, on a thread whose capabilities are cut down to
/// CAP_BPF + CAP_NET_ADMIN (capabilities are per thread).
#[test]
fn loader_needs_only_bpf_and_net_admin() {
    let pair = VethPair::new();
    let rx_if = pair.rx_if.clone();
    let result = pair.rx.enter(move || {
        keep_only_caps(&[CAP_BPF, CAP_NET_ADMIN]);
        let loaded = bpf::load(Capacities::default()).map_err(|e| e.to_string())?;
        let link = xdp::attach(&loaded.program, &rx_if, OperationMode::Native)
            .map_err(|e| e.to_string())?;
        // Without CAP_BPF loading must fail, with a message saying why.
        Ok::<_, String>((loaded, link))
    });
    let (_loaded, link) = result.expect("load and attach with two capabilities");
    assert!(pair.rx.has_xdp(&pair.rx_if));
    drop(link);
    assert!(!pair.rx.has_xdp(&pair.rx_if));

    let refused = pair.rx.enter(|| {
        keep_only_caps(&[CAP_NET_ADMIN]);
        bpf::load(Capacities::default())
            .err()
            .map(|e| e.to_string())
    });
    let message = refused.expect("loading without CAP_BPF fails");
    assert!(message.contains("CAP_BPF"), "{message}");
}

/// Sets this thread's effective and permitted capabilities to `caps`.
fn keep_only_caps(caps: &[u32]) {
    couic::privileges::keep_only(caps).expect("capset");
}

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/couic.toml");
    let config = couic::config::Config::load(&path).expect("examples/couic.toml is valid");
    assert_eq!(config.operation_mode, OperationMode::Auto);
    assert_eq!(config.limits.drop_max_entries, 262_144);
}

#[test]
fn no_interface_is_said_at_start() {
    // The packaged config names no interface: couic runs, filters nothing,
    // and its log says where to name one.
    let d = Daemon::start(Spec::new(COUIC).env("RUST_LOG", "info")).unwrap();
    let log = d.log();
    assert!(
        log.contains("filters nothing until one is named in `ifaces` of")
            && log.contains(&d.config().display().to_string()),
        "{log}"
    );
}

#[test]
fn packaged_config_parses_and_attaches_nowhere() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/couic/couic.toml");
    let config = couic::config::Config::load(&path).expect("debian/couic/couic.toml is valid");
    assert!(config.ifaces.is_empty(), "a fresh install attaches nowhere");
    // The directories couic.service makes and lets couic write.
    assert_eq!(config.working_dir, Path::new("/var/lib/couic"));
    assert_eq!(config.logging.unwrap().dir, Path::new("/var/log/couic"));
    assert_eq!(config.server.socket, Path::new("/run/couic/couic.sock"));
    assert_eq!(
        (config.user.as_str(), config.group.as_str()),
        ("couic", "couic")
    );
}
