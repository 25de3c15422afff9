//! Network namespaces and veth pairs made by a test, removed when their
//! guards drop (deleting a namespace deletes the interfaces in it), even
//! when the test panics; UDP sent and counted inside them.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- names

/// A name unique to this process and call, short enough for an interface
/// (15 bytes): `<prefix><pid mod 10^5><counter>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "{name} is too long for an interface");
    name
}

// ---------------------------------------------------------------- commands

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------- namespaces

/// A network namespace under /run/netns, deleted on drop (which also
/// deletes the interfaces inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a fresh thread that has entered this namespace, so the
    /// calling thread (and the rest of the test process) stays where it was.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns takes a valid fd that lives across the call; it
            // only changes the network namespace of this thread.
            let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread inside the namespace panicked")
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The MAC address of `iface` in this namespace.
    pub fn mac(&self, iface: &str) -> String {
        let out = self.ip(&["-o", "link", "show", "dev", iface]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .expect("an Ethernet interface");
        words.next().expect("a MAC address").to_string()
    }

    /// Whether an XDP program is attached to `iface` in this namespace.
    pub fn has_xdp(&self, iface: &str) -> bool {
        let out = self.ip(&["-d", "link", "show", "dev", iface]);
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: `tx` (sender) and `rx` (receiver,
/// where couic attaches), with IPv4 and IPv6 addresses on both ends.
pub struct VethPair {
    pub tx: Netns,
    pub rx: Netns,
    pub tx_if: String,
    pub rx_if: String,
}

pub const TX_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const RX_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const TX_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
pub const RX_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);

impl VethPair {
    pub fn new() -> Self {
        let tx = Netns::new("cts");
        let rx = Netns::new("ctr");
        let tx_if = unique_name("vs");
        let rx_if = unique_name("vr");
        run(
            "ip",
            &[
                "link", "add", &tx_if, "netns", &tx.name, "type", "veth", "peer", "name", &rx_if,
                "netns", &rx.name,
            ],
        );
        for (ns, ifname, v4, v6) in [(&tx, &tx_if, TX_V4, TX_V6), (&rx, &rx_if, RX_V4, RX_V6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            ns.ip(&["link", "set", "dev", ifname, "up"]);
            ns.ip(&["link", "set", "dev", "lo", "up"]);
        }
        // Permanent neighbours: no ARP or ND traffic of its own, so the
        // counters see exactly the packets a test sends, and a drop rule on
        // the sender cannot starve neighbour resolution.
        let tx_mac = tx.mac(&tx_if);
        let rx_mac = rx.mac(&rx_if);
        for (ns, ifname, mac, v4, v6) in [
            (&tx, &tx_if, &rx_mac, RX_V4, RX_V6),
            (&rx, &rx_if, &tx_mac, TX_V4, TX_V6),
        ] {
            let (v4, v6) = (v4.to_string(), v6.to_string());
            ns.ip(&[
                "neigh",
                "replace",
                &v4,
                "lladdr",
                mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ]);
            ns.ip(&[
                "-6",
                "neigh",
                "replace",
                &v6,
                "lladdr",
                mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ]);
        }
        VethPair {
            tx,
            rx,
            tx_if,
            rx_if,
        }
    }
}

impl Default for VethPair {
    fn default() -> Self {
        Self::new()
    }
}

/// A UDP socket bound in the receiving namespace, counting datagrams.
pub struct Receiver {
    socket: UdpSocket,
}

impl Receiver {
    pub fn bind(ns: &Netns, addr: SocketAddr) -> Self {
        let socket = ns.enter(move || UdpSocket::bind(addr).expect("bind receiver"));
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Receiver { socket }
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Reads until `expected` datagrams arrived or nothing came for 200 ms
    /// (after at most `patience`); returns how many arrived.
    pub fn count(&self, expected: usize, patience: Duration) -> usize {
        let deadline = Instant::now() + patience;
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while got < expected && Instant::now() < deadline {
            if self.socket.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
        // Anything that still trickles in counts too.
        while self.socket.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    }
}

/// Sends `count` UDP datagrams of `len` bytes from the sending namespace,
/// from `from` (an address of the sender) to `to`.
pub fn send_udp(ns: &Netns, from: SocketAddr, to: SocketAddr, count: usize, len: usize) {
    ns.enter(move || {
        let socket = UdpSocket::bind(from).expect("bind sender");
        let payload = vec![0x5a; len];
        for _ in 0..count {
            socket.send_to(&payload, to).expect("send");
        }
    });
}
