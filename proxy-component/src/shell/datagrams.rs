//! The UDP socket, many datagrams per call.
//!
//! wasi-libc's `recvfrom` and `sendto` (and so tokio's `UdpSocket`) move one
//! datagram per call: in the component each call is a trip through the host
//! (the canonical ABI, wasmtime's resource table, the address check), and a
//! send is two (`check-send`, `send`). [`Datagrams`] receives up to
//! [`BATCH`] datagrams with one call and sends up to [`BATCH`] queued with
//! one call, on the streams wasi-libc opened for the socket ([`streams`]).
//! The calls are the host's `datagram-batch` (`wit/world.wit`): a batch laid
//! out in one byte list (the `packed-datagrams` crate), where
//! `wasi:sockets`' own lists of records cost the host about 1,500
//! instructions per datagram received and 750 per datagram sent to lower
//! and lift, one call into this component's allocator per datagram among
//! them. Readiness stays tokio's (wasi-libc polls the same streams), so the
//! socket is still driven by the one event loop.
//!
//! The first receive after a wait that reported the socket is made by the
//! wait itself, in the same host call ([`Received`]).
//!
//! Natively (the bench's `native` row, the tests) the same calls loop over
//! non-blocking `recvfrom`/`sendto`: one system call per datagram, as before.
//! A wasi-libc whose descriptor layout is not known (another toolchain, see
//! `build.rs`) takes the same one-at-a-time path in the component.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

#[cfg(wasi_libc_descriptors)]
use tokio::io::Interest;
use tokio::net::UdpSocket;

#[cfg(wasi_libc_descriptors)]
use crate::shell::readiness::Drained;

/// Datagrams taken per receive call at most: what the host hands out per
/// call (wasmtime-wasi's 16, one `recvmmsg` in dnsproxy's host). A batch
/// with fewer means the socket was drained when it was taken.
pub const BATCH: usize = 16;

/// One datagram to send, and what is dropped once it is sent.
pub struct Outgoing<T> {
    /// The payload.
    pub data: Vec<u8>,
    /// Where to.
    pub peer: SocketAddr,
    /// Held until the datagram is sent or dropped (an in-flight slot).
    pub hold: T,
}

/// The datagrams one [`Datagrams::recv`] took, with their senders.
#[derive(Default)]
pub struct Batch {
    packets: Vec<(Vec<u8>, SocketAddr)>,
    /// A receive buffer for one datagram, allocated (and zeroed) once: the
    /// one-at-a-time path's.
    scratch: Vec<u8>,
}

impl Batch {
    /// Whether the receive took all it may take at once ([`BATCH`]): the
    /// socket may well have more queued.
    pub fn is_full(&self) -> bool {
        self.packets.len() >= BATCH
    }

    /// Takes the datagrams out, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (Vec<u8>, SocketAddr)> {
        self.packets.drain(..)
    }
}

/// Datagrams the host received for a socket in the event loop's wait
/// (`readiness.wait`'s `received`: the wait that reports a UDP socket
/// makes the receive that report calls for), held until the socket's next
/// receive takes them, by descriptor.
#[derive(Default)]
pub struct Received {
    held: Vec<(RawFd, io::Result<Vec<u8>>)>,
}

impl Received {
    /// The wait received `datagrams` (laid out by `packed-datagrams`;
    /// `WouldBlock` when none was queued) for `fd`. Datagrams still held
    /// for it (the socket was not received from since its last report)
    /// are kept, the new ones after them; an error after them is dropped,
    /// as a receive that took datagrams reports none.
    pub fn put(&mut self, fd: RawFd, datagrams: io::Result<Vec<u8>>) {
        match self.held.iter_mut().find(|(held, _)| *held == fd) {
            None => self.held.push((fd, datagrams)),
            Some((_, Ok(held))) => {
                if let Ok(more) = datagrams {
                    held.extend_from_slice(&more);
                }
            }
            Some((_, held)) => *held = datagrams,
        }
    }

    /// What is held for `fd`, taken: its next receive's result.
    pub fn take(&mut self, fd: RawFd) -> Option<io::Result<Vec<u8>>> {
        let i = self.held.iter().position(|(held, _)| *held == fd)?;
        Some(self.held.swap_remove(i).1)
    }

    /// `fd` is closing (its descriptor may be reused): what is held for it
    /// goes, as the datagrams queued in its socket would.
    pub fn forget(&mut self, fd: RawFd) {
        self.held.retain(|(held, _)| *held != fd);
    }
}

thread_local! {
    /// The event loop's datagrams received in its waits.
    static RECEIVED: std::cell::RefCell<Received> = std::cell::RefCell::default();
}

/// The event loop's wait received `datagrams` for the UDP socket `fd`,
/// which it reported readable (see [`Received::put`]).
pub fn received(fd: RawFd, datagrams: io::Result<Vec<u8>>) {
    RECEIVED.with_borrow_mut(|r| r.put(fd, datagrams));
}

/// The socket `fd` is deregistered before it closes (see [`Received::forget`]).
pub fn forget_received(fd: RawFd) {
    RECEIVED.with_borrow_mut(|r| r.forget(fd));
}

/// A bound UDP socket that moves datagrams in batches.
pub struct Datagrams {
    sock: UdpSocket,
    #[cfg(wasi_libc_descriptors)]
    fd: RawFd,
}

impl Datagrams {
    /// Wraps a bound, non-blocking socket.
    pub fn new(sock: UdpSocket) -> Self {
        Self {
            #[cfg(wasi_libc_descriptors)]
            fd: std::os::fd::AsRawFd::as_raw_fd(&sock),
            sock,
        }
    }

    /// Waits for datagrams and appends up to [`BATCH`] of them to `batch`
    /// (at least one, unless an error is returned). An error is about one
    /// datagram (an ICMP error from an earlier send, say): the socket goes on.
    pub async fn recv(&self, batch: &mut Batch) -> io::Result<()> {
        let Batch { packets, scratch } = batch;
        loop {
            self.sock.readable().await?;
            // Looked up at every wake-up: wasi-libc opens the streams at
            // the socket's first receive, and once they are open the
            // event loop's wait may have received for them ([`Received`]),
            // which only they hand out.
            #[cfg(wasi_libc_descriptors)]
            if let Some(streams) = streams::of(self.fd) {
                let taken = streams.receive(packets, BATCH);
                // A short batch emptied the socket's queue, and so did one
                // that found nothing: wait for the next datagram rather
                // than ask the host again to learn there is none (see
                // `readiness`).
                if packets.len() < BATCH {
                    self.sock.drained();
                }
                match taken {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
            if scratch.is_empty() {
                scratch.resize(65_535, 0);
            }
            // One at a time: the first (a read that would block clears the
            // readiness), then what else is queued.
            match self.sock.try_recv_from(scratch) {
                Ok((n, peer)) => packets.push((scratch[..n].to_vec(), peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            while packets.len() < BATCH {
                match self.sock.try_recv_from(scratch) {
                    Ok((n, peer)) => packets.push((scratch[..n].to_vec(), peer)),
                    // WouldBlock, or an error the next call reports.
                    Err(_) => break,
                }
            }
            return Ok(());
        }
    }

    /// Sends the datagrams queued in `out`, oldest first, waiting while the
    /// socket takes no more; returns once `out` is empty. A datagram the
    /// socket refuses (an address it may not send to, a payload too large)
    /// is dropped with its hold: a lost UDP answer is the client's to retry.
    pub async fn send<T>(&self, out: &mut VecDeque<Outgoing<T>>) {
        loop {
            self.try_send(out);
            if out.is_empty() {
                return;
            }
            if self.sock.writable().await.is_err() {
                out.pop_front();
            }
        }
    }

    /// Sends what the socket takes now of `out`, oldest first, without
    /// waiting: what is left when it would block stays in `out`. A refused
    /// datagram is dropped with its hold, as in [`Datagrams::send`].
    pub fn try_send<T>(&self, out: &mut VecDeque<Outgoing<T>>) {
        while !out.is_empty() {
            #[cfg(wasi_libc_descriptors)]
            if let Some(streams) = streams::of(self.fd) {
                match self.sock.try_io(Interest::WRITABLE, || streams.send(out)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    // The socket refused to say how much it takes: the
                    // oldest goes, so a failing socket cannot spin here.
                    Err(_) => {
                        out.pop_front();
                    }
                }
                continue;
            }
            let Some(first) = out.front() else { break };
            match self.sock.try_send_to(&first.data, first.peer) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Sent, or refused for good.
                _ => {
                    out.pop_front();
                }
            }
        }
    }
}

/// The `wasi:sockets` datagram streams under a wasi-libc UDP descriptor.
#[cfg(wasi_libc_descriptors)]
mod streams {
    // wasi-libc's socket state is C; reading it needs raw pointers.
    #![allow(unsafe_code)]

    use std::collections::VecDeque;
    use std::io;
    use std::mem::ManuallyDrop;
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    use super::Outgoing;
    use crate::shell::descriptors;

    mod bindings {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        wit_bindgen::generate!({
            path: "../wit",
            world: "host-datagrams",
            features: ["clocks-timezone"],
            generate_all,
        });
    }

    use bindings::dnsproxy::proxy::datagram_batch;
    use bindings::wasi::sockets::network::ErrorCode;
    use bindings::wasi::sockets::udp::{IncomingDatagramStream, OutgoingDatagramStream};

    thread_local! {
        /// The list a send lays its batch out in, kept between sends.
        static PACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The two streams, borrowed from wasi-libc for one call: never
    /// dropped here (wasi-libc drops them when the socket closes).
    pub(super) struct Streams {
        fd: RawFd,
        incoming: ManuallyDrop<IncomingDatagramStream>,
        outgoing: ManuallyDrop<OutgoingDatagramStream>,
    }

    /// The streams of UDP descriptor `fd`, if wasi-libc has opened them.
    /// Read again for every call (a table lookup, no host call), so a
    /// closed or renumbered descriptor is never used.
    pub(super) fn of(fd: RawFd) -> Option<Streams> {
        let socket = descriptors::udp(fd)?;
        if socket.state != descriptors::UdpSocket::BOUND_STREAMING {
            return None;
        }
        let (incoming, outgoing) = (socket.incoming as u32, socket.outgoing as u32);
        // SAFETY: both are live handles of these resource types while the
        // socket is streaming; `ManuallyDrop` keeps them wasi-libc's.
        unsafe {
            Some(Streams {
                fd,
                incoming: ManuallyDrop::new(IncomingDatagramStream::from_handle(incoming)),
                outgoing: ManuallyDrop::new(OutgoingDatagramStream::from_handle(outgoing)),
            })
        }
    }

    impl Streams {
        /// One `receive` of up to `max` datagrams; `WouldBlock` when none.
        /// What the last wait received for the socket comes first, with
        /// no call (it is the receive this one would have made).
        pub(super) fn receive(
            &self,
            batch: &mut Vec<(Vec<u8>, SocketAddr)>,
            max: usize,
        ) -> io::Result<()> {
            let packed = match super::RECEIVED.with_borrow_mut(|r| r.take(self.fd)) {
                Some(received) => received?,
                None => {
                    let max = u32::try_from(max).unwrap_or(u32::MAX);
                    datagram_batch::receive(&self.incoming, max).map_err(to_io)?
                }
            };
            if packed.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            for datagram in packed_datagrams::read(&packed) {
                // The host lays out whole datagrams; anything else is a
                // fault of the host's, reported like a socket's.
                let (payload, from) = datagram.map_err(io::Error::other)?;
                batch.push((payload.to_vec(), from));
            }
            Ok(())
        }

        /// One `send` of what `out` holds, up to [`BATCH`]. Sent
        /// datagrams leave `out`, and so does one the host refused;
        /// `WouldBlock` when the socket takes none now.
        pub(super) fn send<T>(&self, out: &mut VecDeque<Outgoing<T>>) -> io::Result<()> {
            let n = out.len().min(super::BATCH);
            if n == 0 {
                return Ok(());
            }
            let result = PACKED.with_borrow_mut(|packed| {
                packed.clear();
                let mut laid = 0;
                for o in out.iter().take(n) {
                    // The batch ends before a payload larger than any UDP
                    // datagram: refused here when it is first, as the
                    // socket would refuse it.
                    if packed_datagrams::push(packed, &o.data, o.peer).is_err() {
                        break;
                    }
                    laid += 1;
                }
                if laid == 0 {
                    return Err(ErrorCode::DatagramTooLarge);
                }
                datagram_batch::send(&self.outgoing, packed)
            });
            let sent = match result {
                Ok(sent) => usize::try_from(sent).unwrap_or(n).min(n),
                Err(ErrorCode::WouldBlock) => 0,
                // The first datagram was refused: it goes, the rest stays.
                Err(_) => 1,
            };
            out.drain(..sent);
            // A full socket takes none (`Ok(0)`): wait for it, do not spin.
            match result {
                Err(ErrorCode::WouldBlock) | Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                _ => Ok(()),
            }
        }
    }

    fn to_io(e: ErrorCode) -> io::Error {
        match e {
            ErrorCode::WouldBlock => io::ErrorKind::WouldBlock.into(),
            other => io::Error::other(format!("{other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f)
    }

    async fn bound() -> (Datagrams, SocketAddr) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        (Datagrams::new(sock), addr)
    }

    /// What a wait received is taken once, by its own socket only; more
    /// for a socket whose datagrams were not taken yet comes after them;
    /// a closing socket's are dropped.
    #[test]
    fn datagrams_a_wait_received_are_held_for_their_socket() {
        let one = |b: u8| {
            let mut packed = Vec::new();
            packed_datagrams::push(&mut packed, &[b; 3], "127.0.0.1:53".parse().unwrap()).unwrap();
            packed
        };
        let would_block = || Err(io::ErrorKind::WouldBlock.into());
        let mut r = Received::default();
        assert!(r.take(3).is_none());
        r.put(3, Ok(one(1)));
        r.put(4, would_block());
        assert!(r.take(5).is_none());
        assert_eq!(r.take(3).unwrap().unwrap(), one(1));
        assert!(r.take(3).is_none(), "taken once");
        let e = r.take(4).unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        // Not taken before the next wait's: both, in order; an error or
        // nothing after them adds nothing.
        r.put(3, Ok(one(1)));
        r.put(3, Ok(one(2)));
        r.put(3, would_block());
        r.put(3, Err(io::Error::other("refused")));
        let both = r.take(3).unwrap().unwrap();
        let read: Vec<_> = packed_datagrams::read(&both)
            .map(|d| d.unwrap().0.to_vec())
            .collect();
        assert_eq!(read, [[1; 3], [2; 3]]);
        // An error held is replaced by what comes next.
        r.put(6, Err(io::Error::other("refused")));
        r.put(6, Ok(one(7)));
        assert_eq!(r.take(6).unwrap().unwrap(), one(7));

        r.put(8, Ok(one(8)));
        r.forget(8);
        assert!(r.take(8).is_none());
    }

    /// What a client sends in a burst comes out in batches of at most
    /// [`BATCH`], every datagram once, in order, with its sender.
    #[test]
    fn a_burst_is_received_in_batches() {
        run(async {
            let (server, addr) = bound().await;
            let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
            let from = client.local_addr().expect("addr");
            let sent: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
            for d in &sent {
                client.send_to(d, addr).expect("send");
            }
            let mut batch = Batch::default();
            let mut got = Vec::new();
            let mut calls = 0;
            while got.len() < sent.len() {
                server.recv(&mut batch).await.expect("recv");
                calls += 1;
                let taken: Vec<_> = batch.drain().collect();
                assert!((1..=BATCH).contains(&taken.len()), "{}", taken.len());
                for (data, peer) in taken {
                    assert_eq!(peer, from);
                    got.push(data);
                }
            }
            assert_eq!(got, sent);
            // All 100 were queued before the first call: full batches.
            assert_eq!(calls, sent.len().div_ceil(BATCH));
        });
    }

    /// A client to send to, and `n` datagrams for it, each holding
    /// `held`: datagram `i` is `[i; 3]`, except the `refused`th, which no
    /// socket sends (70,000 bytes, more than any UDP payload).
    fn queue(
        n: u8,
        refused: u8,
        held: &std::rc::Rc<()>,
    ) -> (std::net::UdpSocket, VecDeque<Outgoing<std::rc::Rc<()>>>) {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let to = client.local_addr().expect("addr");
        let out = (0..n)
            .map(|i| Outgoing {
                data: if i == refused {
                    vec![0; 70_000]
                } else {
                    vec![i; 3]
                },
                peer: to,
                hold: held.clone(),
            })
            .collect();
        (client, out)
    }

    /// The client got every datagram of [`queue`] but the refused one, in
    /// order, and every hold was let go, the refused one's too.
    fn all_but_the_refused_arrived(
        client: &std::net::UdpSocket,
        n: u8,
        refused: u8,
        held: &std::rc::Rc<()>,
    ) {
        assert_eq!(std::rc::Rc::strong_count(held), 1);
        let mut buf = [0u8; 16];
        for i in (0..n).filter(|&i| i != refused) {
            let (len, _) = client.recv_from(&mut buf).expect("an answer");
            assert_eq!(&buf[..len], &[i; 3]);
        }
    }

    /// `try_send` sends what is queued before it returns, without an
    /// `.await`, in order, and drops a refused datagram with its hold.
    #[test]
    fn try_send_sends_what_the_socket_takes_without_waiting() {
        run(async {
            let (server, _) = bound().await;
            let held = std::rc::Rc::new(());
            let (client, mut out) = queue(20, 3, &held);
            // Until tokio's event loop has seen the socket writable, it
            // takes nothing: what is queued stays, and nothing is lost.
            server.try_send(&mut out);
            assert_eq!(out.len(), 20);
            // The receive loop's socket has been through the event loop by
            // the time it answers anything.
            server.sock.writable().await.expect("writable");
            server.try_send(&mut out);
            assert!(out.is_empty(), "{} left", out.len());
            all_but_the_refused_arrived(&client, 20, 3, &held);
        });
    }

    /// Everything queued is sent, in order; a datagram the socket refuses
    /// (larger than any UDP payload) is dropped with what it holds, and
    /// the rest still go.
    #[test]
    fn queued_answers_are_sent_and_a_refused_one_is_dropped() {
        run(async {
            let (server, _) = bound().await;
            let held = std::rc::Rc::new(());
            let (client, mut out) = queue(50, 10, &held);
            server.send(&mut out).await;
            assert!(out.is_empty());
            all_but_the_refused_arrived(&client, 50, 10, &held);
        });
    }
}
