//! An answer's way back to the query waiting for it, on one thread.
//!
//! An upstream connection's reader hands each answer to the query that
//! waits for it. tokio's `oneshot` does that between threads: its state is
//! an atomic word both ends compare-and-swap, and its receiver asks tokio's
//! cooperative budget on every poll. The shell's tasks all run on one
//! thread, so [`channel`] keeps the answer and the waiter's waker in
//! cells.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::shell::signal::keep_waker;

/// The sender was dropped without sending.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped;

struct Inner<T> {
    value: Cell<Option<T>>,
    waker: Cell<Option<Waker>>,
    sender_gone: Cell<bool>,
    receiver_gone: Cell<bool>,
}

/// A channel for one value.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Rc::new(Inner {
        value: Cell::new(None),
        waker: Cell::new(None),
        sender_gone: Cell::new(false),
        receiver_gone: Cell::new(false),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

/// Sends the one value; dropped unsent, it fails the receiver.
pub struct Sender<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, or gives it back if the receiver is gone.
    pub fn send(self, value: T) -> Result<(), T> {
        if self.inner.receiver_gone.get() {
            return Err(value);
        }
        self.inner.value.set(Some(value));
        // The drop that follows wakes the receiver.
        Ok(())
    }

    /// Whether the receiver is gone (dropped or closed).
    pub fn is_closed(&self) -> bool {
        self.inner.receiver_gone.get()
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.inner.sender_gone.set(true);
        if let Some(waker) = self.inner.waker.take() {
            waker.wake();
        }
    }
}

/// Waits for the value.
pub struct Receiver<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Receiver<T> {
    /// Refuses the value from now on: the sender sees the channel closed.
    pub fn close(&mut self) {
        self.inner.receiver_gone.set(true);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.inner.receiver_gone.set(true);
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Dropped>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &self.inner;
        if let Some(value) = inner.value.take() {
            return Poll::Ready(Ok(value));
        }
        if inner.sender_gone.get() {
            return Poll::Ready(Err(Dropped));
        }
        keep_waker(&inner.waker, cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::shell::signal::counting_waker;

    fn poll<T>(rx: &mut Receiver<T>, waker: &Waker) -> Poll<Result<T, Dropped>> {
        Pin::new(rx).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_value_sent_wakes_the_waiting_receiver_once_and_is_received() {
        let (count, waker) = counting_waker();
        let (tx, mut rx) = channel();
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        assert_eq!(tx.send(5), Ok(()));
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Ok(5)));
    }

    #[test]
    fn a_value_sent_before_the_first_poll_is_received() {
        let waker = Waker::noop();
        let (tx, mut rx) = channel();
        tx.send("answer").unwrap();
        assert_eq!(poll(&mut rx, waker), Poll::Ready(Ok("answer")));
    }

    #[test]
    fn a_sender_dropped_unsent_fails_the_receiver_and_wakes_it() {
        let (count, waker) = counting_waker();
        let (tx, mut rx) = channel::<u8>();
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        drop(tx);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Err(Dropped)));
    }

    #[test]
    fn a_closed_or_dropped_receiver_refuses_the_value() {
        let (tx, mut rx) = channel();
        assert!(!tx.is_closed());
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.send(1), Err(1));
        let (tx, rx) = channel();
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(2), Err(2));
    }
}
