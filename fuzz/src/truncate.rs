//! Truncation of a response for a UDP client (`Response::truncate_for_udp`,
//! RFC 1035 §4.2.1, RFC 2181 §9, RFC 6891 §7).
//!
//! Input: `[limit_hi, limit_lo, response..]`. Responses the core's walk
//! rejects (`Response::parse`) are skipped: the client gets SERVFAIL for
//! them, nothing is truncated.
//!
//! Checked: a response within the limit (never below 512) is sent as is; a
//! larger one becomes exactly what a model built here says: the header with
//! TC=1 and ANCOUNT=NSCOUNT=0, the question section if it fits, the
//! response's OPT without its Padding options if that fits too (ARCOUNT 1,
//! else 0). The result is within the limit, needs no further truncation, its
//! layout (kept, not walked again) is the one the core's walk finds in it,
//! and where hickory-proto reads the response, hickory-proto reads the result
//! with the same questions and EDNS fields.

use dnsproxy_core::core::message::Response;

use crate::wire::{HEADER_LEN, OPTION_PADDING, TC, hickory, layout, opt_options};

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some((&[hi, lo], resp)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(u16::from_be_bytes([hi, lo]));
    let effective = limit.max(512);
    let Ok(view) = Response::parse(resp.to_vec()) else {
        return;
    };
    let mut cut = view.clone();
    if !cut.truncate_for_udp(limit) {
        assert!(
            resp.len() <= effective,
            "{}-byte response sent as is",
            resp.len()
        );
        assert_eq!(cut, view, "changed but not truncated");
        return;
    }
    let out = cut.bytes().to_vec();
    assert!(resp.len() > effective);
    assert!(
        out.len() <= effective,
        "{} bytes over {effective}",
        out.len()
    );
    assert_eq!(out, model(resp, effective), "differs from the model");
    assert_eq!(
        Response::parse(out.clone()).as_ref(),
        Ok(&cut),
        "the layout kept differs from the walk of the result"
    );
    assert!(!cut.truncate_for_udp(limit), "needs truncating again");

    let Some(full) = hickory(resp) else {
        return;
    };
    let cut = hickory(&out).expect("hickory-proto reads the truncated reply");
    assert!(cut.truncated());
    assert!(cut.answers().is_empty() && cut.name_servers().is_empty());
    assert!(cut.additionals().is_empty());
    if !cut.queries().is_empty() {
        assert_eq!(cut.queries(), full.queries());
    }
    if let Some(edns) = cut.extensions() {
        let orig = full
            .extensions()
            .as_ref()
            .expect("the OPT came from the response");
        assert_eq!(edns.max_payload(), orig.max_payload());
        assert_eq!(edns.flags(), orig.flags());
        assert_eq!(edns.version(), orig.version());
        assert_eq!(edns.rcode_high(), orig.rcode_high());
    }
}

/// The truncated reply RFC 2181 §9 and the core's documentation describe.
fn model(resp: &[u8], limit: usize) -> Vec<u8> {
    let layout = layout(resp).expect("the core walked it");
    let question = &resp[HEADER_LEN..layout.question_end];
    let opt = layout.opt().map(|rr| {
        let options = opt_options(resp, rr.rdata.clone()).expect("the core checked the options");
        let kept: Vec<u8> = options
            .iter()
            .filter(|(code, _)| *code != OPTION_PADDING)
            .flat_map(|(_, bytes)| bytes.iter().copied())
            .collect();
        let mut opt = resp[rr.range.start..rr.rdata.start - 2].to_vec();
        opt.extend_from_slice(&u16::try_from(kept.len()).expect("fits").to_be_bytes());
        opt.extend_from_slice(&kept);
        opt
    });

    let mut out = resp[..HEADER_LEN].to_vec();
    out[2] |= TC;
    out[6..10].fill(0);
    out[10..12].fill(0);
    match opt {
        Some(opt) if HEADER_LEN + question.len() + opt.len() <= limit => {
            out.extend_from_slice(question);
            out.extend_from_slice(&opt);
            out[11] = 1;
        }
        _ if HEADER_LEN + question.len() <= limit => out.extend_from_slice(question),
        _ => out[4..6].fill(0),
    }
    out
}
