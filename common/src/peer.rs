//! Peer batch jobs (§3.4), exchanged on `POST /v1/{policy}/peer`.

use serde::{Deserialize, Serialize};

use crate::entry::Metadata;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerAction {
    Add,
    Remove,
}

/// The entry part of a job; text fields are validated by the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub cidr: String,
    #[serde(default)]
    pub tag: Option<String>,
    pub expiration: u64,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerJob {
    pub action: PeerAction,
    pub entry: PeerEntry,
}

/// Entries are spread over this many shards for catch-up (`GET
/// /v1/{policy}/peer/digest`, `PUT /v1/{policy}/peer/shard/{k}`).
pub const SHARDS: usize = 64;

/// FNV-1a, 64 bits: fixed by its definition, so every node and version
/// computes the same (unlike std's hasher or the store's seeded one).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a 64 fed with what is formatted into it: the hash of a value's
/// text without building the text.
struct Fnv(u64);

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}

/// `fnv1a64` of `args` formatted.
fn fnv_of(args: std::fmt::Arguments<'_>) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    std::fmt::Write::write_fmt(&mut h, args).expect("hashing cannot fail");
    h.0
}

/// The shard of a CIDR, from its normalised text (any `Display` of it:
/// `Cidr` or its text).
pub fn shard_of(cidr: impl std::fmt::Display) -> usize {
    (fnv_of(format_args!("{cidr}")) % SHARDS as u64) as usize
}

/// One shard of a [`PeerDigest`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardDigest {
    pub count: u64,
    /// The wrapping sum of `fnv1a64("<cidr>|<tag>|<expiration>")` of its
    /// entries: independent of their order.
    pub sum: u64,
}

/// What one node holds from another, per shard: two nodes that agree on
/// every shard hold the same entries (up to a hash collision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDigest {
    pub shards: Vec<ShardDigest>,
}

impl Default for PeerDigest {
    fn default() -> Self {
        PeerDigest {
            shards: vec![ShardDigest::default(); SHARDS],
        }
    }
}

impl PeerDigest {
    /// Counts an entry (`tag` "" when untagged; `cidr` normalised, as
    /// text or `Cidr`); returns its shard.
    pub fn add(&mut self, cidr: impl std::fmt::Display, tag: &str, expiration: u64) -> usize {
        let shard = shard_of(&cidr);
        let line = fnv_of(format_args!("{cidr}|{tag}|{expiration}"));
        let s = &mut self.shards[shard];
        s.count += 1;
        s.sum = s.sum.wrapping_add(line);
        shard
    }

    /// The shards that differ from `other` (all of them when `other` is
    /// malformed).
    pub fn differing(&self, other: &PeerDigest) -> Vec<usize> {
        if other.shards.len() != SHARDS {
            return (0..SHARDS).collect();
        }
        (0..SHARDS)
            .filter(|&k| self.shards[k] != other.shards[k])
            .collect()
    }
}

/// How a peer link is doing (`GET /v1/peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// The last attempt worked.
    Ok,
    /// The last attempt failed; the queue is kept and retried with backoff.
    Retrying,
    /// The queue overflowed and was dropped: a resync is due.
    Behind,
    /// Comparing digests and sending the shards that differ.
    Resyncing,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerState::Ok => "ok",
            PeerState::Retrying => "retrying",
            PeerState::Behind => "behind",
            PeerState::Resyncing => "resyncing",
        })
    }
}

/// One peer's status (`GET /v1/peers`): never its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub url: String,
    pub state: PeerState,
    /// Jobs waiting, the batch being sent included.
    pub queued: u64,
    /// Jobs the peer acknowledged.
    pub jobs_sent: u64,
    /// Jobs dropped when the queue overflowed (repaired by a resync).
    pub jobs_dropped: u64,
    /// Shards sent by resyncs.
    pub shards_resynced: u64,
    /// Unix seconds of the last success; null before the first.
    pub last_success: Option<u64>,
    /// The last failure, and when (Unix seconds); null when none yet.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_is_the_standard_one() {
        // Published test vectors of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            fnv_of(format_args!("{}{}", "foo", "bar")),
            fnv1a64(b"foobar")
        );
    }

    #[test]
    fn digests_ignore_order_and_see_every_field() {
        let entries = [
            ("10.0.0.1/32", "", 0),
            ("2001:db8::/32", "t", 5),
            ("10.0.0.0/8", "x", 0),
        ];
        let mut a = PeerDigest::default();
        let mut b = PeerDigest::default();
        for (c, t, e) in entries {
            a.add(c, t, e);
        }
        for (c, t, e) in entries.iter().rev() {
            b.add(c, t, *e);
        }
        assert_eq!(a, b);
        assert!(a.differing(&b).is_empty());
        assert_eq!(a.shards.iter().map(|s| s.count).sum::<u64>(), 3);
        // A tag, an expiration, an entry more: the entry's shard differs.
        for (c, t, e) in [
            ("10.0.0.1/32", "y", 0),
            ("10.0.0.1/32", "", 1),
            ("10.0.0.2/32", "", 0),
        ] {
            let mut c2 = a.clone();
            let shard = c2.add(c, t, e);
            assert_eq!(c2.differing(&a), vec![shard]);
        }
        assert_eq!(a.differing(&PeerDigest { shards: vec![] }).len(), SHARDS);
        // The shard of a CIDR is fixed for every version.
        assert_eq!(
            shard_of("10.0.0.1/32"),
            (fnv1a64(b"10.0.0.1/32") % 64) as usize
        );
    }
}
