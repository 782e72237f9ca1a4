//! The upstream list: which DoT resolvers, in priority order.
//!
//! Rules (DESIGN.md "Config contract"):
//!
//! - `tls_host`, `tls_port` and `tls_hostname` may each be a comma-separated list;
//!   lists are aligned by position, a single value applies to every upstream, and
//!   any other length mismatch is an error. `spki` is one pin set and
//!   `tls_ca_file` one bundle for all upstreams of the definition.
//! - From the file: the plain `[TLS_SERVER]` section first (skipped if it has no
//!   keys at all), then every `[TLS_SERVER <name>]` in file order. A named
//!   section inherits nothing from `[TLS_SERVER]`: it needs its own `tls_host`
//!   and `tls_hostname`; `tls_port` defaults to 853, `spki` to no pins and
//!   `tls_ca_file` to the built-in roots.
//! - If the environment or the flags set any of `TLS_HOST`, `TLS_PORT`,
//!   `TLS_HOSTNAME`, `SPKI` or `TLS_CA_FILE`, they define the one upstream list
//!   and every upstream from the file is dropped, named sections included. Each
//!   of those keys that env/flags leave unset is taken from the plain
//!   `[TLS_SERVER]` section of the file (per key, as the seed did), else its
//!   default. So `-e TLS_HOST=9.9.9.9,149.112.112.112 -e TLS_HOSTNAME=dns.quad9.net`
//!   uses the file's `tls_port`, `spki` and `tls_ca_file`, and `-e SPKI=` (set
//!   but empty) keeps the file's plain hosts but turns pinning off.
//!
//! Only values that end up used are validated: a file value replaced by env or
//! flags, or a named section dropped by them, is not read.

use std::net::SocketAddr;

use dnsproxy_core::core::pins::PinSet;

use super::UpstreamConfig;
use super::defaults;
use super::error::{ConfigError, Expected, ListLen, MissingScope, Origin};
use super::keys::Key;
use super::layers::{self, Layers, Setting};
use super::values;

/// The upstream keys of one definition (a section, or the env/flag list).
struct Definition<'a> {
    /// `Some(name)` for `[TLS_SERVER <name>]`.
    name: Option<&'a str>,
    host: Option<Setting>,
    port: Option<Setting>,
    hostname: Option<Setting>,
    spki: Option<Setting>,
    ca_file: Option<Setting>,
    /// Named in the error when a required key is missing.
    scope: MissingScope,
}

/// All upstreams, in priority order; never empty.
pub(super) fn upstreams(layers: &Layers<'_>) -> Result<Vec<UpstreamConfig>, ConfigError> {
    let mut all = Vec::new();
    for definition in definitions(layers) {
        all.extend(build(definition)?);
    }
    if all.is_empty() {
        return Err(ConfigError::NoUpstream);
    }
    Ok(all)
}

/// The definitions that apply: the env/flag list, or the file's sections.
fn definitions<'a>(layers: &Layers<'a>) -> Vec<Definition<'a>> {
    let trigger = Key::UPSTREAM
        .into_iter()
        .find_map(|key| layers.above_file(key).map(|s| (key, s.origin)));
    if let Some((by, origin)) = trigger {
        let get = |key| layers.get(key);
        return vec![Definition {
            name: None,
            host: get(Key::TlsHost),
            port: get(Key::TlsPort),
            hostname: get(Key::TlsHostname),
            spki: get(Key::Spki),
            ca_file: get(Key::TlsCaFile),
            scope: MissingScope::Override { by, origin },
        }];
    }
    let Some(file) = layers.file else {
        return Vec::new();
    };
    file.tls_sections()
        .filter(|(name, section)| name.is_some() || !section.entries.is_empty())
        .map(|(name, section)| {
            let get = |key| layers::entry(section, key);
            Definition {
                name,
                host: get(Key::TlsHost),
                port: get(Key::TlsPort),
                hostname: get(Key::TlsHostname),
                spki: get(Key::Spki),
                ca_file: get(Key::TlsCaFile),
                scope: MissingScope::Section {
                    section: section.name.clone(),
                    at: section.at.clone(),
                },
            }
        })
        .collect()
}

/// The upstreams of one definition.
fn build(def: Definition<'_>) -> Result<Vec<UpstreamConfig>, ConfigError> {
    let missing = |key| ConfigError::Missing {
        key,
        scope: def.scope.clone(),
    };
    let host = def.host.as_ref().ok_or_else(|| missing(Key::TlsHost))?;
    let hosts = list(Key::TlsHost, host, values::tls_host)?;
    let ports = match def.port.as_ref().filter(|s| !s.value.is_empty()) {
        Some(port) => list(Key::TlsPort, port, values::port)?,
        None => vec![defaults::TLS_PORT],
    };
    let hostname = def
        .hostname
        .as_ref()
        .ok_or_else(|| missing(Key::TlsHostname))?;
    let names = list(Key::TlsHostname, hostname, values::dns_name)?;

    let lens = [
        (Key::TlsHost, hosts.len(), Some(host)),
        (Key::TlsPort, ports.len(), def.port.as_ref()),
        (Key::TlsHostname, names.len(), Some(hostname)),
    ];
    let count = lens.iter().map(|(_, len, _)| *len).max().unwrap_or(1);
    let list_len = |(key, len, setting): (Key, usize, Option<&Setting>)| ListLen {
        key,
        len,
        origin: setting.map_or(Origin::Default, |s| s.origin.clone()),
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

    let pins = match def.spki.as_ref().filter(|s| !s.value.is_empty()) {
        Some(spki) => PinSet::new(list(Key::Spki, spki, values::pin)?),
        None => PinSet::default(),
    };
    let ca = match def.ca_file.as_ref().filter(|s| !s.value.is_empty()) {
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
            UpstreamConfig {
                name,
                addr,
                auth_name: names[pick(names.len(), i)].clone(),
                pins: pins.clone(),
                ca: ca.clone(),
            }
        })
        .collect())
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
