//! The event loop's wait, without asking about every idle connection each
//! time.
//!
//! tokio runs on mio's `poll(2)` selector in the component, and wasi-libc's
//! `poll` makes one `wasi:io/poll` call naming a pollable per socket, for
//! which the host makes and polls a future per socket: every wake-up of a
//! worker paid for every connection it held open. With 10,000 idle TCP
//! clients a query at 1,000 qps cost twelve times the CPU, and an attacker
//! who held connections open made every other client's query dearer.
//!
//! [`install`] gives the selector a wait set (the vendored mio's patch 4,
//! `mio::WaitSet`) for the sockets that wait to read: TCP streams,
//! listeners and UDP sockets are watched by the host (`readiness.watch`
//! and `watch-datagrams`, the socket's descriptor its key), which polls
//! only the sockets the kernel woke. A socket the host
//! cannot watch (a listener holding a connection, a UDP socket holding
//! datagrams: both ready now) is polled by its own pollable, the one
//! wasi-libc keeps for it (read off its descriptor table,
//! [`crate::shell::descriptors`]), until it is armed again.
//!
//! A socket the host reported is armed again, once the component has read
//! it until it would block, by naming its key in the next wait's `rearm`
//! (the host remembers the socket under its key), not by a `watch` call of
//! its own: two host calls and two descriptor lookups less per forwarded
//! query (the client's UDP socket and the upstream connection). The
//! selector tells the set of every socket it deregisters, armed or not, so
//! the set forgets a reported one before its descriptor can be reused.
//!
//! The ACKs owed to upstreams ([`ack_before_wait`]) go out in the wait
//! too, named by key: those a query written in the same turn did not
//! carry already. And a wait that reports a UDP socket brings its
//! datagrams as well (`waited.received`), held for the socket's next
//! receive ([`crate::shell::datagrams::Received`]): the receive its report
//! calls for, made in the same host call.
//!
//! A wait is then one host call (`readiness.wait`): the set and the
//! deadline, where wasi-libc made three (the clock's pollable,
//! `wasi:io/poll`, its drop); it also brings the time it woke, which the
//! wake-up's reads of the clock return, and from which the next deadline
//! counts ([`crate::shell::clock`]). Its cost
//! no longer grows with idle connections, and with no pollable of its own
//! the host makes no `wasi:io/poll` of it. Anything else (a socket waiting
//! to write, a connect in progress) the set refuses, and mio polls
//! everything through wasi-libc while such a socket waits: slower, never
//! wrong.
//!
//! Each wait is also the event loop's heartbeat for the host's watchdog
//! (`watchdog` in the WIT): the host counts every `readiness.wait`, and a
//! poll through wasi-libc beats first with a call of its own. So the loop
//! beats exactly while it turns, and an idle worker is not woken to beat
//! (a timer did that ten times a second, and tokio's timer wheel woke it
//! as often again to move the timer between its levels).

// wasi-libc's descriptors and borrowed handles: raw handles.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::core::acks::AcksOwed;
use crate::core::duration;
use crate::shell::clock;
use crate::shell::datagrams;
use crate::shell::descriptors::{self, Socket, TcpSocket, UdpSocket};
use crate::shell::host_tcp;

mod bindings {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    wit_bindgen::generate!({
        path: "../wit",
        world: "host-readiness",
        features: ["clocks-timezone"],
        generate_all,
    });
}

use bindings::dnsproxy::proxy::{readiness, watchdog};
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::io::poll::Pollable;
use bindings::wasi::sockets::tcp::TcpSocket as WasiTcpSocket;
use bindings::wasi::sockets::udp::IncomingDatagramStream;

thread_local! {
    /// Upstream streams whose reads are to be acknowledged at once, by
    /// descriptor ([`ack_before_wait`], [`sent`]).
    static ACKS_OWED: RefCell<AcksOwed<RawFd>> = const { RefCell::new(AcksOwed::new()) };
}

/// Acknowledges what was read from the TCP stream `fd` at once, when the
/// event loop next waits ([`AcksOwed`]): by then the turn that read it may
/// have written a query on the same stream, whose segment carries the ACK
/// (`TCP_NODELAY` sends it at once), and then no call is made and no
/// segment of its own sent. Otherwise the ACK goes out in the wait call
/// itself (`readiness.wait`'s `quick-acks`), or in a `tcp-ack` call for a
/// stream the host does not watch. The caller's stream must be registered
/// with the event loop (its deregistration forgets the ACK).
pub fn ack_before_wait(fd: RawFd) {
    ACKS_OWED.with_borrow_mut(|owed| owed.read(fd));
}

/// The TCP stream `fd` just sent data: its segment acknowledged all that
/// was read from it. (A segment the kernel holds back, when the stream's
/// congestion window is full, leaves the ACK to the kernel's delay:
/// latency, never an answer lost.)
pub fn sent(fd: RawFd) {
    ACKS_OWED.with_borrow_mut(|owed| owed.sent(fd));
}

/// Installs the wait set for the event loop of this thread: call before the
/// runtime registers its first socket.
pub fn install() {
    mio::install_wait_set(Some(Box::new(Watch::default())));
}

/// Where a socket the host watches under its descriptor stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Hosted {
    /// Not in the host's set (or the host may remember it under a socket
    /// since closed: it is watched by `watch` before it is armed again).
    #[default]
    No,
    /// Armed in the host's set, or about to be (its key in `rearm`).
    Armed { listener: bool },
    /// Reported, and not armed since: the host remembers its socket under
    /// its key, so a `rearm` arms it again.
    Reported { listener: bool },
}

/// The sockets armed in the wait set, by descriptor.
#[derive(Default)]
struct Watch {
    /// Sockets the host watches (their descriptor is the key), indexed by
    /// descriptor: wasi-libc's are small and dense.
    hosted: Vec<Hosted>,
    /// Keys to arm again at the next wait (`Hosted::Armed` now).
    rearm: Vec<u32>,
    /// Listeners and UDP sockets the host could not watch, and the
    /// pollable wasi-libc keeps for each, read when it was armed.
    /// wasi-libc makes a listener's and a streaming UDP socket's pollable
    /// once and drops it when the socket closes, and the selector disarms
    /// a socket before it closes. `ManuallyDrop` leaves each pollable
    /// wasi-libc's.
    own: Vec<(RawFd, ManuallyDrop<Pollable>)>,
}

impl Watch {
    /// Where `fd` stands with the host.
    fn hosted(&self, fd: RawFd) -> Hosted {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.hosted.get(i))
            .copied()
            .unwrap_or_default()
    }

    fn set_hosted(&mut self, fd: RawFd, hosted: Hosted) {
        let Ok(i) = usize::try_from(fd) else { return };
        if self.hosted.len() <= i {
            self.hosted.resize(i + 1, Hosted::No);
        }
        self.hosted[i] = hosted;
    }

    /// Arms `fd` again by naming it in the next wait, when the host
    /// reported it and remembers its socket (and it is armed for what the
    /// host watches: a listener either way, anything else for reading).
    fn rearm(&mut self, fd: RawFd, write: bool) -> bool {
        let Hosted::Reported { listener } = self.hosted(fd) else {
            return false;
        };
        let Ok(key) = u32::try_from(fd) else {
            return false;
        };
        if write && !listener {
            return false;
        }
        self.rearm.push(key);
        self.set_hosted(fd, Hosted::Armed { listener });
        true
    }

    /// The keys of the ACKs owed, for the wait to send. A stream the host
    /// does not remember (one it refused to watch) is acknowledged by a
    /// call of its own now.
    fn acks_owed(&self) -> Vec<u32> {
        ACKS_OWED.with_borrow_mut(|owed| {
            let mut keys = Vec::new();
            for fd in owed.take() {
                match (self.hosted(fd), u32::try_from(fd)) {
                    (Hosted::Armed { .. } | Hosted::Reported { .. }, Ok(key)) => keys.push(key),
                    _ => host_tcp::quick_ack(fd),
                }
            }
            keys
        })
    }

    /// Asks the host to watch `socket` under `fd`: whether it does.
    fn host_watch(&mut self, fd: RawFd, socket: Socket) -> bool {
        let Ok(key) = u32::try_from(fd) else {
            return false;
        };
        let listener = matches!(socket, Socket::Tcp(t) if t.tag == TcpSocket::LISTENING);
        let watched = match socket {
            Socket::Tcp(t) => {
                let Ok(handle) = u32::try_from(t.socket) else {
                    return false;
                };
                // SAFETY: the socket's live handle while the descriptor is
                // open (the selector's caller holds it); `ManuallyDrop`
                // keeps it wasi-libc's.
                let socket = ManuallyDrop::new(unsafe { WasiTcpSocket::from_handle(handle) });
                readiness::watch(key, &socket)
            }
            Socket::Udp(u) => {
                let Ok(handle) = u32::try_from(u.incoming) else {
                    return false;
                };
                // SAFETY: the incoming stream's live handle while the
                // socket streams datagrams (checked by the caller) and the
                // descriptor is open; `ManuallyDrop` keeps it wasi-libc's.
                let stream =
                    ManuallyDrop::new(unsafe { IncomingDatagramStream::from_handle(handle) });
                readiness::watch_datagrams(key, &stream)
            }
        };
        if watched {
            self.own.retain(|(o, _)| *o != fd);
            self.set_hosted(fd, Hosted::Armed { listener });
        } else {
            // The host forgot the key.
            self.set_hosted(fd, Hosted::No);
        }
        watched
    }
}

/// The pollable wasi-libc keeps for reading `fd`, when it is a listener or
/// a UDP socket streaming datagrams (and it has made one): the one its
/// `poll` would use.
fn own_pollable(socket: Socket) -> Option<u32> {
    let handle = match socket {
        Socket::Tcp(t) if t.tag == TcpSocket::LISTENING => t.socket_pollable,
        Socket::Udp(u) if u.state == UdpSocket::BOUND_STREAMING => u.incoming_pollable,
        _ => return None,
    };
    u32::try_from(handle).ok().filter(|h| *h != 0)
}

/// wasi-libc makes a socket's pollable the first time its `poll` is asked
/// about it (a UDP socket's only once it streams datagrams, after the
/// selector first polled it): asks it once, without waiting, so that it
/// makes and keeps the pollable (it owns it and drops it when the socket
/// closes). The pollable it now has, if any.
fn wasi_libc_made_pollable(fd: RawFd) -> Option<u32> {
    let mut probe = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`.
    if unsafe { libc::poll(&mut probe, 1, 0) } < 0 {
        return None;
    }
    descriptors::kind(fd).and_then(own_pollable)
}

impl mio::WaitSet for Watch {
    fn arm(&mut self, fd: RawFd, write: bool) -> bool {
        if self.rearm(fd, write) {
            return true;
        }
        let Some(socket) = descriptors::kind(fd) else {
            return false;
        };
        let hostable = match socket {
            // A listener's readiness is for accepting, both ways (tokio
            // registers it for writing too; it never writes).
            Socket::Tcp(t) if t.tag == TcpSocket::LISTENING => true,
            // The set and a UDP socket's input pollable watch reading only.
            _ if write => return false,
            Socket::Tcp(t) => t.tag == TcpSocket::CONNECTED,
            Socket::Udp(u) => u.state == UdpSocket::BOUND_STREAMING && u.incoming != 0,
        };
        if hostable && self.host_watch(fd, socket) {
            return true;
        }
        if let Socket::Tcp(t) = socket
            && t.tag == TcpSocket::CONNECTED
        {
            return false;
        }
        let Some(handle) = own_pollable(socket).or_else(|| wasi_libc_made_pollable(fd)) else {
            return false;
        };
        // SAFETY: wasi-libc's live pollable for `fd`, borrowed while `fd`
        // is armed (above).
        let pollable = ManuallyDrop::new(unsafe { Pollable::from_handle(handle) });
        match self.own.iter_mut().find(|(o, _)| *o == fd) {
            Some(own) => own.1 = pollable,
            None => self.own.push((fd, pollable)),
        }
        true
    }

    fn disarm(&mut self, fd: RawFd) {
        // Deregistered before it closes: its descriptor may be reused.
        sent(fd);
        datagrams::forget_received(fd);
        match self.hosted(fd) {
            Hosted::Armed { .. } => {
                self.set_hosted(fd, Hosted::No);
                let Ok(key) = u32::try_from(fd) else { return };
                // Not yet armed again by the host: it remembers the socket
                // still, and forgets it when the key is next watched.
                if let Some(i) = self.rearm.iter().position(|k| *k == key) {
                    self.rearm.swap_remove(i);
                } else {
                    readiness::unwatch(key);
                }
            }
            // Deregistered before it was armed again: a `watch` comes
            // before the key is armed again, whatever socket it then is.
            Hosted::Reported { .. } => self.set_hosted(fd, Hosted::No),
            Hosted::No => self.own.retain(|(o, _)| *o != fd),
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<RawFd>) -> io::Result<()> {
        let borrowed: Vec<&Pollable> = self.own.iter().map(|(_, p)| &**p).collect();
        let deadline = timeout.map(|t| deadline(t, monotonic_clock::now));
        let acks = self.acks_owed();
        let waited = readiness::wait(&self.rearm, &acks, &borrowed, deadline);
        self.rearm.clear();
        drop(borrowed);
        clock::woke(waited.now);
        let (k0, k1, k2, k3) = waited.first_keys;
        let inline = [k0, k1, k2, k3];
        let inline = &inline[..inline.len().min(waited.key_count as usize)];
        let more = waited.more_keys.unwrap_or_default();
        for &key in inline.iter().chain(&more) {
            let Ok(fd) = RawFd::try_from(key) else {
                continue;
            };
            if let Hosted::Armed { listener } = self.hosted(fd) {
                self.set_hosted(fd, Hosted::Reported { listener });
                ready.push(fd);
            }
        }
        // The receive the wait made for a UDP socket it reported: held
        // for the socket's next receive.
        if let Some(received) = waited.received
            && let Ok(fd) = RawFd::try_from(received.key)
            && ready.contains(&fd)
        {
            datagrams::received(fd, received.datagrams.map_err(to_io));
        }
        // Indices into `own` as it was: reported, then disarmed.
        let before = ready.len();
        for index in waited.ready.unwrap_or_default() {
            if let Some(&(fd, _)) = self.own.get(index as usize) {
                ready.push(fd);
            }
        }
        for fd in &ready[before..] {
            self.own.retain(|(o, _)| o != fd);
        }
        Ok(())
    }

    fn before_poll(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        // No wait call to count as the turn's heartbeat, or to carry the
        // ACKs: a call for each.
        watchdog::heartbeat();
        ACKS_OWED.with_borrow_mut(|owed| owed.take().for_each(host_tcp::quick_ack));
        // The host's clock is read only for a timeout to correct.
        let left = timeout.map(|t| {
            let now = monotonic_clock::now();
            Duration::from_nanos(deadline(t, || now).saturating_sub(now))
        });
        // wasi-libc's `poll` brings no reading back.
        clock::expire();
        left
    }
}

/// A receive's error, as the datagram streams' own receive reports it.
fn to_io(e: readiness::ErrorCode) -> io::Error {
    match e {
        readiness::ErrorCode::WouldBlock => io::ErrorKind::WouldBlock.into(),
        other => io::Error::other(format!("{other:?}")),
    }
}

/// When `timeout` from this wake-up's reading ends (`now` when there is
/// none). tokio computed `timeout` from that reading, so this is the
/// deadline its timer asked for, however stale the reading has grown (see
/// `clock`).
fn deadline(timeout: Duration, now: impl FnOnce() -> u64) -> u64 {
    clock::reading()
        .unwrap_or_else(now)
        .saturating_add(duration::nanos(timeout))
}
