//! One client TCP connection's timers and buffers, as a state machine fed
//! events and `now` (RFC 7766 §6.2.3, §6.2.4).
//!
//! The shell reports what happened (bytes read, a query forwarded, an answer
//! ready, bytes written) and asks three things: may it read, when must it
//! wake up, and must it close. Every wait has a deadline and every buffer a
//! bound:
//!
//! - **Idle**: nothing in flight, nothing to write, no partial frame: closed
//!   after `idle_timeout` (RFC 7766 §6.2.3). Only complete messages count as
//!   activity, so a client dribbling bytes cannot keep a slot forever.
//! - **Pressure**: with more than half of `max_tcp_clients` open the idle
//!   timeout shrinks to a tenth, with more than three quarters to a
//!   hundredth, never below [`PRESSURE_FLOOR`] (see [`Pressure`]). A
//!   connection reads the pressure whenever its timer fires, so the idle
//!   ones are closed, stalest deadline first, until no more than half are
//!   open; the rest keep the configured timeout. The listener's [`Sweeps`]
//!   wake the idle ones when the pressure rises, so those asleep on the
//!   longer timeout take the shorter one at once.
//! - **Frame completion**: a frame that has started must be complete within
//!   [`ClientLimits::frame_timeout`]. A client sending one byte every few
//!   seconds is closed, whatever the idle timeout. The clock runs only while
//!   the proxy reads: a client is never blamed for the proxy's backpressure.
//! - **Write progress**: answers waiting to be written and no byte accepted by
//!   the socket for [`ClientLimits::write_timeout`]: the client does not read
//!   (zero window), and is closed.
//! - **Backpressure**: at [`ClientLimits::max_inflight`] queries in flight, or
//!   [`ClientLimits::backlog_soft`] bytes of unwritten answers, or with the
//!   global [`Budget`] spent, the proxy stops reading from the client; TCP
//!   flow control then slows it down, and nobody else.
//! - **Hard bound**: an answer that would take the client's unwritten bytes
//!   past [`ClientLimits::backlog_hard`], or the global budget past its limit
//!   while the client is already behind, closes the connection instead of
//!   being queued.
//! - **Fair shares of the budget**: once half of the [`Budget`] is in use, a
//!   source (see [`SourceKey`]) holding a quarter of it or more is not read
//!   from, and an answer that would take it past its quarter closes the
//!   connection it is for if that connection is already behind. So clients
//!   that stop reading, however many connections they open from one address,
//!   hold at most half the budget (plus one answer per connection that was
//!   keeping up when it came), and the others keep being read and answered
//!   (the in-flight [`Shares`](crate::core::admission::Shares) have the same
//!   shape). Only when several sources fill their shares is the budget
//!   spent; then a client that is behind is closed whatever its source.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::admission::{self, SourceKey};

/// Per-connection limits. The defaults are what the README documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Close after this long with nothing going on (`tcp_idle_timeout`).
    pub idle_timeout: Duration,
    /// A started frame must be complete within this.
    pub frame_timeout: Duration,
    /// Unwritten answers and no write progress for this long: close.
    pub write_timeout: Duration,
    /// Queries in flight at which reading stops.
    pub max_inflight: usize,
    /// Unwritten answer bytes at which reading stops.
    pub backlog_soft: usize,
    /// Unwritten answer bytes past which the connection is closed.
    pub backlog_hard: usize,
}

impl ClientLimits {
    /// A started frame gets 2 s: a query fits in one segment, and even a
    /// split one completes within a round trip (dnsdist's default TCP read
    /// timeout is the same).
    pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
    /// A client that accepts no byte of its answers for 5 s is gone or
    /// hostile.
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Pipelined queries one client may have in flight.
    pub const MAX_INFLIGHT: usize = 64;
    /// 64 KiB: room for a full-size answer, or hundreds of ordinary ones.
    pub const BACKLOG_SOFT: usize = 64 * 1024;
    /// Soft bound plus answers to what is already in flight, at most one
    /// maximum-size message more.
    pub const BACKLOG_HARD: usize = 2 * 64 * 1024 + 2;

    /// The default limits with the configured idle timeout.
    pub fn with_idle_timeout(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            frame_timeout: Self::FRAME_TIMEOUT,
            write_timeout: Self::WRITE_TIMEOUT,
            max_inflight: Self::MAX_INFLIGHT,
            backlog_soft: Self::BACKLOG_SOFT,
            backlog_hard: Self::BACKLOG_HARD,
        }
    }
}

/// Bytes of client answers held for writing, over all connections, and the
/// share of it each source holds.
///
/// WebAssembly memory never shrinks, so this bounds the peak: when it is
/// spent, no client is read from until answers drain, and a client that is
/// behind is closed rather than given more. A source may fill it freely
/// while less than half is in use; beyond that it may hold at most a quarter
/// (see the module docs), so one source that stops reading spends at most
/// half of it and never stops the proxy from reading everyone else.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: usize,
    per_source: HashMap<SourceKey, usize>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            per_source: HashMap::new(),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Changes the limit to `limit` bytes, for a reload. Bytes already
    /// held stay; over a lowered limit no client is read from until they
    /// are written.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The most one source may hold while half of the budget is in use.
    fn source_cap(&self) -> usize {
        (self.limit / 4).max(1)
    }

    fn spent(&self) -> bool {
        self.used >= self.limit
    }

    /// Half or more in use: sources are held to their share.
    fn contended(&self) -> bool {
        self.used * 2 >= self.limit
    }

    fn held_by(&self, source: SourceKey) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    /// Whether `source` holds its share or more while the budget is
    /// contended.
    fn over_share(&self, source: SourceKey) -> bool {
        self.contended() && self.held_by(source) >= self.source_cap()
    }

    fn take(&mut self, source: SourceKey, n: usize) {
        self.used += n;
        *self.per_source.entry(source).or_insert(0) += n;
    }

    fn give_back(&mut self, source: SourceKey, n: usize) {
        self.used = self.used.saturating_sub(n);
        admission::give_back(&mut self.per_source, source, n);
    }
}

/// The shortest idle timeout [`Pressure`] brings: a client that sent a query
/// gets at least this long to send its next (unbound's floor is the same).
pub const PRESSURE_FLOOR: Duration = Duration::from_millis(200);

/// How full the listener's TCP client slots are, as far as the idle timeout
/// goes (RFC 7766 §6.2.3: a server under pressure may close idle connections
/// sooner).
///
/// Every open connection holds a descriptor and memory (with the host's
/// watch set an idle one costs no CPU per wake-up: the README's "Open TCP
/// connections"), and a slot held idle costs its holder one query per idle
/// timeout. Shortening the timeout under pressure makes the slots past half
/// dearer to hold: at the default 10 s, a query a second each past
/// half, five a second past three quarters. As idle connections close the
/// pressure falls, so closing stops at half: the clients left keep the
/// configured timeout.
/// unbound does the same, harder (a hundredth past half, a five-hundredth
/// past 65%, nothing past 80%, at least 200 ms); a tenth first keeps clients
/// that pause between bursts (a stub's persistent connection) a few seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Half of the slots or fewer in use: the configured idle timeout.
    #[default]
    None,
    /// More than half: a tenth of it.
    High,
    /// More than three quarters: a hundredth of it.
    Severe,
}

impl Pressure {
    /// The pressure with `open` of `max` client connections open.
    pub fn of(open: usize, max: usize) -> Self {
        if open.saturating_mul(4) > max.saturating_mul(3) {
            Self::Severe
        } else if open.saturating_mul(2) > max {
            Self::High
        } else {
            Self::None
        }
    }

    /// The idle timeout at this pressure, for the configured `idle`: never
    /// longer than it, never shorter than [`PRESSURE_FLOOR`] unless it is.
    pub fn idle_timeout(self, idle: Duration) -> Duration {
        let divisor = match self {
            Self::None => return idle,
            Self::High => 10,
            Self::Severe => 100,
        };
        (idle / divisor).max(PRESSURE_FLOOR).min(idle)
    }

    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::High => "more than half of max_tcp_clients open",
            Self::Severe => "more than three quarters of max_tcp_clients open",
        }
    }
}

/// When the listener makes every idle connection take the idle timeout of a
/// risen [`Pressure`] at once (a sweep), rather than at its next activity.
///
/// A connection learns the pressure whenever it computes its deadline, so a
/// sweep is for those asleep on the longer timeout they computed before. A
/// sweep wakes each idle connection (a few microseconds each), so sweeps are
/// rate-limited: one when the pressure rises past what the last sweep
/// applied, and at most one more each [`PRESSURE_FLOOR`] while it stays up.
/// A client opening and closing connections around a threshold gets at most
/// a few sweeps per [`PRESSURE_FLOOR`]; it cannot make the proxy wake every
/// connection for every connection it opens.
#[derive(Debug, Default)]
pub struct Sweeps {
    /// The pressure the last sweep applied, within [`PRESSURE_FLOOR`] of it.
    swept: Pressure,
    at: Option<Instant>,
    /// The pressure at the accept before.
    last: Pressure,
}

/// A sweep to make now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sweep {
    /// The pressure it applies.
    pub pressure: Pressure,
    /// The pressure rose with this accept (worth telling the operator); a
    /// sweep while it stays up is not.
    pub rose: bool,
}

impl Sweeps {
    /// A connection was accepted at `now`, `open` of `max` now open. `Some`:
    /// sweep now.
    pub fn on_accept(&mut self, now: Instant, open: usize, max: usize) -> Option<Sweep> {
        if self.at.is_some_and(|at| now >= at + PRESSURE_FLOOR) {
            self.swept = Pressure::None;
            self.at = None;
        }
        let pressure = Pressure::of(open, max);
        let rose = pressure > self.last;
        self.last = pressure;
        (pressure > self.swept).then(|| {
            self.swept = pressure;
            self.at = Some(now);
            Sweep { pressure, rose }
        })
    }
}

/// Why a client connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Nothing happened for the idle timeout.
    Idle,
    /// Nothing happened for the idle timeout as [`Pressure`] shortened it.
    IdleUnderPressure,
    /// A frame was started and not completed in time.
    FrameTimeout,
    /// Answers waited and the client read none of them in time.
    WriteStalled,
    /// The client's unwritten answers passed the hard bound.
    BacklogFull,
    /// The global budget is spent and this client is behind.
    BudgetSpent,
    /// Half the global budget is in use, this client's source holds its
    /// share, and this client is behind.
    ShareSpent,
    /// Evicted to make room for a new client at `max_tcp_clients`.
    Evicted,
}

impl Close {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::IdleUnderPressure => "idle for the idle timeout shortened under pressure",
            Self::FrameTimeout => "frame not completed in time",
            Self::WriteStalled => "not reading its answers",
            Self::BacklogFull => "too many unread answers",
            Self::BudgetSpent => "buffer budget spent while behind",
            Self::ShareSpent => "its source's share of the buffer budget spent while behind",
            Self::Evicted => "evicted for a new client at max_tcp_clients",
        }
    }
}

/// The state of one client connection.
#[derive(Debug)]
pub struct ClientConn {
    limits: ClientLimits,
    /// Whose share of the [`Budget`] its unwritten answers count against.
    source: SourceKey,
    /// The last complete message in either direction.
    last_activity: Instant,
    /// When the frame now being received started, if one is partial.
    frame_started: Option<Instant>,
    inflight: usize,
    backlog: usize,
    /// When the socket last accepted bytes, or the backlog went from empty
    /// to non-empty.
    write_progress: Instant,
    /// The listener's, as last told ([`on_pressure`](Self::on_pressure)).
    pressure: Pressure,
    closed: Option<Close>,
}

impl ClientConn {
    /// A connection from `source` accepted at `now`.
    pub fn new(now: Instant, limits: ClientLimits, source: SourceKey) -> Self {
        Self {
            limits,
            source,
            last_activity: now,
            frame_started: None,
            inflight: 0,
            backlog: 0,
            write_progress: now,
            pressure: Pressure::None,
            closed: None,
        }
    }

    /// The listener's pressure now: the idle timeout that
    /// [`deadline`](Self::deadline) and [`on_timer`](Self::on_timer) apply.
    /// Tell it before asking either.
    pub fn on_pressure(&mut self, pressure: Pressure) {
        self.pressure = pressure;
    }

    fn idle_timeout(&self) -> Duration {
        self.pressure.idle_timeout(self.limits.idle_timeout)
    }

    /// Whether the shell may read more from the client.
    pub fn may_read(&self, budget: &Budget) -> bool {
        self.closed.is_none()
            && self.inflight < self.limits.max_inflight
            && self.backlog < self.limits.backlog_soft
            && !budget.spent()
            && !budget.over_share(self.source)
    }

    /// Whether another complete query may be taken from what was read.
    pub fn may_take_query(&self) -> bool {
        self.closed.is_none() && self.inflight < self.limits.max_inflight
    }

    /// Bytes were read; `partial` says whether a frame is now incomplete,
    /// `messages` how many complete ones they finished.
    pub fn on_read(&mut self, now: Instant, messages: usize, partial: bool) {
        if messages > 0 {
            self.last_activity = now;
        }
        self.frame_started = match (partial, messages, self.frame_started) {
            (false, _, _) => None,
            // The old partial frame completed and a new one began.
            (true, 1.., _) => Some(now),
            (true, 0, started) => Some(started.unwrap_or(now)),
        };
    }

    /// A query was forwarded upstream.
    pub fn on_forwarded(&mut self) {
        self.inflight += 1;
    }

    /// Whether the connection itself holds reading back (its own caps; the
    /// global budget is the shell's to check with [`may_read`](Self::may_read)).
    fn held_back(&self) -> bool {
        self.inflight >= self.limits.max_inflight || self.backlog >= self.limits.backlog_soft
    }

    /// Restarts the frame clock if a cap that held reading back was lifted
    /// at `now`.
    fn resumed(&mut self, was_held_back: bool, now: Instant) {
        if was_held_back && !self.held_back() && self.frame_started.is_some() {
            self.frame_started = Some(now);
        }
    }

    /// A query's answer (or a SERVFAIL in its place) is ready: `len` bytes
    /// to write. `Err` closes the connection instead.
    pub fn on_answer(
        &mut self,
        now: Instant,
        len: usize,
        budget: &mut Budget,
    ) -> Result<(), Close> {
        let was = self.held_back();
        self.inflight = self.inflight.saturating_sub(1);
        let queued = self.queue(now, len, budget);
        self.resumed(was, now);
        queued
    }

    /// A reply the proxy makes itself (FORMERR, NOTIMP, REFUSED) is ready.
    pub fn on_reply(&mut self, now: Instant, len: usize, budget: &mut Budget) -> Result<(), Close> {
        self.queue(now, len, budget)
    }

    fn queue(&mut self, now: Instant, len: usize, budget: &mut Budget) -> Result<(), Close> {
        if let Some(c) = self.closed {
            return Err(c);
        }
        let behind = self.backlog > 0;
        // A client that keeps up always gets its answer; one that is behind
        // is closed rather than let past the bounds.
        let refuse = if self.backlog + len > self.limits.backlog_hard {
            Some(Close::BacklogFull)
        } else if behind && budget.used + len > budget.limit {
            Some(Close::BudgetSpent)
        } else if behind
            && budget.contended()
            && budget.held_by(self.source) + len > budget.source_cap()
        {
            Some(Close::ShareSpent)
        } else {
            None
        };
        if let Some(c) = refuse {
            self.closed = Some(c);
            return Err(c);
        }
        if !behind {
            self.write_progress = now;
        }
        self.backlog += len;
        budget.take(self.source, len);
        self.last_activity = now;
        Ok(())
    }

    /// The socket accepted `n` bytes of the backlog.
    pub fn on_written(&mut self, now: Instant, n: usize, budget: &mut Budget) {
        let was = self.held_back();
        let n = n.min(self.backlog);
        self.backlog -= n;
        budget.give_back(self.source, n);
        if n > 0 {
            self.write_progress = now;
            self.last_activity = now;
        }
        self.resumed(was, now);
    }

    /// Gives the unwritten bytes back to the budget; call once, when the
    /// connection ends.
    pub fn release(&mut self, budget: &mut Budget) {
        budget.give_back(self.source, self.backlog);
        self.backlog = 0;
    }

    /// Marks the connection evicted; the shell closes it on its next turn.
    pub fn evict(&mut self) {
        self.closed.get_or_insert(Close::Evicted);
    }

    /// When the shell must call [`on_timer`](Self::on_timer) next, unless
    /// something else happens first. `None`: nothing to time (queries are in
    /// flight, and each has its own deadline upstream); wait for an event.
    pub fn deadline(&self) -> Option<Instant> {
        // Asked at every turn of the client's loop: no list allocated.
        let frame = self
            .frame_started
            .filter(|_| !self.held_back())
            .map(|started| started + self.limits.frame_timeout);
        let write = (self.backlog > 0).then(|| self.write_progress + self.limits.write_timeout);
        let idle = self
            .is_idle()
            .then(|| self.last_activity + self.idle_timeout());
        [frame, write, idle].into_iter().flatten().min()
    }

    /// Checks the timers at `now`; `Some` closes the connection.
    pub fn on_timer(&mut self, now: Instant) -> Option<Close> {
        if self.closed.is_none() {
            let expired = |t: Instant, d: Duration| now >= t + d;
            self.closed = if !self.held_back()
                && self
                    .frame_started
                    .is_some_and(|t| expired(t, self.limits.frame_timeout))
            {
                Some(Close::FrameTimeout)
            } else if self.backlog > 0 && expired(self.write_progress, self.limits.write_timeout) {
                Some(Close::WriteStalled)
            } else if self.is_idle() && expired(self.last_activity, self.idle_timeout()) {
                if expired(self.last_activity, self.limits.idle_timeout) {
                    Some(Close::Idle)
                } else {
                    Some(Close::IdleUnderPressure)
                }
            } else {
                None
            };
        }
        self.closed
    }

    /// Why it must close, if it must.
    pub fn closed(&self) -> Option<Close> {
        self.closed
    }

    /// Nothing in flight, nothing to write, no partial frame.
    pub fn is_idle(&self) -> bool {
        self.inflight == 0 && self.backlog == 0 && self.frame_started.is_none()
    }

    /// The last complete message in either direction (for eviction).
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// Unwritten answer bytes.
    pub fn backlog(&self) -> usize {
        self.backlog
    }

    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.inflight
    }
}

/// What the eviction choice needs to know of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<K> {
    /// The shell's handle for it.
    pub id: K,
    /// Its client's source.
    pub source: SourceKey,
    /// [`ClientConn::last_activity`].
    pub last_activity: Instant,
    /// [`ClientConn::is_idle`].
    pub idle: bool,
}

/// At `max_tcp_clients`, the connection to close so a new client is served.
///
/// unbound and RFC 7766 §6.2.3 shorten idle timeouts under pressure; we go
/// one step further and make room at once: from the source holding the most
/// connections (so one client opening thousands evicts its own), the idle
/// connection with the oldest activity, else its oldest busy one. `None` only
/// when there is no connection at all.
pub fn choose_victim<K: Copy>(candidates: &[Candidate<K>]) -> Option<K> {
    let mut counts = std::collections::HashMap::new();
    for c in candidates {
        *counts.entry(c.source).or_insert(0usize) += 1;
    }
    let top = counts.values().copied().max()?;
    candidates
        .iter()
        .filter(|c| counts[&c.source] == top)
        // Idle before busy, then oldest activity first.
        .min_by_key(|c| (!c.idle, c.last_activity))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use proptest::prelude::*;

    use super::*;

    const IDLE: Duration = Duration::from_secs(10);

    /// The source of [`conn`]'s connections.
    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn conn(t0: Instant) -> ClientConn {
        conn_from(t0, A)
    }

    fn conn_from(t0: Instant, ip: IpAddr) -> ClientConn {
        ClientConn::new(t0, ClientLimits::with_idle_timeout(IDLE), SourceKey::of(ip))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn rfc7766_idle_connection_closes_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        assert_eq!(c.deadline(), Some(t0 + IDLE));
        assert_eq!(c.on_timer(t0 + IDLE - secs(1)), None);
        assert_eq!(c.on_timer(t0 + IDLE), Some(Close::Idle));
    }

    #[test]
    fn rfc7766_under_pressure_the_idle_timeout_shrinks_to_a_tenth_then_a_hundredth() {
        assert_eq!(Pressure::of(0, 100), Pressure::None);
        assert_eq!(Pressure::of(50, 100), Pressure::None);
        assert_eq!(Pressure::of(51, 100), Pressure::High);
        assert_eq!(Pressure::of(75, 100), Pressure::High);
        assert_eq!(Pressure::of(76, 100), Pressure::Severe);
        assert_eq!(Pressure::of(200, 100), Pressure::Severe);
        // One slot: its one connection is past three quarters.
        assert_eq!(Pressure::of(1, 1), Pressure::Severe);
        assert_eq!(Pressure::None.idle_timeout(IDLE), IDLE);
        assert_eq!(Pressure::High.idle_timeout(IDLE), secs(1));
        // A hundredth of 10 s is under the floor.
        assert_eq!(Pressure::Severe.idle_timeout(IDLE), PRESSURE_FLOOR);
        assert_eq!(Pressure::Severe.idle_timeout(secs(300)), secs(3));
        // A configured timeout under the floor is kept, never lengthened.
        let short = Duration::from_millis(50);
        assert_eq!(Pressure::Severe.idle_timeout(short), short);
    }

    #[test]
    fn an_idle_connection_under_pressure_closes_after_the_shorter_timeout() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_pressure(Pressure::High);
        assert_eq!(c.deadline(), Some(t0 + secs(1)));
        assert_eq!(c.on_timer(t0 + Duration::from_millis(999)), None);
        assert_eq!(c.on_timer(t0 + secs(1)), Some(Close::IdleUnderPressure));
    }

    #[test]
    fn when_the_pressure_falls_the_configured_idle_timeout_is_back() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_pressure(Pressure::Severe);
        assert_eq!(c.deadline(), Some(t0 + PRESSURE_FLOOR));
        // It woke at that deadline; the pressure had fallen meanwhile.
        c.on_pressure(Pressure::None);
        assert_eq!(c.on_timer(t0 + PRESSURE_FLOOR), None);
        assert_eq!(c.deadline(), Some(t0 + IDLE));
        assert_eq!(c.on_timer(t0 + IDLE), Some(Close::Idle));
    }

    #[test]
    fn pressure_does_not_time_out_a_connection_with_work_to_do() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let mut budget = Budget::new(1 << 20);
        c.on_pressure(Pressure::Severe);
        c.on_read(t0, 1, false);
        c.on_forwarded();
        // Its answer takes longer than the shortened timeout: not idle.
        assert_eq!(c.on_timer(t0 + secs(5)), None);
        c.on_answer(t0 + secs(5), 100, &mut budget).unwrap();
        c.on_written(t0 + secs(5), 100, &mut budget);
        // Idle from the answer on: the floor after it.
        assert_eq!(c.deadline(), Some(t0 + secs(5) + PRESSURE_FLOOR));
    }

    #[test]
    fn a_sweep_when_the_pressure_rises_and_at_most_one_more_per_floor_while_it_stays() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let rose = |pressure| {
            Some(Sweep {
                pressure,
                rose: true,
            })
        };
        let stayed = |pressure| {
            Some(Sweep {
                pressure,
                rose: false,
            })
        };
        let mut sweeps = Sweeps::default();
        // Up to half: nothing to sweep.
        assert_eq!(sweeps.on_accept(ms(0), 50, 100), None);
        // Past half, then past three quarters in the same window: both sweep.
        assert_eq!(sweeps.on_accept(ms(1), 51, 100), rose(Pressure::High));
        assert_eq!(sweeps.on_accept(ms(2), 52, 100), None);
        assert_eq!(sweeps.on_accept(ms(3), 76, 100), rose(Pressure::Severe));
        // A client dancing around a threshold within the window: no sweep.
        for i in 0..50 {
            assert_eq!(
                sweeps.on_accept(ms(4 + i), 50 + (i % 2) as usize * 30, 100),
                None
            );
        }
        // After the floor, one more while the pressure stays (nothing new to
        // tell); then the window again.
        assert_eq!(sweeps.on_accept(ms(203), 77, 100), stayed(Pressure::Severe));
        assert_eq!(sweeps.on_accept(ms(204), 78, 100), None);
        // Fallen back under half, risen again after the window: a sweep.
        assert_eq!(sweeps.on_accept(ms(500), 10, 100), None);
        assert_eq!(sweeps.on_accept(ms(501), 60, 100), rose(Pressure::High));
    }

    #[test]
    fn a_client_trickling_bytes_is_closed_by_the_frame_deadline() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        // One byte every 1.5 s never completes a frame.
        for i in 0..3 {
            let now = t0 + Duration::from_millis(1500 * i);
            c.on_read(now, 0, true);
            if let Some(close) = c.on_timer(now) {
                assert_eq!(close, Close::FrameTimeout);
                return;
            }
        }
        assert_eq!(c.on_timer(t0 + secs(3)), Some(Close::FrameTimeout));
    }

    #[test]
    fn bytes_of_an_incomplete_frame_do_not_restart_the_idle_timer() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_read(t0 + secs(9), 0, true);
        // The frame deadline (2 s after it started) comes first.
        assert_eq!(c.deadline(), Some(t0 + secs(11)));
        assert_eq!(c.on_timer(t0 + secs(11)), Some(Close::FrameTimeout));
    }

    #[test]
    fn a_connection_waiting_only_on_upstream_answers_has_nothing_to_time() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_read(t0, 1, false);
        c.on_forwarded();
        // Even past the idle timeout: the answer (or SERVFAIL) will come.
        assert_eq!(c.deadline(), None);
        assert_eq!(c.on_timer(t0 + IDLE * 3), None);
    }

    #[test]
    fn complete_queries_keep_a_connection_open() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let mut budget = Budget::new(1 << 20);
        for i in 1..5 {
            let now = t0 + secs(8 * i);
            c.on_read(now, 1, false);
            c.on_forwarded();
            c.on_answer(now, 100, &mut budget).unwrap();
            c.on_written(now, 100, &mut budget);
            assert_eq!(c.on_timer(now), None);
        }
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_client_that_does_not_read_stops_being_read_and_is_closed() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let mut budget = Budget::new(1 << 20);
        let mut now = t0;
        while c.may_read(&budget) {
            c.on_read(now, 1, false);
            c.on_forwarded();
            c.on_answer(now, 4000, &mut budget).unwrap();
            now += Duration::from_millis(10);
        }
        assert!(c.backlog() >= ClientLimits::BACKLOG_SOFT);
        // Nothing is written for the write timeout: closed.
        assert_eq!(c.on_timer(now + secs(4)), None);
        assert_eq!(
            c.on_timer(t0 + ClientLimits::WRITE_TIMEOUT + secs(1)),
            Some(Close::WriteStalled)
        );
        c.release(&mut budget);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn slow_but_steady_writes_are_progress() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let mut budget = Budget::new(1 << 20);
        c.on_forwarded();
        c.on_answer(t0, 60_000, &mut budget).unwrap();
        for i in 1..20 {
            let now = t0 + secs(3 * i);
            c.on_written(now, 1000, &mut budget);
            assert_eq!(c.on_timer(now), None, "progress every 3 s");
        }
    }

    #[test]
    fn reading_stops_at_the_inflight_cap_and_resumes_when_answered() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let mut budget = Budget::new(1 << 20);
        for _ in 0..ClientLimits::MAX_INFLIGHT {
            assert!(c.may_take_query());
            c.on_forwarded();
        }
        assert!(!c.may_read(&budget));
        assert!(!c.may_take_query());
        c.on_answer(t0, 50, &mut budget).unwrap();
        c.on_written(t0, 50, &mut budget);
        assert!(c.may_read(&budget));
    }

    #[test]
    fn the_frame_clock_stops_while_the_proxy_holds_reading_back() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let mut budget = Budget::new(1 << 20);
        for _ in 0..ClientLimits::MAX_INFLIGHT {
            c.on_forwarded();
        }
        c.on_read(t0, 1, true);
        assert_eq!(c.on_timer(t0 + secs(5)), None, "not the client's fault");
        let t1 = t0 + secs(6);
        c.on_answer(t1, 10, &mut budget).unwrap();
        assert_eq!(c.on_timer(t1 + secs(1)), None);
        assert_eq!(c.on_timer(t1 + secs(2)), Some(Close::FrameTimeout));
    }

    #[test]
    fn answers_past_the_hard_bound_close_the_connection() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let mut budget = Budget::new(1 << 30);
        c.on_forwarded();
        c.on_forwarded();
        c.on_forwarded();
        c.on_answer(t0, 65_537, &mut budget).unwrap();
        c.on_answer(t0, 65_537, &mut budget).unwrap();
        assert_eq!(c.on_answer(t0, 10, &mut budget), Err(Close::BacklogFull));
        assert_eq!(c.closed(), Some(Close::BacklogFull));
    }

    #[test]
    fn with_the_budget_spent_nobody_reads_and_a_client_behind_is_closed() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000);
        let mut behind = conn(t0);
        let mut current = conn(t0);
        behind.on_forwarded();
        behind.on_forwarded();
        behind.on_answer(t0, 1000, &mut budget).unwrap();
        assert!(!current.may_read(&budget), "budget spent: nobody reads");
        assert_eq!(
            behind.on_answer(t0, 10, &mut budget),
            Err(Close::BudgetSpent)
        );
        // A client that keeps up still gets its answer.
        current.on_forwarded();
        assert_eq!(current.on_answer(t0, 10, &mut budget), Ok(()));
        behind.release(&mut budget);
        current.on_written(t0, 10, &mut budget);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn once_half_the_budget_is_used_a_source_holding_its_quarter_is_not_read() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000);
        let mut flooder = conn_from(t0, A);
        let other_of_a = conn_from(t0, A);
        let b = conn_from(t0, B);
        flooder.on_forwarded();
        flooder.on_answer(t0, 499, &mut budget).unwrap();
        assert!(
            other_of_a.may_read(&budget),
            "under half in use: no share is enforced"
        );
        flooder.on_forwarded();
        flooder.on_answer(t0, 1, &mut budget).unwrap();
        // Half in use, and A holds more than its quarter (250): none of A's
        // connections is read, B's is.
        assert!(!flooder.may_read(&budget));
        assert!(!other_of_a.may_read(&budget));
        assert!(b.may_read(&budget));
        // Once less than half is in use, A is read again.
        flooder.on_written(t0, 1, &mut budget);
        assert!(flooder.may_read(&budget));
        assert!(other_of_a.may_read(&budget));
    }

    #[test]
    fn a_source_alone_fills_half_the_budget_then_its_connection_behind_is_closed() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000);
        let mut a = conn_from(t0, A);
        let mut b = conn_from(t0, B);
        for _ in 0..5 {
            a.on_forwarded();
            a.on_answer(t0, 100, &mut budget).unwrap();
        }
        assert_eq!(budget.used(), 500);
        // A is behind, half is in use and another 100 would take it past its
        // quarter: closed, not queued.
        a.on_forwarded();
        assert_eq!(a.on_answer(t0, 100, &mut budget), Err(Close::ShareSpent));
        assert_eq!(a.closed(), Some(Close::ShareSpent));
        assert_eq!(budget.used(), 500);
        // B is read and answered, also while behind, up to its own quarter.
        for _ in 0..2 {
            assert!(b.may_read(&budget));
            b.on_read(t0, 1, false);
            b.on_forwarded();
            b.on_answer(t0, 100, &mut budget).unwrap();
        }
        b.on_forwarded();
        assert_eq!(b.on_answer(t0, 100, &mut budget), Err(Close::ShareSpent));
        a.release(&mut budget);
        b.release(&mut budget);
        assert_eq!(budget.used(), 0);
        assert!(budget.per_source.is_empty());
    }

    #[test]
    fn a_source_within_its_share_gets_answers_until_the_whole_budget_is_spent() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000);
        let mut a = conn_from(t0, A);
        let mut b = conn_from(t0, B);
        let mut c = conn_from(t0, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)));
        a.on_forwarded();
        a.on_answer(t0, 500, &mut budget).unwrap();
        b.on_forwarded();
        b.on_forwarded();
        b.on_answer(t0, 200, &mut budget).unwrap();
        // B is behind, within its quarter once this is queued: it is.
        b.on_answer(t0, 50, &mut budget).unwrap();
        c.on_forwarded();
        c.on_forwarded();
        c.on_answer(t0, 240, &mut budget).unwrap();
        assert_eq!(budget.used(), 990);
        // C is within its share, but the budget itself would be overrun: a
        // client that is behind is closed whatever its source.
        assert_eq!(c.on_answer(t0, 20, &mut budget), Err(Close::BudgetSpent));
        for x in [&mut a, &mut b, &mut c] {
            x.release(&mut budget);
        }
        assert_eq!(budget.used(), 0);
    }

    fn cand(id: u32, src: u8, age: u64, idle: bool, t0: Instant) -> Candidate<u32> {
        Candidate {
            id,
            source: SourceKey::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, src))),
            last_activity: t0 + secs(100 - age),
            idle,
        }
    }

    #[test]
    fn eviction_takes_from_the_source_with_most_connections_idle_and_oldest_first() {
        let t0 = Instant::now();
        let cands = [
            cand(1, 1, 90, true, t0), // oldest overall, but its source has one
            cand(2, 2, 10, true, t0),
            cand(3, 2, 50, false, t0), // older but busy
            cand(4, 2, 20, true, t0),  // the oldest idle of the biggest source
        ];
        assert_eq!(choose_victim(&cands), Some(4));
        assert_eq!(choose_victim::<u32>(&[]), None);
    }

    proptest! {
        /// Whatever happens, the budget returns to zero once every
        /// connection has released, and a closed connection stays closed.
        #[test]
        fn budget_is_conserved(events in proptest::collection::vec((0usize..3, 0u8..5, 1usize..70_000), 0..200)) {
            let t0 = Instant::now();
            let mut budget = Budget::new(200_000);
            // Two connections from A, one from B.
            let mut conns = vec![conn_from(t0, A), conn_from(t0, A), conn_from(t0, B)];
            for (i, (c, kind, n)) in events.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * 300);
                let conn = &mut conns[c];
                let was_closed = conn.closed();
                match kind {
                    0 => conn.on_forwarded(),
                    1 => { let _ = conn.on_answer(now, n, &mut budget); }
                    2 => conn.on_written(now, n, &mut budget),
                    3 => conn.on_read(now, n % 3, n % 2 == 0),
                    _ => { let _ = conn.on_timer(now); }
                }
                if was_closed.is_some() { prop_assert_eq!(conn.closed(), was_closed); }
                let held: usize = conns.iter().map(ClientConn::backlog).sum();
                prop_assert_eq!(held, budget.used());
                prop_assert_eq!(conns[0].backlog() + conns[1].backlog(), budget.held_by(SourceKey::of(A)));
                prop_assert_eq!(conns[2].backlog(), budget.held_by(SourceKey::of(B)));
                for c in &conns { prop_assert!(c.backlog() <= ClientLimits::BACKLOG_HARD); }
            }
            for c in &mut conns { c.release(&mut budget); }
            prop_assert_eq!(budget.used(), 0);
            prop_assert!(budget.per_source.is_empty());
        }

        /// However many connections one source opens and whatever answers
        /// they get, if it never reads them it holds at most half the budget
        /// plus one answer per connection (each may queue one while not
        /// behind), and a client from another source that reads its answers
        /// is always read from and always answered.
        #[test]
        fn more_connections_never_lengthen_the_idle_timeout(
            open in 0usize..5_000,
            more in 0usize..5_000,
            max in 1usize..5_000,
            idle_ms in 1u64..1_000_000,
        ) {
            let idle = Duration::from_millis(idle_ms);
            let fewer = Pressure::of(open, max).idle_timeout(idle);
            let now = Pressure::of(open + more, max).idle_timeout(idle);
            prop_assert!(now <= fewer);
            prop_assert!(now <= idle);
            prop_assert!(now >= idle.min(PRESSURE_FLOOR));
        }

        #[test]
        fn a_source_that_never_reads_cannot_starve_another(
            events in proptest::collection::vec((0usize..8, 1usize..9_000), 0..400),
        ) {
            const LIMIT: usize = 1 << 20;
            const FLOODERS: usize = 8;
            let t0 = Instant::now();
            let mut budget = Budget::new(LIMIT);
            let mut flooders: Vec<ClientConn> = (0..FLOODERS).map(|_| conn_from(t0, A)).collect();
            let mut reader = conn_from(t0, B);
            for (i, (c, len)) in events.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64);
                let f = &mut flooders[c];
                f.on_forwarded();
                let _ = f.on_answer(now, len, &mut budget);
                prop_assert!(budget.held_by(SourceKey::of(A)) <= LIMIT / 2 + (FLOODERS + 1) * 9_000);
                prop_assert!(reader.may_read(&budget), "B is not read with A holding {}", budget.used());
                reader.on_read(now, 1, false);
                reader.on_forwarded();
                prop_assert_eq!(reader.on_answer(now, len, &mut budget), Ok(()));
                reader.on_written(now, len, &mut budget);
            }
        }
    }
}
