//! The attempt policy of one query: which upstream to send it to next, how
//! long that attempt may take, whether a lost query is sent again, when a
//! slow upstream is hedged, which answer the client gets, and when to give
//! up. A state machine fed outcomes and `now`; the shell performs the
//! attempts.
//!
//! - Upstreams are tried in the order the [`Selector`] gives (its strategy,
//!   with upstreams in backoff last).
//! - One attempt gets at most `upstream_timeout`, and never past the query's
//!   deadline (`query_timeout`), so a hung upstream costs one attempt, not
//!   the query. The attempts' times are kept here, not in timers of the
//!   shell: [`Next::Wait`] names the next moment anything is due (an
//!   attempt's end, or its hedge), and at an attempt's end [`Next::Expired`]
//!   says to drop it and record it as [`Outcome::TimedOut`] (before the
//!   query gives up, so its upstream is charged for it even when its end
//!   is the query's deadline). The shell needs one timer per query.
//! - **Hedging.** When the attempt has not been answered within the time its
//!   upstream usually takes ([`Selector::hedge_delay`]), the next upstream
//!   is asked too, and the first answer wins. At most one hedge per query,
//!   paid from the selector's budget. The attempt that lost the race is
//!   dropped, is not a failure of its upstream, and tells nothing of its
//!   round-trip time: taking the wait as a lower bound would raise the
//!   usual time by each hedge, so the next hedge would come later and
//!   later. An upstream that keeps losing is measured by the answers it
//!   sends once the budget is spent, and by its timeouts.
//! - **A SERVFAIL or REFUSED never beats a real answer.** It is kept, and
//!   the next upstream is asked (or the hedge awaited); the client gets it
//!   only when no upstream does better before the deadline (AdGuard
//!   dnsproxy #354 is the complaint about the opposite). It is an answer,
//!   not a failure of its upstream.
//! - A query lost because its connection closed after answering others is
//!   sent again on a new connection to the same upstream, for as long as the
//!   deadline allows: a server closing connections is not failing (RFC 7766
//!   §6.2.3). A connection that dies without answering anything is a
//!   failure; the query is sent again at most [`MAX_FRUITLESS_RESENDS`] times
//!   before the next upstream is tried.
//! - Anything else (connect, TLS, authentication, a timeout, an answer that
//!   does not match the question) moves on to the next upstream.
//!
//! Round-trip times go to the selector as the attempts end: the exchange's
//! own time for an answer (query written to answer read, as the shell
//! measured it, so a connect and TLS handshake do not count), and for an
//! attempt that timed out, the time it had waited as a lower bound.

use std::time::{Duration, Instant};

use super::upstreams::Selector;

/// Resends on connections that died without answering anything, per
/// upstream and query.
pub const MAX_FRUITLESS_RESENDS: u32 = 2;

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer to the question came back.
    Answered,
    /// An answer came back, but a SERVFAIL or REFUSED: another upstream may
    /// do better.
    Declined,
    /// The connection closed with the query in flight. `progress`: it had
    /// answered at least one query before.
    Lost {
        /// Whether the connection answered anything before it closed.
        progress: bool,
    },
    /// No answer within the attempt's time.
    TimedOut,
    /// No connection: connect, TLS handshake or authentication failed, or a
    /// connect that just failed for another query is our answer too.
    NoConnection,
    /// The answer did not match the question.
    Mismatch,
}

impl Outcome {
    /// Whether this outcome is a failure of the upstream (to be counted
    /// once per event by the selector).
    pub fn is_failure(self) -> bool {
        match self {
            Self::Answered | Self::Declined => false,
            Self::Lost { progress } => !progress,
            Self::TimedOut | Self::NoConnection | Self::Mismatch => true,
        }
    }
}

/// Names one attempt of a query, to report its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptId(u32);

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Start an attempt on `upstream`, waiting at most `budget` for its
    /// answer, and report its outcome under `id`.
    Try {
        /// Names the attempt.
        id: AttemptId,
        /// Index of the upstream, in configuration order.
        upstream: usize,
        /// The attempt's time.
        budget: Duration,
        /// Whether it hedges another attempt still running.
        hedge: bool,
    },
    /// Running attempt `id` has had its time without ending: drop it, and
    /// [`record`](Attempts::record) it as [`Outcome::TimedOut`] (until then
    /// it is named again).
    Expired {
        /// Names the attempt.
        id: AttemptId,
    },
    /// Wait for a running attempt to end, or until `until`, then ask again:
    /// the earliest of the running attempts' ends and the time to hedge.
    Wait {
        /// When to ask again.
        until: Instant,
    },
    /// Nothing more to try: answer with the kept answer if there is one
    /// (see [`Verdict::Keep`]), else SERVFAIL.
    GiveUp,
}

/// What to do with the answer of an attempt that just ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It is the client's answer: send it, drop the other attempts.
    Answer,
    /// Keep it: it is the client's answer if nothing better comes.
    Keep,
    /// Nothing to keep.
    Drop,
}

#[derive(Debug)]
struct Running {
    id: AttemptId,
    upstream: usize,
    started: Instant,
    ends: Instant,
}

/// The attempts of one query.
#[derive(Debug)]
pub struct Attempts {
    order: Vec<usize>,
    /// The next upstream of `order` not tried yet.
    pos: usize,
    /// An upstream to send the query to again before moving on.
    resend: Option<usize>,
    deadline: Instant,
    upstream_timeout: Duration,
    fruitless_resends: u32,
    running: Vec<Running>,
    next_id: u32,
    /// A hedge was sent, or decided against.
    hedged: bool,
    kept: bool,
}

impl Attempts {
    /// A query received at `now`, to try `order` (from the selector) until
    /// `now + query_timeout`.
    pub fn new(
        order: Vec<usize>,
        now: Instant,
        query_timeout: Duration,
        upstream_timeout: Duration,
    ) -> Self {
        Self {
            order,
            pos: 0,
            resend: None,
            deadline: now + query_timeout,
            upstream_timeout,
            fruitless_resends: 0,
            running: Vec::with_capacity(2),
            next_id: 0,
            hedged: false,
            kept: false,
        }
    }

    /// The query's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What to do at `now`. `selector` says when to hedge and pays for it.
    pub fn next(&mut self, now: Instant, selector: &mut Selector) -> Next {
        if let Some(expired) = self.running.iter().find(|r| r.ends <= now) {
            return Next::Expired { id: expired.id };
        }
        if now >= self.deadline {
            return Next::GiveUp;
        }
        if self.running.is_empty() {
            if let Some(upstream) = self.resend.take() {
                return self.start(upstream, now, false);
            }
            let Some(&upstream) = self.order.get(self.pos) else {
                return Next::GiveUp;
            };
            self.pos += 1;
            self.fruitless_resends = 0;
            return self.start(upstream, now, false);
        }
        if let Some(upstream) = self.resend.take() {
            // Lost while a hedge runs: sent again beside it.
            return self.start(upstream, now, false);
        }
        if !self.hedged && self.running.len() == 1 {
            let first = &self.running[0];
            match (
                self.order.get(self.pos),
                selector.hedge_delay(first.upstream),
            ) {
                (Some(&upstream), Some(delay)) => {
                    let at = first.started + delay;
                    if at < first.ends.min(self.deadline) {
                        if now < at {
                            return Next::Wait { until: at };
                        }
                        self.hedged = true;
                        if selector.take_hedge() {
                            self.pos += 1;
                            return self.start(upstream, now, true);
                        }
                    }
                }
                // No next upstream, or no hedge for this one.
                _ => self.hedged = true,
            }
        }
        self.wait()
    }

    /// Until the first running attempt's end (each is at most the
    /// deadline).
    fn wait(&self) -> Next {
        let ends = self.running.iter().map(|r| r.ends).min();
        Next::Wait {
            until: ends.unwrap_or(self.deadline),
        }
    }

    fn start(&mut self, upstream: usize, now: Instant, hedge: bool) -> Next {
        let id = AttemptId(self.next_id);
        self.next_id += 1;
        let budget = self
            .deadline
            .saturating_duration_since(now)
            .min(self.upstream_timeout);
        self.running.push(Running {
            id,
            upstream,
            started: now,
            ends: now + budget,
        });
        Next::Try {
            id,
            upstream,
            budget,
            hedge,
        }
    }

    /// Attempt `id` ended at `now` with `outcome`: what to do with its
    /// answer. `rtt`: the exchange's own round-trip time, for an answer
    /// (without one, the attempt's whole time counts). Round-trip times go
    /// to `selector`; failures are counted there by the shell, once per
    /// connection event (see [`Selector::failed`]).
    pub fn record(
        &mut self,
        id: AttemptId,
        outcome: Outcome,
        now: Instant,
        rtt: Option<Duration>,
        selector: &mut Selector,
    ) -> Verdict {
        let Some(at) = self.running.iter().position(|r| r.id == id) else {
            return Verdict::Drop;
        };
        let ended = self.running.swap_remove(at);
        let waited = now.saturating_duration_since(ended.started);
        match outcome {
            Outcome::Answered => {
                selector.observe_rtt(ended.upstream, rtt.unwrap_or(waited));
                self.running.clear();
                self.pos = self.order.len();
                self.resend = None;
                return Verdict::Answer;
            }
            Outcome::Declined => {
                selector.observe_rtt(ended.upstream, rtt.unwrap_or(waited));
                if !self.kept {
                    self.kept = true;
                    return Verdict::Keep;
                }
            }
            Outcome::TimedOut => selector.observe_at_least(ended.upstream, waited),
            Outcome::Lost { progress: true } => self.resend = Some(ended.upstream),
            Outcome::Lost { progress: false } if self.fruitless_resends < MAX_FRUITLESS_RESENDS => {
                self.fruitless_resends += 1;
                self.resend = Some(ended.upstream);
            }
            Outcome::Lost { .. } | Outcome::NoConnection | Outcome::Mismatch => {}
        }
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::upstreams::{HEDGE_MIN_DELAY, Strategy as Order};
    use proptest::prelude::*;

    const Q: Duration = Duration::from_secs(4);
    const U: Duration = Duration::from_millis(1500);
    const MS: Duration = Duration::from_millis(1);

    fn attempts(order: Vec<usize>, t0: Instant) -> Attempts {
        Attempts::new(order, t0, Q, U)
    }

    /// Starts the next attempt, which must be on `upstream`.
    #[track_caller]
    fn start(a: &mut Attempts, now: Instant, s: &mut Selector, upstream: usize) -> AttemptId {
        match a.next(now, s) {
            Next::Try {
                id, upstream: u, ..
            } if u == upstream => id,
            other => panic!("expected an attempt on {upstream}, got {other:?}"),
        }
    }

    #[test]
    fn upstreams_are_tried_in_order_each_within_the_upstream_timeout() {
        let t0 = Instant::now();
        let s = &mut Selector::new(2);
        let mut a = attempts(vec![1, 0], t0);
        let Next::Try {
            id,
            upstream: 1,
            budget: U,
            hedge: false,
        } = a.next(t0, s)
        else {
            panic!()
        };
        assert_eq!(a.next(t0, s), Next::Wait { until: t0 + U });
        assert_eq!(a.next(t0 + U, s), Next::Expired { id });
        assert_eq!(
            a.record(id, Outcome::TimedOut, t0 + U, None, s),
            Verdict::Drop
        );
        let Next::Try {
            id,
            upstream: 0,
            budget: U,
            ..
        } = a.next(t0 + U, s)
        else {
            panic!()
        };
        a.record(id, Outcome::NoConnection, t0 + U, None, s);
        assert_eq!(a.next(t0 + U, s), Next::GiveUp);
    }

    #[test]
    fn an_attempt_that_ends_with_the_deadline_expires_before_the_query_gives_up() {
        let t0 = Instant::now();
        let s = &mut Selector::new(1);
        let mut a = Attempts::new(vec![0], t0, U, U);
        let id = start(&mut a, t0, s, 0);
        assert_eq!(a.next(t0 + MS, s), Next::Wait { until: t0 + U });
        let late = t0 + 2 * U;
        assert_eq!(
            a.next(late, s),
            Next::Expired { id },
            "named until recorded"
        );
        assert_eq!(a.next(late, s), Next::Expired { id });
        a.record(id, Outcome::TimedOut, late, None, s);
        assert_eq!(a.next(late, s), Next::GiveUp);
    }

    #[test]
    fn the_last_attempt_gets_only_what_is_left_of_the_deadline() {
        let t0 = Instant::now();
        let s = &mut Selector::new(1);
        let mut a = attempts(vec![0], t0);
        let Next::Try { id, budget, .. } = a.next(t0 + Duration::from_secs(3), s) else {
            panic!("no attempt")
        };
        assert_eq!(budget, Duration::from_secs(1));
        assert_eq!(a.next(t0 + Q, s), Next::Expired { id });
        a.record(id, Outcome::TimedOut, t0 + Q, None, s);
        assert_eq!(a.next(t0 + Q, s), Next::GiveUp);
    }

    #[test]
    fn rfc7766_queries_lost_to_a_closing_server_are_resent_until_the_deadline() {
        let t0 = Instant::now();
        let s = &mut Selector::new(2);
        let mut a = attempts(vec![0, 1], t0);
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i * 10);
            let id = start(&mut a, now, s, 0);
            a.record(id, Outcome::Lost { progress: true }, now, None, s);
        }
        assert_eq!(a.next(t0 + Q, s), Next::GiveUp);
    }

    #[test]
    fn a_connection_that_never_answers_is_resent_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let s = &mut Selector::new(2);
        let mut a = attempts(vec![0, 1], t0);
        for _ in 0..=MAX_FRUITLESS_RESENDS {
            let id = start(&mut a, t0, s, 0);
            a.record(id, Outcome::Lost { progress: false }, t0, None, s);
        }
        start(&mut a, t0, s, 1);
    }

    #[test]
    fn an_answer_ends_the_attempts_and_times_the_upstream() {
        let t0 = Instant::now();
        let s = &mut Selector::new(2);
        let mut a = attempts(vec![0, 1], t0);
        let id = start(&mut a, t0, s, 0);
        let rtt = Some(3 * MS);
        assert_eq!(
            a.record(id, Outcome::Answered, t0 + 7 * MS, rtt, s),
            Verdict::Answer
        );
        assert_eq!(
            s.rtt(0).map(|r| r.srtt),
            rtt,
            "the exchange's own time, not the connect before it"
        );
        assert_eq!(a.next(t0, s), Next::GiveUp);
    }

    #[test]
    fn a_late_or_unknown_report_changes_nothing() {
        let t0 = Instant::now();
        let s = &mut Selector::new(1);
        let mut a = attempts(vec![0], t0);
        let id = start(&mut a, t0, s, 0);
        assert_eq!(
            a.record(id, Outcome::TimedOut, t0 + U, None, s),
            Verdict::Drop
        );
        assert_eq!(
            a.record(id, Outcome::Answered, t0 + U, None, s),
            Verdict::Drop
        );
    }

    #[test]
    fn only_real_failures_count_against_an_upstream() {
        assert!(!Outcome::Answered.is_failure());
        assert!(!Outcome::Declined.is_failure());
        assert!(!Outcome::Lost { progress: true }.is_failure());
        assert!(Outcome::Lost { progress: false }.is_failure());
        assert!(Outcome::TimedOut.is_failure());
        assert!(Outcome::NoConnection.is_failure());
        assert!(Outcome::Mismatch.is_failure());
    }

    #[test]
    fn a_servfail_is_kept_while_the_next_upstream_is_asked_and_a_real_answer_wins() {
        let t0 = Instant::now();
        let s = &mut Selector::new(2);
        let mut a = attempts(vec![0, 1], t0);
        let first = start(&mut a, t0, s, 0);
        assert_eq!(
            a.record(first, Outcome::Declined, t0 + MS, None, s),
            Verdict::Keep
        );
        let second = start(&mut a, t0 + MS, s, 1);
        assert_eq!(
            a.record(second, Outcome::Answered, t0 + 2 * MS, None, s),
            Verdict::Answer
        );
    }

    #[test]
    fn a_servfail_is_the_answer_when_no_upstream_does_better() {
        let t0 = Instant::now();
        let s = &mut Selector::new(3);
        let mut a = attempts(vec![0, 1, 2], t0);
        let id = start(&mut a, t0, s, 0);
        assert_eq!(a.record(id, Outcome::Declined, t0, None, s), Verdict::Keep);
        let id = start(&mut a, t0, s, 1);
        assert_eq!(
            a.record(id, Outcome::Declined, t0, None, s),
            Verdict::Drop,
            "the first is kept"
        );
        let id = start(&mut a, t0, s, 2);
        assert_eq!(
            a.record(id, Outcome::TimedOut, t0 + U, None, s),
            Verdict::Drop
        );
        assert_eq!(
            a.next(t0 + U, s),
            Next::GiveUp,
            "answer with the kept SERVFAIL"
        );
    }

    #[test]
    fn a_servfail_from_the_only_upstream_is_answered_at_once() {
        let t0 = Instant::now();
        let s = &mut Selector::new(1);
        let mut a = attempts(vec![0], t0);
        let id = start(&mut a, t0, s, 0);
        assert_eq!(a.record(id, Outcome::Declined, t0, None, s), Verdict::Keep);
        assert_eq!(a.next(t0, s), Next::GiveUp);
    }

    /// A selector whose upstream 0 usually answers in just over 20 ms (srtt
    /// 20 ms, rttvar near 0), hedging up to `percent`.
    fn measured(percent: u32) -> Selector {
        let mut s = Selector::with(2, Order::Priority, percent);
        s.observe_rtt(0, 20 * MS);
        for _ in 0..20 {
            s.observe_rtt(0, 20 * MS);
        }
        s
    }

    /// The usual time of upstream 0 in [`measured`].
    fn hedge_time() -> Duration {
        measured(5).hedge_delay(0).unwrap()
    }

    /// A query on upstream 0 at `t0`, hedged to upstream 1 after its usual
    /// time: the attempts and the two attempts' names.
    fn hedged(t0: Instant, s: &mut Selector) -> (Attempts, AttemptId, AttemptId) {
        let mut a = attempts(vec![0, 1], t0);
        let slow = start(&mut a, t0, s, 0);
        let hedge = start(&mut a, t0 + hedge_time(), s, 1);
        (a, slow, hedge)
    }

    #[test]
    fn a_slow_attempt_is_hedged_after_its_usual_time_and_the_first_answer_wins() {
        let t0 = Instant::now();
        let s = &mut measured(5);
        let usual = s.hedge_delay(0).unwrap();
        assert!(usual >= HEDGE_MIN_DELAY && usual < 40 * MS, "{usual:?}");
        let mut a = attempts(vec![0, 1], t0);
        let slow = start(&mut a, t0, s, 0);
        assert_eq!(a.next(t0, s), Next::Wait { until: t0 + usual });
        let Next::Try {
            id: hedge,
            upstream: 1,
            hedge: true,
            budget,
        } = a.next(t0 + usual, s)
        else {
            panic!("no hedge")
        };
        assert_eq!(budget, U);
        assert_eq!(
            a.next(t0 + usual, s),
            Next::Wait { until: t0 + U },
            "one hedge per query: until the first attempt's end"
        );
        assert_eq!(
            a.record(hedge, Outcome::Answered, t0 + usual + 5 * MS, None, s),
            Verdict::Answer
        );
        assert_eq!(s.rtt(1).map(|r| r.srtt), Some(5 * MS));
        // The loser is not failed, and its usual time stays: the next
        // query is hedged as soon.
        assert_eq!(s.hedge_delay(0), Some(usual));
        assert_eq!(
            a.record(slow, Outcome::TimedOut, t0 + U, None, s),
            Verdict::Drop
        );
        assert_eq!(s.failures(0), 0);
    }

    #[test]
    fn the_first_attempt_may_still_win_the_race() {
        let t0 = Instant::now();
        let s = &mut measured(5);
        let usual = s.hedge_delay(0).unwrap();
        let mut a = attempts(vec![0, 1], t0);
        let slow = start(&mut a, t0, s, 0);
        start(&mut a, t0 + usual, s, 1);
        assert_eq!(
            a.record(slow, Outcome::Answered, t0 + usual + MS, None, s),
            Verdict::Answer
        );
    }

    #[test]
    fn a_servfail_does_not_beat_the_hedge_still_running() {
        let (t0, s, usual) = (Instant::now(), &mut measured(5), hedge_time());
        let (mut a, slow, hedge) = hedged(t0, s);
        assert_eq!(
            a.record(slow, Outcome::Declined, t0 + usual + MS, None, s),
            Verdict::Keep
        );
        assert_eq!(
            a.next(t0 + usual + MS, s),
            Next::Wait {
                until: t0 + usual + U
            },
            "until the hedge's end"
        );
        assert_eq!(
            a.record(hedge, Outcome::Answered, t0 + usual + 2 * MS, None, s),
            Verdict::Answer
        );
    }

    #[test]
    fn no_hedge_without_budget_measurement_or_another_upstream() {
        let t0 = Instant::now();
        let late = t0 + Duration::from_millis(500);
        for (mut s, order, why) in [
            (measured(0), vec![0, 1], "hedging off"),
            (
                Selector::with(2, Order::Priority, 5),
                vec![0, 1],
                "not measured",
            ),
            (measured(5), vec![0], "no other upstream"),
        ] {
            let mut a = attempts(order, t0);
            start(&mut a, t0, &mut s, 0);
            assert_eq!(a.next(late, &mut s), Next::Wait { until: t0 + U }, "{why}");
        }
    }

    #[test]
    fn no_hedge_when_the_attempt_would_time_out_first() {
        let t0 = Instant::now();
        let s = &mut measured(5);
        let mut a = Attempts::new(vec![0, 1], t0, Q, 20 * MS);
        start(&mut a, t0, s, 0);
        assert_eq!(
            a.next(t0, s),
            Next::Wait {
                until: t0 + 20 * MS
            }
        );
    }

    #[test]
    fn a_hedge_fails_without_failing_the_query() {
        let (t0, s, usual) = (Instant::now(), &mut measured(5), hedge_time());
        let (mut a, slow, hedge) = hedged(t0, s);
        assert_eq!(
            a.record(hedge, Outcome::NoConnection, t0 + usual, None, s),
            Verdict::Drop
        );
        assert_eq!(a.next(t0 + usual, s), Next::Wait { until: t0 + U });
        assert_eq!(
            a.record(slow, Outcome::Answered, t0 + 50 * MS, None, s),
            Verdict::Answer
        );
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            2 => Just(Outcome::Answered),
            2 => Just(Outcome::Declined),
            2 => any::<bool>().prop_map(|progress| Outcome::Lost { progress }),
            1 => Just(Outcome::TimedOut),
            1 => Just(Outcome::NoConnection),
            1 => Just(Outcome::Mismatch),
        ]
    }

    proptest! {
        /// Whatever the upstreams do: at most two attempts run at once and
        /// at most one of them is a hedge; no attempt outlives the deadline;
        /// one answer at most is kept and it is never dropped for a worse
        /// one; and the query ends (an answer, or give up) within a bounded
        /// number of steps.
        #[test]
        fn attempts_stay_bounded_and_end(
            upstreams in 1usize..4,
            steps in proptest::collection::vec((outcome(), 0u64..400, any::<bool>()), 1..60),
            percent in 0u32..=50,
        ) {
            let t0 = Instant::now();
            let mut s = Selector::with(upstreams, Order::Fastest, percent);
            for i in 0..upstreams {
                s.observe_rtt(i, 20 * MS);
            }
            let order = s.order(t0);
            let mut a = attempts(order, t0);
            let mut now = t0;
            let mut running: Vec<AttemptId> = Vec::new();
            let (mut hedges, mut kept, mut ended) = (0, 0, false);
            for (outcome, gap, first) in steps {
                loop {
                    match a.next(now, &mut s) {
                        Next::Try { id, budget, hedge, .. } => {
                            prop_assert!(now + budget <= a.deadline());
                            prop_assert!(budget <= U);
                            hedges += usize::from(hedge);
                            running.push(id);
                            prop_assert!(running.len() <= 2, "{} running", running.len());
                        }
                        Next::Expired { id } => {
                            prop_assert!(running.contains(&id), "an attempt not running expired");
                            running.retain(|&r| r != id);
                            prop_assert_eq!(a.record(id, Outcome::TimedOut, now, None, &mut s), Verdict::Drop);
                        }
                        Next::Wait { until } => {
                            prop_assert!(!running.is_empty(), "waiting on nothing");
                            prop_assert!(until > now && until <= a.deadline());
                            break;
                        }
                        Next::GiveUp => { ended = true; break; }
                    }
                }
                prop_assert!(hedges <= 1);
                if ended {
                    break;
                }
                now += Duration::from_millis(gap);
                let id = if first { running.remove(0) } else { running.pop().unwrap() };
                match a.record(id, outcome, now, None, &mut s) {
                    Verdict::Answer => {
                        prop_assert_eq!(outcome, Outcome::Answered);
                        ended = true;
                        break;
                    }
                    Verdict::Keep => {
                        prop_assert_eq!(outcome, Outcome::Declined);
                        kept += 1;
                    }
                    Verdict::Drop => {}
                }
                prop_assert!(kept <= 1);
            }
            // Steps ran out first: the deadline still ends the query, once
            // every attempt still running has expired.
            if !ended {
                let mut expired = 0;
                while let Next::Expired { id } = a.next(a.deadline(), &mut s) {
                    a.record(id, Outcome::TimedOut, a.deadline(), None, &mut s);
                    expired += 1;
                    prop_assert!(expired <= 2);
                }
                prop_assert_eq!(a.next(a.deadline(), &mut s), Next::GiveUp);
            }
        }
    }
}
