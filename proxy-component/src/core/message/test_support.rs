//! Builders and an independent parser (hickory-proto) for the unit tests.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use super::{MessageError, Padding, QueryError, Response};

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

// The views' methods as edits of plain bytes, so tests state inputs and
// outputs as wire bytes. Each checks that the layout a view keeps through
// its edit is the one a fresh walk finds.

/// [`super::Query::padded`] on valid query bytes, in place; a query that does not
/// parse is the error inside its [`QueryError`] (NOTIMP: none).
pub(crate) fn pad_query(q: &mut Vec<u8>, block: usize) -> Result<Padding, MessageError> {
    let query = match super::Query::parse(q) {
        Ok(query) => query,
        Err(QueryError::Drop(e) | QueryError::FormErr(e)) => return Err(e),
        Err(e) => panic!("{e}"),
    };
    let (padded, padding) = query.padded(block);
    *q = padded;
    Ok(padding)
}

/// [`Response::fit_for_client`] on response bytes, in place; untouched on
/// an error.
pub(crate) fn fit_for_client(resp: &mut Vec<u8>, padding: Padding) -> Result<(), MessageError> {
    let mut r = Response::parse(resp.clone())?;
    let before = r.clone();
    let result = r.fit_for_client(padding);
    if result.is_err() {
        assert_eq!(r, before, "an error changed the response");
    }
    assert_layout_kept(&r);
    *resp = r.into_bytes();
    result
}

/// The OPT the proxy added goes.
pub(crate) fn strip_opt(resp: &mut Vec<u8>) -> Result<(), MessageError> {
    fit_for_client(resp, Padding::AddedOpt)
}

/// The upstream's padding goes.
pub(crate) fn strip_padding(resp: &mut Vec<u8>) -> Result<(), MessageError> {
    fit_for_client(resp, Padding::Padded)
}

/// [`Response::truncate_for_udp`] on response bytes: `None` if sent as is.
pub(crate) fn truncate_for_udp(resp: &[u8], limit: usize) -> Result<Option<Vec<u8>>, MessageError> {
    let mut r = Response::parse(resp.to_vec())?;
    if !r.truncate_for_udp(limit) {
        assert_eq!(r.bytes(), resp, "changed but not truncated");
        return Ok(None);
    }
    assert_layout_kept(&r);
    Ok(Some(r.into_bytes()))
}

fn assert_layout_kept(r: &Response) {
    assert_eq!(
        Response::parse(r.bytes().to_vec()).as_ref(),
        Ok(r),
        "the layout kept differs from a fresh walk"
    );
}
