//! The proxy's configuration, from all layers, in one place (DESIGN.md
//! "Config contract"; STYLE rule 5).
//!
//! Layers, later wins:
//!
//! 1. built-in defaults, with bounds ([`defaults`]);
//! 2. the config file: `--config PATH` (it must exist), else `./settings.ini` if it
//!    exists, else none. Read like Python's configparser (see `ini.rs`); unknown
//!    sections and keys are errors;
//! 3. environment variables, named like the keys in capitals (`TLS_PORT`);
//! 4. command-line flags, named like the keys with dashes (`--tls-port`).
//!
//! A value set to the empty string in any layer means the built-in default (for
//! `local_host`: all interfaces); `tls_host` has none, no `tls_hostname`
//! means the upstream is verified by its IP address, and `allow_networks`
//! must name at least one network. How the upstream list is
//! assembled, including how env/flag upstreams replace the file's, is described
//! in `upstreams.rs`. Every value that ends up used is validated; the first
//! problem is returned as one [`ConfigError`] line.

pub mod defaults;
mod error;
mod ini;
mod keys;
mod layers;
mod pin_warnings;
mod report;
mod upstreams;
mod values;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub use dnsproxy_core::core::acl::IpNet;
pub use dnsproxy_core::core::message::TtlClamp;
pub use dnsproxy_core::core::upstreams::Strategy;
pub use dnsproxy_core::shell::config::{
    AuthName, CaBundle, CacheSettings, ProxyConfig, UpstreamConfig,
};
pub use dnsproxy_core::shell::log::{Level, LogFormat};
pub use error::{ConfigError, ConfigFileSource, Expected, FilePos, ListLen, MissingScope, Origin};
pub use keys::{Key, Section};
pub use pin_warnings::{PinWarning, PinWarningKind, pin_warnings};
pub use report::{Effective, Report, UpstreamReport};

use defaults::{DurationLimits, IntLimits};
use layers::{ConfigFile, Layers, Setting};

/// Exit code for bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "settings.ini";

/// The command line as the configuration reads it: the config file it
/// names and the value given to each key's flag. The CLI's arguments
/// implement it, so this module never depends on how flags are parsed.
pub trait Flags {
    /// `--config PATH`, if given.
    fn config_file(&self) -> Option<&Path>;
    /// The value given to `key`'s flag, if it was given.
    fn value(&self, key: Key) -> Option<&str>;
}

/// Builds the configuration from all layers: the one typed configuration
/// the component, the socket policy and `health` all take. `env` looks up an
/// environment variable (`&|name| std::env::var(name).ok()` in the binary);
/// tests inject it.
pub fn load(
    flags: &dyn Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProxyConfig, ConfigError> {
    load_with_origins(flags, env).map(|(config, _)| config)
}

/// Like [`load`], with every effective value and the layer it came from
/// (`dnsproxy check`). Validates exactly what `load` does.
pub fn load_with_origins(
    flags: &dyn Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(ProxyConfig, Report), ConfigError> {
    let (path, given_by) = match flags.config_file() {
        Some(path) => (path, ConfigFileSource::Flag),
        None => (Path::new(DEFAULT_CONFIG_FILE), ConfigFileSource::Default),
    };
    let file = ConfigFile::load(flags.config_file(), Path::new(DEFAULT_CONFIG_FILE))?;
    let (config, mut report) = resolve(&Layers {
        file: file.as_ref(),
        env,
        flags,
    })?;
    report.file = file.is_some().then(|| (path.to_path_buf(), given_by));
    Ok((config, report))
}

/// Parses a duration as every setting takes them (`4s`, `1500ms`, `1.5s`, a
/// number of seconds), within `min..=max`; for flags that are not settings
/// (`health --timeout`). The error says what was expected.
pub fn parse_duration(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let limits = DurationLimits {
        default: min,
        min,
        max,
    };
    values::duration(text, limits).map_err(|e| format!("expected {e}"))
}

/// The upstreams as the start-up and reload lines name them: address or
/// name, what the certificate is verified against, the trust anchors and
/// the pins.
pub fn describe_upstreams(config: &ProxyConfig) -> String {
    config
        .upstreams
        .iter()
        .map(|u| {
            let pins = match u.pins.pins().len() {
                0 => "CA only".to_owned(),
                1 => "1 pin".to_owned(),
                n => format!("{n} pins"),
            };
            let ca =
                u.ca.as_ref()
                    .map_or("web roots".to_owned(), |c| c.path.display().to_string());
            format!("{} ({}, {ca}, {pins})", u.label(), u.auth_name.describe())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates every layer's winning value.
fn resolve(layers: &Layers<'_>) -> Result<(ProxyConfig, Report), ConfigError> {
    let mut settings = Vec::new();
    let mut record = |key, value: String, origin: &Origin| {
        settings.push(Effective {
            key,
            value,
            origin: origin.clone(),
        });
    };
    let local_host = scalar(
        layers,
        Key::LocalHost,
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        values::local_hosts,
    )?;
    record(
        Key::LocalHost,
        local_host
            .value
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        &local_host.origin,
    );
    let local_port = scalar(layers, Key::LocalPort, defaults::LOCAL_PORT, values::port)?;
    record(
        Key::LocalPort,
        local_port.value.to_string(),
        &local_port.origin,
    );
    let allow_networks = allow_networks(layers)?;
    let networks = allow_networks.value.iter().map(IpNet::to_string);
    record(
        Key::AllowNetworks,
        networks.collect::<Vec<_>>().join(", "),
        &allow_networks.origin,
    );
    let (upstreams, upstream_reports) = upstreams::upstreams(layers)?.into_iter().unzip();
    let query_timeout = duration(layers, Key::QueryTimeout, defaults::QUERY_TIMEOUT)?;
    let mut upstream_timeout = duration(layers, Key::UpstreamTimeout, defaults::UPSTREAM_TIMEOUT)?;
    if upstream_timeout.origin == Origin::Default {
        // A shorter query_timeout shortens the default instead of failing.
        upstream_timeout.value = upstream_timeout.value.min(query_timeout.value);
    } else if upstream_timeout.value > query_timeout.value {
        return Err(ConfigError::Invalid {
            key: Key::UpstreamTimeout,
            value: upstream_timeout.text,
            origin: upstream_timeout.origin,
            expected: Expected::AtMostQueryTimeout {
                query_timeout: query_timeout.value,
                origin: query_timeout.origin,
            },
        });
    }
    let tcp_idle_timeout = duration(layers, Key::TcpIdleTimeout, defaults::TCP_IDLE_TIMEOUT)?;
    let upstream_idle_timeout = duration(
        layers,
        Key::UpstreamIdleTimeout,
        defaults::UPSTREAM_IDLE_TIMEOUT,
    )?;
    for (key, d) in [
        (Key::QueryTimeout, &query_timeout),
        (Key::UpstreamTimeout, &upstream_timeout),
        (Key::TcpIdleTimeout, &tcp_idle_timeout),
        (Key::UpstreamIdleTimeout, &upstream_idle_timeout),
    ] {
        record(key, format!("{:?}", d.value), &d.origin);
    }
    let strategy = scalar(layers, Key::Strategy, Strategy::Priority, values::strategy)?;
    record(
        Key::Strategy,
        strategy_name(strategy.value).to_owned(),
        &strategy.origin,
    );
    let hedge_percent = integer(layers, Key::HedgePercent, defaults::HEDGE_PERCENT)?;
    record(
        Key::HedgePercent,
        hedge_percent.value.to_string(),
        &hedge_percent.origin,
    );
    let workers = scalar(layers, Key::Workers, None, values::workers)?;
    record(
        Key::Workers,
        workers
            .value
            .map_or_else(|| "auto".to_owned(), |n| n.to_string()),
        &workers.origin,
    );
    let mut count = |key, limits| {
        let n = integer(layers, key, limits)?;
        record(key, n.value.to_string(), &n.origin);
        Ok::<_, ConfigError>(n.value as usize)
    };
    let max_tcp_clients = count(Key::MaxTcpClients, defaults::MAX_TCP_CLIENTS)?;
    let max_inflight = count(Key::MaxInflight, defaults::MAX_INFLIGHT)?;
    let max_udp_size = count(Key::MaxUdpSize, defaults::MAX_UDP_SIZE)?;
    let client_buffer_mib = count(Key::ClientBufferMib, defaults::CLIENT_BUFFER_MIB)?;
    let cache_size_mib = count(Key::CacheSizeMib, defaults::CACHE_SIZE_MIB)?;
    let cache = cache(layers, cache_size_mib << 20, &mut record)?;
    let log_level = scalar(layers, Key::LogLevel, Level::Info, values::log_level)?;
    record(
        Key::LogLevel,
        log_level.value.to_string(),
        &log_level.origin,
    );
    let log_format = scalar(layers, Key::LogFormat, LogFormat::Text, values::log_format)?;
    record(
        Key::LogFormat,
        log_format.value.to_string(),
        &log_format.origin,
    );
    let log_queries = scalar(layers, Key::LogQueries, false, values::boolean)?;
    record(
        Key::LogQueries,
        log_queries.value.to_string(),
        &log_queries.origin,
    );
    let metrics_listen = scalar(layers, Key::MetricsListen, None, |t| {
        values::metrics_listen(t).map(Some)
    })?;
    record(
        Key::MetricsListen,
        metrics_listen
            .value
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        &metrics_listen.origin,
    );
    let config = ProxyConfig {
        listen: local_host
            .value
            .iter()
            .map(|&ip| SocketAddr::new(ip, local_port.value))
            .collect(),
        allow_networks: allow_networks.value,
        upstreams,
        query_timeout: query_timeout.value,
        upstream_timeout: upstream_timeout.value,
        tcp_idle_timeout: tcp_idle_timeout.value,
        upstream_idle_timeout: upstream_idle_timeout.value,
        strategy: strategy.value,
        hedge_percent: hedge_percent.value,
        workers: workers.value,
        max_tcp_clients,
        max_inflight,
        max_udp_size,
        client_buffer_budget: client_buffer_mib << 20,
        log_level: log_level.value,
        log_format: log_format.value,
        log_queries: log_queries.value,
        metrics_listen: metrics_listen.value,
        cache,
    };
    let report = Report {
        file: None,
        settings,
        upstreams: upstream_reports,
    };
    Ok((config, report))
}

/// `strategy` as it is written in settings.ini.
fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Priority => "priority",
        Strategy::RoundRobin => "round_robin",
        Strategy::Fastest => "fastest",
    }
}

/// The cache settings but its size: TTL clamps (`cache_max_ttl` at least
/// `cache_min_ttl`), the failure TTL, the serve-stale window, prefetch.
fn cache(
    layers: &Layers<'_>,
    max_bytes: usize,
    record: &mut impl FnMut(Key, String, &Origin),
) -> Result<CacheSettings, ConfigError> {
    let min_ttl = duration(layers, Key::CacheMinTtl, defaults::CACHE_MIN_TTL)?;
    let max_ttl = duration(layers, Key::CacheMaxTtl, defaults::CACHE_MAX_TTL)?;
    if max_ttl.value < min_ttl.value {
        return Err(ConfigError::Invalid {
            key: Key::CacheMaxTtl,
            value: max_ttl.text,
            origin: max_ttl.origin,
            expected: Expected::AtLeastCacheMinTtl {
                min_ttl: min_ttl.value,
                origin: min_ttl.origin,
            },
        });
    }
    let failure_ttl = duration(layers, Key::CacheFailureTtl, defaults::CACHE_FAILURE_TTL)?;
    let serve_stale = duration(layers, Key::ServeStale, defaults::SERVE_STALE)?;
    for (key, d) in [
        (Key::CacheMinTtl, &min_ttl),
        (Key::CacheMaxTtl, &max_ttl),
        (Key::CacheFailureTtl, &failure_ttl),
        (Key::ServeStale, &serve_stale),
    ] {
        // Debug prints zero as `0ns`.
        let text = if d.value.is_zero() {
            "0s".to_owned()
        } else {
            format!("{:?}", d.value)
        };
        record(key, text, &d.origin);
    }
    let prefetch = scalar(layers, Key::CachePrefetch, true, values::boolean)?;
    record(
        Key::CachePrefetch,
        prefetch.value.to_string(),
        &prefetch.origin,
    );
    // Whole seconds: TTLs are (RFC 1035 §3.2.1); the bounds keep them in u32.
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    Ok(CacheSettings {
        max_bytes,
        ttl: TtlClamp {
            min: secs(min_ttl.value),
            max: secs(max_ttl.value),
        },
        failure_ttl: failure_ttl.value,
        stale_window: serve_stale.value,
        prefetch: prefetch.value,
    })
}

/// A parsed value with the text and origin it came from (for later checks).
struct Resolved<T> {
    value: T,
    text: String,
    origin: Origin,
}

/// The winning value of a single-valued key, or `default` if unset or empty.
fn scalar<T>(
    layers: &Layers<'_>,
    key: Key,
    default: T,
    parse: impl Fn(&str) -> Result<T, Expected>,
) -> Result<Resolved<T>, ConfigError> {
    match layers.get(key) {
        Some(Setting { value, origin }) if !value.is_empty() => match parse(&value) {
            Ok(parsed) => Ok(Resolved {
                value: parsed,
                text: value,
                origin,
            }),
            Err(expected) => Err(ConfigError::Invalid {
                key,
                value,
                origin,
                expected,
            }),
        },
        _ => Ok(Resolved {
            value: default,
            text: String::new(),
            origin: Origin::Default,
        }),
    }
}

fn duration(
    layers: &Layers<'_>,
    key: Key,
    limits: DurationLimits,
) -> Result<Resolved<Duration>, ConfigError> {
    scalar(layers, key, limits.default, |t| values::duration(t, limits))
}

/// An integer setting (a `u32` fits a `usize` on every target the proxy
/// builds for).
fn integer(layers: &Layers<'_>, key: Key, limits: IntLimits) -> Result<Resolved<u32>, ConfigError> {
    scalar(layers, key, limits.default, |t| values::integer(t, limits))
}

/// `allow_networks`: comma-separated networks, the default when unset. Empty is
/// an error rather than the default: a reader could take an empty allow-list
/// for "no restriction" or for "nobody".
fn allow_networks(layers: &Layers<'_>) -> Result<Resolved<Vec<IpNet>>, ConfigError> {
    let setting = layers.get(Key::AllowNetworks).unwrap_or_else(|| Setting {
        value: defaults::ALLOW_NETWORKS.to_owned(),
        origin: Origin::Default,
    });
    if setting.value.is_empty() {
        return Err(ConfigError::Invalid {
            key: Key::AllowNetworks,
            value: setting.value,
            origin: setting.origin,
            expected: Expected::SomeNetwork,
        });
    }
    let value = setting
        .value
        .split(',')
        .map(str::trim)
        .map(|item| {
            IpNet::parse(item).ok_or_else(|| ConfigError::Invalid {
                key: Key::AllowNetworks,
                value: if item.is_empty() {
                    setting.value.clone()
                } else {
                    item.to_owned()
                },
                origin: setting.origin.clone(),
                expected: Expected::Network,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Resolved {
        value,
        text: setting.value,
        origin: setting.origin,
    })
}

#[cfg(test)]
mod tests;
