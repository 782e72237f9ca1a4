use crate::{
    p2::bindings::sockets::network::ErrorCode,
    sockets::{
        SocketAddrCheck, SocketAddrUse, UdpSocket as P3Socket, mmsg::Inbox,
    },
};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

/// A UDP socket + associated p2 bookkeeping.
pub struct UdpSocket {
    pub(crate) inner: Arc<Mutex<P3Socket>>,
    pub(crate) in_progress_operation: Option<AsyncOperation>,
}
impl UdpSocket {
    pub(crate) fn new(inner: P3Socket) -> Self {
        Self {
            inner: Arc::new(Mutex::new(inner)),
            in_progress_operation: None,
        }
    }
    pub(crate) fn get_mut(&mut self) -> Option<&mut P3Socket> {
        Arc::get_mut(&mut self.inner)?.get_mut().ok()
    }
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, P3Socket> {
        self.inner.lock().expect("other thread panicked")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsyncOperation {
    Bind,
}

/// dnsproxy patch: upstream received through a future per datagram, spawned
/// as a task whenever none was waiting, and that future took the datagram
/// off the socket just to report readiness. This stream reads the socket
/// directly: readiness is the socket's (nothing is consumed), and `receive`
/// takes a batch with one system call (`recvmmsg` on Linux, see
/// [`crate::sockets::mmsg`]), then checks each sender.
pub struct IncomingDatagramStream {
    pub(crate) connected_addr: Option<SocketAddr>,
    socket: Arc<tokio::net::UdpSocket>,
    permissions: SocketAddrCheck,
    /// Taken off the socket, not yet handed out (a batch may exceed what
    /// one `receive` returns).
    inbox: Inbox,
}
impl IncomingDatagramStream {
    pub(crate) fn new(inner: Arc<Mutex<P3Socket>>) -> Self {
        let (connected_addr, (socket, permissions)) = {
            let mut locked = inner.lock().unwrap();
            (locked.remote_address().ok(), locked.direct())
        };
        Self {
            connected_addr,
            socket,
            permissions,
            inbox: Inbox::default(),
        }
    }
    /// dnsproxy patch 10: the socket this stream receives from, while
    /// nothing taken off it waits here: for an embedder that waits for a
    /// datagram itself (`tokio::net::UdpSocket::readable`), as
    /// `p2::TcpSocket::receive_stream` is for a TCP stream. `None` while
    /// the stream holds datagrams (it is ready now; its pollable tells).
    pub fn receive_socket(&self) -> Option<Arc<tokio::net::UdpSocket>> {
        (!self.inbox.has_pending()).then(|| self.socket.clone())
    }

    pub(crate) fn poll_recv_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.inbox.has_pending() {
            return std::task::Poll::Ready(());
        }
        // An error is readiness too: `receive` reports it.
        self.socket.poll_recv_ready(cx).map(|_| ())
    }

    /// Up to `max` datagrams, at most `budget` bytes (but at least one
    /// datagram), or `WouldBlock`.
    pub(crate) fn receive(
        &mut self,
        max: usize,
        budget: usize,
    ) -> Result<Vec<(Vec<u8>, SocketAddr)>, ErrorCode> {
        let Self {
            connected_addr,
            socket,
            permissions,
            inbox,
        } = self;
        let accept = |from: SocketAddr| {
            // Only from the connected peer, if connected (the OS filters
            // too, but not what was queued before a (re)connect); senders
            // not allowed are dropped, as upstream does.
            connected_addr.is_none_or(|connected| connected == from)
                && permissions.check_now(from, SocketAddrUse::UdpReceive)
        };
        inbox
            .receive(socket, max, budget, accept)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock => ErrorCode::WouldBlock,
                _ => crate::sockets::ErrorCode::from(e).into(),
            })
    }

    /// dnsproxy patch 14: up to `max` datagrams and about as many bytes as
    /// `receive` returns, each handed to `each` (its bytes borrowed from
    /// the receive buffer, its sender checked as in `receive`), for an
    /// embedder that lays them out itself; how many, or `WouldBlock`.
    pub fn receive_each(
        &mut self,
        max: usize,
        each: impl FnMut(&[u8], SocketAddr),
    ) -> Result<usize, ErrorCode> {
        let Self {
            connected_addr,
            socket,
            permissions,
            inbox,
        } = self;
        let accept = |from: SocketAddr| {
            connected_addr.is_none_or(|connected| connected == from)
                && permissions.check_now(from, SocketAddrUse::UdpReceive)
        };
        inbox
            .receive_each(socket, max, crate::MAX_READ_SIZE_ALLOC, accept, each)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock => ErrorCode::WouldBlock,
                _ => crate::sockets::ErrorCode::from(e).into(),
            })
    }
}

/// dnsproxy patch: sends directly, a batch per system call (`sendmmsg` on
/// Linux, see [`P3Socket::try_send_many`]); upstream made a future per
/// datagram.
/// Nothing is ever left in flight.
pub struct OutgoingDatagramStream {
    pub(crate) inner: Arc<Mutex<P3Socket>>,
    // dnsproxy patch 11: no permit count (`send` takes `MAX_DATAGRAMS`).
    socket: Arc<tokio::net::UdpSocket>,
}
impl OutgoingDatagramStream {
    pub(crate) fn new(inner: Arc<Mutex<P3Socket>>) -> Self {
        let (socket, _) = inner.lock().unwrap().direct();
        Self {
            inner,
            socket,
        }
    }
    pub(crate) fn poll_send_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.socket.poll_send_ready(cx).map(|_| ())
    }

    /// Sends from the front of `datagrams` (each to its address, `None`:
    /// the connected peer); how many were sent (0: the socket's buffer is
    /// full), or the first one's error when none was. Each destination is
    /// checked as upstream's `send` checks it. (dnsproxy patch 14: public,
    /// for an embedder that lays the datagrams out itself.)
    pub fn try_send_many<'a>(
        &mut self,
        datagrams: impl IntoIterator<Item = (&'a [u8], Option<SocketAddr>)>,
    ) -> Result<usize, ErrorCode> {
        self.inner
            .lock()
            .unwrap()
            .try_send_many(datagrams)
            .map_err(Into::into)
    }
}
