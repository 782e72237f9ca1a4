//! Memory per query: a leak of a few dozen bytes per datagram is invisible in any
//! one test and fatal after a week. Measured on the real binary as `VmRSS` after a
//! warm-up and again after ten times as many queries; the second figure may not
//! exceed the first by more than a bound far below what a per-query leak costs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use spec_tests::dns;
use spec_tests::load::{LoadResult, UdpLoad};
use spec_tests::proxy::Proxy;
use spec_tests::{Chain, FixtureResolver, Misbehave, zone};

const WARM_UP: u64 = 20_000;
const TOTAL: u64 = 200_000;
/// Over the 180,000 queries after the warm-up, 3 MiB is 17 bytes per query: a
/// leak of a small allocation per datagram shows, noise (pages touched late, the
/// upstream connection's buffers) does not.
const MAX_GROWTH_KIB: u64 = 3 * 1024;

fn run(proxy: &Proxy, total: u64) -> LoadResult {
    let result = UdpLoad {
        to: proxy.addr(),
        from: IpAddr::V4(Ipv4Addr::LOCALHOST),
        query: dns::encode(&dns::query(zone::A_NAME, RecordType::A)),
        sockets: 4,
        window: 32,
        total,
        time_limit: Duration::from_secs(120),
    }
    .run();
    assert_eq!(result.sent, total, "the load ran out of time: {result:?}");
    // A few answers may be lost on loopback under load; the figure is about memory,
    // but the queries must really have been served.
    assert!(
        result.noerror * 100 >= result.sent * 99,
        "fewer than 99% answered NOERROR: {result:?}; log:\n{}",
        proxy.log()
    );
    result
}

#[test]
fn rss_after_200k_udp_queries_stays_within_3_mib_of_rss_after_the_first_20k() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let proxy = Proxy::in_front_of(&[&resolver], &[]);
    let warm = run(&proxy, WARM_UP);
    let rss_warm = proxy.rss_kib();
    let rest = run(&proxy, TOTAL - WARM_UP);
    let rss_end = proxy.rss_kib();
    let grew = rss_end.saturating_sub(rss_warm);
    eprintln!(
        "RSS {rss_warm} KiB after {WARM_UP} queries ({:.0}/s), {rss_end} KiB after {TOTAL} \
         ({:.0}/s): +{grew} KiB, {:.1} bytes per query",
        warm.rate(),
        rest.rate(),
        grew as f64 * 1024.0 / (TOTAL - WARM_UP) as f64
    );
    assert!(
        grew <= MAX_GROWTH_KIB,
        "RSS grew by {grew} KiB over {} queries ({rss_warm} -> {rss_end} KiB): a per-query leak",
        TOTAL - WARM_UP
    );
}
