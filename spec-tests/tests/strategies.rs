//! How the upstreams are chosen, against the real binary and fixture
//! resolvers: `strategy = round_robin | fastest`, hedging a slow upstream
//! (and its budget, at the limit), and a SERVFAIL or REFUSED that never beats
//! a real answer from another upstream.
//!
//! Counts are read from the proxy's own metrics, per upstream (labelled by
//! `ip:port`), so each assertion is about what the proxy sent, not what a
//! resolver happened to log.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use spec_tests::dns;
use spec_tests::proxy::{Proxy, upstreams_env};
use spec_tests::scrape::{get, samples};
use spec_tests::{Chain, FixtureResolver, Misbehave, Resolver, zone};

/// A proxy in front of `upstreams` with `extra` settings and metrics on a
/// free port.
fn proxy_with_metrics(upstreams: &[&dyn Resolver], extra: &[(&str, &str)]) -> (Proxy, SocketAddr) {
    Proxy::start_with_metrics(upstreams_env(upstreams, extra))
}

/// A counter or gauge of `upstream`, once the component's report holds
/// `want(value)` (reports come once a second); the last value read.
fn upstream_metric(
    proxy: &Proxy,
    metrics: SocketAddr,
    name: &str,
    upstream: &dyn Resolver,
    want: impl Fn(f64) -> bool,
) -> f64 {
    let label = format!("upstream=\"{}\"", upstream.addr());
    proxy.metric_when(metrics, name, &[&label], want)
}

fn queries_to(proxy: &Proxy, metrics: SocketAddr, upstream: &dyn Resolver, n: f64) {
    upstream_metric(
        proxy,
        metrics,
        "dnsproxy_upstream_queries_total",
        upstream,
        |v| v == n,
    );
}

/// Failures counted against `upstream` (every check), and whether the log
/// has an `upstream failed` line for it: both must say none.
fn assert_never_failed(proxy: &Proxy, metrics: SocketAddr, upstream: &dyn Resolver) {
    let label = format!("upstream=\"{}\"", upstream.addr());
    let body = get(metrics, "/metrics").1;
    let failures: f64 = samples(&body)
        .into_iter()
        .filter(|(series, _)| {
            series.starts_with("dnsproxy_upstream_failures_total{") && series.contains(&label)
        })
        .map(|(_, v)| v.parse::<f64>().expect("a number"))
        .sum();
    let named = format!("upstream={}", upstream.addr());
    let logged = proxy
        .log()
        .lines()
        .any(|l| l.contains("upstream failed") && l.contains(&named));
    assert!(
        failures == 0.0 && !logged,
        "{} failures counted against {}:\n{body}\n{}",
        failures,
        upstream.addr(),
        proxy.log()
    );
}

#[test]
fn a_servfail_or_refused_never_beats_a_real_answer_from_the_next_upstream() {
    for rcode in [ResponseCode::ServFail, ResponseCode::Refused] {
        let declining = FixtureResolver::start(Chain::DotTest, Misbehave::Rcode(rcode.low()));
        let good = FixtureResolver::start(Chain::DotTest, Misbehave::None);
        let (proxy, metrics) = proxy_with_metrics(&[&declining, &good], &[]);
        for tcp in [false, true] {
            let m = dns::query_over(tcp, proxy.addr(), zone::A_NAME, RecordType::A);
            assert_eq!(
                (m.response_code(), dns::a_records(&m)),
                (ResponseCode::NoError, vec![zone::A_ADDR]),
                "{rcode} from the first upstream won; log:\n{}",
                proxy.log()
            );
        }
        // Both were asked each time, in priority order, and answering
        // SERVFAIL is not failing: no backoff, no failure counted.
        queries_to(&proxy, metrics, &declining, 2.0);
        queries_to(&proxy, metrics, &good, 2.0);
        assert_never_failed(&proxy, metrics, &declining);
    }
}

#[test]
fn a_servfail_reaches_the_client_at_once_when_no_upstream_does_better() {
    let first = FixtureResolver::start(Chain::DotTest, Misbehave::Rcode(2));
    let second = FixtureResolver::start(Chain::DotTest, Misbehave::Rcode(5));
    let (proxy, metrics) = proxy_with_metrics(&[&first, &second], &[("QUERY_TIMEOUT", "3s")]);
    let started = Instant::now();
    let m = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
    let took = started.elapsed();
    // The first declining answer is the one kept, and it is passed on as
    // soon as every upstream has answered, not at the deadline.
    assert_eq!(m.response_code(), ResponseCode::ServFail, "{}", proxy.log());
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    queries_to(&proxy, metrics, &first, 1.0);
    queries_to(&proxy, metrics, &second, 1.0);
}

#[test]
fn round_robin_spreads_the_queries_evenly() {
    let a = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let b = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let c = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let (proxy, metrics) = proxy_with_metrics(&[&a, &b, &c], &[("STRATEGY", "round_robin")]);
    for i in 0..30 {
        let m = dns::query_over(i % 2 == 1, proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{}", proxy.log());
    }
    for upstream in [&a, &b, &c] {
        queries_to(&proxy, metrics, upstream, 10.0);
    }
}

#[test]
fn fastest_sends_most_queries_to_the_quicker_upstream_and_probes_the_other() {
    let slow = FixtureResolver::start(Chain::DotTest, Misbehave::DelayMs(40));
    let quick = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let (proxy, metrics) = proxy_with_metrics(&[&slow, &quick], &[("STRATEGY", "fastest")]);
    for _ in 0..100 {
        let m = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{}", proxy.log());
    }
    // The first query measures the slow one (configuration order, neither
    // measured); then one query in 20 probes it: 1 + 5.
    queries_to(&proxy, metrics, &slow, 6.0);
    queries_to(&proxy, metrics, &quick, 94.0);
    let srtt = |u: &dyn Resolver| {
        upstream_metric(
            &proxy,
            metrics,
            "dnsproxy_upstream_srtt_seconds",
            u,
            f64::is_finite,
        )
    };
    let (slow_srtt, quick_srtt) = (srtt(&slow), srtt(&quick));
    assert!(
        slow_srtt >= 0.040 && quick_srtt < slow_srtt,
        "srtt slow {slow_srtt}, quick {quick_srtt}"
    );
}

/// Queries for `slow-<i>.dot.test`: the `DelaySlowMs` fixture holds names
/// whose first label is `slow`, so each is its own name under `slow`.
fn slow_query(proxy: &Proxy, i: usize) -> (ResponseCode, Duration) {
    let name = format!("slow.q{i}.dot.test.");
    let started = Instant::now();
    let m = dns::query_udp(proxy.addr(), &name, RecordType::A);
    (m.response_code(), started.elapsed())
}

#[test]
fn a_slow_answer_is_hedged_to_the_next_upstream_within_the_budget_and_the_loser_is_not_failed() {
    const DELAY: Duration = Duration::from_millis(2000);
    let first = FixtureResolver::start(
        Chain::DotTest,
        Misbehave::DelaySlowMs(DELAY.as_millis() as u32),
    );
    let second = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    // 1%: the budget starts with its burst of 10 hedges and 22 queries add
    // a fifth of one, so hedges 11 and 12 are not paid for.
    let (proxy, metrics) = proxy_with_metrics(
        &[&first, &second],
        &[
            ("HEDGE_PERCENT", "1"),
            ("QUERY_TIMEOUT", "4s"),
            ("UPSTREAM_TIMEOUT", "3s"),
        ],
    );
    // The first upstream's usual time: fast names, answered at once.
    for _ in 0..10 {
        let m = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{}", proxy.log());
    }
    queries_to(&proxy, metrics, &second, 0.0);
    let hedges_to_second = |n: f64| {
        upstream_metric(
            &proxy,
            metrics,
            "dnsproxy_upstream_hedges_total",
            &second,
            |v| v == n,
        )
    };
    for i in 0..10 {
        let (rcode, took) = slow_query(&proxy, i);
        assert_eq!(rcode, ResponseCode::NXDomain, "{}", proxy.log());
        assert!(
            took < DELAY / 2,
            "query {i} was not hedged: answered after {took:?}\n{}",
            proxy.log()
        );
    }
    hedges_to_second(10.0);
    for i in 10..12 {
        let (rcode, took) = slow_query(&proxy, i);
        assert_eq!(rcode, ResponseCode::NXDomain, "{}", proxy.log());
        assert!(
            took >= DELAY,
            "query {i} was hedged past the budget: answered after {took:?}"
        );
    }
    hedges_to_second(10.0);
    // Every hedged-away attempt on the first upstream lost a race; none
    // failed it, and it still takes the fast names first.
    assert_never_failed(&proxy, metrics, &first);
    upstream_metric(&proxy, metrics, "dnsproxy_upstream_up", &first, |v| {
        v == 1.0
    });
    queries_to(&proxy, metrics, &first, 22.0);
}
