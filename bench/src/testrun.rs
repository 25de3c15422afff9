//! Figure (a): cost per packet of the program under BPF_PROG_TEST_RUN, with
//! 262,144 drop rules against the same program with empty maps.

use libbpf_rs::ProgramHandle;

use crate::kernel::{self, frame};
use crate::memory;
use crate::report::{Figure, Goal, Section};
use crate::rules::{Blocklist, Family, Rng};
use crate::Settings;

pub const ENTRIES: usize = 262_144;

pub fn run(settings: &Settings) -> anyhow::Result<Section> {
    let mut section = Section::new(
        "BPF_PROG_TEST_RUN: ns per packet, 262,144 drop rules vs empty maps",
        format!(
            "One program loaded with empty maps, one with {ENTRIES} drop rules of one family (about 90 % \
             hosts, the rest shorter prefixes). *Repeated*: one frame run {} times per program, so \
             the lookup path stays in cache, in {} turns taken in alternation, the lowest turn \
             kept. *Rotating*: {} different sources, one BPF_PROG_TEST_RUN each, \
             kernel-reported durations summed (median of {} passes); the two programs take turns \
             frame by frame, so both see the same moments of this shared machine; this is what \
             live traffic sees. \
             *Hit*: sources covered by a rule (drawn across the rules, so about 90 % hit a host rule); \
             *miss*: sources no rule covers. Goals: rotating <= 3x empty, repeated <= 1.5x empty. \
             *Loaded without CAP_PERFMON* (no goal): the same rules loaded by a thread that holds \
             CAP_BPF + CAP_NET_ADMIN only, so the verifier adds its speculation barriers, against \
             the program loaded with every capability; couic's systemd unit grants CAP_PERFMON to \
             avoid them. *Memory read* (no goal): this machine's latency for one read whose \
             address depends on the one before (a pointer chase in user space through a random \
             cycle of cache lines), over a small and a large working set; a rotating hit costs \
             about the empty program plus one such read from memory.",
            settings.repeat,
            kernel::REPEAT_TURNS,
            settings.sources,
            settings.passes
        ),
    );
    let mut without_perfmon = None;
    for family in [Family::V4, Family::V6] {
        let mut rng = Rng::new(0x5eed + family as u64);
        let list = Blocklist::generate(&mut rng, family, ENTRIES);
        let hits = list.hits(&mut rng, settings.sources);
        let misses = list.misses(&mut rng, settings.sources);
        let empty = kernel::load(&[])?;
        let full = kernel::load(&list.rules)?;
        for (kind, sources) in [("hit", &hits), ("miss", &misses)] {
            let frames: Vec<Vec<u8>> = sources.iter().map(|ip| frame(*ip)).collect();
            let (base, cost) =
                kernel::repeated_pair(&empty.program, &full.program, &frames[0], settings.repeat)?;
            section.push(Figure::ratio(
                format!("{} {kind}, repeated", family.name()),
                "ns/pkt",
                cost,
                base,
                "empty maps",
                Goal::AtMost(1.5),
            ));
            let (base, cost) =
                kernel::rotating_pair(&empty.program, &full.program, &frames, settings.passes)?;
            section.push(Figure::ratio(
                format!(
                    "{} {kind}, rotating {} sources",
                    family.name(),
                    settings.sources
                ),
                "ns/pkt",
                cost,
                base,
                "empty maps",
                Goal::AtMost(3.0),
            ));
            if family == Family::V4 && kind == "hit" {
                without_perfmon = Some(cost_without_perfmon(
                    &list,
                    &frames,
                    &full.program,
                    settings,
                )?);
            }
        }
    }
    let (repeated, rotating) = without_perfmon.expect("IPv4 hits are measured");
    section.push(repeated);
    section.push(rotating);
    for mib in [4, 64] {
        section.push(Figure::plain(
            format!("memory read, one at a time, over {mib} MiB"),
            "ns",
            memory::chase_ns(mib << 20),
        ));
    }
    Ok(section)
}

/// IPv4 hits, repeated and rotating, with `list` loaded by a thread that
/// holds CAP_BPF + CAP_NET_ADMIN only, against `with_perfmon`, the same
/// rules loaded with every capability: the cost of the verifier's
/// speculation barriers.
fn cost_without_perfmon(
    list: &Blocklist,
    frames: &[Vec<u8>],
    with_perfmon: &ProgramHandle,
    settings: &Settings,
) -> anyhow::Result<(Figure, Figure)> {
    let rules = list.rules.clone();
    let without = std::thread::spawn(move || -> anyhow::Result<_> {
        use couic::privileges::{keep_only, CAP_BPF, CAP_NET_ADMIN};
        keep_only(&[CAP_BPF, CAP_NET_ADMIN])?;
        kernel::load(&rules)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the loading thread panicked"))??;
    let (base, cost) =
        kernel::repeated_pair(with_perfmon, &without.program, &frames[0], settings.repeat)?;
    let repeated = Figure::compared(
        "IPv4 hit, repeated, loaded without CAP_PERFMON",
        "ns/pkt",
        cost,
        base,
        "with it",
    );
    let (base, cost) =
        kernel::rotating_pair(with_perfmon, &without.program, frames, settings.passes)?;
    let rotating = Figure::compared(
        format!(
            "IPv4 hit, rotating {} sources, loaded without CAP_PERFMON",
            settings.sources
        ),
        "ns/pkt",
        cost,
        base,
        "with it",
    );
    Ok((repeated, rotating))
}
