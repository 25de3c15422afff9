//! The load generator: `bpf/gen.bpf.c` run with BPF_F_TEST_XDP_LIVE_FRAMES,
//! which sends each run's frame into the sending veth, with a new source
//! address from a table every time.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Context as _};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

mod skel {
    #![allow(clippy::all, non_camel_case_types, dead_code, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/gen.skel.rs"));
}

const MAX_SOURCES: usize = 131_072;

pub struct Generator {
    program: ProgramHandle,
    frame: Vec<u8>,
    _sources: MapHandle,
}

/// What the frames look like on the link.
pub struct Link {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst: Ipv4Addr,
}

/// A 64-byte IPv4/UDP template with a zero source and checksum, and the
/// one's-complement sum of its IPv4 header words (read in host order, as
/// the program reads them).
fn template(link: &Link) -> (Vec<u8>, u32) {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&link.dst_mac);
    f[6..12].copy_from_slice(&link.src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].copy_from_slice(&link.dst.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_ne_bytes([w[0], w[1]])))
        .sum();
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes()); // discard: nobody listens
    udp[4..6].copy_from_slice(&30u16.to_be_bytes());
    (f, sum)
}

impl Generator {
    pub fn load(link: &Link, sources: &[IpAddr]) -> anyhow::Result<Self> {
        if sources.is_empty() || sources.len() > MAX_SOURCES {
            bail!("the generator takes 1 to {MAX_SOURCES} sources");
        }
        let (frame, sum) = template(link);
        let mut storage = MaybeUninit::uninit();
        let mut open = skel::GenSkelBuilder::default()
            .open(&mut storage)
            .context("open generator")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("generator rodata")?;
        rodata.gen_ifindex = link.ifindex;
        rodata.gen_sources = sources.len() as u32;
        rodata.gen_ipv6 = 0;
        rodata.gen_csum = sum;
        let skel = open.load().context("load generator")?;
        let map = MapHandle::try_from(&skel.maps.gen_srcs)?;
        for (i, ip) in sources.iter().enumerate() {
            let mut value = [0u8; 16];
            match ip {
                IpAddr::V4(a) => value[..4].copy_from_slice(&a.octets()),
                IpAddr::V6(a) => value.copy_from_slice(&a.octets()),
            }
            map.update(&(i as u32).to_ne_bytes(), &value, MapFlags::ANY)?;
        }
        let program = ProgramHandle::try_from(&skel.progs.gen)?;
        Ok(Generator {
            program,
            frame,
            _sources: map,
        })
    }

    /// Sends `count` frames (one BPF_PROG_TEST_RUN call). Must run on a
    /// thread inside the sender's namespace.
    pub fn send(&self, count: u32) -> anyhow::Result<()> {
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            data_in: self.frame.as_ptr().cast(),
            data_size_in: self.frame.len() as u32,
            repeat: count as i32,
            flags: libbpf_sys::BPF_F_TEST_XDP_LIVE_FRAMES,
            ..Default::default()
        };
        // SAFETY: the frame outlives the call and its length is given; no
        // output buffers are passed, the kernel writes only into `opts`.
        let ret = unsafe {
            libbpf_sys::bpf_prog_test_run_opts(self.program.as_fd().as_raw_fd(), &mut opts)
        };
        if ret != 0 {
            bail!(
                "live-frames test run: {}",
                std::io::Error::from_raw_os_error(-ret)
            );
        }
        Ok(())
    }
}
