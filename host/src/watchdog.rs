//! Keeping the component alive and bounded: a CPU watchdog fed by the
//! component's heartbeat, and the restart policy after a trap.
//!
//! The component's `run` never returns, so a plain epoch deadline would kill
//! a healthy proxy. Instead the engine's epoch advances every [`TICK`] (a
//! thread outside the runtime, see [`Ticker`]), each time wasm code runs past
//! the deadline the store's epoch callback asks [`Watchdog::on_tick`], and
//! each turn of the component's event loop is a heartbeat: its
//! `readiness.wait` counts as one (or, for a wait through `wasi:io/poll`,
//! its `watchdog.heartbeat` call). An instance that runs
//! [`SILENT_TICKS_LIMIT`] ticks of wasm in a row without a heartbeat is
//! stuck in a loop (a bug, or a query crafted to trigger one) and is
//! trapped, then restarted by [`Restarts`]. No timer beats for it: an idle
//! instance runs no wasm, so it needs no heartbeat, and is not woken for one.
//!
//! Callbacks fire only while wasm runs, so an instance that sat in a host
//! call (waiting for traffic) for a long time is not killed when it returns:
//! what counts is consecutive callbacks without a heartbeat, not wall time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::Engine;

/// How often the engine's epoch advances.
pub const TICK: Duration = Duration::from_millis(100);

/// Epoch callbacks in a row without a heartbeat after which the instance is
/// trapped: about a second of running wasm.
pub const SILENT_TICKS_LIMIT: u32 = 10;

/// Heartbeat accounting of one instance, consulted at each epoch callback.
#[derive(Debug, Default)]
pub struct Watchdog {
    /// Heartbeats seen at the previous callback.
    seen: u64,
    /// Callbacks in a row that saw no new heartbeat.
    silent: u32,
}

/// What the epoch callback does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the instance run on.
    Continue,
    /// Trap it: it ran this many ticks of wasm without a heartbeat.
    Stuck(u32),
}

impl Watchdog {
    /// One epoch callback; `heartbeats` is the instance's heartbeat count.
    pub fn on_tick(&mut self, heartbeats: u64) -> Verdict {
        if heartbeats != self.seen {
            self.seen = heartbeats;
            self.silent = 0;
        }
        self.silent += 1;
        if self.silent > SILENT_TICKS_LIMIT {
            Verdict::Stuck(self.silent - 1)
        } else {
            Verdict::Continue
        }
    }
}

/// The error an instance is trapped with when its heartbeat stops.
#[derive(Debug, thiserror::Error)]
#[error(
    "the component ran {ticks} epoch ticks of {tick_ms} ms without a heartbeat: \
     its event loop is stuck"
)]
pub struct Stuck {
    /// Ticks of running wasm without a heartbeat.
    pub ticks: u32,
    /// Length of a tick in milliseconds.
    pub tick_ms: u128,
}

impl Stuck {
    /// The error for `ticks` silent ticks.
    pub fn new(ticks: u32) -> Self {
        Self {
            ticks,
            tick_ms: TICK.as_millis(),
        }
    }
}

/// Advances an engine's epoch every [`TICK`] on its own thread (so a wasm
/// instance hogging a runtime worker cannot delay it), until dropped.
#[derive(Debug)]
pub struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    /// Starts ticking `engine`.
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// First delay before restarting a trapped instance.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The delay doubles after each trap up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An instance that ran this long before trapping resets the delay.
pub const HEALTHY_UPTIME: Duration = Duration::from_secs(60);
/// An instance that ran this long has served, heartbeat or not.
pub const SERVED_UPTIME: Duration = Duration::from_secs(5);
/// Traps in a row of instances that never served, in a process where none
/// ever served, after which the process gives up: the build or the
/// configuration is broken, and restarting cannot fix it.
pub const GIVE_UP_AFTER: u32 = 3;

/// How one trapped instance lived.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    /// Its heartbeats (its event loop turned, or waited, this many times).
    pub heartbeats: u64,
    /// Time from instantiation to the trap.
    pub uptime: Duration,
}

impl Life {
    /// Whether the instance got as far as serving.
    pub fn served(&self) -> bool {
        self.heartbeats > 0 || self.uptime >= SERVED_UPTIME
    }
}

/// What to do after a trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start a new instance after this delay.
    RestartAfter(Duration),
    /// Exit the process: no instance ever served.
    GiveUp,
}

/// The restart policy. Once any instance has served, a trap is always
/// followed by a restart, with a backoff: giving up after N traps would hand
/// anyone who can make the component trap (a crafted query, say) a switch
/// that turns the proxy off. Only a component that never gets as far as
/// serving makes the process exit.
#[derive(Debug)]
pub struct Restarts {
    backoff: Duration,
    ever_served: bool,
    unserved_in_a_row: u32,
}

impl Default for Restarts {
    fn default() -> Self {
        Self {
            backoff: FIRST_BACKOFF,
            ever_served: false,
            unserved_in_a_row: 0,
        }
    }
}

impl Restarts {
    /// Decides what follows the trap of an instance that lived `life`.
    pub fn after_trap(&mut self, life: Life) -> Next {
        if life.served() {
            self.ever_served = true;
            self.unserved_in_a_row = 0;
        } else {
            self.unserved_in_a_row += 1;
        }
        if !self.ever_served && self.unserved_in_a_row >= GIVE_UP_AFTER {
            return Next::GiveUp;
        }
        if life.uptime >= HEALTHY_UPTIME {
            self.backoff = FIRST_BACKOFF;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Next::RestartAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeating_instance_is_never_stuck() {
        let mut w = Watchdog::default();
        for beat in 1..1000 {
            assert_eq!(w.on_tick(beat), Verdict::Continue);
            // Two callbacks per heartbeat: still fine.
            assert_eq!(w.on_tick(beat), Verdict::Continue);
        }
    }

    #[test]
    fn an_instance_without_heartbeat_is_stuck_after_the_limit() {
        let mut w = Watchdog::default();
        for _ in 0..SILENT_TICKS_LIMIT {
            assert_eq!(w.on_tick(0), Verdict::Continue);
        }
        assert_eq!(w.on_tick(0), Verdict::Stuck(SILENT_TICKS_LIMIT));
    }

    #[test]
    fn an_instance_whose_heartbeat_stops_is_stuck_a_limit_later() {
        let mut w = Watchdog::default();
        for beat in 1..=5 {
            assert_eq!(w.on_tick(beat), Verdict::Continue);
        }
        for _ in 0..SILENT_TICKS_LIMIT - 1 {
            assert_eq!(w.on_tick(5), Verdict::Continue);
        }
        assert_eq!(w.on_tick(5), Verdict::Stuck(SILENT_TICKS_LIMIT));
    }

    #[test]
    fn a_long_wait_in_a_host_call_counts_as_one_tick() {
        // The engine's epoch moved on by hundreds of ticks while the guest
        // waited in `poll`; wasmtime calls back once when it resumes, and the
        // wait it returns from was a heartbeat.
        let mut w = Watchdog::default();
        assert_eq!(w.on_tick(1), Verdict::Continue);
        assert_eq!(w.on_tick(1), Verdict::Continue, "the one call on resume");
        assert_eq!(w.on_tick(2), Verdict::Continue);
    }

    fn trap(heartbeats: u64, uptime_ms: u64) -> Life {
        Life {
            heartbeats,
            uptime: Duration::from_millis(uptime_ms),
        }
    }

    #[test]
    fn a_served_instance_is_restarted_forever_with_doubling_backoff() {
        let mut r = Restarts::default();
        let mut delays = Vec::new();
        for _ in 0..20 {
            match r.after_trap(trap(1, 10)) {
                Next::RestartAfter(d) => delays.push(d.as_millis()),
                Next::GiveUp => panic!("gave up on a component that served"),
            }
        }
        assert_eq!(
            &delays[..10],
            &[200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        assert!(delays.iter().all(|d| *d <= 30_000));
    }

    #[test]
    fn after_serving_even_unserved_traps_never_give_up() {
        let mut r = Restarts::default();
        assert!(matches!(r.after_trap(trap(3, 100)), Next::RestartAfter(_)));
        for _ in 0..10 {
            assert!(matches!(r.after_trap(trap(0, 10)), Next::RestartAfter(_)));
        }
    }

    #[test]
    fn an_instance_that_never_served_makes_the_process_give_up() {
        let mut r = Restarts::default();
        for _ in 1..GIVE_UP_AFTER {
            assert!(matches!(r.after_trap(trap(0, 10)), Next::RestartAfter(_)));
        }
        assert_eq!(r.after_trap(trap(0, 10)), Next::GiveUp);
    }

    #[test]
    fn a_long_run_without_heartbeat_still_counts_as_served() {
        let mut r = Restarts::default();
        for _ in 0..10 {
            assert!(matches!(
                r.after_trap(trap(0, SERVED_UPTIME.as_millis() as u64)),
                Next::RestartAfter(_)
            ));
        }
    }

    #[test]
    fn a_healthy_period_resets_the_backoff() {
        let mut r = Restarts::default();
        for _ in 0..6 {
            r.after_trap(trap(1, 10));
        }
        assert_eq!(
            r.after_trap(trap(1, HEALTHY_UPTIME.as_millis() as u64)),
            Next::RestartAfter(FIRST_BACKOFF)
        );
        assert_eq!(
            r.after_trap(trap(1, 10)),
            Next::RestartAfter(FIRST_BACKOFF * 2)
        );
    }
}
