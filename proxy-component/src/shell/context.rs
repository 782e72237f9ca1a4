//! What the listeners share: the configuration serving now (a
//! [`Generation`], swapped whole by a reload) and the budgets and counters
//! that outlive it. The listeners, the reporter and the reload watcher take
//! it from here; `shell::serve` builds it.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use crate::core::acl::Acl;
use crate::core::admission::{self, Decision, Permit, Shares, SourceKey, Transport};
use crate::core::cache::{Cache, Lookup};
use crate::core::client_conn::Budget;
use crate::core::message::Rcode;
use crate::core::message::{self, CacheKey, Query, RcodeName, Response};
use crate::core::stats::Stats;
use crate::shell::config::ProxyConfig;
use crate::shell::log::{Level, Log};
use crate::shell::resolver::{Resolver, SetupError};

/// What one configuration serves with: the upstream side, who may query,
/// and the settings. A reload builds a new one and swaps it in
/// ([`Context::apply`]); each query keeps the one it was admitted under
/// until it is answered, so the old upstream connections close only once
/// their queries are done.
pub struct Generation {
    /// The upstream side.
    pub resolver: Resolver,
    /// Who may query.
    pub acl: Acl,
    /// Configuration.
    pub config: ProxyConfig,
}

impl Generation {
    /// Prepares `config`'s upstreams (connecting lazily), counting into
    /// `stats`.
    pub fn new(
        config: ProxyConfig,
        log: Log,
        stats: Rc<RefCell<Stats>>,
    ) -> Result<Self, SetupError> {
        Ok(Self {
            resolver: Resolver::new(&config, log, stats)?,
            acl: Acl::new(config.allow_networks.clone()),
            config,
        })
    }
}

/// State shared by the listeners.
pub struct Context {
    /// The configuration served now.
    current: RefCell<Rc<Generation>>,
    /// Events.
    pub log: Log,
    /// In-flight slots and per-source shares.
    shares: RefCell<Shares>,
    /// Bytes of client answers waiting to be written.
    pub budget: RefCell<Budget>,
    /// What the metrics count, shared with the resolvers.
    pub stats: Rc<RefCell<Stats>>,
    /// Answers, across generations (flushed when the upstreams' trust
    /// changes).
    pub cache: RefCell<Cache>,
    /// The key of the query being looked up, kept between lookups so that
    /// a hit allocates none (a miss takes a copy to store under).
    lookup_key: RefCell<CacheKey>,
    /// Prefetches running.
    prefetching: Cell<usize>,
}

/// A query's in-flight slot, given back on drop.
pub struct InflightPermit {
    ctx: Rc<Context>,
    permit: Option<Permit>,
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.ctx.shares.borrow_mut().release(p);
        }
    }
}

impl Context {
    /// A context serving `generation`.
    pub fn new(generation: Generation, log: Log, stats: Rc<RefCell<Stats>>) -> Self {
        let config = &generation.config;
        Self {
            shares: RefCell::new(Shares::new(config.max_inflight)),
            budget: RefCell::new(Budget::new(config.client_buffer_budget)),
            cache: RefCell::new(Cache::new(config.cache)),
            lookup_key: RefCell::default(),
            prefetching: Cell::new(0),
            current: RefCell::new(Rc::new(generation)),
            log,
            stats,
        }
    }

    /// The configuration served now.
    pub fn current(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }

    /// Serves `next` from now on: new queries use it, queries in flight
    /// finish on the one they started with. The listen addresses are not
    /// `next`'s to change (the host keeps them).
    pub fn apply(&self, next: Generation) {
        let config = &next.config;
        self.shares.borrow_mut().set_max(config.max_inflight);
        self.budget
            .borrow_mut()
            .set_limit(config.client_buffer_budget);
        self.log.set_max(config.log_level);
        let mut cache = self.cache.borrow_mut();
        cache.set_settings(config.cache);
        if !same_trust(&self.current().config, config) && !cache.is_empty() {
            cache.flush();
            self.log.event(
                Level::Info,
                "cache flushed: the upstreams, their pins or CAs changed",
                &[],
            );
        }
        drop(cache);
        *self.current.borrow_mut() = Rc::new(next);
    }

    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.shares.borrow().used()
    }

    /// Runs [`admission::admit`] for a message from `peer`; counts drops.
    pub fn admit(
        &self,
        generation: &Generation,
        transport: Transport,
        peer: IpAddr,
        msg: &[u8],
    ) -> Decision {
        let allowed = generation.acl.allows(peer);
        let decision = admission::admit(transport, allowed, msg);
        if let Decision::Drop(why) | Decision::Close(why) = &decision {
            self.stats.borrow_mut().dropped(why.metric());
        }
        decision
    }

    /// The in-flight slot of a query from `peer` the cache did not answer
    /// ([`admission::slot`]), or the RCODE to answer it with (counted).
    pub fn slot(self: &Rc<Self>, peer: IpAddr) -> Result<InflightPermit, Rcode> {
        let slot = admission::slot(peer, &mut self.shares.borrow_mut());
        match slot {
            Ok(permit) => Ok(InflightPermit {
                ctx: self.clone(),
                permit: Some(permit),
            }),
            // Admission refuses only for want of room in flight.
            Err(rcode) => {
                self.stats.borrow_mut().refused_inflight += 1;
                Err(rcode)
            }
        }
    }
}

/// Prefetches running at once, at most: each is an upstream query no
/// client waits for, so they never take more than a few connections' worth
/// of pipelining from the clients.
pub const MAX_PREFETCHES: usize = 64;

/// What the cache had for a forwarded query.
pub enum FromCache {
    /// The answer to send: fresh, stale after a failure, or a remembered
    /// failure's SERVFAIL.
    Answer(Response),
    /// Ask upstream; the key to file the answer under, when the query may
    /// be cached.
    Miss(Option<CacheKey>),
}

impl Context {
    /// Looks a forwarded query up in the cache, synchronously: a hit is
    /// answered without a task. A fresh answer due for a prefetch starts
    /// one. With `log_queries`, a hit is logged with `upstream=cache` (or
    /// `stale`). `now` is when the query came in (the listener's reading:
    /// TTLs count in seconds, and a reading is a host call in the
    /// component).
    pub fn from_cache(
        self: &Rc<Self>,
        generation: &Rc<Generation>,
        query: &Query,
        client: SocketAddr,
        transport: Transport,
        now: Instant,
    ) -> FromCache {
        let mut cache = self.cache.borrow_mut();
        if !cache.enabled() {
            return FromCache::Miss(None);
        }
        let mut key = self.lookup_key.borrow_mut();
        if !query.cache_key_into(&mut key) {
            return FromCache::Miss(None);
        }
        let lookup = cache.lookup(&key, query, now);
        let (answer, source) = match lookup {
            Lookup::Miss => return FromCache::Miss(Some(key.clone())),
            Lookup::Fresh { answer, prefetch } => {
                drop(cache);
                if prefetch {
                    self.prefetch(generation, query, key.clone());
                }
                (answer, "cache")
            }
            Lookup::Failed(Some(stale)) => (stale, "stale"),
            Lookup::Failed(None) => (Response::reply(query, Rcode::ServFail), "cache"),
        };
        if generation.config.log_queries {
            self.log_query(query, &answer, client, transport, Some(source), now);
        }
        FromCache::Answer(answer)
    }

    /// Resolves a query the cache did not answer, and files the outcome
    /// under `key`: a cacheable answer is stored, and the client gets it
    /// as the cache keeps it (TTLs clamped); a failure (every upstream
    /// failed, or SERVFAIL) is remembered, and a stale answer served in its
    /// place if there is one (RFC 8767). With `log_queries`, logs it once
    /// answered, timed from `received`, when the query came in (its
    /// deadline counts from then too). Also the last clock reading taken,
    /// when the answer was decided: the caller's `now` for the answer, with
    /// no reading of its own.
    pub async fn resolve(
        &self,
        generation: &Generation,
        query: &Query,
        key: Option<CacheKey>,
        client: SocketAddr,
        transport: Transport,
        received: Instant,
    ) -> (Response, Instant) {
        let (mut answer, mut upstream, now) = generation
            .resolver
            .resolve(query, received, SourceKey::of(client.ip()))
            .await;
        if let Some(key) = key {
            let mut cache = self.cache.borrow_mut();
            let failed = upstream.is_none()
                || message::rcode(answer.bytes()) == Some(u8::from(Rcode::ServFail));
            if failed {
                if let Some(stale) = cache.failed(&key, query, now) {
                    (answer, upstream) = (stale, Some("stale"));
                }
            } else if let Some(cached) = answer.to_cache(cache.settings().ttl) {
                // The client gets what a hit would give it now: TTLs
                // clamped as kept, so no client is told to keep an answer
                // longer than the cache does.
                answer = cached.answer(query, 0, None);
                cache.store(key, cached, now);
            }
        }
        if generation.config.log_queries {
            self.log_query(query, &answer, client, transport, upstream, received);
        }
        (answer, now)
    }

    /// Refreshes `key` in the background (at most [`MAX_PREFETCHES`] at
    /// once; past that the entry simply expires). Only a good answer
    /// replaces the entry: a failed prefetch leaves it to serve out its
    /// lifetime.
    fn prefetch(self: &Rc<Self>, generation: &Rc<Generation>, query: &Query, key: CacheKey) {
        if self.prefetching.get() >= MAX_PREFETCHES {
            return;
        }
        self.prefetching.set(self.prefetching.get() + 1);
        let (ctx, generation, query) = (self.clone(), generation.clone(), query.clone());
        tokio::task::spawn_local(async move {
            let (answer, upstream, now) = generation
                .resolver
                .resolve(&query, Instant::now(), SourceKey::PROXY)
                .await;
            if upstream.is_some() {
                let mut cache = ctx.cache.borrow_mut();
                if let Some(cached) = answer.to_cache(cache.settings().ttl) {
                    cache.store(key, cached, now);
                }
            }
            ctx.prefetching.set(ctx.prefetching.get() - 1);
        });
    }

    /// One `query` log line.
    fn log_query(
        &self,
        query: &Query,
        answer: &Response,
        client: SocketAddr,
        transport: Transport,
        upstream: Option<&str>,
        started: Instant,
    ) {
        let rcode = RcodeName(message::rcode(answer.bytes()).unwrap_or(0));
        let duration_ms = format!("{:.3}", started.elapsed().as_secs_f64() * 1e3);
        let proto = match transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        self.log.query(&[
            ("client", &client),
            ("proto", &proto),
            ("name", &query.qname()),
            ("type", &query.qtype()),
            ("rcode", &rcode),
            ("upstream", &upstream.unwrap_or("-")),
            ("duration_ms", &duration_ms),
        ]);
    }
}

/// Whether `a` and `b` ask the same servers, authenticated the same way
/// (address, name, pins, CA), whatever their names and order: if so, what
/// the cache holds is still what the configuration trusts.
fn same_trust(a: &ProxyConfig, b: &ProxyConfig) -> bool {
    let trust = |c: &ProxyConfig| {
        let mut t: Vec<_> = c
            .upstreams
            .iter()
            .map(|u| {
                (
                    u.addr,
                    u.auth_name.to_string(),
                    u.pins.clone(),
                    u.ca.as_ref().map(|ca| ca.pem.clone()),
                )
            })
            .collect();
        t.sort_by(|x, y| (x.0, &x.1, &x.3).cmp(&(y.0, &y.1, &y.3)));
        t
    };
    trust(a) == trust(b)
}

/// The upstreams as the `serving` and `reloaded` lines name them.
pub fn describe_upstreams(config: &ProxyConfig) -> String {
    config
        .upstreams
        .iter()
        .map(|u| format!("{} ({})", u.label(), u.auth_name.describe()))
        .collect::<Vec<_>>()
        .join(", ")
}
