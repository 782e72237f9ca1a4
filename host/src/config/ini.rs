//! settings.ini syntax. The `config-ini` crate reads it the way Python's
//! configparser (the seed's reader) does; this module puts the file's path on
//! every position and turns syntax errors into [`ConfigError`] lines. Which
//! sections and keys exist is checked by the caller (`layers.rs`).

use std::path::Path;

use config_ini::IniError;

use super::error::{ConfigError, FilePos};

/// A parsed file: sections in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ini {
    pub(super) sections: Vec<IniSection>,
}

/// One `[NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IniSection {
    /// The name between the brackets, trimmed.
    pub(super) name: String,
    /// Where the header is.
    pub(super) at: FilePos,
    /// Entries in file order; keys are unique.
    pub(super) entries: Vec<IniEntry>,
}

/// One `key = value` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IniEntry {
    /// The key, lower case.
    pub(super) key: String,
    /// The value, trimmed; continuation lines joined with `\n`.
    pub(super) value: String,
    /// Where the key is.
    pub(super) at: FilePos,
}

impl Ini {
    /// Parses `text`, naming `path` in positions and errors.
    pub(super) fn parse(path: &Path, text: &str) -> Result<Ini, ConfigError> {
        let pos = |line: usize| FilePos {
            path: path.to_path_buf(),
            line,
        };
        let ini = config_ini::Ini::parse(text).map_err(|e| match e {
            IniError::MissingSectionHeader { text, line } => ConfigError::MissingSectionHeader {
                line: text,
                at: pos(line),
            },
            IniError::MalformedLine { text, line } => ConfigError::MalformedLine {
                line: text,
                at: pos(line),
            },
            IniError::DuplicateSection {
                section,
                line,
                first_line,
            } => ConfigError::DuplicateSection {
                section,
                at: pos(line),
                first_line,
            },
            IniError::DuplicateKey {
                key,
                section,
                line,
                first_line,
            } => ConfigError::DuplicateKey {
                key,
                section,
                at: pos(line),
                first_line,
            },
        })?;
        let sections = ini
            .sections
            .into_iter()
            .map(|s| IniSection {
                name: s.name,
                at: pos(s.line),
                entries: s
                    .entries
                    .into_iter()
                    .map(|e| IniEntry {
                        key: e.key,
                        value: e.value,
                        at: pos(e.line),
                    })
                    .collect(),
            })
            .collect();
        Ok(Ini { sections })
    }

    /// The section with exactly this name.
    pub(super) fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections.iter().find(|s| s.name == name)
    }
}

impl IniSection {
    /// The entry for a lower-case key.
    pub(super) fn get(&self, key: &str) -> Option<&IniEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ini, ConfigError> {
        Ini::parse(Path::new("t.ini"), text)
    }

    #[test]
    fn positions_name_the_file_and_line() {
        let ini = parse("# x\n[S]\nKey = v\n").expect("valid ini");
        let section = ini.section("S").expect("section");
        assert_eq!(section.at.to_string(), "t.ini:2");
        let entry = section.get("key").expect("key");
        assert_eq!(
            (entry.value.as_str(), entry.at.to_string()),
            ("v", "t.ini:3".into())
        );
    }

    #[test]
    fn syntax_errors_become_config_errors_at_their_line() {
        assert!(matches!(
            parse("# x\nlocal_port = 53\n"),
            Err(ConfigError::MissingSectionHeader { at, .. }) if at.line == 2
        ));
        assert!(matches!(
            parse("[S]\njust words\n"),
            Err(ConfigError::MalformedLine { line, at }) if line == "just words" && at.line == 2
        ));
        assert!(matches!(
            parse("[S]\n[T]\n[S]\n"),
            Err(ConfigError::DuplicateSection { at, first_line: 1, .. }) if at.line == 3
        ));
        assert!(matches!(
            parse("[S]\nkey = 1\nKEY = 2\n"),
            Err(ConfigError::DuplicateKey { at, first_line: 2, .. }) if at.line == 3
        ));
    }
}
