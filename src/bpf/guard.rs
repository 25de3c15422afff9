//! The user-space side of a trie guard (layout and purpose in
//! `include/couic.h`): how many prefixes of one trie meet each guard block,
//! so that a block's bit is set while that number is above zero. Plain
//! data; `KernelMaps` writes the words that change.

use std::collections::{BTreeSet, HashMap};

use couic_common::Cidr;

use super::hosts::HostIndex;
use super::types::couic_guard;

const GUARD4_BITS: u32 = couic_guard::COUIC_GUARD4_BITS.0;
const GUARD6_BITS: u32 = couic_guard::COUIC_GUARD6_BITS.0;
const GUARD6_SHORTEST: u8 = couic_guard::COUIC_GUARD6_SHORTEST.0 as u8;

#[derive(Debug)]
pub struct Guard {
    ipv4: bool,
    /// The IPv6 block hash: couic_bucket_of() of the first word.
    hash6: HostIndex,
    /// Prefixes meeting each block: dense for the 65,536 IPv4 blocks,
    /// sparse (blocks met by at least one) for the hashed IPv6 ones.
    dense: Vec<u32>,
    sparse: HashMap<u32, u32>,
    /// IPv6 prefixes too short to mark (they make the program always walk).
    short: u32,
}

/// What one prefix changed: the words whose bits flipped, and whether the
/// "always walk" state flipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuardChange {
    pub words: BTreeSet<u32>,
    pub always: bool,
}

impl GuardChange {
    pub fn merge(&mut self, other: GuardChange) {
        self.words.extend(other.words);
        self.always |= other.always;
    }
}

impl Guard {
    pub fn new(ipv4: bool, seed: u64) -> Self {
        Guard {
            ipv4,
            hash6: HostIndex::new(1 << GUARD6_BITS, seed),
            dense: if ipv4 {
                vec![0; 1 << GUARD4_BITS]
            } else {
                Vec::new()
            },
            sparse: HashMap::new(),
            short: 0,
        }
    }

    /// Whether the program must walk the trie whatever the bits say.
    pub fn always(&self) -> bool {
        self.short > 0
    }

    /// The blocks `cidr` meets, or None when it is too short to mark.
    fn blocks(&self, cidr: Cidr) -> Option<Vec<u32>> {
        let len = cidr.prefix_len();
        match cidr.addr() {
            std::net::IpAddr::V4(a) => {
                let first = u32::from(a) >> (32 - GUARD4_BITS);
                let n = 1u32 << (GUARD4_BITS as u8).saturating_sub(len);
                Some((first..first + n).collect())
            }
            std::net::IpAddr::V6(a) => {
                if len < GUARD6_SHORTEST {
                    return None;
                }
                let top = (u128::from(a) >> 96) as u32;
                let n = 1u64 << 32u8.saturating_sub(len);
                Some(
                    (0..n)
                        .map(|i| self.hash6.bucket_of(&(top + i as u32).to_be_bytes()))
                        .collect(),
                )
            }
        }
    }

    /// Counts `cidr` in.
    pub fn add(&mut self, cidr: Cidr) -> GuardChange {
        debug_assert_eq!(cidr.is_ipv4(), self.ipv4);
        let mut change = GuardChange::default();
        match self.blocks(cidr) {
            None => {
                self.short += 1;
                change.always = self.short == 1;
            }
            Some(blocks) => {
                for b in blocks {
                    let n = self.count_mut(b);
                    *n += 1;
                    if *n == 1 {
                        change.words.insert(b / 64);
                    }
                }
            }
        }
        change
    }

    /// Counts `cidr` out (it was counted in).
    pub fn remove(&mut self, cidr: Cidr) -> GuardChange {
        let mut change = GuardChange::default();
        match self.blocks(cidr) {
            None => {
                self.short = self.short.saturating_sub(1);
                change.always = self.short == 0;
            }
            Some(blocks) => {
                for b in blocks {
                    let n = self.count_mut(b);
                    if *n > 0 {
                        *n -= 1;
                        if *n == 0 {
                            change.words.insert(b / 64);
                        }
                    }
                    if !self.ipv4 && self.sparse.get(&b) == Some(&0) {
                        self.sparse.remove(&b);
                    }
                }
            }
        }
        change
    }

    fn count_mut(&mut self, block: u32) -> &mut u32 {
        if self.ipv4 {
            &mut self.dense[block as usize]
        } else {
            self.sparse.entry(block).or_insert(0)
        }
    }

    fn met(&self, block: u32) -> bool {
        if self.ipv4 {
            self.dense[block as usize] > 0
        } else {
            self.sparse.contains_key(&block)
        }
    }

    /// The value of guard word `w`.
    pub fn word(&self, w: u32) -> u64 {
        (0..64).fold(0, |bits, i| bits | u64::from(self.met(w * 64 + i)) << i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv4_prefix_marks_every_slash_16_it_meets() {
        let mut g = Guard::new(true, 1);
        // 10.1.0.0/16 is block 0x0a01: word 0x28, bit 1.
        let c = g.add(cidr("10.1.2.0/24"));
        assert_eq!(c.words, BTreeSet::from([0x0a01 / 64]));
        assert_eq!(g.word(0x0a01 / 64), 1 << (0x0a01 % 64));
        // A second prefix in the same /16 flips nothing.
        assert_eq!(g.add(cidr("10.1.9.9/32")), GuardChange::default());
        // A /14 meets four /16s.
        g.add(cidr("10.4.0.0/14"));
        assert_eq!(g.word(0x0a04 / 64) >> (0x0a04 % 64) & 0xf, 0xf);
        assert!(!g.always());

        // The bit stays until the last prefix meeting the block goes.
        assert_eq!(g.remove(cidr("10.1.2.0/24")), GuardChange::default());
        assert_eq!(g.word(0x0a01 / 64) >> (0x0a01 % 64) & 1, 1);
        let c = g.remove(cidr("10.1.9.9/32"));
        assert_eq!(c.words, BTreeSet::from([0x0a01 / 64]));
        assert_eq!(g.word(0x0a01 / 64) >> (0x0a01 % 64) & 1, 0);
        // 0.0.0.0/0 meets all 65,536 blocks.
        g.add(cidr("0.0.0.0/0"));
        assert!((0..1024).all(|w| g.word(w) == u64::MAX));
    }

    #[test]
    fn ipv6_prefixes_mark_hashed_slash_32s_or_force_the_walk() {
        let mut g = Guard::new(false, 7);
        let hash = HostIndex::new(1 << GUARD6_BITS, 7);
        let c = g.add(cidr("2001:db8:1::/48"));
        let slot = hash.bucket_of(&[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(c.words, BTreeSet::from([slot / 64]));
        assert_eq!(g.word(slot / 64) >> (slot % 64) & 1, 1);
        // A /30 meets four /32s.
        g.add(cidr("2001:db0::/30"));
        for top in 0x2001_0db0u32..0x2001_0db4 {
            let s = hash.bucket_of(&top.to_be_bytes());
            assert_eq!(g.word(s / 64) >> (s % 64) & 1, 1);
        }
        // Shorter than /24: the program walks whatever the bits say.
        let c = g.add(cidr("2000::/3"));
        assert!(c.always && g.always());
        assert!(!g.add(cidr("2400::/8")).always, "already walking");
        assert!(!g.remove(cidr("2400::/8")).always);
        assert!(g.remove(cidr("2000::/3")).always);
        assert!(!g.always());
    }
}
