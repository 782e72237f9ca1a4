//! Lazy DNS message handling over borrowed bytes (RFC 1035 §4.1).
//!
//! A message is walked once, when it arrives: a client query by
//! [`Query::parse`] (at admission), an upstream answer by [`Response::parse`].
//! Each view owns its bytes and the layout that walk found (the question,
//! the OPT RR, where the records end), and everything done with the message
//! afterwards is a method that reads that layout: the client's UDP limit,
//! the padded copy sent upstream and the reply the proxy makes up itself on
//! [`Query`]; the match to the question, the ID, making the answer fit for a
//! plain-DNS client and UDP truncation on [`Response`]. An edit updates the
//! layout rather than walking the message again. A message that did not parse
//! still gets its FORMERR or NOTIMP reply from the raw bytes
//! ([`synthesize_response`]).
//!
//! The proxy reads the header and only what it needs (names, to find where
//! records end, and the OPT record); it never builds a message tree.
//! Everything it does not own in a response (answers, DNSSEC records, unknown
//! types, AD/CD/DO bits) passes through byte for byte: the only rewrites are
//! the ID, UDP truncation, query padding with an edns-tcp-keepalive option,
//! and the removal of an OPT the proxy added itself or of the upstream's
//! padding and keepalive options. An answer served from the cache
//! ([`Response::to_cache`], [`Cached::answer`]) is the one exception: its
//! TTLs age, and its header, QNAME spelling and OPT are the asking client's.
//!
//! The walker is hand-written, not a maintained DNS crate, on purpose: it is
//! lazy and works over the borrowed bytes, keeps records of unknown types
//! exactly as sent (RFC 3597), and needs no allocation per record, where a
//! crate's message tree would decode and re-encode every record of every
//! answer. hickory-proto, an independent implementation, is what the tests,
//! property tests and fuzz checks compare it against.

mod cached;
mod name;
mod padding;
mod present;
mod query;
mod response;
#[cfg(test)]
pub(crate) mod test_support;
mod truncate;
mod walk;

use std::fmt;

use thiserror::Error;

pub use cached::{CacheKey, Cached, CachedKind, TtlClamp};
pub use padding::{Padding, QUERY_PADDING_BLOCK};
pub use present::{QName, QType, RcodeName};
pub use query::{Query, QueryError, Rcode, synthesize_response};
pub use response::Response;
pub use walk::{Keepalive, Opt};

/// Size of the fixed header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;

/// The UDP payload size the proxy advertises in the OPT RRs it writes
/// (RFC 6891 §6.2.5): the DNS Flag Day 2020 value, which avoids IP
/// fragmentation on common paths.
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

/// Header flag bits of the third octet (RFC 1035 §4.1.1): QR.
pub const QR: u8 = 0x80;
const OPCODE_MASK: u8 = 0x78;
const TC: u8 = 0x02;
/// Header flag bits of the third octet (RFC 1035 §4.1.1): RD.
pub const RD: u8 = 0x01;
/// Header flag bits of the fourth octet (RFC 1035 §4.1.1).
const RA: u8 = 0x80;
/// The RCODE bits of the fourth octet (RFC 1035 §4.1.1).
pub const RCODE_MASK: u8 = 0x0F;

/// Offsets of QDCOUNT, ANCOUNT, NSCOUNT and ARCOUNT (RFC 1035 §4.1.1).
const QDCOUNT: usize = 4;
const ANCOUNT: usize = 6;
const NSCOUNT: usize = 8;
const ARCOUNT: usize = 10;

/// The ID of a message (RFC 1035 §4.1.1), if it has two bytes.
pub fn id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// Overwrites the ID of a message (RFC 1035 §4.1.1).
///
/// Precondition: `msg.len() >= 2`; shorter input panics in debug builds and is
/// left alone in release builds.
pub fn set_id(msg: &mut [u8], id: u16) {
    debug_assert!(msg.len() >= 2, "set_id on a {}-byte message", msg.len());
    if let Some(bytes) = msg.get_mut(..2) {
        bytes.copy_from_slice(&id.to_be_bytes());
    }
}

/// The 4-bit header RCODE (RFC 1035 §4.1.1), if there is a header. The upper
/// bits of an extended RCODE live in the OPT RR (RFC 6891 §6.1.3) and are not
/// included.
pub fn rcode(msg: &[u8]) -> Option<u8> {
    header(msg).map(|h| h[3] & RCODE_MASK)
}

/// `a == b`, eight bytes at a time. The component's `memcmp` (wasi-libc's)
/// compares byte by byte: 470 instructions for a question of about 30
/// bytes, where this takes a few per word. Used for the echoed question and
/// for cache keys.
fn words_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_equal = a_words.remainder() == b_words.remainder();
    tails_equal
        && a_words.zip(b_words).all(|(x, y)| {
            let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().unwrap_or_default());
            word(x) == word(y)
        })
}

fn header(msg: &[u8]) -> Option<&[u8; HEADER_LEN]> {
    msg.first_chunk()
}

fn read_u16(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

fn write_u16(msg: &mut [u8], at: usize, value: u16) {
    if let Some(bytes) = msg.get_mut(at..at + 2) {
        bytes.copy_from_slice(&value.to_be_bytes());
    }
}

/// QDCOUNT, ANCOUNT, NSCOUNT and ARCOUNT, if there is a header.
fn counts(msg: &[u8]) -> Option<[u16; 4]> {
    header(msg)?;
    Some([QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT].map(|at| read_u16(msg, at).unwrap_or(0)))
}

/// A section of a message (RFC 1035 §4.1), to say where a problem is.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The 12-byte header (RFC 1035 §4.1.1).
    Header,
    /// The question section (RFC 1035 §4.1.2).
    Question,
    /// The answer section (RFC 1035 §4.1.3).
    Answer,
    /// The authority section (RFC 1035 §4.1.3).
    Authority,
    /// The additional section (RFC 1035 §4.1.3).
    Additional,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Question => "question",
            Section::Answer => "answer",
            Section::Authority => "authority",
            Section::Additional => "additional",
        })
    }
}

/// A malformed or unsupported message. Offsets are from the start of the
/// message. [`Query::parse`] wraps these in [`QueryError`] to say what the
/// client gets; for upstream responses any of them means SERVFAIL.
#[non_exhaustive]
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    /// Shorter than the header (RFC 1035 §4.1.1). A query like this is dropped:
    /// there is no ID to answer to.
    #[error("{len}-byte message is shorter than the 12-byte DNS header")]
    TooShort {
        /// The message length.
        len: usize,
    },
    /// QR=1 where a query was expected (RFC 1035 §4.1.1). Dropped, never
    /// answered, so two proxies cannot bounce replies at each other.
    #[error("message is a response (QR=1), not a query")]
    NotAQuery,
    /// QDCOUNT=0 in a query: nothing to answer (FORMERR).
    #[error("query has no question")]
    NoQuestion,
    /// QDCOUNT>1 in a standard query (RFC 9619 §3: FORMERR).
    #[error("query has {count} questions; exactly one is allowed")]
    MultipleQuestions {
        /// The QDCOUNT.
        count: u16,
    },
    /// A section ends before the number of entries its count announces, or an
    /// entry runs past the end of the message (RFC 1035 §4.1).
    #[error("message ends inside the {section} section")]
    Truncated {
        /// The section being read.
        section: Section,
    },
    /// A label length octet with the reserved top bits `01` or `10` (RFC 1035
    /// §4.1.4; `01` was RFC 2671's extended labels, deprecated by RFC 6891
    /// §5): a label is at most 63 octets.
    #[error("label length octet at offset {offset} is neither a length up to 63 nor a pointer")]
    BadLabel {
        /// Offset of the length octet.
        offset: usize,
    },
    /// A name longer than 255 octets (RFC 1035 §3.1).
    #[error("name longer than 255 octets (at offset {offset})")]
    NameTooLong {
        /// Offset of the label that crossed the limit.
        offset: usize,
    },
    /// A compression pointer that does not point strictly before the labels it
    /// ends, points to labels that run into them, points into the header, or
    /// continues a chain too long to be real (RFC 1035 §4.1.4: pointers refer
    /// to a *prior* occurrence of a name).
    /// This is what catches pointer loops.
    #[error("bad compression pointer at offset {offset}")]
    BadPointer {
        /// Offset of the pointer.
        offset: usize,
    },
    /// Bytes after the last record the header counts. Only checked in queries.
    #[error("{len} bytes after the last record")]
    TrailingBytes {
        /// Number of extra bytes.
        len: usize,
    },
    /// More than one OPT RR (RFC 6891 §6.1.1: FORMERR).
    #[error("more than one OPT record")]
    MultipleOpt,
    /// An OPT RR whose owner is not the root (RFC 6891 §6.1.2).
    #[error("OPT record at offset {offset} is not owned by the root")]
    OptNotRoot {
        /// Offset of the OPT RR.
        offset: usize,
    },
    /// OPT options that do not exactly fill its RDATA (RFC 6891 §6.1.2).
    #[error("malformed EDNS option at offset {offset}")]
    BadOptOptions {
        /// Offset of the option.
        offset: usize,
    },
    /// A record whose RDATA is too short for the names and fields of its type
    /// (RFC 1035 §3.3). Only checked where names in RDATA must be found.
    #[error("record at offset {offset} has malformed RDATA")]
    BadRdata {
        /// Offset of the record.
        offset: usize,
    },
    /// A compression pointer refers into the OPT RR that was to be removed (or
    /// padded), or to labels that run into it, so the edit would change the
    /// name (RFC 1035 §4.1.4).
    #[error("compression pointer at offset {offset} points into the OPT record")]
    PointerIntoOpt {
        /// Offset of the pointer.
        offset: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1035_id_is_first_two_bytes_big_endian() {
        let mut m = [0x12, 0x34, 0, 0];
        assert_eq!(id(&m), Some(0x1234));
        set_id(&mut m, 0xBEEF);
        assert_eq!(m, [0xBE, 0xEF, 0, 0]);
        assert_eq!(id(&[1]), None);
    }

    #[test]
    fn rfc1035_rcode_is_low_nibble_of_fourth_byte() {
        let mut m = [0u8; 12];
        m[3] = 0xF3;
        assert_eq!(rcode(&m), Some(3));
        assert_eq!(rcode(&m[..11]), None);
    }

    proptest::proptest! {
        #[test]
        fn words_equal_is_slice_equality(
            a in proptest::collection::vec(0u8..4, 0..40),
            b in proptest::collection::vec(0u8..4, 0..40),
        ) {
            proptest::prop_assert_eq!(words_equal(&a, &b), a == b);
            proptest::prop_assert!(words_equal(&a, &a));
        }

        #[test]
        fn words_equal_sees_any_one_byte_changed(
            a in proptest::collection::vec(proptest::num::u8::ANY, 1..40),
            at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut b = a.clone();
            b[at.index(a.len())] ^= 0x20;
            proptest::prop_assert!(!words_equal(&a, &b));
        }
    }
}
