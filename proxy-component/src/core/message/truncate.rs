//! Cutting a response down for a UDP client (RFC 1035 §4.2.1, RFC 2181 §9,
//! RFC 6891 §7).

use super::response::Response;
use super::walk::{Layout, OPTION_PADDING, Opt, opt_without};
use super::{ANCOUNT, ARCOUNT, HEADER_LEN, NSCOUNT, QDCOUNT, TC, write_u16};

/// No UDP limit is below what any client can take (RFC 1035 §2.3.4).
const MIN_LIMIT: usize = 512;

impl Response {
    /// Fits the response into a UDP client's `limit` ([`Query::udp_limit`]);
    /// returns whether it had to be truncated.
    ///
    /// If it is at most `limit` bytes, it is sent as is. Otherwise it becomes
    /// a truncated reply the client will retry over TCP (RFC 7766 §5): the
    /// same header with TC=1 and ANCOUNT=NSCOUNT=0, the question section as
    /// is, and the response's OPT RR (ARCOUNT=1) if it had one, else ARCOUNT=0
    /// (RFC 6891 §7: the OPT carries the extended RCODE and DO). RFC 2181 §9
    /// allows dropping whole sections this way; partial RRsets are never sent.
    ///
    /// The kept OPT loses its Padding options (RFC 7830 §3): they were sized
    /// for the full message, so they only cost room. If header, question and
    /// OPT do not fit, the OPT is dropped, then the question, so the result
    /// always fits with TC=1. A `limit` below 512 is treated as 512.
    ///
    /// The question and the OPT are where the walk of [`Response::parse`]
    /// found them; the new layout follows from what is kept.
    ///
    /// [`Query::udp_limit`]: super::Query::udp_limit
    pub fn truncate_for_udp(&mut self, limit: usize) -> bool {
        let limit = limit.max(MIN_LIMIT);
        if self.bytes.len() <= limit {
            return false;
        }
        let (resp, layout) = (&self.bytes, &self.layout);
        // The question keeps its offset, so its compression pointers (which
        // can only point into earlier questions) stay valid.
        let question = &resp[HEADER_LEN..layout.question_end];
        let opt = layout
            .opt
            .as_ref()
            .map(|opt| (opt, opt_without(resp, opt, &[OPTION_PADDING])));
        let opt_len = opt.as_ref().map_or(0, |(_, bytes)| bytes.len());
        let (keep_question, keep_opt) = if HEADER_LEN + question.len() + opt_len <= limit {
            (true, opt.is_some())
        } else {
            (HEADER_LEN + question.len() <= limit, false)
        };

        let mut out = Vec::with_capacity(HEADER_LEN + question.len() + opt_len);
        out.extend_from_slice(&resp[..HEADER_LEN]);
        out[2] |= TC;
        write_u16(&mut out, ANCOUNT, 0);
        write_u16(&mut out, NSCOUNT, 0);
        write_u16(&mut out, ARCOUNT, u16::from(keep_opt));
        if keep_question {
            out.extend_from_slice(question);
        } else {
            write_u16(&mut out, QDCOUNT, 0);
        }
        let question_end = out.len();
        let opt = opt.filter(|_| keep_opt).map(|(opt, bytes)| {
            out.extend_from_slice(&bytes);
            let end = out.len();
            // Owner and fixed fields are kept, so RDATA starts as far in.
            let rdata_start = question_end + (opt.rdata.start - opt.range.start);
            Opt {
                range: question_end..end,
                rdata: rdata_start..end,
                has_padding: false,
                ..opt.clone()
            }
        });
        self.layout = Layout {
            question_end,
            end: out.len(),
            opt,
            signed: false,
        };
        self.bytes = out;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Edns, Message, MessageType, Query};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::super::MessageError;
    use super::super::test_support::{parse, truncate_for_udp};
    use super::*;

    /// QR=1, RD=1.
    const QR_RD: u8 = 0x81;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("valid name")
    }

    /// A response to `www.example.com A` with `n` compressed A answers, an NS
    /// in the authority section and, optionally, an OPT with `options`.
    fn big_response(n: u8, opt: Option<Vec<EdnsOption>>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0xABCD)
            .set_message_type(MessageType::Response)
            .set_recursion_desired(true)
            .set_recursion_available(true)
            .set_authentic_data(true);
        m.add_query(Query::query(name("www.example.com."), RecordType::A));
        for i in 0..n {
            m.add_answer(Record::from_rdata(
                name("www.example.com."),
                300,
                RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
            ));
        }
        m.add_name_server(Record::from_rdata(
            name("example.com."),
            300,
            RData::TXT(TXT::new(vec!["x".repeat(100)])),
        ));
        if let Some(options) = opt {
            let mut edns = Edns::new();
            edns.set_max_payload(1232).set_dnssec_ok(true);
            for o in options {
                edns.options_mut().insert(o);
            }
            m.set_edns(edns);
        }
        m.to_vec().expect("encodes")
    }

    #[test]
    fn rfc1035_response_within_limit_is_sent_as_is() {
        let resp = big_response(5, None);
        assert!(resp.len() < 512);
        assert_eq!(truncate_for_udp(&resp, 512), Ok(None));
        assert_eq!(truncate_for_udp(&resp, resp.len()), Ok(None));
    }

    #[test]
    fn rfc1035_truncated_reply_of_compressed_answers_keeps_question_with_tc() {
        let resp = big_response(60, None);
        // The answers' owners are compression pointers to the question.
        assert_eq!(resp[12 + 21..12 + 23], [0xC0, 12]);
        let out = truncate_for_udp(&resp, 512)
            .expect("valid")
            .expect("too big");
        assert!(out.len() <= 512);
        let m = parse(&out);
        assert!(m.truncated());
        assert_eq!(m.id(), 0xABCD);
        assert!(m.authentic_data() && m.recursion_available());
        assert_eq!(m.queries()[0].name(), &name("www.example.com."));
        assert!(m.answers().is_empty() && m.name_servers().is_empty());
        assert!(m.additionals().is_empty() && m.extensions().is_none());
        assert_eq!(out[12..], resp[12..12 + 21]);
    }

    #[test]
    fn rfc6891_truncated_reply_keeps_opt() {
        let cookie = EdnsOption::Unknown(10, vec![7; 8]);
        let resp = big_response(60, Some(vec![cookie.clone()]));
        let out = truncate_for_udp(&resp, 700)
            .expect("valid")
            .expect("too big");
        let m = parse(&out);
        assert!(m.truncated());
        let edns = m.extensions().as_ref().expect("OPT kept");
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.options().as_ref().len(), 1);
        assert_eq!(u16::from_be_bytes([out[10], out[11]]), 1);
    }

    #[test]
    fn rfc7830_truncated_reply_drops_padding_from_opt() {
        let padding = EdnsOption::Unknown(12, vec![0; 400]);
        let resp = big_response(60, Some(vec![padding]));
        let out = truncate_for_udp(&resp, 512)
            .expect("valid")
            .expect("too big");
        assert_eq!(out.len(), 12 + 21 + 11);
        let m = parse(&out);
        let edns = m.extensions().as_ref().expect("OPT kept");
        assert!(edns.options().as_ref().is_empty());
    }

    #[test]
    fn rfc6891_opt_too_big_for_limit_is_dropped_before_question() {
        let big_option = EdnsOption::Unknown(65001, vec![1; 600]);
        let resp = big_response(60, Some(vec![big_option]));
        let out = truncate_for_udp(&resp, 512)
            .expect("valid")
            .expect("too big");
        assert_eq!(out.len(), 12 + 21);
        let m = parse(&out);
        assert!(m.truncated() && m.extensions().is_none());
        assert_eq!(m.queries().len(), 1);
    }

    #[test]
    fn questions_too_big_for_limit_are_dropped_too() {
        // A response with three uncompressed questions of 200-odd octets each.
        let mut resp = vec![0, 1, QR_RD, 0, 0, 3, 0, 0, 0, 0, 0, 0];
        for qtype in [1u8, 28, 16] {
            for _ in 0..3 {
                resp.push(60);
                resp.extend_from_slice(&[b'a'; 60]);
            }
            resp.extend_from_slice(&[0, 0, qtype, 0, 1]);
        }
        assert!(resp.len() > 512);
        let out = truncate_for_udp(&resp, 512)
            .expect("valid")
            .expect("too big");
        assert_eq!(out.len(), HEADER_LEN);
        let m = parse(&out);
        assert!(m.truncated() && m.queries().is_empty());
    }

    #[test]
    fn limit_below_512_is_raised_to_512() {
        let resp = big_response(10, None);
        assert!(resp.len() <= 512);
        assert_eq!(truncate_for_udp(&resp, 100), Ok(None));
    }

    #[test]
    fn rfc1035_answer_with_pointer_loop_is_an_error() {
        let mut resp = big_response(60, None);
        // First answer's owner: a pointer to itself.
        let at = 12 + 21;
        assert_eq!(resp[at], 0xC0);
        resp[at + 1] = at as u8;
        assert_eq!(
            truncate_for_udp(&resp, 512),
            Err(MessageError::BadPointer { offset: at })
        );
    }

    #[test]
    fn rfc1035_response_shorter_than_counts_is_an_error() {
        let mut resp = big_response(60, None);
        resp[7] = 61;
        resp.truncate(resp.len() - 1);
        assert!(matches!(
            truncate_for_udp(&resp, 512),
            Err(MessageError::Truncated { .. })
        ));
    }
}
