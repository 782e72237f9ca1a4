//! dnsproxy patch 4 (PATCHED.md): with a wait set installed, the `poll(2)`
//! selector arms the sockets that wait only to read in the set once, waits
//! on the set when every polled socket is in it, and otherwise falls back to
//! `poll(2)` without losing a wake-up. The set here is a plain `poll(2)` of
//! what it holds, counting what the selector asks of it.
//! Run on Linux with the selector forced (`make unit` does):
//! `RUSTFLAGS="--cfg mio_unsupported_force_poll_poll" cargo test
//! --manifest-path vendor/mio/Cargo.toml --features os-poll,net --test
//! dnsproxy_wait_set`.

#[cfg(not(mio_unsupported_force_poll_poll))]
compile_error!(
    "these tests are about the poll(2) selector: run them with \
     RUSTFLAGS=\"--cfg mio_unsupported_force_poll_poll\""
);

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, WaitSet};

/// What the selector asked of the set.
#[derive(Default)]
struct Seen {
    armed: HashSet<RawFd>,
    arms: usize,
    disarms: usize,
    /// Every descriptor `disarm` was called for, armed or not.
    told: Vec<RawFd>,
    waits: usize,
    /// Descriptors the set refuses.
    refuse: HashSet<RawFd>,
    /// The timeouts `before_poll` was given.
    before_polls: Vec<Option<Duration>>,
    /// What `before_poll` returns instead, when set.
    poll_timeout: Option<Option<Duration>>,
}

struct TestSet(Rc<RefCell<Seen>>);

impl WaitSet for TestSet {
    fn arm(&mut self, fd: RawFd, write: bool) -> bool {
        let mut seen = self.0.borrow_mut();
        // Like dnsproxy's for a stream: reading only.
        if write || seen.refuse.contains(&fd) {
            return false;
        }
        seen.arms += 1;
        seen.armed.insert(fd);
        true
    }

    fn disarm(&mut self, fd: RawFd) {
        let mut seen = self.0.borrow_mut();
        seen.told.push(fd);
        if seen.armed.remove(&fd) {
            seen.disarms += 1;
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<RawFd>) -> io::Result<()> {
        let mut seen = self.0.borrow_mut();
        seen.waits += 1;
        let mut fds: Vec<libc::pollfd> = seen
            .armed
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.map_or(-1, |t| t.as_millis() as libc::c_int);
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds.iter().filter(|p| p.revents != 0) {
            seen.armed.remove(&fd.fd);
            ready.push(fd.fd);
        }
        Ok(())
    }

    fn before_poll(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        let mut seen = self.0.borrow_mut();
        seen.before_polls.push(timeout);
        seen.poll_timeout.unwrap_or(timeout)
    }
}

fn install() -> Rc<RefCell<Seen>> {
    let seen = Rc::new(RefCell::new(Seen::default()));
    mio::install_wait_set(Some(Box::new(TestSet(seen.clone()))));
    seen
}

/// `n` connected pairs, the accepted sides registered for reading and
/// writing under tokens 0..n, as tokio registers them.
fn pairs(poll: &Poll, n: usize) -> (Vec<TcpStream>, Vec<std::net::TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ours = Vec::new();
    let mut peers = Vec::new();
    for i in 0..n {
        peers.push(std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::from_std(accepted);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        ours.push(stream);
    }
    (ours, peers)
}

fn poll_once(poll: &mut Poll, events: &mut Events, wait: Duration) -> Vec<(usize, bool, bool)> {
    poll.poll(events, Some(wait)).expect("poll");
    events
        .iter()
        .map(|e| (e.token().0, e.is_readable(), e.is_writable()))
        .collect()
}

/// Reads until the stream would block (which re-arms its reading side).
fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn idle_readers_are_armed_once_and_only_the_one_with_input_is_reported() {
    let seen = install();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let (mut ours, mut peers) = pairs(&poll, 100);
    // New streams have room to write: all writable, once, by poll(2).
    let first = poll_once(&mut poll, &mut events, Duration::from_secs(1));
    assert_eq!(first.iter().filter(|e| e.2).count(), 100, "{first:?}");
    // Each read that would block leaves it waiting only to read.
    for s in &mut ours {
        drain(s);
    }
    assert!(poll_once(&mut poll, &mut events, Duration::from_millis(50)).is_empty());
    assert_eq!(
        seen.borrow().armed.len(),
        100,
        "every idle reader is in the set"
    );
    let arms = seen.borrow().arms;
    let waits = seen.borrow().waits;
    for _ in 0..5 {
        assert!(poll_once(&mut poll, &mut events, Duration::from_millis(10)).is_empty());
    }
    assert_eq!(seen.borrow().arms, arms, "idle readers were armed again");
    assert_eq!(
        seen.borrow().waits,
        waits + 5,
        "the waits were not the set's"
    );

    peers[42].write_all(b"query").unwrap();
    let woke = poll_once(&mut poll, &mut events, Duration::from_secs(1));
    assert_eq!(woke, vec![(42, true, false)]);
    assert!(!seen.borrow().armed.contains(&ours[42].as_raw_fd()));
    drain(&mut ours[42]);
    assert!(poll_once(&mut poll, &mut events, Duration::from_millis(10)).is_empty());
    assert!(
        seen.borrow().armed.contains(&ours[42].as_raw_fd()),
        "a read that would block arms it again"
    );
    peers[42].write_all(b"again").unwrap();
    let woke = poll_once(&mut poll, &mut events, Duration::from_secs(1));
    assert_eq!(woke, vec![(42, true, false)]);
    mio::install_wait_set(None);
}

#[test]
fn a_socket_waiting_to_write_falls_back_to_poll_without_losing_a_reader() {
    let seen = install();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let (mut ours, mut peers) = pairs(&poll, 3);
    poll_once(&mut poll, &mut events, Duration::from_secs(1));
    for s in &mut ours {
        drain(s);
    }
    poll_once(&mut poll, &mut events, Duration::from_millis(10));
    assert_eq!(seen.borrow().armed.len(), 3);
    // Stream 0 writes until it would block: its peer does not read.
    let chunk = [0u8; 65536];
    loop {
        match ours[0].write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    // Now one socket waits to write: still, input on another is reported
    // (through poll(2), the set's streams with it).
    poll_once(&mut poll, &mut events, Duration::from_millis(10));
    peers[2].write_all(b"query").unwrap();
    let woke = poll_once(&mut poll, &mut events, Duration::from_secs(1));
    assert!(woke.contains(&(2, true, false)), "{woke:?}");
    // And the writer is woken when its peer reads.
    drain(&mut ours[2]);
    let mut sink = vec![0u8; 1 << 20];
    peers[0].set_nonblocking(true).unwrap();
    let mut woken = false;
    for _ in 0..50 {
        let _ = peers[0].read(&mut sink);
        if poll_once(&mut poll, &mut events, Duration::from_millis(20)).contains(&(0, false, true))
        {
            woken = true;
            break;
        }
    }
    assert!(woken, "the writer was not woken");
    mio::install_wait_set(None);
}

/// Fills `stream`'s send buffer (its peer does not read): it then waits to
/// write, outside the set.
fn block_writing(stream: &mut TcpStream) {
    let chunk = [0u8; 65536];
    loop {
        match stream.write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("write: {e}"),
        }
    }
}

#[test]
fn a_blocking_poll_past_the_set_takes_the_timeout_the_set_gives() {
    let seen = install();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let (mut ours, _peers) = pairs(&poll, 2);
    poll_once(&mut poll, &mut events, Duration::from_secs(1));
    for s in &mut ours {
        drain(s);
    }
    poll_once(&mut poll, &mut events, Duration::from_millis(10));
    assert!(seen.borrow().before_polls.is_empty(), "waits on the set alone");
    block_writing(&mut ours[0]);
    seen.borrow_mut().poll_timeout = Some(Some(Duration::ZERO));
    let started = std::time::Instant::now();
    let woke = poll_once(&mut poll, &mut events, Duration::from_secs(5));
    assert!(woke.is_empty(), "{woke:?}");
    assert_eq!(
        seen.borrow().before_polls,
        vec![Some(Duration::from_secs(5))],
        "the set was not asked for the fallback's timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the fallback waited its own timeout, not the set's"
    );
    mio::install_wait_set(None);
}

#[test]
fn a_socket_the_set_refuses_is_polled_and_deregistering_disarms() {
    let seen = install();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    seen.borrow_mut().refuse.insert(listener.as_raw_fd());
    poll.registry()
        .register(&mut listener, Token(7), Interest::READABLE)
        .unwrap();
    let (mut ours, _peers) = pairs(&poll, 2);
    poll_once(&mut poll, &mut events, Duration::from_secs(1));
    for s in &mut ours {
        drain(s);
    }
    poll_once(&mut poll, &mut events, Duration::from_millis(10));
    assert!(!seen.borrow().armed.contains(&listener.as_raw_fd()));
    assert_eq!(seen.borrow().armed.len(), 2);
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let woke = poll_once(&mut poll, &mut events, Duration::from_secs(1));
    assert!(woke.contains(&(7, true, false)), "{woke:?}");

    let fd = ours[1].as_raw_fd();
    poll.registry().deregister(&mut ours[1]).unwrap();
    assert!(!seen.borrow().armed.contains(&fd), "deregistered but armed");
    assert_eq!(seen.borrow().disarms, 1);
    mio::install_wait_set(None);
}

#[test]
fn a_reported_socket_deregistered_before_it_is_armed_again_is_still_disarmed() {
    let seen = install();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let (mut ours, mut peers) = pairs(&poll, 1);
    poll_once(&mut poll, &mut events, Duration::from_secs(1));
    drain(&mut ours[0]);
    poll_once(&mut poll, &mut events, Duration::from_millis(10));
    assert!(seen.borrow().armed.contains(&ours[0].as_raw_fd()));
    peers[0].write_all(b"x").unwrap();
    let woke = poll_once(&mut poll, &mut events, Duration::from_secs(1));
    assert!(woke.contains(&(0, true, false)), "{woke:?}");
    // Reported, so no longer armed; not read, so not armed again.
    let fd = ours[0].as_raw_fd();
    assert!(!seen.borrow().armed.contains(&fd));
    seen.borrow_mut().told.clear();
    poll.registry().deregister(&mut ours[0]).unwrap();
    assert_eq!(
        seen.borrow().told,
        vec![fd],
        "a set that remembers what it reported was not told of the deregistration"
    );
    mio::install_wait_set(None);
}
