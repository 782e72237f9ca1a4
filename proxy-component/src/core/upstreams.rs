//! Upstream selection for high availability: priority order, with failed
//! upstreams put in exponential backoff and retried once it expires.
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
//! Pure state over an injected clock (`now`), so the policy is tested without
//! sockets or sleeps.

use std::time::{Duration, Instant};

/// First backoff after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Backoff never grows past this, so a recovered upstream is back within a minute.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default)]
struct Health {
    consecutive_failures: u32,
    retry_at: Option<Instant>,
    last_failure: Option<Instant>,
    /// The newest event already counted (see [`Selector::failed`]).
    last_event: Option<u64>,
    /// It answered since its last counted failure.
    answered: bool,
}

/// Health of each upstream, indexed by priority (0 = most preferred).
#[derive(Clone, Debug)]
pub struct Selector {
    health: Vec<Health>,
}

impl Selector {
    /// A selector for `n` upstreams, all healthy.
    pub fn new(n: usize) -> Self {
        Self {
            health: vec![Health::default(); n],
        }
    }

    /// The order in which a query tries the upstreams at `now`: those not in
    /// backoff by priority, then those in backoff, least recently failed
    /// first. Every upstream is listed, so when all have failed recently a
    /// query still tries them rather than failing without trying.
    pub fn order(&self, now: Instant) -> Vec<usize> {
        let (mut ready, mut waiting): (Vec<usize>, Vec<usize>) =
            (0..self.health.len()).partition(|&i| self.is_ready(i, now));
        waiting.sort_by_key(|&i| self.health[i].last_failure);
        ready.append(&mut waiting);
        ready
    }

    /// Whether a new connection to upstream `i` may be opened at `now`: it
    /// is out of backoff, or every upstream is in backoff and `i` failed
    /// least recently (no blackout). The shell still opens at most one
    /// connection to an upstream at a time.
    pub fn may_connect(&self, i: usize, now: Instant) -> bool {
        self.is_ready(i, now)
            || (!(0..self.health.len()).any(|j| self.is_ready(j, now))
                && self.order(now).first() == Some(&i))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_upstreams_are_tried_in_priority_order() {
        let s = Selector::new(3);
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
}
