//! Faults upstream: resolvers stopped (dead), paused (hung), closing mid-stream,
//! stalling, sending bad frames or answering late. Clients get an answer from the
//! next upstream or SERVFAIL within the deadline, and the proxy recovers when the
//! upstream comes back at the same address, without a restart.

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use spec_tests::dns;
use spec_tests::proxy::Proxy;
use spec_tests::{Chain, FixtureResolver, Misbehave, Resolver, Unbound, zone};

/// The query deadline the tests set, and the slack allowed on top for scheduling.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(800);
const SETTINGS: [(&str, &str); 2] = [("QUERY_TIMEOUT", "2s"), ("UPSTREAM_TIMEOUT", "600ms")];

fn timed(f: impl FnOnce() -> Message) -> (Message, Duration) {
    let started = Instant::now();
    let m = f();
    (m, started.elapsed())
}

fn assert_answered(proxy: &Proxy) {
    for tcp in [false, true] {
        let (m, took) = timed(|| {
            if tcp {
                dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A)
            } else {
                dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A)
            }
        });
        assert_eq!(
            m.response_code(),
            ResponseCode::NoError,
            "log:\n{}",
            proxy.log()
        );
        assert_eq!(dns::a_records(&m), [zone::A_ADDR]);
        assert!(took < QUERY_TIMEOUT + SLACK, "answered in {took:?}");
    }
}

fn assert_servfail_within_deadline(proxy: &Proxy) {
    let (m, took) = timed(|| dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    assert_eq!(
        m.response_code(),
        ResponseCode::ServFail,
        "log:\n{}",
        proxy.log()
    );
    assert!(took < QUERY_TIMEOUT + SLACK, "SERVFAIL after {took:?}");
}

/// Polls until a query is answered (the proxy's backoff retries a failed upstream
/// within seconds); panics after `within`.
fn assert_recovers(proxy: &Proxy, within: Duration) {
    let started = Instant::now();
    loop {
        let m = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        if m.response_code() == ResponseCode::NoError {
            return;
        }
        assert!(
            started.elapsed() < within,
            "still {} after {within:?}; log:\n{}",
            m.response_code(),
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn stopped_upstream_gets_servfail_in_time_then_recovers_without_a_proxy_restart() {
    let mut unbound = Unbound::start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&unbound], &SETTINGS);
    assert_answered(&proxy);
    unbound.stop();
    assert_servfail_within_deadline(&proxy);
    assert_servfail_within_deadline(&proxy);
    unbound.start_again();
    assert_recovers(&proxy, Duration::from_secs(15));
    assert_answered(&proxy);
}

#[test]
fn paused_upstream_gets_servfail_in_time_then_recovers_when_thawed() {
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&unbound], &SETTINGS);
    assert_answered(&proxy);
    unbound.pause();
    assert_servfail_within_deadline(&proxy);
    assert_servfail_within_deadline(&proxy);
    unbound.unpause();
    assert_recovers(&proxy, Duration::from_secs(15));
}

#[test]
fn paused_first_upstream_is_abandoned_for_the_second_within_the_deadline() {
    let first = Unbound::start(Chain::DotTest);
    let second = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let proxy = Proxy::in_front_of(&[&first, &second], &SETTINGS);
    assert_answered(&proxy);
    assert_eq!(
        second.accepted_connections(),
        0,
        "the first upstream serves while it is up"
    );
    first.pause();
    for _ in 0..3 {
        assert_answered(&proxy);
    }
    assert!(second.accepted_connections() >= 1, "{}", proxy.log());
    first.unpause();
}

#[test]
fn stopped_first_upstream_is_replaced_by_the_second() {
    let mut first = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let second = Unbound::start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&first, &second], &SETTINGS);
    assert_answered(&proxy);
    assert!(
        first.accepted_connections() >= 1,
        "the first upstream serves while it is up"
    );
    first.stop();
    for _ in 0..3 {
        assert_answered(&proxy);
    }
    assert!(
        proxy.wait_for_log("check=network", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
}

/// A misbehaving fixture first, a good unbound second: every query is answered,
/// within the deadline, and the fixture was really tried: it accepted the proxy's
/// connection, and the proxy logged the failure of that upstream (by its address).
fn next_upstream_serves_when_the_first(behaviour: Misbehave) -> (FixtureResolver, Proxy) {
    let first = FixtureResolver::start(Chain::DotTest, behaviour);
    let second = Unbound::start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&first, &second], &SETTINGS);
    for _ in 0..4 {
        assert_answered(&proxy);
    }
    assert!(
        first.accepted_connections() >= 1,
        "the misbehaving upstream was never connected to:\n{}",
        proxy.log()
    );
    let failed_first = format!("upstream={}", first.addr());
    assert!(
        proxy
            .log()
            .lines()
            .any(|l| l.contains("upstream failed") && l.contains(&failed_first)),
        "no `upstream failed` line for the misbehaving {}:\n{}",
        first.addr(),
        proxy.log()
    );
    drop(second);
    (first, proxy)
}

#[test]
fn upstream_stalling_the_tls_handshake_is_abandoned_for_the_next() {
    next_upstream_serves_when_the_first(Misbehave::StallHandshake);
}

#[test]
fn upstream_going_silent_mid_stream_is_abandoned_for_the_next() {
    next_upstream_serves_when_the_first(Misbehave::StallAfter(1));
}

#[test]
fn upstream_sending_a_bad_length_prefix_is_abandoned_for_the_next() {
    next_upstream_serves_when_the_first(Misbehave::BadLength);
}

#[test]
fn upstream_answering_after_the_upstream_timeout_is_abandoned_for_the_next() {
    next_upstream_serves_when_the_first(Misbehave::DelayMs(1500));
}

#[test]
fn slow_upstream_within_the_deadline_is_waited_for() {
    let slow = FixtureResolver::start(Chain::DotTest, Misbehave::DelayMs(300));
    let proxy = Proxy::in_front_of(&[&slow], &SETTINGS);
    assert_answered(&proxy);
    // The answer came through the slow upstream, and took its delay.
    let (m, took) = timed(|| dns::query_udp(proxy.addr(), zone::MULTI_NAME, RecordType::A));
    assert_eq!(dns::a_records(&m).len(), zone::MULTI_ADDRS.len());
    assert!(took >= Duration::from_millis(300), "answered in {took:?}");
    assert!(slow.accepted_connections() >= 1, "{}", slow.log());
    assert_eq!(
        proxy.log_lines_with("upstream failed"),
        0,
        "{}",
        proxy.log()
    );
}

#[test]
fn upstream_closing_after_every_few_answers_is_reconnected_transparently() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::CloseAfter(3));
    let proxy = Proxy::in_front_of(&[&resolver], &SETTINGS);
    for _ in 0..6 {
        assert_answered(&proxy);
    }
    // Pipelined on one client connection too: the proxy resends what was lost.
    let queries: Vec<Message> = (0..10)
        .map(|_| dns::query(zone::A_NAME, RecordType::A))
        .collect();
    let mut stream = dns::connect_tcp(proxy.addr()).expect("connect");
    for a in dns::tcp_exchange(&mut stream, &queries) {
        assert_eq!(dns::a_records(&a), [zone::A_ADDR], "log:\n{}", proxy.log());
    }
    let conns = resolver.accepted_connections();
    assert!(
        conns >= 4,
        "it closed after 3 answers, so the proxy reconnected: {conns}"
    );
}
