//! The keyed hasher behind every map keyed by an address or a CIDR, in the
//! store and in the kernel tables' bookkeeping alike.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// Hashing for the maps keyed by CIDR that every write and lookup goes
/// through: a multiply-rotate mix with a per-process random seed.
///
/// SipHash cost more than anything else on the bulk path (a key is hashed
/// as several small writes). Keys come from authenticated clients and a
/// family holds at most its capacity, and the random seed keeps colliding
/// key sets from being computed in advance.
#[derive(Debug, Clone, Copy)]
pub struct KeyedState {
    seed: u64,
}

impl Default for KeyedState {
    fn default() -> Self {
        KeyedState {
            seed: RandomState::new().hash_one(0x0063_6f75_6963_u64),
        }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.seed)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct KeyedHasher(u64);

const MIX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyedHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.mix(n as u64);
    }

    /// The SplitMix64 finaliser: every output bit depends on every input
    /// bit, so both the bucket index (low bits) and the control byte (top
    /// bits) vary between neighbouring addresses.
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A map keyed by CIDR (or one family's network) with [`KeyedState`].
pub type CidrMap<K, V> = HashMap<K, V, KeyedState>;

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::Cidr;

    fn cidr(s: &str) -> Cidr {
        s.parse::<Cidr>().unwrap().normalized()
    }

    #[test]
    fn neighbouring_hosts_hash_apart() {
        let state = KeyedState::default();
        let hashes: Vec<u64> = (0..4096u32)
            .map(|i| state.hash_one(cidr(&format!("10.0.{}.{}/32", i >> 8, i & 255)).net()))
            .collect();
        let distinct: std::collections::HashSet<u64> = hashes.iter().copied().collect();
        assert_eq!(distinct.len(), hashes.len());
        // hashbrown takes the bucket from the low bits, the tag from the top 7.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 2000, "{}", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn neighbouring_cidrs_hash_apart() {
        let state = KeyedState::default();
        // Bucket indexes (low bits) of 4096 neighbouring hosts: about as
        // many distinct values as random ones would give (~2590 of 4096).
        let buckets: std::collections::HashSet<u64> = (0..4096u32)
            .map(|i| state.hash_one(cidr(&format!("10.0.{}.{}/32", i / 256, i % 256))) & 0xfff)
            .collect();
        assert!(buckets.len() > 2400, "{}", buckets.len());
        assert_ne!(
            state.hash_one(cidr("10.0.0.0/24")),
            state.hash_one(cidr("10.0.0.0/25"))
        );
    }
}
