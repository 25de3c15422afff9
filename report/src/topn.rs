//! The N largest counts of a map, computed once at the end of a period.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::Hash;

/// The `n` keys with the highest counts, highest first; equal counts are
/// ordered by key so that the result does not depend on hashing.
/// Linear selection, then a sort of the `n` kept.
pub fn top_n<K: Ord + Hash + Clone>(counts: &HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
    if n == 0 {
        return Vec::new();
    }
    let by_rank = |a: &(&K, &u64), b: &(&K, &u64)| -> Ordering { b.1.cmp(a.1).then(a.0.cmp(b.0)) };
    let mut all: Vec<(&K, &u64)> = counts.iter().collect();
    if all.len() > n {
        all.select_nth_unstable_by(n - 1, by_rank);
        all.truncate(n);
    }
    all.sort_unstable_by(by_rank);
    all.into_iter().map(|(k, c)| (k.clone(), *c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, c)| (k.to_string(), *c)).collect()
    }

    fn names(top: &[(String, u64)]) -> Vec<&str> {
        top.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn highest_first_ties_by_key() {
        let c = counts(&[("a", 1), ("b", 5), ("c", 3), ("d", 5), ("e", 2), ("f", 4)]);
        let top = top_n(&c, 5);
        assert_eq!(names(&top), ["b", "d", "f", "c", "e"]);
        assert_eq!(top[0].1, 5);
        assert_eq!(top[4].1, 2);
    }

    #[test]
    fn fewer_than_n_and_edges() {
        let c = counts(&[("x", 2), ("y", 7)]);
        assert_eq!(
            top_n(&c, 5),
            vec![("y".to_string(), 7), ("x".to_string(), 2)]
        );
        assert!(top_n(&c, 0).is_empty());
        assert!(top_n(&HashMap::<String, u64>::new(), 5).is_empty());
        assert_eq!(names(&top_n(&c, 1)), ["y"]);
    }

    #[test]
    fn many_keys_keep_the_largest() {
        let c: HashMap<u32, u64> = (0..10_000).map(|k| (k, u64::from(k % 1000))).collect();
        let top = top_n(&c, 3);
        assert_eq!(top, vec![(999, 999), (1999, 999), (2999, 999)]);
    }
}
