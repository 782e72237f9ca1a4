//! dnsproxy patch: many datagrams per system call for the WASI 0.2 datagram
//! streams, whose `receive` and `send` take and return lists
//! (`crate::p2::host::udp`). On Linux a batch is one `recvmmsg` or one
//! `sendmmsg`; elsewhere it is one `recvfrom` or `sendto` per datagram, as
//! upstream does everywhere.
//!
//! Public (and hidden) only so that dnsproxy's host can test it against real
//! sockets (`host/tests/datagram_batches.rs`): building this crate's own
//! tests would build wasmtime a second time.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken or sent per system call, at most: what the p2 streams
/// hand out or permit per call (`MAX_DATAGRAMS` in `crate::p2::host::udp`).
pub const MAX_BATCH: usize = 16;

/// The largest datagram (the buffer each received datagram gets).
const MAX_DATAGRAM_SIZE: usize = super::udp::MAX_DATAGRAM_SIZE;

/// One received datagram: its bytes and its sender.
pub type Datagram = (Vec<u8>, SocketAddr);

/// Datagrams taken off a socket and not yet handed out: a batch from one
/// `recvmmsg` may hold more bytes than one `receive` may return (upstream
/// stops once it has returned `budget` bytes), and what is already off the
/// socket cannot go back.
#[derive(Debug, Default)]
pub struct Inbox {
    pending: VecDeque<Datagram>,
}

impl Inbox {
    /// Datagrams are waiting here: the stream is readable whatever the
    /// socket says.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Returns up to `max` datagrams (at least one, or an error), those
    /// waiting here first, then one batch from the socket; stops adding once
    /// `budget` bytes are returned (as upstream's loop did: the datagram
    /// that crosses it is still returned, so one is always returned).
    /// Datagrams `accept` refuses (their sender is not the connected peer,
    /// or not allowed) are dropped. `WouldBlock` when nothing is waiting
    /// and the socket has nothing queued.
    pub fn receive(
        &mut self,
        socket: &UdpSocket,
        max: usize,
        budget: usize,
        accept: impl FnMut(SocketAddr) -> bool,
    ) -> io::Result<Vec<Datagram>> {
        let mut out = Vec::new();
        self.receive_each(socket, max, budget, accept, |data, from| {
            out.push((data.to_vec(), from));
        })?;
        Ok(out)
    }

    /// dnsproxy patch 14: as [`Inbox::receive`], but hands each datagram
    /// to `each`, its bytes borrowed from the receive buffer, rather than
    /// returning a copy of each (`receive` is this, copying). Returns how
    /// many. Datagrams of the batch past `budget` bytes wait here for the
    /// next call.
    pub fn receive_each(
        &mut self,
        socket: &UdpSocket,
        max: usize,
        budget: usize,
        mut accept: impl FnMut(SocketAddr) -> bool,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> io::Result<usize> {
        let (max, budget) = (max.min(MAX_BATCH), budget.max(1));
        let (mut taken, mut sum) = (0, 0);
        while taken < max && sum < budget {
            let Some((data, from)) = self.pending.pop_front() else {
                break;
            };
            sum += 1 + data.len();
            each(&data, from);
            taken += 1;
        }
        if taken > 0 || max == 0 {
            return Ok(taken);
        }
        // Nothing waiting: one batch from the socket. A batch that was all
        // refused is followed by another (upstream's loop went on to the
        // next datagram), until the socket has nothing queued.
        let pending = &mut self.pending;
        while taken == 0 {
            imp::recv_batch_each(socket, max, |data, from| {
                // Senders not allowed are dropped.
                if !accept(from) {
                    return;
                }
                if sum < budget {
                    sum += 1 + data.len();
                    each(data, from);
                    taken += 1;
                } else {
                    pending.push_back((data.to_vec(), from));
                }
            })?;
        }
        Ok(taken)
    }
}

/// Appends to `out` up to `max` datagrams (at most [`MAX_BATCH`]) with one
/// non-blocking system call; returns how many, or `WouldBlock` (which
/// clears tokio's readiness) when none was queued.
pub fn recv_batch(socket: &UdpSocket, max: usize, out: &mut VecDeque<Datagram>) -> io::Result<usize> {
    let max = max.min(MAX_BATCH);
    if max == 0 {
        return Ok(0);
    }
    imp::recv_batch_each(socket, max, |data, from| out.push_back((data.to_vec(), from)))
}

/// Sends `datagrams` in order with one non-blocking system call, each to
/// its address (`None`: the connected peer); returns how many were sent
/// from the front: fewer when the socket's buffer filled up or one failed
/// after others were sent (the next call reports that one's error).
/// `WouldBlock` (clearing tokio's readiness) when none could be sent. At
/// most [`MAX_BATCH`] are sent per call.
pub fn send_batch(socket: &UdpSocket, datagrams: &[(&[u8], Option<SocketAddr>)]) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(MAX_BATCH)];
    if datagrams.is_empty() {
        return Ok(0);
    }
    imp::send_batch(socket, datagrams)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{Interest, MAX_BATCH, MAX_DATAGRAM_SIZE, UdpSocket};
    use std::cell::RefCell;
    use std::io;
    use std::mem::{MaybeUninit, size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    /// What one `recvmmsg` reads into, kept per thread and set up once: a
    /// buffer of the largest datagram per slot of a batch (zeroed memory
    /// the OS maps lazily: only the pages datagrams were written to become
    /// resident), and the headers, addresses and `iovec`s pointing at it.
    /// The kernel writes only each used slot's lengths, flags, sender and
    /// bytes, so a receive resets one length per slot it offers, where
    /// building the headers afresh zeroed 3.3 KB per call, however few
    /// datagrams came (at low load: one).
    struct Slots {
        /// Never moved or resized once the headers point into it.
        buf: Box<[u8]>,
        addrs: Box<[libc::sockaddr_storage; MAX_BATCH]>,
        /// Read by the kernel only, through the headers.
        #[allow(dead_code)]
        iovs: Box<[libc::iovec; MAX_BATCH]>,
        msgs: Box<[libc::mmsghdr; MAX_BATCH]>,
    }

    impl Slots {
        fn new() -> Self {
            let mut buf = vec![0; MAX_BATCH * MAX_DATAGRAM_SIZE].into_boxed_slice();
            // SAFETY: all-zero is a valid value of these plain C structs.
            let mut addrs: Box<[libc::sockaddr_storage; MAX_BATCH]> = Box::new(unsafe { zeroed() });
            let mut iovs: Box<[libc::iovec; MAX_BATCH]> = Box::new(unsafe { zeroed() });
            let mut msgs: Box<[libc::mmsghdr; MAX_BATCH]> = Box::new(unsafe { zeroed() });
            for (i, chunk) in buf.chunks_exact_mut(MAX_DATAGRAM_SIZE).enumerate() {
                iovs[i] = libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: chunk.len(),
                };
                let hdr = &mut msgs[i].msg_hdr;
                hdr.msg_name = (&raw mut addrs[i]).cast();
                hdr.msg_iov = &raw mut iovs[i];
                hdr.msg_iovlen = 1;
            }
            Self { buf, addrs, iovs, msgs }
        }
    }

    thread_local! {
        static SLOTS: RefCell<Slots> = RefCell::new(Slots::new());
    }

    /// One `recvmmsg` of up to `max` datagrams, each handed to `each`
    /// from the receive buffer; how many.
    pub(super) fn recv_batch_each(
        socket: &UdpSocket,
        max: usize,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> io::Result<usize> {
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let slots = &mut *slots;
            // The kernel wrote the sender's length over each slot's room
            // for it; the rest of a header it only reads.
            for msg in &mut slots.msgs[..max] {
                msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
            let fd = socket.as_raw_fd();
            let msgs = slots.msgs.as_mut_ptr();
            let n = socket.try_io(Interest::READABLE, || {
                // SAFETY: `msgs[..max]` point at `addrs`, `iovs` and `buf`,
                // all alive, unmoved and unaliased (the slots are borrowed
                // mutably) for the call.
                let n = unsafe { libc::recvmmsg(fd, msgs, max as _, libc::MSG_DONTWAIT as _, std::ptr::null_mut()) };
                let n = if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                };
                // dnsproxy patch: a receive, for mio (vendor/mio patch 3:
                // its WouldBlock must not arm the writable side).
                mio::way(mio::Interest::READABLE);
                n
            })?;
            if n < max {
                // Short: the socket's queue was empty when it was read. The
                // next receive would only find that out with one more system
                // call; clearing tokio's readiness now (as tokio does after
                // a short stream read) skips it. A datagram that came since
                // raised a new edge, so the driver reports it again: no
                // wake-up is lost.
                let _ = socket.try_io(Interest::READABLE, || Err::<(), _>(mio::would_block(mio::Interest::READABLE)));
            }
            let mut taken = 0;
            for (i, msg) in slots.msgs[..n].iter().enumerate() {
                // A sender the OS did not name (not for UDP over IP) or of
                // another family is skipped, never made up.
                let Some(from) = to_socket_addr(&slots.addrs[i], msg.msg_hdr.msg_namelen) else {
                    continue;
                };
                let len = (msg.msg_len as usize).min(MAX_DATAGRAM_SIZE);
                let start = i * MAX_DATAGRAM_SIZE;
                each(&slots.buf[start..start + len], from);
                taken += 1;
            }
            Ok(taken)
        })
    }

    pub(super) fn send_batch(
        socket: &UdpSocket,
        datagrams: &[(&[u8], Option<SocketAddr>)],
    ) -> io::Result<usize> {
        let n = datagrams.len();
        // Only the slots sent are set up (and zeroed: the addresses'
        // padding must be): at low load that is one, not `MAX_BATCH`.
        let mut addrs = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
        let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        for (i, (data, to)) in datagrams.iter().enumerate() {
            // The kernel only reads the payload (`sendmsg` takes a mutable
            // pointer for both directions).
            let iov = iovs[i].write(libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len(),
            });
            // SAFETY: all-zero is a valid value of these plain C structs.
            let msg = msgs[i].write(unsafe { zeroed() });
            let hdr = &mut msg.msg_hdr;
            if let Some(to) = to {
                // SAFETY: as above.
                let addr = addrs[i].write(unsafe { zeroed() });
                hdr.msg_namelen = from_socket_addr(*to, addr);
                hdr.msg_name = (&raw mut *addr).cast();
            }
            hdr.msg_iov = &raw mut *iov;
            hdr.msg_iovlen = 1;
        }
        let fd = socket.as_raw_fd();
        let msgs = msgs.as_mut_ptr().cast::<libc::mmsghdr>();
        socket.try_io(Interest::WRITABLE, || {
            // The system call itself: musl's `sendmmsg` on 64-bit targets is
            // a loop of `sendmsg` (its `msghdr` pads `msg_iovlen` and
            // `msg_controllen` to the kernel's sizes; zeroed, as here, the
            // layouts agree).
            // SAFETY: `msgs[..n]` are initialized and point at `addrs`,
            // `iovs` and the payloads, all alive for the call; the kernel
            // does not write the payloads.
            let sent = unsafe { libc::syscall(libc::SYS_sendmmsg, fd, msgs, n as libc::c_uint, 0) };
            let sent = if sent < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(sent as usize)
            };
            // dnsproxy patch: a send, for mio (vendor/mio patch 3: one that
            // went through disarms the writable side).
            mio::way(mio::Interest::WRITABLE);
            sent
        })
    }

    fn to_socket_addr(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match libc::c_int::from(addr.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the OS wrote a sockaddr_in, and sockaddr_storage is
                // large and aligned enough for one.
                let a = unsafe { &*(&raw const *addr).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { &*(&raw const *addr).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn from_socket_addr(to: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match to {
            SocketAddr::V4(to) => {
                // SAFETY: sockaddr_storage is large and aligned enough.
                let a = unsafe { &mut *(&raw mut *storage).cast::<libc::sockaddr_in>() };
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = to.port().to_be();
                a.sin_addr.s_addr = u32::from(*to.ip()).to_be();
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(to) => {
                // SAFETY: as above.
                let a = unsafe { &mut *(&raw mut *storage).cast::<libc::sockaddr_in6>() };
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = to.port().to_be();
                a.sin6_flowinfo = to.flowinfo();
                a.sin6_addr.s6_addr = to.ip().octets();
                a.sin6_scope_id = to.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::UdpSocket;
    use std::io;
    use std::net::SocketAddr;

    pub(super) fn recv_batch_each(
        socket: &UdpSocket,
        max: usize,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> io::Result<usize> {
        let mut taken = 0;
        while taken < max {
            match crate::sockets::udp::try_recv_from_scratch(socket) {
                Ok((data, from)) => each(&data, from),
                Err(e) if taken == 0 => return Err(e),
                Err(_) => break,
            }
            taken += 1;
        }
        Ok(taken)
    }

    pub(super) fn send_batch(
        socket: &UdpSocket,
        datagrams: &[(&[u8], Option<SocketAddr>)],
    ) -> io::Result<usize> {
        let mut sent = 0;
        for (data, to) in datagrams {
            let result = match to {
                Some(to) => socket.try_send_to(data, *to),
                None => socket.try_send(data),
            };
            match result {
                Ok(_) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}
