//! When each peer next needs the relay's attention: a min-heap of (time, peer), so a
//! wakeup touches only the peers that are due instead of every peer.
//!
//! Entries are never updated in place: a peer whose deadline moves gets a new entry and
//! the owner ignores entries that no longer match the peer's current one. Stale entries
//! leave the heap when their time comes, or all at once in [`Timers::compact`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

pub struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry's time (possibly stale: waking for it is harmless).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes one entry due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Rebuilds the heap from the entries still wanted (each key's current time).
    pub fn compact(&mut self, current: impl Iterator<Item = (Instant, K)>) {
        self.heap = current.map(Reverse).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_earliest_first_and_later_ones_wait() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::default();
        timers.schedule(at(30), 3u64);
        timers.schedule(at(10), 1);
        timers.schedule(at(20), 2);
        timers.schedule(at(500), 9);
        assert_eq!(timers.next(), Some(at(10)));
        let mut due = Vec::new();
        while let Some((_, key)) = timers.pop_due(at(30)) {
            due.push(key);
        }
        assert_eq!(due, vec![1, 2, 3]);
        assert_eq!(timers.pop_due(at(499)), None);
        assert_eq!(timers.next(), Some(at(500)));
        assert_eq!(timers.pop_due(at(500)), Some((at(500), 9)));
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_moved_deadline_leaves_a_stale_entry_that_compaction_drops() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_secs(5), 7u64);
        // The peer's deadline moved earlier: a second entry; the first is now stale.
        timers.schedule(t0 + Duration::from_millis(5), 7);
        assert_eq!(timers.len(), 2);
        let (at, key) = timers.pop_due(t0 + Duration::from_millis(5)).expect("due");
        assert_eq!((at, key), (t0 + Duration::from_millis(5), 7));
        timers.compact([(t0 + Duration::from_millis(40), 7u64)].into_iter());
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(40)));
    }
}
