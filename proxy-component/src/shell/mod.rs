//! The async I/O shell: moves bytes between sockets and the sans-IO core.
//! Single-threaded (`LocalSet`), the same code natively and in the component.

pub mod accept;
pub mod config;
pub mod conn;
pub mod log;
pub mod report;
pub mod resolver;
pub mod tcp;
pub mod tls;
pub mod udp;

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
use crate::shell::log::{Level, Log};
use crate::shell::report::Reporter;
use crate::shell::resolver::{Resolver, SetupError};

/// The proxy could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An upstream's TLS configuration is unusable.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The listen address cannot be bound (in use, or not granted).
    #[error("cannot listen on {addr} ({proto}): {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// udp or tcp.
        proto: &'static str,
        /// The OS (or sandbox) error.
        error: std::io::Error,
    },
}

/// State shared by the listeners.
pub struct Context {
    /// The upstream side.
    pub resolver: Resolver,
    /// Who may query.
    pub acl: Acl,
    /// Configuration.
    pub config: ProxyConfig,
    /// Events.
    pub log: Log,
    /// In-flight slots and per-source shares.
    shares: RefCell<Shares>,
    /// Bytes of client answers waiting to be written.
    pub budget: RefCell<Budget>,
    /// What the metrics count, shared with the resolver.
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
    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.shares.borrow().used()
    }

    /// Runs [`admission::admit`] for a message from `peer`; counts drops
    /// and refusals.
    pub fn admit(self: &Rc<Self>, transport: Transport, peer: IpAddr, msg: &[u8]) -> Admitted {
        let allowed = self.acl.allows(peer);
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

impl Context {
    /// Resolves a forwarded query from `client`; with `log_queries`, logs
    /// it once answered. Off, this is [`Resolver::resolve`] and nothing
    /// more: no clock read, no formatting.
    pub async fn resolve(
        &self,
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
        self.log.query(&[
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

/// Binds the listeners and serves until an unrecoverable error, pushing
/// the metrics to `reporter` about once a second. Must run inside a
/// `LocalSet`.
pub async fn serve(
    config: ProxyConfig,
    log: Log,
    reporter: Rc<dyn Reporter>,
) -> Result<(), ServeError> {
    let stats = Rc::new(RefCell::new(Stats::new(config.upstreams.len())));
    let resolver = Resolver::new(&config, log.clone(), stats.clone())?;
    let listen = config.listen;
    let udp = udp::bind(listen).map_err(|error| ServeError::Bind {
        addr: listen,
        proto: "udp",
        error,
    })?;
    let tcp = accept::Acceptor::bind(listen).map_err(|error| ServeError::Bind {
        addr: listen,
        proto: "tcp",
        error,
    })?;
    let names: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| format!("{} ({})", u.label(), u.auth_name.describe()))
        .collect();
    let upstreams = names.join(", ");
    log.event(
        Level::Info,
        "serving",
        &[("listen", &listen), ("upstreams", &upstreams)],
    );
    let ctx = Rc::new(Context {
        resolver,
        acl: Acl::new(config.allow_networks.clone()),
        shares: RefCell::new(Shares::new(config.max_inflight)),
        budget: RefCell::new(Budget::new(config.client_buffer_budget)),
        stats,
        config,
        log,
    });
    let report_task = tokio::task::spawn_local(report::every_second(ctx.clone(), reporter));
    let udp_task = tokio::task::spawn_local(udp::serve(udp, ctx.clone()));
    tcp::serve(tcp, ctx).await;
    udp_task.abort();
    report_task.abort();
    Ok(())
}
