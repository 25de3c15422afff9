//! CIDR blocks as the contract writes them: `address/prefix`, prefix mandatory.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed CIDR. [`Cidr::normalized`] clears host bits; the parsed value
/// keeps them (set files echo entries as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(IpNet);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IP address syntax")]
pub struct CidrError;

pub const IPV4_MAX_PREFIX: u8 = 32;
pub const IPV6_MAX_PREFIX: u8 = 128;

/// A decimal octet of a dotted quad: 0 to 255, no leading zero.
const DEC_OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
/// One group of an IPv6 address.
const H16: &str = "[0-9A-Fa-f]{1,4}";
/// Prefix lengths in decimal without a leading zero: 0-32, 0-128.
const IPV4_PREFIX: &str = "(?:3[0-2]|[12][0-9]|[0-9])";
const IPV6_PREFIX: &str = "(?:12[0-8]|1[01][0-9]|[1-9][0-9]|[0-9])";

fn ipv4_pattern() -> String {
    format!("{DEC_OCTET}\\.{DEC_OCTET}\\.{DEC_OCTET}\\.{DEC_OCTET}")
}

/// RFC 3986's `IPv6address`, the grammar std's parser follows: eight
/// groups, or fewer around one `::` standing for at least one, the last
/// two of which may be a dotted quad.
fn ipv6_pattern() -> String {
    let ls32 = format!("(?:{H16}:{H16}|{})", ipv4_pattern());
    let groups = |n: usize| format!("(?:{H16}:){{{n}}}");
    let mut forms = vec![
        format!("{}{ls32}", groups(6)),
        format!("::{}{ls32}", groups(5)),
    ];
    // [ *k( h16 ":" ) h16 ] "::" and what may follow, for k = 0..6.
    let tails = [
        format!("{}{ls32}", groups(4)),
        format!("{}{ls32}", groups(3)),
        format!("{}{ls32}", groups(2)),
        format!("{}{ls32}", groups(1)),
        ls32.clone(),
        H16.to_string(),
        String::new(),
    ];
    for (k, tail) in tails.iter().enumerate() {
        forms.push(format!("(?:(?:{H16}:){{0,{k}}}{H16})?::{tail}"));
    }
    format!("(?:{})", forms.join("|"))
}

/// What [`IpAddr`]'s parser takes, as a JSON-schema (ECMA 262) pattern: a
/// dotted quad or an IPv6 address, no brackets, no zone. A test checks the
/// two agree.
pub fn ip_pattern() -> String {
    format!("^(?:{}|{})$", ipv4_pattern(), ipv6_pattern())
}

/// What [`Cidr`]'s parser takes, as a JSON-schema pattern: an address, `/`
/// and a prefix length within its family's range. A test checks the two
/// agree.
pub fn cidr_pattern() -> String {
    format!(
        "^(?:{}/{IPV4_PREFIX}|{}/{IPV6_PREFIX})$",
        ipv4_pattern(),
        ipv6_pattern()
    )
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        IpNet::new(addr, prefix).map(Cidr).map_err(|_| CidrError)
    }

    /// The network: host bits cleared (`192.168.1.100/24` -> `192.168.1.0/24`).
    pub fn normalized(self) -> Self {
        Cidr(self.0.trunc())
    }

    pub fn addr(self) -> IpAddr {
        self.0.addr()
    }

    pub fn prefix_len(self) -> u8 {
        self.0.prefix_len()
    }

    pub fn max_prefix_len(self) -> u8 {
        self.0.max_prefix_len()
    }

    pub fn is_ipv4(self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }

    /// A single host: /32 for IPv4, /128 for IPv6.
    pub fn is_host(self) -> bool {
        self.prefix_len() == self.max_prefix_len()
    }

    pub fn net(self) -> IpNet {
        self.0
    }

    pub fn contains(self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// The two path segments of the entry routes: `/v1/drop/<addr>/<prefix>`.
    pub fn path(self) -> String {
        format!("{}/{}", self.addr(), self.prefix_len())
    }
}

impl From<Ipv4Net> for Cidr {
    fn from(net: Ipv4Net) -> Self {
        Cidr(IpNet::V4(net))
    }
}

impl From<Ipv6Net> for Cidr {
    fn from(net: Ipv6Net) -> Self {
        Cidr(IpNet::V6(net))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Strict: exactly `address/prefix`, no whitespace, decimal prefix within
    /// the family's range without a leading zero (so that
    /// [`cidr_pattern`] says the same).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').ok_or(CidrError)?;
        if prefix.is_empty()
            || !prefix.bytes().all(|b| b.is_ascii_digit())
            || (prefix.len() > 1 && prefix.starts_with('0'))
        {
            return Err(CidrError);
        }
        let addr: IpAddr = addr.parse().map_err(|_| CidrError)?;
        let prefix: u8 = prefix.parse().map_err(|_| CidrError)?;
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_host_bits() {
        let c: Cidr = "192.168.1.100/24".parse().unwrap();
        assert_eq!(c.to_string(), "192.168.1.100/24");
        assert_eq!(c.normalized().to_string(), "192.168.1.0/24");
        let c: Cidr = "2001:DB8::1/32".parse().unwrap();
        assert_eq!(c.normalized().to_string(), "2001:db8::/32");
        let c: Cidr = "::ffff:192.168.1.7/120".parse().unwrap();
        assert_eq!(c.normalized().to_string(), "::ffff:192.168.1.0/120");
        assert!(!c.is_ipv4());
    }

    #[test]
    fn refuses_everything_but_addr_slash_prefix() {
        for bad in [
            "",
            "192.168.1.0",
            "192.168.1.0/",
            "192.168.1.0//24",
            "192.168.1.0/33",
            " 1.1.1.1/32",
            "1.1.1.1/32 ",
            "1.1.1.1/-1",
            "1.1.1.1/+1",
            "1.1.1.1/a",
            "::/129",
            "[::1]/128",
            "fe80::1%eth0/64",
            "1.1.1.1/ 32",
            "1.1.1.1/032",
            "::/00",
        ] {
            assert_eq!(bad.parse::<Cidr>(), Err(CidrError), "{bad:?}");
        }
        assert!("0.0.0.0/0".parse::<Cidr>().is_ok());
        assert!("::/0".parse::<Cidr>().unwrap().prefix_len() == 0);
        assert!("1.2.3.4/32".parse::<Cidr>().unwrap().is_host());
    }

    /// A small deterministic generator of address-like text.
    struct Texts(u64);

    impl Texts {
        fn next(&mut self) -> u64 {
            // xorshift64
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "0", "1", "9", "00", "01", "10", "25", "99", "255", "256", "1000", "f", "F", "ab",
                "ffff", "fffff", "0000", "g", ":", "::", ":::", ".", "..", "/", "//", "32", "33",
                "128", "129", "032", " ", "%", "[", "1.2.3.4", "::ffff:", "1:2:3:4:", "5:6:7:8",
            ];
            let n = 1 + self.next() % 12;
            (0..n)
                .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn the_patterns_are_the_parsers_rules() {
        let ip = regex_lite::Regex::new(&ip_pattern()).unwrap();
        let cidr = regex_lite::Regex::new(&cidr_pattern()).unwrap();
        let known = [
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1:2:3:4:5::1.2.3.4",
            "1:2:3:4:5:6::1.2.3.4",
            "1.2.3.4::",
            "::01.2.3.4",
            "00000::1",
            "0000::1",
            "01.2.3.4",
            "255.255.255.255",
        ];
        let mut texts = Texts(0x9e37_79b9_7f4a_7c15);
        let mut both = [0usize; 2];
        for text in known
            .iter()
            .map(|s| s.to_string())
            .chain((0..100_000).map(|_| texts.text()))
        {
            let (addr, with_prefix) = match text.split_once('/') {
                Some((a, _)) => (a.to_string(), text.clone()),
                None => (text.clone(), format!("{text}/24")),
            };
            let parsed = addr.parse::<IpAddr>().is_ok();
            assert_eq!(ip.is_match(&addr), parsed, "{addr:?}");
            both[usize::from(parsed)] += 1;
            assert_eq!(
                cidr.is_match(&with_prefix),
                with_prefix.parse::<Cidr>().is_ok(),
                "{with_prefix:?}"
            );
        }
        // Both sides were tried often.
        assert!(both[0] > 1000 && both[1] > 1000, "{both:?}");
    }
}
