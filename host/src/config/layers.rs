//! Where a setting's value comes from: built-in default, then settings.ini,
//! then the environment, then the flags; later wins.

use std::io;
use std::path::Path;

use super::error::{ConfigError, ConfigFileSource, Origin};
use super::ini::{Ini, IniSection};
use super::keys::{Key, Section};

/// A value as given, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setting {
    /// The value, trimmed.
    pub(super) value: String,
    /// Its layer (file position, env variable or flag).
    pub(super) origin: Origin,
}

/// What a `[...]` header of the file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SectionRole<'a> {
    /// `[LOCAL_SERVER]`.
    LocalServer,
    /// `[TLS_SERVER]` (`None`) or `[TLS_SERVER <name>]`.
    TlsServer(Option<&'a str>),
    /// `[PROXY]`.
    Proxy,
}

impl SectionRole<'_> {
    fn kind(self) -> Section {
        match self {
            Self::LocalServer => Section::LocalServer,
            Self::TlsServer(_) => Section::TlsServer,
            Self::Proxy => Section::Proxy,
        }
    }
}

/// The config file after its sections and keys were checked.
#[derive(Debug)]
pub(super) struct ConfigFile {
    ini: Ini,
}

impl ConfigFile {
    /// Reads `--config PATH` (which must exist) or, without it, `default` if
    /// there is a file there.
    pub(super) fn load(
        explicit: Option<&Path>,
        default: &Path,
    ) -> Result<Option<ConfigFile>, ConfigError> {
        let (path, given_by) = match explicit {
            Some(path) => (path, ConfigFileSource::Flag),
            None => (default, ConfigFileSource::Default),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound && given_by == ConfigFileSource::Default =>
            {
                return Ok(None);
            }
            Err(io) => {
                return Err(ConfigError::ConfigFile {
                    path: path.to_path_buf(),
                    given_by,
                    io,
                });
            }
        };
        Self::parse(path, &text).map(Some)
    }

    /// Parses file contents and rejects unknown sections and keys.
    pub(super) fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let ini = Ini::parse(path, text)?;
        for section in &ini.sections {
            let role = role(section)?;
            for entry in &section.entries {
                let known = Key::from_name(&entry.key).is_some_and(|k| k.section() == role.kind());
                if !known {
                    return Err(ConfigError::UnknownKey {
                        key: entry.key.clone(),
                        section: section.name.clone(),
                        kind: role.kind(),
                        at: entry.at.clone(),
                    });
                }
            }
        }
        Ok(ConfigFile { ini })
    }

    /// The value of `key` in the section with exactly this name.
    pub(super) fn get(&self, section: &str, key: Key) -> Option<Setting> {
        self.ini.section(section).and_then(|s| entry(s, key))
    }

    /// The `[TLS_SERVER]` and `[TLS_SERVER <name>]` sections, in file order.
    pub(super) fn tls_sections(&self) -> impl Iterator<Item = (Option<&str>, &IniSection)> {
        self.ini.sections.iter().filter_map(|s| match role(s) {
            Ok(SectionRole::TlsServer(name)) => Some((name, s)),
            _ => None,
        })
    }
}

/// The value of `key` in one section.
pub(super) fn entry(section: &IniSection, key: Key) -> Option<Setting> {
    section.get(key.name()).map(|e| Setting {
        value: e.value.clone(),
        origin: Origin::File(e.at.clone()),
    })
}

/// What a section header means, or why it is not accepted.
fn role(section: &IniSection) -> Result<SectionRole<'_>, ConfigError> {
    let name = section.name.as_str();
    match name {
        "LOCAL_SERVER" => return Ok(SectionRole::LocalServer),
        "TLS_SERVER" => return Ok(SectionRole::TlsServer(None)),
        "PROXY" => return Ok(SectionRole::Proxy),
        _ => {}
    }
    let Some(label) = name
        .strip_prefix("TLS_SERVER")
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .map(str::trim)
    else {
        return Err(ConfigError::UnknownSection {
            section: name.to_owned(),
            at: section.at.clone(),
        });
    };
    let valid = label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if label.is_empty() || !valid {
        return Err(ConfigError::InvalidSectionName {
            section: name.to_owned(),
            at: section.at.clone(),
        });
    }
    Ok(SectionRole::TlsServer(Some(label)))
}

/// All layers above the defaults.
pub(super) struct Layers<'a> {
    /// The checked config file, if any.
    pub(super) file: Option<&'a ConfigFile>,
    /// The environment (injected, so tests can fake it).
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// The command-line flags.
    pub(super) flags: &'a dyn super::Flags,
}

impl Layers<'_> {
    /// The winning value of `key`: flag, else env, else its section of the file.
    /// For `[LOCAL_SERVER]` and `[PROXY]` keys; `upstreams.rs` assembles the
    /// upstream keys by its own rules.
    pub(super) fn get(&self, key: Key) -> Option<Setting> {
        self.above_file(key)
            .or_else(|| self.file?.get(key.section().header(), key))
    }

    /// The value of `key` from the flags or the environment only.
    pub(super) fn above_file(&self, key: Key) -> Option<Setting> {
        self.flag(key).or_else(|| {
            (self.env)(key.env()).map(|value| Setting {
                value: value.trim().to_owned(),
                origin: Origin::Env(key),
            })
        })
    }

    /// The value of `key` from the flags only.
    pub(super) fn flag(&self, key: Key) -> Option<Setting> {
        self.flags.value(key).map(|value| Setting {
            value: value.trim().to_owned(),
            origin: Origin::Flag(key),
        })
    }
}
