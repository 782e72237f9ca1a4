//! Client message admission (`admission::admit`, then for a query the
//! cache did not answer `admission::slot`) with real in-flight `Shares`,
//! and the reply the proxy would send for its decision
//! (`synthesize_response`).
//!
//! Input: `[flags, slots, mask, address.., message..]`. `flags` bit 0: TCP
//! (else UDP); bit 1: the source is in `allow_networks`; bit 2: the source is
//! IPv6 (16 address bytes follow), else IPv4 (4 bytes). `slots`: the shares
//! have `(slots & 15) + 1` slots, of which `slots >> 4` are taken first, the
//! i-th by the message's own source if bit `i % 8` of `mask` is set, else by
//! another source (taking fails quietly when there is no room).
//!
//! Checked: the decision is what a model of the module's rules, in their
//! order, says (outsider, too long, not a query, OPCODE, malformed, no room);
//! and, spelled out, what the proxy promises at its edge: nothing from outside
//! `allow_networks` is answered or forwarded, a response (QR=1) or anything
//! shorter than a header is never answered, a query longer than
//! `MAX_QUERY_LEN` is never forwarded (UDP drops it, TCP closes), `admit`
//! takes no slot (a cache hit needs none), a forwarded
//! query parses and takes exactly one slot (given back by `release`), a query
//! is refused only when its source has no room, a reply takes no slot, and
//! the reply synthesized for a `Reply` decision exists, carries the query's ID
//! and the decided RCODE with QR=1, and is never larger than the query (no
//! amplification).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dnsproxy_core::core::admission::{
    CloseReason, Decision, MAX_QUERY_LEN, Permit, Shares, Transport, admit, slot,
};
use dnsproxy_core::core::message::{Query, QueryError, Rcode, synthesize_response};

use crate::wire::{HEADER_LEN, OPCODE_MASK, QR, be16};

/// The source of the slots the input does not give its own.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

/// What the module's rules decide for a cache miss, without the parsed
/// query and permit.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Forward,
    Reply(Rcode),
    Drop,
    Close(CloseReason),
}

/// Checks one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let Some((&[flags, slots, mask], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let transport = if flags & 1 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let allowed = flags & 2 != 0;
    let (source, msg) = if flags & 4 != 0 {
        let Some((ip, msg)) = rest.split_first_chunk::<16>() else {
            return;
        };
        (IpAddr::V6(Ipv6Addr::from(*ip)), msg)
    } else {
        let Some((ip, msg)) = rest.split_first_chunk::<4>() else {
            return;
        };
        (IpAddr::V4(Ipv4Addr::from(*ip)), msg)
    };

    // Two shares with the same history: `twin` says whether the source had
    // room, `shares` goes through `slot`.
    let max = usize::from(slots & 15) + 1;
    let mut shares = Shares::new(max);
    let mut twin = Shares::new(max);
    let mut held = Vec::new();
    for i in 0..slots >> 4 {
        let ip = if mask & (1 << (i % 8)) != 0 {
            source
        } else {
            OTHER
        };
        held.extend(shares.try_acquire(ip));
        let _ = twin.try_acquire(ip);
    }
    let used = shares.used();
    let room = twin.try_acquire(source).is_some();

    let expected = model(transport, allowed, msg, room);
    let decision = admit(transport, allowed, msg);
    assert_eq!(shares.used(), used, "admission takes no slot");
    // The cache did not answer it: a forwarded query needs a slot.
    let decision = match decision {
        Decision::Forward(query) => match slot(source, &mut shares) {
            Ok(permit) => Missed::Forward(query, permit),
            Err(rcode) => Missed::Other(Decision::Reply(rcode)),
        },
        other => Missed::Other(other),
    };
    let got = match &decision {
        Missed::Forward(..) => Expected::Forward,
        Missed::Other(Decision::Forward(_)) => unreachable!("taken above"),
        Missed::Other(Decision::Reply(rcode)) => Expected::Reply(*rcode),
        Missed::Other(Decision::Drop(_)) => Expected::Drop,
        Missed::Other(Decision::Close(reason)) => Expected::Close(*reason),
    };
    assert_eq!(
        got, expected,
        "{transport:?} from {source}, allowed {allowed}"
    );

    let header = msg.first_chunk::<HEADER_LEN>();
    let is_response = header.is_some_and(|h| h[2] & QR != 0);
    match decision {
        Missed::Forward(query, permit) => {
            assert!(allowed, "an outsider's query was forwarded");
            assert!(
                msg.len() <= MAX_QUERY_LEN,
                "{}-byte query forwarded",
                msg.len()
            );
            assert_eq!(
                query.bytes(),
                msg,
                "the forwarded query carries its own bytes"
            );
            assert_eq!(shares.used(), used + 1, "a forwarded query takes one slot");
            shares.release(permit);
            assert_eq!(shares.used(), used, "release gives the slot back");
        }
        Missed::Other(Decision::Reply(rcode)) => {
            assert!(allowed, "an outsider got a {rcode:?} reply");
            assert!(!is_response, "a response (QR=1) got a {rcode:?} reply");
            assert!(msg.len() <= MAX_QUERY_LEN);
            assert_eq!(shares.used(), used, "a reply takes no slot");
            check_reply(msg, rcode);
        }
        Missed::Other(_) => {
            assert_eq!(
                shares.used(),
                used,
                "nothing taken for a message not served"
            );
        }
    }
    for permit in held {
        shares.release(permit);
    }
    assert_eq!(shares.used(), 0);
}

/// A cache miss's decision: forwarded with its slot, or anything else.
enum Missed {
    Forward(Query, Permit),
    Other(Decision),
}

/// The module's rules, in order, from the header and the parser's verdict.
fn model(transport: Transport, allowed: bool, msg: &[u8], room: bool) -> Expected {
    let quiet = |reason| match transport {
        Transport::Udp => Expected::Drop,
        Transport::Tcp => Expected::Close(reason),
    };
    if !allowed {
        return quiet(CloseReason::NotAllowed);
    }
    if msg.len() > MAX_QUERY_LEN {
        return quiet(CloseReason::TooLong);
    }
    let Some(h) = msg.first_chunk::<HEADER_LEN>() else {
        return quiet(CloseReason::NotAQuery);
    };
    if h[2] & QR != 0 {
        return quiet(CloseReason::NotAQuery);
    }
    if h[2] & OPCODE_MASK != 0 {
        return Expected::Reply(Rcode::NotImp);
    }
    match Query::parse(msg) {
        Ok(_) if room => Expected::Forward,
        Ok(_) => Expected::Reply(Rcode::Refused),
        Err(QueryError::FormErr(_)) => Expected::Reply(Rcode::FormErr),
        Err(e) => panic!("{e:?} for a header-valid query"),
    }
}

/// The reply the shell sends for a `Reply` decision: there is one, it answers
/// this query with this RCODE, and it is no larger than the query.
fn check_reply(msg: &[u8], rcode: Rcode) {
    let reply = synthesize_response(msg, rcode).expect("a reply to a header-valid query");
    assert!(
        reply.len() <= msg.len(),
        "a {}-byte {rcode:?} reply to a {}-byte query",
        reply.len(),
        msg.len()
    );
    assert_eq!(be16(&reply, 0), be16(msg, 0), "ID");
    assert_ne!(reply[2] & QR, 0, "QR=1");
    assert_eq!(reply[3] & 0x0F, u8::from(rcode), "RCODE");
}
