//! The effective configuration with where each value came from, as
//! `dnsproxy check` prints it: one aligned line per setting (`key  value
//! origin`), one block per upstream.

use std::fmt;
use std::path::PathBuf;

use super::error::{ConfigFileSource, Origin};
use super::keys::Key;

/// Values up to this many characters are aligned in a column.
const MAX_ALIGNED_VALUE: usize = 32;

/// One setting as used, and its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The setting.
    pub key: Key,
    /// The value as the proxy uses it (normalised: `1.5s`, `10.0.0.0/8`).
    pub value: String,
    /// The layer it came from; [`Origin::Default`] for built-in defaults.
    pub origin: Origin,
}

/// The upstream keys of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamReport {
    /// The upstream as logs name it (`quad9=9.9.9.9:853`, `1.1.1.1:853`).
    pub label: String,
    /// `tls_host`, `tls_port`, `tls_hostname`, `spki`, `tls_ca_file`.
    pub settings: Vec<Effective>,
}

/// Every effective setting of a configuration that loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The config file read, if any, and how it was chosen.
    pub file: Option<(PathBuf, ConfigFileSource)>,
    /// `[LOCAL_SERVER]` and `[PROXY]` keys, in documentation order.
    pub settings: Vec<Effective>,
    /// The upstreams in priority order.
    pub upstreams: Vec<UpstreamReport>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some((path, given_by)) => writeln!(f, "config file {} ({given_by})", path.display())?,
            None => writeln!(f, "config file none (no ./settings.ini)")?,
        }
        let indent = "  ";
        let all = self.settings.iter().map(|e| (0, e)).chain(
            self.upstreams
                .iter()
                .flat_map(|u| u.settings.iter().map(|e| (indent.len(), e))),
        );
        // Long values (allow_networks, pin lists) are not padded to: they
        // would push every origin far right.
        let (key_width, value_width) = all.fold((0, 0), |(k, v), (pad, e)| {
            let len = e.value.chars().count();
            (
                k.max(pad + e.key.name().len()),
                if len <= MAX_ALIGNED_VALUE {
                    v.max(len)
                } else {
                    v
                },
            )
        });
        let line = |f: &mut fmt::Formatter<'_>, pad: &str, e: &Effective| {
            let key_width = key_width - pad.len();
            writeln!(
                f,
                "{pad}{:key_width$}  {:value_width$}  {}",
                e.key.name(),
                e.value,
                e.origin
            )
        };
        let (local, rest): (Vec<_>, Vec<_>) = self
            .settings
            .iter()
            .partition(|e| e.key.section() == super::Section::LocalServer);
        for e in &local {
            line(f, "", e)?;
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            writeln!(f, "upstream {} {}", i + 1, upstream.label)?;
            for e in &upstream.settings {
                line(f, indent, e)?;
            }
        }
        for e in &rest {
            line(f, "", e)?;
        }
        Ok(())
    }
}
