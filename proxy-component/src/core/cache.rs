//! The answer cache: what is kept, for how long, what is served when the
//! upstreams fail, and what goes when memory runs out. Sans-IO: fed the
//! current time, it never reads a clock or touches a socket.
//!
//! What an answer looks like in the cache and how it is rebuilt for a
//! client (TTLs counted down, the client's ID and spelling, a fresh OPT) is
//! [`Cached`]'s; this module decides over whole entries:
//!
//! - **Fresh**: an answer is served from memory until its lifetime (the
//!   smallest TTL, clamped by `cache_min_ttl` / `cache_max_ttl`; for a
//!   negative answer the SOA's, RFC 2308 §5) has passed.
//! - **Failures** (every upstream failed, or one answered SERVFAIL) are
//!   remembered for `cache_failure_ttl` (RFC 9520 §3.2: at least 1 s, at
//!   most 5 min): the same question in that time is answered at once, not
//!   sent upstream again.
//! - **Stale** (RFC 8767): an answer past its lifetime is kept for the
//!   serve-stale window; it is served, with TTL [`STALE_TTL`], only when a
//!   refresh failed.
//! - **Prefetch**: a name asked at least [`PREFETCH_MIN_HITS`] times while
//!   fresh is refreshed once in the last tenth of its lifetime, so popular
//!   names never expire in front of a client.
//! - **Memory**: every entry counts its bytes; past `max_bytes` the least
//!   recently used entries go (stale ones first only because they are used
//!   least). The bound is global to the instance (one per worker).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::message::{CacheKey, Cached, Query, Response, TtlClamp};

/// The TTL of a stale answer (RFC 8767 §4: "30 seconds is RECOMMENDED").
pub const STALE_TTL: u32 = 30;

/// Hits an entry needs while fresh before it is prefetched.
pub const PREFETCH_MIN_HITS: u32 = 2;

/// Shortest lifetime worth prefetching: below it, a tenth of the lifetime
/// is under a second and a prefetch would only double the queries.
const PREFETCH_MIN_LIFETIME: u32 = 10;

/// What one entry costs besides its bytes: the slab node, the map slot and
/// the allocator's headers, rounded up (a measured `size_of` plus the two
/// boxed slices' headers).
pub const ENTRY_OVERHEAD: usize = 160;

/// The cache's settings (`cache_*` and `serve_stale` in settings.ini).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes the entries may hold; 0 turns the cache off.
    pub max_bytes: usize,
    /// TTL clamps, in seconds.
    pub ttl: TtlClamp,
    /// How long a failure is remembered.
    pub failure_ttl: Duration,
    /// How long past its lifetime an answer may still be served when a
    /// refresh fails; zero turns serve-stale off.
    pub stale_window: Duration,
    /// Refresh popular names before they expire.
    pub prefetch: bool,
}

impl Default for CacheSettings {
    /// The defaults of settings.ini.
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            ttl: TtlClamp {
                min: 0,
                max: 86_400,
            },
            failure_ttl: Duration::from_secs(1),
            stale_window: Duration::from_secs(86_400),
            prefetch: true,
        }
    }
}

/// What the cache counts, as deltas (see [`crate::core::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Answered from a fresh entry.
    pub hits: u64,
    /// Not in the cache (or expired): sent upstream.
    pub misses: u64,
    /// Answered SERVFAIL from a remembered failure.
    pub failures: u64,
    /// Answered from a stale entry after a refresh failed.
    pub stale: u64,
    /// Prefetches started.
    pub prefetches: u64,
    /// Entries stored.
    pub inserts: u64,
    /// Entries dropped to stay within `max_bytes`.
    pub evictions: u64,
}

impl CacheCounters {
    /// Adds `delta` (the host sums the reports of every instance). Every
    /// field is destructured, so one added here must be summed.
    pub fn add(&mut self, delta: &CacheCounters) {
        let CacheCounters {
            hits,
            misses,
            failures,
            stale,
            prefetches,
            inserts,
            evictions,
        } = delta;
        for (total, d) in [
            (&mut self.hits, hits),
            (&mut self.misses, misses),
            (&mut self.failures, failures),
            (&mut self.stale, stale),
            (&mut self.prefetches, prefetches),
            (&mut self.inserts, inserts),
            (&mut self.evictions, evictions),
        ] {
            *total = total.saturating_add(*d);
        }
    }
}

/// The cache in one report: counter deltas and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// Since the previous report.
    pub counters: CacheCounters,
    /// Entries held.
    pub entries: u64,
    /// Bytes counted for them.
    pub bytes: u64,
    /// The bound.
    pub max_bytes: u64,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh answer for the client. `prefetch`: refresh it now (in the
    /// background); the cache will not ask again for this entry.
    Fresh {
        /// The answer, rebuilt for the query.
        answer: Response,
        /// Refresh the entry.
        prefetch: bool,
    },
    /// The question failed within `failure_ttl`: the stale answer if there
    /// is one within the window, else `None` (answer SERVFAIL).
    Failed(Option<Response>),
    /// Ask upstream.
    Miss,
}

/// One question's entry: its answer, if any, and when it last failed.
struct Entry {
    key: CacheKey,
    answer: Option<Stored>,
    /// Until when a failure is remembered.
    failed_until: Option<Instant>,
    /// Bytes counted for it.
    size: usize,
    /// Less recently used neighbours in the slab (towards the tail).
    older: Option<usize>,
    /// More recently used neighbours (towards the head).
    newer: Option<usize>,
}

struct Stored {
    cached: Cached,
    stored_at: Instant,
    /// Hits while fresh.
    hits: u32,
    /// A prefetch was asked for.
    prefetched: bool,
}

impl Stored {
    fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored_at).as_secs()).unwrap_or(u32::MAX)
    }

    fn expires(&self) -> Instant {
        self.stored_at + Duration::from_secs(u64::from(self.cached.lifetime()))
    }

    /// How long the answer stays fresh after `now`, and its age then
    /// ([`Stored::age`]); `None` once it has expired. One subtraction of
    /// instants where `age` and `expires` make two and two additions: the
    /// age is the lifetime less the whole seconds still to run, rounded
    /// up (the lifetime is whole seconds). Every cache hit asks this.
    fn fresh(&self, now: Instant) -> Option<(Duration, u32)> {
        let remaining = self.expires().checked_duration_since(now)?;
        if remaining.is_zero() {
            return None;
        }
        let whole = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        let age = self
            .cached
            .lifetime()
            .saturating_sub(u32::try_from(whole).unwrap_or(u32::MAX));
        Some((remaining, age))
    }
}

/// The cache of one instance.
pub struct Cache {
    settings: CacheSettings,
    index: HashMap<CacheKey, usize>,
    slab: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Most recently used.
    newest: Option<usize>,
    /// Least recently used: the next to evict.
    oldest: Option<usize>,
    bytes: usize,
    counters: CacheCounters,
}

impl Cache {
    /// An empty cache.
    pub fn new(settings: CacheSettings) -> Self {
        Self {
            settings,
            index: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            newest: None,
            oldest: None,
            bytes: 0,
            counters: CacheCounters::default(),
        }
    }

    /// Whether anything is cached at all (`max_bytes` > 0).
    pub fn enabled(&self) -> bool {
        self.settings.max_bytes > 0
    }

    /// The settings in use.
    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    /// New settings (a reload): a smaller bound evicts at once. Entries are
    /// kept: their lifetimes were clamped when stored and stay as they are.
    pub fn set_settings(&mut self, settings: CacheSettings) {
        self.settings = settings;
        self.evict_to(settings.max_bytes);
    }

    /// Drops every entry (the upstreams, their pins or CAs changed: what
    /// they answered is no longer what the configuration trusts).
    pub fn flush(&mut self) {
        self.index.clear();
        self.slab.clear();
        self.free.clear();
        self.newest = None;
        self.oldest = None;
        self.bytes = 0;
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes counted for the entries held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The counters since the last call, and the gauges now.
    pub fn report(&mut self) -> CacheReport {
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        CacheReport {
            counters: std::mem::take(&mut self.counters),
            entries: wide(self.len()),
            bytes: wide(self.bytes),
            max_bytes: wide(self.settings.max_bytes),
        }
    }

    /// Looks `query` (filed under `key`) up at `now`.
    pub fn lookup(&mut self, key: &CacheKey, query: &Query, now: Instant) -> Lookup {
        let Some(&at) = self.index.get(key) else {
            self.counters.misses += 1;
            return Lookup::Miss;
        };
        self.touch(at);
        let settings = self.settings;
        let Some(entry) = self.slab[at].as_mut() else {
            self.counters.misses += 1;
            return Lookup::Miss;
        };
        if let Some((stored, (remaining, age))) = entry
            .answer
            .as_mut()
            .and_then(|s| s.fresh(now).map(|fresh| (s, fresh)))
        {
            stored.hits = stored.hits.saturating_add(1);
            let lifetime = stored.cached.lifetime();
            let prefetch = settings.prefetch
                && !stored.prefetched
                && stored.hits >= PREFETCH_MIN_HITS
                && lifetime >= PREFETCH_MIN_LIFETIME
                && remaining.as_secs() * 10 < u64::from(lifetime);
            stored.prefetched |= prefetch;
            self.counters.hits += 1;
            self.counters.prefetches += u64::from(prefetch);
            let answer = stored.cached.answer(query, age, None);
            return Lookup::Fresh { answer, prefetch };
        }
        if entry.failed_until.is_some_and(|until| now < until) {
            let stale = Self::stale_of(entry, settings, query, now);
            match stale {
                Some(_) => self.counters.stale += 1,
                None => self.counters.failures += 1,
            }
            return Lookup::Failed(stale);
        }
        let dead = entry
            .answer
            .as_ref()
            .is_none_or(|s| now >= s.expires() + settings.stale_window);
        if dead {
            self.remove(at);
        }
        self.counters.misses += 1;
        Lookup::Miss
    }

    /// Stores `cached`, the upstream's answer to the question `key`, at
    /// `now`. An answer larger than the whole cache is not kept.
    pub fn store(&mut self, key: CacheKey, cached: Cached, now: Instant) {
        if !self.enabled() {
            return;
        }
        let size = ENTRY_OVERHEAD + key.len() + cached.size();
        if size > self.settings.max_bytes {
            return;
        }
        let stored = Stored {
            cached,
            stored_at: now,
            hits: 0,
            prefetched: false,
        };
        self.counters.inserts += 1;
        self.put(key, size, |entry| {
            entry.answer = Some(stored);
            entry.failed_until = None;
        });
    }

    /// Records that every upstream failed for `key` at `now` (or one
    /// answered SERVFAIL), and gives the stale answer to serve instead of a
    /// SERVFAIL, if there is one within the window.
    pub fn failed(&mut self, key: &CacheKey, query: &Query, now: Instant) -> Option<Response> {
        if !self.enabled() {
            return None;
        }
        let until = now + self.settings.failure_ttl;
        let at = match self.index.get(key) {
            Some(&at) => at,
            None => {
                let size = ENTRY_OVERHEAD + key.len();
                self.put(key.clone(), size, |entry| entry.failed_until = Some(until));
                return None;
            }
        };
        self.touch(at);
        let settings = self.settings;
        let entry = self.slab[at].as_mut()?;
        entry.failed_until = Some(until);
        let stale = Self::stale_of(entry, settings, query, now);
        self.counters.stale += u64::from(stale.is_some());
        stale
    }

    /// The stale answer of `entry` for `query`, if it has one within the
    /// serve-stale window; or a fresh one, which another query for the same
    /// question stored while this one was failing upstream.
    fn stale_of(
        entry: &Entry,
        settings: CacheSettings,
        query: &Query,
        now: Instant,
    ) -> Option<Response> {
        let stored = entry.answer.as_ref()?;
        let expires = stored.expires();
        if now < expires {
            return Some(stored.cached.answer(query, stored.age(now), None));
        }
        (now < expires + settings.stale_window).then(|| {
            stored
                .cached
                .answer(query, stored.age(now), Some(STALE_TTL))
        })
    }

    /// Inserts or updates the entry of `key` to `size` bytes, as the most
    /// recently used, then evicts down to the bound.
    fn put(&mut self, key: CacheKey, size: usize, update: impl FnOnce(&mut Entry)) {
        let at = match self.index.get(&key) {
            Some(&at) => {
                self.touch(at);
                at
            }
            None => {
                let entry = Entry {
                    key: key.clone(),
                    answer: None,
                    failed_until: None,
                    size: 0,
                    older: None,
                    newer: None,
                };
                let at = match self.free.pop() {
                    Some(at) => {
                        self.slab[at] = Some(entry);
                        at
                    }
                    None => {
                        self.slab.push(Some(entry));
                        self.slab.len() - 1
                    }
                };
                self.index.insert(key, at);
                self.link_newest(at);
                at
            }
        };
        if let Some(entry) = self.slab[at].as_mut() {
            update(entry);
            self.bytes = self.bytes - entry.size + size;
            entry.size = size;
        }
        self.evict_to(self.settings.max_bytes);
    }

    /// Drops least recently used entries until at most `limit` bytes are
    /// held.
    fn evict_to(&mut self, limit: usize) {
        while self.bytes > limit {
            let Some(at) = self.oldest else {
                break;
            };
            self.remove(at);
            self.counters.evictions += 1;
        }
    }

    fn remove(&mut self, at: usize) {
        self.unlink(at);
        if let Some(entry) = self.slab[at].take() {
            self.index.remove(&entry.key);
            self.bytes -= entry.size;
            self.free.push(at);
        }
    }

    /// Makes `at` the most recently used.
    fn touch(&mut self, at: usize) {
        if self.newest != Some(at) {
            self.unlink(at);
            self.link_newest(at);
        }
    }

    fn unlink(&mut self, at: usize) {
        let Some(entry) = self.slab[at].as_mut() else {
            return;
        };
        let (older, newer) = (entry.older.take(), entry.newer.take());
        match older {
            Some(o) => {
                if let Some(e) = self.slab[o].as_mut() {
                    e.newer = newer;
                }
            }
            None => self.oldest = newer,
        }
        match newer {
            Some(n) => {
                if let Some(e) = self.slab[n].as_mut() {
                    e.older = older;
                }
            }
            None => self.newest = older,
        }
    }

    fn link_newest(&mut self, at: usize) {
        let previous = self.newest;
        if let Some(entry) = self.slab[at].as_mut() {
            entry.older = previous;
            entry.newer = None;
        }
        match previous {
            Some(p) => {
                if let Some(e) = self.slab[p].as_mut() {
                    e.newer = Some(at);
                }
            }
            None => self.oldest = Some(at),
        }
        self.newest = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::core::message::test_support::{parse, query_bytes};

    const SETTINGS: CacheSettings = CacheSettings {
        max_bytes: 1 << 20,
        ttl: TtlClamp {
            min: 0,
            max: 86_400,
        },
        failure_ttl: Duration::from_secs(1),
        stale_window: Duration::from_secs(600),
        prefetch: true,
    };

    fn query(name: &str) -> Query {
        Query::parse(&query_bytes(name, RecordType::A, None)).expect("valid query")
    }

    /// The upstream's answer to `query`: one A record with `ttl`.
    fn answer(query: &Query, ttl: u32) -> Response {
        let mut m = Message::from_vec(query.bytes()).expect("query parses");
        m.set_message_type(MessageType::Response)
            .set_recursion_available(true);
        let name = m.queries()[0].name().clone();
        m.add_answer(Record::from_rdata(
            name,
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        Response::parse(m.to_vec().expect("encodes")).expect("parses")
    }

    fn nxdomain(query: &Query, soa_ttl: u32, minimum: u32) -> Response {
        let mut m = Message::from_vec(query.bytes()).expect("query parses");
        m.set_message_type(MessageType::Response)
            .set_response_code(ResponseCode::NXDomain);
        let zone = Name::from_ascii("example.").expect("name");
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86_400, minimum);
        m.add_name_server(Record::from_rdata(zone, soa_ttl, RData::SOA(soa)));
        Response::parse(m.to_vec().expect("encodes")).expect("parses")
    }

    fn store(cache: &mut Cache, q: &Query, r: &Response, at: Instant) {
        let cached = r.to_cache(cache.settings().ttl).expect("cacheable");
        cache.store(q.cache_key().expect("cacheable query"), cached, at);
    }

    fn lookup(cache: &mut Cache, q: &Query, at: Instant) -> Lookup {
        cache.lookup(&q.cache_key().expect("cacheable query"), q, at)
    }

    fn ttls(r: &Response) -> Vec<u32> {
        let m = parse(r.bytes());
        m.answers()
            .iter()
            .chain(m.name_servers())
            .map(Record::ttl)
            .collect()
    }

    fn fresh(l: Lookup) -> (Response, bool) {
        match l {
            Lookup::Fresh { answer, prefetch } => (answer, prefetch),
            other => panic!("expected a fresh answer, got {other:?}"),
        }
    }

    #[test]
    fn a_fresh_answer_counts_down_and_expires() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let q = query("www.example.");
        assert!(matches!(lookup(&mut cache, &q, t0), Lookup::Miss));
        store(&mut cache, &q, &answer(&q, 300), t0);
        let (a, _) = fresh(lookup(&mut cache, &q, t0 + Duration::from_secs(100)));
        assert_eq!(ttls(&a), [200]);
        let (a, _) = fresh(lookup(&mut cache, &q, t0 + Duration::from_millis(299_900)));
        assert_eq!(ttls(&a), [1]);
        assert!(matches!(
            lookup(&mut cache, &q, t0 + Duration::from_secs(300)),
            Lookup::Miss
        ));
        let c = cache.report().counters;
        assert_eq!((c.hits, c.misses, c.inserts), (2, 2, 1));
    }

    /// The TTLs a hit carries are the stored ones less the whole seconds
    /// since the answer was stored, at every fraction of a second: the
    /// lookup counts them from the time left, not from the age.
    #[test]
    fn ttls_count_down_by_whole_seconds_elapsed_at_any_fraction() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let q = query("www.example.");
        store(&mut cache, &q, &answer(&q, 300), t0);
        for nanos in [
            0,
            1,
            500_000_000,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            99_999_999_999,
            100_000_000_000,
            299_000_000_000,
            299_999_999_999,
        ] {
            let elapsed = Duration::from_nanos(nanos);
            let (a, _) = fresh(lookup(&mut cache, &q, t0 + elapsed));
            let whole = u32::try_from(elapsed.as_secs()).expect("fits");
            assert_eq!(ttls(&a), [300 - whole], "{elapsed:?} after storing");
        }
        assert!(matches!(
            lookup(&mut cache, &q, t0 + Duration::from_secs(300)),
            Lookup::Miss
        ));
    }

    #[test]
    fn rfc2308_negative_answers_live_as_long_as_their_soa_says() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let q = query("nope.example.");
        store(&mut cache, &q, &nxdomain(&q, 3600, 60), t0);
        let (a, _) = fresh(lookup(&mut cache, &q, t0 + Duration::from_secs(59)));
        assert_eq!(parse(a.bytes()).response_code(), ResponseCode::NXDomain);
        assert_eq!(ttls(&a), [1]);
        assert!(matches!(
            lookup(&mut cache, &q, t0 + Duration::from_secs(60)),
            Lookup::Miss
        ));
    }

    #[test]
    fn rfc8767_stale_is_served_only_after_a_failure_and_within_the_window() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let q = query("www.example.");
        let key = q.cache_key().expect("cacheable");
        store(&mut cache, &q, &answer(&q, 60), t0);
        // Expired: a miss, the entry kept for serve-stale.
        let t1 = t0 + Duration::from_secs(120);
        assert!(matches!(lookup(&mut cache, &q, t1), Lookup::Miss));
        let stale = cache.failed(&key, &q, t1).expect("a stale answer");
        assert_eq!(ttls(&stale), [STALE_TTL]);
        // Within failure_ttl the same question is not sent upstream again.
        match lookup(&mut cache, &q, t1 + Duration::from_millis(500)) {
            Lookup::Failed(Some(a)) => assert_eq!(ttls(&a), [STALE_TTL]),
            other => panic!("expected stale, got {other:?}"),
        }
        // After it, upstream is asked again.
        assert!(matches!(
            lookup(&mut cache, &q, t1 + Duration::from_secs(1)),
            Lookup::Miss
        ));
        // Past the window: nothing stale any more, and the entry is gone.
        let late = t0 + Duration::from_secs(60 + 600);
        assert!(matches!(lookup(&mut cache, &q, late), Lookup::Miss));
        assert!(cache.is_empty());
        assert_eq!(cache.failed(&key, &q, late), None);
        assert!(matches!(lookup(&mut cache, &q, late), Lookup::Failed(None)));
        let c = cache.report().counters;
        assert_eq!((c.stale, c.failures), (2, 1));
    }

    #[test]
    fn rfc9520_a_failure_is_remembered_for_failure_ttl_only() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let q = query("broken.example.");
        let key = q.cache_key().expect("cacheable");
        assert_eq!(cache.failed(&key, &q, t0), None);
        assert!(matches!(
            lookup(&mut cache, &q, t0 + Duration::from_millis(999)),
            Lookup::Failed(None)
        ));
        assert!(matches!(
            lookup(&mut cache, &q, t0 + Duration::from_secs(1)),
            Lookup::Miss
        ));
        // A good answer ends the failure at once.
        cache.failed(&key, &q, t0 + Duration::from_secs(2));
        store(&mut cache, &q, &answer(&q, 60), t0 + Duration::from_secs(2));
        fresh(lookup(&mut cache, &q, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn serve_stale_off_serves_nothing_expired() {
        let t0 = Instant::now();
        let mut cache = Cache::new(CacheSettings {
            stale_window: Duration::ZERO,
            ..SETTINGS
        });
        let q = query("www.example.");
        store(&mut cache, &q, &answer(&q, 60), t0);
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(cache.failed(&q.cache_key().expect("key"), &q, t1), None);
    }

    #[test]
    fn a_popular_name_is_prefetched_once_in_the_last_tenth_of_its_lifetime() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let q = query("popular.example.");
        store(&mut cache, &q, &answer(&q, 100), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!fresh(lookup(&mut cache, &q, at(10))).1);
        // Popular enough, but 10 s or more left: not yet.
        assert!(!fresh(lookup(&mut cache, &q, at(90))).1);
        assert!(fresh(lookup(&mut cache, &q, at(91))).1);
        // Asked for once; the refresh's store starts the count again.
        assert!(!fresh(lookup(&mut cache, &q, at(95))).1);
        store(&mut cache, &q, &answer(&q, 100), at(95));
        assert!(!fresh(lookup(&mut cache, &q, at(186))).1);
        assert_eq!(cache.report().counters.prefetches, 1);
    }

    #[test]
    fn a_name_asked_once_or_a_short_ttl_is_not_prefetched() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let (once, short) = (query("once.example."), query("short.example."));
        store(&mut cache, &once, &answer(&once, 100), t0);
        store(&mut cache, &short, &answer(&short, 5), t0);
        assert!(!fresh(lookup(&mut cache, &once, t0 + Duration::from_secs(95))).1);
        for ms in [0, 1000, 4900] {
            assert!(!fresh(lookup(&mut cache, &short, t0 + Duration::from_millis(ms))).1);
        }
        let mut off = Cache::new(CacheSettings {
            prefetch: false,
            ..SETTINGS
        });
        store(&mut off, &once, &answer(&once, 100), t0);
        for s in [1, 2, 95, 96] {
            assert!(!fresh(lookup(&mut off, &once, t0 + Duration::from_secs(s))).1);
        }
    }

    #[test]
    fn memory_is_bounded_and_the_least_recently_used_goes_first() {
        let t0 = Instant::now();
        let probe = query("n0.example.");
        let one = {
            let cached = answer(&probe, 60)
                .to_cache(SETTINGS.ttl)
                .expect("cacheable");
            ENTRY_OVERHEAD + probe.cache_key().expect("key").len() + cached.size()
        };
        let mut cache = Cache::new(CacheSettings {
            max_bytes: one * 3,
            ..SETTINGS
        });
        let names: Vec<Query> = (0..4).map(|i| query(&format!("n{i}.example."))).collect();
        for q in &names[..3] {
            store(&mut cache, q, &answer(q, 60), t0);
        }
        assert_eq!((cache.len(), cache.bytes()), (3, one * 3));
        // n0 is used, so n1 is the least recently used when n3 comes.
        fresh(lookup(&mut cache, &names[0], t0));
        store(&mut cache, &names[3], &answer(&names[3], 60), t0);
        assert_eq!(cache.len(), 3);
        assert!(cache.bytes() <= one * 3);
        assert!(matches!(lookup(&mut cache, &names[1], t0), Lookup::Miss));
        for i in [0, 2, 3] {
            fresh(lookup(&mut cache, &names[i], t0));
        }
        assert_eq!(cache.report().counters.evictions, 1);
        // A smaller bound evicts at once; zero turns the cache off.
        cache.set_settings(CacheSettings {
            max_bytes: one,
            ..SETTINGS
        });
        assert_eq!(cache.len(), 1);
        cache.set_settings(CacheSettings {
            max_bytes: 0,
            ..SETTINGS
        });
        assert!(cache.is_empty() && !cache.enabled());
        store(&mut cache, &names[0], &answer(&names[0], 60), t0);
        assert!(cache.is_empty());
    }

    #[test]
    fn many_entries_keep_the_byte_count_exact() {
        let t0 = Instant::now();
        let mut cache = Cache::new(CacheSettings {
            max_bytes: 64 << 10,
            ..SETTINGS
        });
        for i in 0..2_000u32 {
            let q = query(&format!("host-{i}.example."));
            store(&mut cache, &q, &answer(&q, 60 + i % 7), t0);
            if i % 3 == 0 {
                cache.failed(&q.cache_key().expect("key"), &q, t0);
            }
            assert!(cache.bytes() <= 64 << 10);
        }
        // The count is the sum of what the entries hold, after every
        // insert, replacement and eviction.
        let sum: usize = cache.slab.iter().flatten().map(|e| e.size).sum();
        assert_eq!(cache.bytes(), sum);
        assert_eq!(cache.index.len(), cache.slab.iter().flatten().count());
        cache.flush();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn keys_keep_do_and_cd_apart() {
        let t0 = Instant::now();
        let mut cache = Cache::new(SETTINGS);
        let plain = query("www.example.");
        let dnssec = Query::parse(&query_bytes(
            "www.example.",
            RecordType::A,
            Some((1232, true)),
        ))
        .expect("valid");
        store(&mut cache, &plain, &answer(&plain, 60), t0);
        assert!(matches!(lookup(&mut cache, &dnssec, t0), Lookup::Miss));
        // Another spelling of the same name is the same question.
        let upper = query("WWW.Example.");
        let (a, _) = fresh(lookup(&mut cache, &upper, t0));
        assert_eq!(
            parse(a.bytes()).queries()[0].name().to_ascii(),
            "WWW.Example."
        );
    }
}
