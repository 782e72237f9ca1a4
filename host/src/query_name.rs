//! A DNS name typed on the command line (`health --name`): checked, and
//! turned into wire format once.

use std::fmt;

/// A query name given with `--name`: as typed, and in wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryName {
    text: String,
    wire: Vec<u8>,
}

impl QueryName {
    /// The name in wire format (RFC 1035 §3.1).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The root, `.`.
    pub fn root() -> Self {
        Self {
            text: ".".to_owned(),
            wire: vec![0],
        }
    }
}

impl fmt::Display for QueryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `--name`: a DNS name of ASCII labels (`.`, `example.com`,
/// `example.com.`); labels of 1 to 63 octets, 255 octets in all (RFC 1035
/// §2.3.4).
pub fn parse_name(text: &str) -> Result<QueryName, String> {
    let bad = |why: &str| Err(format!("{why} (expected a DNS name like . or example.com)"));
    if text == "." {
        return Ok(QueryName::root());
    }
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    let mut wire = Vec::with_capacity(trimmed.len() + 2);
    for label in trimmed.split('.') {
        if label.is_empty() {
            return bad("empty label");
        }
        if !label.is_ascii() || label.bytes().any(|b| b.is_ascii_whitespace() || b == b'\\') {
            return bad("not a plain ASCII name");
        }
        match u8::try_from(label.len()) {
            Ok(len @ 1..=63) => wire.push(len),
            _ => return bad("label longer than 63 octets"),
        }
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    if wire.len() > 255 {
        return bad("name longer than 255 octets");
    }
    Ok(QueryName {
        text: text.to_owned(),
        wire,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_in_wire_format() {
        assert_eq!(parse_name(".").unwrap().wire, vec![0]);
        let wire = b"\x07example\x03com\x00".to_vec();
        assert_eq!(parse_name("example.com").unwrap().wire, wire);
        assert_eq!(parse_name("example.com.").unwrap().wire, wire);
        assert_eq!(
            parse_name("example.com.").unwrap().to_string(),
            "example.com."
        );
    }

    #[test]
    fn rfc1035_bad_names_are_rejected() {
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 4].join(".");
        for bad in [
            "",
            "..",
            "a..b",
            ".a",
            "a b",
            "é.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        assert!(parse_name(&"a".repeat(63)).is_ok());
        assert!(parse_name(&["a".repeat(63).as_str(); 3].join(".")).is_ok());
    }
}
