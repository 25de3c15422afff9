//! The real `couic` binary and the loader: attach and detach on a veth in
//! a namespace made by the test, errors that name the interface and mode,
//! and loading with CAP_BPF + CAP_NET_ADMIN only.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use couic::bpf::{self, Capacities};
use couic::config::OperationMode;
use couic::privileges::{CAP_BPF, CAP_NET_ADMIN};
use couic::xdp;

const COUIC: &str = env!("CARGO_BIN_EXE_couic");

/// A working directory with a config attaching to `ifaces` in `mode`.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup(ifaces: &[&str], mode: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let list: Vec<String> = ifaces.iter().map(|i| format!("\"{i}\"")).collect();
    let text = format!(
        "ifaces = [{}]\noperation_mode = \"{mode}\"\nworking_dir = \"{}\"\nuser = \"root\"\ngroup = \"root\"\n\
         [server]\nsocket = \"{}\"\n[limits]\ndrop_max_entries = 1024\nignore_max_entries = 1024\n",
        list.join(", "),
        work.display(),
        dir.path().join("couic.sock").display(),
    );
    let config = dir.path().join("couic.toml");
    fs::write(&config, text).unwrap();
    Setup { dir, config }
}

/// `couic -c <config>` inside `ns`, optionally under `setpriv` with only
/// the given capabilities in the bounding set; output goes to a file.
fn spawn(ns: &Netns, config: &Path, log: &Path, only_caps: Option<&str>) -> Child {
    let out = fs::File::create(log).unwrap();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path()));
    if let Some(caps) = only_caps {
        cmd.args([
            "setpriv",
            &format!("--bounding-set=-all,{caps}"),
            "--inh-caps=-all",
            "--",
        ]);
    }
    cmd.arg(COUIC)
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd.spawn().expect("spawn couic")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("couic did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the child on drop, so a failed assertion leaves no daemon behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The capability sets of `pid` (`CapBnd`, `CapEff`, ...) from /proc.
fn cap_mask(pid: u32, set: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(set)).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

/// The pid of the `couic` process started by `child` (nsenter and setpriv
/// exec into it, so it is the same process).
fn couic_started(child: &Child, log: &Path) -> bool {
    let exe = fs::read_link(format!("/proc/{}/exe", child.id())).unwrap_or_default();
    exe.ends_with("couic")
        && fs::read_to_string(log)
            .unwrap_or_default()
            .contains("attached")
}

#[test]
fn missing_interface_is_named_and_nothing_stays_attached() {
    let pair = VethPair::new();
    let s = setup(&[&pair.rx_if, "nosuch0"], "native");
    let log = s.dir.path().join("out.log");
    let mut child = spawn(&pair.rx, &s.config, &log, None);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let out = fs::read_to_string(&log).unwrap();
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
    let s = setup(&[&pair.rx_if], "offloaded");
    let log = s.dir.path().join("out.log");
    let mut child = spawn(&pair.rx, &s.config, &log, None);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let out = fs::read_to_string(&log).unwrap();
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
fn daemon_attaches_with_bpf_and_net_admin_only_and_detaches_on_sigterm() {
    let pair = VethPair::new();
    let s = setup(&[&pair.rx_if], "auto");
    let log = s.dir.path().join("out.log");
    let mut child = Running(spawn(&pair.rx, &s.config, &log, Some("+bpf,+net_admin")));
    let started = wait_until(Duration::from_secs(20), || {
        couic_started(&child.0, &log) || child.0.try_wait().unwrap().is_some()
    });
    let out = fs::read_to_string(&log).unwrap();
    assert!(
        started && child.0.try_wait().unwrap().is_none(),
        "couic exited: {out}"
    );
    assert_eq!(
        cap_mask(child.0.id(), "CapBnd:"),
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

    // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child.0, Duration::from_secs(20));
    let out = fs::read_to_string(&log).unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {out}");
    assert!(!pair.rx.has_xdp(&pair.rx_if), "detached on exit");
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
