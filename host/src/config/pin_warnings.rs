//! Pin sets that will break at the next key rotation, as far as the
//! configuration alone tells (RFC 7469 §4.3: keep a backup pin). Checked at
//! start-up and on reload; what needs the live chain (every pin matching it,
//! only the leaf pinned) is checked after each handshake and by
//! `dnsproxy spki --config`.

use std::collections::HashSet;
use std::fmt;

use super::ProxyConfig;

/// A pin set without a backup: the one pinned key rotates, and the upstream
/// is refused until the configuration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinWarning {
    /// The upstream's name, as in the logs.
    pub upstream: String,
    /// What is wrong with its pin set.
    pub kind: PinWarningKind,
}

/// What a pin set lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinWarningKind {
    /// A single distinct pin: nothing to fall back on when that key
    /// changes.
    NoBackup,
}

impl PinWarningKind {
    /// The label the metric and the log use (`no_backup`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoBackup => "no_backup",
        }
    }
}

impl fmt::Display for PinWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PinWarningKind::NoBackup => write!(
                f,
                "upstream {}: its pin set has one pin and no backup; when that key is \
                 rotated the upstream is refused until the pins change. Add the next \
                 key's pin or pin an intermediate (RFC 7469 4.3; `dnsproxy spki --config` \
                 shows which pins match the live chain)",
                self.upstream
            ),
        }
    }
}

/// The pin warnings of every upstream, in upstream order. An upstream
/// without pins (CA validation only) gets none.
pub fn pin_warnings(config: &ProxyConfig) -> Vec<PinWarning> {
    config
        .upstreams
        .iter()
        .filter(|u| u.pins.pins().iter().collect::<HashSet<_>>().len() == 1)
        .map(|u| PinWarning {
            upstream: u.name.clone(),
            kind: PinWarningKind::NoBackup,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use dnsproxy_core::core::pins::{Pin, PinSet};

    use super::*;
    use crate::config::{AuthName, UpstreamConfig};

    fn upstream(name: &str, pins: &[&[u8]]) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            addr: "192.0.2.1:853".parse().expect("addr"),
            auth_name: AuthName::Dns("dns.example".into()),
            pins: PinSet::new(pins.iter().map(|p| Pin::of_spki(p)).collect()),
            ca: None,
        }
    }

    fn config(upstreams: Vec<UpstreamConfig>) -> ProxyConfig {
        let cli = crate::cli::RunArgs {
            tls_host: Some("192.0.2.1".into()),
            tls_hostname: Some("dns.example".into()),
            config: Some("/dev/null".into()),
            ..Default::default()
        };
        let mut config = crate::config::load(&cli, &|_| None).expect("a valid config");
        config.upstreams = upstreams;
        config
    }

    #[test]
    fn rfc7469_4_3_a_single_pin_has_no_backup() {
        let warnings = pin_warnings(&config(vec![
            upstream("one", &[b"a"]),
            upstream("same-twice", &[b"a", b"a"]),
            upstream("two", &[b"a", b"b"]),
            upstream("ca-only", &[]),
        ]));
        let named: Vec<_> = warnings
            .iter()
            .map(|w| (w.upstream.as_str(), w.kind.as_str()))
            .collect();
        assert_eq!(named, [("one", "no_backup"), ("same-twice", "no_backup")]);
        assert!(warnings[0].to_string().starts_with("upstream one: "));
    }
}
