//! Fleet sync through a NATS JetStream key-value bucket (`[fleet]`).
//!
//! Every node writes its API changes to one bucket, a key per policy and
//! CIDR holding the entry's last word ([`key`], [`value`]), and watches
//! the whole bucket: at start the last word of every key (the catch-up),
//! then each new one. Every node applies every word in the bucket's
//! revision order, its own included, so that two nodes writing one CIDR
//! end with the same entry: the later revision's. A delete is the bucket's
//! delete marker; an expired entry is purged by the node that wrote it,
//! on the condition that the key is still at the revision it expired at.
//!
//! The parts without a server are here: the keys, the values, the bounded
//! outbox of this node's changes ([`outbox`]), the gate that keeps an
//! older word from undoing a newer local change still on its way
//! ([`gate`]), both driven by the MapWriter through [`local`], the
//! reconciliation after a catch-up ([`reconcile`]) and the status
//! ([`status`]). The connection is [`link`]; the actor that holds it and
//! hands the bucket's words to the MapWriter is `actors::fleet_sync`.

pub mod carried;
pub mod gate;
pub mod key;
pub mod lapsed;
pub mod link;
pub mod local;
pub mod notice;
pub mod outbox;
pub mod reconcile;
pub mod sequencer;
pub mod status;
pub mod synced;
pub mod value;

/// Writes `text` to `dir`'s file `name` (mode 0600), synced, in place of
/// any before: a crash leaves the old file or the new, whole.
fn replace_file(dir: &std::path::Path, name: &str, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = crate::journal::create_private(&temporary)?;
    file.write_all(text)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))
}

/// A bucket name NATS takes: 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn valid_bucket(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// A node name: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_node(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// This machine's host name, as the kernel has it ("localhost" if unset).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_bucket("couic") && valid_bucket("fleet_A-1"));
        assert!(!valid_bucket("") && !valid_bucket("a.b") && !valid_bucket("a b"));
        assert!(!valid_bucket(&"a".repeat(65)));
        assert!(valid_node("edge-1.par") && !valid_node("edge 1") && !valid_node(""));
    }
}
