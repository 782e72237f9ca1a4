//! The socket capability policy: what the component may do with the network.
//!
//! - It may bind (UDP and TCP) and listen only on its listen address, and
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

mod grants;
pub mod refusals;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
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
    listen: SocketAddr,
    upstreams: HashSet<SocketAddr>,
    clients: Acl,
    grants: Mutex<Grants>,
    refusals: Refusals,
}

impl SocketPolicy {
    /// A policy for a proxy listening on `listen`, serving clients in
    /// `allow_networks`, forwarding to `upstreams`, whose UDP replies are
    /// granted for `reply_window` after each query.
    pub fn new(
        listen: SocketAddr,
        upstreams: impl IntoIterator<Item = SocketAddr>,
        allow_networks: impl IntoIterator<Item = IpNet>,
        reply_window: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                listen,
                upstreams: upstreams.into_iter().collect(),
                clients: Acl::new(allow_networks.into_iter().collect()),
                grants: Mutex::new(Grants::new(reply_window, MAX_GRANTS, Instant::now())),
                refusals: Refusals::default(),
            }),
        }
    }

    /// The policy for a validated configuration: replies are granted for
    /// `query_timeout` plus [`REPLY_MARGIN`].
    pub fn from_config(config: &ProxyConfig) -> Self {
        Self::new(
            config.listen,
            config.upstreams.iter().map(|u| u.addr),
            config.allow_networks.iter().copied(),
            config.query_timeout + REPLY_MARGIN,
        )
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
            SocketAddrUse::TcpBind => {
                ok(addr == me.listen || is_implicit_bind(addr), Refusal::Bind)
            }
            // Listening is only on the bound listen address: an implicit
            // bind to the wildcard cannot be turned into a listener. The
            // only UDP socket the component can hold is the listen one.
            SocketAddrUse::TcpListen | SocketAddrUse::UdpBind => {
                ok(addr == me.listen, Refusal::Bind)
            }
            SocketAddrUse::TcpConnect => ok(me.upstreams.contains(&addr), Refusal::Connect),
            // `Acl` matches an IPv4-mapped IPv6 address as its IPv4 address.
            SocketAddrUse::TcpAccept => ok(me.clients.allows(addr.ip()), Refusal::AcceptOutsider),
            SocketAddrUse::UdpReceive => {
                if !me.clients.allows(addr.ip()) {
                    return Err(Refusal::ReceiveOutsider);
                }
                match self.grants().receive(canonical(addr), now) {
                    Received::Granted => Ok(()),
                    Received::TableFull => Err(Refusal::ReceiveGrantsFull),
                }
            }
            SocketAddrUse::UdpSend => ok(
                self.grants().send(canonical(addr), now),
                Refusal::SendUnsolicited,
            ),
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

/// One key per client whichever way the socket reports it: an IPv4-mapped
/// IPv6 address becomes the IPv4 address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(6);

    fn policy() -> SocketPolicy {
        SocketPolicy::new(
            sa("127.0.0.1:5353"),
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
