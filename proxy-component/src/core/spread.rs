//! Which of an upstream's connections a query goes on, and when one more is
//! opened.
//!
//! One connection carries everything while it keeps up: connections are
//! reused and queries pipelined on them (RFC 7858 §3.4, RFC 7766 §6.2.1.1),
//! which spares the server handshakes and slots and lets one TLS record
//! carry many queries. But a server serves one connection from one thread
//! (unbound, dnsdist and knot-resolver all do), so one connection caps what
//! the proxy gets from a server at one of its cores, and a connection with
//! hundreds of queries in flight is a queue in front of it. A connection
//! with [`SATURATED`] queries in flight is saturated: when every connection
//! to an upstream is, one more is opened, up to [`MAX_CONNECTIONS`].
//!
//! Queries go to the oldest connection that is not saturated, not to the
//! least loaded: when the load falls, the newer connections get nothing,
//! reach their idle timeout and close, and the proxy is back to one. While
//! the one more is being opened, the queries that find every connection
//! saturated go on the least loaded rather than wait for it.

/// Queries in flight at which a connection counts as saturated: well past
/// what a busy client population keeps in flight at moderate load (a
/// thousand queries a second at a 20 ms round trip is 20), and as many as
/// dnsdist's default `maxInFlight` for its own pipelined backends.
pub const SATURATED: usize = 100;

/// The most connections to one upstream (per worker). Few: each is a slot
/// on the server and a handshake, and the second already puts a second of
/// the server's threads to work.
pub const MAX_CONNECTIONS: usize = 2;

/// Where a query goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// On this connection (an index into the loads given).
    Use(usize),
    /// Open one more; until it is up, use `meanwhile` if there is one
    /// (every connection is saturated) or wait for it (there is none).
    Open {
        /// The least loaded connection, if any.
        meanwhile: Option<usize>,
    },
}

/// The connection for the next query, given the queries in flight on each
/// live connection to the upstream, oldest first.
pub fn pick(inflight: &[usize]) -> Pick {
    pick_with(inflight, SATURATED, MAX_CONNECTIONS)
}

fn pick_with(inflight: &[usize], saturated: usize, max: usize) -> Pick {
    if let Some(first) = inflight.iter().position(|&n| n < saturated) {
        return Pick::Use(first);
    }
    let least = inflight
        .iter()
        .enumerate()
        .min_by_key(|&(_, n)| *n)
        .map(|(i, _)| i);
    match least {
        Some(least) if inflight.len() >= max => Pick::Use(least),
        meanwhile => Pick::Open { meanwhile },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_no_connection_one_is_opened_and_waited_for() {
        assert_eq!(pick(&[]), Pick::Open { meanwhile: None });
    }

    #[test]
    fn rfc7858_one_connection_carries_everything_until_it_is_saturated() {
        for n in [0, 1, 20, SATURATED - 1] {
            assert_eq!(pick(&[n]), Pick::Use(0), "{n} in flight");
        }
        assert_eq!(pick(&[SATURATED]), Pick::Open { meanwhile: Some(0) });
    }

    #[test]
    fn the_oldest_unsaturated_connection_is_used_so_the_newer_one_can_go_idle() {
        // The second is the less loaded, but the first has room: the second
        // gets nothing and reaches its idle timeout once the load falls.
        assert_eq!(pick(&[60, 5]), Pick::Use(0));
        assert_eq!(pick(&[SATURATED, 5]), Pick::Use(1));
        assert_eq!(pick(&[SATURATED + 40, SATURATED - 1]), Pick::Use(1));
    }

    #[test]
    fn at_the_cap_the_least_loaded_takes_the_query() {
        assert_eq!(pick(&[SATURATED + 7, SATURATED + 3]), Pick::Use(1));
        assert_eq!(pick(&[SATURATED + 3, SATURATED + 7]), Pick::Use(0));
    }

    #[test]
    fn more_connections_open_only_as_each_saturates() {
        assert_eq!(pick_with(&[4, 4], 4, 3), Pick::Open { meanwhile: Some(0) });
        assert_eq!(pick_with(&[5, 4, 4], 4, 3), Pick::Use(1));
        assert_eq!(pick_with(&[5, 4, 3], 4, 3), Pick::Use(2));
        assert_eq!(pick_with(&[9, 9], 4, 1), Pick::Use(0));
    }
}
