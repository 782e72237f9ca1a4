//! What the listeners share: the configuration serving now (a
//! [`Generation`], swapped whole by a reload) and the budgets and counters
//! that outlive it. The listeners, the reporter and the reload watcher take
//! it from here; `shell::serve` builds it.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use crate::core::acl::Acl;
use crate::core::admission::{self, Decision, Permit, Shares, Transport};
use crate::core::client_conn::Budget;
use crate::core::message::Rcode;
use crate::core::message::{self, Query, RcodeName, Response};
use crate::core::stats::Stats;
use crate::shell::config::ProxyConfig;
use crate::shell::log::Log;
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

/// What to do with a client message; a forwarded query carries its slot.
pub enum Admitted {
    /// Forward it: the query (its bytes and layout) and its slot.
    Forward(crate::core::message::Query, InflightPermit),
    /// Anything else, as [`admission::admit`] decided.
    Other(Decision),
}

impl Context {
    /// A context serving `generation`.
    pub fn new(generation: Generation, log: Log, stats: Rc<RefCell<Stats>>) -> Self {
        let config = &generation.config;
        Self {
            shares: RefCell::new(Shares::new(config.max_inflight)),
            budget: RefCell::new(Budget::new(config.client_buffer_budget)),
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
        *self.current.borrow_mut() = Rc::new(next);
    }

    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.shares.borrow().used()
    }

    /// Runs [`admission::admit`] for a message from `peer`; counts drops
    /// and refusals.
    pub fn admit(
        self: &Rc<Self>,
        generation: &Generation,
        transport: Transport,
        peer: IpAddr,
        msg: &[u8],
    ) -> Admitted {
        let allowed = generation.acl.allows(peer);
        let decision =
            admission::admit(transport, peer, allowed, msg, &mut self.shares.borrow_mut());
        match &decision {
            Decision::Drop(why) | Decision::Close(why) => {
                self.stats.borrow_mut().dropped(why.metric());
            }
            // Admission refuses only for want of room in flight.
            Decision::Reply(Rcode::Refused) => self.stats.borrow_mut().refused_inflight += 1,
            _ => {}
        }
        match decision {
            Decision::Forward(q, permit) => Admitted::Forward(
                q,
                InflightPermit {
                    ctx: self.clone(),
                    permit: Some(permit),
                },
            ),
            other => Admitted::Other(other),
        }
    }
}

impl Generation {
    /// Resolves a forwarded query from `client`; with `log_queries`, logs
    /// it to `log` once answered. Off, this is [`Resolver::resolve`] and
    /// nothing more: no clock read, no formatting.
    pub async fn resolve(
        &self,
        log: &Log,
        query: &Query,
        client: SocketAddr,
        transport: Transport,
    ) -> Response {
        if !self.config.log_queries {
            return self.resolver.resolve(query).await;
        }
        let started = Instant::now();
        let (answer, upstream) = self.resolver.resolve_via(query).await;
        let rcode = RcodeName(message::rcode(answer.bytes()).unwrap_or(0));
        let duration_ms = format!("{:.3}", started.elapsed().as_secs_f64() * 1e3);
        let proto = match transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        log.query(&[
            ("client", &client),
            ("proto", &proto),
            ("name", &query.qname()),
            ("type", &query.qtype()),
            ("rcode", &rcode),
            ("upstream", &upstream.unwrap_or("-")),
            ("duration_ms", &duration_ms),
        ]);
        answer
    }
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
