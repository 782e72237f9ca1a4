//! dnsproxy patches 1 and 2 (PATCHED.md): with the `poll(2)` selector, an
//! operation that would block re-arms its own direction only (a `try_io`
//! when its closure names the direction), and loses no wake-up.
//! Run on Linux with the selector forced (`make unit` does):
//! `RUSTFLAGS="--cfg mio_unsupported_force_poll_poll" cargo test
//! --manifest-path vendor/mio/Cargo.toml --features os-poll,net --test
//! dnsproxy_rearm`.

#[cfg(not(mio_unsupported_force_poll_poll))]
compile_error!(
    "these tests are about the poll(2) selector: run them with \
     RUSTFLAGS=\"--cfg mio_unsupported_force_poll_poll\""
);

use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const SOCK: Token = Token(1);

fn poll_for(poll: &mut Poll, events: &mut Events, wait: Duration) -> Vec<(bool, bool)> {
    poll.poll(events, Some(wait)).expect("poll");
    events
        .iter()
        .filter(|e| e.token() == SOCK)
        .map(|e| (e.is_readable(), e.is_writable()))
        .collect()
}

fn udp_registered(poll: &mut Poll, events: &mut Events) -> UdpSocket {
    let mut sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    poll.registry()
        .register(&mut sock, SOCK, Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    // A new socket has room to send: writable, once.
    let first = poll_for(poll, events, Duration::from_secs(1));
    assert!(first.iter().any(|&(_, w)| w), "{first:?}");
    sock
}

/// The defect the patch removes: a receive that found nothing re-armed
/// POLLOUT too, so the next poll returned at once, writable, for nothing.
#[test]
fn a_receive_that_would_block_does_not_wake_the_next_poll_as_writable() {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let sock = udp_registered(&mut poll, &mut events);
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let err = sock.recv_from(&mut buf).expect_err("nothing was sent");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let woke = poll_for(&mut poll, &mut events, Duration::from_millis(50));
        assert!(woke.is_empty(), "woke with nothing to do: {woke:?}");
    }
    // A datagram in: readable is reported, and it is read.
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    peer.send_to(b"query", sock.local_addr().unwrap()).expect("send");
    let woke = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert_eq!(woke, vec![(true, false)]);
    let (n, _) = sock.recv_from(&mut buf).expect("the datagram");
    assert_eq!(&buf[..n], b"query");
}

/// `try_io` does not say which way it went: it still re-arms both.
#[test]
fn try_io_that_would_block_still_re_arms_both_directions() {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let sock = udp_registered(&mut poll, &mut events);
    let err = sock
        .try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()))
        .expect_err("would block");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let woke = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert!(woke.iter().any(|&(_, w)| w), "{woke:?}");
}

/// dnsproxy patch 2: a `try_io` whose closure names its direction
/// (`mio::would_block`) re-arms only that one, like the operation it stands
/// for; and the name does not outlive that `try_io`.
#[test]
fn try_io_that_names_reading_re_arms_reading_only() {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let sock = udp_registered(&mut poll, &mut events);
    for _ in 0..3 {
        let err = sock
            .try_io(|| Err::<(), _>(mio::would_block(Interest::READABLE)))
            .expect_err("would block");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let woke = poll_for(&mut poll, &mut events, Duration::from_millis(50));
        assert!(woke.is_empty(), "woke with nothing to do: {woke:?}");
    }
    // Reading is armed: a datagram wakes it.
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    peer.send_to(b"query", sock.local_addr().unwrap()).expect("send");
    let woke = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert_eq!(woke, vec![(true, false)]);
    // The next anonymous `try_io` is back to re-arming both.
    let err = sock
        .try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()))
        .expect_err("would block");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let woke = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert!(woke.iter().any(|&(_, w)| w), "{woke:?}");
}

/// No wake-up is lost: a write that would block is told when there is room
/// again, even after a read that would block came between (a read re-arms
/// reading and leaves writing armed).
#[test]
fn a_write_that_would_block_is_woken_when_the_peer_reads() {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).expect("listen");
    let mut sock = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    poll.registry()
        .register(&mut sock, SOCK, Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    let first = poll_for(&mut poll, &mut events, Duration::from_secs(1));
    assert!(first.iter().any(|&(_, w)| w), "connected: {first:?}");
    let (mut server, _) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    // Fill the send buffer (and the peer's receive buffer) until it blocks.
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    loop {
        match (&sock).write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
        assert!(written < 512 * 1024 * 1024, "the send buffer never filled");
    }
    let mut small = [0u8; 16];
    let err = (&sock).read(&mut small).expect_err("the peer sent nothing");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let woke = poll_for(&mut poll, &mut events, Duration::from_millis(50));
    assert!(woke.is_empty(), "full and nothing to read, yet woke: {woke:?}");
    // The peer reads everything: room again, and the writer is told.
    let mut sink = vec![0u8; 256 * 1024];
    let mut read = 0usize;
    let mut writable = false;
    for _ in 0..2_000 {
        match server.read(&mut sink) {
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("server read: {e}"),
        }
        let woke = poll_for(&mut poll, &mut events, Duration::from_millis(5));
        if woke.iter().any(|&(_, w)| w) {
            writable = true;
            break;
        }
    }
    assert!(writable, "the writer was never told ({read} of {written} bytes read)");
}
