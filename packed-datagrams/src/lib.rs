//! Many UDP datagrams and their peers' addresses in one byte list: the
//! layout of the WIT `datagram-batch` interface (`wit/world.wit`), written
//! and read on both sides of it, by the host and by the component.
//!
//! `wasi:sockets` moves a batch as a `list<incoming-datagram>`: a record per
//! datagram, its bytes a list of their own and its address a variant of
//! tuples. wasmtime lowers that field by field, and each datagram's bytes
//! cost a call into the component's allocator: some 1,500 instructions a
//! received datagram, and 750 a sent one, besides the copy. Here a batch is
//! one `list<u8>`: one allocation and one copy per call, whatever it holds.
//!
//! Each datagram is a [`HEADER`]-byte header and then its bytes. The
//! header, little-endian (as the component's memory is):
//!
//! | bytes | what |
//! |---|---|
//! | 0..2 | the payload's length (at most 65,535) |
//! | 2..4 | the peer's port |
//! | 4 | the peer's family: 4 or 6 |
//! | 5..8 | zero |
//! | 8..12 | IPv6 flow information (0 for IPv4) |
//! | 12..16 | IPv6 scope id (0 for IPv4) |
//! | 16..32 | the address: an IPv4 address in its first 4 bytes and zeros after, an IPv6 address in all 16 |
//!
//! A reader takes nothing it does not check: a list that ends inside a
//! header or a payload, a family other than 4 or 6, or padding that is not
//! zero is [`Malformed`], and reading stops there.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The bytes before each datagram's payload.
pub const HEADER: usize = 32;

/// The largest payload: what a UDP datagram carries at most, and what the
/// header's length field holds.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// A payload longer than [`MAX_PAYLOAD`]: no UDP datagram carries it, and
/// nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a datagram payload is at most {MAX_PAYLOAD} bytes")
    }
}

impl std::error::Error for TooLarge {}

/// A list that is not a sequence of whole datagrams: where the first bad
/// one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// The offset of the header that is cut short or invalid, or whose
    /// payload is cut short.
    pub at: usize,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no whole datagram at byte {} of a packed list", self.at)
    }
}

impl std::error::Error for Malformed {}

/// Appends `payload`, from or to `peer`, to `out`.
pub fn push(out: &mut Vec<u8>, payload: &[u8], peer: SocketAddr) -> Result<(), TooLarge> {
    let len = u16::try_from(payload.len()).map_err(|_| TooLarge)?;
    let mut header = [0u8; HEADER];
    header[0..2].copy_from_slice(&len.to_le_bytes());
    header[2..4].copy_from_slice(&peer.port().to_le_bytes());
    match peer {
        SocketAddr::V4(a) => {
            header[4] = 4;
            header[16..20].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            header[4] = 6;
            header[8..12].copy_from_slice(&a.flowinfo().to_le_bytes());
            header[12..16].copy_from_slice(&a.scope_id().to_le_bytes());
            header[16..32].copy_from_slice(&a.ip().octets());
        }
    }
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// The datagrams of `packed`, in order: each payload borrowed from it, and
/// its peer. After a [`Malformed`] it yields nothing more.
pub fn read(packed: &[u8]) -> Reader<'_> {
    Reader {
        packed,
        at: 0,
        failed: false,
    }
}

/// The iterator [`read`] returns.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    packed: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(&'a [u8], SocketAddr), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at == self.packed.len() {
            return None;
        }
        let at = self.at;
        match datagram(&self.packed[at..]) {
            Some((payload, peer)) => {
                self.at += HEADER + payload.len();
                Some(Ok((payload, peer)))
            }
            None => {
                self.failed = true;
                Some(Err(Malformed { at }))
            }
        }
    }
}

impl std::iter::FusedIterator for Reader<'_> {}

/// The datagram `rest` starts with, if it holds a whole and valid one.
fn datagram(rest: &[u8]) -> Option<(&[u8], SocketAddr)> {
    let (header, rest) = rest.split_first_chunk::<HEADER>()?;
    let field =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let len = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let port = u16::from_le_bytes([header[2], header[3]]);
    if header[5..8] != [0; 3] {
        return None;
    }
    let peer = match header[4] {
        4 if header[8..16] == [0; 8] && header[20..32] == [0; 12] => {
            let [a, b, c, d] = [header[16], header[17], header[18], header[19]];
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
        }
        6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&header[16..32]);
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                field(8),
                field(12),
            ))
        }
        _ => return None,
    };
    Some((rest.get(..len)?, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
                |(ip, port, flow, scope)| {
                    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope))
                }
            ),
        ]
    }

    proptest! {
        /// What is pushed is read back, every datagram, in order, with its
        /// peer exactly (an IPv4 peer stays IPv4; flow and scope kept).
        #[test]
        fn what_is_pushed_is_read_back(
            datagrams in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..600), peer()), 0..20),
        ) {
            let mut packed = Vec::new();
            for (payload, peer) in &datagrams {
                push(&mut packed, payload, *peer).expect("small enough");
            }
            let back: Vec<(Vec<u8>, SocketAddr)> = read(&packed)
                .map(|d| d.map(|(p, a)| (p.to_vec(), a)))
                .collect::<Result<_, _>>()
                .expect("whole datagrams");
            prop_assert_eq!(back, datagrams);
        }

        /// A list cut anywhere inside a datagram reads the datagrams before
        /// the cut and then one error, at the cut datagram's start.
        #[test]
        fn a_cut_list_is_malformed_where_the_cut_datagram_starts(
            lens in proptest::collection::vec(0usize..100, 1..6),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut packed = Vec::new();
            let mut starts = Vec::new();
            for (i, len) in lens.iter().enumerate() {
                starts.push(packed.len());
                push(&mut packed, &vec![i as u8; *len], "127.0.0.1:53".parse().expect("addr")).expect("small");
            }
            let cut = cut.index(packed.len());
            // The datagram the cut falls in (a cut at a boundary is whole).
            let whole = starts.iter().filter(|&&s| s < cut).count();
            let cut_at = *starts.iter().rev().find(|&&s| s < cut).unwrap_or(&0);
            let got: Vec<_> = read(&packed[..cut]).collect();
            let boundary = starts.contains(&cut);
            if boundary {
                prop_assert_eq!(got.len(), whole);
                prop_assert!(got.iter().all(Result::is_ok));
            } else {
                prop_assert_eq!(got.len(), whole);
                prop_assert_eq!(got.last().copied(), Some(Err(Malformed { at: cut_at })));
                prop_assert!(got[..whole - 1].iter().all(Result::is_ok));
            }
        }
    }

    #[test]
    fn a_payload_over_65535_bytes_is_refused_and_nothing_is_written() {
        let mut packed = vec![1, 2, 3];
        let peer = "[::1]:5353".parse().expect("addr");
        assert_eq!(push(&mut packed, &vec![0; 65_536], peer), Err(TooLarge));
        assert_eq!(packed, [1, 2, 3]);
        push(&mut packed, &vec![7; 65_535], peer).expect("the largest fits");
        assert_eq!(
            read(&packed[3..]).next(),
            Some(Ok((&vec![7; 65_535][..], peer)))
        );
    }

    #[test]
    fn an_unknown_family_or_stray_padding_is_malformed_and_reading_stops() {
        let mut packed = Vec::new();
        let peer: SocketAddr = "10.0.0.1:53".parse().expect("addr");
        push(&mut packed, b"one", peer).expect("small");
        let second = packed.len();
        push(&mut packed, b"two", peer).expect("small");
        push(&mut packed, b"three", peer).expect("small");
        for (byte, value) in [
            (second + 4, 5u8),
            (second + 4, 0),
            (second + 6, 1),
            (second + 9, 1),
            (second + 25, 1),
        ] {
            let mut bad = packed.clone();
            bad[byte] = value;
            let got: Vec<_> = read(&bad).collect();
            assert_eq!(
                got,
                vec![Ok((&b"one"[..], peer)), Err(Malformed { at: second })],
                "byte {byte} set to {value}"
            );
        }
        assert_eq!(read(&[]).count(), 0);
    }
}
