//! A wake-up for the one task that waits on it.
//!
//! The shell's loops wake one another through flags of this kind: a
//! connection's reader and writer, a TCP client's loop, a UDP listener's
//! flushing task. Each has one waiter, on one thread. tokio's `Notify`
//! serves any number of waiters on any thread: every `notified()` counts
//! `notify_waiters` calls, its first poll enters a list of waiters under a
//! lock, and its drop leaves it again, once a turn of a `select!` whichever
//! branch won. [`Signal`] keeps a flag and the waiter's waker, kept across
//! waits so that a task waiting again does not clone it anew.
//!
//! [`Signal::notify`] is `notify_one`: what it sets stays set until the
//! waiter takes it, so a notification sent while nobody waits is not lost,
//! and several before the wait are one. Only a wait that is pending is
//! woken: a task that stopped waiting (its `select!` took another branch)
//! is not polled for nothing.
//!
//! One waiter at a time: a second task waiting on the same signal would
//! take the first one's place, and the first would not be woken.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A flag one task waits on (see the module's notes).
#[derive(Default)]
pub struct Signal {
    /// Notified, and not yet taken by a wait.
    set: Cell<bool>,
    /// A wait is pending: [`Signal::notify`] wakes `waker`.
    waiting: Cell<bool>,
    /// The waiter's waker, kept between waits.
    waker: Cell<Option<Waker>>,
}

impl Signal {
    /// Sets the flag, and wakes the waiter if it waits.
    pub fn notify(&self) {
        self.set.set(true);
        if self.waiting.replace(false)
            && let Some(waker) = self.waker.take()
        {
            // The shell's wakers (tokio's tasks) only queue their task:
            // nothing runs while the waker is out of its cell.
            waker.wake_by_ref();
            self.waker.set(Some(waker));
        }
    }

    /// Completes once the flag is set, and takes it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { signal: self }
    }
}

/// The wait of [`Signal::notified`].
pub struct Notified<'a> {
    signal: &'a Signal,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let signal = self.signal;
        if signal.set.replace(false) {
            signal.waiting.set(false);
            return Poll::Ready(());
        }
        keep_waker(&signal.waker, cx);
        signal.waiting.set(true);
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        self.signal.waiting.set(false);
    }
}

/// Keeps the waker of `cx` in `cell`, cloning it only when it would not
/// wake the task the one kept wakes (a task waiting again keeps its own).
pub(crate) fn keep_waker(cell: &Cell<Option<Waker>>, cx: &Context<'_>) {
    match cell.take() {
        Some(w) if w.will_wake(cx.waker()) => cell.set(Some(w)),
        _ => cell.set(Some(cx.waker().clone())),
    }
}

/// A waker that counts its wakes, for the tests of the shell's one-thread
/// wake-ups.
#[cfg(test)]
pub(crate) fn counting_waker() -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, Waker) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(Arc<AtomicUsize>);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    let count = Arc::new(AtomicUsize::new(0));
    (count.clone(), Waker::from(Arc::new(Count(count))))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn poll(wait: &mut Notified<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(wait).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_notification_before_the_wait_is_kept_and_several_are_one() {
        let (_, waker) = counting_waker();
        let signal = Signal::default();
        signal.notify();
        signal.notify();
        assert_eq!(poll(&mut signal.notified(), &waker), Poll::Ready(()));
        assert_eq!(poll(&mut signal.notified(), &waker), Poll::Pending);
    }

    #[test]
    fn a_pending_wait_is_woken_once_and_then_completes() {
        let (count, waker) = counting_waker();
        let signal = Signal::default();
        let mut wait = signal.notified();
        assert_eq!(poll(&mut wait, &waker), Poll::Pending);
        signal.notify();
        signal.notify();
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(poll(&mut wait, &waker), Poll::Ready(()));
    }

    #[test]
    fn a_dropped_wait_is_not_woken_and_its_notification_waits_for_the_next() {
        let (count, waker) = counting_waker();
        let signal = Signal::default();
        let mut wait = signal.notified();
        assert_eq!(poll(&mut wait, &waker), Poll::Pending);
        drop(wait);
        signal.notify();
        assert_eq!(count.load(Ordering::Relaxed), 0);
        assert_eq!(poll(&mut signal.notified(), &waker), Poll::Ready(()));
    }

    #[test]
    fn the_latest_waker_is_the_one_woken() {
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        let signal = Signal::default();
        let mut wait = signal.notified();
        assert_eq!(poll(&mut wait, &first_waker), Poll::Pending);
        assert_eq!(poll(&mut wait, &second_waker), Poll::Pending);
        signal.notify();
        assert_eq!(first.load(Ordering::Relaxed), 0);
        assert_eq!(second.load(Ordering::Relaxed), 1);
    }

    /// The loops' use: a task waiting on the signal, on a real runtime,
    /// woken by another task each time it is notified.
    #[test]
    fn wakes_a_task_of_a_current_thread_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build_local(tokio::runtime::LocalOptions::default())
            .expect("a runtime without drivers");
        rt.block_on(async {
            let signal = std::rc::Rc::new(Signal::default());
            let turns = std::rc::Rc::new(Cell::new(0));
            let waiter = tokio::task::spawn_local({
                let (signal, turns) = (signal.clone(), turns.clone());
                async move {
                    loop {
                        signal.notified().await;
                        turns.set(turns.get() + 1);
                    }
                }
            });
            for turn in 1..=3 {
                signal.notify();
                for _ in 0..100 {
                    if turns.get() == turn {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(turns.get(), turn, "the waiter was not woken");
            }
            waiter.abort();
        });
    }
}
