//! The attempt policy of one query: which upstream to send it to next, how
//! long that attempt may take, whether a lost query is sent again, and when
//! to give up. A state machine fed outcomes and `now`; the shell performs the
//! attempts.
//!
//! - Upstreams are tried in the order the [`Selector`](super::upstreams::Selector)
//!   gives (priority, with upstreams in backoff last).
//! - One attempt gets at most `upstream_timeout`, and never past the query's
//!   deadline (`query_timeout`), so a hung upstream costs one attempt, not
//!   the query.
//! - A query lost because its connection closed after answering others is
//!   sent again on a new connection to the same upstream, for as long as the
//!   deadline allows: a server closing connections is not failing (RFC 7766
//!   §6.2.3). A connection that dies without answering anything is a
//!   failure; the query is sent again at most [`MAX_FRUITLESS_RESENDS`] times
//!   before the next upstream is tried.
//! - Anything else (connect, TLS, authentication, a timeout, an answer that
//!   does not match the question) moves on to the next upstream.
//!
//! Later strategies (round robin, fastest, hedging) change the order the
//! selector gives or add a second concurrent attempt; the per-attempt rules
//! stay these.

use std::time::{Duration, Instant};

/// Resends on connections that died without answering anything, per
/// upstream and query.
pub const MAX_FRUITLESS_RESENDS: u32 = 2;

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer to the question came back.
    Answered,
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
            Self::Answered => false,
            Self::Lost { progress } => !progress,
            Self::TimedOut | Self::NoConnection | Self::Mismatch => true,
        }
    }
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send to `upstream`, waiting at most `budget` for the answer.
    Try {
        /// Index of the upstream, in configuration order.
        upstream: usize,
        /// The attempt's time.
        budget: Duration,
    },
    /// The deadline passed or every upstream was tried: answer SERVFAIL.
    GiveUp,
}

/// The attempts of one query.
#[derive(Debug)]
pub struct Attempts {
    order: Vec<usize>,
    pos: usize,
    deadline: Instant,
    upstream_timeout: Duration,
    fruitless_resends: u32,
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
            deadline: now + query_timeout,
            upstream_timeout,
            fruitless_resends: 0,
        }
    }

    /// The query's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The next attempt at `now`.
    pub fn next(&self, now: Instant) -> Next {
        let left = self.deadline.saturating_duration_since(now);
        match self.order.get(self.pos) {
            Some(&upstream) if !left.is_zero() => Next::Try {
                upstream,
                budget: left.min(self.upstream_timeout),
            },
            _ => Next::GiveUp,
        }
    }

    /// Records how the current attempt ended.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Answered => self.pos = self.order.len(),
            Outcome::Lost { progress: true } => {}
            Outcome::Lost { progress: false } if self.fruitless_resends < MAX_FRUITLESS_RESENDS => {
                self.fruitless_resends += 1;
            }
            _ => {
                self.pos += 1;
                self.fruitless_resends = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_secs(4);
    const U: Duration = Duration::from_millis(1500);

    fn attempts(order: Vec<usize>, t0: Instant) -> Attempts {
        Attempts::new(order, t0, Q, U)
    }

    #[test]
    fn upstreams_are_tried_in_order_each_within_the_upstream_timeout() {
        let t0 = Instant::now();
        let mut a = attempts(vec![1, 0], t0);
        assert_eq!(
            a.next(t0),
            Next::Try {
                upstream: 1,
                budget: U
            }
        );
        a.record(Outcome::TimedOut);
        assert_eq!(
            a.next(t0 + U),
            Next::Try {
                upstream: 0,
                budget: U
            }
        );
        a.record(Outcome::NoConnection);
        assert_eq!(a.next(t0 + U), Next::GiveUp);
    }

    #[test]
    fn the_last_attempt_gets_only_what_is_left_of_the_deadline() {
        let t0 = Instant::now();
        let a = attempts(vec![0], t0);
        assert_eq!(
            a.next(t0 + Duration::from_secs(3)),
            Next::Try {
                upstream: 0,
                budget: Duration::from_secs(1)
            }
        );
        assert_eq!(a.next(t0 + Q), Next::GiveUp);
    }

    #[test]
    fn rfc7766_queries_lost_to_a_closing_server_are_resent_until_the_deadline() {
        let t0 = Instant::now();
        let mut a = attempts(vec![0, 1], t0);
        for i in 0..100 {
            a.record(Outcome::Lost { progress: true });
            let now = t0 + Duration::from_millis(i * 10);
            assert!(matches!(a.next(now), Next::Try { upstream: 0, .. }));
        }
        assert_eq!(a.next(t0 + Q), Next::GiveUp);
    }

    #[test]
    fn a_connection_that_never_answers_is_resent_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let mut a = attempts(vec![0, 1], t0);
        for _ in 0..MAX_FRUITLESS_RESENDS {
            a.record(Outcome::Lost { progress: false });
            assert!(matches!(a.next(t0), Next::Try { upstream: 0, .. }));
        }
        a.record(Outcome::Lost { progress: false });
        assert!(matches!(a.next(t0), Next::Try { upstream: 1, .. }));
    }

    #[test]
    fn an_answer_ends_the_attempts() {
        let t0 = Instant::now();
        let mut a = attempts(vec![0, 1], t0);
        a.record(Outcome::Answered);
        assert_eq!(a.next(t0), Next::GiveUp);
    }

    #[test]
    fn only_real_failures_count_against_an_upstream() {
        assert!(!Outcome::Answered.is_failure());
        assert!(!Outcome::Lost { progress: true }.is_failure());
        assert!(Outcome::Lost { progress: false }.is_failure());
        assert!(Outcome::TimedOut.is_failure());
        assert!(Outcome::NoConnection.is_failure());
        assert!(Outcome::Mismatch.is_failure());
    }
}
