//! Support library for the black-box end-to-end tests of `dnsproxy`.
//!
//! Everything here runs real processes on loopback (`127.0.0.1`) only:
//!
//! - [`Unbound`]: Debian's `/usr/sbin/unbound` as a DNS-over-TLS resolver serving the
//!   fixture zone (`fixtures/zone/dot.test.conf`, expected answers in [`zone`]) with one of
//!   the fixture certificate chains ([`Chain`]).
//! - [`Proxy`]: the real `dnsproxy` host binary, configured through environment
//!   variables, with its log captured.
//! - DNS clients: plain UDP/TCP ([`query_udp`], [`query_tcp`], [`tcp_exchange`], ...) and a
//!   direct DoT client ([`query_dot`]) usable as an oracle that bypasses the proxy.
//! - Fixture paths and SPKI pins ([`fixture`], [`pin`]); pins are read from
//!   `fixtures/pki/pins.txt` (computed by openssl), never recomputed here.

pub mod dns;
mod dot;
mod paths;
mod process;
pub mod proxy;
pub mod unbound;
pub mod zone;

pub use dns::{
    DEFAULT_TIMEOUT, QueryBuilder, a_records, aaaa_records, connect_tcp, decode, encode,
    exchange_udp, next_id, query, query_tcp, query_udp, query_udp_raw, query_udp_raw_timeout,
    read_framed, tcp_exchange, txt_strings, write_framed,
};
pub use dot::{DotStream, dot_connect, dot_exchange, query_dot};
pub use paths::{fixture, free_port, pin, pins, workspace_root};
pub use proxy::{Proxy, upstream_env};
pub use unbound::{Chain, Unbound};

/// Re-export of the DNS library the helpers speak, so tests use the same version.
pub use hickory_proto;
