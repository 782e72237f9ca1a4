//! The settings a user can set: their names in settings.ini, the environment and
//! on the command line, and the section each belongs to.

use std::fmt;

/// A section of settings.ini that holds settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// `[LOCAL_SERVER]`: where clients reach the proxy.
    LocalServer,
    /// `[TLS_SERVER]` and `[TLS_SERVER <name>]`: the DNS-over-TLS upstreams.
    TlsServer,
    /// `[PROXY]`: timeouts, limits and logging.
    Proxy,
}

impl Section {
    /// The section header as written in settings.ini, without brackets.
    pub fn header(self) -> &'static str {
        match self {
            Self::LocalServer => "LOCAL_SERVER",
            Self::TlsServer => "TLS_SERVER",
            Self::Proxy => "PROXY",
        }
    }

    /// The keys this section accepts, in documentation order.
    pub fn keys(self) -> impl Iterator<Item = Key> {
        Key::ALL
            .into_iter()
            .filter(move |key| key.section() == self)
    }
}

/// One setting. Its ini key is [`Key::name`], its environment variable
/// [`Key::env`] and its flag [`Key::flag`]; DESIGN.md "Config contract".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the key named in `name()`
pub enum Key {
    LocalHost,
    LocalPort,
    AllowNetworks,
    TlsHost,
    TlsPort,
    TlsHostname,
    Spki,
    TlsCaFile,
    QueryTimeout,
    UpstreamTimeout,
    TcpIdleTimeout,
    UpstreamIdleTimeout,
    Strategy,
    HedgePercent,
    Workers,
    MaxTcpClients,
    MaxInflight,
    MaxUdpSize,
    ClientBufferMib,
    CacheSizeMib,
    CacheMinTtl,
    CacheMaxTtl,
    CacheFailureTtl,
    ServeStale,
    CachePrefetch,
    LogLevel,
    LogFormat,
    LogQueries,
    MetricsListen,
}

impl Key {
    /// Every key, in documentation order.
    pub const ALL: [Key; 29] = [
        Self::LocalHost,
        Self::LocalPort,
        Self::AllowNetworks,
        Self::TlsHost,
        Self::TlsPort,
        Self::TlsHostname,
        Self::Spki,
        Self::TlsCaFile,
        Self::QueryTimeout,
        Self::UpstreamTimeout,
        Self::TcpIdleTimeout,
        Self::UpstreamIdleTimeout,
        Self::Strategy,
        Self::HedgePercent,
        Self::Workers,
        Self::MaxTcpClients,
        Self::MaxInflight,
        Self::MaxUdpSize,
        Self::ClientBufferMib,
        Self::CacheSizeMib,
        Self::CacheMinTtl,
        Self::CacheMaxTtl,
        Self::CacheFailureTtl,
        Self::ServeStale,
        Self::CachePrefetch,
        Self::LogLevel,
        Self::LogFormat,
        Self::LogQueries,
        Self::MetricsListen,
    ];

    /// The key as written in settings.ini (lower case).
    pub fn name(self) -> &'static str {
        match self {
            Self::LocalHost => "local_host",
            Self::LocalPort => "local_port",
            Self::AllowNetworks => "allow_networks",
            Self::TlsHost => "tls_host",
            Self::TlsPort => "tls_port",
            Self::TlsHostname => "tls_hostname",
            Self::Spki => "spki",
            Self::TlsCaFile => "tls_ca_file",
            Self::QueryTimeout => "query_timeout",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::TcpIdleTimeout => "tcp_idle_timeout",
            Self::UpstreamIdleTimeout => "upstream_idle_timeout",
            Self::Strategy => "strategy",
            Self::HedgePercent => "hedge_percent",
            Self::Workers => "workers",
            Self::MaxTcpClients => "max_tcp_clients",
            Self::MaxInflight => "max_inflight",
            Self::MaxUdpSize => "max_udp_size",
            Self::ClientBufferMib => "client_buffer_mib",
            Self::CacheSizeMib => "cache_size_mib",
            Self::CacheMinTtl => "cache_min_ttl",
            Self::CacheMaxTtl => "cache_max_ttl",
            Self::CacheFailureTtl => "cache_failure_ttl",
            Self::ServeStale => "serve_stale",
            Self::CachePrefetch => "cache_prefetch",
            Self::LogLevel => "log_level",
            Self::LogFormat => "log_format",
            Self::LogQueries => "log_queries",
            Self::MetricsListen => "metrics_listen",
        }
    }

    /// The environment variable: the key in capitals.
    pub fn env(self) -> &'static str {
        match self {
            Self::LocalHost => "LOCAL_HOST",
            Self::LocalPort => "LOCAL_PORT",
            Self::AllowNetworks => "ALLOW_NETWORKS",
            Self::TlsHost => "TLS_HOST",
            Self::TlsPort => "TLS_PORT",
            Self::TlsHostname => "TLS_HOSTNAME",
            Self::Spki => "SPKI",
            Self::TlsCaFile => "TLS_CA_FILE",
            Self::QueryTimeout => "QUERY_TIMEOUT",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::TcpIdleTimeout => "TCP_IDLE_TIMEOUT",
            Self::UpstreamIdleTimeout => "UPSTREAM_IDLE_TIMEOUT",
            Self::Strategy => "STRATEGY",
            Self::HedgePercent => "HEDGE_PERCENT",
            Self::Workers => "WORKERS",
            Self::MaxTcpClients => "MAX_TCP_CLIENTS",
            Self::MaxInflight => "MAX_INFLIGHT",
            Self::MaxUdpSize => "MAX_UDP_SIZE",
            Self::ClientBufferMib => "CLIENT_BUFFER_MIB",
            Self::CacheSizeMib => "CACHE_SIZE_MIB",
            Self::CacheMinTtl => "CACHE_MIN_TTL",
            Self::CacheMaxTtl => "CACHE_MAX_TTL",
            Self::CacheFailureTtl => "CACHE_FAILURE_TTL",
            Self::ServeStale => "SERVE_STALE",
            Self::CachePrefetch => "CACHE_PREFETCH",
            Self::LogLevel => "LOG_LEVEL",
            Self::LogFormat => "LOG_FORMAT",
            Self::LogQueries => "LOG_QUERIES",
            Self::MetricsListen => "METRICS_LISTEN",
        }
    }

    /// The command-line flag: the key with dashes.
    pub fn flag(self) -> &'static str {
        match self {
            Self::LocalHost => "--local-host",
            Self::LocalPort => "--local-port",
            Self::AllowNetworks => "--allow-networks",
            Self::TlsHost => "--tls-host",
            Self::TlsPort => "--tls-port",
            Self::TlsHostname => "--tls-hostname",
            Self::Spki => "--spki",
            Self::TlsCaFile => "--tls-ca-file",
            Self::QueryTimeout => "--query-timeout",
            Self::UpstreamTimeout => "--upstream-timeout",
            Self::TcpIdleTimeout => "--tcp-idle-timeout",
            Self::UpstreamIdleTimeout => "--upstream-idle-timeout",
            Self::Strategy => "--strategy",
            Self::HedgePercent => "--hedge-percent",
            Self::Workers => "--workers",
            Self::MaxTcpClients => "--max-tcp-clients",
            Self::MaxInflight => "--max-inflight",
            Self::MaxUdpSize => "--max-udp-size",
            Self::ClientBufferMib => "--client-buffer-mib",
            Self::CacheSizeMib => "--cache-size-mib",
            Self::CacheMinTtl => "--cache-min-ttl",
            Self::CacheMaxTtl => "--cache-max-ttl",
            Self::CacheFailureTtl => "--cache-failure-ttl",
            Self::ServeStale => "--serve-stale",
            Self::CachePrefetch => "--cache-prefetch",
            Self::LogLevel => "--log-level",
            Self::LogFormat => "--log-format",
            Self::LogQueries => "--log-queries",
            Self::MetricsListen => "--metrics-listen",
        }
    }

    /// The section of settings.ini the key belongs to.
    pub fn section(self) -> Section {
        match self {
            Self::LocalHost | Self::LocalPort | Self::AllowNetworks => Section::LocalServer,
            Self::TlsHost | Self::TlsPort | Self::TlsHostname | Self::Spki | Self::TlsCaFile => {
                Section::TlsServer
            }
            Self::QueryTimeout
            | Self::UpstreamTimeout
            | Self::TcpIdleTimeout
            | Self::UpstreamIdleTimeout
            | Self::Strategy
            | Self::HedgePercent
            | Self::Workers
            | Self::MaxTcpClients
            | Self::MaxInflight
            | Self::MaxUdpSize
            | Self::ClientBufferMib
            | Self::CacheSizeMib
            | Self::CacheMinTtl
            | Self::CacheMaxTtl
            | Self::CacheFailureTtl
            | Self::ServeStale
            | Self::CachePrefetch
            | Self::LogLevel
            | Self::LogFormat
            | Self::LogQueries
            | Self::MetricsListen => Section::Proxy,
        }
    }

    /// The key for an ini key name that is already lower case.
    pub(super) fn from_name(name: &str) -> Option<Key> {
        Self::ALL.into_iter().find(|key| key.name() == name)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_the_key_in_capitals_and_flag_the_key_with_dashes() {
        for key in Key::ALL {
            assert_eq!(key.env(), key.name().to_uppercase());
            assert_eq!(key.flag(), format!("--{}", key.name().replace('_', "-")));
            assert_eq!(Key::from_name(key.name()), Some(key));
        }
    }
}
