//! The user-space side of the prefix-length blocks (layout and purpose in
//! `include/couic.h`): how many prefixes of each length meet each block and
//! each 1/32 part of it, and how many hosts lie in each eighth of it, so
//! that a block's bits are set while those counts are above zero; and the
//! lengths too short to mark. Plain data, and no copy of the blocks: a
//! change says which bits flip, and `RuleTable` reads the blocks it
//! touches, flips them and writes them back.
//!
//! Over 400 lines: the last 290 are its unit tests, which check the counts
//! against the bits the program reads and belong next to them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use couic_common::Cidr;

use super::buckets::BucketIndex;
use super::types::couic_block;
use crate::hash::KeyedState;

const BLOCK4_LEN: u8 = couic_block::COUIC_BLOCK4_LEN.0 as u8;
const BLOCK6_LEN: u8 = couic_block::COUIC_BLOCK6_LEN.0 as u8;
const BLOCK6_BITS: u32 = couic_block::COUIC_BLOCK6_BITS.0;
const SUB_BITS: u8 = couic_block::COUIC_BLOCK_SUB_BITS.0 as u8;
const WIDEST: u8 = couic_block::COUIC_BLOCK_WIDEST.0 as u8;
const HOST_BITS: u8 = couic_block::COUIC_BLOCK_HOST_BITS.0 as u8;

/// Part key of the prefixes that cover a whole block.
const WHOLE: u8 = u8::MAX;

/// One block's value: lengths to probe, and the parts where that is worth
/// it. Bits 0..7 of `lens` are no length: bit E says the E-th eighth of the
/// block holds hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Block {
    pub lens: u128,
    pub sub: u32,
}

impl Block {
    /// The block's lengths, longest first, when it has at most two (0:
    /// none), and whether it has more: the short form of an IPv6 block.
    pub fn two_lengths(&self) -> ([u8; 2], bool) {
        let mut lengths = self.lens >> 8 << 8;
        let mut out = [0u8; 2];
        for slot in &mut out {
            if lengths == 0 {
                break;
            }
            let top = 127 - lengths.leading_zeros();
            *slot = top as u8;
            lengths ^= 1 << top;
        }
        if lengths != 0 {
            return ([0; 2], true);
        }
        (out, false)
    }
}

/// What a change does to one block: the bits of the lengths in `touched`
/// become those of `lens`, and the parts bits become `sub` if given. Values,
/// not flips, so that writing one twice does no harm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Edit {
    pub touched: u128,
    pub lens: u128,
    pub sub: Option<u32>,
}

impl Edit {
    pub fn apply(&self, block: &mut Block) {
        block.lens = block.lens & !self.touched | self.lens & self.touched;
        if let Some(sub) = self.sub {
            block.sub = sub;
        }
    }

    /// `later` after this edit.
    fn then(&mut self, later: Edit) {
        self.lens = self.lens & !later.touched | later.lens & later.touched;
        self.touched |= later.touched;
        self.sub = later.sub.or(self.sub);
    }
}

/// The blocks of one table (a policy and family).
#[derive(Debug)]
pub struct Blocks {
    ipv4: bool,
    /// The IPv6 block hash: couic_bucket_of() of the first word, length 0.
    hash6: BucketIndex,
    /// Prefixes of length `len` meeting `block`, keyed `block << 8 | len`.
    lens: HashMap<u32, u32, KeyedState>,
    /// Hosts in each eighth of each block.
    hosts: HostCounts,
    /// Prefixes meeting part `p` of `block` (or all of it, `WHOLE`), keyed
    /// `block << 8 | p`.
    parts: HashMap<u32, u32, KeyedState>,
    /// Prefixes of each length too short to mark.
    short: [u32; 32],
}

/// What some prefixes changed: the blocks whose value changes, and whether
/// the short lengths did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockChange {
    pub blocks: BTreeMap<u32, Edit>,
    pub short: bool,
}

impl BlockChange {
    /// `other` after this one.
    #[cfg(test)]
    pub fn merge(&mut self, other: BlockChange) {
        for (b, edit) in other.blocks {
            self.blocks.entry(b).or_default().then(edit);
        }
        self.short |= other.short;
    }
}

/// Where a rule is marked.
enum Marks {
    /// A host: in the host bit of its eighth of its block.
    Host { block: u32, eighth: u8 },
    /// In the short lengths.
    Short,
    /// In these blocks, whole or in the parts given.
    Blocks { blocks: Vec<u32>, parts: Vec<u8> },
}

impl Blocks {
    pub fn new(ipv4: bool, seed: u64) -> Self {
        Blocks {
            ipv4,
            hash6: BucketIndex::new(1 << BLOCK6_BITS, seed),
            lens: HashMap::default(),
            hosts: HostCounts::new(),
            parts: HashMap::default(),
            short: [0; 32],
        }
    }

    /// The lengths probed for every address (bit L: length L).
    pub fn short_lens(&self) -> u32 {
        (0..32).fold(0, |m, l| m | u32::from(self.short[l] > 0) << l)
    }

    /// The block of the /32 whose first word is `top` (IPv6).
    pub fn block6(&self, top: u32) -> u32 {
        self.hash6.bucket_of(&top.to_be_bytes(), 0)
    }

    fn marks(&self, cidr: Cidr) -> Marks {
        let len = cidr.prefix_len();
        // The block's first word, and the address bits that follow it.
        let (width, first, next) = match cidr.addr() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                (BLOCK4_LEN, a >> 16, (a >> 8) as u8)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                (BLOCK6_LEN, (a >> 96) as u32, (a >> 88) as u8)
            }
        };
        let part = next >> (8 - SUB_BITS);
        if cidr.is_host() {
            return Marks::Host {
                block: self.block_of(first),
                eighth: next >> (8 - HOST_BITS),
            };
        }
        if len + WIDEST < width {
            return Marks::Short;
        }
        let (n, parts) = if len <= width {
            (1u32 << (width - len), vec![WHOLE])
        } else {
            let spread = 1u8 << (width + SUB_BITS).saturating_sub(len);
            (1, (part..part + spread).collect())
        };
        let blocks = (u64::from(first)..u64::from(first) + u64::from(n))
            .map(|b| self.block_of(b as u32))
            .collect();
        Marks::Blocks { blocks, parts }
    }

    /// The block of a host, and its eighth of the block.
    pub fn host_place(&self, host: Cidr) -> Option<(u32, u8)> {
        match self.marks(host) {
            Marks::Host { block, eighth } => Some((block, eighth)),
            _ => None,
        }
    }

    /// The block of a /16 (IPv4) or /32 (IPv6), given as its first word.
    fn block_of(&self, first: u32) -> u32 {
        if self.ipv4 {
            first
        } else {
            self.block6(first)
        }
    }

    /// Counts rule `cidr` in.
    #[cfg(test)]
    pub fn add(&mut self, cidr: Cidr) -> BlockChange {
        let mut change = BlockChange::default();
        self.add_to(cidr, &mut change);
        change
    }

    /// Counts rule `cidr` out (it was counted in).
    pub fn remove(&mut self, cidr: Cidr) -> BlockChange {
        let mut change = BlockChange::default();
        self.remove_from(cidr, &mut change);
        change
    }

    /// Counts rule `cidr` in, its change merged after `change`.
    pub fn add_to(&mut self, cidr: Cidr, change: &mut BlockChange) {
        debug_assert_eq!(cidr.is_ipv4(), self.ipv4);
        self.step_rule(cidr, true, change);
    }

    /// Counts rule `cidr` out, its change merged after `change`.
    pub fn remove_from(&mut self, cidr: Cidr, change: &mut BlockChange) {
        self.step_rule(cidr, false, change);
    }

    fn step_rule(&mut self, cidr: Cidr, up: bool, change: &mut BlockChange) {
        let len = cidr.prefix_len();
        let (blocks, parts) = match self.marks(cidr) {
            Marks::Host { block, eighth } => {
                if self.hosts.step(block << HOST_BITS | u32::from(eighth), up) {
                    let edit = Edit {
                        touched: 1 << eighth,
                        lens: u128::from(up) << eighth,
                        sub: None,
                    };
                    change.blocks.entry(block).or_default().then(edit);
                }
                return;
            }
            Marks::Short => {
                let n = &mut self.short[usize::from(len)];
                let was = *n > 0;
                *n = if up { *n + 1 } else { n.saturating_sub(1) };
                change.short |= was != (*n > 0);
                return;
            }
            Marks::Blocks { blocks, parts } => (blocks, parts),
        };
        for b in blocks {
            let mut edit = Edit::default();
            if step(&mut self.lens, key(b, len), up) {
                edit.touched = 1 << len;
                edit.lens = if up { 1 << len } else { 0 };
            }
            let mut parts_flipped = false;
            for &p in &parts {
                parts_flipped |= step(&mut self.parts, key(b, p), up);
            }
            if parts_flipped {
                edit.sub = Some(self.sub_of(b));
            }
            if edit != Edit::default() {
                change.blocks.entry(b).or_default().then(edit);
            }
        }
    }

    /// `change` with the values the counts give now, for the same blocks,
    /// lengths and parts: what to write after the counts moved back.
    pub fn refresh(&self, change: &BlockChange) -> BlockChange {
        let blocks = change
            .blocks
            .iter()
            .map(|(&b, edit)| {
                let lens = (0..128u8)
                    .filter(|&l| edit.touched >> l & 1 == 1)
                    .filter(|&l| self.counted(b, l))
                    .fold(0u128, |m, l| m | 1 << l);
                let sub = edit.sub.map(|_| self.sub_of(b));
                (
                    b,
                    Edit {
                        touched: edit.touched,
                        lens,
                        sub,
                    },
                )
            })
            .collect();
        BlockChange {
            blocks,
            short: change.short,
        }
    }

    /// Whether bit `l` of block `b`'s lengths has something counted.
    fn counted(&self, b: u32, l: u8) -> bool {
        if l < 1 << HOST_BITS {
            self.hosts.any(b << HOST_BITS | u32::from(l))
        } else {
            self.lens.contains_key(&key(b, l))
        }
    }

    /// The parts of `block` that some prefix meets.
    fn sub_of(&self, block: u32) -> u32 {
        if self.parts.contains_key(&key(block, WHOLE)) {
            return u32::MAX;
        }
        (0..32u8).fold(0, |sub, p| {
            sub | u32::from(self.parts.contains_key(&key(block, p))) << p
        })
    }
}

/// Hosts per eighth of a block, indexed `block << 3 | eighth` (19 bits).
/// Most eighths hold a few hosts or none, so 4 bits each; a count that
/// reaches 15 moves whole to `big`, and 15 then means "see `big`". The
/// 256 KiB are allocated with the table, at startup: then they get pages
/// of their own, untouched (so not resident) until hosts come, rather than
/// a place in the heap that would keep the memory freed below them.
#[derive(Debug)]
struct HostCounts {
    small: Vec<u8>,
    big: HashMap<u32, u32, KeyedState>,
}

/// The count that sends an eighth to `big`.
const NIBBLE_FULL: u8 = 15;

impl HostCounts {
    fn new() -> Self {
        HostCounts {
            small: vec![0; 1 << (16 + HOST_BITS - 1)],
            big: HashMap::default(),
        }
    }

    fn nibble(&self, i: u32) -> u8 {
        self.small[i as usize / 2] >> (i % 2 * 4) & NIBBLE_FULL
    }

    fn set_nibble(&mut self, i: u32, n: u8) {
        let b = &mut self.small[i as usize / 2];
        let shift = i % 2 * 4;
        *b = *b & !(NIBBLE_FULL << shift) | n << shift;
    }

    /// Moves the count of eighth `i` one step; true when it went from or
    /// to zero.
    fn step(&mut self, i: u32, up: bool) -> bool {
        match (self.nibble(i), up) {
            (NIBBLE_FULL, _) => {
                let big = self
                    .big
                    .get_mut(&i)
                    .expect("a full nibble's count is in big");
                if up {
                    *big += 1;
                } else {
                    *big -= 1;
                    if *big < u32::from(NIBBLE_FULL) {
                        let n = *big as u8;
                        self.big.remove(&i);
                        self.set_nibble(i, n);
                    }
                }
                false
            }
            (0, false) => false,
            (c, true) => {
                self.set_nibble(i, c + 1);
                if c + 1 == NIBBLE_FULL {
                    self.big.insert(i, u32::from(NIBBLE_FULL));
                }
                c == 0
            }
            (c, false) => {
                self.set_nibble(i, c - 1);
                c == 1
            }
        }
    }

    /// Whether eighth `i` holds hosts.
    fn any(&self, i: u32) -> bool {
        self.nibble(i) > 0
    }
}

/// The key of a count: blocks have at most 16 bits.
fn key(block: u32, low: u8) -> u32 {
    debug_assert!(block < 1 << 16);
    block << 8 | u32::from(low)
}

/// Moves the count at `k` one step; true when it went from or to zero.
fn step(counts: &mut HashMap<u32, u32, KeyedState>, k: u32, up: bool) -> bool {
    if up {
        let n = counts.entry(k).or_insert(0);
        *n += 1;
        *n == 1
    } else {
        match counts.get_mut(&k) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                counts.remove(&k);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_blocks_list_up_to_two_lengths_and_flag_more() {
        let block = |lens: &[u32], hosts: u128| Block {
            lens: lens.iter().fold(hosts, |m, &l| m | 1u128 << l),
            sub: 0,
        };
        assert_eq!(
            block(&[], 0b101).two_lengths(),
            ([0, 0], false),
            "hosts only"
        );
        assert_eq!(block(&[48], 1).two_lengths(), ([48, 0], false));
        assert_eq!(block(&[24, 127], 0).two_lengths(), ([127, 24], false));
        assert_eq!(block(&[64, 48], 0xff).two_lengths(), ([64, 48], false));
        assert_eq!(block(&[33, 64, 96], 0).two_lengths(), ([0, 0], true));
    }

    /// The blocks as the kernel would hold them, changes applied.
    #[derive(Default)]
    struct Kernel(HashMap<u32, Block>);

    impl Kernel {
        fn apply(&mut self, change: &BlockChange) {
            for (b, edit) in &change.blocks {
                edit.apply(self.0.entry(*b).or_default());
            }
        }

        fn value(&self, b: u32) -> Block {
            self.0.get(&b).copied().unwrap_or_default()
        }
    }

    /// Blocks with the kernel's copy they keep up to date.
    struct Both(Blocks, Kernel);

    impl Both {
        fn new(ipv4: bool, seed: u64) -> Self {
            Both(Blocks::new(ipv4, seed), Kernel::default())
        }

        fn add(&mut self, c: &str) -> BlockChange {
            let change = self.0.add(cidr(c));
            self.1.apply(&change);
            change
        }

        fn remove(&mut self, c: &str) -> BlockChange {
            let change = self.0.remove(cidr(c));
            self.1.apply(&change);
            change
        }

        fn value(&self, b: u32) -> Block {
            self.1.value(b)
        }
    }

    #[test]
    fn an_ipv4_prefix_marks_its_length_in_the_parts_it_meets() {
        let mut b = Both::new(true, 1);
        // 10.1.2.0/24: block 0x0a01, part 2 >> 3 = 0.
        let c = b.add("10.1.2.0/24");
        assert_eq!(c.blocks.keys().copied().collect::<Vec<_>>(), [0x0a01]);
        assert_eq!(
            b.value(0x0a01),
            Block {
                lens: 1 << 24,
                sub: 1
            }
        );
        // A second /24 of the same part flips nothing; another part does.
        assert_eq!(b.add("10.1.3.0/24"), BlockChange::default());
        b.add("10.1.200.0/24");
        assert_eq!(b.value(0x0a01).sub, 1 | 1 << 25);
        // A /18 meets 8 parts (64 /24s, 8 per part).
        b.add("10.1.64.0/18");
        assert_eq!(b.value(0x0a01).sub, 1 | 1 << 25 | 0xff << 8);
        assert_eq!(b.value(0x0a01).lens, 1 << 24 | 1 << 18);
        // A /14 covers four whole blocks.
        b.add("10.4.0.0/14");
        for block in 0x0a04..0x0a08 {
            assert_eq!(
                b.value(block),
                Block {
                    lens: 1 << 14,
                    sub: u32::MAX
                }
            );
        }
        assert_eq!(b.0.short_lens(), 0);

        // Bits stay until the last prefix meeting them goes.
        assert_eq!(b.remove("10.1.2.0/24"), BlockChange::default());
        b.remove("10.1.3.0/24");
        assert_eq!(b.value(0x0a01).sub, 1 << 25 | 0xff << 8);
        b.remove("10.1.64.0/18");
        b.remove("10.1.200.0/24");
        assert_eq!(b.value(0x0a01), Block::default());
        assert!(
            b.0.lens.len() == 4 && b.0.parts.len() == 4,
            "no count kept at 0"
        );
        // A whole-block prefix over parts: the parts show again after it.
        b.add("10.4.9.0/24");
        b.remove("10.4.0.0/14");
        assert_eq!(
            b.value(0x0a04),
            Block {
                lens: 1 << 24,
                sub: 1 << 1
            }
        );
    }

    #[test]
    fn hosts_flag_their_eighth_of_the_block_while_any_is_there() {
        let mut b = Both::new(true, 1);
        // 10.1.96.7: block 0x0a01, third byte 96 = 0b011_00000: eighth 3.
        let c = b.add("10.1.96.7/32");
        assert_eq!(c.blocks.keys().copied().collect::<Vec<_>>(), [0x0a01]);
        assert_eq!(
            b.value(0x0a01),
            Block {
                lens: 1 << 3,
                sub: 0
            }
        );
        assert_eq!(
            b.add("10.1.127.255/32"),
            BlockChange::default(),
            "same eighth"
        );
        b.add("10.1.255.1/32");
        b.add("10.1.2.0/24");
        assert_eq!(
            b.value(0x0a01),
            Block {
                lens: 1 << 24 | 1 << 7 | 1 << 3,
                sub: 1
            },
            "hosts set no part, prefixes no host bit"
        );
        assert_eq!(b.remove("10.1.96.7/32"), BlockChange::default());
        b.remove("10.1.127.255/32");
        b.remove("10.1.255.1/32");
        assert_eq!(
            b.value(0x0a01),
            Block {
                lens: 1 << 24,
                sub: 1
            }
        );
        assert_eq!(b.0.short_lens(), 0);

        // IPv6: the eighth is the 3 bits after the /32.
        let mut b = Both::new(false, 7);
        b.add("2001:db8:e000::1/128");
        let block = b.0.block6(0x2001_0db8);
        assert_eq!(
            b.value(block),
            Block {
                lens: 1 << 7,
                sub: 0
            }
        );
        b.remove("2001:db8:e000::1/128");
        assert_eq!(b.value(block), Block::default());
    }

    #[test]
    fn host_counts_go_past_a_nibble_and_flip_only_at_zero() {
        let mut c = HostCounts::new();
        assert!(!c.any(5) && !c.step(5, false), "nothing to count out");
        let flips: Vec<bool> = (0..600).map(|_| c.step(5, true)).collect();
        assert!(flips[0] && flips[1..].iter().all(|f| !f));
        assert!(
            c.any(5) && !c.any(4) && !c.any(6),
            "neighbours share a byte"
        );
        assert_eq!(c.big.get(&5), Some(&600));
        let flips: Vec<bool> = (0..600).map(|_| c.step(5, false)).collect();
        assert!(flips[599] && flips[..599].iter().all(|f| !f));
        assert!(!c.any(5) && c.big.is_empty());
        // Around the nibble's limit, both ways, next to a busy neighbour.
        for _ in 0..3 {
            c.step(8, true);
        }
        for _ in 0..15 {
            c.step(9, true);
        }
        c.step(9, false);
        c.step(9, true);
        assert_eq!((c.nibble(9), c.big.get(&9)), (15, Some(&15)));
        for _ in 0..14 {
            assert!(!c.step(9, false));
        }
        assert!(c.step(9, false));
        assert!(!c.any(9));
        assert_eq!(c.nibble(8), 3, "the neighbour kept its count");
    }

    #[test]
    fn merged_changes_flip_each_bit_once() {
        let mut blocks = Blocks::new(true, 1);
        let mut change = blocks.add(cidr("10.1.2.0/24"));
        change.merge(blocks.add(cidr("10.1.64.0/18")));
        change.merge(blocks.remove(cidr("10.1.2.0/24")));
        let mut kernel = Kernel::default();
        kernel.apply(&change);
        assert_eq!(
            kernel.value(0x0a01),
            Block {
                lens: 1 << 18,
                sub: 0xff << 8
            }
        );
    }

    #[test]
    fn a_refreshed_change_undoes_one_counted_back_out() {
        let mut b = Both::new(true, 1);
        b.add("10.1.2.0/24");
        let before = b.value(0x0a01);
        let change = b.0.add(cidr("10.1.64.0/18"));
        b.0.remove(cidr("10.1.64.0/18"));
        // Whether or not the kernel saw the change, the refresh restores it.
        let undo = b.0.refresh(&change);
        let mut seen = Kernel(b.1 .0.clone());
        seen.apply(&change);
        seen.apply(&undo);
        assert_eq!(seen.value(0x0a01), before);
        b.1.apply(&undo);
        assert_eq!(b.value(0x0a01), before);
    }

    #[test]
    fn prefixes_too_wide_to_mark_are_short_lengths() {
        let mut b = Both::new(true, 1);
        // A /8 marks 256 blocks; a /7 would mark 512: short.
        assert_eq!(b.add("10.0.0.0/8").blocks.len(), 256);
        let c = b.add("12.0.0.0/7");
        assert!(c.short && c.blocks.is_empty());
        assert!(!b.add("14.0.0.0/7").short, "length 7 already short");
        assert_eq!(b.0.short_lens(), 1 << 7);
        assert!(!b.remove("14.0.0.0/7").short);
        assert!(b.remove("12.0.0.0/7").short);
        assert_eq!(b.0.short_lens(), 0);
        let mut b = Both::new(false, 1);
        assert!(b.add("2000::/3").short);
        assert!(b.add("2001:db8::/23").short);
        assert_eq!(b.0.short_lens(), 1 << 3 | 1 << 23);
    }

    #[test]
    fn ipv6_prefixes_mark_hashed_slash_32s() {
        let mut b = Both::new(false, 7);
        let c = b.add("2001:db8:1::/48");
        let block = b.0.block6(0x2001_0db8);
        assert_eq!(c.blocks.keys().copied().collect::<Vec<_>>(), [block]);
        // Bits 32..36 of 2001:db8:1:: are 0: part 0.
        assert_eq!(
            b.value(block),
            Block {
                lens: 1 << 48,
                sub: 1
            }
        );
        // A /30 covers four /32s whole.
        let c = b.add("2001:db0::/30");
        assert_eq!(c.blocks.len(), 4);
        for top in 0x2001_0db0u32..0x2001_0db4 {
            let v = b.value(b.0.block6(top));
            assert!(v.lens & 1 << 30 != 0 && v.sub == u32::MAX);
        }
        // Lengths past 64 land in the high half.
        b.add("2001:db8:0:0:8000::/65");
        assert_ne!(b.value(block).lens & 1 << 65, 0);
    }
}
