//! A reader for settings.ini that accepts what Python's `configparser.ConfigParser()`
//! (the seed's reader, default options) accepts:
//!
//! - `[SECTION]` headers (names are case-sensitive, as in configparser);
//! - `key = value` or `key: value`, split at the first `=` or `:`; keys are
//!   case-insensitive (stored lower case); key and value are trimmed; values may
//!   be empty;
//! - full-line comments starting with `#` or `;` (no inline comments, as in
//!   configparser's defaults), blank lines;
//! - continuation lines: a line indented deeper than its key continues the value
//!   (joined with `\n`);
//! - strict mode: a duplicate section or a duplicate key in a section is an error.
//!
//! Deliberate differences: no `%` interpolation (values are taken literally; the
//! seed's files have no `%`), no `[DEFAULT]` section (it is reported as unknown),
//! text after a header's `]` is an error unless it is a comment, and a leading
//! UTF-8 byte order mark is skipped. Which sections and keys exist is checked by
//! the caller; this module only knows the syntax.

use std::path::Path;

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
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let pos = |line: usize| FilePos {
            path: path.to_path_buf(),
            line,
        };
        let mut sections: Vec<IniSection> = Vec::new();
        // Indentation of the last key line; deeper lines continue its value.
        let mut key_indent: Option<usize> = None;
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.is_empty() {
                // configparser keeps blank lines inside a value (trimmed at the end).
                if let Some(entry) = current_entry(&mut sections, key_indent) {
                    entry.value.push('\n');
                }
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            if let (Some(entry), Some(level)) =
                (current_entry(&mut sections, key_indent), key_indent)
                && indent > level
            {
                entry.value.push('\n');
                entry.value.push_str(line);
                continue;
            }
            key_indent = None;
            if let Some(name) = header(line) {
                let name = name.map_err(|()| ConfigError::MalformedLine {
                    line: line.to_owned(),
                    at: pos(number),
                })?;
                if let Some(first) = sections.iter().find(|s| s.name == name) {
                    return Err(ConfigError::DuplicateSection {
                        section: name.to_owned(),
                        at: pos(number),
                        first_line: first.at.line,
                    });
                }
                sections.push(IniSection {
                    name: name.to_owned(),
                    at: pos(number),
                    entries: Vec::new(),
                });
                continue;
            }
            let Some(section) = sections.last_mut() else {
                return Err(ConfigError::MissingSectionHeader {
                    line: line.to_owned(),
                    at: pos(number),
                });
            };
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(ConfigError::MalformedLine {
                    line: line.to_owned(),
                    at: pos(number),
                });
            };
            let key = key.trim().to_lowercase();
            if key.is_empty() {
                return Err(ConfigError::MalformedLine {
                    line: line.to_owned(),
                    at: pos(number),
                });
            }
            if let Some(first) = section.entries.iter().find(|e| e.key == key) {
                return Err(ConfigError::DuplicateKey {
                    key,
                    section: section.name.clone(),
                    at: pos(number),
                    first_line: first.at.line,
                });
            }
            section.entries.push(IniEntry {
                key,
                value: value.trim().to_owned(),
                at: pos(number),
            });
            key_indent = Some(indent);
        }
        for entry in sections.iter_mut().flat_map(|s| s.entries.iter_mut()) {
            entry.value = entry.value.trim().to_owned();
        }
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

/// The entry whose value continuation lines extend, if a key line is open.
fn current_entry(sections: &mut [IniSection], key_indent: Option<usize>) -> Option<&mut IniEntry> {
    key_indent?;
    sections.last_mut()?.entries.last_mut()
}

/// `Some(Ok(name))` for a header line, `Some(Err(()))` for a broken one that
/// starts with `[`, `None` for other lines.
fn header(line: &str) -> Option<Result<&str, ()>> {
    let rest = line.strip_prefix('[')?;
    let Some((name, after)) = rest.rsplit_once(']') else {
        return Some(Err(()));
    };
    let after = after.trim_start();
    let name = name.trim();
    if name.is_empty() || !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
        return Some(Err(()));
    }
    Some(Ok(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ini, ConfigError> {
        Ini::parse(Path::new("t.ini"), text)
    }

    fn entries(ini: &Ini) -> Vec<(String, String, String, usize)> {
        ini.sections
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .map(|e| (s.name.clone(), e.key.clone(), e.value.clone(), e.at.line))
            })
            .collect()
    }

    #[test]
    fn configparser_syntax_equals_colon_comments_and_case_insensitive_keys() {
        let ini = parse(
            "\u{feff}# comment\n; other comment\n\n[LOCAL_SERVER]\n  Local_Host =  \n\
             local_port: 53\n[TLS_SERVER]\ntls_host = 2606:4700::1111\nSPKI=a=b\r\n",
        )
        .expect("valid ini");
        assert_eq!(
            entries(&ini),
            [
                ("LOCAL_SERVER".into(), "local_host".into(), "".into(), 5),
                ("LOCAL_SERVER".into(), "local_port".into(), "53".into(), 6),
                (
                    "TLS_SERVER".into(),
                    "tls_host".into(),
                    "2606:4700::1111".into(),
                    8
                ),
                ("TLS_SERVER".into(), "spki".into(), "a=b".into(), 9),
            ]
        );
    }

    #[test]
    fn indented_lines_continue_a_value_and_comments_inside_are_skipped() {
        let ini = parse("[S]\nnets = 10.0.0.0/8,\n  # note\n    192.168.0.0/16\n\nnext = 1\n")
            .expect("valid ini");
        assert_eq!(
            entries(&ini),
            [
                (
                    "S".into(),
                    "nets".into(),
                    "10.0.0.0/8,\n192.168.0.0/16".into(),
                    2
                ),
                ("S".into(), "next".into(), "1".into(), 6),
            ]
        );
    }

    #[test]
    fn header_with_trailing_comment_is_accepted_and_junk_is_not() {
        let ini = parse("[TLS_SERVER quad9] # second\n").expect("valid ini");
        assert_eq!(ini.sections[0].name, "TLS_SERVER quad9");
        assert!(matches!(
            parse("[A] junk\n"),
            Err(ConfigError::MalformedLine { at, .. }) if at.line == 1
        ));
        assert!(matches!(
            parse("[]\n"),
            Err(ConfigError::MalformedLine { .. })
        ));
        assert!(matches!(
            parse("[A\n"),
            Err(ConfigError::MalformedLine { .. })
        ));
    }

    #[test]
    fn key_outside_a_section_is_an_error() {
        assert!(matches!(
            parse("# x\nlocal_port = 53\n"),
            Err(ConfigError::MissingSectionHeader { at, .. }) if at.line == 2
        ));
    }

    #[test]
    fn line_without_delimiter_or_key_is_malformed() {
        assert!(matches!(
            parse("[S]\njust words\n"),
            Err(ConfigError::MalformedLine { at, .. }) if at.line == 2
        ));
        assert!(matches!(
            parse("[S]\n= value\n"),
            Err(ConfigError::MalformedLine { .. })
        ));
    }

    #[test]
    fn duplicate_sections_and_keys_are_errors_like_configparser_strict() {
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
