//! The socket capability policy: what the component may do with the network.
//!
//! The component may bind only its listen address (UDP and TCP), connect only
//! to the configured upstream `ip:port` pairs, and nothing else. Everything
//! else is refused inside the component with `PermissionDenied`. This is the
//! only place that grants network access; weaken it only on purpose.

use std::collections::HashSet;
use std::net::SocketAddr;

use wasmtime_wasi::sockets::SocketAddrUse;

/// The addresses one component instance may use.
#[derive(Clone, Debug)]
pub struct SocketPolicy {
    listen: SocketAddr,
    upstreams: HashSet<SocketAddr>,
}

impl SocketPolicy {
    /// A policy for a proxy listening on `listen` and forwarding to `upstreams`.
    pub fn new(listen: SocketAddr, upstreams: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            listen,
            upstreams: upstreams.into_iter().collect(),
        }
    }

    /// Decides one use of one address.
    pub fn allows(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        match use_ {
            // The listen address, or the wildcard, port-0 bind the OS does
            // implicitly before a connect (the connect itself is checked).
            SocketAddrUse::TcpBind => addr == self.listen || is_implicit_bind(addr),
            // Listening is only on the bound listen address: an implicit
            // bind to the wildcard cannot be turned into a listener.
            SocketAddrUse::TcpListen | SocketAddrUse::UdpBind => addr == self.listen,
            SocketAddrUse::TcpConnect => self.upstreams.contains(&addr),
            // Clients may come from anywhere the OS lets through: the
            // component answers those outside allow_networks with REFUSED,
            // so it must also be able to send to them. The only UDP socket it
            // can hold is the one bound to the listen address.
            SocketAddrUse::TcpAccept | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => true,
        }
    }
}

fn is_implicit_bind(addr: SocketAddr) -> bool {
    addr.ip().is_unspecified() && addr.port() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SocketPolicy {
        SocketPolicy::new(
            "127.0.0.1:5353".parse().unwrap(),
            [
                "127.0.0.1:853".parse().unwrap(),
                "[::1]:853".parse().unwrap(),
            ],
        )
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn binds_only_the_listen_address() {
        let p = policy();
        assert!(p.allows(sa("127.0.0.1:5353"), SocketAddrUse::UdpBind));
        assert!(p.allows(sa("127.0.0.1:5353"), SocketAddrUse::TcpBind));
        assert!(p.allows(sa("127.0.0.1:5353"), SocketAddrUse::TcpListen));
        assert!(!p.allows(sa("127.0.0.1:5354"), SocketAddrUse::UdpBind));
        assert!(!p.allows(sa("0.0.0.0:5353"), SocketAddrUse::TcpBind));
        assert!(!p.allows(sa("0.0.0.0:0"), SocketAddrUse::UdpBind));
    }

    #[test]
    fn implicit_connect_bind_cannot_listen() {
        let p = policy();
        assert!(p.allows(sa("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(p.allows(sa("[::]:0"), SocketAddrUse::TcpBind));
        assert!(!p.allows(sa("0.0.0.0:0"), SocketAddrUse::TcpListen));
        assert!(!p.allows(sa("0.0.0.0:40000"), SocketAddrUse::TcpListen));
    }

    #[test]
    fn connects_only_to_configured_upstreams() {
        let p = policy();
        assert!(p.allows(sa("127.0.0.1:853"), SocketAddrUse::TcpConnect));
        assert!(p.allows(sa("[::1]:853"), SocketAddrUse::TcpConnect));
        assert!(!p.allows(sa("127.0.0.1:854"), SocketAddrUse::TcpConnect));
        assert!(!p.allows(sa("127.0.0.2:853"), SocketAddrUse::TcpConnect));
        assert!(!p.allows(sa("1.1.1.1:853"), SocketAddrUse::TcpConnect));
    }
}
