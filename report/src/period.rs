//! One aggregation period: what the reports of the period add up to, and
//! its [`Summary`] once it is closed.
//!
//! Per report the work is a few hash-map updates that move the strings
//! serde already allocated; tops are only ranked when the period closes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use couic_common::{Policy, Report, ReportAction};

use crate::network::Network;
use crate::topn::top_n;

/// How many tags and networks a summary ranks.
pub const TOP_N: usize = 5;
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

#[derive(Debug, Default)]
pub struct Period {
    /// Add reports by policy; their sum is the reference's "total".
    adds: [u64; 2],
    cidrs: HashSet<String>,
    tags: HashMap<String, u64>,
    networks: HashMap<Network, u64>,
    removed_expired: u64,
    removed_deleted: u64,
    nodes: HashSet<String>,
}

impl Period {
    /// Adds a batch to the period and tells what it held.
    pub fn record(&mut self, batch: Batch) -> Tally {
        let mut tally = Tally::default();
        if !batch.reports.is_empty() && !self.nodes.contains(&batch.node) {
            self.nodes.insert(batch.node);
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
                if let Some(network) = Network::of(&report.entry.cidr) {
                    *self.networks.entry(network).or_insert(0) += 1;
                }
                // `""` is how an untagged entry reads on removes; it is no tag.
                if let Some(tag) = report.entry.tag.filter(|t| !t.is_empty()) {
                    *self.tags.entry(tag).or_insert(0) += 1;
                }
                self.cidrs.insert(report.entry.cidr);
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

    pub fn total(&self) -> u64 {
        self.adds.iter().sum()
    }

    /// Ranks the tops; the period is over.
    pub fn close(self, length: Duration) -> Summary {
        Summary {
            length,
            total: self.total(),
            distinct: self.cidrs.len() as u64,
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
