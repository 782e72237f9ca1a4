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
//! `local_host`: all interfaces); `tls_host` and `tls_hostname` have none, and
//! `allow_networks` must name at least one network. How the upstream list is
//! assembled, including how env/flag upstreams replace the file's, is described
//! in `upstreams.rs`. Every value that ends up used is validated; the first
//! problem is returned as one [`ConfigError`] line.

pub mod defaults;
mod error;
mod ini;
mod keys;
mod layers;
mod upstreams;
mod values;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dnsproxy_core::core::acl::IpNet;
pub use error::{ConfigError, ConfigFileSource, Expected, FilePos, ListLen, MissingScope, Origin};
pub use keys::{Key, Section};

use defaults::{DurationLimits, IntLimits};
use layers::{ConfigFile, Layers, Setting};

/// Exit code for bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "settings.ini";

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to answer clients, UDP and TCP (`local_host`, `local_port`).
    pub listen: SocketAddr,
    /// Clients allowed to query; others get no answer (`allow_networks`).
    pub allow_networks: Vec<IpNet>,
    /// DoT resolvers in priority order; never empty.
    pub upstreams: Vec<Upstream>,
    /// Deadline of every client query.
    pub query_timeout: Duration,
    /// Time one upstream gets before the next is tried; at most `query_timeout`
    /// (when no layer sets it, the default is capped at `query_timeout`).
    pub upstream_timeout: Duration,
    /// Idle client TCP connections are closed after this (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Idle upstream TLS connections are closed after this.
    pub upstream_idle_timeout: Duration,
    /// Concurrent client TCP connections.
    pub max_tcp_clients: u32,
    /// Queries in flight over all clients.
    pub max_inflight: u32,
    /// The largest UDP answer to a client.
    pub max_udp_size: u16,
    /// Log verbosity of the host.
    pub log_level: LogLevel,
}

/// One DNS-over-TLS resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// For logs: the name of its `[TLS_SERVER <name>]` section (`name#2` for the
    /// second address of a list there), else its `ip:port`.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Name verified in the certificate and sent as SNI.
    pub tls_hostname: String,
    /// Base64 SHA-256 SPKI pins (validated); empty = CA validation only.
    pub spki: Vec<String>,
    /// Roots to trust instead of the built-in web roots.
    pub ca: Option<CaBundle>,
}

/// A PEM bundle of trusted roots, read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// The file as configured, for messages.
    pub path: PathBuf,
    /// Its contents; holds at least one `-----BEGIN CERTIFICATE-----`.
    pub pem: String,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // the names are the levels
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The lower-case name, as `tracing` filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The command line as the configuration reads it: the config file it
/// names and the value given to each key's flag. The CLI's arguments
/// implement it, so this module never depends on how flags are parsed.
pub trait Flags {
    /// `--config PATH`, if given.
    fn config_file(&self) -> Option<&Path>;
    /// The value given to `key`'s flag, if it was given.
    fn value(&self, key: Key) -> Option<&str>;
}

/// Builds the configuration from all layers. `env` looks up an environment
/// variable (`&|name| std::env::var(name).ok()` in the binary); tests inject it.
pub fn load(
    flags: &dyn Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file = ConfigFile::load(flags.config_file(), Path::new(DEFAULT_CONFIG_FILE))?;
    resolve(&Layers {
        file: file.as_ref(),
        env,
        flags,
    })
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

/// Validates every layer's winning value.
fn resolve(layers: &Layers<'_>) -> Result<Config, ConfigError> {
    let local_host = scalar(
        layers,
        Key::LocalHost,
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |t| values::ip(t).ok_or(Expected::LocalHost),
    )?;
    let local_port = scalar(layers, Key::LocalPort, defaults::LOCAL_PORT, values::port)?;
    let allow_networks = allow_networks(layers)?;
    let upstreams = upstreams::upstreams(layers)?;
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
    Ok(Config {
        listen: SocketAddr::new(local_host.value, local_port.value),
        allow_networks,
        upstreams,
        query_timeout: query_timeout.value,
        upstream_timeout: upstream_timeout.value,
        tcp_idle_timeout: duration(layers, Key::TcpIdleTimeout, defaults::TCP_IDLE_TIMEOUT)?.value,
        upstream_idle_timeout: duration(
            layers,
            Key::UpstreamIdleTimeout,
            defaults::UPSTREAM_IDLE_TIMEOUT,
        )?
        .value,
        max_tcp_clients: integer(layers, Key::MaxTcpClients, defaults::MAX_TCP_CLIENTS)?,
        max_inflight: integer(layers, Key::MaxInflight, defaults::MAX_INFLIGHT)?,
        // The limits keep it within u16 (at most 4096).
        max_udp_size: u16::try_from(integer(layers, Key::MaxUdpSize, defaults::MAX_UDP_SIZE)?)
            .unwrap_or(u16::MAX),
        log_level: scalar(layers, Key::LogLevel, LogLevel::Info, values::log_level)?.value,
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

fn integer(layers: &Layers<'_>, key: Key, limits: IntLimits) -> Result<u32, ConfigError> {
    scalar(layers, key, limits.default, |t| values::integer(t, limits)).map(|r| r.value)
}

/// `allow_networks`: comma-separated networks, the default when unset. Empty is
/// an error rather than the default: a reader could take an empty allow-list
/// for "no restriction" or for "nobody".
fn allow_networks(layers: &Layers<'_>) -> Result<Vec<IpNet>, ConfigError> {
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
    setting
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
        .collect()
}

#[cfg(test)]
mod tests;
