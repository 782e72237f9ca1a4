//! The timer of a worker's `readiness.wait`: one per instance, moved with
//! the component's deadline, not made for each wait.
//!
//! A wait that may block until a deadline races the watch set against a
//! timer of the worker's runtime. A `Sleep` made for each wait read the
//! clock to turn a timeout into a deadline, inserted itself in tokio's
//! timer wheel on its first poll and took itself out when dropped: at
//! 100 queries a second, one of each per wake-up. [`WaitTimer`] keeps one
//! `Sleep` for the instance's life and resets it only when the deadline
//! changed. A later deadline is then only recorded (tokio moves the entry
//! when its old slot comes due, without waking anyone), an unchanged one
//! costs nothing, and the deadline comes from the component's own clock
//! reading ([`Until::At`]), so no clock is read for it.
//!
//! Between waits the timer stays in the wheel, but the worker's runtime
//! only turns its driver when the component waits: the timer's wake, if it
//! comes, finds the next wait, which polls it again. A wait without a
//! deadline lets the timer go, so that an old deadline cannot wake a wait
//! that asked for none.

use std::pin::Pin;
use std::time::Instant;

use tokio::time::Sleep;

/// When a wait ends if nothing is ready first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Not before something is ready.
    Never,
    /// Now: look without waiting.
    Passed,
    /// At this instant of the worker's clock.
    At(Instant),
}

/// An instance's wait timer (see the module's notes).
#[derive(Debug, Default)]
pub struct WaitTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl WaitTimer {
    /// What `wait` found before `until` (nothing when the time came first).
    /// `wait` is polled first, so what is ready already is taken even when
    /// the time has come.
    pub async fn within(
        &mut self,
        until: Until,
        wait: impl Future<Output = wasmtime::Result<Vec<u32>>>,
    ) -> wasmtime::Result<Vec<u32>> {
        match until {
            Until::Never => {
                self.sleep = None;
                wait.await
            }
            // A look without waiting (the event loop has work): no timer.
            Until::Passed => Ok(futures::FutureExt::now_or_never(wait)
                .transpose()?
                .unwrap_or_default()),
            Until::At(at) => {
                let timer = self.arm(at);
                tokio::select! {
                    biased;
                    ready = wait => ready,
                    () = timer => Ok(Vec::new()),
                }
            }
        }
    }

    /// The timer, set to `at` and in the wheel, armed without waking the
    /// worker's own event loop ([`quietly`]).
    fn arm(&mut self, at: Instant) -> Pin<&mut Sleep> {
        let at = tokio::time::Instant::from_std(at);
        let timer = match self.sleep {
            Some(ref mut timer) => {
                if timer.deadline() != at {
                    // Earlier: tokio moves the entry now; later: it only
                    // records the deadline. A timer that fired is put back
                    // in the wheel. The same deadline, fired or not, is
                    // left as it is: a fired one is ready at once, as a
                    // new one for a passed deadline would be.
                    quietly(|| timer.as_mut().reset(at));
                }
                timer
            }
            ref mut none => {
                let timer = none.insert(Box::pin(tokio::time::sleep_until(at)));
                // A new timer enters the wheel at its first poll (a reset
                // one at its reset); the waker is the caller's from its
                // next poll.
                quietly(|| {
                    let _ = timer
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
                });
                timer
            }
        };
        timer.as_mut()
    }
}

/// Runs `f`, which puts a timer of the worker's runtime in its wheel,
/// without waking the worker's own event loop.
///
/// tokio wakes its driver when a timer is armed that expires before the
/// time the driver last blocked until: a `write(2)` to its eventfd, then an
/// `epoll_wait` that returns at once and a turn of the loop with nothing to
/// do. A `wait` is made on the worker's thread, whose runtime computes how
/// long to block from its timers just before it blocks, so that wake-up is
/// never needed: at 100 queries a second it came with about every other
/// query (the component's earliest deadline moves earlier as a query is
/// forwarded). `mio::quiet_self_wakes` (vendor/mio, patch 5) drops it, and
/// only it: nothing else runs in the scope.
fn quietly(f: impl FnOnce()) {
    mio::quiet_self_wakes(f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A wait for `until` that input (`key`, 10 ms in) ends first: it
    /// leaves the timer set to `until`, not reached.
    async fn input_first(timer: &mut WaitTimer, until: Instant, key: u32) {
        let input = timer.within(Until::At(until), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(vec![key])
        });
        assert_eq!(input.await.unwrap(), vec![key]);
    }

    /// How long a wait on nothing for `until` took.
    async fn nothing_until(timer: &mut WaitTimer, until: Until) -> Duration {
        let start = Instant::now();
        let ready = timer.within(until, std::future::pending()).await;
        assert_eq!(ready.unwrap(), Vec::<u32>::new(), "nothing was ready");
        start.elapsed()
    }

    #[test]
    fn a_wait_arms_its_timer_without_waking_its_own_event_loop() {
        use std::sync::Mutex;
        // When the worker's loop blocked and when it woke, in order.
        static TURNS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
        let mark = || TURNS.lock().unwrap().push(Instant::now());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(mark)
            .on_thread_unpark(mark)
            .build()
            .unwrap();
        rt.block_on(async {
            // The loop last blocked until a far deadline (another timer),
            // woken by another thread: a wait's nearer deadline is earlier
            // than what the driver last slept until.
            let _far = tokio::spawn(tokio::time::sleep(Duration::from_secs(30)));
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(()).unwrap();
            });
            rx.await.unwrap();

            let mut timer = WaitTimer::default();
            for round in 0..2 {
                // The first round makes the timer; the second arms it
                // again, after it fired, for a later deadline.
                let seen = TURNS.lock().unwrap().len();
                let until = Instant::now() + Duration::from_millis(50);
                let waited = nothing_until(&mut timer, Until::At(until)).await;
                // The wait still ends at its own deadline, not the far one.
                assert!(
                    (Duration::from_millis(50)..Duration::from_secs(5)).contains(&waited),
                    "round {round}: {waited:?}"
                );
                // Its first block lasted until about the deadline: arming
                // the timer did not wake the loop (before, the driver's own
                // eventfd ended that block at once, and a second one
                // waited).
                let turns = TURNS.lock().unwrap()[seen..].to_vec();
                assert!(turns.len() >= 2, "round {round}: {turns:?}");
                let first = turns[1] - turns[0];
                assert!(
                    first >= Duration::from_millis(30),
                    "round {round}: the first block lasted {first:?}"
                );
            }
        });
    }

    #[test]
    fn a_wait_returns_what_is_ready_before_its_deadline() {
        runtime().block_on(async {
            let mut timer = WaitTimer::default();
            let start = Instant::now();
            let until = Until::At(start + Duration::from_secs(10));
            let ready = timer
                .within(until, async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(vec![3, 1])
                })
                .await;
            assert_eq!(ready.unwrap(), vec![3, 1]);
            assert!(start.elapsed() < Duration::from_secs(5));
            // Already ready: taken even when the time has come.
            let now = timer.within(Until::Passed, async { Ok(vec![2]) }).await;
            assert_eq!(now.unwrap(), vec![2]);
            let past = Until::At(start);
            let now = timer.within(past, async { Ok(vec![4]) }).await;
            assert_eq!(now.unwrap(), vec![4]);
            // Not ready, and no time to wait: nothing.
            let look = timer.within(Until::Passed, std::future::pending()).await;
            assert_eq!(look.unwrap(), Vec::<u32>::new());
        });
    }

    #[test]
    fn the_one_timer_follows_the_deadline_later_and_earlier() {
        runtime().block_on(async {
            let mut timer = WaitTimer::default();
            let ms = Duration::from_millis;
            // A deadline the timer was set to, and a later one for the next
            // wait (the usual case: the timer is only told the new time).
            let t0 = Instant::now();
            input_first(&mut timer, t0 + ms(200), 1).await;
            let later = nothing_until(&mut timer, Until::At(t0 + ms(300))).await;
            assert!(
                t0.elapsed() >= ms(300),
                "ended before its deadline: {later:?}"
            );
            // Set to a deadline it did not reach, then to an earlier one:
            // it ends at the earlier.
            let t1 = Instant::now();
            input_first(&mut timer, t1 + ms(500), 2).await;
            let earlier = nothing_until(&mut timer, Until::At(t1 + ms(60))).await;
            assert!(t1.elapsed() >= ms(60), "{earlier:?}");
            assert!(
                t1.elapsed() < ms(450),
                "waited for the old deadline: {earlier:?}"
            );
            // The deadline it fired at, asked again: at once.
            let again = nothing_until(&mut timer, Until::At(t1 + ms(60))).await;
            assert!(again < ms(50), "{again:?}");
            // A timer that fired, set to a new deadline: back in the wheel
            // by its reset alone (no poll of its own), it fires at that one.
            let t2 = Instant::now();
            let fired =
                tokio::time::timeout(ms(2_000), nothing_until(&mut timer, Until::At(t2 + ms(40))))
                    .await
                    .expect("a reset timer that fired before fires again");
            assert!(fired >= ms(40), "{fired:?}");
        });
    }
}
