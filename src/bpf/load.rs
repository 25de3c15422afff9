//! Loading the object: the skeleton is opened, sized from the config and
//! loaded; then every map and the program are taken as owned handles and
//! the skeleton is let go.

use std::hash::{BuildHasher, RandomState};
use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapHandle, ProgramHandle};

use super::blocks::Blocks;
use super::counters::Active;
use super::rule_table::RuleTable;
use super::{holds_ipv4, skel, BpfError, BucketIndex, Capacities, KernelMaps, Loaded};

/// Opens, sizes and loads the object, then keeps owned handles only.
pub fn load(caps: Capacities) -> Result<Loaded, BpfError> {
    let mut storage = MaybeUninit::uninit();
    // No BPF token: couic loads with its capabilities, and libbpf's attempt
    // to derive one from /sys/fs/bpf (which the unit lets it search, not
    // read) would only be a refused open.
    let opts = libbpf_sys::bpf_object_open_opts {
        sz: size_of::<libbpf_sys::bpf_object_open_opts>() as _,
        bpf_token_path: c"".as_ptr(),
        ..Default::default()
    };
    let mut open = skel::CouicSkelBuilder::default()
        .open_opts(opts, &mut storage)
        .map_err(BpfError::Load)?;
    // A seed of our own per load, so nobody can pick hosts that collide.
    let seed = RandomState::new().hash_one(std::process::id());
    let index = [
        BucketIndex::new(BucketIndex::buckets_for(true, caps.ignore), seed),
        BucketIndex::new(BucketIndex::buckets_for(false, caps.ignore), seed),
        BucketIndex::new(BucketIndex::buckets_for(true, caps.drop), seed),
        BucketIndex::new(BucketIndex::buckets_for(false, caps.drop), seed),
    ];
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the object has read-only globals");
    rodata.couic_seed = seed;
    rodata.couic_i4_bits = index[0].bits();
    rodata.couic_i6_bits = index[1].bits();
    rodata.couic_d4_bits = index[2].bits();
    rodata.couic_d6_bits = index[3].bits();
    let m = &mut open.maps;
    for (map, table) in [
        &mut m.couic_i4_bkt,
        &mut m.couic_i6_bkt,
        &mut m.couic_d4_bkt,
        &mut m.couic_d6_bkt,
    ]
    .into_iter()
    .zip(&index)
    {
        map.set_max_entries(1 << table.bits())
            .map_err(BpfError::Load)?;
    }
    for (map, cap) in [
        (&mut m.couic_i4_ovf, caps.ignore),
        (&mut m.couic_i6_ovf, caps.ignore),
        (&mut m.couic_d4_ovf, caps.drop),
        (&mut m.couic_d6_ovf, caps.drop),
        (&mut m.couic_tag_drop, caps.tags),
        (&mut m.couic_tag_ign, caps.tags),
    ] {
        map.set_max_entries(cap).map_err(BpfError::Load)?;
    }
    let skel = open.load().map_err(BpfError::Load)?;

    let m = &skel.maps;
    macro_rules! handle {
        ($map:expr) => {
            MapHandle::try_from(&$map).map_err(BpfError::Load)?
        };
    }
    let tables = [
        (
            0,
            handle!(m.couic_i4_bkt),
            handle!(m.couic_i4_ovf),
            handle!(m.couic_i4_blk),
            None,
        ),
        (
            1,
            handle!(m.couic_i6_bkt),
            handle!(m.couic_i6_ovf),
            handle!(m.couic_i6_blk),
            Some(handle!(m.couic_i6_len)),
        ),
        (
            2,
            handle!(m.couic_d4_bkt),
            handle!(m.couic_d4_ovf),
            handle!(m.couic_d4_blk),
            None,
        ),
        (
            3,
            handle!(m.couic_d6_bkt),
            handle!(m.couic_d6_ovf),
            handle!(m.couic_d6_blk),
            Some(handle!(m.couic_d6_len)),
        ),
    ]
    .map(|(number, buckets, overflow, block_map, lens_map)| {
        let ipv4 = holds_ipv4(number);
        RuleTable {
            number,
            ipv4,
            buckets,
            index: index[number],
            overflow,
            block_map,
            lens_map,
            blocks: Blocks::new(ipv4, seed),
            held: [0; 2],
        }
    });
    let maps = KernelMaps {
        tables,
        active: Active::new(handle!(m.couic_active)),
        stats: handle!(m.couic_stats),
        tag_drop: handle!(m.couic_tag_drop),
        tag_ign: handle!(m.couic_tag_ign),
        cpus: libbpf_rs::num_possible_cpus().map_err(BpfError::Load)?,
    };
    let program = ProgramHandle::try_from(&skel.progs.couic).map_err(BpfError::Load)?;
    Ok(Loaded { program, maps })
}
