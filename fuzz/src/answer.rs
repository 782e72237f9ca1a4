//! The match of an upstream answer to the client's question
//! (`Response::answers`).
//!
//! Input: `[len_hi, len_lo, query (len bytes), response..]`. Inputs whose
//! query the proxy would not accept are skipped: the method is only ever
//! called with an accepted one.
//!
//! Checked against hickory-proto reading the response's header and first
//! question: a match is never claimed where hickory-proto sees another
//! question, no question, QDCOUNT != 1 or a query (QR=0), nor for a response
//! the core's walk rejects; and where the response parses and its QNAME is
//! plain labels (no compression), the verdicts agree exactly (QNAME compared
//! ASCII case-insensitively, RFC 4343; QTYPE and QCLASS exactly). With a
//! compression pointer the core is stricter than hickory-proto (it rejects
//! pointers into the header), and hickory-proto reads only the question
//! where the core walks the whole response, so only the first half holds
//! there.

use dnsproxy_core::core::message::{Query as ClientQuery, Response};
use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::wire::HEADER_LEN;

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some((&[hi, lo], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
    let (query, resp) = rest.split_at(split);
    let Ok(q) = ClientQuery::parse(query) else {
        return;
    };
    let parsed = Response::parse(resp.to_vec());
    let got = parsed.as_ref().is_ok_and(|r| r.answers(&q));
    let want = reference(q.question(), resp);
    if got {
        assert!(want, "claims a match hickory-proto does not see");
    }
    if parsed.is_ok() && plain_qname(resp) {
        assert_eq!(got, want, "verdict differs from hickory-proto's");
    }
}

/// hickory-proto's verdict: a response with one question equal to ours.
fn reference(question: &[u8], resp: &[u8]) -> bool {
    let mut d = BinDecoder::new(resp);
    let Ok(header) = Header::read(&mut d) else {
        return false;
    };
    if header.message_type() != MessageType::Response || header.query_count() != 1 {
        return false;
    }
    let Ok(theirs) = Query::read(&mut d) else {
        return false;
    };
    let Ok(ours) = Query::read(&mut BinDecoder::new(question)) else {
        panic!("hickory-proto cannot read the accepted question {question:02x?}");
    };
    // `Name`'s equality is ASCII case-insensitive.
    theirs.name() == ours.name()
        && u16::from(theirs.query_type()) == u16::from(ours.query_type())
        && u16::from(theirs.query_class()) == u16::from(ours.query_class())
}

/// Whether the response's first QNAME is plain labels ending in the root.
fn plain_qname(resp: &[u8]) -> bool {
    let mut pos = HEADER_LEN;
    loop {
        match resp.get(pos) {
            Some(0) => return true,
            Some(&len) if len <= 63 => pos += 1 + usize::from(len),
            _ => return false,
        }
    }
}
