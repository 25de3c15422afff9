//! The networks of the "top networks" figure: a reported CIDR counts under
//! its /24 (IPv4) or /48 (IPv6), so that many hosts of one network rank
//! together. A CIDR wider than that counts as itself.

use std::fmt;

use couic_common::Cidr;

pub const IPV4_PREFIX: u8 = 24;
pub const IPV6_PREFIX: u8 = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network(Cidr);

impl Network {
    /// `None` for text that is not a CIDR: the reference accepted any
    /// string, so such a report still counts, only not here.
    pub fn of(cidr: &str) -> Option<Network> {
        cidr.parse().ok().map(Network::containing)
    }

    pub fn containing(cidr: Cidr) -> Network {
        let widest = if cidr.is_ipv4() {
            IPV4_PREFIX
        } else {
            IPV6_PREFIX
        };
        let prefix = cidr.prefix_len().min(widest);
        // A shorter prefix of a valid CIDR is always valid.
        let wide = Cidr::new(cidr.addr(), prefix).unwrap_or(cidr);
        Network(wide.normalized())
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> String {
        Network::of(s).unwrap().to_string()
    }

    #[test]
    fn hosts_group_by_24_and_48() {
        assert_eq!(net("192.0.2.77/32"), "192.0.2.0/24");
        assert_eq!(net("192.0.2.128/25"), "192.0.2.0/24");
        assert_eq!(net("2001:db8:1:2::5/128"), "2001:db8:1::/48");
        assert_eq!(net("2001:db8:1:ff00::/56"), "2001:db8:1::/48");
        assert_eq!(Network::of("192.0.2.1/32"), Network::of("192.0.2.254/32"));
    }

    #[test]
    fn wider_networks_count_as_themselves() {
        assert_eq!(net("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(net("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(net("0.0.0.0/0"), "0.0.0.0/0");
    }

    #[test]
    fn not_a_cidr() {
        assert_eq!(Network::of("example"), None);
        assert_eq!(Network::of("1.2.3.4"), None);
    }
}
