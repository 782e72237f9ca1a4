//! What the proxy does to the OPT RR for the encrypted hop: EDNS(0) padding
//! of queries (RFC 7830, RFC 8467) and the edns-tcp-keepalive option that
//! asks the upstream for its idle timeout (RFC 7828); and making the response
//! fit for a plain-DNS client: removal of an OPT RR the proxy added itself
//! (RFC 6891 §7), or of the upstream's padding and keepalive options.

use super::query::Query;
use super::response::Response;
use super::walk::{
    Layout, OPT_RR_LEN, OPTION_KEEPALIVE, OPTION_PADDING, opt_without, splice_records, write_opt,
};
use super::{ARCOUNT, MessageError, counts, write_u16};
use crate::core::framing::MAX_MESSAGE_LEN;

/// Size of an option's code and length fields (RFC 6891 §6.1.2).
const OPTION_HEADER_LEN: usize = 4;

/// An edns-tcp-keepalive option without TIMEOUT, as a client sends it (RFC
/// 7828 §3.2.1).
const KEEPALIVE_OPTION: [u8; OPTION_HEADER_LEN] = {
    let [c0, c1] = OPTION_KEEPALIVE.to_be_bytes();
    [c0, c1, 0, 0]
};

/// The block size RFC 8467 §4.1 recommends for queries.
pub const QUERY_PADDING_BLOCK: usize = 128;

/// What [`Query::padded`] did.
#[must_use]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// A Padding option, and an edns-tcp-keepalive option unless the query
    /// had one, were added to the query's OPT RR.
    Padded,
    /// The query had no OPT: one holding an edns-tcp-keepalive option and
    /// the padding was appended. The response's OPT must be removed before
    /// the client sees it (RFC 6891 §7): [`Response::fit_for_client`] does.
    AddedOpt,
    /// The query carried Padding of its own: it was replaced by the proxy's,
    /// sized for the query as sent, and the edns-tcp-keepalive option added
    /// as for [`Padding::Padded`]. A plain-DNS client's padding hides nothing
    /// on the encrypted hop, and adding options after it would undo its block
    /// size anyway.
    Repadded,
    /// Not padded, message untouched (no keepalive option either): it is
    /// signed (TSIG or SIG(0) must stay last and covers the bytes), `block`
    /// is 0, or the padded message would not fit in 65535 bytes or break a
    /// compression pointer (a record after the OPT pointing into it, or with
    /// RDATA too short for its names).
    Skipped,
}

impl Query {
    /// The copy of the query sent upstream, with an edns-tcp-keepalive
    /// option (RFC 7828) and padded to a multiple of `block` bytes (RFC 7830,
    /// RFC 8467 §4.1 block-length padding; use [`QUERY_PADDING_BLOCK`]), and
    /// what padding did.
    ///
    /// The keepalive option is empty, as a client sends it (RFC 7828 §3.2.1):
    /// it asks the upstream for its idle timeout on this persistent
    /// connection. One the query already has (a TCP client may send it) is
    /// kept, never doubled. The Padding option (code 12, zero octets, RFC
    /// 7830 §3) comes last, sized for everything before it, keepalive
    /// included.
    ///
    /// With an OPT RR, its other options are kept in order and the two are
    /// appended to them (a Padding option of the client's is replaced).
    /// Without one, an OPT RR (root owner, payload
    /// [`EDNS_UDP_PAYLOAD`](super::EDNS_UDP_PAYLOAD), extended RCODE 0,
    /// version 0, DO 0) holding them is appended and ARCOUNT incremented.
    /// Records after the OPT keep valid compression pointers. All of it is
    /// one copy of the query.
    pub fn padded(&self, block: usize) -> (Vec<u8>, Padding) {
        let mut wire = self.bytes().to_vec();
        // An error leaves the copy untouched: it goes unpadded.
        let padding = pad(&mut wire, &self.layout, block).unwrap_or(Padding::Skipped);
        (wire, padding)
    }
}

/// Pads `msg`, laid out by `layout`, in place (see [`Query::padded`]). A
/// record after the OPT pointing into it, or with RDATA too short for the
/// names of its type (which the walk does not read), is an `Err`, and `msg`
/// is left untouched.
fn pad(msg: &mut Vec<u8>, layout: &Layout, block: usize) -> Result<Padding, MessageError> {
    if layout.signed || block == 0 {
        return Ok(Padding::Skipped);
    }
    match &layout.opt {
        Some(opt) => {
            // The whole OPT is replaced, RDLENGTH included, so that a pointer
            // into any byte of it is refused rather than left reading changed bytes.
            let mut rebuilt = opt_without(msg, opt, &[OPTION_PADDING]);
            if opt.keepalive.is_none() {
                rebuilt.extend_from_slice(&KEEPALIVE_OPTION);
            }
            let unpadded = msg.len() - opt.range.len() + rebuilt.len() + OPTION_HEADER_LEN;
            let fill = fill_len(unpadded, block);
            let rdlen_at = opt.rdata.start - 2 - opt.range.start;
            let rdlen = u16::try_from(rebuilt.len() + OPTION_HEADER_LEN + fill - rdlen_at - 2);
            let (Ok(rdlen), true) = (rdlen, fits_u16(unpadded + fill)) else {
                return Ok(Padding::Skipped);
            };
            rebuilt[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
            rebuilt.extend_from_slice(&padding_option(fill));
            if !splice_records(msg, opt.range.clone(), &rebuilt, layout.end)? {
                return Ok(Padding::Skipped);
            }
            Ok(if opt.has_padding {
                Padding::Repadded
            } else {
                Padding::Padded
            })
        }
        None => {
            let rdata_len = KEEPALIVE_OPTION.len() + OPTION_HEADER_LEN;
            let fill = fill_len(msg.len() + OPT_RR_LEN + rdata_len, block);
            let arcount = counts(msg).map(|c| c[3]).and_then(|ar| ar.checked_add(1));
            let (Some(arcount), true) =
                (arcount, fits_u16(msg.len() + OPT_RR_LEN + rdata_len + fill))
            else {
                return Ok(Padding::Skipped);
            };
            let mut rdata = Vec::with_capacity(rdata_len + fill);
            rdata.extend_from_slice(&KEEPALIVE_OPTION);
            rdata.extend_from_slice(&padding_option(fill));
            write_opt(msg, false, &rdata);
            write_u16(msg, ARCOUNT, arcount);
            Ok(Padding::AddedOpt)
        }
    }
}

impl Response {
    /// Makes the response fit for a client on plain UDP or TCP, given what
    /// padding did to its query ([`Query::padded`]):
    ///
    /// - [`Padding::AddedOpt`]: the client sent no OPT, so the response's OPT
    ///   RR goes and ARCOUNT is decremented (RFC 6891 §7). Its extended RCODE
    ///   bits are lost with it; a client without EDNS could not read them.
    /// - otherwise its Padding and edns-tcp-keepalive options go, the OPT and
    ///   its other options stay, in one rewrite of the OPT. Padding only
    ///   hides message sizes on the encrypted hop (RFC 7830 §1, RFC 8467
    ///   §4.1): the upstream pads its answer because the query was padded
    ///   there, and passing that on only makes a UDP answer bigger, so it
    ///   would be truncated where it fits. The keepalive option is the
    ///   upstream's idle timeout for the proxy's connection to it (RFC 7828
    ///   §3.3.2), read from the answer before this: it must never be sent
    ///   over UDP (RFC 7828 §3.2.2), and a TCP client's connection is the
    ///   proxy's, whose timing the upstream's timeout says nothing about.
    ///
    /// Without an OPT, or without those options in it, nothing changes.
    /// Records after the OPT keep valid compression pointers; one pointing
    /// into the OPT (or RDATA too short for the names of its type) is an
    /// `Err`, and the response is then untouched. The layout is updated with
    /// the edit, not walked again.
    pub fn fit_for_client(&mut self, padding: Padding) -> Result<(), MessageError> {
        let Some(opt) = &self.layout.opt else {
            return Ok(());
        };
        if padding == Padding::AddedOpt {
            // Removal only moves pointers backwards, so they always still fit.
            self.layout.replace_opt(&mut self.bytes, &[])?;
            // The OPT was counted in ARCOUNT, so it is at least 1.
            let arcount = counts(&self.bytes).map_or(0, |c| c[3].saturating_sub(1));
            write_u16(&mut self.bytes, ARCOUNT, arcount);
        } else if opt.has_padding || opt.keepalive.is_some() {
            let fitted = opt_without(&self.bytes, opt, &[OPTION_PADDING, OPTION_KEEPALIVE]);
            // Shrinking only moves pointers backwards, so they always still
            // fit. The whole OPT is replaced, as when padding, so a pointer
            // into any byte of it is refused rather than left reading changed
            // bytes.
            self.layout.replace_opt(&mut self.bytes, &fitted)?;
        }
        Ok(())
    }
}

/// Padding octets needed so that `len` plus them is a multiple of `block`.
fn fill_len(len: usize, block: usize) -> usize {
    (block - len % block) % block
}

fn fits_u16(len: usize) -> bool {
    len <= MAX_MESSAGE_LEN
}

/// A Padding option of `fill` zero octets (RFC 7830 §3); `fill` fits a u16.
fn padding_option(fill: usize) -> Vec<u8> {
    let mut option = Vec::with_capacity(OPTION_HEADER_LEN + fill);
    option.extend_from_slice(&OPTION_PADDING.to_be_bytes());
    option.extend_from_slice(&u16::try_from(fill).unwrap_or(0).to_be_bytes());
    option.resize(OPTION_HEADER_LEN + fill, 0);
    option
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Edns, Message, MessageType};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::{A, NS, TXT};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::super::test_support::{
        pad_query, parse, query_bytes, strip_opt, strip_padding, truncate_for_udp,
    };
    use super::super::{Query, walk::walk};
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("valid name")
    }

    /// The edns-tcp-keepalive options of the OPT of `msg` (RFC 7828 §3.1),
    /// as their data, read without the core's walk (hickory keeps one
    /// option per code).
    fn keepalives_of(msg: &[u8]) -> Vec<Vec<u8>> {
        let m = parse(msg);
        if m.extensions().is_none() {
            return Vec::new();
        }
        let layout = walk(msg).expect("valid");
        let opt = layout.opt.expect("has OPT");
        let mut out = Vec::new();
        let mut pos = opt.rdata.start;
        while pos < opt.rdata.end {
            let code = u16::from_be_bytes([msg[pos], msg[pos + 1]]);
            let len = usize::from(u16::from_be_bytes([msg[pos + 2], msg[pos + 3]]));
            if code == 11 {
                out.push(msg[pos + 4..pos + 4 + len].to_vec());
            }
            pos += 4 + len;
        }
        out
    }

    /// The codes of the options of the OPT of `msg`, in order.
    fn option_codes(msg: &[u8]) -> Vec<u16> {
        let layout = walk(msg).expect("valid");
        let opt = layout.opt.expect("has OPT");
        super::super::walk::options(msg, opt.rdata)
            .map(|o| o.expect("tiled").0)
            .collect()
    }

    fn padding_of(m: &Message) -> Option<usize> {
        match m.extensions().as_ref()?.options().get(EdnsCode::Padding)? {
            EdnsOption::Unknown(12, data) => {
                assert!(data.iter().all(|&b| b == 0), "RFC 7830 §3: zero octets");
                Some(data.len())
            }
            other => panic!("unexpected padding option {other:?}"),
        }
    }

    #[test]
    fn rfc8467_query_without_opt_gets_an_opt_padded_to_128() {
        let mut q = query_bytes("www.example.com.", RecordType::A, None);
        let question = q[12..].to_vec();
        assert_eq!(
            pad_query(&mut q, QUERY_PADDING_BLOCK),
            Ok(Padding::AddedOpt)
        );
        assert_eq!(q.len(), 128);
        let m = parse(&q);
        let edns = m.extensions().as_ref().expect("OPT added");
        assert_eq!(edns.max_payload(), super::super::EDNS_UDP_PAYLOAD);
        assert!(!edns.flags().dnssec_ok);
        assert_eq!((edns.version(), edns.rcode_high()), (0, 0));
        assert_eq!(padding_of(&m), Some(128 - 12 - question.len() - 11 - 4 - 4));
        // RFC 7828 §3.2.1: one keepalive option, empty; the padding last.
        assert_eq!(keepalives_of(&q), vec![Vec::<u8>::new()]);
        assert_eq!(option_codes(&q), [11, 12]);
        assert_eq!(q[12..12 + question.len()], question);
        assert_eq!(u16::from_be_bytes([q[10], q[11]]), 1);
        // Still a query the proxy accepts.
        assert!(
            Query::parse(&q)
                .expect("valid")
                .opt()
                .expect("OPT")
                .has_padding
        );
    }

    #[test]
    fn rfc7830_query_with_opt_gets_a_padding_option() {
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Query)
            .set_recursion_desired(true);
        m.add_query(hickory_proto::op::Query::query(
            name("example.org."),
            RecordType::AAAA,
        ));
        let mut edns = Edns::new();
        edns.set_max_payload(4096).set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Unknown(10, vec![9; 8]));
        m.set_edns(edns);
        let mut q = m.to_vec().expect("encodes");
        let before = q.len();
        assert_eq!(pad_query(&mut q, QUERY_PADDING_BLOCK), Ok(Padding::Padded));
        assert_eq!(q.len() % 128, 0);
        assert!(q.len() > before);
        let m = parse(&q);
        let edns = m.extensions().as_ref().expect("OPT kept");
        assert_eq!(edns.max_payload(), 4096);
        assert!(edns.flags().dnssec_ok);
        assert_eq!(
            edns.options().get(EdnsCode::Cookie),
            Some(&EdnsOption::Unknown(10, vec![9; 8]))
        );
        assert_eq!(padding_of(&m), Some(128 - before - 4 - 4));
        assert_eq!(u16::from_be_bytes([q[10], q[11]]), 1);
        // The client's options first, then keepalive (empty), then padding.
        assert_eq!(option_codes(&q), [10, 11, 12]);
        assert_eq!(keepalives_of(&q), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn rfc8467_every_query_length_is_padded_to_a_block() {
        // Every QNAME wire length from 3 to 255, so every residue mod 128.
        for wire_len in 3..=255usize {
            let mut qname = String::new();
            let mut left = wire_len - 1;
            while left > 0 {
                let mut label = 63.min(left - 1);
                if left - (label + 1) == 1 {
                    label -= 1;
                }
                qname.push_str(&"x".repeat(label));
                qname.push('.');
                left -= label + 1;
            }
            for edns in [None, Some((1232, false))] {
                let mut q = query_bytes(&qname, RecordType::A, edns);
                let before = q.len();
                // The keepalive option (4) and the Padding option's header
                // (4), plus the OPT RR (11) when one is added.
                let overhead = match pad_query(&mut q, QUERY_PADDING_BLOCK).expect("valid") {
                    Padding::Padded => 8,
                    Padding::AddedOpt => 19,
                    other => panic!("{other:?}"),
                };
                assert_eq!(q.len() % 128, 0, "{qname} {edns:?}");
                // The closest multiple: fewer than 128 padding octets.
                assert!(q.len() < before + overhead + 128, "{qname} {edns:?}");
                assert_eq!(parse(&q).queries()[0].name(), &name(&qname));
                assert_eq!(keepalives_of(&q).len(), 1, "{qname} {edns:?}");
            }
        }
    }

    #[test]
    fn rfc8467_padding_the_proxys_own_output_again_changes_nothing() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        assert_eq!(
            pad_query(&mut q, QUERY_PADDING_BLOCK),
            Ok(Padding::AddedOpt)
        );
        let padded = q.clone();
        assert_eq!(
            pad_query(&mut q, QUERY_PADDING_BLOCK),
            Ok(Padding::Repadded)
        );
        assert_eq!(q, padded);
    }

    #[test]
    fn rfc8467_a_clients_padding_is_replaced_by_the_proxys() {
        // A client padded for its own (plain) hop.
        let mut client = query_bytes("example.com.", RecordType::A, Some((1232, true)));
        let rdlen_at = client.len() - 2;
        let padding = [&[0, 12, 0, 20][..], &[0; 20]].concat();
        client[rdlen_at + 1] = 24;
        client.extend_from_slice(&padding);
        assert_eq!(option_codes(&client), [12]);
        assert_eq!(
            pad_query(&mut client, QUERY_PADDING_BLOCK),
            Ok(Padding::Repadded)
        );
        assert_eq!(client.len(), 128);
        assert_eq!(option_codes(&client), [11, 12]);
        assert!(
            parse(&client)
                .extensions()
                .as_ref()
                .expect("OPT")
                .flags()
                .dnssec_ok
        );
    }

    #[test]
    fn rfc7828_a_clients_keepalive_option_is_not_doubled() {
        // A TCP client may send one (RFC 7828 §3.2.1); a UDP client must
        // not, but if it does it is passed on as it came, once.
        let mut q = query_bytes("example.com.", RecordType::A, Some((1232, false)));
        let rdlen_at = q.len() - 2;
        q[rdlen_at + 1] = 4;
        q.extend_from_slice(&[0, 11, 0, 0]);
        let before = q.len();
        assert_eq!(pad_query(&mut q, QUERY_PADDING_BLOCK), Ok(Padding::Padded));
        assert_eq!(q.len() % 128, 0);
        assert_eq!(padding_of(&parse(&q)), Some(128 - before - 4));
        assert_eq!(keepalives_of(&q), vec![Vec::<u8>::new()]);
        assert_eq!(option_codes(&q), [11, 12]);
    }

    #[test]
    fn rfc8945_query_with_tsig_is_not_padded() {
        for rtype in [250u16, 24] {
            let mut q = query_bytes("example.com.", RecordType::A, Some((1232, false)));
            // A TSIG (or SIG(0)) record, last in the additional section.
            q.extend_from_slice(&[3, b'k', b'e', b'y', 0]);
            q.extend_from_slice(&rtype.to_be_bytes());
            q.extend_from_slice(&[0, 255, 0, 0, 0, 0, 0, 2, 0xAB, 0xCD]);
            q[11] = 2;
            Query::parse(&q).expect("valid");
            let before = q.clone();
            assert_eq!(pad_query(&mut q, QUERY_PADDING_BLOCK), Ok(Padding::Skipped));
            // Neither padding nor a keepalive option: the signature covers
            // the bytes.
            assert_eq!(q, before);
            assert!(keepalives_of(&q).is_empty());
        }
    }

    #[test]
    fn padding_past_65535_bytes_is_skipped() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        let before = q.clone();
        assert_eq!(pad_query(&mut q, 70_000), Ok(Padding::Skipped));
        assert_eq!(pad_query(&mut q, 0), Ok(Padding::Skipped));
        assert_eq!(q, before);
        assert_eq!(pad_query(&mut q, 65_535), Ok(Padding::AddedOpt));
        assert_eq!(q.len(), 65_535);
    }

    #[test]
    fn malformed_query_is_an_error_and_untouched() {
        let mut q = query_bytes("example.com.", RecordType::A, None);
        q.push(0);
        let before = q.clone();
        assert_eq!(
            pad_query(&mut q, QUERY_PADDING_BLOCK),
            Err(MessageError::TrailingBytes { len: 1 })
        );
        assert_eq!(q, before);
        assert_eq!(
            pad_query(&mut vec![0; 5], QUERY_PADDING_BLOCK),
            Err(MessageError::TooShort { len: 5 })
        );
    }

    #[test]
    fn rfc6891_added_opt_is_stripped_from_the_response() {
        let mut q = query_bytes("www.example.com.", RecordType::A, None);
        assert_eq!(
            pad_query(&mut q, QUERY_PADDING_BLOCK),
            Ok(Padding::AddedOpt)
        );
        // The upstream answers with an OPT of its own, padded to 468.
        let mut r = parse(&q);
        r.set_message_type(MessageType::Response)
            .set_authentic_data(true);
        r.add_answer(Record::from_rdata(
            name("www.example.com."),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        r.add_additional(Record::from_rdata(
            name("ns.example.com."),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
        ));
        if let Some(edns) = r.extensions_mut() {
            edns.options_mut().remove(EdnsCode::Padding);
            edns.options_mut()
                .insert(EdnsOption::Unknown(12, vec![0; 300]));
        }
        let mut resp = r.to_vec().expect("encodes");
        strip_opt(&mut resp).expect("valid");
        let m = parse(&resp);
        assert!(m.extensions().is_none());
        assert_eq!(u16::from_be_bytes([resp[10], resp[11]]), 1);
        assert_eq!(m.answers(), r.answers());
        assert_eq!(m.additionals(), r.additionals());
        assert!(m.authentic_data());
        // Stripping again is a no-op.
        let stripped = resp.clone();
        strip_opt(&mut resp).expect("valid");
        assert_eq!(resp, stripped);
    }

    /// A response whose OPT is not the last record: a record after it is owned
    /// by a compression pointer into a record that also follows it.
    fn response_with_opt_in_the_middle() -> Vec<u8> {
        response_with_padded_opt_in_the_middle(None)
    }

    /// The same, its OPT carrying a Padding option of `padding` octets.
    fn response_with_padded_opt_in_the_middle(padding: Option<usize>) -> Vec<u8> {
        let mut r = Message::new();
        r.set_id(9).set_message_type(MessageType::Response);
        r.add_query(hickory_proto::op::Query::query(
            name("example.com."),
            RecordType::NS,
        ));
        r.add_answer(Record::from_rdata(
            name("example.com."),
            60,
            RData::NS(NS(name("ns1.example.com."))),
        ));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        if let Some(len) = padding {
            edns.options_mut()
                .insert(EdnsOption::Unknown(12, vec![0; len]));
        }
        r.set_edns(edns);
        let mut resp = r.to_vec().expect("encodes");
        // Additional: [OPT], then ns2.example.com A, then an MX owned by a
        // pointer to ns2 (after the OPT) whose exchange points there too.
        let ns2 = resp.len();
        resp.extend_from_slice(b"\x03ns2\xC0\x0C");
        resp.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2]);
        resp.extend_from_slice(&[0xC0, ns2 as u8, 0, 15, 0, 1, 0, 0, 0, 60, 0, 4, 0, 10]);
        resp.extend_from_slice(&[0xC0, ns2 as u8]);
        resp[11] = 3;
        resp
    }

    #[test]
    fn rfc1035_strip_opt_keeps_later_compression_pointers_valid() {
        let mut resp = response_with_opt_in_the_middle();
        let before = parse(&resp);
        strip_opt(&mut resp).expect("valid");
        let after = parse(&resp);
        assert!(after.extensions().is_none());
        assert_eq!(after.additionals(), before.additionals());
        assert_eq!(after.additionals()[1].name(), &name("ns2.example.com."));
        assert_eq!(after.answers(), before.answers());
    }

    #[test]
    fn rfc1035_padding_keeps_later_compression_pointers_valid() {
        let mut q = response_with_opt_in_the_middle();
        q[2] &= !0x80; // make it a query
        let before = parse(&q);
        assert_eq!(pad_query(&mut q, QUERY_PADDING_BLOCK), Ok(Padding::Padded));
        assert_eq!(q.len() % 128, 0);
        let after = parse(&q);
        assert_eq!(after.additionals(), before.additionals());
        assert!(padding_of(&after).is_some());
    }

    #[test]
    fn rfc1035_padding_refuses_a_pointer_into_the_opt_it_rewrites() {
        let mut q = query_bytes("example.com.", RecordType::A, Some((1232, false)));
        // A record owned by a pointer to the OPT's RDLENGTH low byte (0: a
        // root), which padding rewrites.
        let rdlen_low = u8::try_from(q.len() - 1).expect("short query");
        q.extend_from_slice(&[0xC0, rdlen_low, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        q[11] = 2;
        Query::parse(&q).expect("valid");
        let before = q.clone();
        // Skipped, and the query goes unpadded.
        assert_eq!(pad_query(&mut q, QUERY_PADDING_BLOCK), Ok(Padding::Skipped));
        assert_eq!(q, before);
    }

    #[test]
    fn strip_opt_on_malformed_response_is_an_error() {
        let mut resp = response_with_opt_in_the_middle();
        resp.truncate(resp.len() - 1);
        assert!(strip_opt(&mut resp).is_err());
    }

    /// A response to `name` TXT with `answers` and an OPT (payload 1232, DO,
    /// a cookie) padded with `padding` octets, as an upstream sends it.
    fn padded_response(answers: &[&str], padding: Option<usize>) -> Message {
        let mut r = Message::new();
        r.set_id(3)
            .set_message_type(MessageType::Response)
            .set_recursion_desired(true)
            .set_recursion_available(true);
        r.add_query(hickory_proto::op::Query::query(
            name("medium.example."),
            RecordType::TXT,
        ));
        for text in answers {
            r.add_answer(Record::from_rdata(
                name("medium.example."),
                60,
                RData::TXT(TXT::new(vec![(*text).to_owned()])),
            ));
        }
        let mut edns = Edns::new();
        edns.set_max_payload(1232).set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Unknown(10, vec![7; 16]));
        if let Some(len) = padding {
            edns.options_mut()
                .insert(EdnsOption::Unknown(12, vec![0; len]));
        }
        r.set_edns(edns);
        r
    }

    #[test]
    fn rfc7830_upstream_padding_is_removed_and_the_opt_kept() {
        let r = padded_response(&["a", "b"], Some(300));
        let mut resp = r.to_vec().expect("encodes");
        let before = resp.len();
        strip_padding(&mut resp).expect("valid");
        assert_eq!(resp.len(), before - 4 - 300);
        let m = parse(&resp);
        let edns = m.extensions().as_ref().expect("OPT kept");
        assert_eq!(padding_of(&m), None);
        assert_eq!(
            edns.options().get(EdnsCode::Cookie),
            Some(&EdnsOption::Unknown(10, vec![7; 16]))
        );
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok);
        assert_eq!(m.answers(), r.answers());
        assert_eq!(m.queries(), r.queries());
        assert_eq!(u16::from_be_bytes([resp[10], resp[11]]), 1);
        // Stripping again is a no-op.
        let stripped = resp.clone();
        strip_padding(&mut resp).expect("valid");
        assert_eq!(resp, stripped);
    }

    #[test]
    fn rfc7830_response_without_padding_is_untouched() {
        let mut with_opt = padded_response(&["a"], None).to_vec().expect("encodes");
        let before = with_opt.clone();
        strip_padding(&mut with_opt).expect("valid");
        assert_eq!(with_opt, before);

        let mut no_opt = with_opt;
        strip_opt(&mut no_opt).expect("valid");
        let before = no_opt.clone();
        strip_padding(&mut no_opt).expect("valid");
        assert_eq!(no_opt, before);
    }

    #[test]
    fn rfc7830_every_padding_option_is_removed() {
        // The OPT is the last record: append padding, a cookie and padding
        // again to its RDATA by hand (hickory keeps one option per code).
        let mut resp = padded_response(&["a"], None).to_vec().expect("encodes");
        let rdlen_at = resp.len() - 2 - (4 + 16);
        let extra = [
            &[0, 12, 0, 3, 0, 0, 0][..],
            &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0, 12, 0, 0],
        ]
        .concat();
        resp.extend_from_slice(&extra);
        let rdlen = u16::from_be_bytes([resp[rdlen_at], resp[rdlen_at + 1]]);
        let rdlen = rdlen + u16::try_from(extra.len()).expect("short");
        resp[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        parse(&resp);
        let before = resp.len();
        strip_padding(&mut resp).expect("valid");
        assert_eq!(resp.len(), before - 7 - 4);
        // The options that are not padding stay, in order.
        assert_eq!(
            resp[rdlen_at + 2..],
            [
                &[0, 10, 0, 16][..],
                &[7; 16],
                &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]
            ]
            .concat()
        );
        assert_eq!(padding_of(&parse(&resp)), None);
    }

    /// `r` with an edns-tcp-keepalive option holding `data` added to its OPT.
    fn with_keepalive(mut r: Message, data: &[u8]) -> Vec<u8> {
        r.extensions_mut()
            .as_mut()
            .expect("has OPT")
            .options_mut()
            .insert(EdnsOption::Unknown(11, data.to_vec()));
        r.to_vec().expect("encodes")
    }

    #[test]
    fn rfc7828_the_upstreams_timeout_is_read_by_the_walk() {
        let resp = with_keepalive(padded_response(&["a"], Some(20)), &[0, 10]);
        let r = Response::parse(resp).expect("valid");
        assert_eq!(
            r.keepalive_timeout(),
            Some(std::time::Duration::from_secs(1))
        );
        let zero = with_keepalive(padded_response(&["a"], None), &[0, 0]);
        assert_eq!(
            Response::parse(zero).expect("valid").keepalive_timeout(),
            Some(std::time::Duration::ZERO)
        );
        // No TIMEOUT, or one of the wrong length: none to honour.
        for data in [&[][..], &[1], &[0, 10, 0]] {
            let resp = with_keepalive(padded_response(&["a"], None), data);
            let r = Response::parse(resp).expect("valid");
            assert!(r.opt().expect("OPT").keepalive.is_some());
            assert_eq!(r.keepalive_timeout(), None, "{data:?}");
        }
        let none = padded_response(&["a"], None).to_vec().expect("encodes");
        assert_eq!(
            Response::parse(none).expect("valid").keepalive_timeout(),
            None
        );
    }

    #[test]
    fn rfc7828_the_upstreams_keepalive_option_never_reaches_the_client() {
        for padding in [Some(40), None] {
            let r = padded_response(&["a", "b"], padding);
            let mut resp = with_keepalive(r.clone(), &[0, 10]);
            let before = resp.len();
            strip_padding(&mut resp).expect("valid");
            assert_eq!(resp.len(), before - 6 - padding.map_or(0, |p| 4 + p));
            assert_eq!(option_codes(&resp), [10], "only the cookie stays");
            let m = parse(&resp);
            assert_eq!(m.answers(), r.answers());
            assert!(m.extensions().as_ref().expect("OPT kept").flags().dnssec_ok);

            // The OPT the proxy added goes whole, keepalive with it.
            let mut resp = with_keepalive(r, &[0, 10]);
            strip_opt(&mut resp).expect("valid");
            assert!(parse(&resp).extensions().is_none());
        }
    }

    #[test]
    fn rfc1035_strip_padding_keeps_later_compression_pointers_valid() {
        let mut resp = response_with_padded_opt_in_the_middle(Some(40));
        let before = parse(&resp);
        assert_eq!(padding_of(&before), Some(40));
        strip_padding(&mut resp).expect("valid");
        let after = parse(&resp);
        assert!(after.extensions().is_some());
        assert_eq!(padding_of(&after), None);
        assert_eq!(after.additionals(), before.additionals());
        assert_eq!(after.additionals()[1].name(), &name("ns2.example.com."));
        assert_eq!(after.answers(), before.answers());
    }

    #[test]
    fn rfc8467_answer_that_fits_unpadded_is_not_truncated_for_udp() {
        // About 1.1 KB of answers, padded by the upstream to a multiple of
        // 468 (RFC 8467 §4.1): 1404 bytes, over the 1232 a UDP client takes.
        let texts: Vec<String> = (0..10).map(|i| format!("{i:0>90}")).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let unpadded = padded_response(&texts, None)
            .to_vec()
            .expect("encodes")
            .len();
        assert!((1000..1232).contains(&unpadded), "{unpadded}");
        let fill = 1404 - unpadded - 4;
        let mut resp = padded_response(&texts, Some(fill))
            .to_vec()
            .expect("encodes");
        assert_eq!(resp.len(), 1404);
        strip_padding(&mut resp).expect("valid");
        assert_eq!(resp.len(), unpadded);
        assert_eq!(truncate_for_udp(&resp, 1232), Ok(None));
    }

    /// Found by the `padding` fuzz target: an owner name points at the second
    /// byte of a pointer (off a label start: RFC 1035 §4.1.4), so its labels
    /// run over pointers that removing the OPT moves. Rewriting them would
    /// change that name's label lengths and leave a message the walk rejects.
    #[test]
    fn removing_the_opt_refuses_a_name_that_runs_over_a_moving_pointer() {
        let input = include_bytes!(
            "../../../../fuzz/regressions/padding/name-through-moved-pointer-runs-over-another"
        );
        let msg = input[1..].to_vec(); // the fuzz input's first byte is the block size
        let mut view = Response::parse(msg.clone()).expect("the walk accepts it");
        assert_eq!(
            view.fit_for_client(Padding::AddedOpt),
            Err(MessageError::BadPointer { offset: 148 })
        );
        assert_eq!(view.bytes(), &msg[..], "left untouched");
    }

    #[test]
    fn strip_padding_refuses_a_pointer_into_the_opt_and_malformed_input() {
        // A record after the OPT owned by a pointer to the OPT's root owner.
        let mut resp = padded_response(&["a"], Some(8)).to_vec().expect("encodes");
        let opt_at = u8::try_from(resp.len() - 11 - (4 + 16) - (4 + 8)).expect("short");
        let record = resp.len();
        resp.extend_from_slice(&[0xC0, opt_at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        resp[11] = 2;
        walk(&resp).expect("valid");
        let before = resp.clone();
        assert_eq!(
            strip_padding(&mut resp),
            Err(MessageError::PointerIntoOpt { offset: record })
        );
        assert_eq!(resp, before);

        resp.truncate(resp.len() - 1);
        let before = resp.clone();
        assert!(strip_padding(&mut resp).is_err());
        assert_eq!(resp, before);
    }
}
