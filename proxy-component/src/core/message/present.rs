//! The question and the RCODE as people read them (the query log): names in
//! presentation format (RFC 1035 §5.1, RFC 4343 §2.1), types by mnemonic or
//! as `TYPEnnn` (RFC 3597 §5), RCODEs by mnemonic (RFC 6895 §2.3). Read from
//! the layout [`Query::parse`] found; nothing is walked again.

use std::fmt;

use super::HEADER_LEN;
use super::query::Query;

/// The QNAME of a query, displayed in presentation format with the trailing
/// dot (`example.org.`, `.` for the root).
#[derive(Clone, Copy, Debug)]
pub struct QName<'a>(&'a [u8]);

/// A QTYPE (RFC 1035 §3.2.2), displayed by mnemonic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QType(pub u16);

/// A 4-bit header RCODE (RFC 1035 §4.1.1), displayed by mnemonic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RcodeName(pub u8);

impl Query {
    /// The question's name. Its labels hold no compression pointer
    /// (nothing precedes the question) and were checked by the walk.
    pub fn qname(&self) -> QName<'_> {
        // The question ends with QTYPE and QCLASS (4 bytes) after the name.
        let end = self.layout.question_end.saturating_sub(4).max(HEADER_LEN);
        QName(&self.bytes[HEADER_LEN..end])
    }

    /// The question's type.
    pub fn qtype(&self) -> QType {
        let at = self.layout.question_end.saturating_sub(4);
        QType(super::read_u16(&self.bytes, at).unwrap_or(0))
    }
}

impl fmt::Display for QName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut wrote = false;
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            if len == 0 || len > tail.len() {
                break;
            }
            let (label, tail) = tail.split_at(len);
            for &b in label {
                match b {
                    b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                        write!(f, "\\{}", char::from(b))?;
                    }
                    0x21..=0x7e => write!(f, "{}", char::from(b))?,
                    _ => write!(f, "\\{b:03}")?,
                }
            }
            f.write_str(".")?;
            wrote = true;
            rest = tail;
        }
        if !wrote {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "A",
            2 => "NS",
            5 => "CNAME",
            6 => "SOA",
            12 => "PTR",
            13 => "HINFO",
            15 => "MX",
            16 => "TXT",
            28 => "AAAA",
            33 => "SRV",
            35 => "NAPTR",
            43 => "DS",
            46 => "RRSIG",
            47 => "NSEC",
            48 => "DNSKEY",
            50 => "NSEC3",
            52 => "TLSA",
            64 => "SVCB",
            65 => "HTTPS",
            252 => "AXFR",
            255 => "ANY",
            257 => "CAA",
            other => return write!(f, "TYPE{other}"),
        };
        f.write_str(name)
    }
}

impl fmt::Display for RcodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            other => return write!(f, "RCODE{other}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (wire labels) of type `qtype`.
    fn query(labels: &[&[u8]], qtype: u16) -> Query {
        let mut msg = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in labels {
            msg.push(u8::try_from(label.len()).expect("short label"));
            msg.extend_from_slice(label);
        }
        msg.push(0);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&1u16.to_be_bytes());
        Query::parse(&msg).expect("a valid query")
    }

    #[test]
    fn rfc1035_5_1_names_in_presentation_format() {
        let q = query(&[b"www", b"example", b"org"], 28);
        assert_eq!(q.qname().to_string(), "www.example.org.");
        assert_eq!(q.qtype().to_string(), "AAAA");
        assert_eq!(query(&[], 2).qname().to_string(), ".");
    }

    #[test]
    fn rfc4343_2_1_dots_backslashes_and_unprintables_are_escaped() {
        let q = query(&[b"a.b\\c", b"\x00 \xff", b"ok"], 1);
        assert_eq!(q.qname().to_string(), "a\\.b\\\\c.\\000\\032\\255.ok.");
    }

    #[test]
    fn rfc3597_5_unknown_types_and_rcodes_by_number() {
        assert_eq!(QType(65).to_string(), "HTTPS");
        assert_eq!(QType(65280).to_string(), "TYPE65280");
        assert_eq!(RcodeName(3).to_string(), "NXDOMAIN");
        assert_eq!(RcodeName(15).to_string(), "RCODE15");
    }
}
