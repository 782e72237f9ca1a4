//! Client queries: the checks the proxy makes, the view of an accepted query
//! it carries along (RFC 1035 §4.1, RFC 6891 §6), and the replies it makes up
//! itself.

use thiserror::Error;

use super::walk::{Layout, Opt, Partial, scan, walk, write_opt};
use super::{HEADER_LEN, MessageError, OPCODE_MASK, QDCOUNT, QR, RA, RD, header, read_u16};

/// RFC 1035 §2.3.4 / RFC 6891 §6.2.3: what any UDP client can take.
const MIN_UDP_PAYLOAD: usize = 512;

/// A client query the proxy accepted: its bytes and where everything lies
/// in them (RFC 1035 §4.1), from the one walk [`Query::parse`] makes. What
/// the proxy does with the query (pad it, answer it itself, match the answer
/// to it, size the UDP reply) reads this layout; nothing walks it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub(super) bytes: Vec<u8>,
    pub(super) layout: Layout,
}

/// Why a client query is not forwarded, classified by what the client gets.
#[non_exhaustive]
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    /// No reply at all: shorter than a header, or a response (QR=1).
    #[error("query dropped: {0}")]
    Drop(MessageError),
    /// A FORMERR reply (RFC 1035 §4.1.1): the header parses, the rest does not.
    #[error("malformed query (FORMERR): {0}")]
    FormErr(MessageError),
    /// A NOTIMP reply (RFC 1035 §4.1.1): an OPCODE other than QUERY.
    #[error("opcode not implemented (NOTIMP)")]
    NotImp,
}

/// Response codes the proxy sets itself (RFC 1035 §4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
pub enum Rcode {
    /// No error.
    NoError = 0,
    /// The query was malformed.
    FormErr = 1,
    /// The proxy could not get an answer (e.g. every upstream failed).
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// The OPCODE is not supported.
    NotImp = 4,
    /// Refused by policy.
    Refused = 5,
}

impl From<Rcode> for u8 {
    fn from(rcode: Rcode) -> Self {
        rcode as u8
    }
}

impl Query {
    /// Checks a client query and keeps a copy of it with its layout.
    ///
    /// Errors classify the reply: a message shorter than the header or with
    /// QR=1 is dropped (no reply); OPCODE != QUERY gets NOTIMP; a header-valid
    /// but otherwise malformed query gets FORMERR. That covers QDCOUNT != 1
    /// (RFC 9619 §3), bad names (RFC 1035 §4.1.4), sections shorter than their
    /// counts, several OPT RRs (RFC 6891 §6.1.1) and bytes after the last
    /// record.
    pub fn parse(msg: &[u8]) -> Result<Self, QueryError> {
        let h = header(msg).ok_or(QueryError::Drop(MessageError::TooShort { len: msg.len() }))?;
        if h[2] & QR != 0 {
            return Err(QueryError::Drop(MessageError::NotAQuery));
        }
        if h[2] & OPCODE_MASK != 0 {
            return Err(QueryError::NotImp);
        }
        match read_u16(msg, QDCOUNT) {
            Some(1) => {}
            Some(0) => return Err(QueryError::FormErr(MessageError::NoQuestion)),
            count => {
                return Err(QueryError::FormErr(MessageError::MultipleQuestions {
                    count: count.unwrap_or(0),
                }));
            }
        }
        let layout = walk(msg).map_err(QueryError::FormErr)?;
        if layout.end < msg.len() {
            return Err(QueryError::FormErr(MessageError::TrailingBytes {
                len: msg.len() - layout.end,
            }));
        }
        Ok(Self {
            bytes: msg.to_vec(),
            layout,
        })
    }

    /// The query as the client sent it.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The client's ID (RFC 1035 §4.1.1), restored on the answer.
    pub fn id(&self) -> u16 {
        // Indexing cannot fail: a parsed query has a 12-byte header.
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }

    /// Recursion Desired (RFC 1035 §4.1.1).
    pub fn rd(&self) -> bool {
        // As above: the header is there.
        self.bytes[2] & RD != 0
    }

    /// The single question: QNAME, QTYPE, QCLASS (RFC 1035 §4.1.2), right
    /// after the header. QNAME holds no compression pointer: nothing precedes
    /// it.
    pub fn question(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.layout.question_end]
    }

    /// The OPT pseudo-RR, if the client speaks EDNS (RFC 6891 §6.1).
    pub fn opt(&self) -> Option<&Opt> {
        self.layout.opt.as_ref()
    }

    /// The largest UDP reply the client can take (RFC 6891 §6.2.3, §6.2.5):
    /// 512 bytes without OPT, else its advertised payload size but never less
    /// than 512.
    pub fn udp_limit(&self) -> usize {
        self.opt().map_or(MIN_UDP_PAYLOAD, |opt| {
            usize::from(opt.udp_payload).max(MIN_UDP_PAYLOAD)
        })
    }
}

/// Builds a reply the proxy answers itself (FORMERR, SERVFAIL, REFUSED,
/// NOTIMP) from the bytes of a message that did not necessarily parse: QR=1,
/// the query's ID, OPCODE and RD, RA=1, all other flags 0; the question echoed
/// when QDCOUNT=1 and it parses, else QDCOUNT=0; and an OPT RR (payload
/// [`EDNS_UDP_PAYLOAD`](super::EDNS_UDP_PAYLOAD), no options, DO copied) iff the query had one before
/// any malformation (RFC 6891 §7).
///
/// Never panics; `None` for input shorter than the header, which has no ID
/// to answer to.
pub fn synthesize_response(query: &[u8], rcode: Rcode) -> Option<Vec<u8>> {
    let h = header(query)?;
    let mut partial = Partial::default();
    // A malformed later part does not matter: what was found before it is used.
    let _ = scan(query, &mut partial);
    let question = match (read_u16(query, QDCOUNT), partial.question_end) {
        (Some(1), Some(end)) => query.get(HEADER_LEN..end).unwrap_or_default(),
        _ => &[],
    };
    let dnssec_ok = partial.opt.map(|opt| opt.dnssec_ok);
    Some(reply_bytes(h, question, dnssec_ok, rcode))
}

/// The reply [`synthesize_response`] and [`Response::reply`] describe;
/// `dnssec_ok` is the DO bit of the query's OPT, `None` without one.
///
/// [`Response::reply`]: super::Response::reply
pub(super) fn reply_bytes(
    h: &[u8; HEADER_LEN],
    question: &[u8],
    dnssec_ok: Option<bool>,
    rcode: Rcode,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.len() + 11);
    out.extend_from_slice(&h[..2]);
    out.push(QR | (h[2] & (OPCODE_MASK | RD)));
    out.push(RA | u8::from(rcode));
    out.extend_from_slice(&u16::from(!question.is_empty()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(dnssec_ok.is_some()).to_be_bytes());
    out.extend_from_slice(question);
    if let Some(dnssec_ok) = dnssec_ok {
        write_opt(&mut out, dnssec_ok, &[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::super::Section;
    use super::super::test_support::{parse, query_bytes};
    use super::*;

    fn formerr(e: MessageError) -> Result<Query, QueryError> {
        Err(QueryError::FormErr(e))
    }

    #[test]
    fn rfc1035_query_shorter_than_header_is_dropped() {
        let q = query_bytes("example.com.", RecordType::A, None);
        for len in 0..HEADER_LEN {
            assert_eq!(
                Query::parse(&q[..len]),
                Err(QueryError::Drop(MessageError::TooShort { len }))
            );
        }
    }

    #[test]
    fn rfc1035_response_received_as_query_is_dropped() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q[2] |= QR;
        assert_eq!(
            Query::parse(&q),
            Err(QueryError::Drop(MessageError::NotAQuery))
        );
    }

    #[test]
    fn rfc1035_opcode_other_than_query_is_notimp() {
        for opcode in [1u8, 2, 4, 5, 15] {
            let mut q = query_bytes("example.com.", RecordType::A, None);
            q[2] |= opcode << 3;
            assert_eq!(Query::parse(&q), Err(QueryError::NotImp), "opcode {opcode}");
        }
    }

    #[test]
    fn rfc9619_query_without_question_is_formerr() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q.truncate(HEADER_LEN);
        q[5] = 0;
        assert_eq!(Query::parse(&q), formerr(MessageError::NoQuestion));
    }

    #[test]
    fn rfc9619_query_with_two_questions_is_formerr() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        let question = q[HEADER_LEN..].to_vec();
        q.extend_from_slice(&question);
        q[5] = 2;
        assert_eq!(
            Query::parse(&q),
            formerr(MessageError::MultipleQuestions { count: 2 })
        );
    }

    #[test]
    fn rfc1035_question_name_pointer_loop_is_formerr() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q.splice(HEADER_LEN.., [0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(
            Query::parse(&q),
            formerr(MessageError::BadPointer { offset: 12 })
        );
    }

    #[test]
    fn rfc1035_label_longer_than_63_is_formerr() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        let mut body = vec![64];
        body.extend([b'a'; 64]);
        body.extend([0, 0, 1, 0, 1]);
        q.splice(HEADER_LEN.., body);
        assert_eq!(
            Query::parse(&q),
            formerr(MessageError::BadLabel { offset: 12 })
        );
    }

    #[test]
    fn rfc1035_name_longer_than_255_is_formerr() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        let mut body = Vec::new();
        for _ in 0..5 {
            body.push(60);
            body.extend([b'a'; 60]);
        }
        body.extend([0, 0, 1, 0, 1]);
        q.splice(HEADER_LEN.., body);
        assert_eq!(
            Query::parse(&q),
            formerr(MessageError::NameTooLong {
                offset: HEADER_LEN + 4 * 61
            })
        );
    }

    #[test]
    fn rfc1035_truncated_question_and_record_are_formerr() {
        let q = query_bytes("example.com.", RecordType::A, Some((1232, false)));
        let question_end = HEADER_LEN + 13 + 4;
        assert_eq!(
            Query::parse(&q[..question_end - 1]),
            formerr(MessageError::Truncated {
                section: Section::Question
            })
        );
        assert_eq!(
            Query::parse(&q[..q.len() - 1]),
            formerr(MessageError::Truncated {
                section: Section::Additional
            })
        );
    }

    #[test]
    fn rfc1035_bytes_after_last_record_are_formerr() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            Query::parse(&q),
            formerr(MessageError::TrailingBytes { len: 3 })
        );
    }

    #[test]
    fn rfc6891_two_opt_records_are_formerr() {
        let mut q = query_bytes("example.com.", RecordType::A, Some((1232, false)));
        let opt = q[q.len() - 11..].to_vec();
        q.extend_from_slice(&opt);
        q[11] = 2;
        assert_eq!(Query::parse(&q), formerr(MessageError::MultipleOpt));
    }

    #[test]
    fn rfc1035_valid_query_fields_are_extracted() {
        let q = query_bytes("Example.COM.", RecordType::AAAA, Some((4096, true)));
        let parsed = Query::parse(&q).expect("valid query");
        assert_eq!(parsed.bytes(), q);
        assert_eq!(parsed.id(), 0x4242);
        assert!(parsed.rd());
        let question_end = HEADER_LEN + 13 + 4;
        assert_eq!(parsed.question(), &q[HEADER_LEN..question_end]);
        assert_eq!(parsed.question()[13..], [0, 28, 0, 1]);
        let opt = parsed.opt().expect("has OPT");
        assert_eq!(opt.udp_payload, 4096);
        assert!(opt.dnssec_ok);
        assert!(!opt.has_padding);
        assert_eq!(opt.range, question_end..q.len());
        assert_eq!(opt.rdata, q.len()..q.len());

        let mut no_rd = q.clone();
        no_rd[2] &= !RD;
        assert!(!Query::parse(&no_rd).expect("valid").rd());
    }

    #[test]
    fn rfc6891_udp_limit_is_512_without_opt_and_never_below_512() {
        let limit = |payload: Option<u16>| {
            let mut q = query_bytes("a.", RecordType::A, payload.map(|_| (1232, false)));
            if let Some(payload) = payload {
                // hickory raises payloads below 512 itself; write the raw value.
                let at = q.len() - 11 + 3;
                q[at..at + 2].copy_from_slice(&payload.to_be_bytes());
            }
            Query::parse(&q).expect("valid").udp_limit()
        };
        assert_eq!(limit(None), 512);
        assert_eq!(limit(Some(0)), 512);
        assert_eq!(limit(Some(100)), 512);
        assert_eq!(limit(Some(1232)), 1232);
        assert_eq!(limit(Some(65535)), 65535);
    }

    #[test]
    fn rfc6891_formerr_reply_echoes_question_and_opt() {
        let q = query_bytes("www.example.org.", RecordType::TXT, Some((4096, true)));
        let reply = synthesize_response(&q, Rcode::FormErr).expect("has header");
        let m = parse(&reply);
        assert_eq!(m.id(), 0x4242);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.op_code(), OpCode::Query);
        assert!(m.recursion_desired() && m.recursion_available());
        assert!(!m.authoritative() && !m.truncated() && !m.authentic_data());
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        assert_eq!(m.queries().len(), 1);
        assert_eq!(
            m.queries()[0].name(),
            &Name::from_ascii("www.example.org.").expect("name")
        );
        assert_eq!(m.queries()[0].query_type(), RecordType::TXT);
        assert!(m.answers().is_empty() && m.name_servers().is_empty());
        let edns = m.extensions().as_ref().expect("OPT echoed");
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok);
        assert!(edns.options().as_ref().is_empty());
    }

    #[test]
    fn rfc6891_refused_reply_to_query_without_opt_has_no_opt() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q[2] &= !RD;
        let reply = synthesize_response(&q, Rcode::Refused).expect("has header");
        let m = parse(&reply);
        assert_eq!(m.response_code(), ResponseCode::Refused);
        assert!(!m.recursion_desired());
        assert!(m.extensions().is_none());
        assert_eq!(m.queries().len(), 1);
        assert_eq!(reply.len(), q.len());
    }

    #[test]
    fn formerr_reply_to_unparsable_question_has_no_question() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q[HEADER_LEN] = 0x80;
        let reply = synthesize_response(&q, Rcode::FormErr).expect("has header");
        assert_eq!(reply.len(), HEADER_LEN);
        assert_eq!(parse(&reply).queries().len(), 0);

        let mut two = query_bytes("example.com.", RecordType::A, None);
        let question = two[HEADER_LEN..].to_vec();
        two.extend_from_slice(&question);
        two[5] = 2;
        let reply = synthesize_response(&two, Rcode::FormErr).expect("has header");
        assert_eq!(reply.len(), HEADER_LEN);
    }

    #[test]
    fn rfc6891_reply_keeps_opt_found_before_a_malformed_record() {
        let mut q = query_bytes("example.com.", RecordType::A, Some((1232, false)));
        q[11] = 2; // a second additional record that is not there
        let reply = synthesize_response(&q, Rcode::FormErr).expect("has header");
        assert!(parse(&reply).extensions().is_some());
    }

    #[test]
    fn notimp_reply_keeps_opcode() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q[2] |= 2 << 3; // STATUS
        let reply = synthesize_response(&q, Rcode::NotImp).expect("has header");
        assert_eq!(reply[2], QR | (2 << 3) | RD);
        assert_eq!(reply[3], RA | 4);
    }

    #[test]
    fn synthesize_never_panics_and_needs_a_header() {
        assert_eq!(synthesize_response(&[0; 11], Rcode::ServFail), None);
        // Every prefix of a valid query, and every single-byte corruption.
        let q = query_bytes("a.example.", RecordType::A, Some((1232, true)));
        for len in 0..=q.len() {
            let reply = synthesize_response(&q[..len], Rcode::ServFail);
            assert_eq!(reply.is_some(), len >= HEADER_LEN);
        }
        for at in 0..q.len() {
            for byte in [0x00, 0x3F, 0x40, 0xC0, 0xFF] {
                let mut bad = q.clone();
                bad[at] = byte;
                let reply = synthesize_response(&bad, Rcode::FormErr).expect("has header");
                assert_eq!(reply[..2], bad[..2]);
            }
        }
    }
}
