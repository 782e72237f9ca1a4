//! dnsproxy patch 3 (PATCHED.md): with `epoll(2)`, a source registered on a
//! thread that called `mio::arm_writes_on_demand(true)` gets writable
//! events only while a write of its own waits. Run on Linux with the default
//! selector (`make vendor-test` does): `cargo test --manifest-path
//! vendor/mio/Cargo.toml --features os-poll,net --test dnsproxy_on_demand`.
//! Each test runs on a thread of its own, so the opt-in is per test.
//!
//! The wake-up the patch removes is a UDP socket's: Linux raises its
//! writable edge when a datagram it sent is freed (on loopback, during the
//! send itself, so the next poll returns at once; on a network card, when
//! the card is done with it, a wake-up of its own). A TCP socket's ACKs
//! raise one only after a write ran out of room (`SOCK_NOSPACE`), so there
//! the tests check that no wake-up is lost.

#![cfg(target_os = "linux")]

#[cfg(mio_unsupported_force_poll_poll)]
compile_error!(
    "these tests are about the epoll(2) selector: run them without the forced poll(2) selector"
);

use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const SOCK: Token = Token(1);

/// The events of `SOCK` within `wait`, as (readable, writable).
fn poll_for(poll: &mut Poll, events: &mut Events, wait: Duration) -> Vec<(bool, bool)> {
    poll.poll(events, Some(wait)).expect("poll");
    events
        .iter()
        .filter(|e| e.token() == SOCK)
        .map(|e| (e.is_readable(), e.is_writable()))
        .collect()
}

/// A connected pair: `sock` registered for both directions (after its first,
/// writable, event) and the accepted end, blocking.
fn connected(poll: &mut Poll, events: &mut Events) -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let mut sock = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    poll.registry()
        .register(&mut sock, SOCK, Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    let first = poll_for(poll, events, Duration::from_secs(1));
    assert!(first.iter().any(|&(_, w)| w), "connected: {first:?}");
    let (server, _) = listener.accept().expect("accept");
    (sock, server)
}

/// A UDP socket registered for both directions, after its first (writable)
/// event, and a peer to send to.
fn udp_registered(poll: &mut Poll, events: &mut Events) -> (UdpSocket, std::net::UdpSocket) {
    let mut sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    poll.registry()
        .register(&mut sock, SOCK, Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    let first = poll_for(poll, events, Duration::from_secs(1));
    assert!(first.iter().any(|&(_, w)| w), "a new socket: {first:?}");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    peer.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    (sock, peer)
}

/// Sends an answer to `peer`, which reads it: how the next poll woke.
fn answer(
    poll: &mut Poll,
    events: &mut Events,
    sock: &UdpSocket,
    peer: &std::net::UdpSocket,
) -> Vec<(bool, bool)> {
    sock.send_to(b"answer", peer.local_addr().unwrap())
        .expect("send");
    let mut buf = [0u8; 16];
    let (n, _) = peer.recv_from(&mut buf).expect("the peer reads");
    assert_eq!(&buf[..n], b"answer");
    poll_for(poll, events, Duration::from_millis(100))
}

/// The defect the patch removes: each datagram sent woke the next poll as
/// writable, with nothing waiting to write; a query still wakes it.
#[test]
fn datagrams_sent_do_not_wake_the_poll() {
    mio::arm_writes_on_demand(true);
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let (sock, peer) = udp_registered(&mut poll, &mut events);
    for _ in 0..3 {
        let woke = answer(&mut poll, &mut events, &sock, &peer);
        assert!(woke.is_empty(), "woke for a datagram sent: {woke:?}");
    }
    peer.send_to(b"query", sock.local_addr().unwrap())
        .expect("query");
    let woke = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert_eq!(woke, vec![(true, false)], "the query");
}

/// Without the opt-in (a fresh test thread) nothing changes: a datagram
/// sent wakes the poll as writable. This is what the test above saw before
/// the patch.
#[test]
fn without_the_opt_in_a_datagram_sent_wakes_the_poll_as_writable() {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let (sock, peer) = udp_registered(&mut poll, &mut events);
    let woke = answer(&mut poll, &mut events, &sock, &peer);
    assert!(woke.iter().any(|&(_, w)| w), "{woke:?}");
}

/// A read that would block (a receive, or a `try_io` named a read through
/// `mio::would_block`) leaves the writable side alone. A `try_io` of
/// unknown direction that would block may have been a write, so it arms the
/// writable side, which reports a socket with room at once (a spare
/// wake-up, never a lost one). A send through `try_io` named a write
/// (`mio::way`) disarms it again.
#[test]
fn only_a_write_or_a_try_io_of_unknown_direction_arms_writes() {
    mio::arm_writes_on_demand(true);
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let (sock, peer) = udp_registered(&mut poll, &mut events);
    assert!(answer(&mut poll, &mut events, &sock, &peer).is_empty());
    let mut buf = [0u8; 16];
    let err = sock.recv_from(&mut buf).expect_err("nothing was sent");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let err = sock
        .try_io(|| Err::<(), _>(mio::would_block(Interest::READABLE)))
        .expect_err("would block");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let woke = poll_for(&mut poll, &mut events, Duration::from_millis(100));
    assert!(woke.is_empty(), "a read armed writes: {woke:?}");
    let err = sock
        .try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()))
        .expect_err("would block");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let woke = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert!(woke.iter().any(|&(_, w)| w), "not armed: {woke:?}");
    // A send through `try_io`, named a write (`mio::way`), disarms.
    let to = peer.local_addr().unwrap();
    sock.try_io(|| {
        let sent = sock.send_to(b"answer", to);
        mio::way(Interest::WRITABLE);
        sent
    })
    .expect("send");
    peer.recv_from(&mut buf).expect("the peer reads");
    let woke = poll_for(&mut poll, &mut events, Duration::from_millis(100));
    assert!(woke.is_empty(), "still armed: {woke:?}");
}

/// No wake-up is lost: a write that would block arms the writable side, the
/// peer reading makes room and wakes it, and writes go on.
#[test]
fn a_write_that_would_block_is_woken_when_the_peer_reads() {
    mio::arm_writes_on_demand(true);
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let (sock, mut server) = connected(&mut poll, &mut events);
    (&sock)
        .write_all(b"query")
        .expect("a write that goes through");
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    loop {
        match (&sock).write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    let waiting = poll_for(&mut poll, &mut events, Duration::from_millis(100));
    assert!(waiting.is_empty(), "no room yet: {waiting:?}");
    // The peer reads it all: room again, and the waiting write is told.
    let mut buf = vec![0u8; 5 + written];
    server.read_exact(&mut buf).expect("the peer reads");
    let woke = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert!(
        woke.iter().any(|&(_, w)| w),
        "the write was not woken: {woke:?}"
    );
    (&sock).write_all(b"more").expect("writes go on");
    let mut more = [0u8; 4];
    server.read_exact(&mut more).expect("the peer reads");
    assert_eq!(&more, b"more");
}
