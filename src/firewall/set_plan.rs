//! The reload plan: what the set files ask for, and how it differs from the
//! set entries currently applied.
//!
//! Reading the files builds a [`SetsTarget`]; the MapWriter compares it with
//! the store through [`plan`] and applies only the difference, so a reload in
//! which one line of 262,144 changed writes one map entry. The comparison
//! is one pass over the target, plus one over the current set entries only
//! when some of them are no longer listed.

use couic_common::{Cidr, Policy, SET_TAG_SUFFIX};

/// The target's maps: the store's fast keyed hashing, since a reload
/// hashes every line.
type CidrMap<V> = crate::hash::CidrMap<Cidr, V>;

/// What the set files of one policy ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTarget {
    /// Tags (`<stem>.couic`), one per file, in file name order.
    tags: Vec<String>,
    /// Normalised CIDR -> index in `tags` of the first file listing it.
    entries: CidrMap<u32>,
}

impl PolicyTarget {
    /// Adds the entries of the file whose stem is `stem`. Files must come in
    /// name order: a CIDR already listed by an earlier file keeps that file's
    /// tag, so the tag of a CIDR in several files is deterministic.
    pub fn add_file(&mut self, stem: &str, cidrs: impl IntoIterator<Item = Cidr>) {
        let index = self.tags.len() as u32;
        self.tags.push(format!("{stem}{SET_TAG_SUFFIX}"));
        let cidrs = cidrs.into_iter();
        self.entries.reserve(cidrs.size_hint().0);
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

    /// The tags of the files, by file index.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    pub fn tag(&self, index: u32) -> &str {
        &self.tags[index as usize]
    }

    pub fn tag_of(&self, cidr: Cidr) -> Option<&str> {
        self.entries.get(&cidr).map(|&i| self.tag(i))
    }

    pub fn contains(&self, cidr: Cidr) -> bool {
        self.entries.contains_key(&cidr)
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
    /// New set entries, including API/peer entries they now hide.
    pub created: usize,
    /// API/peer entries back in force after the set line hiding them went.
    pub restored: usize,
}

/// The counts of a whole reload: ignore first, then drop.
pub type ReloadSummary = [(Policy, ReloadCounts); 2];

/// What the store holds at a CIDR, as the plan needs it. `T` identifies a
/// tag (the store's tag id; text in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing<T> {
    Absent,
    /// An API or peer entry.
    Other,
    /// A set entry with this tag.
    Set(T),
}

/// What [`plan`] needs to know of the current entries of the policy.
pub trait Current {
    type Tag: PartialEq + Copy;

    /// Each target file's tag as the store identifies it, if the store
    /// knows it (a tag no entry has cannot match).
    fn file_tag(&self, tag: &str) -> Option<Self::Tag>;
    fn existing(&self, cidr: Cidr) -> Existing<Self::Tag>;
    /// How many set entries there are.
    fn set_count(&self) -> usize;
    /// Every set entry (only walked when some are no longer listed).
    fn set_entries(&self) -> impl Iterator<Item = Cidr> + '_;
}

/// Compares `target` with the current set entries. Unchanged entries
/// appear nowhere in the plan.
pub fn plan<C: Current>(target: &PolicyTarget, current: &C) -> Plan {
    let file_tags: Vec<Option<C::Tag>> = target.tags.iter().map(|t| current.file_tag(t)).collect();
    let mut plan = Plan::default();
    let mut still_listed = 0;
    for (&cidr, &index) in &target.entries {
        match current.existing(cidr) {
            Existing::Absent | Existing::Other => plan.add.push((cidr, index)),
            Existing::Set(tag) => {
                still_listed += 1;
                if file_tags[index as usize] != Some(tag) {
                    plan.retag.push((cidr, index));
                }
            }
        }
    }
    if still_listed < current.set_count() {
        plan.remove = current
            .set_entries()
            .filter(|c| !target.contains(*c))
            .collect();
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

    /// Current entries as text: set entries have a tag ending in `.couic`.
    struct Fake(HashMap<Cidr, &'static str>);

    impl Current for Fake {
        type Tag = &'static str;

        fn file_tag(&self, tag: &str) -> Option<&'static str> {
            self.0.values().find(|t| **t == tag).copied()
        }

        fn existing(&self, cidr: Cidr) -> Existing<&'static str> {
            match self.0.get(&cidr) {
                None => Existing::Absent,
                Some(t) if t.ends_with(SET_TAG_SUFFIX) => Existing::Set(t),
                Some(_) => Existing::Other,
            }
        }

        fn set_count(&self) -> usize {
            self.0
                .values()
                .filter(|t| t.ends_with(SET_TAG_SUFFIX))
                .count()
        }

        fn set_entries(&self) -> impl Iterator<Item = Cidr> + '_ {
            self.0
                .iter()
                .filter(|(_, t)| t.ends_with(SET_TAG_SUFFIX))
                .map(|(c, _)| *c)
        }
    }

    fn run(
        t: &PolicyTarget,
        current: &[(&str, &'static str)],
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let p = plan(
            t,
            &Fake(current.iter().map(|(c_, t_)| (c(c_), *t_)).collect()),
        );
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
        let current: Vec<(&str, &'static str)> =
            lines.iter().map(|l| (l.as_str(), "big.couic")).collect();
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
    fn api_entries_are_added_over_and_unknown_tags_retag() {
        let t = target(&[("a", &["1.1.1.1/32", "2.2.2.2/32"])]);
        let (remove, retag, add) =
            run(&t, &[("1.1.1.1/32", "fail2ban"), ("2.2.2.2/32", "z.couic")]);
        assert!(remove.is_empty());
        assert_eq!(retag, ["2.2.2.2/32=a.couic"]);
        assert_eq!(add, ["1.1.1.1/32=a.couic"]);
    }

    #[test]
    fn empty_target_removes_everything() {
        let (remove, _, add) = run(&PolicyTarget::default(), &[("1.1.1.1/32", "a.couic")]);
        assert_eq!(remove, ["1.1.1.1/32"]);
        assert!(add.is_empty());
    }
}
