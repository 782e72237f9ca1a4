//! UDP reply grants: the component may send a datagram only to an `ip:port`
//! that sent it one, once per datagram received, within the reply window.
//!
//! wasmtime-wasi checks every datagram (receive and send) with its peer
//! address only, so the grants are kept per `ip:port`: each datagram received
//! adds one pending reply, each reply sent takes one. Memory is bounded by
//! [`MAX_GRANTS`] addresses; when the table is full a datagram from a new
//! address is dropped rather than an older grant evicted, so a flood of
//! spoofed sources cannot cancel the replies real clients are waiting for.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most client addresses (`ip:port`) with a pending reply at once: 65,536
/// entries of about 64 bytes, so the table never holds more than ~5 MiB.
pub const MAX_GRANTS: usize = 65_536;

/// How often expired grants are swept out. A sweep walks the whole table
/// (at most [`MAX_GRANTS`] entries, well under a millisecond), so doing it
/// at most once a second keeps its cost per datagram negligible.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A client's `ip:port` as the table's key: the IPv6 form of the address
/// (an IPv4 address as IPv4-mapped, so both spellings of one client are
/// one key) and the port, 18 bytes hashed in a single SipHash `write`.
/// Hashing a `SocketAddr` feeds SipHash four to six small writes (variant,
/// length, octets, port, and for IPv6 flow label and scope): twice the
/// instructions, per datagram received and per reply sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Client([u8; 18]);

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mut key = [0; 18];
        key[..16].copy_from_slice(&ip.octets());
        key[16..].copy_from_slice(&addr.port().to_be_bytes());
        Self(key)
    }
}

impl Hash for Client {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The bytes alone: the length is fixed, so no prefix is needed.
        state.write(&self.0);
    }
}

/// Replies owed to one client address.
#[derive(Clone, Copy, Debug)]
struct Grant {
    /// Datagrams received and not yet answered.
    pending: u32,
    /// The window of the latest datagram ends here; the whole grant with it.
    expires: Instant,
}

/// What a received datagram did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// The datagram may reach the component; one reply is granted.
    Granted,
    /// The table is full of live grants: the datagram must be dropped.
    TableFull,
}

/// The pending replies of all clients.
#[derive(Debug)]
pub(crate) struct Grants {
    table: HashMap<Client, Grant>,
    /// How long a datagram's reply stays granted.
    window: Duration,
    next_sweep: Instant,
    capacity: usize,
}

impl Grants {
    /// An empty table whose grants last `window` (the query deadline plus
    /// a margin), holding at most `capacity` addresses.
    pub(crate) fn new(window: Duration, capacity: usize, now: Instant) -> Self {
        Self {
            table: HashMap::new(),
            window,
            next_sweep: now + SWEEP_EVERY,
            capacity,
        }
    }

    /// A datagram arrived from `from` (an IPv4-mapped IPv6 address is the
    /// same client as its IPv4 address).
    pub(crate) fn receive(&mut self, from: SocketAddr, now: Instant) -> Received {
        self.sweep_if_due(now);
        let expires = now + self.window;
        // One hash of the address per datagram, found or not (SipHash, keyed
        // per process: the addresses are the senders' to choose).
        let full = self.table.len() >= self.capacity;
        match self.table.entry(Client::new(from)) {
            Entry::Occupied(mut g) => {
                let g = g.get_mut();
                // An expired grant that the sweep has not reached yet owes
                // nothing any more: start over.
                let pending = if g.expires > now { g.pending } else { 0 };
                *g = Grant {
                    pending: pending.saturating_add(1),
                    expires,
                };
                Received::Granted
            }
            Entry::Vacant(_) if full => Received::TableFull,
            Entry::Vacant(v) => {
                v.insert(Grant {
                    pending: 1,
                    expires,
                });
                Received::Granted
            }
        }
    }

    /// The component wants to send to `to`: takes one pending reply, or
    /// returns false when none is owed.
    pub(crate) fn send(&mut self, to: SocketAddr, now: Instant) -> bool {
        self.sweep_if_due(now);
        let Entry::Occupied(mut g) = self.table.entry(Client::new(to)) else {
            return false;
        };
        let grant = g.get_mut();
        if grant.expires <= now || grant.pending == 0 {
            return false;
        }
        grant.pending -= 1;
        if grant.pending == 0 {
            g.remove();
        }
        true
    }

    /// Grants from now on last `window` (a reload); grants given keep
    /// their expiry.
    pub(crate) fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Addresses currently holding a grant (live or not yet swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    fn sweep_if_due(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        self.table.retain(|_, g| g.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(5);

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_reply_per_datagram_received() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, 8, t0);
        let client = sa("127.0.0.1:40000");
        assert!(!g.send(client, t0), "nothing received, nothing owed");
        assert_eq!(g.receive(client, t0), Received::Granted);
        assert!(g.send(client, t0));
        assert!(!g.send(client, t0), "the one reply was used");
        assert_eq!(g.len(), 0, "an answered client holds no entry");
    }

    #[test]
    fn several_datagrams_from_one_address_grant_as_many_replies() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, 8, t0);
        let client = sa("127.0.0.1:40000");
        for _ in 0..3 {
            assert_eq!(g.receive(client, t0), Received::Granted);
        }
        assert_eq!(g.len(), 1);
        for _ in 0..3 {
            assert!(g.send(client, t0));
        }
        assert!(!g.send(client, t0));
    }

    #[test]
    fn a_grant_is_only_for_the_exact_ip_and_port() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, 8, t0);
        g.receive(sa("127.0.0.1:40000"), t0);
        assert!(!g.send(sa("127.0.0.1:40001"), t0));
        assert!(!g.send(sa("127.0.0.2:40000"), t0));
        assert!(g.send(sa("127.0.0.1:40000"), t0));
    }

    #[test]
    fn an_ipv4_client_is_one_key_in_either_spelling_and_no_other_address_shares_it() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, 8, t0);
        g.receive(sa("[::ffff:192.0.2.1]:40000"), t0);
        g.receive(sa("192.0.2.1:40000"), t0);
        assert_eq!(g.len(), 1);
        // The same 32 bits in an IPv6 address that is not IPv4-mapped, or
        // the same address on the other port byte order, are others.
        assert!(!g.send(sa("[::192.0.2.1]:40000"), t0));
        assert!(!g.send(sa("[::ffff:192.0.2.1]:16540"), t0));
        assert!(g.send(sa("192.0.2.1:40000"), t0));
        assert!(g.send(sa("[::ffff:192.0.2.1]:40000"), t0));
        assert!(!g.send(sa("192.0.2.1:40000"), t0), "two received, two sent");
    }

    #[test]
    fn a_grant_lasts_the_window_and_not_longer() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, 8, t0);
        let client = sa("[::1]:40000");
        g.receive(client, t0);
        g.receive(client, t0);
        assert!(g.send(client, t0 + WINDOW - Duration::from_millis(1)));
        assert!(!g.send(client, t0 + WINDOW), "expired");
    }

    #[test]
    fn a_new_datagram_after_expiry_owes_exactly_one_reply() {
        // A window shorter than the sweep interval: the stale entry is
        // still in the table when the new datagram comes.
        let window = Duration::from_millis(500);
        let t0 = Instant::now();
        let mut g = Grants::new(window, 8, t0);
        let client = sa("127.0.0.1:40000");
        for _ in 0..5 {
            g.receive(client, t0);
        }
        let later = t0 + Duration::from_millis(600);
        assert!(later < t0 + SWEEP_EVERY, "no sweep in between");
        g.receive(client, later);
        assert!(g.send(client, later));
        assert!(!g.send(client, later), "the expired five are not owed");
    }

    #[test]
    fn a_full_table_drops_new_sources_and_keeps_existing_grants() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, 2, t0);
        let a = sa("10.0.0.1:1000");
        let b = sa("10.0.0.2:1000");
        let spoofed = sa("10.0.0.3:1000");
        assert_eq!(g.receive(a, t0), Received::Granted);
        assert_eq!(g.receive(b, t0), Received::Granted);
        assert_eq!(g.receive(spoofed, t0), Received::TableFull);
        assert!(!g.send(spoofed, t0), "a dropped datagram grants nothing");
        // Known addresses still get their grants counted, and answered.
        assert_eq!(g.receive(a, t0), Received::Granted);
        assert!(g.send(a, t0) && g.send(a, t0) && g.send(b, t0));
    }

    #[test]
    fn expired_grants_are_swept_so_new_sources_fit_again() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, 2, t0);
        g.receive(sa("10.0.0.1:1000"), t0);
        g.receive(sa("10.0.0.2:1000"), t0);
        let after = t0 + WINDOW + SWEEP_EVERY;
        assert_eq!(g.receive(sa("10.0.0.3:1000"), after), Received::Granted);
        assert_eq!(g.len(), 1, "both expired grants were swept");
    }

    #[test]
    fn the_table_never_exceeds_its_capacity_under_a_flood() {
        let t0 = Instant::now();
        let mut g = Grants::new(WINDOW, MAX_GRANTS, t0);
        let mut dropped = 0;
        for i in 0..(MAX_GRANTS as u32 + 1000) {
            let from = SocketAddr::from((std::net::Ipv4Addr::from_bits(0x0a00_0000 | i), 53));
            if g.receive(from, t0) == Received::TableFull {
                dropped += 1;
            }
        }
        assert_eq!(g.len(), MAX_GRANTS);
        assert_eq!(dropped, 1000);
    }
}
