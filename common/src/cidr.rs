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
    /// the family's range. `ipnet`'s own parser already refuses a missing
    /// prefix, spaces, `//` and a trailing `/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').ok_or(CidrError)?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
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
        ] {
            assert_eq!(bad.parse::<Cidr>(), Err(CidrError), "{bad:?}");
        }
        assert!("0.0.0.0/0".parse::<Cidr>().is_ok());
        assert!("::/0".parse::<Cidr>().unwrap().prefix_len() == 0);
        assert!("1.2.3.4/32".parse::<Cidr>().unwrap().is_host());
    }
}
