//! One aggregation period: what the reports of the period add up to, and
//! its [`Summary`] once it is closed.
//!
//! Per report the work is a few hash-map updates that move the strings
//! serde already allocated; tops are only ranked when the period closes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use couic_common::{Cidr, Policy, Report, ReportAction};

use crate::network::Network;
use crate::topn::top_n;

/// How many tags and networks a summary ranks.
pub const TOP_N: usize = 5;
/// Most distinct CIDRs (and networks) a period keeps. The reference kept
/// every CIDR string of a period without bound: at 100,000 reports/s for 15
/// minutes, gigabytes. Past a cap a figure stops growing and the summary
/// says it is a lower bound ([`Summary::capped`]). Some 150 MB at most.
pub const MAX_DISTINCT_CIDRS: usize = 4_000_000;
pub const MAX_TAGS: usize = 100_000;
pub const MAX_NODES: usize = 10_000;
/// The metadata `kind` of the remove a daemon reports when an entry expires.
pub const EXPIRED_KIND: &str = "expired";

/// One accepted POST.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `X-Couic-Batch`, when the sender gave one.
    pub id: Option<String>,
    /// `X-Couic-Node`, else `User-Agent` (see README.md).
    pub node: String,
    pub reports: Vec<Report>,
}

/// What one batch held, by action, policy and tag, for the metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// `counts[action][policy]`, indexed by [`action_index`] and [`policy_index`].
    pub counts: [[u64; 2]; 2],
    /// Per tag (`""` when untagged), per action.
    pub tags: HashMap<String, [u64; 2]>,
}

pub fn action_index(action: ReportAction) -> usize {
    match action {
        ReportAction::Add => 0,
        ReportAction::Remove => 1,
    }
}

pub fn policy_index(policy: Policy) -> usize {
    match policy {
        Policy::Drop => 0,
        Policy::Ignore => 1,
    }
}

impl Tally {
    pub fn reports(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    fn count(&mut self, report: &Report) {
        let action = action_index(report.action);
        self.counts[action][policy_index(report.policy)] += 1;
        let tag = report.entry.tag.as_deref().unwrap_or("");
        match self.tags.get_mut(tag) {
            Some(per_action) => per_action[action] += 1,
            None => {
                let mut per_action = [0; 2];
                per_action[action] = 1;
                self.tags.insert(tag.to_string(), per_action);
            }
        }
    }
}

/// How much a period keeps; [`Caps::default`] is the named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub cidrs: usize,
    pub tags: usize,
    pub nodes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            cidrs: MAX_DISTINCT_CIDRS,
            tags: MAX_TAGS,
            nodes: MAX_NODES,
        }
    }
}

#[derive(Debug, Default)]
pub struct Period {
    caps: Caps,
    /// Add reports by policy; their sum is the reference's "total".
    adds: [u64; 2],
    /// Parsed, so that a CIDR costs a few bytes, not a string.
    cidrs: HashSet<Cidr>,
    /// Text that is no CIDR, which the reference counted all the same.
    not_cidrs: HashSet<String>,
    tags: HashMap<String, u64>,
    networks: HashMap<Network, u64>,
    removed_expired: u64,
    removed_deleted: u64,
    nodes: HashSet<String>,
    /// A cap was reached: some figures are lower bounds.
    capped: bool,
}

/// Counts one more of `key`, unless it is new and `map` is full.
fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, cap: usize) -> bool {
    if let Some(count) = map.get_mut(&key) {
        *count += 1;
        return true;
    }
    if map.len() < cap {
        map.insert(key, 1);
        return true;
    }
    false
}

/// Adds `key` unless it is new and `set` is full.
fn admit<K: std::hash::Hash + Eq>(set: &mut HashSet<K>, key: K, cap: usize) -> bool {
    if set.len() < cap || set.contains(&key) {
        set.insert(key);
        true
    } else {
        false
    }
}

impl Period {
    pub fn new(caps: Caps) -> Self {
        Period {
            caps,
            ..Period::default()
        }
    }

    /// An empty period with the same caps.
    pub fn next(&self) -> Period {
        Period::new(self.caps)
    }

    /// Adds a batch to the period and tells what it held.
    pub fn record(&mut self, batch: Batch) -> Tally {
        let mut tally = Tally::default();
        if !batch.reports.is_empty() {
            self.capped |= !admit(&mut self.nodes, batch.node, self.caps.nodes);
        }
        for report in batch.reports {
            tally.count(&report);
            self.record_one(report);
        }
        tally
    }

    fn record_one(&mut self, report: Report) {
        match report.action {
            ReportAction::Add => {
                self.adds[policy_index(report.policy)] += 1;
                // Both sets together stay under the cap.
                let mut kept = match report.entry.cidr.parse::<Cidr>() {
                    Ok(cidr) => {
                        let network = Network::containing(cidr);
                        let counted = bump(&mut self.networks, network, self.caps.cidrs);
                        let room = self.caps.cidrs.saturating_sub(self.not_cidrs.len());
                        admit(&mut self.cidrs, cidr, room) && counted
                    }
                    Err(_) => {
                        let room = self.caps.cidrs.saturating_sub(self.cidrs.len());
                        admit(&mut self.not_cidrs, report.entry.cidr, room)
                    }
                };
                // `""` is how an untagged entry reads on removes; it is no tag.
                if let Some(tag) = report.entry.tag.filter(|t| !t.is_empty()) {
                    kept &= bump(&mut self.tags, tag, self.caps.tags);
                }
                self.capped |= !kept;
            }
            ReportAction::Remove => {
                let expired = report
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.kind == EXPIRED_KIND);
                if expired {
                    self.removed_expired += 1;
                } else {
                    self.removed_deleted += 1;
                }
            }
        }
    }

    pub fn distinct(&self) -> u64 {
        (self.cidrs.len() + self.not_cidrs.len()) as u64
    }

    pub fn total(&self) -> u64 {
        self.adds.iter().sum()
    }

    /// Ranks the tops; the period is over.
    pub fn close(self, length: Duration) -> Summary {
        Summary {
            length,
            total: self.total(),
            distinct: self.distinct(),
            adds_drop: self.adds[policy_index(Policy::Drop)],
            adds_ignore: self.adds[policy_index(Policy::Ignore)],
            top_tags: top_n(&self.tags, TOP_N),
            top_networks: top_n(&self.networks, TOP_N)
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
            removed_expired: self.removed_expired,
            removed_deleted: self.removed_deleted,
            nodes: self.nodes.len() as u64,
            capped: self.capped,
        }
    }
}

/// The figures of a closed period, as the notifiers show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The configured period, for the title.
    pub length: Duration,
    /// Add reports (the reference's "Total CIDRs").
    pub total: u64,
    /// Distinct `entry.cidr` strings among the adds.
    pub distinct: u64,
    pub adds_drop: u64,
    pub adds_ignore: u64,
    /// Up to [`TOP_N`] tags of adds, highest count first.
    pub top_tags: Vec<(String, u64)>,
    /// Up to [`TOP_N`] /24 or /48 networks of adds, highest count first.
    pub top_networks: Vec<(String, u64)>,
    /// Removes whose metadata kind is `expired`.
    pub removed_expired: u64,
    /// Every other remove.
    pub removed_deleted: u64,
    /// Distinct senders of at least one report.
    pub nodes: u64,
    /// A period cap was reached ([`MAX_DISTINCT_CIDRS`], [`MAX_TAGS`],
    /// [`MAX_NODES`]): `distinct`, the tops and `nodes` are lower bounds.
    pub capped: bool,
}

impl Summary {
    /// The reference's "top tag".
    pub fn top_tag(&self) -> Option<(&str, u64)> {
        self.top_tags.first().map(|(t, c)| (t.as_str(), *c))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use couic_common::{Entry, Metadata};

    pub fn report(action: ReportAction, cidr: &str, tag: Option<&str>) -> Report {
        Report {
            action,
            policy: Policy::Drop,
            entry: Entry {
                creation: 1_700_000_000,
                cidr: cidr.to_string(),
                tag: tag.map(str::to_string),
                expiration: 0,
            },
            metadata: None,
        }
    }

    pub fn batch(node: &str, reports: Vec<Report>) -> Batch {
        Batch {
            id: None,
            node: node.to_string(),
            reports,
        }
    }

    fn add(cidr: &str, tag: Option<&str>) -> Report {
        report(ReportAction::Add, cidr, tag)
    }

    #[test]
    fn totals_distinct_and_top_tag_as_the_reference() {
        let mut p = Period::default();
        p.record(batch(
            "n1",
            vec![
                add("1.1.1.1/32", Some("ssh")),
                add("1.1.1.1/32", Some("ssh")),
                add("2.2.2.2/32", Some("web")),
                add("3.3.3.3/32", None),
                report(ReportAction::Remove, "1.1.1.1/32", Some("ssh")),
            ],
        ));
        let s = p.close(Duration::from_secs(900));
        assert_eq!(s.total, 4);
        assert_eq!(s.distinct, 3);
        assert_eq!(s.top_tag(), Some(("ssh", 2)));
        assert_eq!(s.top_tags, vec![("ssh".into(), 2), ("web".into(), 1)]);
        assert_eq!(s.removed_deleted, 1);
        assert_eq!(s.removed_expired, 0);
    }

    #[test]
    fn removes_split_by_expiry() {
        let mut p = Period::default();
        let mut expired = report(ReportAction::Remove, "1.1.1.1/32", Some(""));
        expired.metadata = Some(Metadata {
            kind: "expired".into(),
            detail: "expiration reached".into(),
            extra: None,
        });
        let mut other = expired.clone();
        other.metadata.as_mut().unwrap().kind = "manual".into();
        p.record(batch("n1", vec![expired.clone(), expired, other]));
        p.record(batch(
            "n1",
            vec![report(ReportAction::Remove, "1.1.1.1/32", None)],
        ));
        let s = p.close(Duration::from_secs(60));
        assert_eq!((s.removed_expired, s.removed_deleted), (2, 2));
        assert_eq!(s.total, 0);
        assert_eq!(s.top_tag(), None);
    }

    #[test]
    fn top_networks_and_empty_tags() {
        let mut p = Period::default();
        let mut reports = Vec::new();
        for host in 1..=3 {
            reports.push(add(&format!("10.0.0.{host}/32"), Some("")));
        }
        reports.push(add("2001:db8:1:2::1/128", None));
        reports.push(add("2001:db8:1:3::1/128", None));
        reports.push(add("192.0.2.1/32", None));
        reports.push(add("not a cidr", None));
        p.record(batch("n1", reports));
        let s = p.close(Duration::from_secs(60));
        assert_eq!(s.total, 7);
        assert_eq!(
            s.top_networks,
            vec![
                ("10.0.0.0/24".into(), 3),
                ("2001:db8:1::/48".into(), 2),
                ("192.0.2.0/24".into(), 1),
            ]
        );
        assert!(s.top_tags.is_empty(), "\"\" is no tag");
    }

    #[test]
    fn top_five_only() {
        let mut p = Period::default();
        let mut reports = Vec::new();
        for (i, tag) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
            for n in 0..=i {
                reports.push(add(&format!("10.{i}.{n}.1/32"), Some(tag)));
            }
        }
        p.record(batch("n1", reports));
        let s = p.close(Duration::from_secs(60));
        let tags: Vec<&str> = s.top_tags.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["g", "f", "e", "d", "c"]);
        assert_eq!(s.top_networks.len(), TOP_N);
        assert_eq!(
            s.top_networks[0],
            ("10.0.0.0/24".into(), 1),
            "ties by network"
        );
    }

    #[test]
    fn nodes_and_policies() {
        let mut p = Period::default();
        let mut ignore = add("5.5.5.5/32", None);
        ignore.policy = Policy::Ignore;
        p.record(batch("couic/1.0.2", vec![add("1.1.1.1/32", None)]));
        p.record(batch("edge-1", vec![add("1.1.1.1/32", None), ignore]));
        p.record(batch("edge-1", vec![add("2.2.2.2/32", None)]));
        p.record(batch("idle", vec![]));
        let s = p.close(Duration::from_secs(60));
        assert_eq!(s.nodes, 2);
        assert_eq!((s.adds_drop, s.adds_ignore), (3, 1));
        assert_eq!(s.distinct, 3);
    }

    #[test]
    fn caps_bound_the_period_and_say_so() {
        let caps = Caps {
            cidrs: 3,
            tags: 2,
            nodes: 1,
        };
        let mut p = Period::new(caps);
        p.record(batch(
            "n1",
            vec![
                add("1.1.1.1/32", Some("a")),
                add("1.1.1.1/32", Some("b")),
                add("junk", Some("a")),
                add("2.2.2.2/32", Some("b")),
            ],
        ));
        assert!(!p.capped);
        p.record(batch("n1", vec![add("2.2.2.2/32", Some("a"))]));
        assert!(!p.capped, "known values fit");
        p.record(batch("n2", vec![add("3.3.3.3/32", Some("c"))]));
        assert!(p.capped);
        let next = p.next();
        let s = p.close(Duration::from_secs(60));
        assert_eq!(s.total, 6, "every add is counted");
        assert_eq!(s.distinct, 3);
        assert_eq!(s.nodes, 1);
        assert_eq!(s.top_tags, vec![("a".into(), 3), ("b".into(), 2)]);
        assert!(s.capped);
        assert_eq!(next.caps, caps);
        assert!(!next.capped);
    }

    #[test]
    fn tally_by_action_policy_and_tag() {
        let mut p = Period::default();
        let mut ignore = add("5.5.5.5/32", Some("lan"));
        ignore.policy = Policy::Ignore;
        let tally = p.record(batch(
            "n",
            vec![
                add("1.1.1.1/32", Some("ssh")),
                add("1.1.1.2/32", Some("ssh")),
                ignore,
                report(ReportAction::Remove, "1.1.1.1/32", Some("")),
                report(ReportAction::Remove, "1.1.1.3/32", None),
            ],
        ));
        assert_eq!(tally.counts, [[2, 1], [2, 0]]);
        assert_eq!(tally.reports(), 5);
        assert_eq!(tally.tags["ssh"], [2, 0]);
        assert_eq!(tally.tags["lan"], [1, 0]);
        assert_eq!(tally.tags[""], [0, 2]);
    }
}
