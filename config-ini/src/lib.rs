//! A reader for INI files that accepts what Python's
//! `configparser.ConfigParser()` (default options) accepts:
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
//! Deliberate differences: no `%` interpolation (values are taken literally),
//! no `[DEFAULT]` section (it is an ordinary section, for the caller to judge),
//! section names are trimmed (configparser keeps the spaces of `[ NAME ]`),
//! text after a header's `]` is an error unless it is a comment, and a leading
//! UTF-8 byte order mark is skipped. Which sections and keys exist is for the
//! caller to check; this crate only knows the syntax.
//!
//! It is a crate of its own, with no dependency on the program that reads the
//! file, so that it can be fuzzed without instrumenting that program.

#![forbid(unsafe_code)]

use thiserror::Error;

/// A parsed file: sections in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ini {
    /// The sections, in file order; names are unique.
    pub sections: Vec<Section>,
}

/// One `[NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets, trimmed.
    pub name: String,
    /// 1-based line number of the header.
    pub line: usize,
    /// Entries in file order; keys are unique.
    pub entries: Vec<Entry>,
}

/// One `key = value` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, lower case.
    pub key: String,
    /// The value, trimmed; continuation lines joined with `\n`.
    pub value: String,
    /// 1-based line number of the key.
    pub line: usize,
}

/// A syntax error. Lines are 1-based; `text` is the offending line, trimmed.
///
/// Not `#[non_exhaustive]` on purpose: callers turn each variant into their
/// own message, and a new variant should fail their build rather than fall
/// into a catch-all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IniError {
    /// A `key = value` line before the first `[SECTION]` header.
    #[error("line {line}: {text:?} is outside any section")]
    MissingSectionHeader {
        /// The line, trimmed.
        text: String,
        /// Its number.
        line: usize,
    },
    /// A line that is neither a header, a `key = value` pair nor a comment.
    #[error("line {line}: malformed line {text:?}")]
    MalformedLine {
        /// The line, trimmed.
        text: String,
        /// Its number.
        line: usize,
    },
    /// A section header that appears twice (configparser's strict mode).
    #[error("line {line}: duplicate section [{section}], first at line {first_line}")]
    DuplicateSection {
        /// The section name.
        section: String,
        /// Line of the second header.
        line: usize,
        /// Line of the first header.
        first_line: usize,
    },
    /// A key set twice in one section (configparser's strict mode).
    #[error("line {line}: duplicate key {key:?} in [{section}], first at line {first_line}")]
    DuplicateKey {
        /// The key, lower case.
        key: String,
        /// The section it is in.
        section: String,
        /// Line of the second occurrence.
        line: usize,
        /// Line of the first occurrence.
        first_line: usize,
    },
}

impl Ini {
    /// Parses the text of a file.
    pub fn parse(text: &str) -> Result<Ini, IniError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut sections: Vec<Section> = Vec::new();
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
            let malformed = || IniError::MalformedLine {
                text: line.to_owned(),
                line: number,
            };
            if let Some(name) = header(line) {
                let name = name.map_err(|()| malformed())?;
                if let Some(first) = sections.iter().find(|s| s.name == name) {
                    return Err(IniError::DuplicateSection {
                        section: name.to_owned(),
                        line: number,
                        first_line: first.line,
                    });
                }
                sections.push(Section {
                    name: name.to_owned(),
                    line: number,
                    entries: Vec::new(),
                });
                continue;
            }
            let Some(section) = sections.last_mut() else {
                return Err(IniError::MissingSectionHeader {
                    text: line.to_owned(),
                    line: number,
                });
            };
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(malformed());
            };
            let key = key.trim().to_lowercase();
            if key.is_empty() {
                return Err(malformed());
            }
            if let Some(first) = section.entries.iter().find(|e| e.key == key) {
                return Err(IniError::DuplicateKey {
                    key,
                    section: section.name.clone(),
                    line: number,
                    first_line: first.line,
                });
            }
            section.entries.push(Entry {
                key,
                value: value.trim().to_owned(),
                line: number,
            });
            key_indent = Some(indent);
        }
        for entry in sections.iter_mut().flat_map(|s| s.entries.iter_mut()) {
            entry.value = entry.value.trim().to_owned();
        }
        Ok(Ini { sections })
    }

    /// The section with exactly this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

impl Section {
    /// The entry for a lower-case key.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// The entry whose value continuation lines extend, if a key line is open.
fn current_entry(sections: &mut [Section], key_indent: Option<usize>) -> Option<&mut Entry> {
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

    fn entries(ini: &Ini) -> Vec<(String, String, String, usize)> {
        ini.sections
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .map(|e| (s.name.clone(), e.key.clone(), e.value.clone(), e.line))
            })
            .collect()
    }

    #[test]
    fn configparser_syntax_equals_colon_comments_and_case_insensitive_keys() {
        let ini = Ini::parse(
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
        assert_eq!(ini.section("TLS_SERVER").map(|s| s.line), Some(7));
        assert_eq!(
            ini.section("LOCAL_SERVER")
                .and_then(|s| s.get("local_port"))
                .map(|e| e.value.as_str()),
            Some("53")
        );
        assert!(ini.section("tls_server").is_none());
    }

    #[test]
    fn indented_lines_continue_a_value_and_comments_inside_are_skipped() {
        let ini = Ini::parse("[S]\nnets = 10.0.0.0/8,\n  # note\n    192.168.0.0/16\n\nnext = 1\n")
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
        let ini = Ini::parse("[TLS_SERVER quad9] # second\n").expect("valid ini");
        assert_eq!(ini.sections[0].name, "TLS_SERVER quad9");
        assert!(matches!(
            Ini::parse("[A] junk\n"),
            Err(IniError::MalformedLine { line: 1, .. })
        ));
        assert!(matches!(
            Ini::parse("[]\n"),
            Err(IniError::MalformedLine { .. })
        ));
        assert!(matches!(
            Ini::parse("[A\n"),
            Err(IniError::MalformedLine { .. })
        ));
    }

    #[test]
    fn key_outside_a_section_is_an_error() {
        assert_eq!(
            Ini::parse("# x\nlocal_port = 53\n"),
            Err(IniError::MissingSectionHeader {
                text: "local_port = 53".into(),
                line: 2
            })
        );
    }

    #[test]
    fn line_without_delimiter_or_key_is_malformed() {
        assert_eq!(
            Ini::parse("[S]\njust words\n"),
            Err(IniError::MalformedLine {
                text: "just words".into(),
                line: 2
            })
        );
        assert!(matches!(
            Ini::parse("[S]\n= value\n"),
            Err(IniError::MalformedLine { .. })
        ));
    }

    #[test]
    fn duplicate_sections_and_keys_are_errors_like_configparser_strict() {
        assert!(matches!(
            Ini::parse("[S]\n[T]\n[S]\n"),
            Err(IniError::DuplicateSection {
                line: 3,
                first_line: 1,
                ..
            })
        ));
        assert!(matches!(
            Ini::parse("[S]\nkey = 1\nKEY = 2\n"),
            Err(IniError::DuplicateKey {
                line: 3,
                first_line: 2,
                ..
            })
        ));
    }
}
