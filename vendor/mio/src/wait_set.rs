//! dnsproxy patch 4: a wait set the `poll(2)` selector hands its sockets
//! that wait only to read (PATCHED.md).
//!
//! `poll(2)` names every descriptor on every call. In a WASI 0.2 component,
//! wasi-libc's `poll` turns that into one `wasi:io/poll` call naming every
//! pollable, and the host makes and polls a future for each: with
//! thousands of idle connections, every wake-up paid for all of them. An
//! embedder whose host keeps a set of watched sockets between waits
//! installs a [`WaitSet`] on the thread that polls; the selector then arms
//! each socket that waits to read in the set once, and waits on the
//! set instead of passing it to `poll(2)` again and again. Sockets the set
//! cannot take, and every socket armed for anything else (writing), are
//! polled as before; while any is, the selector falls back to polling
//! everything with `poll(2)`, so no readiness is ever missed.
//!
//! Only the `poll(2)` selector consults it; with any other selector an
//! installed set is never used.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Readiness of sockets that wait to read, kept between waits. One report
/// per arming: a socket [`WaitSet::wait`] reported is no longer armed.
pub trait WaitSet {
    /// Arms `fd` (registered with the selector, waiting to read, and to
    /// write if `write`): it is reported by a later
    /// [`wait`](WaitSet::wait) once it has input, its end or an error (or,
    /// with `write`, room to write), and the selector reports it ready for
    /// everything it was armed for, as `poll(2)` emulations may (wasi-libc
    /// reports a listener's one readiness for both). False when the set
    /// cannot take it; the selector then polls it itself.
    fn arm(&mut self, fd: RawFd, write: bool) -> bool;

    /// Disarms `fd` if it is armed: it now waits for something else, or
    /// it is deregistered (about to close). A deregistered descriptor is
    /// disarmed whether it is armed or not, so that a set that remembers
    /// a socket it reported (to arm it again cheaply) forgets it before
    /// its descriptor can be reused for another.
    fn disarm(&mut self, fd: RawFd);

    /// Waits up to `timeout` (`None`: until one is ready) for armed
    /// descriptors to be ready, and appends those that are to `ready`,
    /// disarming them. Returns early with nothing only when interrupted.
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<RawFd>) -> io::Result<()>;

    /// The selector polls everything itself (`poll(2)`) rather than wait on
    /// the set, for `timeout`: the timeout to poll with. A set that keeps
    /// the time its caller computed `timeout` from (a clock read once per
    /// wake-up) corrects it for the time since, and learns that the wait
    /// did not go through it. Default: `timeout` as it is.
    fn before_poll(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        timeout
    }
}

thread_local! {
    static WAIT_SET: RefCell<Option<Box<dyn WaitSet>>> = const { RefCell::new(None) };
}

/// Installs `set` for the selectors that poll on this thread, from their
/// next poll on; `None` removes it. A wait set serves one thread, which
/// must also be the only one registering sockets with its selector: while
/// the selector waits on the set, a registration from another thread does
/// not interrupt the wait (tokio's current-thread runtime, where this is
/// used, registers on the thread that polls).
pub fn install_wait_set(set: Option<Box<dyn WaitSet>>) {
    WAIT_SET.with(|s| *s.borrow_mut() = set);
}

/// Whether a wait set is installed on this thread.
pub(crate) fn installed() -> bool {
    WAIT_SET.with(|s| s.borrow().is_some())
}

/// Runs `f` on this thread's wait set, if one is installed.
pub(crate) fn with<R>(f: impl FnOnce(&mut dyn WaitSet) -> R) -> Option<R> {
    WAIT_SET.with(|s| s.borrow_mut().as_mut().map(|set| f(set.as_mut())))
}
