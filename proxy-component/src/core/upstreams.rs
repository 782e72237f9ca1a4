//! Upstream selection for high availability: priority order, with failed
//! upstreams put in exponential backoff and retried once it expires.
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
    /// backoff by priority, then those in backoff, soonest retry first. Every
    /// upstream is listed, so when all have failed recently a query still
    /// tries them rather than failing without trying.
    pub fn order(&self, now: Instant) -> Vec<usize> {
        let (mut ready, mut waiting): (Vec<usize>, Vec<usize>) =
            (0..self.health.len()).partition(|&i| self.is_ready(i, now));
        waiting.sort_by_key(|&i| self.health[i].retry_at);
        ready.append(&mut waiting);
        ready
    }

    /// True if upstream `i` is not in backoff at `now`.
    pub fn is_ready(&self, i: usize, now: Instant) -> bool {
        self.health[i].retry_at.is_none_or(|t| t <= now)
    }

    /// Upstream `i` answered: it is healthy again.
    pub fn succeeded(&mut self, i: usize) {
        self.health[i] = Health::default();
    }

    /// Upstream `i` failed (connect, handshake, authentication, deadline).
    /// Returns the backoff it is now in: 1 s, doubling per consecutive
    /// failure, capped at [`BACKOFF_MAX`].
    pub fn failed(&mut self, i: usize, now: Instant) -> Duration {
        let h = &mut self.health[i];
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        let exp = h.consecutive_failures.saturating_sub(1).min(16);
        let backoff = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
        h.retry_at = Some(now + backoff);
        backoff
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
        assert_eq!(s.failed(0, t0), BACKOFF_BASE);
        assert_eq!(s.order(t0), vec![1, 2, 0]);
        assert_eq!(s.order(t0 + BACKOFF_BASE), vec![0, 1, 2]);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let t0 = Instant::now();
        let mut s = Selector::new(1);
        let got: Vec<u64> = (0..9).map(|_| s.failed(0, t0).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        s.succeeded(0);
        assert_eq!(s.failures(0), 0);
        assert_eq!(s.failed(0, t0), BACKOFF_BASE);
    }

    #[test]
    fn all_in_backoff_are_still_listed_soonest_first() {
        let t0 = Instant::now();
        let mut s = Selector::new(2);
        s.failed(0, t0);
        s.failed(0, t0);
        s.failed(1, t0);
        assert_eq!(s.order(t0), vec![1, 0]);
    }
}
