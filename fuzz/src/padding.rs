//! EDNS(0) padding of queries (`pad_query`, RFC 7830, RFC 8467) and removal
//! of an OPT RR (`strip_opt`, RFC 6891 §7).
//!
//! Input: `[block, message..]`; the block size is the byte (0 to 254), or 468
//! (RFC 8467's response block) for 255. The message goes through `pad_query`
//! and, separately, through `strip_opt`.
//!
//! Checked for padding: an error or a skip leaves the message untouched; a
//! padded message is a multiple of the block, grew by the option (4 octets)
//! or the OPT (15) plus fewer than `block` zero octets, fits in 65535 bytes,
//! still parses, is not padded twice; the OPT added to a query without one is
//! exactly [root, OPT, 1232, 0, 0, DO=0, Padding] and `strip_opt` gives back
//! the original bytes; and for every padded message, stripping its OPT gives
//! the same bytes as stripping the original's (padding changes nothing else,
//! compression pointers included). Checked for stripping: an error leaves the
//! message untouched; the result has no OPT (a second strip changes nothing),
//! ARCOUNT is one less exactly when an OPT went, and where hickory-proto reads
//! the message it reads the result with the same header, questions and records
//! (for the few types with names in RDATA that hickory-proto and the core
//! treat differently, all but the RDATA).

use dnsproxy_core::core::message::{Padding, pad_query, strip_opt};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::wire::{HEADER_LEN, be16, hickory, layout};

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some((&b, msg)) = data.split_first() else {
        return;
    };
    let block = if b == u8::MAX { 468 } else { usize::from(b) };
    check_pad(msg, block);
    check_strip(msg);
}

fn check_pad(msg: &[u8], block: usize) {
    let mut padded = msg.to_vec();
    let result = pad_query(&mut padded, block);
    let overhead = match result {
        Ok(Padding::Padded) => 4,
        Ok(Padding::AddedOpt) => 15,
        Ok(_) | Err(_) => {
            assert_eq!(padded, msg, "{result:?} changed the message");
            return;
        }
    };
    assert!(block > 0);
    assert_eq!(padded.len() % block, 0, "not a multiple of {block}");
    assert!(padded.len() <= 65_535);
    let grown = padded.len() - msg.len();
    assert!(
        grown >= overhead && grown - overhead < block,
        "grew by {grown}"
    );

    let again = padded.clone();
    assert_eq!(
        pad_query(&mut padded, block),
        Ok(Padding::AlreadyPadded),
        "padded twice"
    );
    assert_eq!(padded, again);

    if result == Ok(Padding::AddedOpt) {
        let fill = grown - overhead;
        let arcount = be16(msg, 10).expect("header") + 1;
        assert_eq!(padded[10..12], arcount.to_be_bytes());
        assert_eq!(padded[..10], msg[..10]);
        assert_eq!(padded[HEADER_LEN..msg.len()], msg[HEADER_LEN..]);
        let opt = &padded[msg.len()..];
        let rdlen = u16::try_from(4 + fill).expect("fits");
        let fill16 = u16::try_from(fill).expect("fits");
        let mut want = vec![0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0];
        want.extend_from_slice(&rdlen.to_be_bytes());
        want.extend_from_slice(&[0, 12]);
        want.extend_from_slice(&fill16.to_be_bytes());
        want.resize(want.len() + fill, 0);
        assert_eq!(opt, want, "the added OPT");
        let mut stripped = padded.clone();
        strip_opt(&mut stripped).expect("the core reads its own OPT");
        assert_eq!(stripped, msg, "strip_opt does not undo the added OPT");
    }

    // Padding only touched the OPT: without it, both are the same message.
    let mut orig = msg.to_vec();
    let mut new = padded.clone();
    match (strip_opt(&mut orig), strip_opt(&mut new)) {
        (Ok(()), Ok(())) => assert_eq!(new, orig, "padding changed more than the OPT"),
        // A record after the OPT pointing into it: that OPT cannot be removed
        // from either (the error's offset moved with the padding).
        (Err(_), Err(_)) => {}
        (a, b) => panic!("strip_opt: {a:?} on the query, {b:?} once padded"),
    }
}

fn check_strip(msg: &[u8]) {
    let mut stripped = msg.to_vec();
    if strip_opt(&mut stripped).is_err() {
        assert_eq!(stripped, msg, "an error changed the message");
        return;
    }
    let once = stripped.clone();
    strip_opt(&mut stripped).expect("the result still parses");
    assert_eq!(stripped, once, "a second OPT was stripped");

    let had_opt = layout(msg).and_then(|l| l.opt().map(|rr| rr.range.len()));
    let arcount = |m: &[u8]| be16(m, 10).expect("header");
    match had_opt {
        None => assert_eq!(stripped, msg, "changed a message without OPT"),
        Some(opt_len) => {
            assert_eq!(arcount(&stripped) + 1, arcount(msg));
            assert_eq!(stripped.len() + opt_len, msg.len());
            assert!(layout(&stripped).is_some_and(|l| l.opt().is_none()));
        }
    }

    let Some(before) = hickory(msg) else {
        return;
    };
    if unchecked_rdata_pointer(msg) {
        // The core leaves names in RDATA it does not edit unchecked, and
        // treats SVCB and HTTPS RDATA as opaque. A pointer there into the
        // header (malformed: RFC 1035 §4.1.4) reads ARCOUNT, which stripping
        // changes; one in SVCB/HTTPS (malformed: RFC 9460 §2.2) can read the
        // bytes that move. hickory-proto follows both.
        return;
    }
    let after = hickory(&stripped).expect("hickory-proto reads the stripped message");
    assert!(after.extensions().is_none());
    assert_eq!(after.id(), before.id());
    assert_eq!(after.message_type(), before.message_type());
    assert_eq!(after.op_code(), before.op_code());
    assert!(
        after.header().flags() == before.header().flags(),
        "header flags"
    );
    assert_eq!(after.queries(), before.queries());
    assert_eq!(fields(after.answers()), fields(before.answers()));
    assert_eq!(fields(after.name_servers()), fields(before.name_servers()));
    assert_eq!(fields(after.additionals()), fields(before.additionals()));
    assert_eq!(fields(after.signature()), fields(before.signature()));
}

/// Types whose RDATA holds names the core keeps valid when records move (RFC
/// 3597 §4: MD, MF, MB, MG, MR, MINFO, RP, AFSDB, RT, SIG, PX, NXT) but that
/// hickory-proto keeps as raw bytes: a compression pointer moved with its
/// target shows there as different bytes for the same name.
const RAW_TYPES_WITH_NAMES: [u16; 12] = [3, 4, 7, 8, 9, 14, 17, 18, 21, 24, 26, 30];

/// Types whose RDATA names must not be compressed (RFC 9460 §2.2: SVCB,
/// HTTPS; ANAME is a draft), so the core rightly leaves their bytes alone
/// (RFC 3597 §4), but whose names hickory-proto decompresses anyway: a
/// crafted pointer there reads differently once the bytes it points to move.
const OPAQUE_TYPES_WITH_NAMES: [u16; 3] = [64, 65, 65305];

type Fields = (Name, RecordType, DNSClass, u32, Option<RData>);

/// Types whose RDATA hickory-proto reads names from (RFC 1035, RFC 3597 §4,
/// DNAME, SVCB, HTTPS, ANAME).
const NAME_TYPES: [u16; 23] = [
    2, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15, 17, 18, 21, 24, 26, 30, 33, 35, 39, 64, 65, 65305,
];

/// Whether the RDATA of a record of those types holds two bytes that read as a
/// compression pointer into the header, or, for SVCB and HTTPS, as any
/// pointer (conservatively: anywhere in the RDATA).
fn unchecked_rdata_pointer(msg: &[u8]) -> bool {
    let Some(layout) = layout(msg) else {
        return true;
    };
    layout.records.iter().any(|(_, rr)| {
        let opaque = OPAQUE_TYPES_WITH_NAMES.contains(&rr.rtype);
        NAME_TYPES.contains(&rr.rtype)
            && msg[rr.rdata.clone()].windows(2).any(|w| {
                let target = usize::from(u16::from_be_bytes([w[0] & 0x3F, w[1]]));
                w[0] & 0xC0 == 0xC0 && (opaque || target < HEADER_LEN)
            })
    })
}

/// A record's fields, its RDATA left out for the types above.
fn fields(records: &[Record]) -> Vec<Fields> {
    records
        .iter()
        .map(|r| {
            let raw_names = matches!(r.data(), RData::Unknown { code, .. }
                if RAW_TYPES_WITH_NAMES.contains(&u16::from(*code)));
            let opaque = OPAQUE_TYPES_WITH_NAMES.contains(&u16::from(r.record_type()));
            let rdata = (!raw_names && !opaque).then(|| r.data().clone());
            (
                r.name().clone(),
                r.record_type(),
                r.dns_class(),
                r.ttl(),
                rdata,
            )
        })
        .collect()
}
