//! This node's changes on their way to the bucket: one per key, the last
//! (a put after a put is one put), in the order first queued, at most
//! `capacity` keys. Past it the oldest is dropped and counted: the
//! reconciliation after the next catch-up puts back what this node still
//! holds and the bucket lacks, and deletes the bucket's put of a key whose
//! delete was dropped (see `Local::suspect`). While the server is away
//! this is all that is kept.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use super::value::Value;

/// What to write at a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A value, written as JSON when sent (see [`super::value`]).
    Put(Box<Value>),
    Delete,
    /// The entry at this key expired here at `expiration`: purge the key
    /// if it still holds that entry (checked against the bucket). Never
    /// takes the place of a put or a delete still queued.
    Expired {
        expiration: u64,
    },
}

/// A change taken to be sent; `generation` tells it from a later change
/// of the same key.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending<K> {
    pub key: K,
    pub generation: u64,
    pub op: Op,
}

#[derive(Debug)]
pub struct Outbox<K> {
    ops: HashMap<K, (u64, Op)>,
    /// Keys in the order queued, with the generation queued; a key queued
    /// again leaves its older place stale (skipped when met).
    order: VecDeque<(K, u64)>,
    next: u64,
    capacity: usize,
}

/// What [`Outbox::push`] did.
#[derive(Debug, PartialEq)]
pub struct Pushed<K> {
    /// The change's generation; `None` when it was not queued (an expiry
    /// behind a put or a delete).
    pub generation: Option<u64>,
    /// The change dropped to make room, if one was.
    pub dropped: Option<Pending<K>>,
}

impl<K: Hash + Eq + Clone> Outbox<K> {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            ops: HashMap::new(),
            order: VecDeque::new(),
            next: 1,
            capacity: capacity.max(1),
        }
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn push(&mut self, key: K, op: Op) -> Pushed<K> {
        if let (Op::Expired { .. }, Some((_, Op::Put(_) | Op::Delete))) = (&op, self.ops.get(&key))
        {
            return Pushed {
                generation: None,
                dropped: None,
            };
        }
        let mut dropped = None;
        if !self.ops.contains_key(&key) && self.ops.len() >= self.capacity {
            dropped = self.pop_oldest();
        }
        let generation = self.next;
        self.next += 1;
        self.order.push_back((key.clone(), generation));
        self.ops.insert(key, (generation, op));
        if self.order.len() > 2 * self.ops.len() + 1024 {
            let ops = &self.ops;
            self.order
                .retain(|(k, g)| ops.get(k).is_some_and(|(live, _)| live == g));
        }
        Pushed {
            generation: Some(generation),
            dropped,
        }
    }

    /// The keys whose change waiting is a delete.
    pub fn deletes(&self) -> Vec<K> {
        self.ops
            .iter()
            .filter(|(_, (_, op))| *op == Op::Delete)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Up to `max` changes, oldest first, taken out.
    pub fn take(&mut self, max: usize) -> Vec<Pending<K>> {
        let mut taken = Vec::new();
        while taken.len() < max {
            match self.pop_oldest() {
                Some(p) => taken.push(p),
                None => break,
            }
        }
        taken
    }

    /// Puts back changes that could not be sent, ahead of the others, but
    /// for keys changed again since (the newer change stands).
    pub fn put_back(&mut self, pending: Vec<Pending<K>>) {
        for p in pending.into_iter().rev() {
            if self.ops.contains_key(&p.key) {
                continue;
            }
            self.order.push_front((p.key.clone(), p.generation));
            self.ops.insert(p.key, (p.generation, p.op));
        }
    }

    fn pop_oldest(&mut self) -> Option<Pending<K>> {
        while let Some((key, generation)) = self.order.pop_front() {
            if self.ops.get(&key).is_some_and(|(g, _)| *g == generation) {
                let (_, op) = self.ops.remove(&key).expect("just seen");
                return Some(Pending {
                    key,
                    generation,
                    op,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(v: &str) -> Op {
        Op::Put(Box::new(Value {
            node: "n".into(),
            tag: Some(v.into()),
            creation: 1,
            expiration: 0,
            metadata: None,
        }))
    }

    fn keys(taken: &[Pending<String>]) -> Vec<&str> {
        taken.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn the_last_change_of_a_key_is_sent_once_in_first_queued_order() {
        let mut o: Outbox<String> = Outbox::new(10);
        o.push("a".into(), put("1"));
        o.push("b".into(), put("2"));
        o.push("a".into(), Op::Delete);
        assert_eq!(o.len(), 2);
        let taken = o.take(10);
        assert_eq!(keys(&taken), ["b", "a"]);
        assert_eq!(taken[1].op, Op::Delete);
        assert!(o.is_empty() && o.take(1).is_empty());
    }

    #[test]
    fn overflow_drops_the_oldest_key() {
        let mut o: Outbox<String> = Outbox::new(2);
        o.push("a".into(), put("1"));
        o.push("b".into(), put("2"));
        assert_eq!(o.push("b".into(), put("3")).dropped, None);
        let dropped = o.push("c".into(), put("4")).dropped.unwrap();
        assert_eq!(dropped.key, "a");
        assert_eq!(keys(&o.take(10)), ["b", "c"]);
    }

    #[test]
    fn an_expiry_never_replaces_a_put_or_a_delete() {
        let mut o: Outbox<String> = Outbox::new(4);
        o.push("a".into(), put("1"));
        assert_eq!(
            o.push("a".into(), Op::Expired { expiration: 5 }).generation,
            None
        );
        assert_eq!(o.take(1)[0].op, put("1"));
        assert!(o
            .push("a".into(), Op::Expired { expiration: 5 })
            .generation
            .is_some());
        assert!(o.push("a".into(), Op::Delete).generation.is_some());
        assert_eq!(o.take(1)[0].op, Op::Delete);
    }

    #[test]
    fn changes_put_back_go_first_unless_changed_since() {
        let mut o: Outbox<String> = Outbox::new(10);
        for k in ["a", "b", "c"] {
            o.push(k.into(), put(k));
        }
        let taken = o.take(2);
        o.push("b".into(), Op::Delete);
        o.put_back(taken);
        let again = o.take(10);
        assert_eq!(keys(&again), ["a", "c", "b"]);
        assert_eq!(again[2].op, Op::Delete);
    }

    #[test]
    fn stale_places_are_compacted() {
        let mut o: Outbox<String> = Outbox::new(4);
        for i in 0..10_000 {
            o.push("a".into(), put(&i.to_string()));
        }
        assert!(o.order.len() <= 2 * o.ops.len() + 1025);
        assert_eq!(o.take(10).len(), 1);
    }
}
