//! The pipelining table of one upstream connection (RFC 7766 §6.2.1.1, §7):
//! every query in flight on the connection gets a wire ID unique on it, and
//! answers may come back in any order.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};

use thiserror::Error;

/// Number of distinct 16-bit IDs (RFC 1035 §4.1.1).
const ID_SPACE: usize = 1 << 16;

/// Where wire IDs come from.
pub trait IdSource {
    /// A candidate ID. It may be in use; [`InFlight`] then asks again.
    fn next_id(&mut self) -> u16;
}

/// IDs counting up from a start value, wrapping at 65535.
///
/// A counter is a fine source of per-connection IDs: they only need to be
/// unique on the connection (RFC 7766 §7), and the TLS channel rules out the
/// off-path spoofing random IDs defend against (RFC 5452 §9.2). It also keeps
/// tests deterministic.
#[derive(Clone, Debug)]
pub struct CounterIds(u16);

impl CounterIds {
    /// A counter whose first ID is `start`.
    pub fn new(start: u16) -> Self {
        Self(start)
    }
}

impl IdSource for CounterIds {
    fn next_id(&mut self) -> u16 {
        let id = self.0;
        self.0 = self.0.wrapping_add(1);
        id
    }
}

/// Hashes a wire ID with one multiplication by 2^64 / φ (Fibonacci
/// hashing), which spreads consecutive IDs over both the table's buckets (the
/// low bits) and its tag bytes (the high bits). SipHash cost some 250
/// instructions per lookup, twice per query. Nothing stronger is needed: the
/// table holds only IDs this proxy chose, so no one can aim collisions at it
/// (an upstream's answer with a made-up ID is one failed lookup), and a fixed
/// hash keeps iteration deterministic.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    // Only u16 keys are hashed; any other input still hashes, folded in.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// All `capacity` slots of an [`InFlight`] table are taken.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("too many queries in flight on this connection")]
pub struct Full;

/// Queries in flight on one connection, keyed by the wire ID they were sent
/// with. `T` is whatever the caller needs to route the answer back (client
/// address, client ID, deadline, ...).
#[derive(Debug)]
pub struct InFlight<T, S = CounterIds> {
    /// Entry and insertion sequence number, for [`drain`](Self::drain) order.
    entries: HashMap<u16, (u64, T), BuildHasherDefault<IdHasher>>,
    capacity: usize,
    ids: S,
    seq: u64,
}

impl<T, S: IdSource> InFlight<T, S> {
    /// A table holding at most `capacity` queries; more than 65536 (the
    /// number of IDs) is clamped to 65536.
    pub fn new(capacity: usize, ids: S) -> Self {
        Self {
            entries: HashMap::default(),
            capacity: capacity.min(ID_SPACE),
            ids,
            seq: 0,
        }
    }

    /// Registers a query and returns the wire ID to put in it. Never an ID
    /// currently in flight, even after the source wraps around: IDs in use are
    /// skipped, which is O(1) amortised while the table is not nearly full.
    /// `Err(Full)` when `capacity` queries are in flight.
    pub fn insert(&mut self, value: T) -> Result<u16, Full> {
        if self.entries.len() >= self.capacity {
            return Err(Full);
        }
        let id = self.free_id().ok_or(Full)?;
        self.entries.insert(id, (self.seq, value));
        self.seq += 1;
        Ok(id)
    }

    /// Takes the query sent with `wire_id`, if it is in flight.
    pub fn remove(&mut self, wire_id: u16) -> Option<T> {
        self.entries.remove(&wire_id).map(|(_, value)| value)
    }

    /// Takes the query sent with `wire_id` if it is in flight and `take`
    /// says so (one lookup).
    pub fn remove_if(&mut self, wire_id: u16, take: impl FnOnce(&T) -> bool) -> Option<T> {
        match self.entries.entry(wire_id) {
            Entry::Occupied(e) if take(&e.get().1) => Some(e.remove().1),
            _ => None,
        }
    }

    /// The query sent with `wire_id`, if it is in flight.
    pub fn get(&self, wire_id: u16) -> Option<&T> {
        self.entries.get(&wire_id).map(|(_, value)| value)
    }

    /// The query sent with `wire_id`, if it is in flight, to change.
    pub fn get_mut(&mut self, wire_id: u16) -> Option<&mut T> {
        self.entries.get_mut(&wire_id).map(|(_, value)| value)
    }

    /// Number of queries in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no query is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most queries that can be in flight at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes every pending query, oldest first (the connection was lost): the
    /// caller resends or fails them.
    pub fn drain(&mut self) -> Vec<(u16, T)> {
        let mut all: Vec<_> = self.entries.drain().collect();
        all.sort_unstable_by_key(|(_, (seq, _))| *seq);
        all.into_iter()
            .map(|(id, (_, value))| (id, value))
            .collect()
    }

    /// An ID not in flight. With `n` IDs in flight, any `n + 1` consecutive
    /// counter values include a free one, so the source gets `n + 1` tries;
    /// a source that keeps proposing busy IDs falls back to scanning onward
    /// from its last proposal. Either way at most O(n) lookups. `None` only
    /// if all 65536 IDs are taken, which `capacity` rules out.
    fn free_id(&mut self) -> Option<u16> {
        let mut candidate = 0;
        for _ in 0..=self.entries.len() {
            candidate = self.ids.next_id();
            if !self.entries.contains_key(&candidate) {
                return Some(candidate);
            }
        }
        (1..=u16::MAX)
            .map(|step| candidate.wrapping_add(step))
            .find(|id| !self.entries.contains_key(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broken source that always proposes the same ID.
    struct Stuck;
    impl IdSource for Stuck {
        fn next_id(&mut self) -> u16 {
            7
        }
    }

    fn id_hash(id: u16) -> u64 {
        let mut h = IdHasher::default();
        std::hash::Hash::hash(&id, &mut h);
        h.finish()
    }

    #[test]
    fn consecutive_ids_spread_over_buckets_and_tags() {
        // The table picks a bucket from the low bits: a run of 2^k IDs lands
        // in 2^k different buckets of a table that size.
        let low: std::collections::HashSet<u64> = (0..1024).map(|id| id_hash(id) & 1023).collect();
        assert_eq!(low.len(), 1024);
        // It filters a bucket group by a tag from the top 7 bits: they must
        // differ too, or every probe compares every key.
        let tags: std::collections::HashSet<u64> = (0..128).map(|id| id_hash(id) >> 57).collect();
        assert!(tags.len() > 64, "{} distinct tags of 128", tags.len());
    }

    #[test]
    fn rfc7766_pipelined_answers_out_of_order() {
        let mut t = InFlight::new(10, CounterIds::new(100));
        let a = t.insert("a").expect("room");
        let b = t.insert("b").expect("room");
        let c = t.insert("c").expect("room");
        assert_eq!((a, b, c), (100, 101, 102));
        assert_eq!(t.remove(c), Some("c"));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.remove(a), None);
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(b), Some("b"));
        assert!(t.is_empty());
    }

    #[test]
    fn remove_if_takes_only_what_the_caller_accepts() {
        let mut t = InFlight::new(10, CounterIds::new(0));
        let waiting = t.insert(("waiting", false)).expect("room");
        let written = t.insert(("written", true)).expect("room");
        let sent = |&(_, written): &(&str, bool)| written;
        assert_eq!(t.remove_if(waiting, sent), None, "not taken");
        assert_eq!(t.get(waiting), Some(&("waiting", false)), "and kept");
        assert_eq!(t.remove_if(written, sent), Some(("written", true)));
        assert_eq!(t.remove_if(written, sent), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn full_table_refuses_until_an_answer_frees_a_slot() {
        let mut t = InFlight::new(2, CounterIds::new(0));
        let first = t.insert(1).expect("room");
        t.insert(2).expect("room");
        assert_eq!(t.insert(3), Err(Full));
        t.remove(first);
        assert!(t.insert(3).is_ok());
        assert_eq!(InFlight::new(0, CounterIds::new(0)).insert(()), Err(Full));
    }

    #[test]
    fn rfc7766_id_in_flight_is_skipped_after_wraparound() {
        let mut t = InFlight::new(ID_SPACE, CounterIds::new(u16::MAX));
        let old = t.insert("old").expect("room");
        assert_eq!(old, u16::MAX);
        // Cycle through the whole ID space once, answering as we go.
        for _ in 0..ID_SPACE - 1 {
            let id = t.insert("new").expect("room");
            assert_ne!(id, old);
            t.remove(id);
        }
        // The counter is back at 65535, which is still in flight.
        assert_eq!(t.insert("next"), Ok(0));
        assert_eq!(t.get(old), Some(&"old"));
    }

    #[test]
    fn every_id_can_be_in_flight_at_once() {
        let mut t = InFlight::new(usize::MAX, CounterIds::new(12345));
        assert_eq!(t.capacity(), ID_SPACE);
        let mut seen = vec![false; ID_SPACE];
        for i in 0..ID_SPACE {
            let id = t.insert(i).expect("room");
            assert!(!seen[usize::from(id)], "duplicate {id}");
            seen[usize::from(id)] = true;
        }
        assert_eq!(t.insert(0), Err(Full));
        t.remove(5);
        assert_eq!(t.insert(0), Ok(5));
    }

    #[test]
    fn stuck_id_source_still_yields_free_ids() {
        let mut t = InFlight::new(4, Stuck);
        let ids = [t.insert(()), t.insert(()), t.insert(())];
        assert_eq!(ids, [Ok(7), Ok(8), Ok(9)]);
        t.remove(8);
        assert_eq!(t.insert(()), Ok(8));
    }

    #[test]
    fn drain_returns_everything_oldest_first() {
        let mut t = InFlight::new(100, CounterIds::new(65534));
        for v in 0..5 {
            t.insert(v).expect("room");
        }
        t.remove(65535);
        assert_eq!(t.drain(), [(65534, 0), (0, 2), (1, 3), (2, 4)]);
        assert!(t.is_empty());
        assert_eq!(t.insert(9), Ok(3));
    }
}
