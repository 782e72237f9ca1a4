//! The component's monotonic clock, read once per wake-up of its event
//! loop.
//!
//! Every `Instant::now()` in the component is wasi-libc's `clock_gettime`,
//! and that is a host call (`wasi:clocks/monotonic-clock.now`): tokio's
//! timer wheel reads the time several times per turn of the loop, and the
//! shell reads it for deadlines and latencies. At 300 queries a second that
//! was 10.8 of the 22.6 host calls a query (`make profile`); natively the
//! same read is a vDSO call of a few nanoseconds.
//!
//! So time advances per wake-up, as libuv's loop time does:
//! - the host's `readiness.wait` returns the time it woke, and reads
//!   return that reading ([`woke`]);
//! - the loop blocks until a deadline, not for a timeout: tokio computes
//!   its timeout from a read of this reading, and the wait set adds the
//!   timeout to the same reading ([`reading`]), so the deadline is the one
//!   tokio's timer asked for however stale the reading has grown, with no
//!   read of the host's clock before blocking (until 2026-12 there was
//!   one, two a forwarded query);
//! - one reading serves at most [`READS`] reads, then a read goes to the
//!   host and serves the next ones: a long turn sees time advance, and a
//!   loop that spins on the clock ends.
//!
//! A reading is therefore late by at most the work done since it was taken
//! within one turn of the loop (tens of microseconds at saturation, a few
//! at low load): a deadline set in a turn counts from the turn's reading,
//! and a latency is measured between wake-ups. The wall clock is read
//! afresh every time, so code that pairs the two (the windows' probe grid)
//! calls [`refresh`] first; without it, a grid point found from a reading
//! a millisecond late was a millisecond early (the spec test `workers::
//! both_workers_probe_a_saturated_upstream_on_the_same_wall_clock_grid`
//! caught it). A wait that does not go through the watch set (the
//! selector's fallback to wasi-libc's `poll`, which takes a timeout) has
//! its timeout corrected by a fresh read and returns no reading
//! ([`expire`]), so the first read after it goes to the host.
//!
//! This module defines `clock_gettime` for the component: wasi-libc's is a
//! weak alias of its `__clock_gettime`, which the linker then leaves to
//! this one; other clocks (the wall clock, for certificate validity) go to
//! wasi-libc's unchanged.

// A C symbol of wasi-libc's, replaced, and its original called.
#![cfg_attr(wasi_libc_descriptors, allow(unsafe_code))]

use std::cell::Cell;

/// Reads one reading serves, at most.
pub const READS: u32 = 64;

/// Where the next read of the monotonic clock comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// The host, whose reading then serves the next reads: the loop has
    /// not woken yet, or blocked outside the watch set.
    Host,
    /// `ns`, for `left` more reads (then the host, whose reading serves
    /// the next ones).
    Kept { ns: u64, left: u32 },
}

impl Reading {
    /// One read: its value (`None` when the host's read failed) and the
    /// state after it.
    fn read(self, host: impl FnOnce() -> Option<u64>) -> (Option<u64>, Reading) {
        match self {
            Reading::Kept { ns, left } if left > 0 => {
                (Some(ns), Reading::Kept { ns, left: left - 1 })
            }
            Reading::Kept { .. } | Reading::Host => match host() {
                Some(ns) => (
                    Some(ns),
                    Reading::Kept {
                        ns,
                        left: READS - 1,
                    },
                ),
                None => (None, self),
            },
        }
    }
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Host) };
}

/// The event loop woke at `now_ns` (`wasi:clocks/monotonic-clock`'s
/// reading): reads return it until the loop parks, or [`READS`] times.
pub fn woke(now_ns: u64) {
    READING.set(Reading::Kept {
        ns: now_ns,
        left: READS,
    });
}

/// The reading this wake-up's reads returned, if there is one (none before
/// the loop first woke, or after it blocked outside the watch set): what a
/// timeout tokio computed in this turn counts from, without a host call.
pub fn reading() -> Option<u64> {
    match READING.get() {
        Reading::Kept { ns, .. } => Some(ns),
        Reading::Host => None,
    }
}

/// The event loop blocks without the watch set, which brings no reading:
/// the next read goes to the host.
pub fn expire() {
    READING.set(Reading::Host);
}

/// The next read goes to the host (and its reading serves the ones after
/// it): for code that pairs the monotonic clock with the wall clock, which
/// is read afresh every time, so that the two readings are of one moment.
pub fn refresh() {
    if let Reading::Kept { ns, .. } = READING.get() {
        READING.set(Reading::Kept { ns, left: 0 });
    }
}

/// The monotonic clock in nanoseconds, `host` reading it when this wake-up's
/// reading does not serve.
#[cfg_attr(not(any(wasi_libc_descriptors, test)), allow(dead_code))]
fn now(host: impl FnOnce() -> Option<u64>) -> Option<u64> {
    let (ns, next) = READING.get().read(host);
    READING.set(next);
    ns
}

#[cfg(wasi_libc_descriptors)]
mod libc_clock {
    use std::ffi::c_int;

    use crate::core::duration::NANOS_PER_SEC;

    unsafe extern "C" {
        /// wasi-libc's `clock_gettime`.
        fn __clock_gettime(clock: *const u8, ts: *mut libc::timespec) -> c_int;
        /// wasi-libc's `CLOCK_MONOTONIC` is the address of this.
        static _CLOCK_MONOTONIC: u8;
    }

    /// `clock_gettime(3)`: `CLOCK_MONOTONIC` from this wake-up's reading
    /// ([`super::now`]), the other clocks from wasi-libc.
    ///
    /// # Safety
    ///
    /// As `clock_gettime(3)`: `ts` points to a writable `timespec`.
    #[unsafe(no_mangle)]
    pub(super) unsafe extern "C" fn clock_gettime(
        clock: *const u8,
        ts: *mut libc::timespec,
    ) -> c_int {
        if !std::ptr::eq(clock, &raw const _CLOCK_MONOTONIC) || ts.is_null() {
            // SAFETY: the caller's arguments, passed on.
            return unsafe { __clock_gettime(clock, ts) };
        }
        let host = || {
            // SAFETY: the caller's arguments, passed on; read back only
            // when wasi-libc wrote them.
            (unsafe { __clock_gettime(clock, ts) } == 0).then(|| {
                let ts = unsafe { &*ts };
                // Not `saturating_mul`: on wasm32 a u64's is a 128-bit
                // multiply, a libcall.
                crate::core::duration::whole(
                    u64::try_from(ts.tv_sec).unwrap_or(0),
                    NANOS_PER_SEC,
                    u64::try_from(ts.tv_nsec).unwrap_or(0),
                )
            })
        };
        match super::now(host) {
            Some(ns) => {
                let value = libc::timespec {
                    tv_sec: i64::try_from(ns / NANOS_PER_SEC).unwrap_or(i64::MAX),
                    // Under 10^9: fits.
                    tv_nsec: (ns % NANOS_PER_SEC) as _,
                };
                // SAFETY: non-null, and writable by the caller's contract.
                unsafe { ts.write(value) };
                0
            }
            // wasi-libc's failure, and its `errno`.
            None => -1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host clock that counts its reads.
    fn host(reads: &Cell<u32>, ns: u64) -> impl FnOnce() -> Option<u64> + '_ {
        move || {
            reads.set(reads.get() + 1);
            Some(ns)
        }
    }

    #[test]
    fn a_wake_up_serves_reads_until_the_loop_blocks_outside_the_set() {
        let reads = Cell::new(0);
        woke(1_000);
        for _ in 0..10 {
            assert_eq!(now(host(&reads, 2_000)), Some(1_000));
        }
        assert_eq!(reads.get(), 0);
        assert_eq!(reading(), Some(1_000));
        expire();
        assert_eq!(reading(), None);
        // The first read after asks the host, and its reading is kept.
        assert_eq!(now(host(&reads, 3_000)), Some(3_000));
        assert_eq!(now(host(&reads, 4_000)), Some(3_000));
        assert_eq!(reads.get(), 1);
        assert_eq!(reading(), Some(3_000));
        woke(5_000);
        assert_eq!(now(host(&reads, 6_000)), Some(5_000));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_reading_serves_at_most_reads_times_then_the_host_reads_again() {
        let reads = Cell::new(0);
        woke(1_000);
        for _ in 0..READS {
            assert_eq!(now(host(&reads, 2_000)), Some(1_000));
        }
        assert_eq!(reads.get(), 0);
        // The next read is the host's, and serves the next READS - 1.
        assert_eq!(now(host(&reads, 2_000)), Some(2_000));
        for _ in 1..READS {
            assert_eq!(now(host(&reads, 3_000)), Some(2_000));
        }
        assert_eq!(reads.get(), 1);
        assert_eq!(now(host(&reads, 3_000)), Some(3_000));
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn after_a_refresh_the_host_is_asked_once_and_its_reading_kept() {
        let reads = Cell::new(0);
        woke(1_000);
        assert_eq!(now(host(&reads, 2_000)), Some(1_000));
        refresh();
        assert_eq!(now(host(&reads, 3_000)), Some(3_000));
        assert_eq!(now(host(&reads, 4_000)), Some(3_000));
        assert_eq!(reads.get(), 1);
        // The reading a deadline counts from is the refreshed one.
        assert_eq!(reading(), Some(3_000));
        // Without a reading, a refresh changes nothing: the next read asks
        // the host anyway.
        expire();
        refresh();
        assert_eq!(now(host(&reads, 5_000)), Some(5_000));
        assert_eq!(now(host(&reads, 6_000)), Some(5_000));
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn before_the_first_wake_up_and_after_a_failed_read_the_host_is_asked() {
        expire();
        let reads = Cell::new(0);
        assert_eq!(now(host(&reads, 9)), Some(9));
        assert_eq!(reads.get(), 1);
        // A failed read keeps nothing.
        woke(1);
        for _ in 0..READS {
            now(|| None);
        }
        assert_eq!(now(|| None), None);
        assert_eq!(reading(), Some(1));
        assert_eq!(now(host(&reads, 11)), Some(11));
        assert_eq!(reads.get(), 2);
    }
}
