//! Many clients at once, over UDP and TCP, reusing the same query IDs: every client
//! gets its own answer (RFC 7766 §7: the proxy rewrites IDs to be unique on its
//! upstream connection and matches answers that come back in any order), and the
//! upstream connections stay few: the fixture resolver counts the ones it accepts.
//! A second connection opens only while the first is saturated (100 queries in
//! flight), and closes when the load falls.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use spec_tests::dns::{self, QueryBuilder};
use spec_tests::proxy::{Proxy, upstreams_env};
use spec_tests::{Chain, FixtureResolver, Misbehave, Resolver as _, zone};

/// What each client asks: a different name per client, so a mixed-up answer shows.
const NAMES: [(&str, RecordType); 4] = [
    (zone::A_NAME, RecordType::A),
    (zone::MULTI_NAME, RecordType::A),
    (zone::AAAA_NAME, RecordType::AAAA),
    (zone::NX_NAME, RecordType::A),
];

/// The answer is the right one for its question.
fn check(query: &Message, answer: &Message) {
    assert_eq!(answer.id(), query.id());
    assert_eq!(
        answer.queries(),
        query.queries(),
        "answer for another question"
    );
    let name = query.queries()[0].name().to_ascii();
    match name.as_str() {
        zone::A_NAME => assert_eq!(dns::a_records(answer), [zone::A_ADDR]),
        zone::MULTI_NAME => {
            let mut got = dns::a_records(answer);
            got.sort();
            assert_eq!(got, zone::MULTI_ADDRS);
        }
        zone::AAAA_NAME => assert_eq!(dns::aaaa_records(answer), [zone::AAAA_ADDR]),
        _ => assert_eq!(answer.response_code(), ResponseCode::NXDomain),
    }
}

/// The loopback source of client `c`: each its own address (127.0.1.x), as many
/// clients are. From one address they would be one source, which may hold only a
/// quarter of `max_inflight` once half of it is in use.
fn source(c: usize) -> IpAddr {
    let c = u8::try_from(c % 250).expect("c % 250 fits in a byte");
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, c + 1))
}

/// `clients` UDP clients, each sending `per_client` queries with IDs 1..=per_client
/// (the same IDs in every client), all at once, each from its own source.
fn udp_clients(addr: SocketAddr, clients: usize, per_client: u16) {
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let (name, rtype) = NAMES[c % NAMES.len()];
                let sock = dns::udp_socket_from(source(c)).expect("bind");
                sock.set_read_timeout(Some(dns::DEFAULT_TIMEOUT))
                    .expect("timeout");
                let queries: Vec<Message> = (1..=per_client)
                    .map(|id| QueryBuilder::new(name, rtype).id(id).build())
                    .collect();
                for q in &queries {
                    sock.send_to(&dns::encode(q), addr).expect("send");
                }
                let mut buf = vec![0u8; 4096];
                let mut seen = std::collections::HashSet::new();
                while seen.len() < queries.len() {
                    let (n, _) = sock.recv_from(&mut buf).unwrap_or_else(|e| {
                        panic!(
                            "client {c}: {} of {} answers, then {e}",
                            seen.len(),
                            per_client
                        )
                    });
                    let answer = dns::decode(&buf[..n]);
                    let q = &queries[usize::from(answer.id()) - 1];
                    check(q, &answer);
                    assert!(
                        seen.insert(answer.id()),
                        "client {c}: ID {} twice",
                        answer.id()
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a UDP client failed");
    }
}

/// `clients` TCP clients, each pipelining `per_client` queries with IDs 1..=per_client,
/// each from its own source.
fn tcp_clients(addr: SocketAddr, clients: usize, per_client: u16) {
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let (name, rtype) = NAMES[c % NAMES.len()];
                let queries: Vec<Message> = (1..=per_client)
                    .map(|id| QueryBuilder::new(name, rtype).id(id).build())
                    .collect();
                let from = Some(source(c + 100));
                let opts = dns::TcpOptions {
                    from,
                    ..dns::TcpOptions::default()
                };
                let mut stream = dns::connect_tcp_with(addr, opts).expect("connect");
                for answer in dns::tcp_exchange(&mut stream, &queries) {
                    check(&queries[usize::from(answer.id()) - 1], &answer);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a TCP client failed");
    }
}

#[test]
fn rfc7766_many_udp_and_tcp_clients_with_the_same_ids_get_their_own_answers() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let proxy = Proxy::in_front_of(&[&resolver], &[]);
    let (udp_addr, tcp_addr) = (proxy.addr(), proxy.addr());
    let udp = thread::spawn(move || udp_clients(udp_addr, 48, 20));
    let tcp = thread::spawn(move || tcp_clients(tcp_addr, 32, 16));
    udp.join().expect("UDP clients");
    tcp.join().expect("TCP clients");
    // 48 * 20 + 32 * 16 = 1472 queries over one persistent upstream connection.
    let conns = resolver.accepted_connections();
    assert!(
        (1..=2).contains(&conns),
        "{conns} upstream connections for 1472 queries (expected 1, at most 2):\n{}",
        resolver.log()
    );
}

#[test]
fn rfc7766_answers_out_of_order_from_the_upstream_reach_the_right_clients() {
    // The fixture holds 8 queries and answers them newest first.
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::Reorder(8));
    let proxy = Proxy::in_front_of(&[&resolver], &[]);
    let addr = proxy.addr();
    let udp = thread::spawn(move || udp_clients(addr, 16, 8));
    tcp_clients(addr, 8, 8);
    udp.join().expect("UDP clients");
    assert!(resolver.accepted_connections() <= 2, "{}", resolver.log());
}

#[test]
fn a_second_upstream_connection_opens_only_while_the_first_is_saturated() {
    // Each answer 400 ms after its query: a burst stays in flight together.
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::DelayMs(400));
    let (proxy, metrics) = Proxy::start_with_metrics(upstreams_env(
        &[&resolver],
        &[("UPSTREAM_IDLE_TIMEOUT", "3s")],
    ));
    let label = format!("upstream=\"{}\"", resolver.addr());
    let addr = proxy.addr();

    // 60 queries in flight at once: one connection carries them.
    udp_clients(addr, 60, 1);
    assert_eq!(resolver.accepted_connections(), 1, "{}", proxy.log());

    // 160 at once: the first connection reaches 100 in flight, a second
    // opens and takes the rest; none is refused or lost.
    udp_clients(addr, 160, 1);
    assert_eq!(resolver.accepted_connections(), 2, "{}", proxy.log());
    proxy.metric_when(metrics, "dnsproxy_upstream_connections", &[&label], |v| {
        v == 2.0
    });

    // Light load goes to the first connection only, so the second reaches
    // its idle timeout and closes, and no third is opened.
    let started = std::time::Instant::now();
    let mut connections = 2.0;
    while started.elapsed() < std::time::Duration::from_secs(8) && connections > 1.0 {
        udp_clients(addr, 2, 1);
        thread::sleep(std::time::Duration::from_millis(500));
        let body = spec_tests::scrape::get(metrics, "/metrics").1;
        connections = spec_tests::scrape::value(&body, "dnsproxy_upstream_connections", &[&label])
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
    }
    assert_eq!(
        connections,
        1.0,
        "the second connection idled out:\n{}",
        proxy.log()
    );
    assert_eq!(resolver.accepted_connections(), 2, "{}", proxy.log());
}
