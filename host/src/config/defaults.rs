//! Built-in defaults and the bounds every layer is checked against.

use std::time::Duration;

/// Default, smallest and largest accepted value of a duration setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationLimits {
    /// Used when no layer sets the key (or the value is empty).
    pub default: Duration,
    /// Smallest accepted value.
    pub min: Duration,
    /// Largest accepted value.
    pub max: Duration,
}

/// Default, smallest and largest accepted value of an integer setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntLimits {
    /// Used when no layer sets the key (or the value is empty).
    pub default: u32,
    /// Smallest accepted value.
    pub min: u32,
    /// Largest accepted value.
    pub max: u32,
}

/// `local_port`: the DNS port (RFC 1035 §4.2).
pub const LOCAL_PORT: u16 = 53;

/// `tls_port`: the DNS-over-TLS port (RFC 7858 §3.1).
pub const TLS_PORT: u16 = 853;

/// `allow_networks`: loopback and private ranges (RFC 1918, RFC 6598 shared
/// address space, RFC 4193 unique local, RFC 4291 link-local). An open resolver
/// on the internet is an amplification tool, so the default admits no public
/// address (RFC 5358).
pub const ALLOW_NETWORKS: &str = "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, \
                                  192.168.0.0/16, 100.64.0.0/10, fc00::/7, fe80::/10";

/// `query_timeout`: deadline of every client query, on reused connections too.
/// Stub resolvers commonly retry after about 5 s, so an answer later than that
/// is wasted.
pub const QUERY_TIMEOUT: DurationLimits = DurationLimits {
    default: Duration::from_secs(4),
    min: Duration::from_millis(100),
    max: Duration::from_secs(60),
};

/// `upstream_timeout`: time one upstream gets before the next one is tried. A
/// value set by any layer must be at most `query_timeout`; the default is
/// capped at it instead, so lowering only `query_timeout` works.
pub const UPSTREAM_TIMEOUT: DurationLimits = DurationLimits {
    default: Duration::from_millis(1500),
    min: Duration::from_millis(50),
    max: Duration::from_secs(30),
};

/// `tcp_idle_timeout`: a client TCP connection with no query in flight is closed
/// after this; RFC 7766 §6.2.3 asks for an idle timeout of seconds, not minutes,
/// so that connections do not pile up.
pub const TCP_IDLE_TIMEOUT: DurationLimits = DurationLimits {
    default: Duration::from_secs(10),
    min: Duration::from_secs(1),
    max: Duration::from_secs(300),
};

/// `upstream_idle_timeout`: an idle upstream TLS connection is kept this long for
/// reuse (RFC 7858 §3.4: reuse connections, close them when idle).
pub const UPSTREAM_IDLE_TIMEOUT: DurationLimits = DurationLimits {
    default: Duration::from_secs(30),
    min: Duration::from_secs(1),
    max: Duration::from_secs(3600),
};

/// `max_tcp_clients`: concurrent client TCP connections (RFC 7766 §6.2.2: limit
/// them so one client cannot exhaust the server). At the limit a new client
/// is still served: the stalest connection of the source holding the most
/// connections is closed for it. An idle connection costs a few KiB, so the
/// default serves thousands.
pub const MAX_TCP_CLIENTS: IntLimits = IntLimits {
    default: 2048,
    min: 1,
    max: 65535,
};

/// `max_udp_size`: the largest UDP answer sent to a client; larger ones are
/// truncated with TC=1 so the client retries over TCP (RFC 6891 §6.2.5). 1232
/// bytes avoids IP fragmentation on common paths (DNS Flag Day 2020; unbound's
/// default); 512 is the RFC 1035 floor.
pub const MAX_UDP_SIZE: IntLimits = IntLimits {
    default: 1232,
    min: 512,
    max: 4096,
};

/// `client_buffer_mib`: answers held for TCP clients that have not taken them
/// yet, over all connections, in MiB (the component's `Budget`). The default
/// is the component's own; at the most, 256 MiB, the component's worst case
/// with the other limits at their defaults still fits under the store's
/// memory limit (`sandbox::MEMORY_LIMIT`, 512 MiB; the README's memory table).
pub const CLIENT_BUFFER_MIB: IntLimits = IntLimits {
    default: (dnsproxy_core::shell::config::CLIENT_BUFFER_BUDGET >> 20) as u32,
    min: 1,
    max: 256,
};

/// `hedge_percent`: the share of queries that may be hedged (sent to the
/// next upstream too when the first is slower than usual); 0 turns hedging
/// off. Past it, a slow query waits for its upstream or its timeout.
pub const HEDGE_PERCENT: IntLimits = IntLimits {
    default: 5,
    min: 0,
    max: 50,
};

/// `workers`: the most component instances one process runs.
pub const MAX_WORKERS: usize = 256;

/// `max_inflight`: queries forwarded and not yet answered, over all clients.
pub const MAX_INFLIGHT: IntLimits = IntLimits {
    default: 2048,
    min: 1,
    max: 65536,
};

/// `cache_size_mib`: memory for cached answers per instance (per worker), in
/// MiB, overhead included; 0 turns the cache off. The instance's memory
/// limit grows by it (`sandbox::memory_limit`), so it is fixed at start: a
/// reload keeps the running size.
pub const CACHE_SIZE_MIB: IntLimits = IntLimits {
    default: 16,
    min: 0,
    max: 4096,
};

/// `cache_min_ttl`: TTLs below this are raised to it (TTL 0 is still never
/// cached). 0 keeps the upstream's TTLs, as RFC 1035 §3.2.1 means them.
pub const CACHE_MIN_TTL: DurationLimits = DurationLimits {
    default: Duration::ZERO,
    min: Duration::ZERO,
    max: Duration::from_secs(3600),
};

/// `cache_max_ttl`: TTLs above this are lowered to it: one day, unbound's
/// `cache-max-ttl` and the largest TTL RFC 8767 §4 suggests keeping.
pub const CACHE_MAX_TTL: DurationLimits = DurationLimits {
    default: Duration::from_secs(86_400),
    min: Duration::from_secs(1),
    max: Duration::from_secs(7 * 86_400),
};

/// `cache_failure_ttl`: how long a question that failed on every upstream
/// (or got SERVFAIL) is answered SERVFAIL, or stale, without asking again.
/// RFC 9520 §3.2: at least 1 s, at most 5 min.
pub const CACHE_FAILURE_TTL: DurationLimits = DurationLimits {
    default: Duration::from_secs(1),
    min: Duration::from_secs(1),
    max: Duration::from_secs(300),
};

/// `serve_stale`: how long past its TTL an answer may be served, with TTL
/// 30, when every upstream fails (RFC 8767 §5 suggests a maximum stale
/// timer of 1 to 3 days); 0 turns it off.
pub const SERVE_STALE: DurationLimits = DurationLimits {
    default: Duration::from_secs(86_400),
    min: Duration::ZERO,
    max: Duration::from_secs(3 * 86_400),
};
