//! A real third-party DoT resolver, Debian's unbound, in a container, serving the
//! fixture zone with the fixture PKI.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::container::{DOT_PORT, Resolver as _, ResolverContainer, Spec, impl_resolver};
use crate::docker::Network;
use crate::images::unbound_image;
use crate::paths::fixture;

/// Where the container's configuration goes (the image's entrypoint reads it).
const CONFIG_PATH: &str = "/etc/unbound/unbound.conf";
/// The log line unbound prints (at verbosity 1) once it serves.
const READY_LINE: &str = "start of service";

/// Which fixture certificate chain (from `fixtures/pki/`) the resolver presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// `dot-test.chain.pem`: leaf for `dot.test` (and IP 127.0.0.1) + intermediate;
    /// verifies against `root.pem`.
    DotTest,
    /// `other-test.chain.pem`: leaf for `other.test` + intermediate (wrong name for
    /// `dot.test`, same trusted root).
    OtherTest,
    /// `expired-dot-test.chain.pem`: expired leaf for `dot.test` + intermediate.
    Expired,
    /// `evil-dot-test.chain.pem`: leaf for `dot.test` signed by the unrelated
    /// `evil-root.pem` (+ that root).
    Evil,
}

impl Chain {
    /// Every chain, for tests that loop over them.
    pub const ALL: [Chain; 4] = [
        Chain::DotTest,
        Chain::OtherTest,
        Chain::Expired,
        Chain::Evil,
    ];

    /// The fixture base name of the leaf (also its name in `pins.txt`).
    pub fn leaf_name(self) -> &'static str {
        match self {
            Chain::DotTest => "dot-test",
            Chain::OtherTest => "other-test",
            Chain::Expired => "expired-dot-test",
            Chain::Evil => "evil-dot-test",
        }
    }

    /// The name of the issuing CA certificate in `pins.txt` (`intermediate` or `evil-root`).
    pub fn issuer_name(self) -> &'static str {
        match self {
            Chain::Evil => "evil-root",
            _ => "intermediate",
        }
    }

    /// The DNS name in the leaf certificate.
    pub fn hostname(self) -> &'static str {
        match self {
            Chain::OtherTest => "other.test",
            _ => "dot.test",
        }
    }

    /// The PEM file of the chain the server sends (leaf first).
    pub fn chain_path(self) -> PathBuf {
        fixture(format!("pki/{}.chain.pem", self.leaf_name()))
    }

    /// The leaf's private key.
    pub fn key_path(self) -> PathBuf {
        fixture(format!("pki/{}.key", self.leaf_name()))
    }
}

/// Debian's unbound in a container (see [`crate::images::unbound_image`]) serving
/// DNS-over-TLS with the zone in `fixtures/zone/dot.test.conf` (see [`crate::zone`]),
/// no DNSSEC validation and no recursion (names outside `dot.test.` are REFUSED),
/// published on `127.0.0.1:<port>` (TCP for DoT, UDP for plain DNS on the same port).
///
/// Dropping it removes the container (printing its logs first if the test failed).
pub struct Unbound {
    chain: Chain,
    inner: ResolverContainer,
}

impl Unbound {
    /// Starts unbound presenting `chain` and waits (up to 20 s) until it serves.
    /// Panics with unbound's output if it does not start.
    pub fn start(chain: Chain) -> Self {
        Self::start_with(chain, "")
    }

    /// Like [`Unbound::start`], with extra lines appended to the `server:` clause
    /// (e.g. `"tcp-idle-timeout: 500\n"`).
    pub fn start_with(chain: Chain, extra_server_config: &str) -> Self {
        Self::start_full(chain, extra_server_config, Vec::new(), None)
    }

    /// The most general start: extra `server:` lines, extra files placed in the
    /// container (path, contents: e.g. another chain under `/pki/`), and a
    /// user-defined network to join.
    pub fn start_full(
        chain: Chain,
        extra_server_config: &str,
        files: Vec<(String, Vec<u8>)>,
        network: Option<&Network>,
    ) -> Self {
        let mut files = files;
        files.push((
            CONFIG_PATH.to_string(),
            config_text(chain, extra_server_config).into_bytes(),
        ));
        let inner = ResolverContainer::start(Spec {
            image: unbound_image(),
            cmd: Vec::new(),
            files,
            ready_line: READY_LINE,
            network: network.map(|n| n.name().to_string()),
            what: "unbound",
            udp: true,
        });
        Self { chain, inner }
    }

    /// The DoT port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Its address on the network given to [`Unbound::start_full`].
    pub fn network_addr(&self) -> Option<SocketAddr> {
        self.inner.network_addr()
    }

    /// The chain this resolver presents.
    pub fn chain(&self) -> Chain {
        self.chain
    }
}

impl_resolver!(Unbound);

/// The generated unbound configuration.
fn config_text(chain: Chain, extra: &str) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "server:\n\
         \x20 interface: 0.0.0.0@{DOT_PORT}\n\
         \x20 tls-port: {DOT_PORT}\n\
         \x20 tls-service-key: \"/pki/{leaf}.key\"\n\
         \x20 tls-service-pem: \"/pki/{leaf}.chain.pem\"\n\
         \x20 do-daemonize: no\n\
         \x20 username: \"\"\n\
         \x20 chroot: \"\"\n\
         \x20 use-syslog: no\n\
         \x20 logfile: \"\"\n\
         \x20 verbosity: 1\n\
         \x20 directory: \"/etc/unbound\"\n\
         \x20 pidfile: \"\"\n\
         \x20 do-ip6: no\n\
         \x20 num-threads: 1\n\
         \x20 so-reuseport: no\n\
         \x20 interface-automatic: no\n\
         \x20 incoming-num-tcp: 100\n\
         \x20 access-control: 0.0.0.0/0 allow\n\
         \x20 module-config: \"iterator\"\n\
         \x20 include: \"/etc/unbound/dot.test.conf\"\n",
        leaf = chain.leaf_name(),
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(s, "  {}", line.trim());
    }
    s
}
