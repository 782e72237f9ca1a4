//! Configuration errors: each one prints as a single line that names the key,
//! the value, where the value came from and what is expected. The binary prints
//! it as `dnsproxy: {error}` and exits with [`EXIT_CONFIG`](super::EXIT_CONFIG).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::keys::{Key, Section};

/// Why the configuration cannot be used. Nothing starts when `load` returns one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file exists (or was named by `--config`) but cannot be read.
    #[error("cannot read config file {path:?} ({given_by}): {io}")]
    ConfigFile {
        /// The path as given.
        path: PathBuf,
        /// `--config` or the default `./settings.ini`.
        given_by: ConfigFileSource,
        /// What the operating system said.
        io: io::Error,
    },

    /// A `key = value` line before the first `[SECTION]` header.
    #[error("line {line:?} is outside any section ({at}): expected a [SECTION] header first")]
    MissingSectionHeader {
        /// The line, trimmed.
        line: String,
        /// Where it is.
        at: FilePos,
    },

    /// A line that is neither a header, a `key = value` pair nor a comment.
    #[error(
        "malformed line {line:?} ({at}): expected \"key = value\", \"key: value\", \
         \"[SECTION]\", a # comment or a blank line"
    )]
    MalformedLine {
        /// The line, trimmed.
        line: String,
        /// Where it is.
        at: FilePos,
    },

    /// A section header that appears twice (configparser's strict mode).
    #[error("duplicate section [{section}] ({at}): it already starts at line {first_line}")]
    DuplicateSection {
        /// The section name.
        section: String,
        /// The second header.
        at: FilePos,
        /// Line of the first header.
        first_line: usize,
    },

    /// A key set twice in one section (configparser's strict mode).
    #[error("duplicate key {key:?} in [{section}] ({at}): it is already set at line {first_line}")]
    DuplicateKey {
        /// The key, lower case.
        key: String,
        /// The section it is in.
        section: String,
        /// The second occurrence.
        at: FilePos,
        /// Line of the first occurrence.
        first_line: usize,
    },

    /// A section this program does not know.
    #[error(
        "unknown section [{section}] ({at}): expected [LOCAL_SERVER], [TLS_SERVER], \
         [TLS_SERVER <name>] or [PROXY]"
    )]
    UnknownSection {
        /// The section name.
        section: String,
        /// Its header.
        at: FilePos,
    },

    /// `[TLS_SERVER <name>]` with a name that cannot label an upstream.
    #[error(
        "invalid section name [{section}] ({at}): expected [TLS_SERVER <name>] with a name \
         of letters, digits, '-', '_' or '.'"
    )]
    InvalidSectionName {
        /// The section name.
        section: String,
        /// Its header.
        at: FilePos,
    },

    /// A key that its section does not accept (a typo, or the wrong section).
    #[error("unknown key {key:?} in [{section}] ({at}): expected one of {}", key_list(*.kind))]
    UnknownKey {
        /// The key, lower case.
        key: String,
        /// The section it is in.
        section: String,
        /// The kind of that section.
        kind: Section,
        /// Where the key is.
        at: FilePos,
    },

    /// A value that does not parse or is out of range.
    #[error("invalid {key} {value:?} ({origin}): expected {expected}")]
    Invalid {
        /// The setting.
        key: Key,
        /// The offending value (one item of a comma-separated list).
        value: String,
        /// Which layer it came from.
        origin: Origin,
        /// What would have been accepted.
        expected: Expected,
    },

    /// A required upstream key that no layer sets.
    #[error("missing {key} {scope}: expected {}", missing_hint(*.key))]
    Missing {
        /// The setting.
        key: Key,
        /// The upstream definition that lacks it.
        scope: MissingScope,
    },

    /// `tls_host`, `tls_port` and `tls_hostname` lists that cannot be aligned.
    #[error(
        "mismatched upstream lists: {first} but {second}: expected one value for all \
         upstreams or one value per upstream"
    )]
    ListLengths {
        /// One of the lists.
        first: ListLen,
        /// A list of a different length.
        second: ListLen,
    },

    /// No layer defines any upstream.
    #[error(
        "no upstream configured: expected tls_host in [TLS_SERVER] of settings.ini, \
         in env TLS_HOST or as --tls-host"
    )]
    NoUpstream,
}

/// Where a value came from; printed in parentheses after the value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A line of the config file.
    File(FilePos),
    /// The environment variable of this key.
    Env(Key),
    /// The command-line flag of this key.
    Flag(Key),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(pos) => pos.fmt(f),
            Self::Env(key) => write!(f, "env {}", key.env()),
            Self::Flag(key) => write!(f, "flag {}", key.flag()),
        }
    }
}

/// A line of the config file, printed as `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePos {
    /// The file as it was named (`settings.ini` for the default).
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// How the config file was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFileSource {
    /// `--config PATH`: the file must exist.
    Flag,
    /// `./settings.ini`, read because it exists.
    Default,
}

impl fmt::Display for ConfigFileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "flag --config",
            Self::Default => "default ./settings.ini",
        })
    }
}

/// The upstream definition that lacks a required key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingScope {
    /// A `[TLS_SERVER]` or `[TLS_SERVER <name>]` section of the file.
    Section {
        /// The section name.
        section: String,
        /// Its header.
        at: FilePos,
    },
}

impl fmt::Display for MissingScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Section { section, at } => write!(f, "in [{section}] ({at})"),
        }
    }
}

/// The length of one upstream list and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListLen {
    /// The setting.
    pub key: Key,
    /// How many comma-separated values it has.
    pub len: usize,
    /// Where it was set.
    pub origin: Origin,
}

impl fmt::Display for ListLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { key, len, origin } = self;
        let values = if *len == 1 { "value" } else { "values" };
        write!(f, "{key} has {len} {values} ({origin})")
    }
}

/// What a setting accepts; printed after "expected".
#[derive(Debug)]
#[non_exhaustive]
pub enum Expected {
    /// A TCP/UDP port.
    Port,
    /// An IP literal.
    IpAddr,
    /// IP literals, comma-separated, or nothing (`local_host`).
    LocalHost,
    /// `local_host` lists a wildcard and another address of its family,
    /// which the wildcard already covers (their binds would collide).
    LocalHostOverlap,
    /// `tls_host` got a host name.
    IpNotHostname,
    /// A DNS name for SNI and certificate verification.
    DnsName,
    /// A network in CIDR form or a bare address.
    Network,
    /// `allow_networks` was empty.
    SomeNetwork,
    /// An SPKI pin.
    Pin,
    /// A duration within bounds.
    Duration {
        /// Smallest accepted.
        min: Duration,
        /// Largest accepted.
        max: Duration,
    },
    /// An integer within bounds.
    Integer {
        /// Smallest accepted.
        min: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A log level name.
    LogLevel,
    /// A log format name.
    LogFormat,
    /// `strategy`.
    Strategy,
    /// `workers`.
    Workers,
    /// A yes/no value.
    Boolean,
    /// An IP address and a port.
    ListenAddr,
    /// `upstream_timeout` longer than `query_timeout`.
    AtMostQueryTimeout {
        /// The effective query_timeout.
        query_timeout: Duration,
        /// Where that came from.
        origin: Origin,
    },
    /// `cache_max_ttl` shorter than `cache_min_ttl`.
    AtLeastCacheMinTtl {
        /// The effective cache_min_ttl.
        min_ttl: Duration,
        /// Where that came from.
        origin: Origin,
    },
    /// The CA file cannot be read.
    ReadableFile(io::Error),
    /// The CA file has no certificate in it.
    PemCertificate,
    /// A certificate of the CA file cannot be used as a trust anchor.
    ParsableCertificate(String),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port => f.write_str("a port number from 1 to 65535"),
            Self::IpAddr => f.write_str("an IPv4 or IPv6 address"),
            Self::LocalHost => f.write_str(
                "IPv4 or IPv6 addresses, comma-separated (0.0.0.0, ::), or nothing for all IPv4 \
                 interfaces (0.0.0.0)",
            ),
            Self::LocalHostOverlap => f.write_str(
                "addresses that do not overlap: 0.0.0.0 already covers every IPv4 address and :: \
                 every IPv6 address",
            ),
            Self::IpNotHostname => f.write_str(
                "an IP address, not a host name: put the name in tls_hostname and the \
                 resolver's address in tls_host",
            ),
            Self::DnsName => f.write_str(
                "a DNS name, the one in the resolver's certificate (e.g. cloudflare-dns.com), \
                 or nothing to verify the resolver by its IP address",
            ),
            Self::Network => f.write_str(
                "a network in CIDR form (10.0.0.0/8, fc00::/7) or an IP address, comma-separated",
            ),
            Self::SomeNetwork => {
                f.write_str("at least one network (0.0.0.0/0, ::/0 allows every client)")
            }
            Self::Pin => f.write_str("base64 of a 32-byte SHA-256 SPKI digest"),
            Self::Duration { min, max } => write!(
                f,
                "a duration from {min:?} to {max:?}, like 4s, 1500ms, 1.5s or 4 (seconds)"
            ),
            Self::Integer { min, max } => write!(f, "an integer from {min} to {max}"),
            Self::LogLevel => f.write_str("one of error, warn, info, debug, trace"),
            Self::LogFormat => f.write_str("text or json"),
            Self::Strategy => f.write_str("priority, round_robin or fastest"),
            Self::Workers => write!(
                f,
                "auto or an integer from 1 to {}",
                super::defaults::MAX_WORKERS
            ),
            Self::Boolean => f.write_str("true or false (also yes/no, on/off, 1/0)"),
            Self::ListenAddr => f.write_str(
                "an IP address and port like 127.0.0.1:9153 or [::1]:9153, or nothing for no \
                 metrics endpoint",
            ),
            Self::AtMostQueryTimeout {
                query_timeout,
                origin,
            } => write!(
                f,
                "at most query_timeout, which is {query_timeout:?} ({origin})"
            ),
            Self::AtLeastCacheMinTtl { min_ttl, origin } => {
                write!(f, "at least cache_min_ttl, which is {min_ttl:?} ({origin})")
            }
            Self::ReadableFile(io) => write!(f, "a readable PEM file ({io})"),
            Self::PemCertificate => {
                f.write_str("a PEM file with at least one \"-----BEGIN CERTIFICATE-----\"")
            }
            Self::ParsableCertificate(why) => {
                write!(f, "a PEM file of X.509 CA certificates ({why})")
            }
        }
    }
}

/// The keys a section accepts, for the unknown-key message.
fn key_list(section: Section) -> String {
    section.keys().map(Key::name).collect::<Vec<_>>().join(", ")
}

/// What a required key holds, for the missing-key message.
fn missing_hint(key: Key) -> &'static str {
    match key {
        Key::TlsHost => "the resolver's IP address(es)",
        _ => "a value",
    }
}
