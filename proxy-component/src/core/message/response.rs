//! Upstream responses: the view the proxy carries from the upstream to the
//! client, parsed once (RFC 1035 §4.1), and the match of an answer to its
//! question.
//!
//! What is done to a response before the client sees it are methods on the
//! view, each reading the layout of the one walk and keeping it correct after
//! an edit: [`Response::set_id`], [`Response::fit_for_client`] (in
//! `padding.rs`) and [`Response::truncate_for_udp`] (in `truncate.rs`).

use std::time::Duration;

use super::name::names_equal;
use super::query::{Query, Rcode, reply_bytes};
use super::walk::{Layout, Opt, walk};
use super::{
    EDNS_UDP_PAYLOAD, HEADER_LEN, MessageError, QDCOUNT, QR, header, read_u16, words_equal,
};

/// A response and where everything lies in it.
///
/// Everything the proxy does not own (answers, DNSSEC records, unknown
/// types, AD/CD/DO bits) stays byte for byte as the upstream sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub(super) bytes: Vec<u8>,
    pub(super) layout: Layout,
}

impl Response {
    /// Walks a response once (RFC 1035 §4.1): names, including compression
    /// pointers (RFC 1035 §4.1.4), every record's bounds, and the OPT RR (RFC
    /// 6891 §6.1). Bytes after the last record are kept and not looked at.
    /// Malformed input is an `Err`: nothing the proxy could pass on safely
    /// (the client gets SERVFAIL).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, MessageError> {
        let layout = walk(&bytes)?;
        Ok(Self { bytes, layout })
    }

    /// The reply the proxy answers `query` with itself (SERVFAIL when no
    /// upstream answered), as [`synthesize_response`] builds it, but from
    /// the layout already known: the question is echoed, and an OPT RR (DO
    /// copied) is added iff the query had one.
    ///
    /// [`synthesize_response`]: super::synthesize_response
    pub fn reply(query: &Query, rcode: Rcode) -> Response {
        // A parsed query has a header; the fallback is never used.
        let header = query.bytes.first_chunk().unwrap_or(&[0; HEADER_LEN]);
        let dnssec_ok = query.opt().map(|opt| opt.dnssec_ok);
        let bytes = reply_bytes(header, query.question(), dnssec_ok, rcode);
        let question_end = query.layout.question_end;
        let end = bytes.len();
        let layout = Layout {
            question_end,
            end,
            opt: dnssec_ok.map(|dnssec_ok| Opt {
                range: question_end..end,
                rdata: end..end,
                udp_payload: EDNS_UDP_PAYLOAD,
                dnssec_ok,
                has_padding: false,
                keepalive: None,
            }),
            signed: false,
        };
        Response { bytes, layout }
    }

    /// The message as it is now.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message, to send.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Its OPT RR, if it has one (RFC 6891 §6.1).
    pub fn opt(&self) -> Option<&Opt> {
        self.layout.opt.as_ref()
    }

    /// The idle timeout the upstream asks for in an edns-tcp-keepalive
    /// option (RFC 7828 §3.3.2), if the answer carries one with a TIMEOUT;
    /// found by the walk. Read it before [`Response::fit_for_client`], which
    /// removes the option.
    pub fn keepalive_timeout(&self) -> Option<Duration> {
        self.opt()?.keepalive?.idle_timeout()
    }

    /// True if this is a response (QR=1) with exactly one question equal to
    /// the query's: QNAME compared ASCII case-insensitively (RFC 4343 §3),
    /// QTYPE and QCLASS exactly.
    pub fn answers(&self, query: &Query) -> bool {
        let Some(h) = header(&self.bytes) else {
            return false;
        };
        if h[2] & QR == 0 || read_u16(&self.bytes, QDCOUNT) != Some(1) {
            return false;
        }
        // The usual answer echoes the question byte for byte. Both were
        // validated by their walks, and a name at HEADER_LEN cannot be
        // compressed (a pointer must point before it, into the header), so
        // equal bytes are an equal question: no label-by-label comparison.
        if self
            .bytes
            .get(HEADER_LEN..self.layout.question_end)
            .is_some_and(|theirs| words_equal(theirs, query.question()))
        {
            return true;
        }
        let theirs = type_and_class(&self.bytes, self.layout.question_end);
        let ours = type_and_class(query.bytes(), HEADER_LEN + query.question().len());
        theirs.is_some()
            && theirs == ours
            && names_equal(query.bytes(), HEADER_LEN, &self.bytes, HEADER_LEN)
    }

    /// True if it is a SERVFAIL or REFUSED: an answer, but one another
    /// upstream may better (see [`attempt`](crate::core::attempt)).
    pub fn declines(&self) -> bool {
        let rcode = super::rcode(&self.bytes);
        rcode == Some(u8::from(Rcode::ServFail)) || rcode == Some(u8::from(Rcode::Refused))
    }

    /// Sets the ID (RFC 1035 §4.1.1): the client's, in place of the one the
    /// upstream connection used.
    pub fn set_id(&mut self, id: u16) {
        super::set_id(&mut self.bytes, id);
    }
}

/// QTYPE and QCLASS of a single question ending at `question_end`.
fn type_and_class(msg: &[u8], question_end: usize) -> Option<&[u8]> {
    msg.get(question_end.checked_sub(4)?..question_end)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{Name, RecordType};

    use super::super::synthesize_response;
    use super::super::test_support::query_bytes;
    use super::*;

    fn response(name: &str, rtype: RecordType, response: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(1).set_message_type(if response {
            MessageType::Response
        } else {
            MessageType::Query
        });
        m.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).expect("name"),
            rtype,
        ));
        m.to_vec().expect("encodes")
    }

    fn answers(query: &Query, resp: Vec<u8>) -> bool {
        Response::parse(resp).expect("valid").answers(query)
    }

    #[test]
    fn rfc4343_answer_with_other_case_matches_question() {
        let q = Query::parse(&query_bytes("www.Example.com.", RecordType::A, None)).expect("valid");
        assert!(answers(
            &q,
            response("WWW.example.COM.", RecordType::A, true)
        ));
    }

    #[test]
    fn answer_to_another_question_does_not_match() {
        let q = Query::parse(&query_bytes("www.example.com.", RecordType::A, None)).expect("valid");
        assert!(answers(
            &q,
            response("www.example.com.", RecordType::A, true)
        ));
        assert!(!answers(
            &q,
            response("www.example.com.", RecordType::AAAA, true)
        ));
        assert!(!answers(
            &q,
            response("ww.example.com.", RecordType::A, true)
        ));
        assert!(!answers(
            &q,
            response("www.example.com.", RecordType::A, false)
        ));
        let mut no_question = response("www.example.com.", RecordType::A, true);
        no_question.truncate(HEADER_LEN);
        no_question[5] = 0;
        assert!(!answers(&q, no_question));
        let mut two = response("www.example.com.", RecordType::A, true);
        let question = two[HEADER_LEN..].to_vec();
        two.extend_from_slice(&question);
        two[5] = 2;
        assert!(!answers(&q, two));
    }

    #[test]
    fn rfc1035_malformed_response_does_not_parse() {
        assert_eq!(
            Response::parse(vec![0x80; 5]),
            Err(MessageError::TooShort { len: 5 })
        );
        let mut resp = response("www.example.com.", RecordType::A, true);
        resp[7] = 1; // ANCOUNT, with no answer there
        assert!(matches!(
            Response::parse(resp),
            Err(MessageError::Truncated { .. })
        ));
    }

    #[test]
    fn set_id_rewrites_only_the_id() {
        let resp = response("www.example.com.", RecordType::A, true);
        let mut r = Response::parse(resp.clone()).expect("valid");
        r.set_id(0xBEEF);
        assert_eq!(r.bytes()[..2], [0xBE, 0xEF]);
        assert_eq!(r.bytes()[2..], resp[2..]);
        assert_eq!(Response::parse(r.bytes().to_vec()), Ok(r));
    }

    #[test]
    fn reply_to_a_parsed_query_is_the_synthesized_reply_with_its_layout() {
        for edns in [None, Some((4096, true)), Some((1232, false))] {
            let q = query_bytes("www.example.org.", RecordType::TXT, edns);
            let parsed = Query::parse(&q).expect("valid");
            for rcode in [Rcode::ServFail, Rcode::Refused] {
                let reply = Response::reply(&parsed, rcode);
                let bytes = synthesize_response(&q, rcode).expect("has header");
                assert_eq!(reply.bytes(), bytes);
                // The layout it was built with is the one a walk finds.
                assert_eq!(Response::parse(bytes), Ok(reply.clone()));
                assert!(reply.answers(&parsed));
            }
        }
    }
}
