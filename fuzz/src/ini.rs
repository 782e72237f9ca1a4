//! The settings.ini reader (`config-ini`).
//!
//! Input: the file's bytes (invalid UTF-8 replaced, as a lossy read would).
//!
//! Checked: an error names a line of the file (a duplicate's first line comes
//! before it); a parsed file has unique, non-empty, trimmed section names;
//! unique, non-empty, trimmed, lower-case keys without `=` or `:`; trimmed
//! values; line numbers that increase through the file and point at a line
//! that starts with that header or key; and written back out in canonical
//! form (`[name]`, `key = value`, continuation lines indented) it reads back
//! to the same sections, keys and values.

use std::collections::HashSet;

use config_ini::{Ini, IniError};

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text
        .strip_prefix('\u{feff}')
        .unwrap_or(&text)
        .lines()
        .collect();
    let ini = match Ini::parse(&text) {
        Ok(ini) => ini,
        Err(e) => {
            let (line, first) = match &e {
                IniError::MissingSectionHeader { line, .. }
                | IniError::MalformedLine { line, .. } => (*line, None),
                IniError::DuplicateSection {
                    line, first_line, ..
                }
                | IniError::DuplicateKey {
                    line, first_line, ..
                } => (*line, Some(*first_line)),
            };
            assert!((1..=lines.len()).contains(&line), "{e}");
            assert!(first.is_none_or(|first| first < line), "{e}");
            return;
        }
    };

    let mut names = HashSet::new();
    let mut last_line = 0;
    for section in &ini.sections {
        let name = section.name.as_str();
        assert!(!name.is_empty() && name == name.trim(), "section {name:?}");
        assert!(names.insert(name), "section [{name}] twice");
        assert!(section.line > last_line, "section [{name}] out of order");
        last_line = section.line;
        let header = lines[section.line - 1].trim();
        assert!(
            header.starts_with('[') && header.contains(name),
            "{header:?}"
        );
        let mut keys = HashSet::new();
        for entry in &section.entries {
            let key = entry.key.as_str();
            assert!(!key.is_empty() && key == key.trim(), "key {key:?}");
            assert_eq!(key, key.to_lowercase(), "key not lower case");
            assert!(!key.contains(['=', ':']), "key {key:?}");
            assert!(keys.insert(key), "key {key:?} twice in [{name}]");
            assert_eq!(entry.value, entry.value.trim(), "value not trimmed");
            assert!(entry.line > last_line, "key {key:?} out of order");
            last_line = entry.line;
            let line = lines[entry.line - 1].trim_start();
            let written = line
                .split_once(['=', ':'])
                .map(|(k, _)| k.trim().to_lowercase());
            assert_eq!(written.as_deref(), Some(key), "line {}", entry.line);
        }
    }

    let canonical = write(&ini);
    let again = Ini::parse(&canonical).unwrap_or_else(|e| panic!("{e} in {canonical:?}"));
    assert_eq!(strip_lines(&again), strip_lines(&ini), "{canonical:?}");
}

/// The file in canonical form: `[name]`, `key = value`, continuation lines
/// indented by four spaces.
fn write(ini: &Ini) -> String {
    let mut out = String::new();
    for section in &ini.sections {
        out.push_str(&format!("[{}]\n", section.name));
        for entry in &section.entries {
            let mut value_lines = entry.value.split('\n');
            let first = value_lines.next().unwrap_or_default();
            out.push_str(&format!("{} = {first}\n", entry.key));
            for line in value_lines {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

/// Sections, keys and values, without line numbers.
fn strip_lines(ini: &Ini) -> Vec<(String, Vec<(String, String)>)> {
    ini.sections
        .iter()
        .map(|s| {
            let entries = s.entries.iter();
            let entries = entries.map(|e| (e.key.clone(), e.value.clone())).collect();
            (s.name.clone(), entries)
        })
        .collect()
}
