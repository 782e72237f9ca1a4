//! Upstream selection: the order a query tries the upstreams in (the
//! [`Strategy`]), failed upstreams put in exponential backoff and retried
//! once it expires, a smoothed round-trip time per upstream, and the budget
//! of hedged queries.
//!
//! Failures are counted per event, not per query: a connection that breaks
//! or stalls is one failure of its upstream whatever number of queries it
//! carried, so fifty queries lost at once do not escalate the backoff fifty
//! steps. Events are identified by the connection attempt they belong to (a
//! number that grows per upstream, see [`Selector::failed`]).
//!
//! When every upstream is in backoff, queries still go to the one that
//! failed least recently: a blackout would turn a brief outage of all
//! upstreams into a longer one.
//!
//! Round-trip times are smoothed as TCP smooths them (RFC 6298 §2): `srtt`
//! and `rttvar`, and `srtt + 4·rttvar` is the time within which an upstream
//! usually answers, after which a query is hedged (see
//! [`attempt`](super::attempt)). Hedges are paid for from a budget that
//! grows by `hedge_percent` of a hedge per query, so they stay at most that
//! share of the queries (plus a burst of [`HEDGE_BURST`]).
//!
//! Pure state over an injected clock (`now`), so the policy is tested without
//! sockets or sleeps.

use crate::core::duration::times;
use std::time::{Duration, Instant};

/// First backoff after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Backoff never grows past this, so a recovered upstream is back within a minute.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// `fastest` sends one query in this many to another upstream than the
/// fastest, in turn, so their round-trip times stay current and a
/// recovered upstream is found.
pub const PROBE_EVERY: u64 = 20;
/// A query is never hedged sooner than this after it was sent: below it,
/// the second query costs more than the wait it could save.
pub const HEDGE_MIN_DELAY: Duration = Duration::from_millis(10);
/// Hedges that may be sent in a burst, once the budget has filled.
pub const HEDGE_BURST: u32 = 10;

/// The order in which a query tries the upstreams (upstreams in backoff
/// always come last, whatever the strategy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Configuration order: the first upstream takes every query while it
    /// is healthy, the others are fallbacks.
    #[default]
    Priority,
    /// Each query starts at the next upstream in turn, spreading the load.
    RoundRobin,
    /// The lowest smoothed round-trip time first; one query in
    /// [`PROBE_EVERY`] goes to another upstream first, in turn.
    Fastest,
}

/// A smoothed round-trip time (RFC 6298 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtt {
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Its mean deviation.
    pub rttvar: Duration,
}

impl Rtt {
    fn first(sample: Duration) -> Self {
        Self {
            srtt: sample,
            rttvar: sample / 2,
        }
    }

    fn update(&mut self, sample: Duration) {
        // `duration::times`, not `*`: a Duration's multiply is a checked
        // 64-bit one, a call to `__multi3` in the component, and this runs
        // for every answer.
        let deviation = self.srtt.abs_diff(sample);
        self.rttvar = times(self.rttvar, 3).saturating_add(deviation) / 4;
        self.srtt = times(self.srtt, 7).saturating_add(sample) / 8;
    }

    /// The time within which the upstream usually answers: `srtt +
    /// 4·rttvar`, as TCP's retransmission timeout.
    pub fn usual(&self) -> Duration {
        self.srtt.saturating_add(times(self.rttvar, 4))
    }
}

#[derive(Clone, Debug, Default)]
struct Health {
    consecutive_failures: u32,
    retry_at: Option<Instant>,
    last_failure: Option<Instant>,
    /// The newest event already counted (see [`Selector::failed`]).
    last_event: Option<u64>,
    /// It answered since its last counted failure.
    answered: bool,
    rtt: Option<Rtt>,
}

/// Health and round-trip time of each upstream (indexed in configuration
/// order, 0 = most preferred), the strategy, and the hedge budget.
#[derive(Clone, Debug)]
pub struct Selector {
    health: Vec<Health>,
    strategy: Strategy,
    /// Queries ordered so far: the turn of `round_robin` and of `fastest`'s
    /// probes.
    queries: u64,
    /// Hedge budget in hundredths of a hedge.
    hedge_credit: u32,
    hedge_percent: u32,
}

impl Selector {
    /// A selector for `n` upstreams, all healthy, ordered by priority, with
    /// no hedging.
    pub fn new(n: usize) -> Self {
        Self::with(n, Strategy::Priority, 0)
    }

    /// A selector for `n` upstreams, all healthy, ordered by `strategy`,
    /// hedging at most `hedge_percent` of the queries (0: never).
    pub fn with(n: usize, strategy: Strategy, hedge_percent: u32) -> Self {
        let hedge_percent = hedge_percent.min(100);
        Self {
            health: vec![Health::default(); n],
            strategy,
            queries: 0,
            hedge_credit: if hedge_percent == 0 {
                0
            } else {
                HEDGE_BURST * 100
            },
            hedge_percent,
        }
    }

    /// The order in which a query tries the upstreams at `now`: those not in
    /// backoff as the strategy orders them, then those in backoff, least
    /// recently failed first. Every upstream is listed, so when all have
    /// failed recently a query still tries them rather than failing without
    /// trying. Call once per query: it counts the query (the turn of round
    /// robin and probes, the hedge budget).
    pub fn order(&mut self, now: Instant) -> Vec<usize> {
        let turn = self.queries;
        self.queries = self.queries.wrapping_add(1);
        self.hedge_credit = (self.hedge_credit + self.hedge_percent).min(HEDGE_BURST * 100);
        let (mut ready, mut waiting): (Vec<usize>, Vec<usize>) =
            (0..self.health.len()).partition(|&i| self.is_ready(i, now));
        match self.strategy {
            Strategy::Priority => {}
            Strategy::RoundRobin => {
                if !ready.is_empty() {
                    let by = (turn % ready.len() as u64) as usize;
                    ready.rotate_left(by);
                }
            }
            Strategy::Fastest => {
                // Not measured yet counts as fastest: it gets measured.
                ready.sort_by_key(|&i| self.health[i].rtt.map_or(Duration::ZERO, |r| r.srtt));
                if turn % PROBE_EVERY == PROBE_EVERY - 1 && ready.len() > 1 {
                    let probe = 1 + ((turn / PROBE_EVERY) % (ready.len() as u64 - 1)) as usize;
                    let p = ready.remove(probe);
                    ready.insert(0, p);
                }
            }
        }
        waiting.sort_by_key(|&i| self.health[i].last_failure);
        ready.append(&mut waiting);
        ready
    }

    /// Whether a new connection to upstream `i` may be opened at `now`: it
    /// is out of backoff, or every upstream is in backoff and `i` failed
    /// least recently (no blackout). The shell still opens at most one
    /// connection to an upstream at a time.
    pub fn may_connect(&self, i: usize, now: Instant) -> bool {
        if self.is_ready(i, now) {
            return true;
        }
        let all_waiting = !(0..self.health.len()).any(|j| self.is_ready(j, now));
        all_waiting
            && (0..self.health.len()).min_by_key(|&j| self.health[j].last_failure) == Some(i)
    }

    /// True if upstream `i` is not in backoff at `now`.
    pub fn is_ready(&self, i: usize, now: Instant) -> bool {
        self.health[i].retry_at.is_none_or(|t| t <= now)
    }

    /// Upstream `i` answered: it is healthy again. The events already
    /// counted stay counted.
    pub fn succeeded(&mut self, i: usize) {
        let h = &mut self.health[i];
        h.consecutive_failures = 0;
        h.retry_at = None;
        h.answered = true;
    }

    /// Upstream `i` failed (connect, handshake, authentication, a stalled
    /// or broken connection) in `event`: the number of the connection
    /// attempt the failure belongs to, growing per upstream. Each event is
    /// counted once, and an event older than one already counted is not
    /// counted at all (queries on an old connection reporting late).
    ///
    /// Returns the backoff it is now in when the failure was counted: 1 s,
    /// doubling per consecutive failure, capped at [`BACKOFF_MAX`].
    pub fn failed(&mut self, i: usize, event: u64, now: Instant) -> Option<Duration> {
        let h = &mut self.health[i];
        if h.last_event.is_some_and(|last| event <= last) {
            return None;
        }
        h.last_event = Some(event);
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        let exp = h.consecutive_failures.saturating_sub(1).min(16);
        let backoff = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
        h.retry_at = Some(now + backoff);
        h.last_failure = Some(now);
        h.answered = false;
        Some(backoff)
    }

    /// Whether upstream `i` is known up at `now`: it answered since its last
    /// failure and is not in backoff (the `upstream_up` metric). Before its
    /// first answer it is not known up.
    pub fn is_up(&self, i: usize, now: Instant) -> bool {
        self.health[i].answered && self.is_ready(i, now)
    }

    /// Readiness (`/ready`): some upstream is not in backoff, so the next
    /// query goes to an upstream not known to be failing. Connections are
    /// opened lazily, so before any traffic no upstream has failed and the
    /// proxy is ready; it is unready only while every upstream is in
    /// backoff after a failure, and ready again when a backoff expires (at
    /// most [`BACKOFF_MAX`] later), so an orchestrator that stops sending
    /// traffic to an unready proxy does not keep it unready forever.
    pub fn reachable(&self, now: Instant) -> bool {
        (0..self.health.len()).any(|i| self.is_ready(i, now))
    }

    /// Consecutive failures of upstream `i` (0 when healthy).
    pub fn failures(&self, i: usize) -> u32 {
        self.health[i].consecutive_failures
    }

    /// Upstream `i` answered in `sample`: its smoothed round-trip time
    /// takes the sample in.
    pub fn observe_rtt(&mut self, i: usize, sample: Duration) {
        let h = &mut self.health[i];
        match &mut h.rtt {
            Some(rtt) => rtt.update(sample),
            None => h.rtt = Some(Rtt::first(sample)),
        }
    }

    /// Upstream `i` had not answered after `waited` (it timed out): its
    /// round-trip time is at least that. Taken in when longer than its
    /// smoothed time, so an upstream that times out does not keep looking
    /// fast, and one never measured gets a time.
    pub fn observe_at_least(&mut self, i: usize, waited: Duration) {
        if self.health[i].rtt.is_none_or(|r| waited > r.srtt) {
            self.observe_rtt(i, waited);
        }
    }

    /// Upstream `i`'s smoothed round-trip time, once measured.
    pub fn rtt(&self, i: usize) -> Option<Rtt> {
        self.health[i].rtt
    }

    /// When a query sent to upstream `i` is hedged if it has not been
    /// answered: its usual time ([`Rtt::usual`], at least
    /// [`HEDGE_MIN_DELAY`]). `None` while hedging is off, the budget is
    /// spent, or `i` has not been measured yet.
    pub fn hedge_delay(&self, i: usize) -> Option<Duration> {
        if self.hedge_credit < 100 {
            return None;
        }
        let rtt = self.health[i].rtt?;
        Some(rtt.usual().max(HEDGE_MIN_DELAY))
    }

    /// Spends a hedge from the budget; false if there is none left.
    pub fn take_hedge(&mut self) -> bool {
        let Some(left) = self.hedge_credit.checked_sub(100) else {
            return false;
        };
        self.hedge_credit = left;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_upstreams_are_tried_in_priority_order() {
        let mut s = Selector::new(3);
        assert_eq!(s.order(Instant::now()), vec![0, 1, 2]);
    }

    #[test]
    fn failed_upstream_goes_last_until_its_backoff_expires() {
        let t0 = Instant::now();
        let mut s = Selector::new(3);
        assert_eq!(s.failed(0, 1, t0), Some(BACKOFF_BASE));
        assert_eq!(s.order(t0), vec![1, 2, 0]);
        assert_eq!(s.order(t0 + BACKOFF_BASE), vec![0, 1, 2]);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let t0 = Instant::now();
        let mut s = Selector::new(1);
        let got: Vec<u64> = (1..10)
            .filter_map(|event| s.failed(0, event, t0))
            .map(|b| b.as_secs())
            .collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        s.succeeded(0);
        assert_eq!(s.failures(0), 0);
        assert_eq!(s.failed(0, 10, t0), Some(BACKOFF_BASE));
    }

    #[test]
    fn all_in_backoff_are_listed_least_recently_failed_first_and_that_one_may_connect() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(10);
        let mut s = Selector::new(2);
        s.failed(1, 1, t0);
        s.failed(0, 1, t1);
        assert_eq!(s.order(t1), vec![1, 0]);
        assert!(s.may_connect(1, t1), "no blackout");
        assert!(!s.may_connect(0, t1));
    }

    #[test]
    fn ready_before_traffic_unready_while_all_back_off_ready_when_one_expires() {
        let t0 = Instant::now();
        let mut s = Selector::new(2);
        assert!(s.reachable(t0), "nothing has failed before any traffic");
        assert!(!s.is_up(0, t0), "not known up before an answer");
        s.failed(0, 1, t0);
        assert!(s.reachable(t0), "upstream 1 is not in backoff");
        s.failed(1, 1, t0);
        assert!(!s.reachable(t0));
        assert!(s.reachable(t0 + BACKOFF_BASE), "a backoff expired");
    }

    #[test]
    fn up_after_an_answer_down_after_a_failure() {
        let t0 = Instant::now();
        let mut s = Selector::new(1);
        s.succeeded(0);
        assert!(s.is_up(0, t0));
        s.failed(0, 1, t0);
        assert!(!s.is_up(0, t0));
        assert!(
            !s.is_up(0, t0 + BACKOFF_BASE),
            "no answer since the failure"
        );
        s.succeeded(0);
        assert!(s.is_up(0, t0));
    }

    #[test]
    fn an_upstream_in_backoff_may_not_connect_while_another_is_ready() {
        let t0 = Instant::now();
        let mut s = Selector::new(2);
        s.failed(0, 1, t0);
        assert!(!s.may_connect(0, t0));
        assert!(s.may_connect(1, t0));
        assert!(s.may_connect(0, t0 + BACKOFF_BASE));
    }

    #[test]
    fn fifty_queries_lost_in_one_event_count_as_one_failure() {
        let t0 = Instant::now();
        let mut s = Selector::new(1);
        let counted = (0..50).filter(|_| s.failed(0, 7, t0).is_some()).count();
        assert_eq!(counted, 1);
        assert_eq!(s.failures(0), 1);
        // A late report from an older connection is not counted either.
        assert_eq!(s.failed(0, 6, t0), None);
        assert_eq!(s.failed(0, 8, t0), Some(2 * BACKOFF_BASE));
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn round_robin_starts_each_query_at_the_next_upstream() {
        let t0 = Instant::now();
        let mut s = Selector::with(3, Strategy::RoundRobin, 0);
        let firsts: Vec<usize> = (0..6).map(|_| s.order(t0)[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(s.order(t0), vec![0, 1, 2], "the rest follow in turn");
        assert_eq!(s.order(t0), vec![1, 2, 0]);
    }

    #[test]
    fn round_robin_skips_an_upstream_in_backoff_and_lists_it_last() {
        let t0 = Instant::now();
        let mut s = Selector::with(3, Strategy::RoundRobin, 0);
        s.failed(1, 1, t0);
        let orders: Vec<Vec<usize>> = (0..4).map(|_| s.order(t0)).collect();
        assert_eq!(
            orders,
            vec![vec![0, 2, 1], vec![2, 0, 1], vec![0, 2, 1], vec![2, 0, 1]]
        );
    }

    #[test]
    fn fastest_measures_the_unmeasured_first_then_orders_by_smoothed_rtt() {
        let t0 = Instant::now();
        let mut s = Selector::with(3, Strategy::Fastest, 0);
        s.observe_rtt(0, 30 * MS);
        s.observe_rtt(2, 10 * MS);
        assert_eq!(s.order(t0), vec![1, 2, 0], "1 is not measured yet");
        s.observe_rtt(1, 20 * MS);
        assert_eq!(s.order(t0), vec![2, 1, 0]);
    }

    #[test]
    fn fastest_probes_the_others_in_turn_one_query_in_probe_every() {
        let t0 = Instant::now();
        let mut s = Selector::with(3, Strategy::Fastest, 0);
        s.observe_rtt(0, 30 * MS);
        s.observe_rtt(1, 20 * MS);
        s.observe_rtt(2, 10 * MS);
        let firsts: Vec<usize> = (0..PROBE_EVERY * 4).map(|_| s.order(t0)[0]).collect();
        let probes: Vec<(usize, usize)> = firsts
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f != 2)
            .map(|(q, &f)| (q, f))
            .collect();
        let n = PROBE_EVERY as usize;
        assert_eq!(
            probes,
            vec![(n - 1, 1), (2 * n - 1, 0), (3 * n - 1, 1), (4 * n - 1, 0)]
        );
    }

    #[test]
    fn fastest_follows_a_slowing_upstream_and_a_backoff_overrides_speed() {
        let t0 = Instant::now();
        let mut s = Selector::with(2, Strategy::Fastest, 0);
        s.observe_rtt(0, 10 * MS);
        s.observe_rtt(1, 20 * MS);
        assert_eq!(s.order(t0), vec![0, 1]);
        for _ in 0..10 {
            s.observe_rtt(0, 50 * MS);
        }
        assert_eq!(s.order(t0), vec![1, 0]);
        s.failed(1, 1, t0);
        assert_eq!(s.order(t0), vec![0, 1], "in backoff: last, however fast");
    }

    #[test]
    fn srtt_and_rttvar_follow_rfc6298() {
        let mut s = Selector::new(1);
        s.observe_rtt(0, 100 * MS);
        assert_eq!(
            s.rtt(0),
            Some(Rtt {
                srtt: 100 * MS,
                rttvar: 50 * MS
            })
        );
        s.observe_rtt(0, 20 * MS);
        // rttvar = 3/4·50 + 1/4·|100−20| = 57.5; srtt = 7/8·100 + 1/8·20 = 90.
        let rtt = s.rtt(0).unwrap();
        assert_eq!(rtt.srtt, 90 * MS);
        assert_eq!(rtt.rttvar, Duration::from_micros(57_500));
        assert_eq!(rtt.usual(), Duration::from_millis(320));
    }

    #[test]
    fn a_lower_bound_counts_only_when_slower_than_the_smoothed_time() {
        let mut s = Selector::new(1);
        s.observe_at_least(0, 40 * MS);
        assert_eq!(s.rtt(0).map(|r| r.srtt), Some(40 * MS));
        s.observe_at_least(0, 10 * MS);
        assert_eq!(s.rtt(0).map(|r| r.srtt), Some(40 * MS), "no news");
        s.observe_at_least(0, 120 * MS);
        assert_eq!(s.rtt(0).map(|r| r.srtt), Some(50 * MS));
    }

    #[test]
    fn hedge_delay_is_the_usual_time_floored_and_needs_a_measurement_and_budget() {
        let t0 = Instant::now();
        let mut off = Selector::with(2, Strategy::Priority, 0);
        off.observe_rtt(0, 40 * MS);
        assert_eq!(off.hedge_delay(0), None, "hedging off");
        let mut s = Selector::with(2, Strategy::Priority, 5);
        assert_eq!(s.hedge_delay(0), None, "not measured");
        s.observe_rtt(0, 40 * MS);
        assert_eq!(s.hedge_delay(0), Some(120 * MS));
        s.observe_rtt(1, Duration::from_micros(300));
        assert_eq!(s.hedge_delay(1), Some(HEDGE_MIN_DELAY));
        for _ in 0..HEDGE_BURST {
            assert!(s.take_hedge());
        }
        assert!(!s.take_hedge());
        assert_eq!(s.hedge_delay(0), None, "budget spent");
        for _ in 0..20 {
            s.order(t0);
        }
        assert!(s.hedge_delay(0).is_some(), "20 queries at 5% pay one hedge");
        assert!(s.take_hedge());
        assert!(!s.take_hedge());
    }

    #[test]
    fn hedges_stay_within_their_percentage_plus_the_burst() {
        let t0 = Instant::now();
        for percent in [1, 5, 20] {
            let mut s = Selector::with(2, Strategy::Priority, percent);
            let queries = 10_000_u32;
            let hedges = (0..queries)
                .filter(|_| {
                    s.order(t0);
                    s.take_hedge()
                })
                .count() as u32;
            let paid = queries * percent / 100;
            assert!(
                (paid..=paid + HEDGE_BURST).contains(&hedges),
                "{percent}%: {hedges} hedges"
            );
        }
    }
}
