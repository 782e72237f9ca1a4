//! Client query admission (`Query::parse`, `Query::udp_limit`) and the replies
//! the proxy makes up itself (`synthesize_response`, `Response::reply`).
//!
//! Input: a client query, as it arrives.
//!
//! Checked: the verdict follows the header as documented (short or QR=1:
//! dropped; OPCODE != 0: NOTIMP; QDCOUNT != 1: FORMERR); an accepted query's
//! fields are the bytes they claim (ID, RD, a question of plain labels at
//! offset 12 that is at most 255 octets, an OPT owned by the root whose
//! payload, DO and Padding are what its bytes say); the UDP limit is the
//! payload but at least 512; hickory-proto, where it reads the query, sees the
//! same question and OPT. Every synthesized reply has the query's ID, OPCODE
//! and RD, QR=1, RA=1, its RCODE, no other flag, no answer or authority, at
//! most the question and an empty OPT (DO copied) and nothing else; it is well
//! formed (hickory-proto and the core's own walk read it); for an accepted
//! query it echoes the question and the OPT presence, passes the proxy's
//! own answer check, and is what `Response::reply` builds, with the layout a
//! walk of it finds.

use dnsproxy_core::core::message::{
    MessageError, Query, QueryError, Rcode, Response, synthesize_response,
};

use crate::wire::{
    HEADER_LEN, OPCODE_MASK, OPTION_KEEPALIVE, OPTION_PADDING, QR, RA, RD, TYPE_OPT, be16, hickory,
};

/// Every RCODE the proxy synthesizes.
const RCODES: [Rcode; 6] = [
    Rcode::NoError,
    Rcode::FormErr,
    Rcode::ServFail,
    Rcode::NxDomain,
    Rcode::NotImp,
    Rcode::Refused,
];

/// Checks one input; panics if an invariant does not hold.
pub fn check(msg: &[u8]) {
    let parsed = Query::parse(msg);
    check_verdict(msg, &parsed);
    if let Ok(q) = &parsed {
        check_fields(msg, q);
    }
    for rcode in RCODES {
        check_reply(msg, parsed.as_ref().ok(), rcode);
    }
}

/// The verdict the header alone decides.
fn check_verdict(msg: &[u8], parsed: &Result<Query, QueryError>) {
    let Some(h) = msg.first_chunk::<HEADER_LEN>() else {
        let len = msg.len();
        assert_eq!(
            parsed,
            &Err(QueryError::Drop(MessageError::TooShort { len }))
        );
        return;
    };
    if h[2] & QR != 0 {
        assert_eq!(parsed, &Err(QueryError::Drop(MessageError::NotAQuery)));
    } else if h[2] & OPCODE_MASK != 0 {
        assert_eq!(parsed, &Err(QueryError::NotImp));
    } else {
        match u16::from_be_bytes([h[4], h[5]]) {
            0 => assert_eq!(parsed, &Err(QueryError::FormErr(MessageError::NoQuestion))),
            1 => assert!(
                matches!(parsed, Ok(_) | Err(QueryError::FormErr(_))),
                "{parsed:?}"
            ),
            count => assert_eq!(
                parsed,
                &Err(QueryError::FormErr(MessageError::MultipleQuestions {
                    count
                }))
            ),
        }
    }
}

/// An accepted query's fields are what its bytes say.
fn check_fields(msg: &[u8], q: &Query) {
    assert_eq!(q.bytes(), msg);
    assert_eq!(Some(q.id()), be16(msg, 0));
    assert_eq!(q.rd(), msg[2] & RD != 0);

    // The question: plain labels (nothing precedes it to point to), a root
    // label, QTYPE and QCLASS.
    let mut pos = HEADER_LEN;
    while msg[pos] != 0 {
        assert!(msg[pos] <= 63, "label length {:#x} at {pos}", msg[pos]);
        pos += 1 + usize::from(msg[pos]);
    }
    let name_len = pos + 1 - HEADER_LEN;
    assert!(name_len <= 255, "{name_len}-octet QNAME");
    let question_end = pos + 1 + 4;
    assert_eq!(q.question(), &msg[HEADER_LEN..question_end]);

    let limit = q.udp_limit();
    match q.opt() {
        None => assert_eq!(limit, 512),
        Some(opt) => {
            let r = opt.range.clone();
            assert!(question_end <= r.start && r.end <= msg.len(), "{r:?}");
            assert_eq!(opt.rdata, r.start + 11..r.end);
            assert_eq!(msg[r.start], 0, "OPT owner is the root");
            assert_eq!(be16(msg, r.start + 1), Some(TYPE_OPT));
            assert_eq!(be16(msg, r.start + 3), Some(opt.udp_payload));
            assert_eq!(opt.dnssec_ok, msg[r.start + 7] & 0x80 != 0);
            let rdlen = be16(msg, r.start + 9).map(usize::from);
            assert_eq!(rdlen, Some(r.end - (r.start + 11)));
            let options = crate::wire::opt_options(msg, r.start + 11..r.end).expect("tiled");
            let padded = options.iter().any(|(code, _)| *code == OPTION_PADDING);
            assert_eq!(opt.has_padding, padded);
            // The last edns-tcp-keepalive option (RFC 7828 §3.1), its
            // TIMEOUT iff it holds exactly two octets.
            let keepalive = options
                .iter()
                .rev()
                .find(|(code, _)| *code == OPTION_KEEPALIVE)
                .map(|(_, bytes)| bytes[4..].try_into().ok().map(u16::from_be_bytes));
            assert_eq!(opt.keepalive.map(|k| k.timeout), keepalive);
            assert_eq!(limit, usize::from(opt.udp_payload).max(512));
        }
    }

    if let Some(m) = hickory(msg) {
        assert_eq!(m.queries().len(), 1);
        let hq = &m.queries()[0];
        let end = question_end;
        assert_eq!(Some(u16::from(hq.query_type())), be16(msg, end - 4));
        assert_eq!(Some(u16::from(hq.query_class())), be16(msg, end - 2));
        assert_eq!(m.extensions().is_some(), q.opt().is_some());
        if let (Some(edns), Some(opt)) = (m.extensions(), q.opt()) {
            assert_eq!(edns.max_payload(), opt.udp_payload.max(512));
            assert_eq!(edns.flags().dnssec_ok, opt.dnssec_ok);
        }
    }
}

/// A reply the proxy makes up (FORMERR, SERVFAIL, REFUSED, ...).
fn check_reply(msg: &[u8], q: Option<&Query>, rcode: Rcode) {
    let Some(reply) = synthesize_response(msg, rcode) else {
        assert!(
            msg.len() < HEADER_LEN,
            "no reply to a {}-byte query",
            msg.len()
        );
        return;
    };
    assert!(msg.len() >= HEADER_LEN);
    assert_eq!(reply[..2], msg[..2], "ID");
    assert_eq!(
        reply[2],
        QR | (msg[2] & (OPCODE_MASK | RD)),
        "QR, OPCODE, RD"
    );
    assert_eq!(reply[3], RA | u8::from(rcode), "RA, RCODE, no other flag");
    let qd = be16(&reply, 4).unwrap_or_default();
    let ar = be16(&reply, 10).unwrap_or_default();
    assert!(qd <= 1 && ar <= 1, "QDCOUNT {qd}, ARCOUNT {ar}");
    assert_eq!(reply[6..10], [0; 4], "no answer or authority records");
    let question_len = reply.len() - HEADER_LEN - 11 * usize::from(ar);
    assert_eq!(question_len == 0, qd == 0, "QDCOUNT {qd}");
    assert_eq!(
        reply[HEADER_LEN..HEADER_LEN + question_len],
        msg[HEADER_LEN..HEADER_LEN + question_len],
        "the question is echoed as is"
    );
    if ar == 1 {
        let opt = &reply[HEADER_LEN + question_len..];
        // Root owner, OPT, payload 1232, ext-RCODE and version 0, DO, no RDATA.
        assert_eq!(opt[..7], [0, 0, 41, 0x04, 0xD0, 0, 0]);
        assert_eq!(opt[7] & 0x7F, 0);
        assert_eq!(opt[8..], [0, 0, 0]);
    }
    let view = Response::parse(reply.clone()).expect("the core reads its own reply");
    let m = hickory(&reply).expect("hickory-proto reads the reply");
    assert_eq!(u16::from(m.response_code()), u16::from(u8::from(rcode)));

    if let Some(q) = q {
        assert_eq!(qd, 1);
        assert_eq!(reply[HEADER_LEN..HEADER_LEN + question_len], *q.question());
        assert_eq!(ar == 1, q.opt().is_some());
        if let Some(opt) = q.opt() {
            assert_eq!(
                reply[reply.len() - 4] & 0x80 != 0,
                opt.dnssec_ok,
                "DO copied"
            );
        }
        assert!(
            view.answers(q),
            "the proxy's own reply does not answer its question"
        );
        assert_eq!(
            Response::reply(q, rcode),
            view,
            "Response::reply differs, or its layout"
        );
        assert!(matches!(
            Query::parse(&reply),
            Err(QueryError::Drop(MessageError::NotAQuery))
        ));
    }
}
