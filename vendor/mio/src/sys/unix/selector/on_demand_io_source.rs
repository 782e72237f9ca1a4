//! dnsproxy patch 3: `epoll(2)` needs no user-space state for a source,
//! except for one registered on a thread that called
//! [`crate::arm_writes_on_demand`]: such a source is registered for its
//! writable side only while a write waits, and this state says how to
//! re-register it (see PATCHED.md).
//!
//! tokio registers every socket for reading and writing, edge-triggered. On
//! Linux a UDP socket's writable edge fires each time a datagram it sent is
//! freed, so every answer a proxy sent woke its event loop once more with
//! nothing to do (a TCP socket's ACKs raise it only after a write ran out of
//! room). Here the source's writable side is armed from registration until
//! its first write goes through (tokio then keeps it writable), disarmed
//! after that, armed again by a write that would block (or a `try_io` of
//! unknown direction that would block), and disarmed by the next write that
//! goes through. tokio clears its writable readiness only after a write that
//! would block, and arming it again reports a socket that is already
//! writable at once (`EPOLL_CTL_MOD` polls it), so no wake-up is lost.
//!
//! The disarm after a write that went through relies on that write having
//! been allowed by tokio's readiness, and on no other write of the same
//! source failing in between on another thread: all of a source's writes
//! must come from one thread at a time, as on a current-thread runtime.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Interest, Registry, Token};

std::thread_local! {
    /// Whether sources registered on this thread arm writes on demand.
    static ON_DEMAND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// See [`crate::arm_writes_on_demand`].
pub(crate) fn arm_writes_on_demand(on: bool) {
    ON_DEMAND.with(|d| d.set(on));
}

pub(crate) struct IoSourceState {
    on_demand: Option<OnDemand>,
}

/// What `EPOLL_CTL_MOD` needs to arm or disarm a source's writable side.
struct OnDemand {
    ep: RawFd,
    fd: RawFd,
    token: Token,
    /// The registration's interests without `WRITABLE`.
    rest: Option<Interest>,
    /// Whether `WRITABLE` is in the registration now.
    armed: AtomicBool,
}

impl OnDemand {
    fn set(&self, interests: Option<Interest>) -> io::Result<()> {
        let interests = interests.map_or(0, super::interests_to_epoll);
        let mut event = libc::epoll_event {
            events: interests,
            u64: usize::from(self.token) as u64,
            #[cfg(target_os = "redox")]
            _pad: 0,
        };
        syscall!(epoll_ctl(self.ep, libc::EPOLL_CTL_MOD, self.fd, &mut event)).map(|_| ())
    }

    /// A write would block: arm the writable side, or fail the write (a
    /// writer left waiting for an edge that cannot come would hang).
    fn arm(&self) -> io::Result<()> {
        if self.armed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let all = match self.rest {
            Some(rest) => rest | Interest::WRITABLE,
            None => Interest::WRITABLE,
        };
        let armed = self.set(Some(all));
        if armed.is_err() {
            self.armed.store(false, Ordering::Release);
        }
        armed
    }

    /// A write went through: tokio keeps the source writable until one
    /// would block, so its edges are not needed. A failure leaves it armed,
    /// which costs wake-ups only.
    fn disarm(&self) {
        if self.armed.load(Ordering::Acquire)
            && self.armed.swap(false, Ordering::AcqRel)
            && self.set(self.rest).is_err()
        {
            self.armed.store(true, Ordering::Release);
        }
    }

    fn after<R>(&self, way: Option<Interest>, result: &io::Result<R>) -> io::Result<()> {
        match result {
            // A read's WouldBlock leaves writes alone; one whose direction
            // is unknown (`try_io`) may have been a write.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match way {
                Some(way) if !way.is_writable() => Ok(()),
                _ => self.arm(),
            },
            Ok(_) if way.is_some_and(Interest::is_writable) => {
                self.disarm();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl IoSourceState {
    pub(crate) fn new() -> IoSourceState {
        IoSourceState { on_demand: None }
    }

    pub(crate) fn do_io<T, F, R>(&self, f: F, io: &T) -> io::Result<R>
    where
        F: FnOnce(&T) -> io::Result<R>,
    {
        let result = f(io);
        match &self.on_demand {
            Some(d) => d.after(None, &result).and(result),
            None => result,
        }
    }

    /// dnsproxy patch: what this selector does for an operation in one
    /// direction (see the poll selector's `do_io_way`): for a source that
    /// arms writes on demand, a write arms or disarms them; otherwise the
    /// same as `do_io`.
    pub(crate) fn do_io_way<T, F, R>(&self, way: Interest, f: F, io: &T) -> io::Result<R>
    where
        F: FnOnce(&T) -> io::Result<R>,
    {
        let result = f(io);
        match &self.on_demand {
            Some(d) => d.after(Some(way), &result).and(result),
            None => result,
        }
    }

    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
        fd: RawFd,
    ) -> io::Result<()> {
        registry.selector().register(fd, token, interests)?;
        self.on_demand =
            (interests.is_writable() && ON_DEMAND.with(|d| d.get())).then(|| OnDemand {
                ep: registry.selector().as_raw_fd(),
                fd,
                token,
                rest: interests.remove(Interest::WRITABLE),
                armed: AtomicBool::new(true),
            });
        Ok(())
    }

    pub(crate) fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
        fd: RawFd,
    ) -> io::Result<()> {
        // Registered as asked, writable side and all, and kept so while the
        // source keeps arming on demand.
        registry.selector().reregister(fd, token, interests)?;
        if let Some(d) = &mut self.on_demand {
            if interests.is_writable() {
                d.token = token;
                d.rest = interests.remove(Interest::WRITABLE);
                d.armed.store(true, Ordering::Release);
            } else {
                self.on_demand = None;
            }
        }
        Ok(())
    }

    pub(crate) fn deregister(&mut self, registry: &Registry, fd: RawFd) -> io::Result<()> {
        self.on_demand = None;
        registry.selector().deregister(fd)
    }
}
