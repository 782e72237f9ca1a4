//! The component's view of its configuration, already validated by the host
//! (or built by the native benchmark runner).

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::acl::Acl;
use crate::core::pins::PinSet;
use crate::shell::log::Level;

/// Bytes of client answers the proxy holds for writing, over all TCP
/// clients: 32 MiB. With each client stopped from reading at 64 KiB of
/// unwritten answers, this is what 512 clients that all stop reading can
/// hold at once; past it no client is read from and a client that is behind
/// is closed. Once half of it is in use, one source may hold at most a
/// quarter (see [`crate::core::client_conn`]).
pub const CLIENT_BUFFER_BUDGET: usize = 32 << 20;

/// Everything the proxy needs to serve.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// Clients allowed to query; others get REFUSED.
    pub acl: Acl,
    /// Upstreams in priority order (at least one).
    pub upstreams: Vec<UpstreamConfig>,
    /// Deadline of every client query, end to end.
    pub query_timeout: Duration,
    /// Time one upstream gets before the next is tried.
    pub upstream_timeout: Duration,
    /// Idle client TCP connections are closed after this (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Idle upstream connections are closed after this.
    pub upstream_idle_timeout: Duration,
    /// Concurrent client TCP connections.
    pub max_tcp_clients: usize,
    /// Client queries in flight, over UDP and TCP together.
    pub max_inflight: usize,
    /// The largest UDP answer sent to a client (RFC 6891 §6.2.5); larger
    /// ones are truncated with TC=1.
    pub max_udp_size: usize,
    /// Bytes of client answers waiting to be written, over all TCP clients.
    pub client_buffer_budget: usize,
    /// Events below this level are not emitted.
    pub log_level: Level,
}

/// One DNS-over-TLS upstream.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Label used in logs.
    pub name: String,
    /// Address and port to connect to.
    pub addr: SocketAddr,
    /// Name verified in the certificate and sent as SNI.
    pub auth_name: String,
    /// Pins; empty = CA validation only.
    pub pins: PinSet,
    /// PEM bundle to trust instead of the built-in web roots.
    pub ca_pem: Option<String>,
}
