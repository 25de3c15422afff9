//! Figure (b): packets per second handled on a veth pair between two
//! namespaces. The generator sends XDP frames into the sending veth; the
//! receiving veth runs couic in native XDP, or, for comparison, no XDP and
//! iptables raw + ipset holding the same rules.
//!
//! The generator runs on CPU 0. The receiving veth uses threaded NAPI, and
//! its NAPI kthread is pinned to CPU 1, so the receiver has a core of its
//! own (without it, veth_xdp_xmit schedules the peer's NAPI on the sending
//! CPU and both share one core). The kthread's run time over the frames it
//! handled is the receiver's CPU cost per packet.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use couic::bpf::{Counter, STAT_SLOTS};
use couic::config::OperationMode;
use couic::xdp;
use couic_common::Cidr;

use crate::gen::{Generator, Link};
use crate::kernel;
use crate::report::{Figure, Goal, Section};
use crate::rules::{self, Blocklist, Family, Rng};
use crate::Settings;

const TX_NS: &str = "couicbench-tx";
const RX_NS: &str = "couicbench-rx";
const TX_IF: &str = "cbtx0";
const RX_IF: &str = "cbrx0";
const TX_V4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const RX_V4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// The ipsets of the iptables comparison, one per rule set.
const IPSET_SMALL: &str = "couicbench-10k";
const IPSET_LARGE: &str = "couicbench-262k";
/// Frames of a round's first live test run call. The next call is sized
/// from its pace to fill the rest of the round: each call ends in the
/// kernel with a synchronize_rcu() (its page pool still has frames in
/// flight on the receiving CPU), a pause of tens of ms that small calls
/// would repeat every few ms of traffic.
const FIRST_CHUNK: u32 = 262_144;
/// Upper bound of a call's frames.
const MAX_CHUNK: u32 = 1 << 30;
const HIT_PERCENT: usize = 90;
/// The generator's CPU.
const GEN_CPU: usize = 0;
/// The CPU the receiving veth's NAPI kthread is pinned to.
const RX_CPU: usize = 1;
/// SCHED_FIFO priority of the NAPI kthread: that of threaded IRQ handlers.
/// Run in softirq (the default), the receive path preempts tasks; a
/// SCHED_OTHER kthread would share CPU 1 with whatever else runs there.
const RX_PRIORITY: i32 = 50;
/// SCHED_FIFO priority of the generator thread while it sends, so that
/// other load on CPU 0 does not set the rate (nice values would not do:
/// with autogroups they only weigh within the bench's session).
const GEN_PRIORITY: i32 = 1;

fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The two namespaces and the veth pair; removed on drop.
struct Lab;

impl Lab {
    fn new() -> anyhow::Result<Self> {
        for ns in [TX_NS, RX_NS] {
            let _ = sh("ip", &["netns", "del", ns]);
        }
        let lab = Lab;
        sh("ip", &["netns", "add", TX_NS])?;
        sh("ip", &["netns", "add", RX_NS])?;
        sh(
            "ip",
            &[
                "link", "add", TX_IF, "netns", TX_NS, "type", "veth", "peer", "name", RX_IF,
                "netns", RX_NS,
            ],
        )?;
        for (ns, ifname, addr) in [(TX_NS, TX_IF, TX_V4), (RX_NS, RX_IF, RX_V4)] {
            sh(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    ifname,
                ],
            )?;
            sh("ip", &["-n", ns, "link", "set", "dev", ifname, "up"])?;
            sh("ip", &["-n", ns, "link", "set", "dev", "lo", "up"])?;
        }
        // Without GRO (or an XDP program) on the receiving veth, redirected
        // frames are silently lost.
        in_ns(RX_NS, None, || set_gro(RX_IF))?;
        // Threaded NAPI: the receive path runs in a kthread that can be
        // pinned, instead of in softirq on the CPU that queued the frames
        // (the generator's). The NAPI exists now that GRO is on; before,
        // the write fails. `ip netns exec` remounts /sys for the namespace.
        in_rx(&[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{RX_IF}/threaded"),
        ])
        .context("enable threaded NAPI on the receiving veth")?;
        Ok(lab)
    }

    fn mac(ns: &str, ifname: &str) -> anyhow::Result<[u8; 6]> {
        let text = sh("ip", &["-n", ns, "-j", "link", "show", "dev", ifname])?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let mac = json[0]["address"].as_str().context("no MAC address")?;
        let mut out = [0u8; 6];
        for (o, part) in out.iter_mut().zip(mac.split(':')) {
            *o = u8::from_str_radix(part, 16)?;
        }
        Ok(out)
    }

    fn rx_packets() -> anyhow::Result<u64> {
        let text = sh(
            "ip",
            &["-n", RX_NS, "-s", "-j", "link", "show", "dev", RX_IF],
        )?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        json[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .context("no rx packet counter")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [TX_NS, RX_NS] {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`, pinned to `cpu` if given.
fn in_ns<T: Send>(
    ns: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let file = File::open(&path).with_context(|| path.clone())?;
                // SAFETY: a valid namespace fd for the call; only this
                // thread changes namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {path}: {}", std::io::Error::last_os_error());
                }
                if let Some(cpu) = cpu {
                    pin(cpu)?;
                }
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

fn pin(cpu: usize) -> anyhow::Result<()> {
    set_affinity(0, cpu)
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
fn set_affinity(tid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({tid}, CPU {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Turns GRO on (ETHTOOL_SGRO through SIOCETHTOOL) for `ifname` in this
/// thread's namespace.
fn set_gro(ifname: &str) -> anyhow::Result<()> {
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 1,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `req` is an ifreq whose data points at a live ethtool_value;
    // both outlive the call.
    let ret = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req as *mut IfReq) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd was returned by socket() above and is closed once.
    unsafe { libc::close(fd) };
    if ret != 0 {
        bail!("enable GRO on {ifname}: {err}");
    }
    Ok(())
}

/// The NAPI kthreads of the receiving veth (`napi/<ifname>-<id>`, children
/// of kthreadd), pinned to [`RX_CPU`]. Looked up again each round: a NAPI
/// that is deleted and added again gets a new thread.
fn napi_threads() -> anyhow::Result<Vec<i32>> {
    let prefix = format!("napi/{RX_IF}-");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if !comm.starts_with(&prefix) {
            continue;
        }
        if stat_field(pid, 4)? != 2 {
            continue; // not a kernel thread
        }
        set_affinity(pid, RX_CPU)?;
        crate::set_scheduler(pid, libc::SCHED_FIFO, RX_PRIORITY)?;
        pids.push(pid);
    }
    if pids.is_empty() {
        bail!(
            "no NAPI kthread {prefix}* for the receiving veth: threaded NAPI is off, so the \
             receiver would share the generator's CPU"
        );
    }
    Ok(pids)
}

/// Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat, from field 3 on.
fn stat_field(pid: i32, n: usize) -> anyhow::Result<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it cannot.
    let rest = text
        .rsplit_once(')')
        .with_context(|| format!("/proc/{pid}/stat"))?
        .1;
    rest.split_whitespace()
        .nth(n - 3)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("field {n} of /proc/{pid}/stat"))
}

/// Nanoseconds `pid` has run on a CPU (/proc/<pid>/schedstat).
fn run_ns(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("/proc/{pid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("/proc/{pid}/schedstat"))
}

/// What a configuration gave over its rounds.
#[derive(Clone, Copy)]
struct Rate {
    /// Best frames handled per second, in Mpps.
    mpps: f64,
    /// Lowest receiver CPU time per handled frame (NAPI kthread), in ns.
    rx_ns: f64,
}

impl Rate {
    const NONE: Rate = Rate {
        mpps: 0.0,
        rx_ns: f64::INFINITY,
    };

    fn keep_best(&mut self, round: Rate) {
        self.mpps = self.mpps.max(round.mpps);
        self.rx_ns = self.rx_ns.min(round.rx_ns);
    }
}

/// What filters the receiving veth while a configuration is measured.
enum Filter {
    /// couic in native XDP, attached for each round and detached after.
    Couic(Box<kernel::Program>),
    /// No XDP program; one iptables rule in the raw PREROUTING chain
    /// matching this ipset, added for each round and deleted after.
    Iptables(&'static str),
    /// Nothing: every frame goes up the stack.
    Stack,
}

/// One configuration of the receiver, and the traffic sent at it.
struct Config<'a> {
    name: &'static str,
    filter: Filter,
    generator: &'a Generator,
}

impl Config<'_> {
    /// One round with the filter in place.
    fn round(&self, settings: &Settings) -> anyhow::Result<Rate> {
        match &self.filter {
            Filter::Couic(program) => {
                let attached = in_ns(RX_NS, None, || {
                    Ok(xdp::attach(&program.program, RX_IF, OperationMode::Native)?)
                })?;
                let rate = round(self.generator, settings);
                drop(attached);
                rate
            }
            Filter::Iptables(set) => {
                let _rule = IptablesRule::add(set)?;
                round(self.generator, settings)
            }
            Filter::Stack => round(self.generator, settings),
        }
    }

    /// The share of handled frames couic dropped, over all its rounds.
    fn dropped_share(&self) -> anyhow::Result<f64> {
        let Filter::Couic(program) = &self.filter else {
            bail!("only couic counts what it drops");
        };
        let stats: [Counter; STAT_SLOTS] = program.maps.read_stats()?;
        let (dropped, passed) = (stats[1].packets as f64, stats[2].packets as f64);
        Ok(dropped / (dropped + passed).max(1.0))
    }
}

/// Rates of `configs`, measured round after round in turn (one round of
/// each, then the next round of each), so that a busy spell of the
/// machine falls on all of them rather than on whichever ran then. Each
/// keeps its best round.
fn measure(configs: &[Config], settings: &Settings) -> anyhow::Result<Vec<Rate>> {
    let mut best = vec![Rate::NONE; configs.len()];
    for round in 0..settings.rounds {
        for (config, best) in configs.iter().zip(&mut best) {
            let rate = config.round(settings)?;
            println!(
                "  round {}/{}: {:<40} {:5.2} Mpps {:6.0} ns/pkt",
                round + 1,
                settings.rounds,
                config.name,
                rate.mpps,
                rate.rx_ns
            );
            best.keep_best(rate);
        }
    }
    Ok(best)
}

/// One round of `seconds` of traffic: frames the receiving veth handled per
/// second, and the NAPI kthread's run time per frame. Checks the kthread
/// ran on [`RX_CPU`] only.
fn round(generator: &Generator, settings: &Settings) -> anyhow::Result<Rate> {
    let threads = napi_threads()?;
    let cpu = |pids: &[i32]| -> anyhow::Result<u64> { pids.iter().map(|&p| run_ns(p)).sum() };
    let cpu_before = cpu(&threads)?;
    let before = Lab::rx_packets()?;
    let start = Instant::now();
    in_ns(TX_NS, Some(GEN_CPU), || {
        crate::set_scheduler(0, libc::SCHED_FIFO, GEN_PRIORITY)?;
        let mut chunk = FIRST_CHUNK;
        loop {
            let call = Instant::now();
            generator.send(chunk)?;
            let (done, took) = (start.elapsed(), call.elapsed());
            let left = settings.seconds - done.as_secs_f64();
            if left <= 0.0 {
                return Ok(());
            }
            // At the last call's pace, with a floor for a call that ended
            // early, e.g. in a long synchronize_rcu().
            let pace = f64::from(chunk) / took.as_secs_f64().max(1e-3);
            chunk = (pace * left).clamp(f64::from(FIRST_CHUNK), f64::from(MAX_CHUNK)) as u32;
        }
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let handled = Lab::rx_packets()? - before;
    let cpu_used = cpu(&threads)? - cpu_before;
    for &pid in &threads {
        let last_cpu = stat_field(pid, 39)?;
        if last_cpu != RX_CPU as i64 {
            bail!("NAPI kthread {pid} last ran on CPU {last_cpu}, not {RX_CPU}");
        }
    }
    if handled == 0 || cpu_used == 0 {
        bail!(
            "round handled {handled} frames with {cpu_used} ns of NAPI kthread time: the \
             receive path did not run in the pinned kthread"
        );
    }
    Ok(Rate {
        mpps: handled as f64 / elapsed / 1e6,
        rx_ns: cpu_used as f64 / handled as f64,
    })
}

/// Runs `args` in the receiving namespace.
fn in_rx(args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["netns", "exec", RX_NS];
    full.extend_from_slice(args);
    sh("ip", &full)
}

/// Creates ipset `name` (hash:net) holding `list` in the receiving
/// namespace; it goes with the namespace.
fn load_ipset(name: &str, list: &Blocklist) -> anyhow::Result<()> {
    let mut restore = format!("create {name} hash:net family inet hashsize 65536 maxelem 400000\n");
    for cidr in &list.rules {
        restore.push_str(&format!("add {name} {}\n", cidr_text(cidr)));
    }
    let file = std::env::temp_dir().join(format!("{name}.ipset"));
    std::fs::write(&file, restore)?;
    let loaded = in_rx(&[
        "ipset",
        "restore",
        "-file",
        file.to_str().context("temp path")?,
    ]);
    let _ = std::fs::remove_file(&file);
    loaded.map(drop)
}

/// The iptables rule dropping sources in an ipset; deleted on drop.
struct IptablesRule(&'static str);

impl IptablesRule {
    fn args(op: &'static str, set: &'static str) -> [&'static str; 12] {
        [
            "iptables",
            "-t",
            "raw",
            op,
            "PREROUTING",
            "-m",
            "set",
            "--match-set",
            set,
            "src",
            "-j",
            "DROP",
        ]
    }

    fn add(set: &'static str) -> anyhow::Result<Self> {
        in_rx(&Self::args("-A", set))?;
        Ok(IptablesRule(set))
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let _ = in_rx(&Self::args("-D", self.0));
    }
}

fn cidr_text(cidr: &Cidr) -> String {
    format!("{}/{}", cidr.addr(), cidr.prefix_len())
}

pub fn run(settings: &Settings) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "veth, native XDP: Mpps handled, couic vs iptables raw + ipset",
        format!(
            "Two namespaces joined by a veth pair. In the sending one, an XDP program run through \
             BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (bench/bpf/gen.bpf.c) redirects 64-byte \
             IPv4/UDP frames into the veth, cycling through {} distinct sources, {HIT_PERCENT} % of them \
             covered by the rules; it runs pinned to CPU {GEN_CPU}. The receiving veth has GRO on and \
             threaded NAPI (`/sys/class/net/<if>/threaded` = 1); its NAPI kthread is pinned to CPU \
             {RX_CPU}, and each round checks that it ran there, so the generator and the receiver each \
             have a core. Both run SCHED_FIFO (the kthread at {RX_PRIORITY}, as threaded IRQ handlers; \
             the generator at {GEN_PRIORITY}), so other load on the machine does not set the figures. \
             couic holds the rules in native XDP; the comparison has no XDP program and one iptables \
             rule in the raw PREROUTING chain matching an ipset hash:net with the same rules. Every \
             program and ipset is loaded first; then the configurations below take turns, one round \
             of {} s each (couic attached, or the iptables rule added, for the round only), {} times \
             over, so that a busy spell of this shared machine falls on all of them. Rate = frames \
             counted by the receiving veth per second, best round (a round is a few live-frames \
             calls; each ends in a synchronize_rcu() in the kernel, while the receiver idles); when \
             the receiver keeps up, the generator sets the rate. Receiver ns/pkt = run time of the \
             NAPI kthread (/proc/<pid>/schedstat) over the frames it handled, lowest round: the \
             whole receive path (XDP, and the stack for frames that pass), the generator left out. \
             Rules: about 90 % /32, the rest /8-/31, mostly /24.",
            settings.sources, settings.seconds, settings.rounds
        ),
    );
    let _lab = Lab::new()?;
    let link = Link {
        ifindex: in_ns(TX_NS, None, || Ok(xdp::ifindex(TX_IF)?))?,
        src_mac: Lab::mac(TX_NS, TX_IF)?,
        dst_mac: Lab::mac(RX_NS, RX_IF)?,
        dst: RX_V4,
    };
    let mut rng = Rng::new(0xbe7c4);
    let small = Blocklist::generate(&mut rng, Family::V4, 10_000);
    let small_traffic = rules::traffic(&mut rng, &small, settings.sources, HIT_PERCENT);
    let large = Blocklist::generate(&mut rng, Family::V4, 262_144);
    let large_traffic = rules::traffic(&mut rng, &large, settings.sources, HIT_PERCENT);
    let everything = Blocklist::single(Family::V4, "0.0.0.0/0".parse()?);

    let small_gen = Generator::load(&link, &small_traffic)?;
    let large_gen = Generator::load(&link, &large_traffic)?;
    load_ipset(IPSET_SMALL, &small)?;
    load_ipset(IPSET_LARGE, &large)?;
    let couic = |list: &Blocklist| -> anyhow::Result<Filter> {
        Ok(Filter::Couic(Box::new(kernel::load(&list.rules)?)))
    };
    let configs = [
        Config {
            name: "couic, one 0.0.0.0/0 rule",
            filter: couic(&everything)?,
            generator: &small_gen,
        },
        Config {
            name: "couic, 10,000 rules",
            filter: couic(&small)?,
            generator: &small_gen,
        },
        Config {
            name: "couic, 262,144 rules",
            filter: couic(&large)?,
            generator: &large_gen,
        },
        Config {
            name: "iptables + ipset, 10,000 rules",
            filter: Filter::Iptables(IPSET_SMALL),
            generator: &small_gen,
        },
        Config {
            name: "iptables + ipset, 262,144 rules",
            filter: Filter::Iptables(IPSET_LARGE),
            generator: &large_gen,
        },
        Config {
            name: "no filter (stack only)",
            filter: Filter::Stack,
            generator: &large_gen,
        },
    ];
    let [ceiling, couic_small, couic_large, ipt_small, ipt_large, stack] =
        measure(&configs, settings)?[..]
    else {
        unreachable!("one rate per configuration");
    };
    let share_small = configs[1].dropped_share()?;
    let share_large = configs[2].dropped_share()?;

    section.push(Figure::plain(
        "couic, one 0.0.0.0/0 rule: all dropped (ceiling)",
        "Mpps",
        ceiling.mpps,
    ));
    section.push(Figure::plain(
        "receiver CPU, couic, one 0.0.0.0/0 rule",
        "ns/pkt",
        ceiling.rx_ns,
    ));
    section.push(Figure::plain(
        "couic, 10,000 rules",
        "Mpps",
        couic_small.mpps,
    ));
    section.push(Figure::ratio(
        "couic, 262,144 rules",
        "Mpps",
        couic_large.mpps,
        couic_small.mpps,
        "couic, 10,000",
        Goal::AtLeast(0.8),
    ));
    section.push(Figure::plain(
        "receiver CPU, couic, 10,000 rules",
        "ns/pkt",
        couic_small.rx_ns,
    ));
    section.push(Figure::plain(
        "receiver CPU, couic, 262,144 rules",
        "ns/pkt",
        couic_large.rx_ns,
    ));
    section.push(Figure::ratio(
        "couic vs iptables + ipset, 10,000 rules",
        "Mpps",
        couic_small.mpps,
        ipt_small.mpps,
        "iptables",
        Goal::AtLeast(3.0),
    ));
    section.push(Figure::ratio(
        "couic vs iptables + ipset, 262,144 rules",
        "Mpps",
        couic_large.mpps,
        ipt_large.mpps,
        "iptables",
        Goal::AtLeast(3.0),
    ));
    // Cost ratios read the other way round: iptables' cost over couic's.
    section.push(Figure::ratio(
        "receiver CPU, iptables + ipset vs couic, 10,000 rules",
        "ns/pkt",
        ipt_small.rx_ns,
        couic_small.rx_ns,
        "couic",
        Goal::AtLeast(3.0),
    ));
    section.push(Figure::ratio(
        "receiver CPU, iptables + ipset vs couic, 262,144 rules",
        "ns/pkt",
        ipt_large.rx_ns,
        couic_large.rx_ns,
        "couic",
        Goal::AtLeast(3.0),
    ));
    section.push(Figure::plain(
        "no filter at all (stack only)",
        "Mpps",
        stack.mpps,
    ));
    section.push(Figure::plain(
        "receiver CPU, no filter at all",
        "ns/pkt",
        stack.rx_ns,
    ));
    section.push(Figure::plain(
        "share dropped by couic, 10,000 rules",
        "%",
        share_small * 100.0,
    ));
    section.push(Figure::plain(
        "share dropped by couic, 262,144 rules",
        "%",
        share_large * 100.0,
    ));
    Ok(section)
}
