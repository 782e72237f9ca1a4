//! The queries waiting for an upstream connection's
//! [`Window`](super::window::Window), taken source by source.
//!
//! Each source (a [`SourceKey`](super::admission::SourceKey): an IPv4
//! address, an IPv6 /64) has its own first-in first-out queue, and the
//! sources with something waiting take turns, one query each (round robin;
//! deficit round robin with a quantum of one query, since queries cost the
//! upstream about the same). A source with a thousand queries waiting and
//! one with a single query each get the next free slot in turn: the single
//! query is written after at most one of the thousand.
//!
//! What waits is bounded outside: every item is a query holding an
//! in-flight slot (`max_inflight`, per source a quarter of it under
//! contention). An item whose query was given up on is not looked for in
//! its queue (that would cost the length of the queue); the caller says it
//! is gone with [`FairQueue::forget`], and it is skipped when its turn
//! comes, or swept out with the others once the gone outnumber the live.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Waiting items of type `T`, queued per source `K`.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    /// The sources with something queued, in the order of their turns.
    turns: VecDeque<K>,
    /// Items queued, gone ones included.
    len: usize,
    /// Items forgotten and not yet skipped or swept.
    gone: usize,
}

impl<K: Copy + Eq + Hash, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash, T> FairQueue<K, T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            queues: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
            gone: 0,
        }
    }

    /// Queues `item` for `source`, behind the source's earlier ones.
    pub fn push(&mut self, source: K, item: T) {
        let queue = self.queues.entry(source).or_default();
        if queue.is_empty() {
            self.turns.push_back(source);
        }
        queue.push_back(item);
        self.len += 1;
    }

    /// The next item: the oldest of the source whose turn it is, skipping
    /// items `live` says are gone. That source's turn then passes to the
    /// next one.
    pub fn pop(&mut self, mut live: impl FnMut(&T) -> bool) -> Option<T> {
        while let Some(source) = self.turns.pop_front() {
            let Some(queue) = self.queues.get_mut(&source) else {
                continue;
            };
            let mut found = None;
            while let Some(item) = queue.pop_front() {
                self.len -= 1;
                if live(&item) {
                    found = Some(item);
                    break;
                }
                self.gone = self.gone.saturating_sub(1);
            }
            if queue.is_empty() {
                self.queues.remove(&source);
            } else {
                self.turns.push_back(source);
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// One queued item is gone (its query was given up on). Once the gone
    /// outnumber the live, every queue is swept of the items `live` says
    /// are gone.
    pub fn forget(&mut self, mut live: impl FnMut(&T) -> bool) {
        self.gone += 1;
        if self.gone * 2 <= self.len {
            return;
        }
        for queue in self.queues.values_mut() {
            queue.retain(&mut live);
        }
        self.queues.retain(|_, q| !q.is_empty());
        let queues = &self.queues;
        self.turns.retain(|s| queues.contains_key(s));
        self.len = self.queues.values().map(VecDeque::len).sum();
        self.gone = 0;
    }

    /// Items queued and not gone.
    pub fn len(&self) -> usize {
        self.len.saturating_sub(self.gone)
    }

    /// Whether nothing but gone items is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items held, gone ones not yet skipped or swept included.
    pub fn held(&self) -> usize {
        self.len
    }

    /// Sources with something queued.
    pub fn sources(&self) -> usize {
        self.queues.len()
    }

    /// Drops everything (the connection closed).
    pub fn clear(&mut self) {
        self.queues.clear();
        self.turns.clear();
        self.len = 0;
        self.gone = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn all<T>(_: &T) -> bool {
        true
    }

    #[test]
    fn a_lone_query_overtakes_a_backlog() {
        let mut q = FairQueue::new();
        for i in 0..1000 {
            q.push('a', i);
        }
        q.push('b', 5000);
        assert_eq!(q.pop(all), Some(0));
        assert_eq!(q.pop(all), Some(5000), "after one of the thousand");
        assert_eq!(q.pop(all), Some(1));
        assert_eq!(q.sources(), 1);
    }

    #[test]
    fn sources_take_turns_and_each_keeps_its_order() {
        let mut q = FairQueue::new();
        for i in 0..3 {
            q.push('a', ('a', i));
            q.push('b', ('b', i));
        }
        q.push('c', ('c', 0));
        let order: Vec<_> = std::iter::from_fn(|| q.pop(all)).collect();
        assert_eq!(
            order,
            [
                ('a', 0),
                ('b', 0),
                ('c', 0),
                ('a', 1),
                ('b', 1),
                ('a', 2),
                ('b', 2)
            ]
        );
        assert!(q.is_empty());
        assert_eq!(q.sources(), 0);
    }

    #[test]
    fn gone_items_are_skipped_and_swept() {
        let mut q = FairQueue::new();
        let mut gone = HashSet::new();
        for i in 0..120 {
            q.push(u8::from(i >= 100), i);
        }
        // Give up on all of source 0's but its last, one at a time.
        for i in 0..99 {
            gone.insert(i);
            q.forget(|i| !gone.contains(i));
        }
        // Swept once the gone outnumbered the live: far fewer are held.
        assert!(q.held() < 60, "{}", q.held());
        assert_eq!(q.len(), 21);
        let order: Vec<_> = std::iter::from_fn(|| q.pop(|i| !gone.contains(i))).collect();
        assert_eq!(order.len(), 21);
        assert_eq!(order[..3], [99, 100, 101], "source 0's live one, then 1's");
        assert!(q.is_empty());
    }

    proptest! {
        /// Whatever the pushes: every live item comes out exactly once, each
        /// source's in order, and no source gets a second item while another
        /// that was waiting all along gets none.
        #[test]
        fn round_robin_holds(pushes in proptest::collection::vec((0u8..6, any::<bool>()), 0..300)) {
            let mut q = FairQueue::new();
            let mut gone = HashSet::new();
            for (n, &(source, dropped)) in pushes.iter().enumerate() {
                q.push(source, (source, n));
                if dropped {
                    gone.insert(n);
                    q.forget(|&(_, n)| !gone.contains(&n));
                }
            }
            let out: Vec<_> = std::iter::from_fn(|| q.pop(|&(_, n)| !gone.contains(&n))).collect();
            let expected: Vec<_> = pushes
                .iter()
                .enumerate()
                .filter(|(n, _)| !gone.contains(n))
                .map(|(n, &(s, _))| (s, n))
                .collect();
            prop_assert_eq!(out.len(), expected.len());
            for s in 0..6u8 {
                let mine: Vec<_> = out.iter().filter(|(t, _)| *t == s).collect();
                let want: Vec<_> = expected.iter().filter(|(t, _)| *t == s).collect();
                prop_assert_eq!(mine, want);
            }
            // Turns: in any stretch where two sources both still have items
            // left, neither gets two in a row past the other.
            let mut taken = [0usize; 6];
            let total: Vec<usize> = (0..6u8)
                .map(|s| expected.iter().filter(|(t, _)| *t == s).count())
                .collect();
            for &(s, _) in &out {
                taken[s as usize] += 1;
                for other in 0..6 {
                    if total[other] > taken[other] {
                        prop_assert!(taken[s as usize] <= taken[other] + 1);
                    }
                }
            }
            prop_assert!(q.is_empty());
        }
    }
}
