//! Counting what the socket policy refused, and saying so in the log without
//! letting a flood of refused packets become a flood of log lines.
//!
//! Every refusal increments an atomic counter for its reason (the totals are
//! what metrics export). The log gets at most one WARN line per reason per
//! [`LOG_EVERY`], giving the number refused since the previous line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime_wasi::sockets::SocketAddrUse;

/// At most one log line per reason this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the policy refused a socket operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A TCP client outside `allow_networks` (it gets an RST).
    AcceptOutsider,
    /// A UDP datagram from outside `allow_networks` (dropped unseen).
    ReceiveOutsider,
    /// A UDP datagram from a new address while the reply-grant table was full
    /// (dropped unseen).
    ReceiveGrantsFull,
    /// A UDP datagram to an address that is owed no reply.
    SendUnsolicited,
    /// A bind or listen other than the listen address.
    Bind,
    /// A TCP connect to something other than a configured upstream.
    Connect,
}

impl Refusal {
    /// Every reason, in the order of [`Refusals::totals`].
    pub const ALL: [Refusal; 6] = [
        Refusal::AcceptOutsider,
        Refusal::ReceiveOutsider,
        Refusal::ReceiveGrantsFull,
        Refusal::SendUnsolicited,
        Refusal::Bind,
        Refusal::Connect,
    ];

    /// A stable name (log field and metric label).
    pub fn name(self) -> &'static str {
        match self {
            Refusal::AcceptOutsider => "tcp_accept_outside_allow_networks",
            Refusal::ReceiveOutsider => "udp_receive_outside_allow_networks",
            Refusal::ReceiveGrantsFull => "udp_receive_reply_table_full",
            Refusal::SendUnsolicited => "udp_send_without_query",
            Refusal::Bind => "bind_other_address",
            Refusal::Connect => "connect_other_address",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Refusal::AcceptOutsider => "reset TCP clients outside allow_networks",
            Refusal::ReceiveOutsider => "dropped UDP datagrams from outside allow_networks",
            Refusal::ReceiveGrantsFull => {
                "dropped UDP datagrams from new clients: the reply table is full"
            }
            Refusal::SendUnsolicited => {
                "refused UDP datagrams the component sent to addresses that asked nothing"
            }
            Refusal::Bind => "refused binds of addresses other than the listen address",
            Refusal::Connect => "refused connects to addresses that are not upstreams",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one reason.
#[derive(Debug, Default)]
struct Counter {
    total: AtomicU64,
    /// Refused since the last log line.
    unlogged: AtomicU64,
    /// When the last line was written: milliseconds since `Refusals::start`
    /// plus [`LOG_EVERY`], so 0 means "never" and the first refusal logs
    /// at once.
    logged_at: AtomicU64,
}

/// The refusal counters of the process, shared by all instances.
#[derive(Debug)]
pub struct Refusals {
    start: Instant,
    counters: [Counter; Refusal::ALL.len()],
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Refusals {
    fn new(start: Instant) -> Self {
        Self {
            start,
            counters: Default::default(),
        }
    }

    /// Counts one refusal, and logs it unless a line for the same reason was
    /// written less than [`LOG_EVERY`] ago.
    pub fn record(&self, reason: Refusal, addr: SocketAddr, use_: SocketAddrUse) {
        let c = &self.counters[reason.index()];
        c.total.fetch_add(1, Ordering::Relaxed);
        c.unlogged.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = self.take_due(reason, Instant::now()) {
            warn(reason, refused, Some((addr, use_)));
        }
    }

    /// Logs the refusals not yet logged of each reason whose last line is
    /// old enough; called periodically so the tail of a burst is reported.
    pub fn flush(&self) {
        let now = Instant::now();
        for reason in Refusal::ALL {
            if self.counters[reason.index()]
                .unlogged
                .load(Ordering::Relaxed)
                == 0
            {
                continue;
            }
            if let Some(refused) = self.take_due(reason, now) {
                warn(reason, refused, None);
            }
        }
    }

    /// Refusals of each reason since start, in the order of [`Refusal::ALL`].
    pub fn totals(&self) -> [(Refusal, u64); Refusal::ALL.len()] {
        Refusal::ALL.map(|r| (r, self.total(r)))
    }

    /// Refusals of `reason` since start.
    pub fn total(&self, reason: Refusal) -> u64 {
        self.counters[reason.index()].total.load(Ordering::Relaxed)
    }

    /// If a line for `reason` is due at `now`, claims it (only one thread
    /// wins) and returns how many refusals it reports.
    fn take_due(&self, reason: Refusal, now: Instant) -> Option<u64> {
        let c = &self.counters[reason.index()];
        let every = millis(LOG_EVERY);
        let now_ms = millis(now.saturating_duration_since(self.start)).saturating_add(every);
        let last = c.logged_at.load(Ordering::Relaxed);
        if now_ms < last.saturating_add(every) {
            return None;
        }
        c.logged_at
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        match c.unlogged.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn warn(reason: Refusal, refused: u64, last: Option<(SocketAddr, SocketAddrUse)>) {
    match last {
        Some((addr, use_)) => tracing::warn!(
            reason = reason.name(),
            refused,
            last = %addr,
            op = ?use_,
            "sandbox {} (at most one line per {}s per reason)",
            reason.what(),
            LOG_EVERY.as_secs()
        ),
        None => tracing::warn!(
            reason = reason.name(),
            refused,
            "sandbox {} (at most one line per {}s per reason)",
            reason.what(),
            LOG_EVERY.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_logged_at_once_then_one_line_per_interval() {
        let t0 = Instant::now();
        let r = Refusals::new(t0);
        let reason = Refusal::ReceiveOutsider;
        r.counters[reason.index()]
            .unlogged
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(r.take_due(reason, t0), Some(1), "first one logs at once");
        for _ in 0..1000 {
            r.counters[reason.index()]
                .unlogged
                .fetch_add(1, Ordering::Relaxed);
            assert_eq!(r.take_due(reason, t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(
            r.take_due(reason, t0 + LOG_EVERY),
            Some(1000),
            "the next line says how many since the last one"
        );
        assert_eq!(r.take_due(reason, t0 + LOG_EVERY * 3), None, "nothing new");
    }

    #[test]
    fn reasons_are_rate_limited_independently() {
        let t0 = Instant::now();
        let r = Refusals::new(t0);
        for reason in [Refusal::AcceptOutsider, Refusal::SendUnsolicited] {
            r.counters[reason.index()]
                .unlogged
                .fetch_add(1, Ordering::Relaxed);
            assert_eq!(r.take_due(reason, t0), Some(1), "{reason:?}");
        }
    }

    #[test]
    fn every_refusal_is_counted_even_when_not_logged() {
        let r = Refusals::default();
        let addr: SocketAddr = "192.0.2.1:53".parse().unwrap();
        for _ in 0..500 {
            r.record(Refusal::AcceptOutsider, addr, SocketAddrUse::TcpAccept);
        }
        assert_eq!(r.total(Refusal::AcceptOutsider), 500);
        assert_eq!(r.total(Refusal::ReceiveOutsider), 0);
        let names: std::collections::HashSet<&str> =
            Refusal::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(
            names.len(),
            Refusal::ALL.len(),
            "metric labels are distinct"
        );
    }
}
