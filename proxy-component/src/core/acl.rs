//! Client access control: which source networks may query
//! (`allow_networks`). Others get REFUSED (RFC 1035 §4.1.1, RCODE 5), the
//! answer for "policy says no".
//!
//! The host parses and validates `allow_networks` with this same type, so
//! what the configuration accepts and what the component enforces cannot
//! drift apart.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network: an address with its host bits zeroed and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

/// A prefix longer than the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {0} is longer than the address")]
pub struct BadPrefix(pub u8);

impl IpNet {
    /// The network of `addr` with `prefix_len` bits, host bits cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, BadPrefix> {
        let addr = match addr {
            IpAddr::V4(a) if prefix_len <= 32 => {
                IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask_v4(prefix_len)))
            }
            IpAddr::V6(a) if prefix_len <= 128 => {
                IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask_v6(prefix_len)))
            }
            _ => return Err(BadPrefix(prefix_len)),
        };
        Ok(Self { addr, prefix_len })
    }

    /// Parses `10.0.0.0/8`, `fc00::/7` or a bare address (a host network).
    /// Host bits in the address are cleared rather than rejected.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.trim().parse().ok()?;
                let len = len.trim();
                // u8::from_str accepts a leading '+'; a prefix length is digits only.
                if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Self::new(addr, len.parse().ok()?).ok()
            }
            None => {
                let addr: IpAddr = text.trim().parse().ok()?;
                let len = if addr.is_ipv4() { 32 } else { 128 };
                Self::new(addr, len).ok()
            }
        }
    }

    /// The network address (host bits are zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Number of leading bits that identify the network.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4 clients)
    /// matches the IPv4 networks its IPv4 address is in, and vice versa.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => v4_in(net, self.prefix_len, ip),
            (IpAddr::V4(net), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|ip| v4_in(net, self.prefix_len, ip)),
            (IpAddr::V6(net), IpAddr::V6(ip)) => v6_in(net, self.prefix_len, ip),
            (IpAddr::V6(net), IpAddr::V4(ip)) => v6_in(net, self.prefix_len, ip.to_ipv6_mapped()),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn v4_in(net: Ipv4Addr, len: u8, ip: Ipv4Addr) -> bool {
    ip.to_bits() & mask_v4(len) == net.to_bits()
}

fn v6_in(net: Ipv6Addr, len: u8, ip: Ipv6Addr) -> bool {
    ip.to_bits() & mask_v6(len) == net.to_bits()
}

/// The set of networks allowed to query.
#[derive(Clone, Debug, Default)]
pub struct Acl(Vec<IpNet>);

impl Acl {
    /// An ACL from its networks; an empty list allows nobody.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// True if `ip` may query.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        IpNet::parse(text).expect("valid network")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn host_bits_are_cleared_and_bare_addresses_are_host_networks() {
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("fe80::1/10").to_string(), "fe80::/10");
        assert_eq!(net("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("1.2.3.4/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("10.1.2.3/8").addr(), ip("10.0.0.0"));
        assert_eq!(net("10.1.2.3/8").prefix_len(), 8);
    }

    #[test]
    fn bad_networks_are_rejected() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "x",
            "",
        ] {
            assert_eq!(IpNet::parse(bad), None, "{bad}");
        }
        assert_eq!(IpNet::new(ip("1.2.3.4"), 33), Err(BadPrefix(33)));
    }

    #[test]
    fn contains_respects_the_prefix() {
        assert!(net("172.16.0.0/12").contains(ip("172.31.255.255")));
        assert!(!net("172.16.0.0/12").contains(ip("172.32.0.0")));
        assert!(net("fc00::/7").contains(ip("fd12::1")));
        assert!(!net("fc00::/7").contains(ip("fe00::1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("::1").contains(ip("::1")));
        assert!(!net("::1").contains(ip("::2")));
    }

    #[test]
    fn v4_mapped_v6_clients_match_v4_networks() {
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("127.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(!net("127.0.0.0/8").contains(ip("::1")));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    }

    #[test]
    fn empty_acl_allows_nobody() {
        assert!(!Acl::default().allows(ip("127.0.0.1")));
        assert!(Acl::new(vec![net("127.0.0.0/8")]).allows(ip("127.0.0.1")));
    }
}
