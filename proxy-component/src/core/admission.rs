//! Who is served: one admission decision for every client message, UDP and
//! TCP alike.
//!
//! The decision is a pure function of the message, the transport, whether
//! the client is in `allow_networks`, and what the in-flight [`Shares`] have
//! room for. The shell carries it out: forward the query, send the reply,
//! drop the datagram or close the connection.
//!
//! The rules, in order (each one documented where clients can see it):
//! 1. A client outside `allow_networks` gets nothing: UDP is dropped, a TCP
//!    connection closed (the host's socket policy already refuses them
//!    before the component sees them; this is the second line). An answer of
//!    any kind would make the proxy a reflector for spoofed sources.
//! 2. Anything that is not a query is never answered: shorter than a header,
//!    or QR=1 (a response). Answering responses starts ping-pong loops between
//!    two servers from one spoofed packet (RFC 5452 §4, and every DNS
//!    server's practice). TCP closes the connection: its peer is not a client.
//! 3. A query longer than [`MAX_QUERY_LEN`] is dropped (UDP) or closes the
//!    connection (TCP): no real query is that long, and holding one costs
//!    memory an attacker chooses.
//! 4. An OPCODE other than QUERY gets NOTIMP; a malformed query FORMERR
//!    (RFC 1035 §4.1.1). Neither reply is larger than the query plus an
//!    11-byte OPT, so no amplification.
//! 5. A query the cache does not answer goes upstream only with a slot in
//!    flight ([`slot`]). With no room (the global cap, or the client's
//!    source over its share under contention), REFUSED: an immediate, small
//!    answer the client can act on (RFC 8906 §3.1.3: do not leave it to
//!    time out). A cache hit takes no slot: it is answered at once and
//!    waits on no upstream, so a proxy whose slots are all held by queries
//!    to a slow upstream still answers what it has cached (as unbound
//!    answers from its cache however full its request list is). The shell
//!    asks the cache between [`admit`] and [`slot`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use crate::core::message::{Query, QueryError, Rcode};

/// The longest client query the proxy forwards. Real queries are a few
/// hundred bytes even with EDNS options (cookies, padding to 128 bytes);
/// 4 KiB leaves room for any of them and bounds what a client can make the
/// proxy hold per frame.
pub const MAX_QUERY_LEN: usize = 4096;

/// How a message reached the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One datagram, one message.
    Udp,
    /// A length-prefixed message on a client connection (RFC 7766 §8).
    Tcp,
}

/// What the shell does with a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answer the query from the cache, or forward it upstream with a slot
    /// ([`slot`]); it carries its bytes and layout from the one parse
    /// admission made.
    Forward(Query),
    /// Answer at once with a reply made from the query and this RCODE.
    Reply(Rcode),
    /// Say nothing (UDP only), for this reason.
    Drop(CloseReason),
    /// Close the connection (TCP only).
    Close(CloseReason),
}

/// Why admission drops a datagram or closes a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer is outside `allow_networks`.
    NotAllowed,
    /// It sent something that is not a query.
    NotAQuery,
    /// It sent a frame longer than [`MAX_QUERY_LEN`].
    TooLong,
}

impl CloseReason {
    /// The reason as the drop metric counts it.
    pub fn metric(self) -> crate::core::stats::DropReason {
        use crate::core::stats::DropReason;
        match self {
            Self::NotAllowed => DropReason::Acl,
            Self::NotAQuery => DropReason::Malformed,
            Self::TooLong => DropReason::TooLong,
        }
    }

    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAllowed => "outside allow_networks",
            Self::NotAQuery => "not a query",
            Self::TooLong => "query too long",
        }
    }
}

/// Decides what to do with one client message (rules 1 to 4 of the module
/// docs).
pub fn admit(transport: Transport, allowed: bool, msg: &[u8]) -> Decision {
    let quiet = |reason| match transport {
        Transport::Udp => Decision::Drop(reason),
        Transport::Tcp => Decision::Close(reason),
    };
    if !allowed {
        return quiet(CloseReason::NotAllowed);
    }
    if msg.len() > MAX_QUERY_LEN {
        return quiet(CloseReason::TooLong);
    }
    let query = match Query::parse(msg) {
        Ok(q) => q,
        Err(QueryError::FormErr(_)) => return Decision::Reply(Rcode::FormErr),
        Err(QueryError::NotImp) => return Decision::Reply(Rcode::NotImp),
        // Shorter than a header, or QR=1: never answered.
        Err(_) => return quiet(CloseReason::NotAQuery),
    };
    Decision::Forward(query)
}

/// Rule 5 of the module docs, for a query from `source` the cache did not
/// answer: its in-flight slot, or the RCODE to answer it with.
pub fn slot(source: IpAddr, shares: &mut Shares) -> Result<Permit, Rcode> {
    shares.try_acquire(source).ok_or(Rcode::Refused)
}

/// The key a client's share is counted under: its IPv4 address, or its IPv6
/// /64 (one end site's subnet; RFC 6177). An IPv4-mapped IPv6 address counts
/// as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey(u128);

impl SourceKey {
    /// The key of the proxy's own queries (prefetches): no client's, so
    /// they take their turns like one more source. No address maps to it
    /// (IPv4 keys are below 2^32, IPv6 keys end in 1 followed by 32 zeros).
    pub const PROXY: Self = Self(u128::MAX);

    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                // Tag /64s above the IPv4 space so the two never collide.
                None => Self((u128::from(v6) & !((1u128 << 64) - 1)) | (1 << 32)),
            },
        }
    }
}

/// The in-flight budget: at most `max` queries forwarded and not yet
/// answered, over all clients, and fair shares per source.
///
/// A source (see [`SourceKey`]) may take slots freely while fewer than half
/// are in use; beyond that it may hold at most a quarter of `max`. So a
/// single busy client (a CoreDNS forwarding everything) is not throttled on
/// an idle proxy, and one source flooding leaves at least half of the slots
/// to everyone else. At the limit the query is answered REFUSED (see
/// [`admit`]).
#[derive(Debug)]
pub struct Shares {
    max: usize,
    used: usize,
    per_source: HashMap<SourceKey, usize>,
}

/// One in-flight slot; give it back with [`Shares::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be released when its query ends"]
pub struct Permit {
    source: SourceKey,
}

impl Shares {
    /// A budget of `max` slots (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            used: 0,
            per_source: HashMap::new(),
        }
    }

    /// The most one source may hold while the proxy is under contention.
    pub fn source_cap(&self) -> usize {
        (self.max / 4).max(1)
    }

    /// A slot for a query from `ip`, if there is room.
    pub fn try_acquire(&mut self, ip: IpAddr) -> Option<Permit> {
        if self.used >= self.max {
            return None;
        }
        let source = SourceKey::of(ip);
        let contended = self.used * 2 >= self.max;
        let cap = self.source_cap();
        // One lookup per call (the source's address is hashed with SipHash:
        // sources choose their addresses), and a source's entry exists only
        // while it holds slots.
        match self.per_source.entry(source) {
            Entry::Occupied(held) if contended && *held.get() >= cap => return None,
            Entry::Occupied(mut held) => *held.get_mut() += 1,
            Entry::Vacant(none) => {
                none.insert(1);
            }
        }
        self.used += 1;
        Some(Permit { source })
    }

    /// Gives a slot back.
    pub fn release(&mut self, permit: Permit) {
        self.used = self.used.saturating_sub(1);
        give_back(&mut self.per_source, permit.source, 1);
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Changes the budget to `max` slots (at least 1), for a reload. Slots
    /// already held stay valid; over a lowered budget, new queries are
    /// refused until enough of them are given back.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }
}

/// Takes `n` off what `source` holds in `per_source`, and drops its entry at
/// zero, in one lookup: an entry exists only while its source holds some.
pub(crate) fn give_back(per_source: &mut HashMap<SourceKey, usize>, source: SourceKey, n: usize) {
    if let Entry::Occupied(mut held) = per_source.entry(source) {
        *held.get_mut() = held.get().saturating_sub(n);
        if *held.get() == 0 {
            held.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use hickory_proto::rr::RecordType;

    use crate::core::message::test_support;

    fn query_bytes(name: &str) -> Vec<u8> {
        test_support::query_bytes(name, RecordType::A, None)
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn response_of(mut q: Vec<u8>) -> Vec<u8> {
        q[2] |= crate::core::message::QR;
        q
    }

    #[test]
    fn a_query_from_an_allowed_client_is_forwarded() {
        let q = query_bytes("example.com");
        let d = admit(Transport::Udp, true, &q);
        assert!(
            matches!(d, Decision::Forward(ref query) if query.id() == 0x4242),
            "{d:?}"
        );
    }

    #[test]
    fn outsiders_get_nothing_on_udp_and_a_close_on_tcp() {
        let q = query_bytes("example.com");
        assert_eq!(
            admit(Transport::Udp, false, &q),
            Decision::Drop(CloseReason::NotAllowed)
        );
        assert_eq!(
            admit(Transport::Tcp, false, &q),
            Decision::Close(CloseReason::NotAllowed)
        );
    }

    #[test]
    fn rfc5452_responses_are_never_answered_from_anyone() {
        let r = response_of(query_bytes("example.com"));
        for allowed in [true, false] {
            assert_eq!(
                admit(Transport::Udp, allowed, &r),
                Decision::Drop(if allowed {
                    CloseReason::NotAQuery
                } else {
                    CloseReason::NotAllowed
                })
            );
            assert!(matches!(
                admit(Transport::Tcp, allowed, &r),
                Decision::Close(_)
            ));
        }
    }

    #[test]
    fn shorter_than_a_header_is_dropped() {
        assert_eq!(
            admit(Transport::Udp, true, &[0; 11]),
            Decision::Drop(CloseReason::NotAQuery)
        );
    }

    #[test]
    fn rfc1035_other_opcodes_get_notimp_and_malformed_queries_formerr() {
        let mut status = query_bytes("example.com");
        status[2] |= 2 << 3;
        assert_eq!(
            admit(Transport::Udp, true, &status),
            Decision::Reply(Rcode::NotImp)
        );
        let mut two_questions = query_bytes("example.com");
        two_questions[5] = 2;
        assert_eq!(
            admit(Transport::Tcp, true, &two_questions),
            Decision::Reply(Rcode::FormErr)
        );
    }

    #[test]
    fn queries_longer_than_the_cap_are_not_held() {
        let mut q = query_bytes("example.com");
        q.resize(MAX_QUERY_LEN + 1, 0);
        assert_eq!(
            admit(Transport::Udp, true, &q),
            Decision::Drop(CloseReason::TooLong)
        );
        assert_eq!(
            admit(Transport::Tcp, true, &q),
            Decision::Close(CloseReason::TooLong)
        );
    }

    #[test]
    fn at_the_global_cap_queries_are_refused_until_a_slot_is_released() {
        let mut shares = Shares::new(2);
        let p1 = slot(A, &mut shares).expect("first has a slot");
        let _p2 = slot(B, &mut shares).expect("second has a slot");
        assert_eq!(slot(B, &mut shares), Err(Rcode::Refused));
        shares.release(p1);
        let c = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
        assert!(slot(c, &mut shares).is_ok());
        assert_eq!(shares.used(), 2);
    }

    #[test]
    fn one_source_alone_may_use_half_then_only_its_quarter() {
        let mut shares = Shares::new(100);
        let taken: Vec<_> = std::iter::from_fn(|| shares.try_acquire(A)).collect();
        // Free while under half; at half the proxy is contended and A holds
        // more than its quarter.
        assert_eq!(taken.len(), 50);
        // Everyone else still has the other half.
        let others: Vec<_> = (0..50u8)
            .filter_map(|i| shares.try_acquire(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))))
            .collect();
        assert_eq!(others.len(), 50);
        assert_eq!(shares.used(), 100);
    }

    /// A reload lowering the budget keeps the slots held, refuses new ones
    /// until enough come back; raising it admits at once.
    #[test]
    fn a_resized_budget_keeps_held_slots_and_applies_to_new_ones() {
        let mut shares = Shares::new(4);
        let held: Vec<_> = (0..4u8)
            .map(|i| {
                shares
                    .try_acquire(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
                    .unwrap()
            })
            .collect();
        shares.set_max(2);
        assert!(shares.try_acquire(A).is_none());
        let mut held = held.into_iter();
        shares.release(held.next().unwrap());
        shares.release(held.next().unwrap());
        assert!(shares.try_acquire(A).is_none(), "2 of 2 still held");
        shares.release(held.next().unwrap());
        let again = shares.try_acquire(A).expect("room under the new budget");
        shares.set_max(10);
        assert!(shares.try_acquire(A).is_some());
        shares.release(again);
    }

    #[test]
    fn ipv6_sources_share_per_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(SourceKey::of(mapped), SourceKey::of(A));
        // A /64 whose low bits look like an IPv4 address is not that address.
        let tricky = IpAddr::V6(Ipv6Addr::from(u128::from(u32::from(Ipv4Addr::new(
            192, 0, 2, 1,
        )))));
        assert_ne!(SourceKey::of(tricky), SourceKey::of(A));
    }

    proptest! {
        /// Whatever the order of acquires and releases, the counts add up,
        /// the cap holds, and once everything is released nothing is held.
        #[test]
        fn shares_account_exactly(ops in proptest::collection::vec((0u8..6, any::<bool>()), 0..400), max in 1usize..40) {
            let mut shares = Shares::new(max);
            let mut held: Vec<Permit> = Vec::new();
            for (src, acquire) in ops {
                let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, src));
                if acquire {
                    if let Some(p) = shares.try_acquire(ip) { held.push(p); }
                } else if let Some(p) = held.pop() {
                    shares.release(p);
                }
                prop_assert_eq!(shares.used(), held.len());
                prop_assert!(shares.used() <= max);
            }
            for p in held.drain(..) { shares.release(p); }
            prop_assert_eq!(shares.used(), 0);
            prop_assert!(shares.per_source.is_empty());
        }
    }
}
