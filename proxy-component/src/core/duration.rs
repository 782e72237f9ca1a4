//! Durations as whole units in a `u64`, without the `u128` of
//! [`Duration::as_nanos`] and [`Duration::as_micros`]: wasm32 has no 128-bit
//! multiply, so each of those (and each `checked_mul`/`saturating_mul` of a
//! `u64`) is a call to `__multi3` in the component, about 70 instructions.
//! The event loop converts a few durations per query (its wait's timeout,
//! the clock's reading, the latency histograms).

use std::time::Duration;

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;
const MICROS_PER_SEC: u64 = 1_000_000;

/// `d` in nanoseconds; `u64::MAX` past about 584 years.
pub fn nanos(d: Duration) -> u64 {
    whole(d.as_secs(), NANOS_PER_SEC, u64::from(d.subsec_nanos()))
}

/// `d` in microseconds, rounded down; `u64::MAX` past about 584,000 years.
pub fn micros(d: Duration) -> u64 {
    whole(d.as_secs(), MICROS_PER_SEC, u64::from(d.subsec_micros()))
}

/// `d` times `n`, saturating at `u64::MAX` nanoseconds (about 584 years):
/// what `d.saturating_mul(n)` is wherever that fits, without its checked
/// 64-bit multiply (`__multi3` on wasm32). For the round-trip times'
/// smoothing, a few per answer.
pub fn times(d: Duration, n: u32) -> Duration {
    let n = u64::from(n);
    if n == 0 {
        return Duration::ZERO;
    }
    let ns = nanos(d);
    // At most `u64::MAX / n`, the product fits.
    Duration::from_nanos(if ns > u64::MAX / n { u64::MAX } else { ns * n })
}

/// `secs * per_sec + sub` (`sub < per_sec`), or `u64::MAX` when that does
/// not fit: one comparison, then a multiply that cannot overflow.
pub fn whole(secs: u64, per_sec: u64, sub: u64) -> u64 {
    if secs >= u64::MAX / per_sec {
        return u64::MAX;
    }
    secs * per_sec + sub
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_units_agree_with_std_wherever_they_fit() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(999_999_999),
            Duration::from_micros(1_500),
            Duration::from_secs(1),
            Duration::new(86_400 * 365, 123_456_789),
            Duration::new(u64::MAX / NANOS_PER_SEC - 1, 999_999_999),
        ] {
            assert_eq!(u128::from(nanos(d)), d.as_nanos(), "{d:?}");
            assert_eq!(u128::from(micros(d)), d.as_micros(), "{d:?}");
        }
    }

    #[test]
    fn times_agrees_with_std_wherever_it_fits() {
        let max = Duration::from_nanos(u64::MAX);
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(1_234),
            Duration::new(3, 999_999_999),
            Duration::new(86_400 * 365, 123_456_789),
        ] {
            for n in [0, 1, 3, 4, 7, 1_000] {
                let std = d.saturating_mul(n);
                if std.as_nanos() < u128::from(u64::MAX) {
                    assert_eq!(times(d, n), std, "{d:?} * {n}");
                } else {
                    assert_eq!(times(d, n), max, "{d:?} * {n} saturates");
                }
            }
        }
        assert_eq!(times(max, 2), max, "saturates");
        let edge = Duration::from_nanos(u64::MAX / 7);
        assert_eq!(times(edge, 7).as_nanos(), edge.as_nanos() * 7, "exact");
        assert_eq!(times(Duration::MAX, 1), max, "past u64 nanoseconds");
    }

    #[test]
    fn what_does_not_fit_saturates() {
        assert_eq!(
            nanos(Duration::from_secs(u64::MAX / NANOS_PER_SEC)),
            u64::MAX
        );
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(micros(Duration::MAX), u64::MAX);
        // The largest that fits in microseconds is still exact.
        let d = Duration::new(u64::MAX / MICROS_PER_SEC - 1, 999_999_000);
        assert_eq!(u128::from(micros(d)), d.as_micros());
    }
}
