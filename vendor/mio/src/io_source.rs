use std::ops::{Deref, DerefMut};
#[cfg(any(unix, target_os = "wasi"))]
use std::os::fd::AsRawFd;
// TODO: once <https://github.com/rust-lang/rust/issues/126198> is fixed this
// can use `std::os::fd` and be merged with the above.
#[cfg(target_os = "hermit")]
use std::os::hermit::io::AsRawFd;
#[cfg(windows)]
use std::os::windows::io::AsRawSocket;
#[cfg(debug_assertions)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{fmt, io};

use crate::sys::IoSourceState;
use crate::{event, Interest, Registry, Token};

std::thread_local! {
    /// dnsproxy patch: the direction the last [`way`] or [`would_block`]
    /// named, taken by the `do_io` whose closure named it.
    static NAMED_WAY: std::cell::Cell<Option<Interest>> = const { std::cell::Cell::new(None) };
}

/// dnsproxy patch: a [`WouldBlock`] error for an operation in one
/// direction, `way`, to return from the closure of a `try_io` (tokio's
/// `UdpSocket::try_io`, `TcpStream::try_io`). A `try_io` does not know
/// which way its operation went, so with the `poll(2)` selector its
/// [`WouldBlock`] re-arms every direction; through this error it re-arms
/// only `way`, as a read (or write) that would block does. That lets a
/// caller that knows a socket is drained (a short read, a short batch of
/// datagrams) clear tokio's readiness without one more read to find
/// nothing; re-arming the writable side too would wake the next poll at
/// once, for a socket that is always writable. Every other selector
/// ignores the direction, as it ignores re-arming, except for a source
/// that arms writes on demand ([`arm_writes_on_demand`]).
///
/// The direction is kept until the `try_io` it is returned through takes
/// it, on the same thread: call this only as the closure's last step.
///
/// [`WouldBlock`]: io::ErrorKind::WouldBlock
pub fn would_block(way: Interest) -> io::Error {
    self::way(way);
    io::ErrorKind::WouldBlock.into()
}

/// dnsproxy patch: names the direction of the operation in the closure of
/// a `try_io`, whatever its result: the `try_io` then does what the
/// operation would through `do_io_way` (with `poll(2)`, a [`WouldBlock`]
/// re-arms only `way`; for a source that arms writes on demand, a read's
/// [`WouldBlock`] leaves writes alone and a write that went through
/// disarms them). As for [`would_block`], call this only as the
/// closure's last step.
///
/// [`WouldBlock`]: io::ErrorKind::WouldBlock
pub fn way(way: Interest) {
    NAMED_WAY.with(|named| named.set(Some(way)));
}

/// dnsproxy patch 3: sources registered on this thread from now on (`on`
/// true; false stops it for later ones) are registered for writable events
/// only while a write of theirs waits, with `epoll(2)`. tokio registers
/// every socket for both directions, edge-triggered, and Linux raises a UDP
/// socket's writable edge each time a datagram it sent is freed: one more
/// turn of the event loop, with nothing to do, for each batch sent. Every
/// other selector ignores this.
///
/// All of such a source's writes must come from one thread at a time (as
/// on a current-thread runtime): a write that goes through disarms the
/// writable side, which would leave a write that would block at the same
/// moment on another thread waiting. See PATCHED.md.
pub fn arm_writes_on_demand(on: bool) {
    #[cfg(all(
        feature = "os-poll",
        not(mio_unsupported_force_poll_poll),
        any(
            target_os = "android",
            target_os = "emscripten",
            target_os = "illumos",
            target_os = "linux",
            target_os = "redox",
        )
    ))]
    crate::sys::arm_writes_on_demand(on);
    #[cfg(not(all(
        feature = "os-poll",
        not(mio_unsupported_force_poll_poll),
        any(
            target_os = "android",
            target_os = "emscripten",
            target_os = "illumos",
            target_os = "linux",
            target_os = "redox",
        )
    )))]
    let _ = on;
}

/// Adapter for a [`RawFd`] or [`RawSocket`] providing an [`event::Source`]
/// implementation.
///
/// `IoSource` enables registering any FD or socket wrapper with [`Poll`].
///
/// While only implementations for TCP, UDP, and UDS (Unix only) are provided,
/// Mio supports registering any FD or socket that can be registered with the
/// underlying OS selector. `IoSource` provides the necessary bridge.
///
/// [`RawFd`]: std::os::fd::RawFd
/// [`RawSocket`]: std::os::windows::io::RawSocket
///
/// # Notes
///
/// To handle the registrations and events properly **all** I/O operations (such
/// as `read`, `write`, etc.) must go through the [`do_io`] method to ensure the
/// internal state is updated accordingly.
///
/// [`Poll`]: crate::Poll
/// [`do_io`]: IoSource::do_io
pub struct IoSource<T> {
    state: IoSourceState,
    inner: T,
    #[cfg(debug_assertions)]
    selector_id: SelectorId,
}

impl<T> IoSource<T> {
    /// Create a new `IoSource`.
    pub fn new(io: T) -> IoSource<T> {
        IoSource {
            state: IoSourceState::new(),
            inner: io,
            #[cfg(debug_assertions)]
            selector_id: SelectorId::new(),
        }
    }

    /// Execute an I/O operations ensuring that the socket receives more events
    /// if it hits a [`WouldBlock`] error.
    ///
    /// # Notes
    ///
    /// This method is required to be called for **all** I/O operations to
    /// ensure the user will receive events once the socket is ready again after
    /// returning a [`WouldBlock`] error.
    ///
    /// [`WouldBlock`]: io::ErrorKind::WouldBlock
    pub fn do_io<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce(&T) -> io::Result<R>,
    {
        // dnsproxy patch: an operation whose closure named its direction
        // (`crate::way`, `crate::would_block`) is taken as `do_io_way` takes
        // one in that direction.
        let result = f(&self.inner);
        match NAMED_WAY.with(|named| named.take()) {
            Some(way) => self.state.do_io_way(way, |_| result, &self.inner),
            None => self.state.do_io(|_| result, &self.inner),
        }
    }

    /// dnsproxy patch: [`do_io`] for an operation in one direction, `way`:
    /// `Interest::READABLE` for a read, receive, peek or accept,
    /// `Interest::WRITABLE` for a write, send or flush. With the `poll(2)`
    /// selector (WASI 0.2, among others) only that direction is re-armed
    /// when the operation would block; every other selector does what
    /// [`do_io`] does.
    ///
    /// [`do_io`]: IoSource::do_io
    pub(crate) fn do_io_way<F, R>(&self, way: Interest, f: F) -> io::Result<R>
    where
        F: FnOnce(&T) -> io::Result<R>,
    {
        self.state.do_io_way(way, f, &self.inner)
    }

    /// Returns the I/O source, dropping the state.
    ///
    /// # Notes
    ///
    /// To ensure no more events are to be received for this I/O source first
    /// [`deregister`] it.
    ///
    /// [`deregister`]: Registry::deregister
    pub fn into_inner(self) -> T {
        self.inner
    }
}

/// Be careful when using this method. All I/O operations that may block must go
/// through the [`do_io`] method.
///
/// [`do_io`]: IoSource::do_io
impl<T> Deref for IoSource<T> {
    type Target = T;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// Be careful when using this method. All I/O operations that may block must go
/// through the [`do_io`] method.
///
/// [`do_io`]: IoSource::do_io
impl<T> DerefMut for IoSource<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

#[cfg(any(
    unix,
    target_os = "hermit",
    all(target_os = "wasi", not(target_env = "p1"))
))]
impl<T> event::Source for IoSource<T>
where
    T: AsRawFd,
{
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.associate(registry)?;
        self.state
            .register(registry, token, interests, self.inner.as_raw_fd())
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.check_association(registry)?;
        self.state
            .reregister(registry, token, interests, self.inner.as_raw_fd())
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.remove_association(registry)?;
        self.state.deregister(registry, self.inner.as_raw_fd())
    }
}

#[cfg(windows)]
impl<T> event::Source for IoSource<T>
where
    T: AsRawSocket,
{
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.associate(registry)?;
        self.state
            .register(registry, token, interests, self.inner.as_raw_socket())
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.check_association(registry)?;
        self.state.reregister(registry, token, interests)
    }

    fn deregister(&mut self, _registry: &Registry) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.remove_association(_registry)?;
        self.state.deregister()
    }
}

#[cfg(all(target_os = "wasi", target_env = "p1"))]
impl<T> event::Source for IoSource<T>
where
    T: AsRawFd,
{
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.associate(registry)?;
        registry
            .selector()
            .register(self.inner.as_raw_fd() as _, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.check_association(registry)?;
        registry
            .selector()
            .reregister(self.inner.as_raw_fd() as _, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        #[cfg(debug_assertions)]
        self.selector_id.remove_association(registry)?;
        registry.selector().deregister(self.inner.as_raw_fd() as _)
    }
}

impl<T> fmt::Debug for IoSource<T>
where
    T: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Used to associate an `IoSource` with a `sys::Selector`.
#[cfg(debug_assertions)]
#[derive(Debug)]
struct SelectorId {
    id: AtomicUsize,
}

#[cfg(debug_assertions)]
impl SelectorId {
    /// Value of `id` if `SelectorId` is not associated with any
    /// `sys::Selector`. Valid selector ids start at 1.
    const UNASSOCIATED: usize = 0;

    /// Create a new `SelectorId`.
    const fn new() -> SelectorId {
        SelectorId {
            id: AtomicUsize::new(Self::UNASSOCIATED),
        }
    }

    /// Associate an I/O source with `registry`, returning an error if its
    /// already registered.
    fn associate(&self, registry: &Registry) -> io::Result<()> {
        let registry_id = registry.selector().id();
        let previous_id = self.id.swap(registry_id, Ordering::AcqRel);

        if previous_id == Self::UNASSOCIATED {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "I/O source already registered with a `Registry`",
            ))
        }
    }

    /// Check the association of an I/O source with `registry`, returning an
    /// error if its registered with a different `Registry` or not registered at
    /// all.
    fn check_association(&self, registry: &Registry) -> io::Result<()> {
        let registry_id = registry.selector().id();
        let id = self.id.load(Ordering::Acquire);

        if id == registry_id {
            Ok(())
        } else if id == Self::UNASSOCIATED {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "I/O source not registered with `Registry`",
            ))
        } else {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "I/O source already registered with a different `Registry`",
            ))
        }
    }

    /// Remove a previously made association from `registry`, returns an error
    /// if it was not previously associated with `registry`.
    fn remove_association(&self, registry: &Registry) -> io::Result<()> {
        let registry_id = registry.selector().id();
        let previous_id = self.id.swap(Self::UNASSOCIATED, Ordering::AcqRel);

        if previous_id == registry_id {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "I/O source not registered with `Registry`",
            ))
        }
    }
}

#[cfg(debug_assertions)]
impl Clone for SelectorId {
    fn clone(&self) -> SelectorId {
        SelectorId {
            id: AtomicUsize::new(self.id.load(Ordering::Acquire)),
        }
    }
}
