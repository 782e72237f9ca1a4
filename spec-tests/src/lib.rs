//! Support library for the black-box end-to-end tests of `dnsproxy`.
//!
//! Everything here runs real processes and containers; traffic goes to `127.0.0.1` and
//! to the harness's own containers only:
//!
//! - DoT resolvers in containers (testcontainers; images built here by [`images`], as
//!   the machine has no registry), both serving the fixture zone
//!   (`fixtures/zone/dot.test.conf`, expected answers in [`zone`]) with one of the fixture
//!   certificate chains ([`Chain`]), both behind the [`Resolver`] trait:
//!   - [`Unbound`]: Debian's unbound, the real third-party resolver;
//!   - [`FixtureResolver`]: our `fixtures/dot-resolver`, which misbehaves on demand
//!     ([`Misbehave`]).
//! - [`Proxy`]: the real `dnsproxy` host binary, configured through environment
//!   variables, with its log captured.
//! - DNS clients: plain UDP/TCP ([`query_udp`], [`query_tcp`], [`tcp_exchange`], ...,
//!   from a chosen loopback source with [`connect_tcp_with`] and [`udp_socket_from`]), a
//!   direct DoT client ([`query_dot`]) usable as an oracle that bypasses the proxy, and a
//!   bounded UDP load generator ([`load::UdpLoad`]).
//! - Fixture paths and SPKI pins ([`fixture`], [`pin`]); pins are read from
//!   `fixtures/pki/pins.txt` (computed by openssl), never recomputed here.

mod container;
pub mod dns;
pub mod docker;
mod dot;
pub mod fixture_resolver;
pub mod images;
pub mod load;
mod paths;
mod process;
pub mod proxy;
pub mod scrape;
pub mod unbound;
pub mod zone;

pub use container::Resolver;
pub use dns::{
    DEFAULT_TIMEOUT, QueryBuilder, TcpOptions, a_records, aaaa_records, connect_tcp,
    connect_tcp_with, decode, encode, exchange_udp, exchange_udp_from, next_id, query, query_tcp,
    query_udp, query_udp_raw, query_udp_raw_timeout, read_framed, recv_answer, tcp_exchange,
    txt_strings, udp_socket_from, write_framed,
};
pub use docker::Network;
pub use dot::{DotStream, dot_connect, dot_exchange, query_dot};
pub use fixture_resolver::{FixtureResolver, Misbehave};
pub use paths::{ClosedPort, fixture, free_port, guest, pin, pins, workspace_root};
pub use process::wait_until;
pub use proxy::{Proxy, upstream_env};
pub use unbound::{Chain, Unbound};

/// Re-export of the DNS library the helpers speak, so tests use the same version.
pub use hickory_proto;

/// Which DoT resolver a test runs against: the tests that must hold for both are
/// written once and run against each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Debian's unbound ([`Unbound`]).
    Unbound,
    /// Our fixture resolver, behaving ([`FixtureResolver`] with [`Misbehave::None`]).
    Fixture,
}

impl Kind {
    /// Starts a resolver of this kind presenting `chain`.
    pub fn start(self, chain: Chain) -> Box<dyn Resolver> {
        self.start_presenting(chain, None)
    }

    /// Starts a resolver of this kind with `chain`'s key, presenting `pem` (a chain
    /// in PEM, leaf first) instead of `chain`'s certificates when given.
    pub fn start_presenting(self, chain: Chain, pem: Option<Vec<u8>>) -> Box<dyn Resolver> {
        const CUSTOM: &str = "/pki/custom.chain.pem";
        let files: Vec<(String, Vec<u8>)> =
            pem.iter().map(|p| (CUSTOM.into(), p.clone())).collect();
        match self {
            Kind::Unbound => {
                let extra = if pem.is_some() {
                    format!("tls-service-pem: \"{CUSTOM}\"\n")
                } else {
                    String::new()
                };
                Box::new(Unbound::start_full(chain, &extra, files, None))
            }
            Kind::Fixture => Box::new(FixtureResolver::start_full(
                chain,
                Misbehave::None,
                files,
                None,
            )),
        }
    }
}
