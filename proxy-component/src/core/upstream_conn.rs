//! One upstream connection's timers, as a state machine fed events and
//! `now` (RFC 7766 §6.2.3, RFC 7858 §3.4).
//!
//! The shell reports what happened (a query sent, bytes received, an answer
//! matched, a query its caller gave up on, the transport ending) and asks two
//! things: when must it wake up, and must the connection close.
//!
//! - **Idle**: no query in flight for [`UpstreamTimeouts::idle`]: closed, so
//!   an unused connection does not hold a slot on the server (RFC 7766
//!   §6.2.3). Connections are otherwise kept and reused (RFC 7858 §3.4).
//!   When the server states its own idle timeout in an edns-tcp-keepalive
//!   option (RFC 7828 §3.3.2), the lesser of the two applies; the latest
//!   answer carrying one wins (an answer without it changes nothing). A
//!   TIMEOUT of 0 asks for the connection to close: it takes no new query
//!   ([`UpstreamConn::accepts_queries`]) and closes once the queries in
//!   flight are answered or given up on.
//! - **Stall**: the server owes answers and has sent no byte for
//!   [`UpstreamTimeouts::stall`]: the connection is half-open or the server
//!   hung (dnsproxy #527), and is closed so its queries can be sent again on
//!   a new one. A query whose caller gave up is still owed (the server never
//!   answered it): a server that swallows queries one at a time is detected
//!   as well, not only one that swallows many at once. The stall clock starts
//!   when a query is sent with nothing in flight, and restarts with every
//!   byte received.
//! - **Answered**: whether any answer came back. A connection closed after
//!   answering is the server's choice (RFC 7766 §6.2.3: servers close
//!   connections by their own policy), and its lost queries are sent again;
//!   one closed before is a failure of the upstream (see
//!   [`super::attempt::Outcome::Lost`]).
//! - **Query budget**: some upstreams answer a fixed number of queries on a
//!   connection and then close it (a limit per connection, as dnsdist's
//!   `setMaxTCPQueriesPerConnection`), dropping the queries written past
//!   it. Pipelined past that number, each query written beyond it is lost
//!   and sent again, and may be lost again on the next connection: a
//!   query can go unanswered for its whole deadline. [`QueryBudget`] learns
//!   the number from two such closes after the same number of replies (one
//!   alone may be a crash or a restart, and a budget too small would cost
//!   a handshake every few queries); a connection given a budget writes no
//!   more than that ([`UpstreamConn::may_write`]): the rest wait in the
//!   proxy, source by source, and once its answers are in it closes, and
//!   they go on the next connection. A budget is kept for
//!   [`BUDGET_KEPT`]; then a connection writes freely again, and one more
//!   such close after the same number renews it.
//! - **Window**: how many queries may be written and unanswered at once
//!   ([`Window`]: it adapts to keep the upstream's own queue short); the
//!   shell holds the others back in a [`FairQueue`] until
//!   [`UpstreamConn::may_write`] says there is room.
//!
//! [`FairQueue`]: super::fair_queue::FairQueue

use std::time::{Duration, Instant};

use super::window::{ProbeCause, Window};

/// The timers of an upstream connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Close after this long with nothing in flight
    /// (`upstream_idle_timeout`).
    pub idle: Duration,
    /// Close after this long owing answers with no byte received
    /// (`upstream_timeout`: the time an upstream gets before the next is
    /// tried).
    pub stall: Duration,
}

/// Why an upstream connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Nothing was in flight for the idle timeout.
    Idle,
    /// Nothing was in flight for the idle timeout the server asked for in
    /// an edns-tcp-keepalive option, shorter than the configured one, or the
    /// server asked for the connection to close (TIMEOUT 0) and nothing was
    /// in flight any more (RFC 7828 §3.3.2).
    KeepaliveTimeout,
    /// Answers were owed and no byte came for the stall timeout.
    Stalled,
    /// The server closed the connection.
    ClosedByUpstream,
    /// Reading failed.
    ReadFailed,
    /// Writing failed.
    WriteFailed,
    /// The server sent a frame that is not a DNS message.
    BadFrame,
    /// The proxy no longer holds the connection.
    Dropped,
    /// It wrote its query budget ([`QueryBudget`]) and every answer came
    /// back: closed, so that the queries waiting for it go on another
    /// connection.
    BudgetSpent,
}

impl Close {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::KeepaliveTimeout => "idle for the upstream's edns-tcp-keepalive timeout",
            Self::Stalled => "stalled: no answer within the upstream timeout",
            Self::ClosedByUpstream => "closed by upstream",
            Self::ReadFailed => "read error",
            Self::WriteFailed => "write failed",
            Self::BadFrame => "bad frame from upstream",
            Self::Dropped => "no longer used",
            Self::BudgetSpent => "its query budget answered",
        }
    }
}

/// The state of one upstream connection.
#[derive(Clone, Debug)]
pub struct UpstreamConn {
    timeouts: UpstreamTimeouts,
    /// Queries written and neither answered nor given up on.
    inflight: usize,
    /// How many may be.
    window: Window,
    /// When the stall clock started; `None` while the server owes nothing.
    owed_since: Option<Instant>,
    /// When the last query in flight left, or the connection opened; `None`
    /// while queries are in flight.
    idle_since: Option<Instant>,
    /// The idle timeout the server last asked for (RFC 7828 §3.3.2).
    server_idle: Option<Duration>,
    closed: Option<Close>,
    /// Queries written, and answers matched, since it opened.
    written: u64,
    answers: u64,
    /// Answers to queries given up on, since it opened: replies of the
    /// upstream all the same.
    late: u64,
    /// The most queries it may write ([`QueryBudget`]), if limited.
    budget: Option<u64>,
    /// Queries in flight when it closed: written and never answered.
    lost: usize,
}

impl UpstreamConn {
    /// A connection established at `now`, which may have at most
    /// `capacity` queries written and unanswered; its window probes on the
    /// grid through `probe_grid` ([`Window::new`]).
    pub fn new(
        now: Instant,
        timeouts: UpstreamTimeouts,
        capacity: usize,
        probe_grid: Instant,
    ) -> Self {
        Self {
            timeouts,
            inflight: 0,
            window: Window::new(now, capacity, probe_grid),
            owed_since: None,
            idle_since: Some(now),
            server_idle: None,
            closed: None,
            written: 0,
            answers: 0,
            late: 0,
            budget: None,
            lost: 0,
        }
    }

    /// Writes at most `budget` queries ([`QueryBudget::budget`]); call
    /// before the first.
    pub fn set_budget(&mut self, budget: Option<u64>) {
        self.budget = budget;
    }

    /// Whether it has written its whole budget: it writes no more, and
    /// closes once the answers are in.
    pub fn budget_spent(&self) -> bool {
        self.budget.is_some_and(|b| self.written >= b)
    }

    /// Whether one more query may be written now: the window has room.
    pub fn may_write(&self) -> bool {
        self.inflight < self.window.limit() && !self.budget_spent()
    }

    /// A query must wait: the window is full (see [`Window::on_limited`]).
    pub fn on_limited(&mut self) {
        self.window.on_limited();
    }

    /// The window now.
    pub fn window(&self) -> usize {
        self.window.limit()
    }

    /// A query was handed to the writer.
    pub fn on_sent(&mut self, now: Instant) {
        if self.inflight == 0 {
            self.owed_since = Some(now);
            self.idle_since = None;
        }
        self.inflight += 1;
        self.written += 1;
    }

    /// Bytes arrived from the server: progress, whatever they complete.
    pub fn on_received(&mut self, now: Instant) {
        // With nothing in flight, late bytes answer queries given up on:
        // the server has caught up.
        self.owed_since = (self.inflight > 0).then_some(now);
    }

    /// An answer matched a query in flight, `rtt` after the query was
    /// written (call after [`on_received`](Self::on_received) for the bytes
    /// that completed it). Returns why the window began a probe with this
    /// answer, if it did (for the log and the metric).
    pub fn on_answered(&mut self, now: Instant, rtt: Duration) -> Option<ProbeCause> {
        self.answers += 1;
        self.window.on_answer(now, rtt);
        if self.left(now) {
            self.owed_since = None;
        }
        self.window.take_probe_begun()
    }

    /// A query in flight was given up on by its caller; the server still
    /// owes its answer (see the module docs).
    pub fn on_abandoned(&mut self, now: Instant) {
        self.left(now);
    }

    /// An answer came to a query given up on (see
    /// [`on_abandoned`](Self::on_abandoned)): the upstream replied to it,
    /// and counted it against any limit of its own ([`QueryBudget`]).
    pub fn on_late_answer(&mut self) {
        self.late += 1;
    }

    /// An answer carried an edns-tcp-keepalive option with a TIMEOUT: the
    /// server's idle timeout from now on (RFC 7828 §3.3.2), until another
    /// answer states another one. Zero: no new query goes on this
    /// connection, and it closes as soon as nothing is in flight.
    pub fn on_keepalive(&mut self, timeout: Duration) {
        self.server_idle = Some(timeout);
        if self.retiring() && self.inflight == 0 {
            self.close(Close::KeepaliveTimeout);
        }
    }

    /// A query left the table; true if it was the last one.
    fn left(&mut self, now: Instant) -> bool {
        self.inflight = self.inflight.saturating_sub(1);
        let last = self.inflight == 0;
        if last {
            self.idle_since = Some(now);
            if self.retiring() {
                self.close(Close::KeepaliveTimeout);
            } else if self.budget_spent() {
                self.close(Close::BudgetSpent);
            }
        }
        last
    }

    /// The server asked for the connection to close (TIMEOUT 0).
    fn retiring(&self) -> bool {
        self.server_idle == Some(Duration::ZERO)
    }

    /// The idle timeout in force, and the reason to close when it expires:
    /// the configured one, or the server's if that is shorter.
    fn idle(&self) -> (Duration, Close) {
        match self.server_idle {
            Some(server) if server < self.timeouts.idle => (server, Close::KeepaliveTimeout),
            _ => (self.timeouts.idle, Close::Idle),
        }
    }

    /// The transport ended, or the shell gave up on it. The first reason
    /// given stays.
    pub fn close(&mut self, why: Close) {
        if self.closed.is_none() {
            self.lost = self.inflight;
        }
        self.closed.get_or_insert(why);
    }

    /// When the shell must call [`poll`](Self::poll) next, unless something
    /// else happens first; `None` once closed.
    pub fn deadline(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let stall = self.owed_since.map(|t| t + self.timeouts.stall);
        let idle = self.idle_since.map(|t| t + self.idle().0);
        stall.into_iter().chain(idle).min()
    }

    /// Checks the timers at `now`; `Some` closes the connection (and stays).
    pub fn poll(&mut self, now: Instant) -> Option<Close> {
        if self.closed.is_none() {
            let expired =
                |since: Option<Instant>, after: Duration| since.is_some_and(|t| now >= t + after);
            let (idle, why) = self.idle();
            if expired(self.owed_since, self.timeouts.stall) {
                self.closed = Some(Close::Stalled);
            } else if expired(self.idle_since, idle) {
                self.closed = Some(why);
            }
        }
        self.closed
    }

    /// Why it closed, if it has.
    pub fn closed(&self) -> Option<Close> {
        self.closed
    }

    /// Whether a new query may be sent on it: open, and the server has not
    /// asked for it to close (RFC 7828 §3.3.2: after a TIMEOUT of 0 the
    /// client sends no more queries on the connection).
    pub fn accepts_queries(&self) -> bool {
        self.retired().is_none()
    }

    /// Why no new query may be sent on it, if none may: why it closed, or
    /// [`Close::KeepaliveTimeout`] while it stays open for the answers
    /// owed after the server asked for it to close.
    pub fn retired(&self) -> Option<Close> {
        self.closed
            .or(self.retiring().then_some(Close::KeepaliveTimeout))
    }

    /// What the connection carried: queries written, replies from the
    /// upstream (answers, and answers to queries given up on), and the
    /// queries in flight when it closed.
    pub fn tally(&self) -> Tally {
        Tally {
            written: self.written,
            replies: self.answers + self.late,
            lost: self.lost,
        }
    }

    /// Whether the connection has delivered at least one answer.
    pub fn answered(&self) -> bool {
        self.answers > 0
    }

    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// After a read, once its answers are handed over: whether to
    /// acknowledge it at once rather than leave the ACK to the kernel's
    /// delay (Linux's `TCP_QUICKACK`). Only while answers are
    /// still owed to callers: a server that leaves Nagle on holds its next
    /// small answer until this read is acknowledged. With none owed nothing
    /// waits on the ACK, and it rides on the next query. Answers owed for
    /// queries given up on do not count: nobody waits for them.
    pub fn acks_at_once(&self) -> bool {
        self.inflight > 0
    }
}

/// What a connection carried ([`UpstreamConn::tally`]), for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Queries written.
    pub written: u64,
    /// Replies from the upstream.
    pub replies: u64,
    /// Queries in flight when it closed: written and never answered.
    pub lost: usize,
}

/// How long a learned query budget is kept after the close that taught
/// it: an upstream whose limit went away is found out within this.
pub const BUDGET_KEPT: Duration = Duration::from_secs(60);

/// The number of queries an upstream answers on one connection before it
/// closes it, learned from its closes (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct QueryBudget {
    /// The replies on the last connection the upstream closed with queries
    /// unanswered.
    seen: Option<u64>,
    /// The budget, and when the close that taught it came.
    learned: Option<(u64, Instant)>,
}

impl QueryBudget {
    /// `conn` closed at `now`. The upstream closing it after some replies
    /// with queries still unanswered tells of a budget: that many replies
    /// (answers, and answers to queries given up on: they count against
    /// its limit as much). It is learned when the close before such a one
    /// told the same number. A crash or a restart of the upstream tells a
    /// number too, but not the same one twice, and a budget learned from it
    /// would cost a handshake every few queries for [`BUDGET_KEPT`].
    ///
    /// A connection that spent its budget closes itself once answered, so
    /// it tells nothing either way: the budget runs out after
    /// [`BUDGET_KEPT`], and a connection without one finds out whether the
    /// limit is still there.
    pub fn on_closed(&mut self, conn: &UpstreamConn, now: Instant) {
        let Tally { replies, lost, .. } = conn.tally();
        if conn.closed == Some(Close::ClosedByUpstream) && replies > 0 && lost > 0 {
            if self.seen == Some(replies) {
                self.learned = Some((replies, now));
            }
            self.seen = Some(replies);
        }
    }

    /// The budget of a connection opened at `now`, if the upstream has one.
    pub fn budget(&self, now: Instant) -> Option<u64> {
        self.learned
            .filter(|&(_, at)| now.saturating_duration_since(at) < BUDGET_KEPT)
            .map(|(answers, _)| answers)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const STALL: Duration = Duration::from_millis(1500);

    fn conn(t0: Instant) -> UpstreamConn {
        UpstreamConn::new(
            t0,
            UpstreamTimeouts {
                idle: IDLE,
                stall: STALL,
            },
            64,
            t0,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A connection that wrote `written` queries at `t`, of which the
    /// upstream answered `answered` before it closed the connection.
    fn closed_by_upstream(t: Instant, written: u64, answered: u64) -> UpstreamConn {
        closed_with_late_replies(t, written, answered, 0)
    }

    /// Closed by the upstream after `written` queries and `replies`
    /// replies, the first `late` of them to queries the proxy had given up on.
    fn closed_with_late_replies(t: Instant, written: u64, replies: u64, late: u64) -> UpstreamConn {
        let mut c = conn(t);
        for _ in 0..written {
            c.on_sent(t);
        }
        for _ in 0..late {
            c.on_abandoned(t + ms(1));
        }
        for _ in 0..late {
            c.on_received(t + ms(1));
            c.on_late_answer();
        }
        for _ in late..replies {
            c.on_received(t + ms(1));
            c.on_answered(t + ms(1), ms(1));
        }
        c.close(Close::ClosedByUpstream);
        c
    }

    #[test]
    fn a_close_with_queries_lost_after_answers_teaches_a_query_budget() {
        let t0 = Instant::now();
        let mut budget = QueryBudget::default();
        // The upstream answered 20 of 50 and closed: 30 lost. Once may be
        // a crash; twice is a limit.
        budget.on_closed(&closed_by_upstream(t0, 50, 20), t0);
        assert_eq!(budget.budget(t0), None);
        budget.on_closed(&closed_by_upstream(t0, 50, 20), t0);
        assert_eq!(budget.budget(t0), Some(20));
        // The next connection writes 20, then no more: what comes next
        // waits for it.
        let mut c = conn(t0);
        c.set_budget(budget.budget(t0));
        for i in 0..20 {
            assert!(c.may_write(), "query {i}");
            c.on_sent(t0);
        }
        assert!(!c.may_write() && c.budget_spent());
        assert!(c.accepts_queries());
        // Once the 20 answers are in it closes, for those waiting to go on
        // another connection; that close teaches nothing.
        for i in 0..20 {
            assert_eq!(c.closed(), None, "answer {i}");
            c.on_received(t0 + ms(5));
            c.on_answered(t0 + ms(5), ms(5));
        }
        assert_eq!(c.closed(), Some(Close::BudgetSpent));
        let t1 = t0 + ms(10);
        budget.on_closed(&c, t1);
        assert_eq!(budget.budget(t1), Some(20));
        // Kept for a minute after the close that taught it.
        assert_eq!(budget.budget(t0 + BUDGET_KEPT - ms(1)), Some(20));
        assert_eq!(budget.budget(t0 + BUDGET_KEPT), None);
    }

    #[test]
    fn a_budget_is_renewed_by_one_close_and_changed_by_two() {
        let t0 = Instant::now();
        let mut budget = QueryBudget::default();
        budget.on_closed(&closed_by_upstream(t0, 50, 20), t0);
        budget.on_closed(&closed_by_upstream(t0, 50, 20), t0);
        let t1 = t0 + BUDGET_KEPT;
        assert_eq!(budget.budget(t1), None);
        // Without a budget the next connection writes freely; the upstream
        // still closes after 20: one close renews it.
        budget.on_closed(&closed_by_upstream(t1, 64, 20), t1);
        assert_eq!(budget.budget(t1), Some(20));
        // The upstream's limit is now 30: a close after 30 alone keeps 20,
        // the next after 30 teaches 30.
        let t2 = t1 + BUDGET_KEPT;
        budget.on_closed(&closed_by_upstream(t2, 64, 30), t2);
        assert_eq!(budget.budget(t2), None);
        budget.on_closed(&closed_by_upstream(t2, 64, 30), t2);
        assert_eq!(budget.budget(t2), Some(30));
    }

    #[test]
    fn replies_to_queries_given_up_on_count_toward_the_budget() {
        // The upstream replies to 20 queries a connection, then closes. On
        // a loaded proxy some of them had been given up on: 3 on the first
        // connection, 1 on the second. Its limit is 20 all the same.
        let t0 = Instant::now();
        let mut budget = QueryBudget::default();
        for gave_up in [3, 1] {
            budget.on_closed(&closed_with_late_replies(t0, 40, 20, gave_up), t0 + ms(3));
        }
        assert_eq!(budget.budget(t0 + ms(3)), Some(20));
    }

    #[test]
    fn closes_after_differing_numbers_of_answers_teach_no_budget() {
        // An upstream that crashes or restarts: each close loses queries,
        // after however many answers it gave. A budget of 3 would mean a
        // handshake every 3 queries for a minute.
        let t0 = Instant::now();
        let mut budget = QueryBudget::default();
        for (i, answers) in [3, 40, 7, 120, 3].into_iter().enumerate() {
            let t = t0 + ms(1000) * u32::try_from(i).expect("small");
            budget.on_closed(&closed_by_upstream(t, 128, answers), t);
            assert_eq!(budget.budget(t), None, "after the close after {answers}");
        }
    }

    #[test]
    fn closes_that_lose_nothing_or_answer_nothing_teach_no_budget() {
        let t0 = Instant::now();
        let mut budget = QueryBudget::default();
        // All answered, then closed (the server's idle policy).
        budget.on_closed(&closed_by_upstream(t0, 20, 20), t0);
        // Closed before any answer: a failure, not a limit.
        budget.on_closed(&closed_by_upstream(t0, 20, 0), t0);
        // Gone idle without a budget.
        let mut c = conn(t0);
        assert_eq!(c.poll(t0 + IDLE), Some(Close::Idle));
        budget.on_closed(&c, t0 + IDLE);
        assert_eq!(budget.budget(t0 + IDLE), None);
        // Without a budget a connection writes as its window allows.
        let mut c = conn(t0);
        c.set_budget(None);
        for _ in 0..64 {
            assert!(c.may_write());
            c.on_sent(t0);
        }
    }

    #[test]
    fn rfc7766_an_unused_connection_closes_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        assert_eq!(c.deadline(), Some(t0 + IDLE));
        assert_eq!(c.poll(t0 + IDLE - ms(1)), None);
        assert_eq!(c.poll(t0 + IDLE), Some(Close::Idle));
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn the_idle_timeout_runs_from_the_last_answer() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let t1 = t0 + ms(20_000);
        c.on_sent(t1);
        c.on_sent(t1);
        let t2 = t1 + ms(100);
        c.on_received(t2);
        c.on_answered(t2, ms(1));
        c.on_answered(t2, ms(1));
        assert_eq!(c.deadline(), Some(t2 + IDLE));
        assert_eq!(c.poll(t0 + IDLE), None, "busy in between: not idle");
        assert_eq!(c.poll(t2 + IDLE), Some(Close::Idle));
    }

    #[test]
    fn queries_in_flight_keep_a_connection_from_idling() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        // Bytes keep coming (a large answer, slowly), so it is not stalled
        // either.
        for i in 1..=30 {
            let now = t0 + ms(1000 * i);
            c.on_received(now);
            assert_eq!(c.poll(now), None);
        }
        assert!(c.deadline().unwrap() < t0 + ms(30_000) + IDLE);
    }

    #[test]
    fn reads_are_acknowledged_at_once_only_while_answers_are_owed() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        assert!(!c.acks_at_once(), "a new connection owes nothing");
        c.on_sent(t0);
        c.on_sent(t0);
        c.on_received(t0 + ms(1));
        c.on_answered(t0 + ms(1), ms(1));
        assert!(
            c.acks_at_once(),
            "an answer is still owed: the server may hold it for this ACK"
        );
        c.on_received(t0 + ms(2));
        c.on_answered(t0 + ms(2), ms(2));
        assert!(
            !c.acks_at_once(),
            "all answered: the ACK rides on the next query"
        );
        // A query given up on: its late answer is owed to nobody.
        c.on_sent(t0 + ms(3));
        c.on_abandoned(t0 + ms(4));
        assert!(!c.acks_at_once());
    }

    #[test]
    fn a_half_open_connection_is_closed_as_stalled() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        let t1 = t0 + ms(5);
        c.on_sent(t1);
        assert_eq!(c.deadline(), Some(t1 + STALL));
        assert_eq!(c.poll(t1 + STALL - ms(1)), None);
        assert_eq!(c.poll(t1 + STALL), Some(Close::Stalled));
        assert!(!c.answered());
    }

    #[test]
    fn the_stall_clock_restarts_with_every_byte_received() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        c.on_sent(t0);
        c.on_received(t0 + ms(1000));
        c.on_answered(t0 + ms(1000), ms(1));
        // One answer is still owed; the clock runs from the last byte.
        assert_eq!(c.deadline(), Some(t0 + ms(1000) + STALL));
        assert_eq!(c.poll(t0 + STALL), None);
        assert_eq!(c.poll(t0 + ms(1000) + STALL), Some(Close::Stalled));
        assert!(c.answered());
    }

    #[test]
    fn more_queries_on_a_busy_connection_do_not_restart_the_stall_clock() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        for i in 1..15 {
            c.on_sent(t0 + ms(100 * i));
        }
        assert_eq!(c.poll(t0 + STALL), Some(Close::Stalled));
    }

    #[test]
    fn a_query_given_up_on_is_still_owed_by_the_server() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        // Its caller's deadline came first.
        c.on_abandoned(t0 + ms(1000));
        assert_eq!(c.inflight(), 0);
        assert_eq!(c.deadline(), Some(t0 + STALL));
        assert_eq!(c.poll(t0 + STALL), Some(Close::Stalled));
    }

    #[test]
    fn a_late_answer_to_a_query_given_up_on_clears_the_debt() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        c.on_abandoned(t0 + ms(1000));
        // The late answer arrives and is dropped (unknown ID): no
        // `on_answered`, but the server has caught up.
        c.on_received(t0 + ms(1200));
        assert_eq!(c.deadline(), Some(t0 + ms(1000) + IDLE));
        assert_eq!(c.poll(t0 + STALL), None);
        assert!(!c.answered());
    }

    #[test]
    fn a_new_query_after_all_were_given_up_on_restarts_the_stall_clock() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        c.on_abandoned(t0 + ms(500));
        let t1 = t0 + ms(700);
        c.on_sent(t1);
        assert_eq!(c.poll(t0 + STALL), None);
        assert_eq!(c.poll(t1 + STALL), Some(Close::Stalled));
    }

    #[test]
    fn the_first_reason_to_close_stays() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        c.close(Close::ClosedByUpstream);
        c.close(Close::WriteFailed);
        assert_eq!(c.poll(t0 + STALL), Some(Close::ClosedByUpstream));
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn rfc7828_a_shorter_server_timeout_replaces_the_idle_timeout() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        let t1 = t0 + ms(50);
        c.on_received(t1);
        c.on_answered(t1, ms(1));
        c.on_keepalive(ms(1000));
        assert!(c.accepts_queries());
        assert_eq!(c.deadline(), Some(t1 + ms(1000)));
        assert_eq!(c.poll(t1 + ms(999)), None);
        assert_eq!(c.poll(t1 + ms(1000)), Some(Close::KeepaliveTimeout));
    }

    #[test]
    fn rfc7828_a_longer_server_timeout_does_not_extend_the_configured_one() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_keepalive(IDLE * 10);
        assert_eq!(c.deadline(), Some(t0 + IDLE));
        assert_eq!(c.poll(t0 + IDLE), Some(Close::Idle));
    }

    #[test]
    fn rfc7828_the_latest_server_timeout_wins() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_keepalive(ms(1000));
        c.on_keepalive(ms(20_000));
        assert_eq!(c.deadline(), Some(t0 + ms(20_000)));
        c.on_keepalive(ms(300));
        assert_eq!(c.deadline(), Some(t0 + ms(300)));
        assert_eq!(c.poll(t0 + ms(300)), Some(Close::KeepaliveTimeout));
    }

    #[test]
    fn rfc7828_timeout_zero_takes_no_new_query_and_closes_after_the_answers_owed() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        c.on_sent(t0);
        c.on_sent(t0);
        let t1 = t0 + ms(10);
        c.on_received(t1);
        c.on_answered(t1, ms(1));
        c.on_keepalive(Duration::ZERO);
        // Two answers are still owed: it stays open for them, the stall
        // timer still runs, but no query is sent on it any more.
        assert!(!c.accepts_queries());
        assert_eq!(c.poll(t1), None);
        assert_eq!(c.deadline(), Some(t1 + STALL));
        c.on_received(t1 + ms(5));
        c.on_answered(t1 + ms(5), ms(1));
        assert_eq!(c.closed(), None);
        c.on_abandoned(t1 + ms(6));
        assert_eq!(c.closed(), Some(Close::KeepaliveTimeout));
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn rfc7828_timeout_zero_on_an_idle_connection_closes_it_at_once() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        c.on_received(t0 + ms(1));
        c.on_answered(t0 + ms(1), ms(1));
        assert!(c.accepts_queries());
        c.on_keepalive(Duration::ZERO);
        assert!(!c.accepts_queries());
        assert_eq!(c.poll(t0 + ms(1)), Some(Close::KeepaliveTimeout));
    }

    #[test]
    fn rfc7828_a_later_timeout_lifts_a_zero_one() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.on_sent(t0);
        c.on_sent(t0);
        c.on_received(t0 + ms(1));
        c.on_answered(t0 + ms(1), ms(1));
        c.on_keepalive(Duration::ZERO);
        assert!(!c.accepts_queries());
        c.on_received(t0 + ms(2));
        c.on_keepalive(ms(5000));
        c.on_answered(t0 + ms(2), ms(1));
        assert!(c.accepts_queries());
        assert_eq!(c.deadline(), Some(t0 + ms(2) + ms(5000)));
    }

    /// An event of the property test: what happened, and when (ms after the
    /// previous one).
    #[derive(Clone, Copy, Debug)]
    enum Event {
        Sent,
        Received,
        Answered,
        Abandoned,
        Closed,
        /// An answer carrying an edns-tcp-keepalive TIMEOUT, in 100 ms.
        Keepalive(u16),
    }

    fn event() -> impl Strategy<Value = (Event, u64)> {
        let kind = prop_oneof![
            4 => Just(Event::Sent),
            3 => Just(Event::Received),
            3 => Just(Event::Answered),
            2 => Just(Event::Abandoned),
            1 => Just(Event::Closed),
            1 => prop_oneof![Just(0u16), 1u16..20, 200u16..400].prop_map(Event::Keepalive),
        ];
        // Mostly gaps within the stall timeout, so connections live long
        // enough to go through many states; now and then one past the idle
        // timeout.
        let gap = prop_oneof![8 => 0u64..1600, 1 => 0u64..40_000];
        (kind, gap)
    }

    proptest! {
        /// Whatever happens, the connection closes exactly at its deadline
        /// and never before; a closed connection stays closed for the same
        /// reason; queries in flight always have a stall deadline (a
        /// dead upstream is always detected); and one the server asked to
        /// close (TIMEOUT 0) is open only while it owes answers.
        #[test]
        fn closes_exactly_at_its_deadline(events in proptest::collection::vec(event(), 0..100)) {
            let t0 = Instant::now();
            let mut c = conn(t0);
            let mut now = t0;
            let mut inflight = 0usize;
            for (e, gap) in events {
                let next = now + ms(gap);
                // Nothing happens between `now` and `next`: the timers alone
                // decide there.
                let was = c.closed();
                match c.deadline().filter(|&at| at <= next) {
                    Some(at) => {
                        prop_assert!(at > now, "a deadline already passed");
                        prop_assert_eq!(c.clone().poll(at - Duration::from_nanos(1)), None);
                        prop_assert!(c.poll(at).is_some());
                    }
                    None => prop_assert_eq!(c.poll(next), was),
                }
                if was.is_some() {
                    prop_assert_eq!(c.closed(), was);
                }
                now = next;
                match e {
                    Event::Sent => { c.on_sent(now); inflight += 1; }
                    Event::Received => c.on_received(now),
                    Event::Answered if inflight > 0 => {
                        c.on_received(now);
                        c.on_answered(now, ms(1));
                        inflight -= 1;
                    }
                    Event::Abandoned if inflight > 0 => { c.on_abandoned(now); inflight -= 1; }
                    Event::Closed => c.close(Close::ClosedByUpstream),
                    Event::Keepalive(units) if inflight > 0 => {
                        c.on_received(now);
                        c.on_keepalive(ms(u64::from(units) * 100));
                        c.on_answered(now, ms(1));
                        inflight -= 1;
                    }
                    Event::Answered | Event::Abandoned | Event::Keepalive(_) => {}
                }
                if !c.accepts_queries() && c.closed().is_none() {
                    prop_assert!(inflight > 0, "asked to close, idle, and still open");
                }
                prop_assert_eq!(c.inflight(), inflight);
                if c.closed().is_none() {
                    let stall = c.deadline().is_some_and(|d| d <= now + STALL);
                    prop_assert!(inflight == 0 || stall, "queries in flight without a stall deadline");
                }
            }
        }
    }
}
