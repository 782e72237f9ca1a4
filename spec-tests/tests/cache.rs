//! The answer cache against real resolvers: Debian's unbound and the fixture
//! resolver, in containers, behind the real binary with its default cache
//! settings (`CACHE_SIZE_MIB` unset). What reaches the upstream is read off
//! the proxy's own metrics (`dnsproxy_upstream_queries_total`), which count
//! every query sent upstream.
//!
//! Each test checks one rule of the cache: TTLs counted down, the client's
//! spelling and ID, DO and CD kept apart, negative answers with their SOA
//! (RFC 2308), the full answer kept and truncated per client, serve-stale
//! while the resolver is stopped (RFC 8767), failures remembered briefly
//! (RFC 9520), and a flush when a reload changes the upstreams.

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::Duration;

use spec_tests::hickory_proto::op::{Message, ResponseCode};
use spec_tests::hickory_proto::rr::{Record, RecordType};
use spec_tests::proxy::with_settings;
use spec_tests::scrape::{get, value};
use spec_tests::{
    Chain, DEFAULT_TIMEOUT, Kind, Proxy, QueryBuilder, Resolver, a_records, exchange_udp,
    free_port, query_tcp, upstream_env, zone,
};

/// A proxy with its default cache in front of `env`'s upstreams, serving
/// metrics. The harness turns the cache off for the other groups; here the
/// built-in default (an empty value) applies.
fn cached_proxy(env: Vec<(String, String)>, extra: &[(&str, &str)]) -> (Proxy, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let mut settings = vec![("METRICS_LISTEN", metrics.to_string())];
    settings.push(("CACHE_SIZE_MIB", String::new()));
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra.iter().copied())
        .collect();
    let proxy = Proxy::start(&with_settings(env, &settings), &[]);
    (proxy, metrics)
}

/// The value of one sample, once the reports (one a second) show `want`.
fn metric_reaches(proxy: &Proxy, metrics: SocketAddr, name: &str, labels: &[&str], want: u64) {
    proxy.metric_when(metrics, name, labels, |v| v == want as f64);
}

/// Queries sent upstream so far, over every upstream.
fn upstream_queries(metrics: SocketAddr) -> u64 {
    let body = get(metrics, "/metrics").1;
    spec_tests::scrape::samples(&body)
        .into_iter()
        .filter(|(series, _)| series.starts_with("dnsproxy_upstream_queries_total"))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits for a report (pushed once a second) to take in what came before.
fn settle() {
    sleep(Duration::from_millis(1_300));
}

fn udp(proxy: &Proxy, q: &Message) -> Message {
    exchange_udp(proxy.addr(), q, DEFAULT_TIMEOUT).expect("an answer over UDP")
}

fn ttls(m: &Message) -> Vec<u32> {
    m.answers().iter().map(Record::ttl).collect()
}

#[test]
fn a_repeated_question_is_answered_from_memory_with_its_ttl_counted_down() {
    let resolver = Kind::Unbound.start(Chain::DotTest);
    let (proxy, metrics) = cached_proxy(upstream_env(&*resolver), &[]);
    let first = udp(
        &proxy,
        &QueryBuilder::new(zone::A_NAME, RecordType::A).build(),
    );
    assert_eq!(first.response_code(), ResponseCode::NoError);
    assert_eq!(a_records(&first), [zone::A_ADDR]);
    assert_eq!(ttls(&first), [zone::TTL]);
    settle();
    assert_eq!(upstream_queries(metrics), 1);

    sleep(Duration::from_millis(1_700));
    // Another client spelling, ID and transport: the same entry.
    let spelled = "A.Dot.TEST.";
    let q = QueryBuilder::new(spelled, RecordType::A).id(0xBEEF).build();
    let again = udp(&proxy, &q);
    assert_eq!(again.id(), 0xBEEF);
    assert_eq!(a_records(&again), [zone::A_ADDR]);
    let ttl = ttls(&again)[0];
    assert!(
        (zone::TTL - 5..=zone::TTL - 3).contains(&ttl),
        "TTL {ttl} after 3 s"
    );
    assert_eq!(again.queries()[0].name().to_ascii(), spelled);
    assert_eq!(again.answers()[0].name().to_ascii(), spelled);
    assert!(
        !again.authoritative(),
        "a cached answer is not authoritative"
    );
    let tcp = query_tcp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(a_records(&tcp), [zone::A_ADDR]);

    metric_reaches(
        &proxy,
        metrics,
        "dnsproxy_cache_lookups_total",
        &["result=\"hit\""],
        2,
    );
    assert_eq!(upstream_queries(metrics), 1, "{}", proxy.log());
    metric_reaches(&proxy, metrics, "dnsproxy_cache_entries", &[], 1);
    let body = get(metrics, "/metrics").1;
    let bytes: f64 = value(&body, "dnsproxy_cache_bytes", &[])
        .and_then(|v| v.parse().ok())
        .expect("cache bytes");
    assert!(bytes > 0.0 && bytes < 4096.0, "{bytes} bytes for one entry");
    assert_eq!(
        value(&body, "dnsproxy_cache_max_bytes", &[]).as_deref(),
        Some("16777216")
    );
}

#[test]
fn do_and_cd_are_separate_questions_and_each_client_gets_its_own_opt() {
    let resolver = Kind::Unbound.start(Chain::DotTest);
    let (proxy, metrics) = cached_proxy(upstream_env(&*resolver), &[]);
    let plain = QueryBuilder::new(zone::A_NAME, RecordType::A).build();
    let edns = QueryBuilder::new(zone::A_NAME, RecordType::A)
        .edns(4096)
        .build();
    let dnssec = QueryBuilder::new(zone::A_NAME, RecordType::A)
        .dnssec_ok(true)
        .build();
    let mut cd = QueryBuilder::new(zone::A_NAME, RecordType::A).build();
    cd.set_checking_disabled(true);

    // No OPT asked, none given; then the same question with EDNS (DO=0) is
    // the same entry, and gets an OPT of its own.
    assert!(udp(&proxy, &plain).extensions().is_none());
    let with_opt = udp(&proxy, &edns);
    let opt = with_opt
        .extensions()
        .as_ref()
        .expect("an OPT for an EDNS client");
    assert!(!opt.flags().dnssec_ok);
    settle();
    assert_eq!(upstream_queries(metrics), 1);

    let answered = udp(&proxy, &dnssec);
    assert!(
        answered
            .extensions()
            .as_ref()
            .expect("OPT")
            .flags()
            .dnssec_ok
    );
    let answered = udp(&proxy, &cd);
    assert!(answered.checking_disabled());
    settle();
    assert_eq!(
        upstream_queries(metrics),
        3,
        "DO and CD each asked upstream"
    );

    // Each from memory now.
    for q in [&plain, &edns, &dnssec, &cd] {
        assert_eq!(a_records(&udp(&proxy, q)), [zone::A_ADDR]);
    }
    metric_reaches(
        &proxy,
        metrics,
        "dnsproxy_cache_lookups_total",
        &["result=\"hit\""],
        5,
    );
    assert_eq!(upstream_queries(metrics), 3);
}

#[test]
fn rfc2308_nxdomain_is_cached_with_its_soa_for_the_negative_ttl() {
    let resolver = Kind::Unbound.start(Chain::DotTest);
    let (proxy, metrics) = cached_proxy(upstream_env(&*resolver), &[]);
    let q = QueryBuilder::new(zone::NX_NAME, RecordType::A).build();
    let first = udp(&proxy, &q);
    assert_eq!(first.response_code(), ResponseCode::NXDomain);
    assert_eq!(first.name_servers().len(), 1, "the SOA: {first:?}");
    sleep(Duration::from_millis(2_100));
    let again = udp(&proxy, &q);
    assert_eq!(again.response_code(), ResponseCode::NXDomain);
    let soa = &again.name_servers()[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    // min(SOA TTL, MINIMUM) = 300, counted down.
    assert!(
        soa.ttl() <= 298,
        "negative TTL {} not counted down",
        soa.ttl()
    );
    settle();
    assert_eq!(upstream_queries(metrics), 1, "{}", proxy.log());
}

#[test]
fn a_large_answer_is_kept_whole_and_truncated_for_each_udp_client() {
    let resolver = Kind::Unbound.start(Chain::DotTest);
    let (proxy, metrics) = cached_proxy(upstream_env(&*resolver), &[]);
    let big = QueryBuilder::new(zone::BIG_NAME, RecordType::TXT)
        .edns(1232)
        .build();
    let over_udp = udp(&proxy, &big);
    assert!(over_udp.truncated(), "8.5 KB over UDP: TC=1");
    // The retry over TCP is answered from memory, whole.
    let over_tcp = query_tcp(proxy.addr(), zone::BIG_NAME, RecordType::TXT);
    assert!(!over_tcp.truncated());
    let mut txt = spec_tests::txt_strings(&over_tcp);
    txt.sort();
    assert_eq!(txt, zone::big_txt());
    assert!(udp(&proxy, &big).truncated());
    settle();
    assert_eq!(upstream_queries(metrics), 1, "{}", proxy.log());
}

#[test]
fn rfc8767_stale_answers_are_served_while_the_resolver_is_stopped() {
    let mut resolver = Kind::Unbound.start(Chain::DotTest);
    // Entries expire after 2 s; a second upstream that never answers shows
    // the stale answer waits for every upstream to fail.
    let dead = spec_tests::ClosedPort::new();
    let mut env = upstream_env(&*resolver);
    for (k, v) in &mut env {
        match k.as_str() {
            "TLS_HOST" => v.push_str(",127.0.0.1"),
            "TLS_PORT" => *v = format!("{v},{}", dead.port()),
            _ => {}
        }
    }
    let (proxy, metrics) = cached_proxy(
        env,
        &[("CACHE_MAX_TTL", "2"), ("UPSTREAM_TIMEOUT", "500ms")],
    );
    let q = QueryBuilder::new(zone::A_NAME, RecordType::A).build();
    assert_eq!(ttls(&udp(&proxy, &q)), [2]);
    resolver.stop();
    sleep(Duration::from_millis(2_500));

    let stale = udp(&proxy, &q);
    assert_eq!(
        stale.response_code(),
        ResponseCode::NoError,
        "{}",
        proxy.log()
    );
    assert_eq!(a_records(&stale), [zone::A_ADDR]);
    assert_eq!(ttls(&stale), [30], "RFC 8767 §4: stale answers get TTL 30");
    // A name never cached has nothing stale: SERVFAIL.
    let other = udp(
        &proxy,
        &QueryBuilder::new(zone::AAAA_NAME, RecordType::AAAA).build(),
    );
    assert_eq!(other.response_code(), ResponseCode::ServFail);
    metric_reaches(
        &proxy,
        metrics,
        "dnsproxy_cache_lookups_total",
        &["result=\"stale\""],
        1,
    );
}

#[test]
fn rfc9520_a_failure_is_answered_from_memory_for_a_second_only() {
    // Nothing listens upstream: every attempt fails at once.
    let dead = spec_tests::ClosedPort::new();
    let env = vec![
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_PORT".to_owned(), dead.port().to_string()),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
    ];
    let (proxy, metrics) = cached_proxy(env, &[]);
    let q = QueryBuilder::new(zone::A_NAME, RecordType::A).build();
    assert_eq!(udp(&proxy, &q).response_code(), ResponseCode::ServFail);
    // Within cache_failure_ttl (1 s): from memory, not a lookup miss.
    assert_eq!(udp(&proxy, &q).response_code(), ResponseCode::ServFail);
    metric_reaches(
        &proxy,
        metrics,
        "dnsproxy_cache_lookups_total",
        &["result=\"failure\""],
        1,
    );
    metric_reaches(
        &proxy,
        metrics,
        "dnsproxy_cache_lookups_total",
        &["result=\"miss\""],
        1,
    );
    sleep(Duration::from_millis(1_100));
    // After it, the question is asked again (a miss), and fails again.
    assert_eq!(udp(&proxy, &q).response_code(), ResponseCode::ServFail);
    metric_reaches(
        &proxy,
        metrics,
        "dnsproxy_cache_lookups_total",
        &["result=\"miss\""],
        2,
    );
}

/// A settings file naming each resolver in its own section.
fn settings(upstreams: &[(&str, &dyn Resolver)]) -> String {
    let ca = spec_tests::fixture("pki/root.pem");
    let mut text = String::new();
    for (name, resolver) in upstreams {
        let addr = resolver.addr();
        text.push_str(&format!(
            "[TLS_SERVER {name}]\ntls_host = {}\ntls_port = {}\ntls_hostname = dot.test\n\
             tls_ca_file = {}\n",
            addr.ip(),
            addr.port(),
            ca.display()
        ));
    }
    text
}

#[test]
fn a_reload_to_other_upstreams_flushes_the_cache_and_a_renaming_does_not() {
    let a = Kind::Fixture.start(Chain::DotTest);
    let b = Kind::Fixture.start(Chain::DotTest);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("settings.ini");
    std::fs::write(&path, settings(&[("a", &*a)])).expect("write settings");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let proxy = Proxy::start(
        &[
            ("METRICS_LISTEN", metrics.to_string().as_str()),
            ("CACHE_SIZE_MIB", ""),
        ],
        &["--config", path.to_str().expect("utf-8 path")],
    );
    let q = QueryBuilder::new(zone::A_NAME, RecordType::A).build();
    assert_eq!(a_records(&udp(&proxy, &q)), [zone::A_ADDR]);
    metric_reaches(&proxy, metrics, "dnsproxy_cache_entries", &[], 1);

    // The same server under another name: what it answered is still trusted.
    std::fs::write(&path, settings(&[("renamed", &*a)])).expect("write settings");
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    sleep(Duration::from_millis(1_500));
    assert_eq!(proxy.log_lines_with("cache flushed"), 0, "{}", proxy.log());
    metric_reaches(&proxy, metrics, "dnsproxy_cache_entries", &[], 1);

    // Another server: flushed, and the next answer comes from it.
    std::fs::write(&path, settings(&[("b", &*b)])).expect("write settings");
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("cache flushed", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    metric_reaches(&proxy, metrics, "dnsproxy_cache_entries", &[], 0);
    assert_eq!(a_records(&udp(&proxy, &q)), [zone::A_ADDR]);
    metric_reaches(
        &proxy,
        metrics,
        "dnsproxy_upstream_queries_total",
        &["upstream=\"b\""],
        1,
    );
}
