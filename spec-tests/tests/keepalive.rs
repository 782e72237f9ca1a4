//! RFC 7828 (edns-tcp-keepalive) on the proxy's DoT connections: every query
//! sent upstream asks for the upstream's idle timeout, the proxy closes its
//! idle connection when that timeout (shorter than `upstream_idle_timeout`)
//! says so and reconnects for the next query, and the option the upstream
//! sends back never reaches a client. The fixture resolver plays an upstream
//! that answers with a chosen TIMEOUT and never closes an idle connection
//! itself, so a close it sees is the proxy's. Every test talks to the proxy
//! only over the network.

use std::time::{Duration, Instant};

use spec_tests::dns::{self, QueryBuilder};
use spec_tests::hickory_proto::op::{Message, ResponseCode};
use spec_tests::hickory_proto::rr::RecordType;
use spec_tests::hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use spec_tests::proxy::with_settings;
use spec_tests::scrape::{get, value};
use spec_tests::{
    Chain, FixtureResolver, Misbehave, Proxy, Resolver, upstream_env, wait_until, zone,
};

/// Far longer than any wait here: a close within the tests is the upstream's
/// timeout at work, not this one.
const UPSTREAM_IDLE_TIMEOUT: &str = "60s";

/// The edns-tcp-keepalive option code (RFC 7828 §3.1).
const KEEPALIVE: u16 = 11;

fn assert_no_keepalive(m: &Message, how: &str) {
    assert_eq!(m.response_code(), ResponseCode::NoError, "{how}");
    if let Some(edns) = m.extensions() {
        assert_eq!(
            edns.option(EdnsCode::from(KEEPALIVE)),
            None,
            "{how}: the upstream's keepalive option reached the client"
        );
    }
}

/// The fixture's `connection closed` lines, once there are `n` of them.
fn closed_lines(resolver: &FixtureResolver, n: usize, within: Duration) -> Vec<String> {
    let lines = || -> Vec<String> {
        resolver
            .log()
            .lines()
            .filter(|l| l.starts_with("connection closed "))
            .map(str::to_owned)
            .collect()
    };
    let ok = wait_until(within, || lines().len() >= n);
    assert!(ok, "fewer than {n} closed connections:\n{}", resolver.log());
    lines()
}

#[test]
fn rfc7828_the_upstreams_keepalive_option_never_reaches_a_client() {
    // 30 s: the connection stays open for the whole test.
    let resolver = FixtureResolver::start_with_keepalive(Chain::DotTest, Misbehave::None, 300);
    let mut proxy = Proxy::start(&upstream_env(&resolver), &[]);

    // RFC 7828 §3.2.2: the option is never sent over UDP.
    let q = QueryBuilder::new(zone::A_NAME, RecordType::A)
        .edns(1232)
        .build();
    let m = dns::exchange_udp(proxy.addr(), &q, Duration::from_secs(3)).expect("UDP answer");
    assert_no_keepalive(&m, "UDP with EDNS");
    assert!(m.extensions().is_some(), "the client's OPT is answered");

    // A TCP client may send the option itself (RFC 7828 §3.2.1): it goes
    // upstream once, and the upstream's answer to it is still not passed on:
    // the client's connection is the proxy's, not the upstream's.
    let mut q = QueryBuilder::new(zone::AAAA_NAME, RecordType::AAAA)
        .edns(1232)
        .build();
    q.extensions_mut()
        .as_mut()
        .expect("OPT")
        .options_mut()
        .insert(EdnsOption::Unknown(KEEPALIVE, Vec::new()));
    let mut s = dns::connect_tcp(proxy.addr()).expect("connect over TCP");
    let m = dns::tcp_exchange(&mut s, &[q]).remove(0);
    assert_no_keepalive(&m, "TCP with the client's own keepalive option");
    drop(s);

    // Without EDNS: the OPT the proxy added goes, keepalive with it.
    let m = dns::query_udp(proxy.addr(), zone::MEDIUM_NAME, RecordType::TXT);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.extensions().is_none(), "{m:?}");

    // The upstream was asked every time, once per query: stopping the proxy
    // closes the connection, and the fixture counts what it read.
    proxy.stop();
    let closed = closed_lines(&resolver, 1, Duration::from_secs(10));
    assert_eq!(closed.len(), 1, "one connection: {closed:?}");
    assert!(
        closed[0].ends_with(" keepalive=3 queries=3"),
        "{}",
        closed[0]
    );
}

#[test]
fn rfc7828_the_upstreams_timeout_closes_the_idle_connection_and_the_next_query_reconnects() {
    // TIMEOUT 10: 1 s.
    let resolver = FixtureResolver::start_with_keepalive(Chain::DotTest, Misbehave::None, 10);
    let env = with_settings(
        upstream_env(&resolver),
        &[
            ("UPSTREAM_IDLE_TIMEOUT", UPSTREAM_IDLE_TIMEOUT),
            ("LOG_LEVEL", "debug"),
        ],
    );
    let (proxy, metrics) = Proxy::start_with_metrics(env);
    let connections = || {
        value(
            &get(metrics, "/metrics").1,
            "dnsproxy_upstream_connections",
            &[],
        )
    };

    let m = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError, "{}", proxy.log());
    let answered = Instant::now();

    // The proxy closes it after about 1 s idle, not 60 s: the fixture sees
    // the close, and had read the option in the query.
    let closed = closed_lines(&resolver, 1, Duration::from_secs(5));
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(700),
        "closed after {idle:?}, before the upstream's 1 s"
    );
    assert!(
        closed[0].ends_with(" keepalive=1 queries=1"),
        "{}",
        closed[0]
    );
    // Reports come once a second.
    assert!(
        wait_until(Duration::from_secs(5), || connections().as_deref()
            == Some("0")),
        "the gauge still counts the connection:\n{}",
        get(metrics, "/metrics").1
    );

    // The next query is answered over a new connection, and the log says
    // why the old one went. (Another name: the first answer is cached.)
    let m = dns::query_udp(proxy.addr(), zone::AAAA_NAME, RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError, "{}", proxy.log());
    assert_eq!(resolver.accepted_connections(), 2);
    assert!(
        proxy.wait_for_log("upstream connection closed", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("upstream connection closed"))
        .expect("the line waited for");
    assert!(
        line.contains("idle for the upstream's edns-tcp-keepalive timeout"),
        "{line}"
    );
}

#[test]
fn rfc7828_timeout_zero_closes_the_connection_after_each_answer() {
    let resolver = FixtureResolver::start_with_keepalive(Chain::DotTest, Misbehave::None, 0);
    let env = with_settings(
        upstream_env(&resolver),
        &[("UPSTREAM_IDLE_TIMEOUT", UPSTREAM_IDLE_TIMEOUT)],
    );
    let proxy = Proxy::start(&env, &[]);
    // Distinct names, so none is answered from the cache.
    let names = ["ka1.dot.test.", "ka2.dot.test.", "ka3.dot.test."];
    for (i, name) in names.iter().enumerate() {
        let m = dns::query_udp(proxy.addr(), name, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{}", proxy.log());
        // RFC 7828 §3.3.2: the client closes once the answers are in, and
        // sends no new query on the connection.
        let closed = closed_lines(&resolver, i + 1, Duration::from_secs(5));
        assert!(closed[i].ends_with(" keepalive=1 queries=1"), "{closed:?}");
    }
    assert_eq!(resolver.accepted_connections(), names.len());
}
