//! One timer for a loop whose deadline moves as it turns: an upstream
//! connection's reader, a TCP client's loop.
//!
//! Those loops wait in a `select!` on their input and on the core's
//! deadline, and the deadline moves with nearly every turn (a query
//! written starts its stall timer, an answer read restarts the idle one).
//! A `sleep_until` made in each turn was a timer registered in tokio's
//! wheel when first polled and taken out of it when dropped, per read,
//! with the instant's conversion to the wheel's ticks each time. Kept
//! across turns, the timer is left alone while the deadline stays, and
//! moved with [`Sleep::reset`] when it changes (to a later time, tokio
//! only records it: no wheel update). The saving is small: about 200
//! component instructions of a paced miss's 40,000 (`bench/profile.sh
//! --rate 100`), since a reset still converts the deadline.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::time::{Instant, Sleep};

/// A timer that fires once at the deadline last set; pending while none
/// is set.
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// The deadline the timer is set to, until it fires.
    armed: Option<Instant>,
}

/// Unset.
impl Default for Deadline {
    fn default() -> Self {
        Self {
            // Never polled until `set` gives it a deadline.
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }
}

impl Deadline {
    /// Fires at `at` (at once if it has passed), or never with `None`. The
    /// same deadline again changes nothing, unless the timer fired for it
    /// since: then it fires again.
    pub fn set(&mut self, at: Option<Instant>) {
        if at != self.armed {
            if let Some(at) = at {
                self.sleep.as_mut().reset(at);
            }
            self.armed = at;
        }
    }

    /// Resolves when the deadline set comes, and leaves the timer unset.
    pub fn fired(&mut self) -> Fired<'_> {
        Fired(self)
    }
}

/// [`Deadline::fired`].
pub struct Fired<'a>(&'a mut Deadline);

impl Future for Fired<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = &mut *self.0;
        // Unset: `set` is called before the next wait, from the loop.
        if deadline.armed.is_none() {
            return Poll::Pending;
        }
        ready!(deadline.sleep.as_mut().poll(cx));
        deadline.armed = None;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Whether the timer fires within a look, without waiting.
    fn fires_now(deadline: &mut Deadline) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut deadline.fired()).poll(&mut cx).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_set_and_then_is_unset() {
        let mut deadline = Deadline::default();
        let start = Instant::now();
        deadline.set(Some(start + 10 * MS));
        assert!(!fires_now(&mut deadline));
        deadline.fired().await;
        assert_eq!(Instant::now(), start + 10 * MS);
        // Fired: unset, so a loop that sets nothing new does not spin.
        assert!(!fires_now(&mut deadline));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!fires_now(&mut deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_deadline_again_fires_again_once_it_has_fired() {
        let mut deadline = Deadline::default();
        let at = Instant::now() + 5 * MS;
        deadline.set(Some(at));
        deadline.fired().await;
        deadline.set(Some(at));
        assert!(fires_now(&mut deadline), "a passed deadline fires at once");
    }

    #[tokio::test(start_paused = true)]
    async fn moves_later_and_earlier_with_the_deadline() {
        let mut deadline = Deadline::default();
        let start = Instant::now();
        deadline.set(Some(start + 10 * MS));
        assert!(!fires_now(&mut deadline), "registered in the wheel");
        deadline.set(Some(start + 30 * MS));
        tokio::time::advance(20 * MS).await;
        assert!(
            !fires_now(&mut deadline),
            "moved later: not at the old time"
        );
        deadline.set(Some(start + 25 * MS));
        tokio::time::advance(4 * MS).await;
        assert!(!fires_now(&mut deadline));
        tokio::time::advance(MS).await;
        assert!(fires_now(&mut deadline), "moved earlier: fires then");
        assert_eq!(Instant::now(), start + 25 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn unset_never_fires() {
        let mut deadline = Deadline::default();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!fires_now(&mut deadline));
        deadline.set(Some(Instant::now() + MS));
        deadline.set(None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!fires_now(&mut deadline));
    }
}
