//! This node's deletes still queued when couic stops with the server away:
//! kept in `<working_dir>/state/fleet-deletes`, one `<policy> <cidr>` a
//! line, and queued again at the next start, before the catch-up could
//! bring their entries back from the bucket. (Entries need no such file:
//! the reconciliation writes again those the bucket lacks.)

use std::path::Path;

use couic_common::{Cidr, Policy};

use super::local::FleetKey;

pub const FILE: &str = "fleet-deletes";

/// Writes `keys` to `dir`'s file (mode 0600), in place of any before.
pub fn save(dir: &Path, keys: &[FleetKey]) -> std::io::Result<()> {
    let mut text = String::with_capacity(keys.len() * 24);
    for (policy, cidr) in keys {
        text.push_str(&format!("{policy} {cidr}\n"));
    }
    super::replace_file(dir, FILE, text.as_bytes())
}

/// The keys kept in `dir`'s file, which is removed: none when there is
/// no file. Lines that are not `<policy> <cidr>` are skipped and counted.
pub fn take(dir: &Path) -> std::io::Result<(Vec<FleetKey>, usize)> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let (keys, bad) = parse(&text);
    std::fs::remove_file(&path)?;
    Ok((keys, bad))
}

fn parse(text: &str) -> (Vec<FleetKey>, usize) {
    let mut keys = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split_once(' ').and_then(|(policy, cidr)| {
            let policy: Policy = policy.parse().ok()?;
            let cidr: Cidr = cidr.trim().parse().ok()?;
            Some((policy, cidr.normalized()))
        });
        match key {
            Some(key) => keys.push(key),
            None => bad += 1,
        }
    }
    (keys, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_kept_come_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![
            (Policy::Drop, "192.0.2.0/24".parse().unwrap()),
            (Policy::Ignore, "2001:db8::/32".parse().unwrap()),
        ];
        save(dir.path(), &keys).unwrap();
        assert_eq!(take(dir.path()).unwrap(), (keys, 0));
        assert_eq!(take(dir.path()).unwrap(), (Vec::new(), 0));
    }

    #[test]
    fn bad_lines_are_skipped_and_counted() {
        let (keys, bad) = parse("drop 10.0.0.0/8\ndeny 10.0.0.0/8\nignore nope\n\ndrop\n");
        assert_eq!(keys, [(Policy::Drop, "10.0.0.0/8".parse().unwrap())]);
        assert_eq!(bad, 3);
    }
}
