//! Builders and an independent parser (hickory-proto) for the unit tests.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// A query with ID 0x4242 and RD=1 for `name`/`rtype`, with an OPT of
/// `(payload, dnssec_ok)` if given, encoded by hickory-proto.
pub(crate) fn query_bytes(name: &str, rtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        rtype,
    ));
    if let Some((payload, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload).set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("hickory encodes")
}

/// Parses with hickory-proto, failing the test if it does not parse.
pub(crate) fn parse(msg: &[u8]) -> Message {
    match Message::from_vec(msg) {
        Ok(m) => m,
        Err(e) => panic!("hickory rejects {msg:02x?}: {e}"),
    }
}
