//! Bucket keys: `<policy>.<address>.<prefix length>`, the CIDR's network
//! address in its usual text with `.` written `_` and `:` written `-`,
//! since NATS keys take neither `:` nor a `.` inside a token:
//! `drop.192_0_2_0.24`, `ignore.2001-db8--.32`, `drop.--.0`. The text is
//! the address's canonical form, so that one CIDR has one key; a key in
//! any other form is not couic's and is skipped.

use std::fmt::Write;
use std::net::IpAddr;

use couic_common::{Cidr, Policy};

/// The key of `cidr` (normalised) in `policy`.
pub fn encode(policy: Policy, cidr: Cidr) -> String {
    let mut key = String::with_capacity(56);
    key.push_str(policy.as_str());
    key.push('.');
    key.push_str(Text::of(cidr.addr()).as_str());
    let _ = write!(key, ".{}", cidr.prefix_len());
    key
}

/// An address in its usual text (45 bytes at most), `.` written `_` and
/// `:` written `-` (an IPv6 address may end in a dotted quad:
/// `::ffff:192.0.2.1`), made without allocating.
struct Text {
    bytes: [u8; 45],
    len: usize,
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            let slot = self.bytes.get_mut(self.len).ok_or(std::fmt::Error)?;
            *slot = match b {
                b'.' => b'_',
                b':' => b'-',
                b => b,
            };
            self.len += 1;
        }
        Ok(())
    }
}

impl Text {
    fn of(addr: IpAddr) -> Text {
        let mut text = Text {
            bytes: [0; 45],
            len: 0,
        };
        write!(text, "{addr}").expect("an address fits in 45 bytes");
        text
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("ASCII")
    }
}

/// The policy and CIDR of a key made by [`encode`]; `None` for any other.
pub fn decode(key: &str) -> Option<(Policy, Cidr)> {
    let mut parts = key.split('.');
    let policy: Policy = parts.next()?.parse().ok()?;
    let addr = parts.next()?;
    let prefix = parts.next()?;
    if parts.next().is_some() || prefix.len() > 3 || (prefix.len() > 1 && prefix.starts_with('0')) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    if addr.len() > 45 {
        return None;
    }
    // The address back in its usual text, on the stack.
    let mut text = [0u8; 45];
    for (t, b) in text.iter_mut().zip(addr.bytes()) {
        *t = match b {
            b'_' => b'.',
            b'-' => b':',
            b => b,
        };
    }
    let ip: IpAddr = std::str::from_utf8(&text[..addr.len()])
        .ok()?
        .parse()
        .ok()?;
    let cidr = Cidr::new(ip, prefix).ok()?;
    // One CIDR, one key: the canonical text only.
    (cidr.normalized() == cidr && Text::of(ip).as_str() == addr).then_some((policy, cidr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip_for_both_families() {
        for (policy, c, key) in [
            (Policy::Drop, "192.0.2.0/24", "drop.192_0_2_0.24"),
            (Policy::Ignore, "2001:db8::/32", "ignore.2001-db8--.32"),
            (Policy::Drop, "::/0", "drop.--.0"),
            (Policy::Drop, "0.0.0.0/0", "drop.0_0_0_0.0"),
            (
                Policy::Drop,
                "::ffff:192.0.2.1/128",
                "drop.--ffff-192_0_2_1.128",
            ),
            (Policy::Drop, "2001:db8::1/128", "drop.2001-db8--1.128"),
        ] {
            assert_eq!(encode(policy, cidr(c)), key);
            assert_eq!(decode(key), Some((policy, cidr(c))), "{key}");
        }
    }

    #[test]
    fn keys_take_only_what_nats_allows() {
        let key = encode(Policy::Ignore, cidr("fe80::1:2:3:4/64"));
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    }

    #[test]
    fn foreign_and_non_canonical_keys_are_refused() {
        for key in [
            "",
            "drop",
            "drop.192_0_2_0",
            "drop.192_0_2_1.24",
            "drop.192_0_2_0.024",
            "drop.192_0_2_0.33",
            "deny.192_0_2_0.24",
            "drop.2001-0db8--.32",
            "drop.192_0_2_0.24.x",
            "drop.x.24",
        ] {
            assert_eq!(decode(key), None, "{key}");
        }
    }
}
