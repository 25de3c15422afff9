//! The couic program as the benchmarks use it: loaded with drop rules
//! written straight through `KernelMaps` (the same batch calls the daemon's
//! MapWriter makes), frames built for a source, and BPF_PROG_TEST_RUN timing.

use std::net::IpAddr;

use anyhow::{bail, Context as _};
use couic::bpf::{self, Capacities, KernelMaps, Loaded, RULE_MAPS};
use couic_common::{Cidr, Policy};
use libbpf_rs::ProgramHandle;

/// Entries per batch call.
const BATCH: usize = 8_192;

pub struct Program {
    pub program: ProgramHandle,
    pub maps: KernelMaps,
}

/// Loads the program sized for 262,144 drop rules per family and inserts
/// `rules` (untagged).
pub fn load(rules: &[Cidr]) -> anyhow::Result<Program> {
    let caps = Capacities {
        drop: 262_144,
        ignore: 65_536,
        tags: 4_096,
    };
    let Loaded { program, mut maps } = bpf::load(caps).context("load couic (run as root)")?;
    let mut groups: [Vec<(Cidr, u32)>; RULE_MAPS] = Default::default();
    for cidr in rules {
        groups[bpf::rule_map_index(Policy::Drop, *cidr)].push((*cidr, 0));
    }
    for (index, items) in groups.iter().enumerate() {
        for chunk in items.chunks(BATCH) {
            if let Some(Err(e)) = maps.insert(index, chunk).into_iter().find(Result::is_err) {
                bail!("inserting into {}: {e}", KernelMaps::rule_map_name(index));
            }
        }
    }
    Ok(Program { program, maps })
}

/// A 64-byte UDP frame from `src` (60 bytes on the wire before the FCS).
pub fn frame(src: IpAddr) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    match src {
        IpAddr::V4(a) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            f[14] = 0x45;
            f[16..18].copy_from_slice(&50u16.to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&a.octets());
            f[30..34].copy_from_slice(&[198, 18, 0, 1]);
        }
        IpAddr::V6(a) => {
            f.resize(14 + 40 + 18, 0);
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            f[14] = 0x60;
            f[18..20].copy_from_slice(&18u16.to_be_bytes());
            f[20] = 17;
            f[21] = 64;
            f[22..38].copy_from_slice(&a.octets());
            f[38..54].copy_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
        }
    }
    f
}

/// Turns each program takes in [`repeated_pair`].
pub const REPEAT_TURNS: u32 = 5;

/// Kernel-reported ns per run of programs `a` and `b` on one frame
/// repeated: `repeat` runs each, in [`REPEAT_TURNS`] turns taken in
/// alternation, the lowest turn of each kept (a busy spell of the machine
/// only ever adds time).
pub fn repeated_pair(
    a: &ProgramHandle,
    b: &ProgramHandle,
    frame: &[u8],
    repeat: u32,
) -> anyhow::Result<(f64, f64)> {
    let per_turn = (repeat / REPEAT_TURNS).max(1);
    let (mut best_a, mut best_b) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..REPEAT_TURNS {
        for (program, best) in [(a, &mut best_a), (b, &mut best_b)] {
            let (_, per_run) =
                bpf::test_run(program, frame, per_turn).context("BPF_PROG_TEST_RUN")?;
            *best = best.min(per_run.as_nanos() as f64);
        }
    }
    Ok((best_a, best_b))
}

/// Kernel-reported ns per run of programs `a` and `b` when every run is a
/// different frame: one BPF_PROG_TEST_RUN per frame and program, the two
/// programs taking turns frame by frame so that both meet the same moments
/// of a busy machine; durations summed per pass, median of `passes`.
pub fn rotating_pair(
    a: &ProgramHandle,
    b: &ProgramHandle,
    frames: &[Vec<u8>],
    passes: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut results = (Vec::with_capacity(passes), Vec::with_capacity(passes));
    for _ in 0..passes {
        let (mut total_a, mut total_b) = (0u128, 0u128);
        for frame in frames {
            let (_, d) = bpf::test_run(a, frame, 1).context("BPF_PROG_TEST_RUN")?;
            total_a += d.as_nanos();
            let (_, d) = bpf::test_run(b, frame, 1).context("BPF_PROG_TEST_RUN")?;
            total_b += d.as_nanos();
        }
        results.0.push(total_a as f64 / frames.len() as f64);
        results.1.push(total_b as f64 / frames.len() as f64);
    }
    Ok((median(results.0), median(results.1)))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
