//! EDNS(0) padding of queries with an edns-tcp-keepalive option
//! (`Query::padded`, RFC 7830, RFC 8467, RFC 7828) and making a response fit
//! for a plain-DNS client (`Response::fit_for_client`): removal of the OPT RR
//! the proxy added (RFC 6891 §7) or of the upstream's padding and keepalive
//! options.
//!
//! Input: `[block, message..]`; the block size is the byte (0 to 254), or 468
//! (RFC 8467's response block) for 255. The message goes through
//! `Query::padded` if the proxy accepts it as a query and, separately, through
//! `fit_for_client` both ways if the core's walk accepts it as a response.
//!
//! Checked for padding: a skip leaves the copy as the query was; a padded
//! message is a multiple of the block, grew (from the query without its own
//! Padding options) by the Padding option's header (4 octets), an empty
//! keepalive option (4) unless the query had one, and the OPT (11) if it had
//! none, plus fewer than `block` zero octets; it fits in 65535 bytes, still
//! parses, and padding it again changes nothing; its options are the
//! query's but Padding, in order, then the keepalive option if the query had
//! none, then one Padding option, last; the OPT added to a query without one
//! is exactly [root, OPT, 1232, 0, 0, DO=0, keepalive, Padding] and removing
//! it gives back the original bytes; and for every padded message, removing
//! its OPT gives the same bytes as removing the original's (padding changes
//! nothing else, compression pointers included). Checked for both ways of
//! fitting: an error leaves the response untouched; the layout the view keeps
//! is the one a fresh walk of the result finds; a second pass changes
//! nothing. Removing the OPT: the result has none, ARCOUNT is one less
//! exactly when an OPT went. Removing padding and keepalive: the OPT stays
//! with its fields, its other options stay in order, ARCOUNT is unchanged. Either way, where
//! hickory-proto reads the message it reads the result with the same header,
//! questions and records (for the few types with names in RDATA that
//! hickory-proto and the core treat differently, all but the RDATA).

use std::collections::HashSet;

use dnsproxy_core::core::message::{MessageError, Padding, Query, Response};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::wire::{
    HEADER_LEN, OPTION_KEEPALIVE, OPTION_PADDING, be16, hickory, layout, opt_options,
};

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some((&b, msg)) = data.split_first() else {
        return;
    };
    let block = if b == u8::MAX { 468 } else { usize::from(b) };
    check_pad(msg, block);
    check_fit(msg, Padding::AddedOpt);
    check_fit(msg, Padding::Padded);
}

/// `msg` through `Response::fit_for_client` for a query that was padded
/// that way: `None` if the walk rejects it as a response.
fn fit(msg: &[u8], padding: Padding) -> Option<Result<Vec<u8>, MessageError>> {
    let mut view = Response::parse(msg.to_vec()).ok()?;
    let before = view.clone();
    Some(match view.fit_for_client(padding) {
        Ok(()) => {
            assert_eq!(
                Response::parse(view.bytes().to_vec()).as_ref(),
                Ok(&view),
                "the layout kept differs from the walk of the result"
            );
            Ok(view.into_bytes())
        }
        Err(e) => {
            assert_eq!(view, before, "an error changed the response");
            Err(e)
        }
    })
}

fn check_pad(msg: &[u8], block: usize) {
    let Ok(query) = Query::parse(msg) else {
        return;
    };
    let (padded, result) = query.padded(block);
    let before = layout(msg).expect("an accepted query lays out");
    let options = before.opt().map_or_else(Vec::new, |rr| {
        opt_options(msg, rr.rdata.clone()).expect("the core checked the options")
    });
    let own_padding: usize = options
        .iter()
        .filter(|(code, _)| *code == OPTION_PADDING)
        .map(|(_, bytes)| bytes.len())
        .sum();
    let had_keepalive = options.iter().any(|(code, _)| *code == OPTION_KEEPALIVE);
    let keepalive = if had_keepalive { 0 } else { 4 };
    let overhead = match result {
        Padding::Padded | Padding::Repadded => {
            assert_eq!(result == Padding::Repadded, own_padding > 0, "{result:?}");
            4 + keepalive
        }
        Padding::AddedOpt => 11 + 4 + keepalive,
        _ => {
            assert_eq!(padded, msg, "{result:?} changed the message");
            return;
        }
    };
    assert!(block > 0);
    assert_eq!(padded.len() % block, 0, "not a multiple of {block}");
    assert!(padded.len() <= 65_535);
    let grown = padded.len() - (msg.len() - own_padding);
    assert!(
        grown >= overhead && grown - overhead < block,
        "grew by {grown}"
    );

    let again = Query::parse(&padded).expect("the padded query still parses");
    assert_eq!(
        again.padded(block),
        (padded.clone(), Padding::Repadded),
        "padding again changed it"
    );

    // RFC 7828 §3.2.1: an empty keepalive option unless the client sent one;
    // RFC 7830: one Padding option, last, after everything it is sized for.
    let after = layout(&padded).expect("the padded query lays out");
    let rr = after.opt().expect("a padded query has an OPT");
    let new_options = opt_options(&padded, rr.rdata.clone()).expect("tiled");
    let (last, rest) = new_options.split_last().expect("options");
    assert_eq!(last.0, OPTION_PADDING, "Padding last");
    let mut want: Vec<&[u8]> = options
        .iter()
        .filter(|(code, _)| *code != OPTION_PADDING)
        .map(|(_, bytes)| *bytes)
        .collect();
    if !had_keepalive {
        want.push(&[0, 11, 0, 0]);
    }
    let got: Vec<&[u8]> = rest.iter().map(|(_, bytes)| *bytes).collect();
    assert_eq!(got, want, "the query's options, then keepalive");

    if result == Padding::AddedOpt {
        let fill = grown - overhead;
        let arcount = be16(msg, 10).expect("header") + 1;
        assert_eq!(padded[10..12], arcount.to_be_bytes());
        assert_eq!(padded[..10], msg[..10]);
        assert_eq!(padded[HEADER_LEN..msg.len()], msg[HEADER_LEN..]);
        let opt = &padded[msg.len()..];
        let rdlen = u16::try_from(8 + fill).expect("fits");
        let fill16 = u16::try_from(fill).expect("fits");
        let mut want = vec![0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0];
        want.extend_from_slice(&rdlen.to_be_bytes());
        want.extend_from_slice(&[0, 11, 0, 0, 0, 12]);
        want.extend_from_slice(&fill16.to_be_bytes());
        want.resize(want.len() + fill, 0);
        assert_eq!(opt, want, "the added OPT");
        let stripped = fit(&padded, Padding::AddedOpt).expect("the core reads its own OPT");
        assert_eq!(
            stripped.as_deref(),
            Ok(msg),
            "removing the added OPT does not undo it"
        );
    }

    // Padding only touched the OPT: without it, both are the same message.
    let walked = "an accepted query walks";
    match (
        fit(msg, Padding::AddedOpt).expect(walked),
        fit(&padded, Padding::AddedOpt).expect(walked),
    ) {
        (Ok(orig), Ok(new)) => assert_eq!(new, orig, "padding changed more than the OPT"),
        // A record after the OPT pointing into it: that OPT cannot be removed
        // from either (the error's offset moved with the padding).
        (Err(_), Err(_)) => {}
        (a, b) => panic!("removing the OPT: {a:?} on the query, {b:?} once padded"),
    }
}

fn check_fit(msg: &[u8], padding: Padding) {
    let Some(Ok(fitted)) = fit(msg, padding) else {
        return;
    };
    let twice = fit(&fitted, padding).expect("the result still parses");
    assert_eq!(twice.as_ref(), Ok(&fitted), "a second pass changed it");

    let before = layout(msg).expect("the core walked it");
    let after = layout(&fitted).expect("the core walked its result");
    let arcount = |m: &[u8]| be16(m, 10).expect("header");
    match (before.opt(), padding) {
        (None, _) => assert_eq!(fitted, msg, "changed a message without OPT"),
        (Some(rr), Padding::AddedOpt) => {
            assert_eq!(arcount(&fitted) + 1, arcount(msg));
            assert_eq!(fitted.len() + rr.range.len(), msg.len());
            assert!(after.opt().is_none());
        }
        (Some(rr), _) => {
            let options = opt_options(msg, rr.rdata.clone()).expect("the core checked the options");
            let hop = |code: u16| code == OPTION_PADDING || code == OPTION_KEEPALIVE;
            let kept: Vec<&[u8]> = options
                .iter()
                .filter(|(code, _)| !hop(*code))
                .map(|(_, bytes)| *bytes)
                .collect();
            let new = after.opt().expect("the OPT stays");
            let new_options = opt_options(&fitted, new.rdata.clone()).expect("tiled");
            let new_kept: Vec<&[u8]> = new_options.iter().map(|(_, bytes)| *bytes).collect();
            assert_eq!(new_kept, kept, "the other options, in order");
            assert_eq!(
                fitted[new.range.start..new.rdata.start - 2],
                msg[rr.range.start..rr.rdata.start - 2],
                "owner and fixed fields"
            );
            let dropped: usize = options
                .iter()
                .filter(|(code, _)| hop(*code))
                .map(|(_, bytes)| bytes.len())
                .sum();
            assert_eq!(fitted.len() + dropped, msg.len());
            assert_eq!(arcount(&fitted), arcount(msg));
        }
    }

    let Some(before) = hickory(msg) else {
        return;
    };
    if unchecked_rdata_pointer(msg) || pointer_off_a_label(msg) {
        // The core leaves names in RDATA it does not edit unchecked, and
        // treats SVCB and HTTPS RDATA as opaque. A pointer there into the
        // header (malformed: RFC 1035 §4.1.4) reads ARCOUNT, which removing
        // the OPT changes; one in SVCB/HTTPS (malformed: RFC 9460 §2.2) can
        // read the bytes that move. hickory-proto follows both. A pointer
        // anywhere but at a label can read a pointer of another name as label
        // bytes; see `pointer_off_a_label`.
        return;
    }
    let after = hickory(&fitted).expect("hickory-proto reads the result");
    if padding == Padding::AddedOpt {
        assert!(after.extensions().is_none());
    } else if let (Some(a), Some(b)) = (after.extensions(), before.extensions()) {
        assert_eq!(a.max_payload(), b.max_payload());
        assert_eq!(a.flags(), b.flags());
        assert_eq!(a.version(), b.version());
        assert_eq!(a.rcode_high(), b.rcode_high());
    }
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
pub(crate) fn unchecked_rdata_pointer(msg: &[u8]) -> bool {
    let Some(layout) = layout(msg) else {
        return true;
    };
    layout.records.iter().any(|(_, rr)| {
        let opaque = OPAQUE_TYPES_WITH_NAMES.contains(&rr.rtype);
        NAME_TYPES.contains(&rr.rtype)
            && pointer_like_targets(&msg[rr.rdata.clone()]).any(|t| opaque || t < HEADER_LEN)
    })
}

/// The targets of every two bytes of `rdata` that read as a compression
/// pointer, wherever they lie (conservatively: labels and other fields too).
fn pointer_like_targets(rdata: &[u8]) -> impl Iterator<Item = usize> + '_ {
    rdata
        .windows(2)
        .filter(|w| w[0] & 0xC0 == 0xC0)
        .map(|w| usize::from(u16::from_be_bytes([w[0] & 0x3F, w[1]])))
}

/// Where the names of RDATA start, for the types whose RDATA holds names at
/// fixed places: the offset of the first name, and whether a second follows
/// it (SOA, MINFO, RP, PX).
fn rdata_names(rtype: u16) -> Option<(usize, bool)> {
    match rtype {
        // NS, MD, MF, CNAME, MB, MG, MR, PTR, NXT, DNAME.
        2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 30 | 39 => Some((0, false)),
        // SOA, MINFO, RP.
        6 | 14 | 17 => Some((0, true)),
        // MX, AFSDB, RT, KX.
        15 | 18 | 21 | 36 => Some((2, false)),
        // PX.
        26 => Some((2, true)),
        // SRV.
        33 => Some((6, false)),
        _ => None,
    }
}

/// Whether a compression pointer lands anywhere but at the start of a label
/// (or the root, or another pointer) of a name the message holds: inside a
/// label, or in a record's fixed fields or other RDATA. That is malformed (RFC
/// 1035 4.1.4: a pointer points to a prior occurrence of a name), and the bytes
/// such a pointer reads as labels can hold a real pointer of another name,
/// which the core rightly rewrites when the name it points to moves: one byte
/// string is two things at once, and no edit keeps both. Found by this target
/// twice: an MX exchange pointing into its owner's first label, across the
/// owner's pointer; an owner name pointing into other records' fixed fields.
/// Names are the question names, the owner names and the RDATA names at fixed
/// places ([`rdata_names`]); pointers those ending these names and, for the
/// other types hickory-proto reads names from, any two bytes of the RDATA that
/// read as one.
pub(crate) fn pointer_off_a_label(msg: &[u8]) -> bool {
    /// Walks the name at `pos`, noting where each label, the root or the
    /// pointer starts and where the pointer points; returns the name's end.
    fn walk(
        msg: &[u8],
        mut pos: usize,
        starts: &mut HashSet<usize>,
        targets: &mut Vec<usize>,
    ) -> Option<usize> {
        loop {
            let len = *msg.get(pos)?;
            starts.insert(pos);
            if len & 0xC0 == 0xC0 {
                targets.push(usize::from(be16(msg, pos)? & 0x3FFF));
                return Some(pos + 2);
            }
            if len == 0 {
                return Some(pos + 1);
            }
            pos += 1 + usize::from(len);
        }
    }
    let Some(layout) = layout(msg) else {
        return true;
    };
    let (mut starts, mut targets) = (HashSet::new(), Vec::new());
    let mut walk = |pos| walk(msg, pos, &mut starts, &mut targets);
    let mut unwalked = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < layout.question_end {
        match walk(pos) {
            Some(end) => pos = end + 4,
            None => return true,
        }
    }
    for (_, rr) in &layout.records {
        walk(rr.range.start);
        match rdata_names(rr.rtype) {
            Some((at, second)) => {
                if let Some(end) = walk(rr.rdata.start + at).filter(|_| second) {
                    walk(end);
                }
            }
            None if NAME_TYPES.contains(&rr.rtype) => {
                unwalked.extend(pointer_like_targets(&msg[rr.rdata.clone()]));
            }
            None => {}
        }
    }
    targets.iter().chain(&unwalked).any(|t| !starts.contains(t))
}

/// A record's fields, its RDATA left out for the types above.
pub(crate) fn fields(records: &[Record]) -> Vec<Fields> {
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
