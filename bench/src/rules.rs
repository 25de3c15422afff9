//! Rule sets and traffic for the benchmarks: a blocklist with a realistic
//! mix of prefix lengths, and source addresses of which a chosen share is
//! blocklisted. Everything comes from a seeded generator, so two runs use
//! the same rules and the same traffic.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use couic_common::Cidr;

/// xorshift64*: small, fast, and good enough to spread addresses.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// Prefix lengths of the non-host rules, as (share in percent, shortest,
/// longest). About 90 % of rules are hosts; these describe the other 10 %.
/// Real blocklists are dominated by /24 (IPv4) and /48, /64 (IPv6), with few
/// very short prefixes.
const V4_NETS: &[(u64, u8, u8)] = &[(1, 8, 15), (29, 16, 23), (50, 24, 24), (20, 25, 31)];
const V6_NETS: &[(u64, u8, u8)] = &[
    (5, 32, 47),
    (40, 48, 48),
    (15, 49, 63),
    (30, 64, 64),
    (10, 65, 127),
];

/// Share of host rules (/32, /128), in percent.
pub const HOST_SHARE: u64 = 90;

fn random_ip(rng: &mut Rng, family: Family) -> IpAddr {
    match family {
        // Unicast-looking addresses: first octet 1..=223.
        Family::V4 => {
            let a = (rng.next() as u32 & 0x00ff_ffff) | ((1 + rng.below(223) as u32) << 24);
            IpAddr::V4(Ipv4Addr::from(a))
        }
        // Global unicast, 2000::/3.
        Family::V6 => {
            let a = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3 | (1u128 << 125);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    }
}

/// A random address inside `cidr`.
fn random_inside(rng: &mut Rng, cidr: Cidr) -> IpAddr {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    match cidr.addr() {
        IpAddr::V4(a) => {
            let mask = if host_bits == 0 {
                0
            } else {
                u32::MAX >> (32 - host_bits)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | (rng.next() as u32 & mask)))
        }
        IpAddr::V6(a) => {
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            let mask = if host_bits == 0 {
                0
            } else {
                u128::MAX >> (128 - host_bits)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | (r & mask)))
        }
    }
}

fn pick_len(rng: &mut Rng, family: Family) -> u8 {
    if rng.below(100) < HOST_SHARE {
        return family.bits();
    }
    let table = match family {
        Family::V4 => V4_NETS,
        Family::V6 => V6_NETS,
    };
    let mut roll = rng.below(table.iter().map(|t| t.0).sum());
    for &(share, lo, hi) in table {
        if roll < share {
            return lo + rng.below(u64::from(hi - lo) + 1) as u8;
        }
        roll -= share;
    }
    unreachable!("shares cover the roll")
}

/// A blocklist: the rules and a set-per-length index to test coverage.
pub struct Blocklist {
    pub family: Family,
    pub rules: Vec<Cidr>,
    by_len: Vec<HashSet<IpAddr>>,
}

impl Blocklist {
    /// A blocklist of one rule.
    pub fn single(family: Family, rule: Cidr) -> Self {
        let mut by_len = vec![HashSet::new(); usize::from(family.bits()) + 1];
        by_len[usize::from(rule.prefix_len())].insert(rule.addr());
        Blocklist {
            family,
            rules: vec![rule],
            by_len,
        }
    }

    /// `count` distinct rules of `family` with the mix above.
    pub fn generate(rng: &mut Rng, family: Family, count: usize) -> Self {
        let mut list = Blocklist {
            family,
            rules: Vec::with_capacity(count),
            by_len: vec![HashSet::new(); usize::from(family.bits()) + 1],
        };
        while list.rules.len() < count {
            let len = pick_len(rng, family);
            let ip = random_ip(rng, family);
            let cidr = Cidr::new(ip, len).expect("valid prefix").normalized();
            if list.by_len[usize::from(len)].insert(cidr.addr()) {
                list.rules.push(cidr);
            }
        }
        list
    }

    /// Whether some rule covers `ip`.
    pub fn covers(&self, ip: IpAddr) -> bool {
        (0..=self.family.bits()).any(|len| {
            let set = &self.by_len[usize::from(len)];
            !set.is_empty() && set.contains(&Cidr::new(ip, len).expect("valid").normalized().addr())
        })
    }

    /// `count` distinct sources covered by the rules. Rules are visited in
    /// random order, round after round: a host rule gives its address once,
    /// a network rule a new random address inside it each round. So with
    /// many rules most sources are hosts; with few, most fall in networks.
    pub fn hits(&self, rng: &mut Rng, count: usize) -> Vec<IpAddr> {
        let mut seen = HashSet::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        let mut order: Vec<usize> = (0..self.rules.len()).collect();
        while out.len() < count {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let before = out.len();
            for &r in &order {
                let ip = random_inside(rng, self.rules[r]);
                if seen.insert(ip) {
                    out.push(ip);
                    if out.len() == count {
                        break;
                    }
                }
            }
            assert!(
                out.len() > before,
                "the rules cannot give {count} distinct sources"
            );
        }
        out
    }

    /// `count` distinct sources no rule covers.
    pub fn misses(&self, rng: &mut Rng, count: usize) -> Vec<IpAddr> {
        let mut seen = HashSet::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let ip = random_ip(rng, self.family);
            if !self.covers(ip) && seen.insert(ip) {
                out.push(ip);
            }
        }
        out
    }
}

/// `total` sources, `hit_percent` of them covered, shuffled together.
pub fn traffic(rng: &mut Rng, list: &Blocklist, total: usize, hit_percent: usize) -> Vec<IpAddr> {
    let hits = total * hit_percent / 100;
    let mut all = list.hits(rng, hits);
    all.extend(list.misses(rng, total - hits));
    for i in (1..all.len()).rev() {
        all.swap(i, rng.below(i as u64 + 1) as usize);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_hits_and_misses_are_what_they_claim() {
        let mut rng = Rng::new(7);
        for family in [Family::V4, Family::V6] {
            let list = Blocklist::generate(&mut rng, family, 2_000);
            let hosts = list.rules.iter().filter(|c| c.is_host()).count();
            assert!((1_700..=1_900).contains(&hosts), "{hosts} hosts of 2000");
            assert!(list
                .hits(&mut rng, 3_000)
                .into_iter()
                .all(|ip| list.covers(ip)));
            assert!(list
                .misses(&mut rng, 500)
                .into_iter()
                .all(|ip| !list.covers(ip)));
        }
    }
}
