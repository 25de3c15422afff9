//! End to end with the real `couic` binary: set files loaded at start drop
//! live traffic on a veth in namespaces made by the test; a line added and
//! `POST /v1/sets/reload` drops a new source, the line removed and reloaded
//! lets it through again. A bad set file stops startup, naming file, line
//! and reason.

mod common;

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use couic::dirs::{Layout, Owner};
use couic::rbac::{ClientFiles, DEFAULT_CLIENT};
use couic_common::uds::UdsClient;

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
const BURST: usize = 20;

/// Kills the daemon on drop, so a failed assertion leaves nothing behind
/// (the namespaces go with their own guards).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    layout: Layout,
}

impl Setup {
    fn new(ifaces: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let layout = Layout::prepare(&work, Owner::current()).unwrap();
        let list: Vec<String> = ifaces.iter().map(|i| format!("\"{i}\"")).collect();
        let text = format!(
            "ifaces = [{}]\noperation_mode = \"generic\"\nworking_dir = \"{}\"\nuser = \"root\"\ngroup = \"root\"\n\
             [server]\nsocket = \"{}\"\n[limits]\ndrop_max_entries = 1024\nignore_max_entries = 1024\n",
            list.join(", "),
            work.display(),
            dir.path().join("couic.sock").display(),
        );
        let config = dir.path().join("couic.toml");
        fs::write(&config, text).unwrap();
        Setup {
            dir,
            config,
            layout,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("couic.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("couic.log")
    }

    fn write_set(&self, policy: &str, stem: &str, content: &str) -> PathBuf {
        let path = self
            .layout
            .root
            .join("sets")
            .join(policy)
            .join(format!("{stem}.couic"));
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `couic -c <config>`, in `ns` if given; output to the log file.
    fn spawn(&self, ns: Option<&Netns>) -> Child {
        let out = fs::File::create(self.log()).unwrap();
        let mut cmd = Command::new("nsenter");
        if let Some(ns) = ns {
            cmd.arg(format!("--net={}", ns.path()));
        }
        cmd.arg(COUIC)
            .arg("-c")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        cmd.spawn().expect("spawn couic")
    }

    fn admin_token(&self) -> String {
        let files = ClientFiles::new(self.layout.clients_dir(), self.layout.owner);
        let records = files.load_all().expect("client files");
        let admin = records
            .iter()
            .find(|r| r.name.as_str() == DEFAULT_CLIENT)
            .expect("default client");
        admin.token.to_string()
    }
}

fn request(socket: &Path, token: &str, method: &str, path: &str) -> (u16, String) {
    let mut client = UdsClient::new(socket, Duration::from_secs(10));
    let auth = format!("Bearer {token}");
    let resp = client
        .request(method, path, &[("Authorization", &auth)], None)
        .expect("request");
    (resp.status, resp.text())
}

fn burst(pair: &VethPair, rx: &Receiver, src: IpAddr, dst: IpAddr) -> usize {
    send_udp(
        &pair.tx,
        SocketAddr::new(src, 0),
        SocketAddr::new(dst, rx.port()),
        BURST,
        64,
    );
    rx.count(BURST, Duration::from_secs(1))
}

#[test]
fn set_lines_drop_live_traffic_after_reload_and_stop_after_removal() {
    let pair = VethPair::new();
    let setup = Setup::new(&[&pair.rx_if]);
    // Loaded at start: the sender's IPv6 address.
    setup.write_set("drop", "boot", &format!("# loaded at start\n{TX_V6}/128\n"));
    setup.write_set("drop", "live", "# nothing yet\n");

    let mut daemon = Running(setup.spawn(Some(&pair.rx)));
    let started = wait_until(Duration::from_secs(10), || {
        UdsClient::new(setup.socket(), Duration::from_secs(1))
            .request("GET", "/v1/stats", &[], None)
            .is_ok()
    });
    assert!(
        started,
        "couic did not start: {}",
        fs::read_to_string(setup.log()).unwrap_or_default()
    );
    assert!(daemon.0.try_wait().unwrap().is_none());
    let token = setup.admin_token();

    let rx4 = Receiver::bind(&pair.rx, SocketAddr::new(RX_V4.into(), 0));
    let rx6 = Receiver::bind(&pair.rx, SocketAddr::new(RX_V6.into(), 0));
    let (tx4, tx6): (IpAddr, IpAddr) = (TX_V4.into(), TX_V6.into());
    let (to4, to6): (IpAddr, IpAddr) = (RX_V4.into(), RX_V6.into());
    assert_eq!(
        burst(&pair, &rx6, tx6, to6),
        0,
        "the set loaded at start drops IPv6"
    );
    assert_eq!(
        burst(&pair, &rx4, tx4, to4),
        BURST,
        "IPv4 passes before the reload"
    );

    setup.write_set("drop", "live", &format!("# the sender\n{TX_V4}/32\n"));
    let (status, body) = request(&setup.socket(), &token, "POST", "/v1/sets/reload");
    assert_eq!((status, body.as_str()), (201, r#"{"reload_status":"OK"}"#));
    let (status, body) = request(
        &setup.socket(),
        &token,
        "GET",
        &format!("/v1/drop/{TX_V4}/32"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""tag":"live.couic""#), "{body}");
    assert_eq!(burst(&pair, &rx4, tx4, to4), 0, "dropped after the reload");

    setup.write_set("drop", "live", "");
    let (status, _) = request(&setup.socket(), &token, "POST", "/v1/sets/reload");
    assert_eq!(status, 201);
    assert_eq!(
        burst(&pair, &rx4, tx4, to4),
        BURST,
        "passes once the line is gone"
    );
    assert_eq!(
        burst(&pair, &rx6, tx6, to6),
        0,
        "the other set still applies"
    );

    let log = fs::read_to_string(setup.log()).unwrap();
    assert!(log.contains("sets reload: policy=ignore"), "{log}");
    assert!(
        log.contains("sets reload: policy=drop, updated=0, removed=1, created=0"),
        "{log}"
    );
}

#[test]
fn a_bad_set_file_stops_startup() {
    let setup = Setup::new(&[]);
    setup.write_set("ignore", "office", "10.0.0.0/8");
    let bad = setup.write_set("drop", "typo", "192.0.2.1/32\n192.0.2.300/32\n");
    let mut child = setup.spawn(None);
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let log = fs::read_to_string(setup.log()).unwrap();
    assert!(exited, "couic kept running: {log}");
    assert_eq!(status.code(), Some(1), "{log}");
    let expected = format!(
        "error parsing set: {}. Offending line: 192.0.2.300/32 (line 2: ",
        bad.display()
    );
    assert!(log.contains(&expected), "{log}");
    assert!(!setup.socket().exists(), "nothing served");

    // Wrong mode is fatal too.
    fs::remove_file(&bad).unwrap();
    let open = setup.write_set("drop", "open", "192.0.2.1/32");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = setup.spawn(None);
    assert!(wait_until(Duration::from_secs(10), || child
        .try_wait()
        .unwrap()
        .is_some()));
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let log = fs::read_to_string(setup.log()).unwrap();
    assert!(
        log.contains(&format!(
            "Set file {} has wrong permissions",
            open.display()
        )),
        "{log}"
    );
}
