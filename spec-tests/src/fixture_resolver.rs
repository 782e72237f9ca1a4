//! Our fixture DoT resolver (`fixtures/dot-resolver`) in a container: the same zone
//! as unbound, and misbehaviour on demand (see [`Misbehave`]).

use std::net::SocketAddr;

use crate::container::{Resolver as _, ResolverContainer, Spec, impl_resolver};
use crate::docker::Network;
use crate::images::fixture_image;
use crate::unbound::Chain;

/// The first line the fixture resolver prints once it serves.
const READY_LINE: &str = "dot-fixture listening on ";
/// The line it prints for every TCP connection it accepts.
const ACCEPT_LINE: &str = "accepted connection ";

/// How the fixture resolver misbehaves (one behaviour per container).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Answers correctly.
    None,
    /// Waits this many milliseconds before each answer.
    DelayMs(u32),
    /// Answers names whose first label is `slow` this many milliseconds
    /// late, the rest at once.
    DelaySlowMs(u32),
    /// Answers every query with this RCODE and no records.
    Rcode(u8),
    /// Collects this many pipelined queries, then answers them in reverse order.
    Reorder(u32),
    /// Closes each connection after answering this many queries on it.
    CloseAfter(u32),
    /// Accepts TCP connections but never does the TLS handshake.
    StallHandshake,
    /// Answers this many queries per connection, then holds it open, silent.
    StallAfter(u32),
    /// Sends answers with a wrong length prefix.
    BadLength,
    /// A server at its capacity: answers this many queries a second, in the
    /// order they arrived over all connections.
    Rate(u32),
    /// Both at once: this many answers a second, and each connection closed
    /// after this many answers on it.
    RateCloseAfter(u32, u32),
    /// Closes the first connection it accepts after answering this many
    /// queries on it (a crash or a restart, once); serves the rest normally.
    CloseFirstAfter(u32),
    /// Answers correctly but leaves Nagle's algorithm on, as unbound does: a
    /// small answer waits while the one before is unacknowledged.
    Nagle,
}

impl Misbehave {
    fn args(self) -> Vec<String> {
        let flag = |f: &str, n: u32| vec![f.to_string(), n.to_string()];
        match self {
            Misbehave::None => Vec::new(),
            Misbehave::DelayMs(n) => flag("--delay-ms", n),
            Misbehave::DelaySlowMs(n) => flag("--delay-slow-ms", n),
            Misbehave::Rcode(n) => flag("--rcode", u32::from(n)),
            Misbehave::Reorder(n) => flag("--reorder", n),
            Misbehave::CloseAfter(n) => flag("--close-after", n),
            Misbehave::CloseFirstAfter(n) => flag("--close-first-after", n),
            Misbehave::StallHandshake => vec!["--stall-handshake".into()],
            Misbehave::StallAfter(n) => flag("--stall-after", n),
            Misbehave::BadLength => vec!["--bad-length".into()],
            Misbehave::Rate(n) => flag("--rate", n),
            Misbehave::Nagle => vec!["--nagle".into()],
            Misbehave::RateCloseAfter(rate, n) => {
                [flag("--rate", rate), flag("--close-after", n)].concat()
            }
        }
    }
}

/// A running fixture resolver container, published on `127.0.0.1:<port>`.
///
/// Dropping it removes the container (printing its logs first if the test failed).
pub struct FixtureResolver {
    chain: Chain,
    inner: ResolverContainer,
}

impl FixtureResolver {
    /// Starts one presenting `chain`, behaving as told, and waits until it serves.
    pub fn start(chain: Chain, behaviour: Misbehave) -> Self {
        Self::start_full(chain, behaviour, Vec::new(), None)
    }

    /// Starts one that answers queries carrying an edns-tcp-keepalive
    /// option (RFC 7828) with one holding `timeout` (in units of 100 ms; 0
    /// asks the client to close), behaving as told otherwise. Its `connection
    /// closed` log lines count the queries that carried the option
    /// (`keepalive=N`).
    pub fn start_with_keepalive(chain: Chain, behaviour: Misbehave, timeout: u16) -> Self {
        let args = vec!["--keepalive".to_string(), timeout.to_string()];
        Self::start_args(chain, behaviour, args, Vec::new(), None)
    }

    /// Starts one that speaks TLS 1.2 only. Its `handshake done` log lines
    /// name each connection's version and cipher suite.
    pub fn start_tls12_only(chain: Chain) -> Self {
        Self::start_args(
            chain,
            Misbehave::None,
            vec!["--tls12".to_string()],
            Vec::new(),
            None,
        )
    }

    /// The most general start: also extra files (path, contents) and a network.
    /// A file placed at `/pki/custom.chain.pem` is presented instead of `chain`'s.
    pub fn start_full(
        chain: Chain,
        behaviour: Misbehave,
        files: Vec<(String, Vec<u8>)>,
        network: Option<&Network>,
    ) -> Self {
        Self::start_args(chain, behaviour, Vec::new(), files, network)
    }

    fn start_args(
        chain: Chain,
        behaviour: Misbehave,
        args: Vec<String>,
        files: Vec<(String, Vec<u8>)>,
        network: Option<&Network>,
    ) -> Self {
        let leaf = chain.leaf_name();
        let pem = if files.iter().any(|(p, _)| p == "/pki/custom.chain.pem") {
            "/pki/custom.chain.pem".to_string()
        } else {
            format!("/pki/{leaf}.chain.pem")
        };
        let mut cmd = vec![
            "--chain".to_string(),
            pem,
            "--key".to_string(),
            format!("/pki/{leaf}.key"),
        ];
        cmd.extend(behaviour.args());
        cmd.extend(args);
        let inner = ResolverContainer::start(Spec {
            image: fixture_image(),
            cmd,
            files,
            ready_line: READY_LINE,
            network: network.map(|n| n.name().to_string()),
            what: "dot-fixture",
            udp: false,
        });
        Self { chain, inner }
    }

    /// Its address on the network given to [`FixtureResolver::start_full`].
    pub fn network_addr(&self) -> Option<SocketAddr> {
        self.inner.network_addr()
    }

    /// The chain it presents.
    pub fn chain(&self) -> Chain {
        self.chain
    }

    /// TCP connections it has accepted so far (across restarts).
    pub fn accepted_connections(&self) -> usize {
        self.log().matches(ACCEPT_LINE).count()
    }
}

impl_resolver!(FixtureResolver);
