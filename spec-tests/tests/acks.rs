//! The proxy's ACKs on its upstream connections. While answers are still
//! owed on a connection the proxy acknowledges each read at once: a server
//! that leaves Nagle's algorithm on (unbound does) holds its next small
//! answer until the one before is acknowledged, and Linux would delay that
//! ACK by up to 40 ms. With no answer owed it sends no ACK of its own: the
//! ACK rides on the next query. The fixture resolver plays the server,
//! reached at its address on a Docker network rather than through a
//! published port, whose relay would do the acknowledging. The proxy's ACKs
//! are counted by the kernel (`ss -ti`: segments sent, less those carrying
//! data).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use spec_tests::dns;
use spec_tests::hickory_proto::op::Message;
use spec_tests::hickory_proto::rr::RecordType;
use spec_tests::proxy::with_settings;
use spec_tests::{Chain, FixtureResolver, Misbehave, Network, Proxy, fixture, zone};

/// The proxy with one worker (one upstream connection) and no cache (every
/// query goes upstream), in front of the DoT server at `upstream`.
fn proxy_in_front_of(upstream: SocketAddr) -> Proxy {
    let env = vec![
        ("TLS_HOST".to_string(), upstream.ip().to_string()),
        ("TLS_PORT".to_string(), upstream.port().to_string()),
        ("TLS_HOSTNAME".to_string(), "dot.test".to_string()),
        (
            "TLS_CA_FILE".to_string(),
            fixture("pki/root.pem").display().to_string(),
        ),
    ];
    let env = with_settings(env, &[("WORKERS", "1"), ("CACHE_SIZE_MIB", "0")]);
    Proxy::start(&env, &[])
}

/// The fixture resolver behaving as told, on a network of its own; and its
/// address there.
fn resolver_on_network(net: &Network, behaviour: Misbehave) -> (FixtureResolver, SocketAddr) {
    let resolver = FixtureResolver::start_full(Chain::DotTest, behaviour, Vec::new(), Some(net));
    let addr = resolver.network_addr().expect("an address on the network");
    (resolver, addr)
}

/// Sends both queries at once over `sock` and waits for both answers.
fn exchange_pair(sock: &UdpSocket, queries: &[Message; 2]) {
    for q in queries {
        sock.send(&dns::encode(q)).expect("send");
    }
    let mut owed: Vec<u16> = queries.iter().map(|q| q.id()).collect();
    let mut buf = vec![0u8; 65535];
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    while !owed.is_empty() {
        let n = sock.recv(&mut buf).expect("both answers within 5 s");
        let answer = dns::decode(&buf[..n]);
        owed.retain(|&id| id != answer.id());
    }
}

/// Segments the proxy sent on its connections to `upstream`, and those of
/// them that carried data, as the kernel counts them.
fn segments_sent_to(upstream: SocketAddr) -> (u64, u64) {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established", "dst"])
        .arg(upstream.to_string())
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |key: &str| -> u64 {
        text.split_whitespace()
            .filter_map(|t| t.strip_prefix(key))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    };
    let segs = count("segs_out:");
    assert!(segs > 0, "no connection to {upstream} in:\n{text}");
    (segs, count("data_segs_out:"))
}

#[test]
fn pipelined_answers_behind_a_server_with_nagle_are_not_held_for_a_delayed_ack() {
    let net = Network::new("acks-nagle");
    let (_resolver, upstream) = resolver_on_network(&net, Misbehave::Nagle);
    let proxy = proxy_in_front_of(upstream);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(proxy.addr()).expect("connect");
    let pair = || {
        [
            dns::query(zone::A_NAME, RecordType::A),
            dns::query(zone::AAAA_NAME, RecordType::AAAA),
        ]
    };
    // The connection opens, and sends and receives in turns: from then on
    // Linux delays its ACKs (it has seen the exchange go back and forth).
    for _ in 0..5 {
        exchange_pair(&sock, &pair());
    }
    // Two queries at once, in turns: the server writes two answers, and
    // holds the second until the first is acknowledged.
    let mut took: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            exchange_pair(&sock, &pair());
            let took = start.elapsed();
            std::thread::sleep(Duration::from_millis(5));
            took
        })
        .collect();
    took.sort();
    let median = took[took.len() / 2];
    // A delayed ACK is 40 ms at least; an answer released at once takes
    // well under a millisecond here.
    assert!(
        median < Duration::from_millis(20),
        "the second answer waited for a delayed ACK: median {median:?}, all {took:?}"
    );
}

#[test]
fn no_ack_of_its_own_while_no_answer_is_owed() {
    let net = Network::new("acks-idle");
    let (_resolver, upstream) = resolver_on_network(&net, Misbehave::None);
    let proxy = proxy_in_front_of(upstream);
    // The connection opens (its handshake's segments are not counted).
    dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
    let (segs_before, data_before) = segments_sent_to(upstream);
    // One query at a time, each answered before the next.
    const QUERIES: u64 = 100;
    for _ in 0..QUERIES {
        let answer = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(dns::a_records(&answer), vec![zone::A_ADDR]);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (segs, data) = segments_sent_to(upstream);
    let data = data - data_before;
    let acks = (segs - segs_before) - data;
    assert!(
        data >= QUERIES,
        "{data} data segments for {QUERIES} queries"
    );
    // Each answer's ACK rides on the next query. A few may still go alone
    // (the kernel's own timer, a late scheduling): not one per answer.
    assert!(
        acks <= QUERIES / 4,
        "{acks} ACKs of their own for {QUERIES} answers, none of them owed more"
    );
}
