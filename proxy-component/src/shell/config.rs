//! The proxy's configuration: one typed shape for everything that produces or
//! reads it. The host's config layer (settings.ini, environment, flags)
//! validates into it, hands it to the component through the WIT `config`
//! interface (one conversion on each side) and probes with it (`dnsproxy
//! health`); the native benchmark build fills it in from its own variables.
//! Values arrive here already validated: pins decoded, bundles read, limits
//! within their bounds.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::core::acl::IpNet;
pub use crate::core::cache::CacheSettings;
use crate::core::pins::PinSet;
use crate::core::upstreams::Strategy;
use crate::shell::log::{Level, LogFormat};

/// Bytes of client answers the proxy holds for writing, over all TCP
/// clients: 32 MiB. With each client stopped from reading at 64 KiB of
/// unwritten answers, this is what 512 clients that all stop reading can
/// hold at once; past it no client is read from and a client that is behind
/// is closed. Once half of it is in use, one source may hold at most a
/// quarter (see [`crate::core::client_conn`]).
pub const CLIENT_BUFFER_BUDGET: usize = 32 << 20;

/// Everything the proxy needs to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// UDP and TCP listen addresses, all served: each address of
    /// `local_host` with `local_port` (at least one, no duplicates).
    pub listen: Vec<SocketAddr>,
    /// Clients allowed to query; others get no answer (`allow_networks`).
    pub allow_networks: Vec<IpNet>,
    /// Upstreams in priority order (at least one).
    pub upstreams: Vec<UpstreamConfig>,
    /// Deadline of every client query, end to end.
    pub query_timeout: Duration,
    /// Time one upstream gets before the next is tried; at most
    /// `query_timeout`.
    pub upstream_timeout: Duration,
    /// Idle client TCP connections are closed after this (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Idle upstream connections are closed after this (RFC 7858 §3.4).
    pub upstream_idle_timeout: Duration,
    /// The order the upstreams are tried in (`strategy`).
    pub strategy: Strategy,
    /// Hedges may be at most this percentage of the queries; 0: no hedging
    /// (`hedge_percent`).
    pub hedge_percent: u32,
    /// Component instances serving the same addresses (`workers`; `None`:
    /// one per CPU the process may use). The host's: the component never
    /// sees it, it receives its share of the limits below
    /// ([`ProxyConfig::worker_share`]).
    pub workers: Option<std::num::NonZeroUsize>,
    /// Concurrent client TCP connections.
    pub max_tcp_clients: usize,
    /// Client queries in flight, over UDP and TCP together.
    pub max_inflight: usize,
    /// The largest UDP answer sent to a client (RFC 6891 §6.2.5); larger
    /// ones are truncated with TC=1.
    pub max_udp_size: usize,
    /// Bytes of client answers waiting to be written, over all TCP clients.
    pub client_buffer_budget: usize,
    /// Events below this level are not emitted (the host's log filter too).
    pub log_level: Level,
    /// How the host renders log lines; the component never formats them.
    pub log_format: LogFormat,
    /// One log line per answered query (client, name, type, rcode,
    /// upstream, duration), whatever `log_level`; off by default.
    pub log_queries: bool,
    /// Where the host serves metrics (`metrics_listen`); the host's own
    /// listener, never granted to the component, which does not use it.
    pub metrics_listen: Option<SocketAddr>,
    /// The answer cache (`cache_size_mib`, `cache_min_ttl`, `cache_max_ttl`,
    /// `cache_failure_ttl`, `serve_stale`, `cache_prefetch`).
    pub cache: CacheSettings,
}

impl ProxyConfig {
    /// What one of `workers` instances serves: the process-wide limits
    /// (`max_tcp_clients`, `max_inflight`, `client_buffer_budget`) split
    /// evenly, rounded up, so the instances together hold what is
    /// configured (give or take the rounding). Each instance has its own
    /// cache of `cache.max_bytes`, its own upstream connections and its own
    /// memory limit: those are per worker.
    #[must_use]
    pub fn worker_share(&self, workers: std::num::NonZeroUsize) -> ProxyConfig {
        let share = |total: usize| total.div_ceil(workers.get()).max(1);
        ProxyConfig {
            max_tcp_clients: share(self.max_tcp_clients),
            max_inflight: share(self.max_inflight),
            client_buffer_budget: share(self.client_buffer_budget),
            ..self.clone()
        }
    }
}

/// One DNS-over-TLS upstream (RFC 7858).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Label used in logs: the name of its `[TLS_SERVER <name>]` section
    /// (`name#2` for the second address of a list there), else its
    /// `ip:port`.
    pub name: String,
    /// Address and port to connect to.
    pub addr: SocketAddr,
    /// What the certificate must be valid for.
    pub auth_name: AuthName,
    /// SPKI pins (RFC 7469 §2.4), decoded; empty = CA validation only.
    pub pins: PinSet,
    /// Roots to trust instead of the built-in web roots (`tls_ca_file`).
    pub ca: Option<CaBundle>,
}

impl UpstreamConfig {
    /// The upstream in start-up lines: `name=addr`, or `addr` when the name
    /// is the address.
    pub fn label(&self) -> String {
        let addr = self.addr.to_string();
        if self.name == addr {
            addr
        } else {
            format!("{}={addr}", self.name)
        }
    }
}

/// The identity an upstream's certificate is verified against (RFC 8310
/// §8.1: the authentication domain name, or the address when none is
/// configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthName {
    /// `tls_hostname`: a DNS name checked against the certificate's DNS
    /// names and sent as SNI.
    Dns(String),
    /// No `tls_hostname`: the certificate must carry this address as an IP
    /// SAN (as Cloudflare's, Google's and Quad9's do). No SNI is sent: SNI
    /// carries host names only (RFC 6066 §3).
    Ip(IpAddr),
}

impl AuthName {
    /// How the start-up lines describe the check: `verified as dns.google` or
    /// `verified by IP address`.
    pub fn describe(&self) -> String {
        match self {
            Self::Dns(name) => format!("verified as {name}"),
            Self::Ip(_) => "verified by IP address".to_owned(),
        }
    }
}

impl fmt::Display for AuthName {
    /// The name or the address, as webpki's error messages show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// A PEM bundle of trusted roots, read by whoever built the configuration
/// (the component never opens a file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    /// Its contents; holds at least one `-----BEGIN CERTIFICATE-----`.
    pub pem: String,
}
