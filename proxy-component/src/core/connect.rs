//! Connecting to one upstream: when a new connection attempt may start. A
//! state machine fed `now` and outcomes; the shell performs the TCP connect
//! and the handshake.
//!
//! - **When**: an upstream out of backoff is connected to whenever it has no
//!   live connection (the shell opens one at a time). One in backoff is
//!   connected to only when the [`Selector`] allows it (every upstream is in
//!   backoff and it failed least recently: no blackout), and then at most
//!   once per [`BACKOFF_BASE`], so queries arriving in a burst at a dead
//!   upstream do not each open a connection (unbound #47: reconnect storms).
//!   Queries that waited for a failed attempt do not retry it themselves:
//!   the shell counts the failure in the selector before the next query
//!   gets its connect lock, and the upstream is then in backoff. A
//!   connection that was opened and closed by the server while they waited
//!   is no failure, and they open a new one.
//! - **A failed handshake** is the attempt's failure, counted like a refused
//!   connect. It is not retried with another configuration: there is one
//!   per upstream (`shell::tls::upstream_config`), with every suite, and an
//!   authentication failure (CA, name, pin) needs the operator, never a
//!   weaker fallback (the strict privacy profile of RFC 8310).

use std::time::Instant;

use super::upstreams::{BACKOFF_BASE, Selector};

/// The connect policy of one upstream.
#[derive(Clone, Debug, Default)]
pub struct ConnectPolicy {
    /// When the last attempt started.
    last_start: Option<Instant>,
}

impl ConnectPolicy {
    /// Whether upstream `upstream` (with this policy) may start a connection
    /// attempt at `now`, given the selector's view of every upstream (with
    /// the failures of earlier attempts already counted).
    pub fn may_start(&self, selector: &Selector, upstream: usize, now: Instant) -> bool {
        if selector.is_ready(upstream, now) {
            return true;
        }
        selector.may_connect(upstream, now)
            && self.last_start.is_none_or(|t| now >= t + BACKOFF_BASE)
    }

    /// An attempt starts at `now`.
    pub fn start(&mut self, now: Instant) {
        self.last_start = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether upstream 0 may connect at `now`.
    fn may(p: &ConnectPolicy, selector: &Selector, now: Instant) -> bool {
        p.may_start(selector, 0, now)
    }

    #[test]
    fn a_healthy_upstream_may_connect_whenever_it_has_no_connection() {
        let t0 = Instant::now();
        let selector = Selector::new(2);
        let mut p = ConnectPolicy::default();
        assert!(may(&p, &selector, t0));
        p.start(t0);
        // The connection closed soon after (the server's choice): connect
        // again.
        assert!(may(&p, &selector, t0 + Duration::from_millis(10)));
    }

    #[test]
    fn an_upstream_in_backoff_waits_while_another_is_ready() {
        let t0 = Instant::now();
        let mut selector = Selector::new(2);
        let mut p = ConnectPolicy::default();
        p.start(t0);
        selector.failed(0, 1, t0);
        assert!(!may(&p, &selector, t0 + Duration::from_millis(900)));
        assert!(may(&p, &selector, t0 + BACKOFF_BASE));
    }

    #[test]
    fn with_every_upstream_in_backoff_the_least_recently_failed_connects_once_per_backoff_base() {
        let t0 = Instant::now();
        let mut selector = Selector::new(1);
        let mut p = ConnectPolicy::default();
        p.start(t0);
        // Eight failures in a row: 60 s of backoff, yet no blackout.
        for event in 1..=8 {
            selector.failed(0, event, t0);
        }
        // The queries that waited for the failed attempt do not connect
        // again at once: reconnect storms are the top complaint (unbound #47).
        let t1 = t0 + Duration::from_millis(10);
        assert!(!may(&p, &selector, t1));
        let t2 = t0 + BACKOFF_BASE;
        assert!(may(&p, &selector, t2));
        p.start(t2);
        assert!(!may(&p, &selector, t2 + Duration::from_millis(999)));
        assert!(may(&p, &selector, t2 + BACKOFF_BASE));
    }

    #[test]
    fn rfc7766_a_connection_the_server_closed_while_a_query_waited_is_no_reason_to_give_up() {
        // A query waits for the connect lock; the query ahead of it opens a
        // connection, which the server answers on and closes (its choice,
        // RFC 7766 §6.2.3) before the waiting query gets the lock. Nothing
        // failed: the waiting query connects again rather than being sent
        // to the next upstream (or, with one upstream, answered SERVFAIL).
        let t0 = Instant::now();
        let selector = Selector::new(1);
        let mut p = ConnectPolicy::default();
        // The query began waiting at t0; the attempt ahead started after.
        p.start(t0 + Duration::from_millis(5));
        assert!(may(&p, &selector, t0 + Duration::from_millis(50)));
    }

    #[test]
    fn a_query_that_waited_for_a_failed_attempt_does_not_start_another() {
        // The query began waiting at t0; the attempt ahead of it started
        // after and failed, and the shell counted the failure before the
        // query got the lock.
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let t2 = t0 + Duration::from_millis(50);
        for upstreams in [1, 2] {
            let mut selector = Selector::new(upstreams);
            let mut p = ConnectPolicy::default();
            p.start(t1);
            selector.failed(0, 1, t2);
            assert!(!may(&p, &selector, t2), "{upstreams} upstreams");
        }
    }
}
