//! The upstream list: which DoT resolvers, in priority order.
//!
//! Rules (DESIGN.md "Config contract"):
//!
//! - `tls_host`, `tls_port` and `tls_hostname` may each be a comma-separated list;
//!   lists are aligned by position, a single value applies to every upstream, and
//!   any other length mismatch is an error. `spki` is one pin set and
//!   `tls_ca_file` one bundle for all upstreams of the definition.
//! - An upstream without a `tls_hostname` (unset or empty) is authenticated by its
//!   IP address: the certificate must carry it as an IP SAN (Cloudflare's,
//!   Google's and Quad9's do), and no SNI is sent.
//! - From the file: the plain `[TLS_SERVER]` section first (skipped if it has no
//!   keys at all), then every `[TLS_SERVER <name>]` in file order. A named
//!   section inherits nothing from `[TLS_SERVER]`: it needs its own `tls_host`;
//!   `tls_port` defaults to 853, `tls_hostname` to none (verified by IP address),
//!   `spki` to no pins and `tls_ca_file` to the built-in roots.
//! - `TLS_HOST` set in the environment or as a flag starts a new upstream list and
//!   every upstream of the file is dropped. Its `tls_port`, `tls_hostname`, `spki`
//!   and `tls_ca_file` come from the layer that set `TLS_HOST` or a layer above it,
//!   never from the file: a `TLS_HOST` from the environment takes them from the
//!   environment or the flags, a `--tls-host` from the flags only; unset ones get
//!   their defaults. So `-e TLS_HOST=8.8.8.8 -e SPKI=...` over a file written for
//!   Cloudflare verifies 8.8.8.8 by its address with those pins, not as
//!   `cloudflare-dns.com` with Cloudflare's.
//! - Without `TLS_HOST` above the file, `TLS_PORT`, `TLS_HOSTNAME`, `SPKI` and
//!   `TLS_CA_FILE` from the environment or flags apply to every upstream of the
//!   file, named sections included, as if written in each section: `-e
//!   TLS_PORT=5353` moves the file's upstreams to port 5353, `-e SPKI=` (set but
//!   empty) turns their pinning off.
//!
//! Only values that end up used are validated: a file value replaced by env or
//! flags, or a section dropped by them, is not read.

use std::net::SocketAddr;

use dnsproxy_core::core::pins::PinSet;
use dnsproxy_core::shell::config::AuthName;

use super::UpstreamConfig;
use super::defaults;
use super::error::{ConfigError, Expected, ListLen, MissingScope, Origin};
use super::keys::Key;
use super::layers::{self, Layers, Setting};
use super::report::{Effective, UpstreamReport};
use super::values;

/// The upstream keys of one definition (a section, or the env/flag list).
struct Definition<'a> {
    /// `Some(name)` for `[TLS_SERVER <name>]`.
    name: Option<&'a str>,
    host: Setting,
    port: Option<Setting>,
    hostname: Option<Setting>,
    spki: Option<Setting>,
    ca_file: Option<Setting>,
}

/// All upstreams, in priority order, each with where its values came from;
/// never empty.
pub(super) fn upstreams(
    layers: &Layers<'_>,
) -> Result<Vec<(UpstreamConfig, UpstreamReport)>, ConfigError> {
    let mut all = Vec::new();
    for definition in definitions(layers)? {
        all.extend(build(definition)?);
    }
    if all.is_empty() {
        return Err(ConfigError::NoUpstream);
    }
    Ok(all)
}

/// The definitions that apply: the env/flag list, or the file's sections.
fn definitions<'a>(layers: &Layers<'a>) -> Result<Vec<Definition<'a>>, ConfigError> {
    if let Some(host) = layers.above_file(Key::TlsHost) {
        let flags_only = matches!(host.origin, Origin::Flag(_));
        let get = |key| {
            if flags_only {
                layers.flag(key)
            } else {
                layers.above_file(key)
            }
        };
        return Ok(vec![Definition {
            name: None,
            port: get(Key::TlsPort),
            hostname: get(Key::TlsHostname),
            spki: get(Key::Spki),
            ca_file: get(Key::TlsCaFile),
            host,
        }]);
    }
    let Some(file) = layers.file else {
        return Ok(Vec::new());
    };
    file.tls_sections()
        .filter(|(name, section)| name.is_some() || !section.entries.is_empty())
        .map(|(name, section)| {
            // A key set above the file wins over every section's own value.
            let get = |key| {
                layers
                    .above_file(key)
                    .or_else(|| layers::entry(section, key))
            };
            let host =
                layers::entry(section, Key::TlsHost).ok_or_else(|| ConfigError::Missing {
                    key: Key::TlsHost,
                    scope: MissingScope::Section {
                        section: section.name.clone(),
                        at: section.at.clone(),
                    },
                })?;
            Ok(Definition {
                name,
                host,
                port: get(Key::TlsPort),
                hostname: get(Key::TlsHostname),
                spki: get(Key::Spki),
                ca_file: get(Key::TlsCaFile),
            })
        })
        .collect()
}

/// A setting that is present and not empty (empty means the default).
fn given(setting: &Option<Setting>) -> Option<&Setting> {
    setting.as_ref().filter(|s| !s.value.is_empty())
}

/// Where a key's value came from: its setting, or the default.
fn origin_of(setting: Option<&Setting>) -> Origin {
    setting.map_or(Origin::Default, |s| s.origin.clone())
}

/// The upstreams of one definition.
fn build(def: Definition<'_>) -> Result<Vec<(UpstreamConfig, UpstreamReport)>, ConfigError> {
    let hosts = list(Key::TlsHost, &def.host, values::tls_host)?;
    let ports = match given(&def.port) {
        Some(port) => list(Key::TlsPort, port, values::port)?,
        None => vec![defaults::TLS_PORT],
    };
    let names = match given(&def.hostname) {
        Some(hostname) => list(Key::TlsHostname, hostname, values::dns_name)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None],
    };

    let lens = [
        (Key::TlsHost, hosts.len(), Some(&def.host)),
        (Key::TlsPort, ports.len(), given(&def.port)),
        (Key::TlsHostname, names.len(), given(&def.hostname)),
    ];
    let count = lens.iter().map(|(_, len, _)| *len).max().unwrap_or(1);
    let list_len = |(key, len, setting): (Key, usize, Option<&Setting>)| ListLen {
        key,
        len,
        origin: origin_of(setting),
    };
    if let Some(odd) = lens.iter().find(|(_, len, _)| *len != 1 && *len != count) {
        let longest = lens.iter().find(|(_, len, _)| *len == count);
        if let Some(longest) = longest {
            return Err(ConfigError::ListLengths {
                first: list_len(*longest),
                second: list_len(*odd),
            });
        }
    }

    let pins = match given(&def.spki) {
        Some(spki) => PinSet::new(list(Key::Spki, spki, values::pin)?),
        None => PinSet::default(),
    };
    let ca = match given(&def.ca_file) {
        Some(ca) => Some(
            values::ca_file(&ca.value)
                .map_err(|expected| invalid(Key::TlsCaFile, &ca.value, ca, expected))?,
        ),
        None => None,
    };

    let pick = |len: usize, i: usize| if len == 1 { 0 } else { i };
    Ok((0..count)
        .map(|i| {
            let addr = SocketAddr::new(hosts[pick(hosts.len(), i)], ports[pick(ports.len(), i)]);
            let name = match def.name {
                None => addr.to_string(),
                Some(name) if count == 1 => name.to_owned(),
                Some(name) => format!("{name}#{}", i + 1),
            };
            let auth_name = match &names[pick(names.len(), i)] {
                Some(name) => AuthName::Dns(name.clone()),
                None => AuthName::Ip(addr.ip()),
            };
            let upstream = UpstreamConfig {
                name,
                addr,
                auth_name,
                pins: pins.clone(),
                ca: ca.clone(),
            };
            let report = report(&upstream, &def);
            (upstream, report)
        })
        .collect())
}

/// Each key of one upstream as used, with where it came from.
fn report(upstream: &UpstreamConfig, def: &Definition<'_>) -> UpstreamReport {
    let line = |key, value: String, setting: Option<&Setting>| Effective {
        key,
        value,
        origin: origin_of(setting),
    };
    let hostname = match &upstream.auth_name {
        AuthName::Dns(name) => name.clone(),
        AuthName::Ip(_) => "none: verified by IP address".to_owned(),
    };
    let spki = if upstream.pins.is_empty() {
        "none: CA validation only".to_owned()
    } else {
        upstream
            .pins
            .pins()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ca = upstream.ca.as_ref().map_or_else(
        || "none: built-in web roots".to_owned(),
        |ca| ca.path.display().to_string(),
    );
    UpstreamReport {
        label: upstream.label(),
        settings: vec![
            line(
                Key::TlsHost,
                upstream.addr.ip().to_string(),
                Some(&def.host),
            ),
            line(
                Key::TlsPort,
                upstream.addr.port().to_string(),
                def.port.as_ref(),
            ),
            line(Key::TlsHostname, hostname, def.hostname.as_ref()),
            line(Key::Spki, spki, def.spki.as_ref()),
            line(Key::TlsCaFile, ca, def.ca_file.as_ref()),
        ],
    }
}

/// Parses a comma-separated value item by item. The error names the bad item,
/// or the whole value when the item is empty (`a,,b`, a trailing comma).
fn list<T>(
    key: Key,
    setting: &Setting,
    parse: impl Fn(&str) -> Result<T, Expected>,
) -> Result<Vec<T>, ConfigError> {
    setting
        .value
        .split(',')
        .map(str::trim)
        .map(|item| {
            parse(item).map_err(|expected| {
                let shown = if item.is_empty() {
                    &setting.value
                } else {
                    item
                };
                invalid(key, shown, setting, expected)
            })
        })
        .collect()
}

fn invalid(key: Key, value: &str, setting: &Setting, expected: Expected) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        origin: setting.origin.clone(),
        expected,
    }
}
