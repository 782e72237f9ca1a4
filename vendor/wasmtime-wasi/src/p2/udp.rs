use crate::{
    p2::bindings::sockets::network::ErrorCode,
    sockets::{
        SocketAddrCheck, SocketAddrUse, UdpSocket as P3Socket,
        udp::try_recv_from_scratch,
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
/// directly: readiness is the socket's (nothing is consumed), and `try_recv`
/// is one non-blocking `recvfrom` plus the address check, per datagram.
pub struct IncomingDatagramStream {
    pub(crate) connected_addr: Option<SocketAddr>,
    socket: Arc<tokio::net::UdpSocket>,
    permissions: SocketAddrCheck,
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
        }
    }
    pub(crate) fn poll_recv_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // An error is readiness too: `try_recv` reports it.
        self.socket.poll_recv_ready(cx).map(|_| ())
    }

    pub(crate) fn try_recv(&mut self) -> Result<(Vec<u8>, SocketAddr), ErrorCode> {
        loop {
            let (data, addr) = match try_recv_from_scratch(&self.socket) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(ErrorCode::WouldBlock);
                }
                Err(e) => return Err(crate::sockets::ErrorCode::from(e).into()),
            };
            // Only from the connected peer, if connected (the OS filters
            // too, but not what was queued before a (re)connect).
            if let Some(connected_addr) = self.connected_addr
                && connected_addr != addr
            {
                continue;
            }
            if !self
                .permissions
                .check_now(addr, SocketAddrUse::UdpReceive)
            {
                // Not allowed: dropped, as upstream does.
                continue;
            }
            return Ok((data, addr));
        }
    }
}

/// dnsproxy patch: sends directly, one non-blocking `sendto` per datagram
/// (see [`P3Socket::try_send_now`]); upstream made a future per datagram.
/// Nothing is ever left in flight.
pub struct OutgoingDatagramStream {
    pub(crate) inner: Arc<Mutex<P3Socket>>,
    /// Number of datagrams permitted by most recent `check-send` call.
    pub(crate) check_send_permit_count: usize,
    socket: Arc<tokio::net::UdpSocket>,
}
impl OutgoingDatagramStream {
    pub(crate) fn new(inner: Arc<Mutex<P3Socket>>) -> Self {
        let (socket, _) = inner.lock().unwrap().direct();
        Self {
            inner,
            check_send_permit_count: 0,
            socket,
        }
    }
    pub(crate) fn poll_send_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.socket.poll_send_ready(cx).map(|_| ())
    }

    pub(crate) fn try_send(
        &mut self,
        data: Vec<u8>,
        addr: Option<std::net::SocketAddr>,
    ) -> Result<(), ErrorCode> {
        match self.inner.lock().unwrap().try_send_now(&data, addr) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ErrorCode::WouldBlock),
            Err(e) => Err(e.into()),
        }
    }
}
