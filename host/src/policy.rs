//! The socket capability policy: what the component may do with the network.
//!
//! - It may bind (UDP and TCP) and listen only on its listen addresses, and
//!   connect only to the configured upstream `ip:port` pairs.
//! - Clients outside `allow_networks` never reach it: their TCP connections
//!   are reset at accept, their UDP datagrams dropped before it sees them,
//!   so the proxy is silent to outsiders rather than answering REFUSED.
//! - It may send a UDP datagram only as a reply: each datagram received
//!   grants one datagram back to the same `ip:port` within the query
//!   deadline plus a margin (see [`grants`]), so a compromised or buggy
//!   component cannot be turned into a packet cannon.
//!
//! Everything else is refused inside the component with `PermissionDenied`
//! (or, for received traffic, silently dropped), counted per reason and
//! logged at a bounded rate (see [`refusals`]). This is the only place that
//! grants network access; weaken it only on purpose.
//!
//! A reload changes the upstreams, the client networks and the reply window
//! ([`SocketPolicy::update`]) at the moment the component takes the new
//! configuration; the listen addresses are fixed for the life of the process.

mod grants;
pub mod refusals;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use dnsproxy_core::core::acl::{Acl, IpNet};
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::config::ProxyConfig;
pub use grants::MAX_GRANTS;
use grants::{Grants, Received};
use refusals::{Refusal, Refusals};

/// How much longer than the query deadline a UDP reply stays granted: the
/// component answers at the latest at the deadline (SERVFAIL), and may be a
/// little late under load.
pub const REPLY_MARGIN: Duration = Duration::from_secs(2);

/// The addresses the component may use, shared by all its instances.
#[derive(Clone, Debug)]
pub struct SocketPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    listen: Vec<SocketAddr>,
    /// What a reload changes, read per check.
    peers: RwLock<Peers>,
    grants: Mutex<Grants>,
    refusals: Refusals,
}

/// The upstreams the component may connect to and the clients it may hear.
#[derive(Debug)]
struct Peers {
    upstreams: HashSet<SocketAddr>,
    clients: Acl,
}

impl SocketPolicy {
    /// A policy for a proxy listening on `listen`, serving clients in
    /// `allow_networks`, forwarding to `upstreams`, whose UDP replies are
    /// granted for `reply_window` after each query.
    pub fn new(
        listen: impl IntoIterator<Item = SocketAddr>,
        upstreams: impl IntoIterator<Item = SocketAddr>,
        allow_networks: impl IntoIterator<Item = IpNet>,
        reply_window: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                listen: listen.into_iter().collect(),
                peers: RwLock::new(Peers {
                    upstreams: upstreams.into_iter().collect(),
                    clients: Acl::new(allow_networks.into_iter().collect()),
                }),
                grants: Mutex::new(Grants::new(reply_window, MAX_GRANTS, Instant::now())),
                refusals: Refusals::default(),
            }),
        }
    }

    /// The policy for a validated configuration: replies are granted for
    /// `query_timeout` plus [`REPLY_MARGIN`].
    pub fn from_config(config: &ProxyConfig) -> Self {
        Self::new(
            config.listen.iter().copied(),
            config.upstreams.iter().map(|u| u.addr),
            config.allow_networks.iter().copied(),
            config.query_timeout + REPLY_MARGIN,
        )
    }

    /// Grants what a reloaded `config` names instead: its upstreams, its
    /// client networks and its reply window. The listen addresses stay (the
    /// sockets are bound once). A connection already open to an upstream
    /// the reload removed is not cut; a new one is refused.
    pub fn update(&self, config: &ProxyConfig) {
        let peers = Peers {
            upstreams: config.upstreams.iter().map(|u| u.addr).collect(),
            clients: Acl::new(config.allow_networks.clone()),
        };
        *self
            .inner
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = peers;
        self.grants()
            .set_window(config.query_timeout + REPLY_MARGIN);
    }

    fn peers(&self) -> std::sync::RwLockReadGuard<'_, Peers> {
        // Replaced whole by `update`: never seen half-written.
        self.inner
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides one use of one address (the `socket_addr_check` of the WASI
    /// context, called per datagram: keep it cheap). A refusal is counted
    /// and, at a bounded rate, logged.
    pub fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        match self.decide(addr, use_, Instant::now()) {
            Ok(()) => true,
            Err(reason) => {
                self.inner.refusals.record(reason, addr, use_);
                false
            }
        }
    }

    /// The refusal counters (for metrics and the periodic log flush).
    pub fn refusals(&self) -> &Refusals {
        &self.inner.refusals
    }

    fn decide(&self, addr: SocketAddr, use_: SocketAddrUse, now: Instant) -> Result<(), Refusal> {
        let me = &*self.inner;
        let ok = |allowed: bool, reason| if allowed { Ok(()) } else { Err(reason) };
        match use_ {
            // The listen address, or the wildcard, port-0 bind the OS does
            // implicitly before a connect (the connect itself is checked).
            SocketAddrUse::TcpBind => ok(
                me.listen.contains(&addr) || is_implicit_bind(addr),
                Refusal::Bind,
            ),
            // Listening is only on the bound listen address: an implicit
            // bind to the wildcard cannot be turned into a listener. The
            // only UDP socket the component can hold is the listen one.
            SocketAddrUse::TcpListen | SocketAddrUse::UdpBind => {
                ok(me.listen.contains(&addr), Refusal::Bind)
            }
            SocketAddrUse::TcpConnect => {
                ok(self.peers().upstreams.contains(&addr), Refusal::Connect)
            }
            // `Acl` matches an IPv4-mapped IPv6 address as its IPv4 address.
            SocketAddrUse::TcpAccept => ok(
                self.peers().clients.allows(addr.ip()),
                Refusal::AcceptOutsider,
            ),
            SocketAddrUse::UdpReceive => {
                if !self.peers().clients.allows(addr.ip()) {
                    return Err(Refusal::ReceiveOutsider);
                }
                match self.grants().receive(addr, now) {
                    Received::Granted => Ok(()),
                    Received::TableFull => Err(Refusal::ReceiveGrantsFull),
                }
            }
            SocketAddrUse::UdpSend => ok(self.grants().send(addr, now), Refusal::SendUnsolicited),
        }
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        // The table stays consistent whatever a panicking holder did: every
        // update is a single insert, overwrite or remove.
        self.inner
            .grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn is_implicit_bind(addr: SocketAddr) -> bool {
    addr.ip().is_unspecified() && addr.port() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(6);

    fn policy() -> SocketPolicy {
        SocketPolicy::new(
            [sa("127.0.0.1:5353")],
            [sa("127.0.0.1:853"), sa("[::1]:853")],
            ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
                .iter()
                .map(|n| IpNet::parse(n).unwrap()),
            WINDOW,
        )
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn binds_only_the_listen_address() {
        let p = policy();
        assert!(p.check(sa("127.0.0.1:5353"), SocketAddrUse::UdpBind));
        assert!(p.check(sa("127.0.0.1:5353"), SocketAddrUse::TcpBind));
        assert!(p.check(sa("127.0.0.1:5353"), SocketAddrUse::TcpListen));
        assert!(!p.check(sa("127.0.0.1:5354"), SocketAddrUse::UdpBind));
        assert!(!p.check(sa("0.0.0.0:5353"), SocketAddrUse::TcpBind));
        assert!(!p.check(sa("0.0.0.0:0"), SocketAddrUse::UdpBind));
        assert_eq!(p.refusals().total(Refusal::Bind), 3);
    }

    #[test]
    fn implicit_connect_bind_cannot_listen() {
        let p = policy();
        assert!(p.check(sa("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(p.check(sa("[::]:0"), SocketAddrUse::TcpBind));
        assert!(!p.check(sa("0.0.0.0:0"), SocketAddrUse::TcpListen));
        assert!(!p.check(sa("0.0.0.0:40000"), SocketAddrUse::TcpListen));
    }

    /// `local_host = 0.0.0.0, ::`: each address of the set may be bound
    /// and listened on, nothing else.
    #[test]
    fn binds_each_listen_address_of_the_set() {
        let p = SocketPolicy::new(
            [sa("0.0.0.0:5353"), sa("[::]:5353")],
            [sa("127.0.0.1:853")],
            [IpNet::parse("127.0.0.0/8").unwrap()],
            WINDOW,
        );
        for addr in ["0.0.0.0:5353", "[::]:5353"] {
            for use_ in [
                SocketAddrUse::UdpBind,
                SocketAddrUse::TcpBind,
                SocketAddrUse::TcpListen,
            ] {
                assert!(p.check(sa(addr), use_), "{addr} {use_:?}");
            }
        }
        assert!(!p.check(sa("[::1]:5353"), SocketAddrUse::UdpBind));
        assert!(!p.check(sa("[::]:5354"), SocketAddrUse::TcpListen));
    }

    /// A reload swaps the upstreams and the client networks; the listen
    /// addresses stay.
    #[test]
    fn update_swaps_upstreams_and_clients_not_the_listen_address() {
        let p = policy();
        let flags = crate::cli::RunArgs {
            config: Some("/dev/null".into()),
            ..Default::default()
        };
        let config = crate::config::load(&flags, &|k| match k {
            "TLS_HOST" => Some("127.0.0.9".into()),
            "TLS_PORT" => Some("8853".into()),
            "LOCAL_HOST" => Some("127.0.0.1".into()),
            "LOCAL_PORT" => Some("6000".into()),
            "ALLOW_NETWORKS" => Some("192.0.2.0/24".into()),
            _ => None,
        })
        .unwrap();
        p.update(&config);
        assert!(p.check(sa("127.0.0.9:8853"), SocketAddrUse::TcpConnect));
        assert!(!p.check(sa("127.0.0.1:853"), SocketAddrUse::TcpConnect));
        assert!(p.check(sa("192.0.2.7:40000"), SocketAddrUse::TcpAccept));
        assert!(!p.check(sa("127.0.0.1:40000"), SocketAddrUse::TcpAccept));
        assert!(p.check(sa("127.0.0.1:5353"), SocketAddrUse::UdpBind));
        assert!(!p.check(sa("127.0.0.1:6000"), SocketAddrUse::UdpBind));
    }

    #[test]
    fn connects_only_to_configured_upstreams() {
        let p = policy();
        assert!(p.check(sa("127.0.0.1:853"), SocketAddrUse::TcpConnect));
        assert!(p.check(sa("[::1]:853"), SocketAddrUse::TcpConnect));
        assert!(!p.check(sa("127.0.0.1:854"), SocketAddrUse::TcpConnect));
        assert!(!p.check(sa("127.0.0.2:853"), SocketAddrUse::TcpConnect));
        assert!(!p.check(sa("1.1.1.1:853"), SocketAddrUse::TcpConnect));
        assert_eq!(p.refusals().total(Refusal::Connect), 3);
    }

    #[test]
    fn tcp_clients_outside_allow_networks_are_reset_at_accept() {
        let p = policy();
        assert!(p.check(sa("127.0.0.1:40000"), SocketAddrUse::TcpAccept));
        assert!(p.check(sa("10.1.2.3:40000"), SocketAddrUse::TcpAccept));
        assert!(p.check(sa("[::1]:40000"), SocketAddrUse::TcpAccept));
        assert!(!p.check(sa("192.0.2.1:40000"), SocketAddrUse::TcpAccept));
        assert!(!p.check(sa("[2001:db8::1]:40000"), SocketAddrUse::TcpAccept));
        assert_eq!(p.refusals().total(Refusal::AcceptOutsider), 2);
    }

    #[test]
    fn ipv4_mapped_clients_are_judged_by_their_ipv4_address() {
        let p = policy();
        assert!(p.check(sa("[::ffff:10.0.0.1]:40000"), SocketAddrUse::TcpAccept));
        assert!(!p.check(sa("[::ffff:192.0.2.1]:40000"), SocketAddrUse::TcpAccept));
        assert!(p.check(sa("[::ffff:127.0.0.1]:40000"), SocketAddrUse::UdpReceive));
        // The grant belongs to the client, however its address is written.
        assert!(p.check(sa("127.0.0.1:40000"), SocketAddrUse::UdpSend));
    }

    #[test]
    fn udp_datagrams_from_outside_allow_networks_are_dropped_unanswered() {
        let p = policy();
        let outsider = sa("192.0.2.1:40000");
        assert!(!p.check(outsider, SocketAddrUse::UdpReceive));
        assert!(
            !p.check(outsider, SocketAddrUse::UdpSend),
            "a dropped datagram grants no reply"
        );
        assert_eq!(p.refusals().total(Refusal::ReceiveOutsider), 1);
        assert_eq!(p.refusals().total(Refusal::SendUnsolicited), 1);
    }

    #[test]
    fn udp_sends_are_only_replies_to_datagrams_received() {
        let p = policy();
        let client = sa("127.0.0.1:40000");
        assert!(!p.check(client, SocketAddrUse::UdpSend), "unsolicited");
        assert!(p.check(client, SocketAddrUse::UdpReceive));
        assert!(p.check(client, SocketAddrUse::UdpReceive));
        assert!(p.check(client, SocketAddrUse::UdpSend));
        assert!(p.check(client, SocketAddrUse::UdpSend));
        assert!(
            !p.check(client, SocketAddrUse::UdpSend),
            "two queries, two replies"
        );
        assert!(
            !p.check(sa("127.0.0.1:9"), SocketAddrUse::UdpSend),
            "no datagrams to a third party"
        );
        assert_eq!(p.refusals().total(Refusal::SendUnsolicited), 3);
    }

    #[test]
    fn udp_reply_grant_lasts_the_query_deadline_plus_margin() {
        let p = policy();
        let client = sa("127.0.0.1:40000");
        let t0 = Instant::now();
        p.decide(client, SocketAddrUse::UdpReceive, t0).unwrap();
        p.decide(client, SocketAddrUse::UdpReceive, t0).unwrap();
        assert_eq!(
            p.decide(
                client,
                SocketAddrUse::UdpSend,
                t0 + WINDOW - Duration::from_millis(1)
            ),
            Ok(())
        );
        assert_eq!(
            p.decide(client, SocketAddrUse::UdpSend, t0 + WINDOW),
            Err(Refusal::SendUnsolicited)
        );
    }

    #[test]
    fn from_config_grants_replies_for_query_timeout_plus_margin() {
        let flags = crate::cli::RunArgs {
            config: Some("/dev/null".into()),
            ..Default::default()
        };
        let config = crate::config::load(&flags, &|k| match k {
            "TLS_HOST" => Some("127.0.0.1".into()),
            "TLS_HOSTNAME" => Some("dot.test".into()),
            "LOCAL_HOST" => Some("127.0.0.1".into()),
            "LOCAL_PORT" => Some("5353".into()),
            "QUERY_TIMEOUT" => Some("1s".into()),
            _ => None,
        })
        .unwrap();
        let p = SocketPolicy::from_config(&config);
        let window = Duration::from_secs(1) + REPLY_MARGIN;
        let client = sa("127.0.0.1:40000");
        let t0 = Instant::now();
        assert!(p.check(sa("127.0.0.1:5353"), SocketAddrUse::UdpBind));
        assert!(p.check(sa("127.0.0.1:853"), SocketAddrUse::TcpConnect));
        assert!(
            !p.check(sa("192.0.2.1:40000"), SocketAddrUse::TcpAccept),
            "the default allow_networks are loopback and private ranges"
        );
        p.decide(client, SocketAddrUse::UdpReceive, t0).unwrap();
        p.decide(client, SocketAddrUse::UdpReceive, t0).unwrap();
        let just_before = t0 + window - Duration::from_millis(1);
        assert_eq!(
            p.decide(client, SocketAddrUse::UdpSend, just_before),
            Ok(())
        );
        assert_eq!(
            p.decide(client, SocketAddrUse::UdpSend, t0 + window),
            Err(Refusal::SendUnsolicited)
        );
    }
}
