//! A small, bounded UDP load generator: a few sockets each keeping a window of
//! queries in flight, reading only the header of each answer (ID and RCODE), so
//! one test thread can push tens of thousands of queries a second through the proxy.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

/// How long a socket waits for any answer before it counts its window as lost
/// and sends a fresh one.
const LOST_AFTER: Duration = Duration::from_secs(1);

/// What to send, from where, and how much.
#[derive(Clone, Debug)]
pub struct UdpLoad {
    /// The proxy.
    pub to: SocketAddr,
    /// Local address the sockets bind (port 0).
    pub from: IpAddr,
    /// A query in wire format; its ID is replaced per query.
    pub query: Vec<u8>,
    /// Number of sockets (each on its own thread).
    pub sockets: usize,
    /// Queries each socket keeps in flight.
    pub window: usize,
    /// Queries to send in all.
    pub total: u64,
    /// The run stops at this time even if not everything was sent.
    pub time_limit: Duration,
}

/// What came back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadResult {
    /// Queries sent.
    pub sent: u64,
    /// Answers received (any RCODE).
    pub answered: u64,
    /// Answers with RCODE NOERROR.
    pub noerror: u64,
    /// Answers with RCODE SERVFAIL.
    pub servfail: u64,
    /// Answers with RCODE REFUSED.
    pub refused: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl LoadResult {
    fn add(&mut self, other: &LoadResult) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.noerror += other.noerror;
        self.servfail += other.servfail;
        self.refused += other.refused;
    }

    /// Answers per second.
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl UdpLoad {
    /// Runs the load to completion (or its time limit) and adds up what came back.
    /// Panics if a socket cannot be created.
    pub fn run(&self) -> LoadResult {
        let started = Instant::now();
        let deadline = started + self.time_limit;
        let sockets = u64::try_from(self.sockets.max(1)).unwrap_or(1);
        let handles: Vec<_> = (0..sockets)
            .map(|i| {
                // The first sockets take the remainder.
                let share = self.total / sockets + u64::from(i < self.total % sockets);
                let me = self.clone();
                thread::spawn(move || me.one_socket(share, deadline))
            })
            .collect();
        let mut total = LoadResult::default();
        for h in handles {
            let part = h
                .join()
                .unwrap_or_else(|_| panic!("a load thread panicked"))
                .unwrap_or_else(|e| panic!("UDP load to {}: {e}", self.to));
            total.add(&part);
        }
        total.elapsed = started.elapsed();
        total
    }

    fn one_socket(&self, share: u64, deadline: Instant) -> io::Result<LoadResult> {
        let sock = UdpSocket::bind(SocketAddr::new(self.from, 0))?;
        sock.connect(self.to)?;
        let mut out = LoadResult::default();
        let mut query = self.query.clone();
        let mut next_id: u16 = 0;
        let mut in_flight = 0usize;
        let mut buf = [0u8; 4096];
        let mut send = |out: &mut LoadResult, query: &mut Vec<u8>| -> io::Result<()> {
            query[..2].copy_from_slice(&next_id.to_be_bytes());
            next_id = next_id.wrapping_add(1);
            sock.send(query)?;
            out.sent += 1;
            Ok(())
        };
        while out.sent < share && Instant::now() < deadline {
            while in_flight < self.window && out.sent < share {
                send(&mut out, &mut query)?;
                in_flight += 1;
            }
            sock.set_read_timeout(Some(LOST_AFTER))?;
            match sock.recv(&mut buf) {
                Ok(n) if n >= 4 => {
                    in_flight = in_flight.saturating_sub(1);
                    count(&mut out, buf[3] & 0x0f);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // Whatever was in flight is lost; start a fresh window.
                    in_flight = 0;
                }
                Err(e) => return Err(e),
            }
        }
        // The last answers.
        let drain_until = (Instant::now() + LOST_AFTER).min(deadline + LOST_AFTER);
        while in_flight > 0 {
            let left = drain_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv(&mut buf) {
                Ok(n) if n >= 4 => {
                    in_flight -= 1;
                    count(&mut out, buf[3] & 0x0f);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(out)
    }
}

fn count(out: &mut LoadResult, rcode: u8) {
    out.answered += 1;
    match rcode {
        0 => out.noerror += 1,
        2 => out.servfail += 1,
        5 => out.refused += 1,
        _ => {}
    }
}
