//! Client access control: which source networks may query
//! (`allow_networks`). Others get REFUSED (RFC 1035 §4.1.1, RCODE 5), the
//! answer for "policy says no".

use std::net::IpAddr;

/// A network in CIDR form, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

/// A prefix longer than the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {0} is longer than the address")]
pub struct BadPrefix(pub u8);

impl IpNet {
    /// A network; host bits are cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, BadPrefix> {
        let addr = match addr {
            IpAddr::V4(a) if prefix_len <= 32 => {
                IpAddr::V4((u32::from(a) & mask32(prefix_len)).into())
            }
            IpAddr::V6(a) if prefix_len <= 128 => {
                IpAddr::V6((u128::from(a) & mask128(prefix_len)).into())
            }
            _ => return Err(BadPrefix(prefix_len)),
        };
        Ok(Self { addr, prefix_len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True if `ip` is inside. IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`, as
    /// seen on dual-stack sockets) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
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

    fn net(s: &str, len: u8) -> IpNet {
        IpNet::new(s.parse().expect("test literal"), len).expect("test prefix")
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(
            net("10.1.2.3", 8).addr(),
            "10.0.0.0".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn contains_respects_prefix() {
        let n = net("192.168.0.0", 16);
        assert!(n.contains("192.168.44.1".parse().unwrap()));
        assert!(!n.contains("192.169.0.1".parse().unwrap()));
        assert!(net("0.0.0.0", 0).contains("8.8.8.8".parse().unwrap()));
        assert!(net("::1", 128).contains("::1".parse().unwrap()));
        assert!(!net("::1", 128).contains("::2".parse().unwrap()));
    }

    #[test]
    fn v4_mapped_clients_match_v4_networks() {
        assert!(net("127.0.0.0", 8).contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!net("127.0.0.0", 8).contains("::1".parse().unwrap()));
    }

    #[test]
    fn prefix_longer_than_address_is_rejected() {
        assert_eq!(
            IpNet::new("1.2.3.4".parse().unwrap(), 33),
            Err(BadPrefix(33))
        );
        assert!(IpNet::new("::".parse().unwrap(), 129).is_err());
    }

    #[test]
    fn empty_acl_allows_nobody() {
        assert!(!Acl::default().allows("127.0.0.1".parse().unwrap()));
    }
}
