//! The `readiness` interface (`wit/world.wit`): a watch set of the
//! component's sockets that wait for input, kept between its waits.
//!
//! `wasi:io/poll` is stateless: every call names every pollable, and the
//! host makes a future for each, polls all of them, and polls all of them
//! again each time one is woken. The component's event loop waits on every
//! open client connection, so with 10,000 idle clients each wake-up cost
//! 10,000 futures made and polled, and a query at 1,000 a second took twelve
//! times the CPU. Here a socket costs one task, made when it is first
//! watched (`watch`), and a wait polls only the tasks the operating system
//! woke ([`FuturesUnordered`]). The listeners and the UDP sockets are
//! watched here too, so a wait that names no pollable of its own (the usual
//! one) is no `wasi:io/poll` at all: no table of futures made and dropped
//! per wait.
//!
//! **One task per key, armed again and again.** A key's task loops: it
//! waits to be armed, then for input, then reports its key and disarms
//! itself. Watching a key again through the socket it watched (the usual
//! case, by key, below) only arms its task and wakes it: no future boxed,
//! no task queued, nothing allocated. A task made per arming cost three
//! allocations and their frees, and two table updates, per socket per
//! wake-up (about 400 host instructions of a cache hit at 2,000 qps).
//!
//! A key's task holds its socket (an `Arc` clone of the one wasmtime-wasi
//! reads, or for a listener a duplicate of its descriptor) until the key is
//! unwatched or watched through another socket, reported or not; `unwatch`
//! ends the task before returning: the component unwatches before it
//! closes a socket, and the connection must close then, not when the
//! socket next becomes readable. (A guest that dropped a socket without
//! unwatching it would keep it open here until its key is reused or the
//! instance ends: at most [`MAX_WATCHED`] sockets, and a guest can hold
//! its sockets open anyway.)
//!
//! **Arming again by key.** A key reported is no longer watched, but the
//! set remembers the guest's handle it was watched through ([`Handle`], a
//! number in the instance's resource table), so the guest arms it again by
//! naming the key in its next `wait` instead of a `watch` call per socket
//! per wake-up. The handle goes with `unwatch`.
//!
//! **Listeners.** tokio's `TcpListener` offers no readiness but `accept`,
//! and a watch must not take a connection off the queue. So the set waits on
//! a duplicate of the listener's descriptor, registered on its own (epoll
//! reports each registration). The duplicate is made at the first watch and
//! kept for the next ones (a `dup` and two `epoll_ctl`s per watch would
//! cost a connection-per-query client more system calls than its query);
//! it goes with `unwatch`, and at the next `take` once the listener itself
//! was dropped, so the set never keeps a closed listener's port bound. Its
//! readiness is cleared when it reports: the component accepts until none
//! is left before it watches again, and a connection that comes later
//! raises a new edge.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;

/// The most keys a set watches at once: more than a worker can hold
/// sockets open (the process's descriptor limit), so only a guest that
/// watches one socket under many keys meets it; `watch` then refuses, and
/// the guest polls that socket itself. It bounds the host memory a guest
/// can tie up here (a few hundred bytes a key).
pub const MAX_WATCHED: usize = 1 << 18;

/// Keys hashed by one multiplication (Fibonacci hashing): they are the
/// component's descriptors, small integers, looked up on every arming and
/// report, where SipHash cost more than the lookup. The component could
/// choose colliding keys, but it can only slow its own worker's lookups,
/// and the set holds at most [`MAX_WATCHED`].
type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
        self.0 = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, key: u32) {
        self.0 = u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What a key watches.
#[derive(Debug)]
pub enum Source {
    /// A connected stream, for input (data, its end, or an error).
    Stream(Arc<tokio::net::TcpStream>),
    /// A UDP socket, for a datagram (or an error).
    Datagrams(Arc<tokio::net::UdpSocket>),
    /// A listener, for a connection to accept.
    Listener(Arc<tokio::net::TcpListener>),
}

impl From<Arc<tokio::net::TcpStream>> for Source {
    fn from(stream: Arc<tokio::net::TcpStream>) -> Self {
        Self::Stream(stream)
    }
}

/// The guest's handle a key was last watched through (its `rep` in the
/// instance's resource table), so that the key can be armed again by name
/// alone: [`WatchSet::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    /// A `wasi:sockets/tcp.tcp-socket`: a connected stream or a listener.
    Tcp(u32),
    /// A `wasi:sockets/udp.incoming-datagram-stream`.
    Datagrams(u32),
}

/// What a key's task waits on.
enum Armed {
    Stream(Arc<tokio::net::TcpStream>),
    Datagrams(Arc<tokio::net::UdpSocket>),
    Listener(Arc<Duplicate>),
}

impl Armed {
    /// Readable, read-closed or an error: whatever it is, the component's
    /// read, receive or accept tells it.
    async fn input(&self) {
        match self {
            Self::Stream(stream) => {
                let _ = stream.readable().await;
            }
            Self::Datagrams(socket) => {
                let _ = socket.readable().await;
            }
            Self::Listener(duplicate) => {
                if let Ok(mut ready) = duplicate.fd.readable().await {
                    ready.clear_ready();
                }
            }
        }
    }
}

/// A listener's descriptor, duplicated and registered for reading, and the
/// listener it duplicates (so that it goes when the listener does).
struct Duplicate {
    fd: AsyncFd<OwnedFd>,
    of: Weak<tokio::net::TcpListener>,
}

/// What a key's task and the set share.
struct Shared {
    /// Set by the set to watch once more; cleared by the task as it reports.
    armed: AtomicBool,
    /// The task, while it waits to be armed.
    task: AtomicWaker,
}

/// The future that waits until `shared` is armed.
struct Rearmed<'a>(&'a Shared);

impl Future for Rearmed<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.0.armed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.0.task.register(cx.waker());
        // Armed between the look and the registration: the wake went to
        // the waker registered before.
        if self.0.armed.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A key's task, as the set holds it.
struct Task {
    /// The socket the task waits on.
    source: SourceId,
    shared: Arc<Shared>,
    abort: AbortHandle,
}

/// Which socket a task waits on, by address: a watch through the same
/// socket arms the task again instead of replacing it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SourceId(usize);

impl SourceId {
    fn of(source: &Source) -> Self {
        Self(match source {
            Source::Stream(s) => Arc::as_ptr(s) as usize,
            Source::Datagrams(s) => Arc::as_ptr(s) as usize,
            Source::Listener(l) => Arc::as_ptr(l) as usize,
        })
    }
}

/// The sockets watched for input, and the keys of those that had some.
#[derive(Default)]
pub struct WatchSet {
    /// Each key's task: it lives from the key's `watch` until its
    /// `unwatch` (or a watch through another socket), and waits for input
    /// each time it is armed.
    tasks: HashMap<u32, Task, KeyHash>,
    /// The listeners' duplicates, by key, kept between watches.
    listeners: HashMap<u32, Arc<Duplicate>, KeyHash>,
    /// The handle each key was last watched through, kept after its report
    /// until it is unwatched or watched through another: every armed key
    /// has one, so this is what [`MAX_WATCHED`] bounds.
    handles: HashMap<u32, Handle, KeyHash>,
    /// The tasks; one finishes only when it is cancelled.
    waits: FuturesUnordered<BoxFuture<'static, ()>>,
    /// Keys the tasks reported, as they report them (while `waits` is
    /// polled); moved to `ready` after each poll.
    reports: Arc<Mutex<Vec<u32>>>,
    /// Keys reported and not yet taken.
    ready: Vec<u32>,
}

impl std::fmt::Debug for WatchSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSet")
            .field("armed", &self.watched())
            .field("tasks", &self.tasks.len())
            .field("listeners", &self.listeners.len())
            .field("handles", &self.handles.len())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl WatchSet {
    /// Watches `source`, which the guest holds as `handle`, under `key`,
    /// replacing what `key` watched; false (and nothing watched under
    /// `key`) when the set is full, or a listener's descriptor could not be
    /// duplicated or registered.
    ///
    /// A key watched again through the socket it watched before (the
    /// usual case: `wait`'s `rearm`) keeps its task, which waits for input
    /// once more: no future made, nothing allocated.
    pub fn watch(&mut self, key: u32, source: impl Into<Source>, handle: Handle) -> bool {
        let source = source.into();
        if let Some(task) = self.tasks.get(&key)
            && task.source == SourceId::of(&source)
            && self.handles.get(&key) == Some(&handle)
        {
            if !task.shared.armed.swap(true, Ordering::AcqRel) {
                task.shared.task.wake();
                // As a new watch would: a report not yet taken goes, and
                // input still unread is reported again.
                self.gather();
                if !self.ready.is_empty() {
                    self.ready.retain(|k| *k != key);
                }
            }
            return true;
        }
        self.forget(key);
        if self.handles.len() >= MAX_WATCHED && !self.handles.contains_key(&key) {
            return false;
        }
        let id = SourceId::of(&source);
        let armed = match source {
            Source::Stream(stream) => Armed::Stream(stream),
            Source::Datagrams(socket) => Armed::Datagrams(socket),
            Source::Listener(listener) => match self.duplicate(key, &listener) {
                Some(duplicate) => Armed::Listener(duplicate),
                None => {
                    self.handles.remove(&key);
                    return false;
                }
            },
        };
        let shared = Arc::new(Shared {
            armed: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let reports = self.reports.clone();
        let task = {
            let shared = shared.clone();
            async move {
                loop {
                    Rearmed(&shared).await;
                    armed.input().await;
                    shared.armed.store(false, Ordering::Release);
                    lock(&reports).push(key);
                }
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        self.waits
            .push(Abortable::new(task, registration).map(drop).boxed());
        self.handles.insert(key, handle);
        self.tasks.insert(
            key,
            Task {
                source: id,
                shared,
                abort,
            },
        );
        true
    }

    /// `listener`'s duplicate under `key`: the one kept, or a new one.
    fn duplicate(
        &mut self,
        key: u32,
        listener: &Arc<tokio::net::TcpListener>,
    ) -> Option<Arc<Duplicate>> {
        let of = Arc::downgrade(listener);
        if let Some(kept) = self.listeners.get(&key)
            && Weak::ptr_eq(&kept.of, &of)
        {
            return Some(kept.clone());
        }
        let fd = listener.as_fd().try_clone_to_owned().ok()?;
        // SAFETY: `OwnedFd` is an open descriptor that lives exactly as
        // long as the `AsyncFd` that owns it.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()?;
        let duplicate = Arc::new(Duplicate { fd, of });
        self.listeners.insert(key, duplicate.clone());
        Some(duplicate)
    }

    /// Ends `key`'s task (and with it the task's hold on its socket),
    /// without dropping a listener's duplicate kept for it.
    fn forget(&mut self, key: u32) {
        if self.end(key) {
            // The cancelled task holds the socket until it is polled.
            self.collect();
        }
        self.ready.retain(|k| *k != key);
    }

    /// Cancels `key`'s task, if it has one (it ends, and lets go of its
    /// socket, when `waits` is next polled).
    fn end(&mut self, key: u32) -> bool {
        let task = self.tasks.remove(&key);
        if let Some(task) = &task {
            task.abort.abort();
        }
        task.is_some()
    }

    /// Stops watching under `key` and drops its socket at once (a
    /// listener's duplicate too), and its handle.
    pub fn unwatch(&mut self, key: u32) {
        self.forget(key);
        self.listeners.remove(&key);
        self.handles.remove(&key);
    }

    /// The handle `key` was last watched through, while it is remembered:
    /// from its `watch` until its `unwatch`, reported or not.
    pub fn handle(&self, key: u32) -> Option<Handle> {
        self.handles.get(&key).copied()
    }

    /// Reports `key`, watched through `handle`, at the next take without
    /// waiting: its socket is ready now (it holds input already received)
    /// or could not be watched again (its input is closed, say), and its
    /// read tells which. The handle stays remembered, as after any report,
    /// so the key can still be armed again by name: a key reported and
    /// then forgotten would never be watched again.
    pub fn report(&mut self, key: u32, handle: Handle) {
        self.forget(key);
        self.handles.insert(key, handle);
        self.ready.push(key);
    }

    /// Hands `f` the keys reported since the last take, then forgets them
    /// (keeping the buffer for the next wake-up). Ends the tasks, and drops
    /// the duplicates, of listeners dropped since.
    pub fn take_with<R>(&mut self, f: impl FnOnce(&[u32]) -> R) -> R {
        self.collect();
        // Empty, and no allocation, unless a listener was dropped.
        let gone: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(_, d)| d.of.strong_count() == 0)
            .map(|(k, _)| *k)
            .collect();
        if !gone.is_empty() {
            for key in gone {
                self.end(key);
                self.listeners.remove(&key);
            }
            self.collect();
        }
        let taken = f(&self.ready);
        self.ready.clear();
        taken
    }

    /// The keys reported since the last take, as a list.
    #[cfg(test)]
    pub fn take(&mut self) -> Vec<u32> {
        self.take_with(<[u32]>::to_vec)
    }

    /// Runs the tasks that can run without waiting, and ends the cancelled.
    fn collect(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(Some(())) = self.waits.poll_next_unpin(&mut cx) {}
        self.gather();
    }

    /// Moves the tasks' reports to `ready`.
    fn gather(&mut self) {
        let mut reports = lock(&self.reports);
        if !reports.is_empty() {
            self.ready.append(&mut reports);
        }
    }

    /// Watched keys: armed and not yet reported (for tests and the debug
    /// output).
    pub fn watched(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.shared.armed.load(Ordering::Relaxed))
            .count()
    }
}

/// `reports`, whatever a panicking holder did (a push is all it does).
fn lock(reports: &Mutex<Vec<u32>>) -> std::sync::MutexGuard<'_, Vec<u32>> {
    reports
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for WatchSet {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| {
            loop {
                if !self.ready.is_empty() {
                    return Poll::Ready(());
                }
                let polled = self.waits.poll_next_unpin(cx);
                self.gather();
                // A cancelled task ended: look again. Otherwise nothing is
                // left to run now, and with nothing reported (or nothing
                // watched) the set is not ready: the wait's other
                // pollables, or the tasks' wakers, end the wait.
                if !matches!(polled, Poll::Ready(Some(()))) && self.ready.is_empty() {
                    return Poll::Pending;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use wasmtime_wasi::p2::Pollable;

    use super::*;

    /// A connected pair on loopback: (the watched side, the peer).
    async fn pair() -> (Arc<tokio::net::TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, peer) = tokio::join!(listener.accept(), peer);
        let accepted = accepted.unwrap().0;
        // tokio takes a stream it just accepted for readable (a hint, and
        // wasi-libc's read finds nothing): the component's first read
        // clears that before it ever watches the stream.
        let mut byte = [0u8; 1];
        let first = accepted.try_read(&mut byte).unwrap_err();
        assert_eq!(first.kind(), std::io::ErrorKind::WouldBlock);
        (Arc::new(accepted), peer.unwrap())
    }

    async fn ready_within(set: &mut WatchSet, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), set.ready())
            .await
            .is_ok()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reports_only_the_stream_with_input_once() {
        let mut set = WatchSet::default();
        let mut peers = Vec::new();
        for key in 0..50 {
            let (stream, peer) = pair().await;
            assert!(set.watch(key, stream, Handle::Tcp(1)));
            peers.push(peer);
        }
        assert!(!ready_within(&mut set, 50).await, "nothing was sent");
        peers[17].write_all(b"x").await.unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![17]);
        assert_eq!(set.watched(), 49, "a reported key is no longer watched");
        // Unread input does not report again until watched again.
        assert!(!ready_within(&mut set, 50).await);
        assert!(set.take().is_empty());
        drop(peers);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn watching_again_reports_unread_input_at_once() {
        let mut set = WatchSet::default();
        let (stream, mut peer) = pair().await;
        peer.write_all(b"x").await.unwrap();
        assert!(set.watch(3, stream.clone(), Handle::Tcp(1)));
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![3]);
        assert!(set.watch(3, stream, Handle::Tcp(1)));
        assert!(
            ready_within(&mut set, 2_000).await,
            "the byte is still unread"
        );
        assert_eq!(set.take(), vec![3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn watching_again_through_the_same_socket_keeps_its_task() {
        let mut set = WatchSet::default();
        let (stream, mut peer) = pair().await;
        let weak = Arc::downgrade(&stream);
        for round in 0..20u8 {
            assert!(set.watch(4, stream.clone(), Handle::Tcp(1)));
            assert_eq!(set.watched(), 1);
            assert!(
                !ready_within(&mut set, 20).await,
                "round {round}: nothing sent"
            );
            peer.write_all(&[round]).await.unwrap();
            assert!(ready_within(&mut set, 2_000).await, "round {round}");
            assert_eq!(set.take(), vec![4], "round {round}");
            // The component reads until nothing is left before it watches
            // again.
            let mut byte = [0u8; 1];
            assert_eq!(stream.try_read(&mut byte).unwrap(), 1);
            assert_eq!(byte[0], round);
            let drained = stream.try_read(&mut byte).unwrap_err();
            assert_eq!(drained.kind(), std::io::ErrorKind::WouldBlock);
            assert_eq!(set.waits.len(), 1, "round {round}: a task per arming");
        }
        // Watched again while its report is untaken: reported once.
        peer.write_all(b"y").await.unwrap();
        assert!(set.watch(4, stream.clone(), Handle::Tcp(1)));
        assert!(ready_within(&mut set, 2_000).await);
        assert!(set.watch(4, stream.clone(), Handle::Tcp(1)));
        assert_eq!(set.take(), vec![4]);
        // A reported key's task holds its socket until the key is
        // unwatched (the component unwatches before it closes one).
        drop(stream);
        assert!(weak.upgrade().is_some());
        set.unwatch(4);
        assert!(weak.upgrade().is_none(), "unwatch left the stream open");
        assert_eq!(set.waits.len(), 0);
        drop(peer);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn watching_through_another_socket_replaces_the_task() {
        let mut set = WatchSet::default();
        let (a, mut peer_a) = pair().await;
        let (b, mut peer_b) = pair().await;
        let weak_a = Arc::downgrade(&a);
        assert!(set.watch(6, a.clone(), Handle::Tcp(1)));
        peer_a.write_all(b"x").await.unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![6]);
        drop(a);
        assert!(set.watch(6, b, Handle::Tcp(2)));
        assert!(
            weak_a.upgrade().is_none(),
            "the replaced task kept its socket"
        );
        assert_eq!(set.waits.len(), 1);
        assert!(!ready_within(&mut set, 50).await, "a stale report");
        peer_b.write_all(b"x").await.unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![6]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_closing_is_input() {
        let mut set = WatchSet::default();
        let (stream, peer) = pair().await;
        assert!(set.watch(1, stream, Handle::Tcp(1)));
        drop(peer);
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![1]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unwatch_forgets_the_key_and_lets_the_socket_close() {
        let mut set = WatchSet::default();
        let (stream, mut peer) = pair().await;
        let weak = Arc::downgrade(&stream);
        assert!(set.watch(5, stream, Handle::Tcp(1)));
        peer.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        set.unwatch(5);
        assert!(set.take().is_empty(), "an unwatched key is not reported");
        assert!(
            weak.upgrade().is_none(),
            "the set still holds the stream after unwatch"
        );
        assert_eq!(set.watched(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_replaced_watch_reports_once_under_its_key() {
        let mut set = WatchSet::default();
        let (a, mut peer_a) = pair().await;
        let (b, _peer_b) = pair().await;
        assert!(set.watch(9, a, Handle::Tcp(1)));
        assert!(set.watch(9, b, Handle::Tcp(1)));
        peer_a.write_all(b"x").await.unwrap();
        assert!(
            !ready_within(&mut set, 100).await,
            "the replaced stream's input was reported"
        );
        assert_eq!(set.watched(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_set_refuses_more_keys() {
        let mut set = WatchSet::default();
        let (stream, _peer) = pair().await;
        for key in 0..MAX_WATCHED as u32 {
            assert!(set.watch(key, stream.clone(), Handle::Tcp(1)));
        }
        assert!(
            !set.watch(u32::MAX, stream.clone(), Handle::Tcp(1)),
            "over the cap"
        );
        assert_eq!(set.watched(), MAX_WATCHED);
        // Watching a key again replaces it, full or not.
        assert!(set.watch(7, stream.clone(), Handle::Tcp(1)));
        set.unwatch(8);
        assert!(set.watch(u32::MAX, stream, Handle::Tcp(1)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reported_key_keeps_its_handle_until_unwatched() {
        let mut set = WatchSet::default();
        let (stream, mut peer) = pair().await;
        assert!(set.watch(3, stream.clone(), Handle::Tcp(42)));
        peer.write_all(b"x").await.unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![3]);
        assert_eq!(set.watched(), 0);
        assert_eq!(
            set.handle(3),
            Some(Handle::Tcp(42)),
            "forgotten at its report"
        );
        // Watched through another handle: that one is remembered.
        assert!(set.watch(3, stream, Handle::Tcp(43)));
        assert_eq!(set.handle(3), Some(Handle::Tcp(43)));
        set.unwatch(3);
        assert_eq!(set.handle(3), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_key_reported_now_is_ready_at_once_and_no_longer_watched() {
        let mut set = WatchSet::default();
        let (stream, _peer) = pair().await;
        assert!(set.watch(2, stream, Handle::Tcp(1)));
        assert!(!ready_within(&mut set, 50).await, "nothing was sent");
        set.report(2, Handle::Tcp(1));
        assert_eq!(set.handle(2), Some(Handle::Tcp(1)));
        assert!(ready_within(&mut set, 50).await);
        assert_eq!(set.take(), vec![2]);
        assert_eq!(set.watched(), 0);
        assert!(!ready_within(&mut set, 50).await, "reported twice");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn remembered_handles_count_against_the_cap() {
        let mut set = WatchSet::default();
        let (stream, _peer) = pair().await;
        for key in 0..MAX_WATCHED as u32 {
            assert!(set.watch(key, stream.clone(), Handle::Tcp(key)));
        }
        // Reported (so no longer watched), but remembered.
        set.report(0, Handle::Tcp(0));
        assert_eq!(set.take(), vec![0]);
        assert!(
            !set.watch(u32::MAX, stream.clone(), Handle::Tcp(1)),
            "over the cap"
        );
        set.unwatch(0);
        assert!(set.watch(u32::MAX, stream, Handle::Tcp(1)));
    }

    /// A listener on loopback, shared as wasmtime-wasi shares it.
    async fn listener() -> Arc<tokio::net::TcpListener> {
        Arc::new(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Whether `addr` can be listened on again: no socket holds it.
    fn free(addr: std::net::SocketAddr) -> bool {
        std::net::TcpListener::bind(addr).is_ok()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_listener_reports_each_connection_without_taking_it() {
        let mut set = WatchSet::default();
        let listener = listener().await;
        let addr = listener.local_addr().unwrap();
        assert!(set.watch(4, Source::Listener(listener.clone()), Handle::Tcp(1)));
        assert!(!ready_within(&mut set, 50).await, "nobody connected");
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![4]);
        // The watch took nothing off the queue.
        listener.accept().await.unwrap();
        // Accepted until none is left, then watched again: quiet until the
        // next connection, though the duplicate is the same one.
        assert!(set.watch(4, Source::Listener(listener.clone()), Handle::Tcp(1)));
        assert!(!ready_within(&mut set, 50).await, "a stale report");
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![4]);
        assert_eq!(set.listeners.len(), 1, "one duplicate per listener");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_queued_before_the_watch_is_reported() {
        let mut set = WatchSet::default();
        let listener = listener().await;
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(set.watch(2, Source::Listener(listener), Handle::Tcp(1)));
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![2]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_listener_leaves_its_port_free() {
        let mut set = WatchSet::default();
        let listener = listener().await;
        let addr = listener.local_addr().unwrap();
        // Watched, reported: the duplicate is kept for the next watch.
        assert!(set.watch(6, Source::Listener(listener.clone()), Handle::Tcp(1)));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![6]);
        drop(listener);
        assert!(
            !free(addr),
            "the set's duplicate holds the port until its next take"
        );
        assert!(set.take().is_empty());
        assert!(free(addr), "the duplicate outlived its listener");

        // Unwatched while watched: dropped at once.
        let listener = super::tests::listener().await;
        let addr = listener.local_addr().unwrap();
        assert!(set.watch(6, Source::Listener(listener.clone()), Handle::Tcp(1)));
        set.unwatch(6);
        drop(listener);
        assert!(free(addr), "unwatch left the duplicate");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_udp_socket_reports_a_datagram() {
        let mut set = WatchSet::default();
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(set.watch(8, Source::Datagrams(socket.clone()), Handle::Datagrams(1)));
        assert!(!ready_within(&mut set, 50).await, "nothing was sent");
        peer.send_to(b"q", socket.local_addr().unwrap())
            .await
            .unwrap();
        assert!(ready_within(&mut set, 2_000).await);
        assert_eq!(set.take(), vec![8]);
        assert_eq!(set.watched(), 0);
    }
}
