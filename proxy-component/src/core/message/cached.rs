//! The wire-level half of the answer cache (RFC 1035 §7.4, RFC 2308, RFC
//! 8767): the key a query is looked up under ([`Query::cache_key`]), what is
//! kept of an upstream answer ([`Response::to_cache`]), and the answer a
//! later query gets from it ([`Cached::answer`]).
//!
//! What is kept belongs to no exchange: no ID, no OPT RR (its cookie and
//! padding were for one client and one upstream, RFC 6891 §7), only the
//! EDE options of that OPT (RFC 8914), and TTLs already clamped. The TTL
//! fields are found once, when the answer is kept, so serving it only
//! rewrites bytes at known offsets and appends the client's OPT; the
//! layout of the result follows from that and is never walked.

use std::mem::size_of;

use super::name::{own_pointer, pointer_target, run_end};
use super::query::Query;
use super::response::Response;
use super::walk::{DO_BIT, Layout, OPT_RR_LEN, Opt, TYPE_OPT, name_pointers, options, read_rr};
use super::{
    ARCOUNT, EDNS_UDP_PAYLOAD, HEADER_LEN, OPCODE_MASK, QDCOUNT, QR, RA, RCODE_MASK, RD, Section,
    TC, counts, header, read_u16, words_equal, write_u16,
};
use crate::core::framing::MAX_MESSAGE_LEN;

/// AA, in the third header octet (RFC 1035 §4.1.1).
const AA: u8 = 0x04;
/// AD and CD, in the fourth header octet (RFC 4035 §3.2.2, §3.2.3).
const AD: u8 = 0x20;
const CD: u8 = 0x10;

/// RCODEs an answer may be kept with (RFC 1035 §4.1.1, RFC 2308 §2.1).
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// RFC 1035 §3.2.2: SOA, the record a negative answer is cached by.
const TYPE_SOA: u16 = 6;
/// QTYPEs that are never answered from the cache: IXFR (RFC 1995 §3), AXFR
/// (RFC 5936 §2.1), MAILB and MAILA (RFC 1035 §3.2.3), ANY (RFC 8482 §4.1:
/// what a resolver returns for it varies) and OPT (RFC 6891 §6.1.1: not a
/// question).
const UNCACHED_QTYPES: [u16; 6] = [251, 252, 253, 254, 255, TYPE_OPT];

/// EDNS Client Subnet (RFC 7871 §6): an answer tailored to one client's
/// network, which this cache does not key on.
const OPTION_ECS: u16 = 8;
/// Extended DNS Error (RFC 8914 §2): says why an answer is what it is, so it
/// stays with the answer.
const OPTION_EDE: u16 = 15;

/// From the start of an RR's RDATA back to its TTL field (RFC 1035 §4.1.3:
/// TTL, then RDLENGTH, then RDATA).
const TTL_BEFORE_RDATA: usize = 6;
/// The shortest SOA RDATA: two root names and five 32-bit fields (RFC 1035
/// §3.3.13).
const MIN_SOA_RDATA: usize = 2 + 5 * 4;

/// Bits of the flags byte that ends a [`CacheKey`].
const KEY_DO: u8 = 0x01;
const KEY_CD: u8 = 0x02;
const KEY_AD_WANTED: u8 = 0x04;

/// The key a cached answer is filed under: the question (QNAME with ASCII
/// lower-cased, RFC 4343 §3, then QTYPE and QCLASS, RFC 1035 §4.1.2),
/// followed by one byte of flags that change what the answer holds: DO (RFC
/// 3225 §3: DNSSEC records), CD (RFC 4035 §3.2.2: unvalidated data) and
/// whether AD is wanted, which a query says with AD or DO (RFC 6840 §5.7,
/// §5.8).
///
/// A `Vec`, so that a lookup can lay its key out in one kept and reused
/// ([`Query::cache_key_into`]): a hit then allocates no key. A key stored
/// is a clone, whose capacity is its length.
#[derive(Clone, Debug, Default, Eq)]
pub struct CacheKey(Vec<u8>);

/// Byte equality, compared a word at a time: every cache lookup compares
/// the key found, and the component's `memcmp` cost 450 instructions of a
/// cache hit's 9,300.
impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        words_equal(&self.0, &other.0)
    }
}

/// Over the same bytes as [`PartialEq`], so equal keys hash alike.
impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl CacheKey {
    /// Its size in bytes, for the cache's memory accounting.
    #[expect(clippy::len_without_is_empty, reason = "a key is never empty")]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Query {
    /// The key its answer is cached under, or `None` when the query must
    /// bypass the cache: RD=0 (the client asks this server's own data, RFC
    /// 1035 §4.1.1), a QTYPE that is not a plain question (ANY, AXFR, IXFR,
    /// MAILB, MAILA, OPT), an OPT whose EDNS VERSION is not 0
    /// (RFC 6891 §6.1.3: the upstream answers BADVERS), an EDNS Client Subnet
    /// option (RFC 7871 §7.3: answers differ per subnet), or a signature
    /// (TSIG, SIG(0): RFC 8945 §5.3, the answer must be signed for it).
    pub fn cache_key(&self) -> Option<CacheKey> {
        let mut key = CacheKey::default();
        self.cache_key_into(&mut key).then_some(key)
    }

    /// [`Query::cache_key`], laid out in `key` (what it held before is
    /// gone): false, with `key` unspecified, when the query bypasses the
    /// cache.
    pub fn cache_key_into(&self, key: &mut CacheKey) -> bool {
        self.cache_key_parts()
            .map(|(name, type_and_class, flags)| {
                let key = &mut key.0;
                key.clear();
                key.reserve(name.len() + type_and_class.len() + 1);
                // Label length octets are at most 63, never ASCII letters:
                // lower-casing the whole name touches only the labels'
                // letters. It holds no compression pointer: nothing
                // precedes the question.
                key.extend(name.iter().map(u8::to_ascii_lowercase));
                key.extend_from_slice(type_and_class);
                key.push(flags);
            })
            .is_some()
    }

    /// What a cache key is made of: the question's name and its type and
    /// class as sent, and the flags byte; `None` when the query bypasses
    /// the cache.
    fn cache_key_parts(&self) -> Option<(&[u8], &[u8; 4], u8)> {
        let h = header(&self.bytes)?;
        if h[2] & RD == 0 || self.layout.signed {
            return None;
        }
        let (name, type_and_class) = self.question().split_last_chunk::<4>()?;
        let qtype = u16::from_be_bytes([type_and_class[0], type_and_class[1]]);
        if UNCACHED_QTYPES.contains(&qtype) {
            return None;
        }
        let mut flags = 0;
        if let Some(opt) = self.opt() {
            if edns_version(&self.bytes, opt)? != 0 || carries(&self.bytes, opt, OPTION_ECS) {
                return None;
            }
            if opt.dnssec_ok {
                flags |= KEY_DO | KEY_AD_WANTED;
            }
        }
        if h[3] & CD != 0 {
            flags |= KEY_CD;
        }
        if h[3] & AD != 0 {
            flags |= KEY_AD_WANTED;
        }
        Some((name, type_and_class, flags))
    }
}

/// The EDNS VERSION of an OPT RR (RFC 6891 §6.1.3): the second octet of its
/// TTL field.
fn edns_version(msg: &[u8], opt: &Opt) -> Option<u8> {
    ttl_field(msg, opt).map(|ttl| ttl[1])
}

/// The extended RCODE bits of an OPT RR (RFC 6891 §6.1.3): the first octet
/// of its TTL field.
fn extended_rcode(msg: &[u8], opt: &Opt) -> Option<u8> {
    ttl_field(msg, opt).map(|ttl| ttl[0])
}

fn ttl_field<'a>(msg: &'a [u8], opt: &Opt) -> Option<&'a [u8; 4]> {
    let at = opt.rdata.start.checked_sub(TTL_BEFORE_RDATA)?;
    msg.get(at..)?.first_chunk()
}

/// Whether an OPT RR (validated by the walk) carries an option of `code`.
fn carries(msg: &[u8], opt: &Opt, code: u16) -> bool {
    options(msg, opt.rdata.clone()).any(|option| option.is_ok_and(|(c, _)| c == code))
}

/// Clamps on the TTLs the cache keeps, in seconds: a floor so that very
/// short TTLs still save some upstream queries, and a ceiling so nothing is
/// kept longer than the operator allows (RFC 2181 §8, RFC 8767 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlClamp {
    /// The least TTL kept: shorter ones are raised to it.
    pub min: u32,
    /// The greatest TTL kept: longer ones are lowered to it. It wins over
    /// `min` if they cross.
    pub max: u32,
}

impl TtlClamp {
    /// `ttl` raised to `min`, then lowered to `max`.
    fn apply(self, ttl: u32) -> u32 {
        ttl.max(self.min).min(self.max)
    }
}

/// A TTL as RFC 2181 §8 reads it: a value with the top bit set counts as 0.
fn rfc2181_ttl(ttl: u32) -> u32 {
    if ttl & 0x8000_0000 == 0 { ttl } else { 0 }
}

/// What kind of answer a [`Cached`] is (for metrics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedKind {
    /// NOERROR with records in the answer section (RFC 1035 §4.1.1).
    Answer,
    /// NOERROR without answer records: the name exists, the type does not
    /// (RFC 2308 §2.2).
    NoData,
    /// NXDOMAIN: the name does not exist (RFC 2308 §2.1).
    NxDomain,
}

/// An answer as the cache keeps it, independent of the client that asked:
/// the message up to its last record, with ID 0, AA cleared (RFC 1035 §7.4:
/// a cached answer is not authoritative), no OPT RR and every TTL clamped;
/// where its TTL fields lie; the EDE options (RFC 8914) of the upstream's
/// OPT; how long it stays fresh, and what kind of answer it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    bytes: Box<[u8]>,
    /// Offsets of the TTL fields of every record (answer, authority and
    /// additional; the OPT is gone). A kept message is at most 65535 bytes.
    ttls: Box<[u16]>,
    /// Whole EDE options (code, length and data), back to back.
    ede: Box<[u8]>,
    lifetime: u32,
    kind: CachedKind,
    question_end: usize,
}

impl Response {
    /// What the cache may keep of this answer, or `None` if it must not be
    /// cached. The caller has checked [`Response::answers`]; this may be
    /// called before or after [`Response::fit_for_client`], so the OPT RR is
    /// only read, never kept.
    ///
    /// `None` for: TC=1 (RFC 2181 §9: an incomplete answer), OPCODE other
    /// than QUERY, QDCOUNT != 1, an RCODE other than NOERROR and NXDOMAIN
    /// (RFC 2308 §7 allows caching SERVFAIL, but a retry is better), extended
    /// RCODE bits in the OPT (RFC 6891 §6.1.3), an EDNS Client Subnet option
    /// (RFC 7871 §7.3), a TSIG or SIG(0) record (RFC 8945 §5.3); and for
    /// the malformed: a record of type OPT outside its place, a record after
    /// the OPT pointing into it, a name the walk reads reaching into a TTL
    /// field through a pointer (RFC 1035 §4.1.4: serving rewrites TTLs), RDATA
    /// too short for its names, or more than 65535 bytes.
    ///
    /// A positive answer (NOERROR, ANCOUNT > 0) has every TTL clamped into
    /// `clamp` and lives for the least of them; one with a TTL of 0 (or the
    /// top bit set, RFC 2181 §8) is not kept at all, whatever `clamp.min`
    /// says: the owner asked for it not to be cached.
    ///
    /// A negative answer (NXDOMAIN, or NOERROR without answers: NODATA) needs
    /// the zone's SOA in the authority section (RFC 2308 §5) and lives for
    /// the lesser of that SOA's TTL and its MINIMUM field (RFC 2308 §5), 0
    /// meaning not at all, clamped into `clamp`, and no longer than any other
    /// record's clamped TTL; the SOA's TTL field is set to it, the other
    /// records' TTLs are clamped. Nothing is kept with a lifetime of 0.
    pub fn to_cache(&self, clamp: TtlClamp) -> Option<Cached> {
        let h = header(&self.bytes)?;
        if h[2] & QR == 0
            || h[2] & (TC | OPCODE_MASK) != 0
            || read_u16(&self.bytes, QDCOUNT) != Some(1)
            || self.layout.signed
        {
            return None;
        }
        let rcode = h[3] & RCODE_MASK;
        if rcode != NOERROR && rcode != NXDOMAIN {
            return None;
        }
        let mut ede = Vec::new();
        if let Some(opt) = &self.layout.opt {
            if extended_rcode(&self.bytes, opt)? != 0 {
                return None;
            }
            for option in options(&self.bytes, opt.rdata.clone()) {
                let (code, range) = option.ok()?;
                match code {
                    OPTION_ECS => return None,
                    OPTION_EDE => ede.extend_from_slice(self.bytes.get(range)?),
                    _ => {}
                }
            }
        }

        let mut bytes = self.bytes.get(..self.layout.end)?.to_vec();
        if bytes.len() > MAX_MESSAGE_LEN {
            return None;
        }
        let mut layout = self.layout.clone();
        if layout.opt.is_some() {
            // Removal only moves pointers backwards, so they always still fit;
            // a record pointing into the OPT is an error: not kept.
            if !layout.replace_opt(&mut bytes, &[]).ok()? {
                return None;
            }
            let arcount = counts(&bytes)?[3].checked_sub(1)?;
            write_u16(&mut bytes, ARCOUNT, arcount);
        }
        let [_, an, ns, ar] = counts(&bytes)?;
        let kind = match (rcode, an) {
            (NXDOMAIN, _) => CachedKind::NxDomain,
            (_, 0) => CachedKind::NoData,
            _ => CachedKind::Answer,
        };

        let mut ttls = Vec::with_capacity(usize::from(an) + usize::from(ns) + usize::from(ar));
        // The TTL field of the SOA a negative answer is cached by, and its
        // negative TTL (RFC 2308 §5).
        let mut soa = None;
        // Clamped TTLs, written once every name is known not to read them.
        let mut clamped_ttls = Vec::with_capacity(ttls.capacity());
        let mut least_raw = u32::MAX;
        let mut lifetime = u32::MAX;
        let mut pos = layout.question_end;
        for (section, count) in [
            (Section::Answer, an),
            (Section::Authority, ns),
            (Section::Additional, ar),
        ] {
            for _ in 0..count {
                let rr = read_rr(&bytes, pos, section).ok()?;
                if rr.rtype == TYPE_OPT {
                    return None;
                }
                let at = rr.rdata.start - TTL_BEFORE_RDATA;
                let raw = rfc2181_ttl(rr.ttl);
                if kind != CachedKind::Answer
                    && section == Section::Authority
                    && rr.rtype == TYPE_SOA
                    && soa.is_none()
                {
                    if rr.rdata.len() < MIN_SOA_RDATA {
                        return None;
                    }
                    let minimum = bytes.get(rr.rdata.end - 4..rr.rdata.end)?;
                    let minimum = u32::from_be_bytes(minimum.try_into().ok()?);
                    soa = Some((at, raw.min(rfc2181_ttl(minimum))));
                } else {
                    let clamped = clamp.apply(raw);
                    clamped_ttls.push((at, clamped));
                    least_raw = least_raw.min(raw);
                    lifetime = lifetime.min(clamped);
                }
                ttls.push(u16::try_from(at).ok()?);
                pos = rr.end();
            }
        }
        match kind {
            CachedKind::Answer if least_raw == 0 => return None,
            CachedKind::Answer => {}
            CachedKind::NoData | CachedKind::NxDomain => {
                let (at, negative) = soa?;
                if negative == 0 {
                    return None;
                }
                let negative = clamp.apply(negative);
                clamped_ttls.push((at, negative));
                lifetime = lifetime.min(negative);
            }
        }
        if lifetime == 0 || names_read_ttls(&bytes, layout.question_end, pos, &ttls)? {
            return None;
        }
        for (at, ttl) in clamped_ttls {
            write_u32(&mut bytes, at, ttl);
        }
        set_id_and_clear_aa(&mut bytes);
        Some(Cached {
            bytes: bytes.into_boxed_slice(),
            ttls: ttls.into_boxed_slice(),
            ede: ede.into_boxed_slice(),
            lifetime,
            kind,
            question_end: layout.question_end,
        })
    }
}

/// Whether a name the walk reads in the records from `from` to `end` (an
/// owner name, or a name in the RDATA of a type a compressor may compress)
/// reaches the bytes of a TTL field at `ttls` (ascending) through its
/// compression pointers. That is malformed (RFC 1035 §4.1.4: a pointer refers
/// to a prior occurrence of a name, not to other fields), and serving the
/// answer rewrites those bytes, which would change the name or leave one the
/// walk rejects. `None` when a name cannot be followed (RDATA too short for
/// its names): not kept either.
fn names_read_ttls(msg: &[u8], from: usize, end: usize, ttls: &[u16]) -> Option<bool> {
    for at in name_pointers(msg, from, end).ok()? {
        let mut next = Some(at);
        // The walk bounded the chain; so is this loop, in case.
        let mut hops = 0u8;
        while let Some(pointer) = next {
            hops = hops.checked_add(1)?;
            let target = pointer_target(msg, pointer)?;
            let run = target..run_end(msg, target)?;
            let first = ttls.partition_point(|&ttl| usize::from(ttl) + 4 <= run.start);
            if ttls
                .get(first)
                .is_some_and(|&ttl| usize::from(ttl) < run.end)
            {
                return Some(true);
            }
            next = own_pointer(msg, target);
        }
    }
    Some(false)
}

fn set_id_and_clear_aa(msg: &mut [u8]) {
    if let Some(h) = msg.first_chunk_mut::<HEADER_LEN>() {
        h[..2].copy_from_slice(&[0, 0]);
        h[2] &= !AA;
    }
}

fn read_u32(msg: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*msg.get(at..)?.first_chunk()?))
}

fn write_u32(msg: &mut [u8], at: usize, value: u32) {
    if let Some(bytes) = msg.get_mut(at..at + 4) {
        bytes.copy_from_slice(&value.to_be_bytes());
    }
}

impl Cached {
    /// How many seconds after it was stored the entry is fresh: the least
    /// TTL it holds (RFC 1035 §7.4, RFC 2308 §5).
    pub fn lifetime(&self) -> u32 {
        self.lifetime
    }

    /// What kind of answer it is.
    pub fn kind(&self) -> CachedKind {
        self.kind
    }

    /// The heap bytes it holds, for the cache's memory bound.
    pub fn size(&self) -> usize {
        self.bytes.len() + self.ttls.len() * size_of::<u16>() + self.ede.len()
    }

    /// The answer to `query` (whose [`Query::cache_key`] equals the key it
    /// was stored under), `age` whole seconds after it was stored.
    ///
    /// The header is the kept one with the query's ID, QR=1, OPCODE 0, AA=0
    /// (RFC 1035 §7.4), TC=0, the query's RD and CD, RA=1, Z=0, the kept AD
    /// only if the query asked for it with AD or DO (RFC 6840 §5.7, §5.8),
    /// and the kept RCODE. The QNAME is the query's own bytes, so the client
    /// reads its own spelling (RFC 4343 §4), in the question and in every
    /// name that points at it.
    ///
    /// Every TTL is decreased by `age`, down to 0 (RFC 1035 §7.4); with
    /// `stale`, the entry is past its lifetime and served anyway (RFC 8767
    /// §4), so every TTL is that value instead (RFC 8767 suggests 30).
    ///
    /// An OPT RR is appended iff the query has one (RFC 6891 §7): payload
    /// [`EDNS_UDP_PAYLOAD`], extended RCODE 0, version 0, the query's DO, and
    /// only the kept EDE options: cookies and padding belong to another
    /// exchange. The layout is built from the edits, not walked.
    pub fn answer(&self, query: &Query, age: u32, stale: Option<u32>) -> Response {
        let q = query.bytes();
        let q_h = header(q).copied().unwrap_or([0; HEADER_LEN]);
        let dnssec_ok = query.opt().map(|opt| opt.dnssec_ok);
        let opt_len = dnssec_ok.map_or(0, |_| OPT_RR_LEN + self.ede.len());
        let mut bytes = Vec::with_capacity(self.bytes.len() + opt_len);
        bytes.extend_from_slice(&self.bytes);

        if let Some(h) = bytes.first_chunk_mut::<HEADER_LEN>() {
            let ad_wanted = q_h[3] & AD != 0 || dnssec_ok == Some(true);
            let ad = if ad_wanted { h[3] & AD } else { 0 };
            h[..2].copy_from_slice(&q_h[..2]);
            h[2] = QR | (q_h[2] & RD);
            h[3] = RA | ad | (q_h[3] & CD) | (h[3] & RCODE_MASK);
        }

        // Names equal ignoring ASCII case have the same bytes but for the
        // case of their letters (neither is compressed), so the query's fit
        // exactly and every pointer into them still lands on a label.
        let kept_name = HEADER_LEN..self.question_end.saturating_sub(4);
        let their_name = query.question().split_last_chunk::<4>().map(|(n, _)| n);
        if let (Some(ours), Some(theirs)) = (bytes.get_mut(kept_name), their_name)
            && ours.eq_ignore_ascii_case(theirs)
        {
            ours.copy_from_slice(theirs);
        }

        for &at in &*self.ttls {
            let at = usize::from(at);
            if let Some(ttl) = read_u32(&bytes, at) {
                write_u32(&mut bytes, at, stale.unwrap_or(ttl.saturating_sub(age)));
            }
        }

        let records_end = bytes.len();
        let opt = dnssec_ok.and_then(|dnssec_ok| {
            let arcount = counts(&bytes)?[3].checked_add(1)?;
            let rdlen = u16::try_from(self.ede.len()).ok()?;
            write_u16(&mut bytes, ARCOUNT, arcount);
            bytes.push(0);
            bytes.extend_from_slice(&TYPE_OPT.to_be_bytes());
            bytes.extend_from_slice(&EDNS_UDP_PAYLOAD.to_be_bytes());
            let ttl: u32 = if dnssec_ok { DO_BIT } else { 0 };
            bytes.extend_from_slice(&ttl.to_be_bytes());
            bytes.extend_from_slice(&rdlen.to_be_bytes());
            bytes.extend_from_slice(&self.ede);
            Some(Opt {
                range: records_end..bytes.len(),
                rdata: records_end + OPT_RR_LEN..bytes.len(),
                udp_payload: EDNS_UDP_PAYLOAD,
                dnssec_ok,
                has_padding: false,
                keepalive: None,
            })
        });
        let layout = Layout {
            question_end: self.question_end,
            end: bytes.len(),
            opt,
            signed: false,
        };
        Response { bytes, layout }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use proptest::prelude::*;

    use super::super::test_support::{parse, query_bytes};
    use super::super::walk::walk;
    use super::*;

    const CLAMP: TtlClamp = TtlClamp {
        min: 0,
        max: 86_400,
    };

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("valid name")
    }

    fn query(qname: &str, rtype: RecordType, edns: Option<(u16, bool)>) -> Query {
        Query::parse(&query_bytes(qname, rtype, edns)).expect("valid")
    }

    /// A query for `www.example.com A` with header octet `at` ORed with
    /// `bits` (AD and CD are in octet 3).
    fn query_with(edns: Option<(u16, bool)>, at: usize, bits: u8) -> Query {
        let mut q = query_bytes("www.example.com.", RecordType::A, edns);
        q[at] |= bits;
        Query::parse(&q).expect("valid")
    }

    fn key(q: &Query) -> CacheKey {
        q.cache_key().expect("cacheable")
    }

    /// An upstream answer to `qname`/`rtype`: ID 0x1111, RD, RA, AA and AD.
    fn upstream(qname: &str, rtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(0x1111)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .set_recursion_available(true)
            .set_authoritative(true)
            .set_authentic_data(true);
        m.add_query(hickory_proto::op::Query::query(name(qname), rtype));
        m
    }

    fn a(owner: &str, ttl: u32, octet: u8) -> Record {
        Record::from_rdata(
            name(owner),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, octet))),
        )
    }

    fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
        let rdata = SOA::new(
            name(&format!("ns.{zone}")),
            name(&format!("hostmaster.{zone}")),
            1,
            3600,
            600,
            86_400,
            minimum,
        );
        Record::from_rdata(name(zone), ttl, RData::SOA(rdata))
    }

    fn edns(dnssec_ok: bool, options: Vec<EdnsOption>) -> Edns {
        let mut e = Edns::new();
        e.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
        for option in options {
            e.options_mut().insert(option);
        }
        e
    }

    fn keep(bytes: Vec<u8>, clamp: TtlClamp) -> Option<Cached> {
        Response::parse(bytes).expect("valid").to_cache(clamp)
    }

    fn keep_msg(m: &Message, clamp: TtlClamp) -> Option<Cached> {
        keep(m.to_vec().expect("encodes"), clamp)
    }

    /// The answer served to `q`, checked to answer it and to carry the layout
    /// a fresh walk finds; with hickory-proto's reading of it.
    fn serve(c: &Cached, q: &Query, age: u32, stale: Option<u32>) -> (Vec<u8>, Message) {
        let r = c.answer(q, age, stale);
        assert_eq!(walk(r.bytes()).as_ref(), Ok(&r.layout), "layout kept");
        assert!(r.answers(q));
        let bytes = r.into_bytes();
        let m = parse(&bytes);
        (bytes, m)
    }

    /// Every record's TTL, in order: answer, authority, additional.
    fn ttls(m: &Message) -> Vec<u32> {
        m.answers()
            .iter()
            .chain(m.name_servers())
            .chain(m.additionals())
            .map(Record::ttl)
            .collect()
    }

    /// A TSIG record (RFC 8945 §4.2) appended to the additional section.
    fn sign(bytes: &mut Vec<u8>) {
        bytes.extend_from_slice(&[3, b'k', b'e', b'y', 0, 0, 250, 0, 255]);
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0xAB, 0xCD]);
        let ar = u16::from_be_bytes([bytes[10], bytes[11]]) + 1;
        bytes[10..12].copy_from_slice(&ar.to_be_bytes());
    }

    #[test]
    fn rfc4343_keys_ignore_qname_case() {
        let upper = query("WWW.Example.COM.", RecordType::A, None);
        let lower = query("www.example.com.", RecordType::A, None);
        assert_eq!(key(&upper), key(&lower));
        assert_ne!(
            key(&lower),
            key(&query("ww.example.com.", RecordType::A, None))
        );
        assert_eq!(key(&lower).len(), 17 + 4 + 1);
    }

    #[test]
    fn rfc6840_do_cd_and_ad_wanted_are_separate_keys() {
        let plain = key(&query_with(None, 0, 0));
        let edns = key(&query_with(Some((1232, false)), 0, 0));
        let dnssec_ok = key(&query_with(Some((1232, true)), 0, 0));
        let cd = key(&query_with(None, 3, CD));
        let ad = key(&query_with(None, 3, AD));
        // An OPT without DO asks for nothing else; DO already wants AD.
        assert_eq!(plain, edns);
        assert_eq!(dnssec_ok, key(&query_with(Some((4096, true)), 3, AD)));
        let keys = [&plain, &dnssec_ok, &cd, &ad];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn rfc1035_qtype_and_qclass_are_separate_keys() {
        let a = key(&query("example.com.", RecordType::A, None));
        assert_ne!(a, key(&query("example.com.", RecordType::AAAA, None)));
        let mut chaos = query_bytes("example.com.", RecordType::A, None);
        let last = chaos.len() - 1;
        chaos[last] = 3; // CH
        assert_ne!(a, key(&Query::parse(&chaos).expect("valid")));
    }

    #[test]
    fn queries_that_must_bypass_the_cache_have_no_key() {
        let mut no_rd = query_bytes("example.com.", RecordType::A, None);
        no_rd[2] &= !RD;
        assert_eq!(Query::parse(&no_rd).expect("valid").cache_key(), None);
        for qtype in [255u16, 252, 251, 253, 254, 41] {
            let q = query("example.com.", RecordType::from(qtype), None);
            assert_eq!(q.cache_key(), None, "QTYPE {qtype}");
        }
        // EDNS VERSION 1 (RFC 6891 §6.1.3): the second octet of the OPT TTL.
        let mut v1 = query_bytes("example.com.", RecordType::A, Some((1232, false)));
        let at = v1.len() - 11 + 6;
        v1[at] = 1;
        assert_eq!(Query::parse(&v1).expect("valid").cache_key(), None);
        // EDNS Client Subnet (RFC 7871).
        let mut m =
            Message::from_vec(&query_bytes("example.com.", RecordType::A, None)).expect("decodes");
        let subnet = ClientSubnet::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24, 0);
        m.set_edns(edns(false, vec![EdnsOption::Subnet(subnet)]));
        let q = Query::parse(&m.to_vec().expect("encodes")).expect("valid");
        assert_eq!(q.cache_key(), None);
        // TSIG.
        let mut signed = query_bytes("example.com.", RecordType::A, Some((1232, false)));
        sign(&mut signed);
        assert_eq!(Query::parse(&signed).expect("valid").cache_key(), None);
    }

    /// One key laid out again and again (as the shell's lookups do) is
    /// each time the key its query would make afresh, whatever it held
    /// before, longer or shorter; a query that bypasses the cache says so.
    #[test]
    fn a_reused_key_is_the_key_made_afresh() {
        let mut reused = CacheKey::default();
        for q in [
            query("a-much-longer-name.example.com.", RecordType::AAAA, None),
            query("Example.COM.", RecordType::A, Some((1232, true))),
            query_with(None, 3, CD),
            query("x.", RecordType::TXT, None),
        ] {
            assert!(q.cache_key_into(&mut reused));
            assert_eq!(reused, key(&q));
        }
        let mut no_rd = query_bytes("example.com.", RecordType::A, None);
        no_rd[2] &= !RD;
        let no_rd = Query::parse(&no_rd).expect("valid");
        assert!(!no_rd.cache_key_into(&mut reused));
    }

    #[test]
    fn rfc1035_served_ttls_decay_with_age() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        m.add_answer(a("www.example.com.", 600, 2));
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        assert_eq!((c.lifetime(), c.kind()), (300, CachedKind::Answer));
        let q = query("www.example.com.", RecordType::A, None);
        assert_eq!(ttls(&serve(&c, &q, 0, None).1), [300, 600]);
        assert_eq!(ttls(&serve(&c, &q, 100, None).1), [200, 500]);
        assert_eq!(ttls(&serve(&c, &q, 400, None).1), [0, 200]);
        assert!(c.size() >= m.to_vec().expect("encodes").len());
    }

    #[test]
    fn rfc2181_ttls_are_clamped_into_min_and_max() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 10, 1));
        m.add_answer(a("www.example.com.", 1_000_000, 2));
        m.add_additional(a("ns.example.com.", 100, 3));
        let clamp = TtlClamp { min: 60, max: 3600 };
        let c = keep_msg(&m, clamp).expect("cacheable");
        assert_eq!(c.lifetime(), 60);
        let q = query("www.example.com.", RecordType::A, None);
        assert_eq!(ttls(&serve(&c, &q, 0, None).1), [60, 3600, 100]);
    }

    #[test]
    fn rfc1035_ttl_zero_is_never_cached() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        m.add_answer(a("www.example.com.", 0, 2));
        assert!(keep_msg(&m, TtlClamp { min: 60, max: 3600 }).is_none());
        // And a ceiling of 0 keeps nothing.
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        assert!(keep_msg(&m, TtlClamp { min: 0, max: 0 }).is_none());
    }

    #[test]
    fn rfc2181_ttl_with_the_top_bit_set_counts_as_zero() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 0x8000_0100, 1));
        assert!(keep_msg(&m, TtlClamp { min: 60, max: 3600 }).is_none());
    }

    #[test]
    fn rfc4343_client_spelling_is_restored_in_question_and_answers() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        let resp = m.to_vec().expect("encodes");
        let question_end = HEADER_LEN + 17 + 4;
        // The answer's owner is a pointer to the question.
        assert_eq!(resp[question_end..question_end + 2], [0xC0, 12]);
        let c = keep(resp, CLAMP).expect("cacheable");
        let q = query("WwW.ExAmple.COM.", RecordType::A, None);
        let (bytes, m) = serve(&c, &q, 0, None);
        assert_eq!(bytes[HEADER_LEN..question_end], *q.question());
        assert_eq!(m.queries()[0].name().to_ascii(), "WwW.ExAmple.COM.");
        assert_eq!(m.answers()[0].name().to_ascii(), "WwW.ExAmple.COM.");
    }

    #[test]
    fn rfc1035_id_rd_and_cd_are_the_querys_and_aa_is_cleared() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        let (_, m) = serve(&c, &query_with(None, 3, CD), 0, None);
        assert_eq!(m.id(), 0x4242);
        assert!(m.recursion_desired() && m.checking_disabled());
        assert!(m.recursion_available() && !m.authoritative() && !m.truncated());
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        let mut no_rd = query_bytes("www.example.com.", RecordType::A, None);
        no_rd[2] &= !RD;
        let (_, m) = serve(&c, &Query::parse(&no_rd).expect("valid"), 0, None);
        assert!(!m.recursion_desired() && !m.checking_disabled());
    }

    #[test]
    fn rfc6840_ad_is_cleared_unless_the_query_wants_it() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        let ad = |q: Query| serve(&c, &q, 0, None).1.authentic_data();
        assert!(!ad(query_with(None, 0, 0)));
        assert!(!ad(query_with(Some((1232, false)), 0, 0)));
        assert!(ad(query_with(None, 3, AD)));
        assert!(ad(query_with(Some((1232, true)), 0, 0)));
        // An answer without AD does not gain it.
        m.set_authentic_data(false);
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        assert!(
            !serve(&c, &query_with(None, 3, AD), 0, None)
                .1
                .authentic_data()
        );
    }

    #[test]
    fn rfc2308_nxdomain_lives_for_the_lesser_of_soa_ttl_and_minimum() {
        for (soa_ttl, minimum, lifetime) in [(3600, 300, 300), (60, 300, 60)] {
            let mut m = upstream("nx.example.com.", RecordType::A);
            m.set_response_code(ResponseCode::NXDomain);
            m.add_name_server(soa("example.com.", soa_ttl, minimum));
            let c = keep_msg(&m, CLAMP).expect("cacheable");
            assert_eq!((c.lifetime(), c.kind()), (lifetime, CachedKind::NxDomain));
            let q = query("nx.example.com.", RecordType::A, None);
            let (_, m) = serve(&c, &q, 10, None);
            assert_eq!(m.response_code(), ResponseCode::NXDomain);
            assert_eq!(ttls(&m), [lifetime - 10]);
        }
        // A MINIMUM of 0 is not cached; a clamp raises a short one.
        let mut m = upstream("nx.example.com.", RecordType::A);
        m.set_response_code(ResponseCode::NXDomain);
        m.add_name_server(soa("example.com.", 3600, 0));
        assert!(keep_msg(&m, TtlClamp { min: 60, max: 3600 }).is_none());
        let mut m = upstream("nx.example.com.", RecordType::A);
        m.set_response_code(ResponseCode::NXDomain);
        m.add_name_server(soa("example.com.", 3600, 5));
        let c = keep_msg(&m, TtlClamp { min: 60, max: 3600 }).expect("cacheable");
        assert_eq!(c.lifetime(), 60);
    }

    #[test]
    fn rfc2308_nodata_with_soa_is_cached() {
        let mut m = upstream("www.example.com.", RecordType::AAAA);
        m.add_name_server(soa("example.com.", 900, 120));
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        assert_eq!((c.lifetime(), c.kind()), (120, CachedKind::NoData));
        let q = query("www.example.com.", RecordType::AAAA, None);
        let (_, m) = serve(&c, &q, 0, None);
        assert!(m.answers().is_empty());
        assert_eq!(ttls(&m), [120]);
    }

    #[test]
    fn rfc2308_negative_answer_lives_no_longer_than_its_other_records() {
        // NXDOMAIN at the end of a CNAME chain.
        let mut m = upstream("alias.example.com.", RecordType::A);
        m.set_response_code(ResponseCode::NXDomain);
        let cname = RData::CNAME(CNAME(name("nx.example.com.")));
        m.add_answer(Record::from_rdata(name("alias.example.com."), 30, cname));
        m.add_name_server(soa("example.com.", 3600, 300));
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        assert_eq!((c.lifetime(), c.kind()), (30, CachedKind::NxDomain));
        let q = query("alias.example.com.", RecordType::A, None);
        assert_eq!(ttls(&serve(&c, &q, 0, None).1), [30, 300]);
    }

    #[test]
    fn rfc2308_negative_answer_without_soa_is_not_cached() {
        let mut nx = upstream("nx.example.com.", RecordType::A);
        nx.set_response_code(ResponseCode::NXDomain);
        assert!(keep_msg(&nx, CLAMP).is_none());
        let nodata = upstream("www.example.com.", RecordType::AAAA);
        assert!(keep_msg(&nodata, CLAMP).is_none());
    }

    #[test]
    fn incomplete_failed_tailored_or_signed_answers_are_not_cached() {
        let answer = || {
            let mut m = upstream("www.example.com.", RecordType::A);
            m.add_answer(a("www.example.com.", 300, 1));
            m
        };
        assert!(keep_msg(&answer(), CLAMP).is_some());
        let mut tc = answer();
        tc.set_truncated(true);
        assert!(keep_msg(&tc, CLAMP).is_none(), "TC");
        for rcode in [ResponseCode::ServFail, ResponseCode::Refused] {
            let mut m = answer();
            m.set_response_code(rcode);
            assert!(keep_msg(&m, CLAMP).is_none(), "{rcode}");
        }
        let mut ecs = answer();
        let subnet = ClientSubnet::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24, 24);
        ecs.set_edns(edns(false, vec![EdnsOption::Subnet(subnet)]));
        assert!(keep_msg(&ecs, CLAMP).is_none(), "ECS");
        // Extended RCODE bits (BADVERS is 16): the first octet of the OPT TTL.
        let mut m = answer();
        m.set_edns(edns(false, vec![]));
        let mut bytes = m.to_vec().expect("encodes");
        assert!(keep(bytes.clone(), CLAMP).is_some());
        let at = bytes.len() - 11 + 5;
        bytes[at] = 1;
        assert!(keep(bytes, CLAMP).is_none(), "extended RCODE");
        let mut signed = answer().to_vec().expect("encodes");
        sign(&mut signed);
        assert!(keep(signed, CLAMP).is_none(), "TSIG");
        let mut status = answer().to_vec().expect("encodes");
        status[2] |= 2 << 3;
        assert!(keep(status, CLAMP).is_none(), "OPCODE");
    }

    #[test]
    fn rfc6891_served_opt_is_the_clients_with_only_the_ede_options() {
        let ede = EdnsOption::Unknown(15, vec![0, 3, b's', b't', b'a', b'l', b'e']);
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        m.add_additional(a("ns.example.com.", 300, 53));
        m.set_edns(edns(
            true,
            // Padding, a cookie and the upstream's edns-tcp-keepalive
            // timeout (RFC 7828) belong to the upstream exchange.
            vec![
                EdnsOption::Unknown(12, vec![0; 100]),
                EdnsOption::Unknown(10, vec![7; 16]),
                EdnsOption::Unknown(11, vec![0, 10]),
                ede.clone(),
            ],
        ));
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        for dnssec_ok in [false, true] {
            let q = query("www.example.com.", RecordType::A, Some((4096, dnssec_ok)));
            let (bytes, m) = serve(&c, &q, 0, None);
            let got = m.extensions().as_ref().expect("OPT");
            assert_eq!(got.max_payload(), EDNS_UDP_PAYLOAD);
            assert_eq!((got.rcode_high(), got.version()), (0, 0));
            assert_eq!(got.flags().dnssec_ok, dnssec_ok);
            assert_eq!(got.options().as_ref().len(), 1);
            assert_eq!(got.option(EdnsCode::from(15)), Some(&ede));
            // The OPT is last, its RDATA exactly the EDE option.
            let want = [0, 11, 0, 15, 0, 7, 0, 3, b's', b't', b'a', b'l', b'e'];
            assert_eq!(bytes[bytes.len() - want.len()..], want);
            assert_eq!(m.additionals().len(), 1);
        }
        let (_, m) = serve(&c, &query("www.example.com.", RecordType::A, None), 0, None);
        assert!(m.extensions().is_none());
        assert_eq!(m.additionals().len(), 1);
    }

    #[test]
    fn rfc8767_stale_answer_has_every_ttl_set() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        m.add_answer(a("www.example.com.", 600, 2));
        m.add_name_server(soa("example.com.", 3600, 60));
        m.add_additional(a("ns.example.com.", 900, 53));
        let c = keep_msg(&m, CLAMP).expect("cacheable");
        let q = query("www.example.com.", RecordType::A, Some((1232, false)));
        assert_eq!(ttls(&serve(&c, &q, 5000, Some(30)).1), [30; 4]);
    }

    #[test]
    fn answer_keeps_nothing_after_the_last_record() {
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        let mut bytes = m.to_vec().expect("encodes");
        let len = bytes.len();
        bytes.extend_from_slice(&[1, 2, 3]);
        let c = keep(bytes, CLAMP).expect("cacheable");
        let q = query("www.example.com.", RecordType::A, None);
        assert_eq!(serve(&c, &q, 0, None).0.len(), len);
    }

    #[test]
    fn rfc1035_records_after_the_removed_opt_keep_their_names_and_ttls() {
        // Additional: [OPT], ns2 A, and an MX owned by a pointer to ns2
        // (after the OPT) whose exchange points there too.
        let mut m = upstream("example.com.", RecordType::NS);
        let ns = RData::NS(hickory_proto::rr::rdata::NS(name("ns1.example.com.")));
        m.add_answer(Record::from_rdata(name("example.com."), 60, ns));
        m.set_edns(edns(false, vec![EdnsOption::Unknown(10, vec![1; 8])]));
        let mut r = m.to_vec().expect("encodes");
        let ns2 = u8::try_from(r.len()).expect("short message");
        r.extend_from_slice(b"\x03ns2\xC0\x0C");
        r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 70, 0, 4, 192, 0, 2, 2]);
        r.extend_from_slice(&[0xC0, ns2, 0, 15, 0, 1, 0, 0, 0, 80, 0, 4, 0, 10, 0xC0, ns2]);
        r[11] = 3;
        let c = keep(r.clone(), CLAMP).expect("cacheable");
        let q = query("Example.com.", RecordType::NS, None);
        let (bytes, got) = serve(&c, &q, 5, None);
        assert_eq!(bytes.len(), r.len() - 11 - 12);
        assert_eq!(ttls(&got), [55, 65, 75]);
        assert_eq!(got.additionals()[1].name(), &name("ns2.example.com."));
        // After `fit_for_client` removed the OPT, the same is kept.
        let mut fitted = Response::parse(r).expect("valid");
        fitted
            .fit_for_client(super::super::Padding::AddedOpt)
            .expect("removable");
        assert_eq!(fitted.to_cache(CLAMP), Some(c));
    }

    /// Found by the `cache` fuzz check: an owner name points into the TTL
    /// field of an earlier record, where a 0 octet reads as the root (RFC
    /// 1035 §4.1.4 makes that malformed). Aging the TTL rewrote the octet
    /// into a pointer, and the served answer no longer parsed.
    #[test]
    fn rfc1035_name_pointing_into_a_ttl_field_is_not_cached() {
        let input =
            include_bytes!("../../../../fuzz/regressions/cache/owner-points-into-a-ttl-field");
        let resp = input[1..].to_vec(); // the fuzz input's first byte is the flags
        let view = Response::parse(resp).expect("the walk accepts it");
        assert_eq!(
            view.to_cache(TtlClamp {
                min: 1,
                max: u32::MAX
            }),
            None
        );
        // The same name pointing at a label instead is kept.
        let mut m = upstream("www.example.com.", RecordType::A);
        m.add_answer(a("www.example.com.", 300, 1));
        m.add_additional(a("www.example.com.", 60, 2));
        let mut bytes = m.to_vec().expect("encodes");
        let last = bytes.len() - 16;
        assert_eq!(bytes[last..last + 2], [0xC0, 12]);
        assert!(keep(bytes.clone(), CLAMP).is_some());
        // Pointing at the first octet of the first answer's TTL, a 0 that
        // reads as the root.
        let ttl_at = HEADER_LEN + 17 + 4 + 2 + 2 + 2;
        assert_eq!(bytes[ttl_at..ttl_at + 4], 300u32.to_be_bytes());
        bytes[last + 1] = u8::try_from(ttl_at).expect("short message");
        Response::parse(bytes.clone()).expect("the walk accepts it");
        assert!(keep(bytes, CLAMP).is_none());
    }

    /// A TTL as the property test draws it: mostly usual values, sometimes 0
    /// or with the top bit set.
    fn any_ttl() -> impl Strategy<Value = u32> {
        prop_oneof![
            8 => 1u32..1_000_000,
            1 => Just(0u32),
            1 => 0x8000_0000u32..=u32::MAX,
            1 => 1u32..0x8000_0000,
        ]
    }

    proptest! {
        /// What is served decodes, answers the query in its own spelling, and
        /// every TTL is the upstream's clamped, then aged (RFC 1035 §7.4,
        /// RFC 2181 §8).
        #[test]
        fn served_ttls_are_clamped_then_aged(
            labels in proptest::collection::vec("[a-zA-Z0-9]{1,12}", 1..4),
            ttls_in in proptest::collection::vec(any_ttl(), 1..8),
            in_answer in 1usize..8,
            min in 0u32..400,
            max in 0u32..100_000,
            age in prop_oneof![0u32..200_000, Just(u32::MAX)],
            dnssec_ok in any::<Option<bool>>(),
        ) {
            let spelled = labels.iter().map(|l| format!("{l}.")).collect::<String>();
            let lower = spelled.to_ascii_lowercase();
            let in_answer = in_answer.min(ttls_in.len());
            let mut m = upstream(&lower, RecordType::A);
            for (i, &ttl) in ttls_in.iter().enumerate() {
                let octet = u8::try_from(i).expect("few records");
                if i < in_answer {
                    m.add_answer(a(&lower, ttl, octet));
                } else {
                    m.add_additional(a(&format!("ns{i}.{lower}"), ttl, octet));
                }
            }
            let clamp = TtlClamp { min, max };
            let clamped: Vec<u32> = ttls_in
                .iter()
                .map(|&t| rfc2181_ttl(t).max(min).min(max))
                .collect();
            let cached = keep_msg(&m, clamp);
            let lifetime = clamped.iter().copied().min().unwrap_or(0);
            if ttls_in.iter().any(|&t| rfc2181_ttl(t) == 0) || lifetime == 0 {
                prop_assert!(cached.is_none());
                return Ok(());
            }
            let c = cached.expect("cacheable");
            prop_assert_eq!(c.lifetime(), lifetime);
            let q = query(&spelled, RecordType::A, dnssec_ok.map(|d| (1232, d)));
            prop_assert_eq!(key(&q), key(&query(&lower, RecordType::A, dnssec_ok.map(|d| (512, d)))));
            let (_, got) = serve(&c, &q, age, None);
            prop_assert_eq!(got.id(), 0x4242);
            prop_assert_eq!(got.queries()[0].name().to_ascii(), spelled.clone());
            let want: Vec<u32> = clamped.iter().map(|t| t.saturating_sub(age)).collect();
            prop_assert_eq!(ttls(&got), want);
            prop_assert_eq!(got.extensions().is_some(), dnssec_ok.is_some());
        }
    }
}
