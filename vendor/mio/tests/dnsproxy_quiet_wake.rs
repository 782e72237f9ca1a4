//! dnsproxy patch 5 (PATCHED.md): inside `mio::quiet_self_wakes`, a wake of
//! a `Waker` made on the same thread is dropped; other wakes go through.
//! `cargo test --manifest-path vendor/mio/Cargo.toml --features os-poll,net
//! --test dnsproxy_quiet_wake` (`make vendor-test` runs it).

#![cfg(not(target_os = "wasi"))]

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mio::{quiet_self_wakes, Events, Poll, Token, Waker};

const WAKE: Token = Token(7);

/// Whether `poll` has the waker's event within `wait`.
fn woken(poll: &mut Poll, wait: Duration) -> bool {
    let mut events = Events::with_capacity(4);
    poll.poll(&mut events, Some(wait)).expect("poll");
    events.iter().any(|e| e.token() == WAKE)
}

#[test]
fn a_wake_of_this_threads_waker_outside_the_scope_goes_through() {
    let mut poll = Poll::new().unwrap();
    let waker = Waker::new(poll.registry(), WAKE).unwrap();
    waker.wake().unwrap();
    assert!(woken(&mut poll, Duration::ZERO));
}

#[test]
fn a_wake_of_this_threads_waker_inside_the_scope_is_dropped() {
    let mut poll = Poll::new().unwrap();
    let waker = Waker::new(poll.registry(), WAKE).unwrap();
    quiet_self_wakes(|| waker.wake().unwrap());
    assert!(!woken(&mut poll, Duration::from_millis(50)));
    // The scope ended: wakes go through again.
    waker.wake().unwrap();
    assert!(woken(&mut poll, Duration::ZERO));
}

#[test]
fn the_scope_ends_on_a_panic_too() {
    let mut poll = Poll::new().unwrap();
    let waker = Waker::new(poll.registry(), WAKE).unwrap();
    let _ = std::panic::catch_unwind(|| quiet_self_wakes(|| panic!("inside")));
    waker.wake().unwrap();
    assert!(woken(&mut poll, Duration::ZERO));
}

#[test]
fn scopes_nest() {
    let mut poll = Poll::new().unwrap();
    let waker = Waker::new(poll.registry(), WAKE).unwrap();
    quiet_self_wakes(|| {
        quiet_self_wakes(|| ());
        // Still inside the outer scope.
        waker.wake().unwrap();
    });
    assert!(!woken(&mut poll, Duration::from_millis(50)));
}

#[test]
fn inside_the_scope_another_threads_waker_is_still_woken() {
    // A poll and its waker made on another thread, woken from this one
    // inside the scope: the other thread may be blocked in its poll.
    let (tx, rx) = std::sync::mpsc::channel();
    let poller = thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
        tx.send(waker).unwrap();
        woken(&mut poll, Duration::from_secs(10))
    });
    let waker = rx.recv().unwrap();
    quiet_self_wakes(|| waker.wake().unwrap());
    assert!(poller.join().unwrap(), "the other thread was not woken");
}

#[test]
fn a_waker_made_here_and_woken_from_another_thread_in_its_scope_goes_through() {
    // The scope is per thread: another thread's scope does not silence a
    // wake of this thread's waker.
    let mut poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
    let other = waker.clone();
    thread::spawn(move || quiet_self_wakes(|| other.wake().unwrap()))
        .join()
        .unwrap();
    assert!(woken(&mut poll, Duration::from_secs(5)));
}
