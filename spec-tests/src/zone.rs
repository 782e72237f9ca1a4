//! Expected contents of the fixture zone `dot.test.` (`fixtures/zone/dot.test.conf`).
//!
//! All records have TTL [`TTL`]. Names under `dot.test.` that are not listed are
//! NXDOMAIN (with the zone's SOA in the authority section); names outside `dot.test.`
//! are REFUSED by the fixture resolver.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The zone apex.
pub const ZONE: &str = "dot.test.";
/// TTL of every record in the zone.
pub const TTL: u32 = 300;
/// One A record: [`A_ADDR`].
pub const A_NAME: &str = "a.dot.test.";
/// The address of [`A_NAME`].
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Three A records: [`MULTI_ADDRS`].
pub const MULTI_NAME: &str = "multi.dot.test.";
/// The addresses of [`MULTI_NAME`] (the resolver may return them in any order).
pub const MULTI_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(192, 0, 2, 11),
    Ipv4Addr::new(192, 0, 2, 12),
];
/// One AAAA record: [`AAAA_ADDR`].
pub const AAAA_NAME: &str = "aaaa.dot.test.";
/// The address of [`AAAA_NAME`].
pub const AAAA_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// [`MEDIUM_COUNT`] TXT records (answer ~1.1 KB: over 512, under 1232 bytes).
pub const MEDIUM_NAME: &str = "medium.dot.test.";
/// Number of TXT records at [`MEDIUM_NAME`].
pub const MEDIUM_COUNT: usize = 5;
/// [`BIG_COUNT`] TXT records (answer ~8.5 KB: over 4096 bytes, so truncated on UDP).
pub const BIG_NAME: &str = "big.dot.test.";
/// Number of TXT records at [`BIG_NAME`].
pub const BIG_COUNT: usize = 40;
/// Length of every TXT string in the zone.
pub const TXT_LEN: usize = 200;
/// A name in the zone with no records: NXDOMAIN.
pub const NX_NAME: &str = "nx.dot.test.";
/// A name outside the zone: REFUSED by the fixture resolver.
pub const OUTSIDE_NAME: &str = "example.com.";

/// TXT string number `i`: the two-digit index followed by 198 copies of the letter
/// `'a' + i % 26` (e.g. `"01bbb…b"`).
pub fn txt_string(i: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(i % 26).expect("i % 26 < 26"));
    format!("{i:02}{}", letter.to_string().repeat(TXT_LEN - 2))
}

/// The TXT strings of [`MEDIUM_NAME`] (indexes 0..5), sorted.
pub fn medium_txt() -> Vec<String> {
    (0..MEDIUM_COUNT).map(txt_string).collect()
}

/// The TXT strings of [`BIG_NAME`] (indexes 0..40), sorted.
pub fn big_txt() -> Vec<String> {
    (0..BIG_COUNT).map(txt_string).collect()
}
