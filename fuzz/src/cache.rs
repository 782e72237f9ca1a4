//! The wire-level half of the answer cache: what is kept of an upstream
//! answer (`Response::to_cache`) and what a later query is served from it
//! (`Cached::answer`), RFC 1035 §7.4, RFC 2308 §5, RFC 8767 §4.
//!
//! Input: `[flags, response..]`. Responses the core's walk rejects
//! (`Response::parse`) are skipped, as are those it does not keep. The flags
//! make the query that is served, a query for the response's own question:
//! bit 0 gives it an OPT RR, bit 1 sets DO in it, bits 2 and 3 set AD and CD,
//! bit 4 flips the case of the QNAME's letters, and bits 5 and 6 choose the
//! TTL clamp (`CLAMPS`, one of which has its bounds crossed).
//!
//! Checked: only a response with QR=1, OPCODE 0, TC=0, one question and
//! RCODE NOERROR or NXDOMAIN is kept, and with a lifetime above 0 within the
//! clamp. Served at ages 0, 1, around the lifetime and `u32::MAX`, fresh and
//! stale, the answer never panics; its layout (built, not walked) is the one
//! the core's walk finds; it answers the query; its header is the query's ID,
//! QR, RD and CD, RA, the kept AD only if the query asked for it, AA, TC and Z
//! clear, the response's RCODE; its question is the query's bytes; it has the
//! response's records without its OPT, each TTL its age-0 value minus the
//! age (down to 0) or the stale value, every age-0 TTL within the clamp; and
//! an OPT RR last iff the query had one, with payload 1232, only the DO bit,
//! and only the response's EDE options, in order. Where hickory-proto reads
//! the response, it reads the answer, with the same records.

use dnsproxy_core::core::message::{Query, Response, TtlClamp};
use hickory_proto::rr::Record;

use crate::padding::{fields, pointer_off_a_label, unchecked_rdata_pointer};
use crate::wire::{
    HEADER_LEN, OPCODE_MASK, QR, RA, RD, TC, TYPE_OPT, be16, counts, hickory, layout, opt_options,
};

/// AA, in the third header octet; AD, CD and Z in the fourth.
const AA: u8 = 0x04;
const Z: u8 = 0x40;
const AD: u8 = 0x20;
const CD: u8 = 0x10;
/// EDE (RFC 8914 §2).
const OPTION_EDE: u16 = 15;
/// The TTL served stale (RFC 8767 §4).
const STALE: u32 = 30;
/// The ID of the query served.
const ID: u16 = 0xABCD;

/// The clamps bits 5 and 6 choose from.
const CLAMPS: [TtlClamp; 4] = [
    TtlClamp {
        min: 0,
        max: 86_400,
    },
    TtlClamp { min: 60, max: 3600 },
    TtlClamp { min: 300, max: 30 },
    TtlClamp {
        min: 1,
        max: u32::MAX,
    },
];

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some((&flags, resp)) = data.split_first() else {
        return;
    };
    let Ok(view) = Response::parse(resp.to_vec()) else {
        return;
    };
    let clamp = CLAMPS[usize::from(flags >> 5) & 3];
    let Some(cached) = view.to_cache(clamp) else {
        return;
    };
    let h = &resp[..HEADER_LEN];
    assert!(h[2] & QR != 0, "a query kept");
    assert_eq!(h[2] & (OPCODE_MASK | TC), 0, "OPCODE or TC kept");
    assert_eq!(be16(h, 4), Some(1), "QDCOUNT != 1 kept");
    let rcode = h[3] & 0x0F;
    assert!(rcode == 0 || rcode == 3, "RCODE {rcode} kept");
    let lifetime = cached.lifetime();
    assert!(lifetime > 0);
    if clamp.min <= clamp.max {
        assert!(
            (clamp.min..=clamp.max).contains(&lifetime),
            "lifetime {lifetime}"
        );
    }
    assert!(cached.size() > HEADER_LEN);

    let original = layout(resp).expect("the core walked it");
    let q = query(flags, &resp[HEADER_LEN..original.question_end]);
    let query = Query::parse(&q).expect("a query for a question the core walked");
    let ede: Vec<u8> = original.opt().map_or_else(Vec::new, |opt| {
        let options = opt_options(resp, opt.rdata.clone()).expect("the core walked the OPT");
        options
            .into_iter()
            .filter(|(code, _)| *code == OPTION_EDE)
            .flat_map(|(_, option)| option.to_vec())
            .collect()
    });
    let records: Vec<_> = original
        .records
        .iter()
        .filter(|(_, rr)| rr.rtype != TYPE_OPT)
        .collect();

    let fresh = served(&query, &cached.answer(&query, 0, None));
    for ttl in &fresh {
        if clamp.min <= clamp.max {
            assert!((clamp.min..=clamp.max).contains(ttl), "TTL {ttl} kept");
        }
    }
    assert!(
        fresh.iter().all(|&ttl| ttl >= lifetime),
        "lifetime above a TTL"
    );
    let ages = [
        0,
        1,
        lifetime - 1,
        lifetime,
        lifetime.saturating_add(1),
        u32::MAX,
    ];
    for stale in [None, Some(STALE)] {
        for age in ages {
            let r = cached.answer(&query, age, stale);
            let ttls = served(&query, &r);
            let want: Vec<u32> = fresh
                .iter()
                .map(|ttl| stale.unwrap_or(ttl.saturating_sub(age)))
                .collect();
            assert_eq!(ttls, want, "TTLs at age {age}, stale {stale:?}");
            let out = r.bytes();
            let [qd, an, ns, ar] = counts(out).expect("a header");
            let [_, r_an, r_ns, r_ar] = counts(resp).expect("a header");
            assert_eq!((qd, an, ns), (1, r_an, r_ns));
            let opts = u16::from(original.opt().is_some());
            assert_eq!(ar, r_ar - opts + u16::from(query.opt().is_some()));
            assert_eq!(out[3] & 0x0F, rcode);
            assert_eq!(ttls.len(), records.len());
            let got = layout(out).expect("served answer lays out");
            match (query.opt(), got.opt()) {
                (None, None) => {}
                (Some(q_opt), Some(opt)) => {
                    assert_eq!(opt.range.end, out.len(), "the OPT is last");
                    let fixed = &out[opt.range.start..opt.rdata.start];
                    let ttl: u8 = if q_opt.dnssec_ok { 0x80 } else { 0 };
                    assert_eq!(
                        fixed,
                        [0, 0, 41, 0x04, 0xD0, 0, 0, ttl, 0, fixed[9], fixed[10]]
                    );
                    assert_eq!(out[opt.rdata.clone()], ede[..], "only the EDE options");
                }
                (want, got) => panic!("query OPT {want:?}, answer OPT {got:?}"),
            }
            compare_with_hickory(resp, out);
        }
    }
}

/// The query for `question` the flags describe.
fn query(flags: u8, question: &[u8]) -> Vec<u8> {
    let has_opt = flags & 1 != 0;
    let mut q = ID.to_be_bytes().to_vec();
    q.push(RD);
    q.push(if flags & 4 != 0 { AD } else { 0 } | if flags & 8 != 0 { CD } else { 0 });
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(has_opt)]);
    let name_end = question.len() - 4;
    q.extend(question.iter().enumerate().map(|(i, &b)| {
        // Label lengths are at most 63, never letters.
        if flags & 16 != 0 && i < name_end && b.is_ascii_alphabetic() {
            b ^ 0x20
        } else {
            b
        }
    }));
    if has_opt {
        let do_bit = if flags & 2 != 0 { 0x80 } else { 0 };
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, do_bit, 0, 0, 0]);
    }
    q
}

/// Checks what every answer served to `query` must be and returns its TTLs
/// (every record but the OPT, in order).
fn served(query: &Query, r: &Response) -> Vec<u32> {
    let out = r.bytes();
    assert_eq!(
        Response::parse(out.to_vec()).as_ref(),
        Ok(r),
        "the layout kept differs from the walk of the answer"
    );
    assert!(r.answers(query), "does not answer the query");
    let q = query.bytes();
    assert_eq!(be16(out, 0), Some(ID));
    assert_eq!(out[2], QR | RD, "QR, OPCODE, AA, TC, RD");
    assert_eq!(out[2] & AA, 0);
    assert_eq!(out[3] & (RA | Z | CD), RA | (q[3] & CD), "RA, Z, CD");
    let ad_wanted = q[3] & AD != 0 || query.opt().is_some_and(|opt| opt.dnssec_ok);
    if !ad_wanted {
        assert_eq!(out[3] & AD, 0, "AD not asked for");
    }
    let question_end = HEADER_LEN + query.question().len();
    assert_eq!(out.get(HEADER_LEN..question_end), Some(query.question()));
    let got = layout(out).expect("served answer lays out");
    got.records
        .iter()
        .filter(|(_, rr)| rr.rtype != TYPE_OPT)
        .map(|(_, rr)| {
            let at = rr.rdata.start - 6;
            u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]])
        })
        .collect()
}

/// Where hickory-proto reads the response, it reads the answer, with the
/// same records but for their TTLs. Left out, as in the `padding` check:
/// crafted pointers in RDATA the core does not read, into the header (whose
/// ID and flags the answer changes) or anywhere but at a label (whose bytes,
/// a TTL say, the answer may change), and the RDATA hickory-proto keeps raw.
fn compare_with_hickory(resp: &[u8], out: &[u8]) {
    let Some(before) = hickory(resp) else {
        return;
    };
    if unchecked_rdata_pointer(resp) || pointer_off_a_label(resp) {
        return;
    }
    let after = hickory(out).expect("hickory-proto reads the served answer");
    let strip = |records: &[Record]| {
        fields(records)
            .into_iter()
            .map(|(name, rtype, class, _ttl, rdata)| (name, rtype, class, rdata))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(after.answers()), strip(before.answers()));
    assert_eq!(strip(after.name_servers()), strip(before.name_servers()));
    assert_eq!(strip(after.additionals()), strip(before.additionals()));
    assert_eq!(after.queries(), before.queries());
}
