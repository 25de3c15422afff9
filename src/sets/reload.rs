//! The reload plan: what the set files ask for, and how it differs from the
//! set entries currently applied.
//!
//! Reading the files builds a [`SetsTarget`]; the MapWriter compares it with
//! the store through [`plan`] and applies only the difference, so a reload in
//! which one line of 262,144 changed writes one map entry.

use std::collections::HashMap;

use couic_common::{Cidr, Policy, SET_TAG_SUFFIX};

/// What the set files of one policy ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTarget {
    /// Tags (`<stem>.couic`), one per file, in file name order.
    tags: Vec<String>,
    /// Normalised CIDR -> index in `tags` of the first file listing it.
    entries: HashMap<Cidr, u32>,
}

impl PolicyTarget {
    /// Adds the entries of the file whose stem is `stem`. Files must come in
    /// name order: a CIDR already listed by an earlier file keeps that file's
    /// tag, so the tag of a CIDR in several files is deterministic.
    pub fn add_file(&mut self, stem: &str, cidrs: impl IntoIterator<Item = Cidr>) {
        let index = self.tags.len() as u32;
        self.tags.push(format!("{stem}{SET_TAG_SUFFIX}"));
        for cidr in cidrs {
            self.entries.entry(cidr.normalized()).or_insert(index);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn tag(&self, index: u32) -> &str {
        &self.tags[index as usize]
    }

    pub fn tag_of(&self, cidr: Cidr) -> Option<&str> {
        self.entries.get(&cidr).map(|&i| self.tag(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = (Cidr, &str)> {
        self.entries.iter().map(|(c, &i)| (*c, self.tag(i)))
    }
}

/// The set files of both policies, read and validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetsTarget {
    pub ignore: PolicyTarget,
    pub drop: PolicyTarget,
}

impl SetsTarget {
    pub fn policy(&self, policy: Policy) -> &PolicyTarget {
        match policy {
            Policy::Drop => &self.drop,
            Policy::Ignore => &self.ignore,
        }
    }

    pub fn policy_mut(&mut self, policy: Policy) -> &mut PolicyTarget {
        match policy {
            Policy::Drop => &mut self.drop,
            Policy::Ignore => &mut self.ignore,
        }
    }
}

/// The difference between a policy's target and its current set entries.
/// Tags are indexes into the target's tag list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Set entries no file lists any more.
    pub remove: Vec<Cidr>,
    /// Set entries now listed under another file (renamed or moved).
    pub retag: Vec<(Cidr, u32)>,
    /// CIDRs that are not set entries yet (absent, or API/peer entries).
    pub add: Vec<(Cidr, u32)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.retag.is_empty() && self.add.is_empty()
    }
}

/// What a reload did to one policy (logged as `sets reload: ...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Entries re-tagged (file renamed, line moved to another file).
    pub updated: usize,
    pub removed: usize,
    /// New set entries, including API/peer entries they now shadow.
    pub created: usize,
    /// API/peer entries back in force after the set line shadowing them went.
    pub restored: usize,
}

/// Compares `target` with `current`, the set entries of the policy and their
/// tags; `is_current` answers whether a CIDR is one of them. Unchanged
/// entries appear nowhere in the plan.
pub fn plan<'a>(
    target: &PolicyTarget,
    current: impl Iterator<Item = (Cidr, &'a str)>,
    is_current: impl Fn(Cidr) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    for (cidr, tag) in current {
        match target.entries.get(&cidr) {
            None => plan.remove.push(cidr),
            Some(&index) if target.tag(index) != tag => plan.retag.push((cidr, index)),
            Some(_) => {}
        }
    }
    for (&cidr, &index) in &target.entries {
        if !is_current(cidr) {
            plan.add.push((cidr, index));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse::<Cidr>().unwrap().normalized()
    }

    fn target(files: &[(&str, &[&str])]) -> PolicyTarget {
        let mut t = PolicyTarget::default();
        for (stem, lines) in files {
            t.add_file(stem, lines.iter().map(|l| l.parse::<Cidr>().unwrap()));
        }
        t
    }

    fn run(t: &PolicyTarget, current: &[(&str, &str)]) -> (Vec<String>, Vec<String>, Vec<String>) {
        let current: HashMap<Cidr, String> = current
            .iter()
            .map(|(c_, t_)| (c(c_), t_.to_string()))
            .collect();
        let p = plan(t, current.iter().map(|(k, v)| (*k, v.as_str())), |k| {
            current.contains_key(&k)
        });
        let mut remove: Vec<String> = p.remove.iter().map(ToString::to_string).collect();
        let mut retag: Vec<String> = p
            .retag
            .iter()
            .map(|(k, i)| format!("{k}={}", t.tag(*i)))
            .collect();
        let mut add: Vec<String> = p
            .add
            .iter()
            .map(|(k, i)| format!("{k}={}", t.tag(*i)))
            .collect();
        remove.sort();
        retag.sort();
        add.sort();
        (remove, retag, add)
    }

    #[test]
    fn first_file_in_name_order_wins_and_lines_are_normalised() {
        let t = target(&[
            ("a", &["10.0.0.1/24", "1.1.1.1/32"]),
            ("b", &["10.0.0.0/24", "2.2.2.2/32"]),
        ]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.tag_of(c("10.0.0.0/24")), Some("a.couic"));
        assert_eq!(t.tag_of(c("2.2.2.2/32")), Some("b.couic"));
    }

    #[test]
    fn duplicate_lines_collapse() {
        let t = target(&[("a", &["1.1.1.1/32", "1.1.1.1/32", "1.1.1.0/32"])]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn unchanged_entries_are_not_in_the_plan() {
        let t = target(&[("a", &["1.1.1.1/32", "2.2.2.2/32"])]);
        let (remove, retag, add) = run(&t, &[("1.1.1.1/32", "a.couic"), ("2.2.2.2/32", "a.couic")]);
        assert!(remove.is_empty() && retag.is_empty() && add.is_empty());
    }

    #[test]
    fn one_changed_line_is_one_remove_and_one_add() {
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("10.0.{}.{}/32", i / 256, i % 256))
            .collect();
        let current: Vec<(&str, &str)> = lines.iter().map(|l| (l.as_str(), "big.couic")).collect();
        let mut changed: Vec<&str> = lines.iter().map(String::as_str).collect();
        changed[500] = "192.0.2.1/32";
        let t = target(&[("big", &changed)]);
        let (remove, retag, add) = run(&t, &current);
        assert_eq!(remove, [lines[500].clone()]);
        assert!(retag.is_empty());
        assert_eq!(add, ["192.0.2.1/32=big.couic"]);
    }

    #[test]
    fn renamed_file_retags_and_removed_file_removes() {
        let t = target(&[("renamed", &["1.1.1.1/32"])]);
        let (remove, retag, add) = run(
            &t,
            &[("1.1.1.1/32", "old.couic"), ("3.3.3.3/32", "gone.couic")],
        );
        assert_eq!(remove, ["3.3.3.3/32"]);
        assert_eq!(retag, ["1.1.1.1/32=renamed.couic"]);
        assert!(add.is_empty());
    }

    #[test]
    fn empty_target_removes_everything() {
        let (remove, _, add) = run(&PolicyTarget::default(), &[("1.1.1.1/32", "a.couic")]);
        assert_eq!(remove, ["1.1.1.1/32"]);
        assert!(add.is_empty());
    }
}
