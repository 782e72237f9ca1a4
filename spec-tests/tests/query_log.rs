//! The query log (`log_queries`) and JSON log lines (`log_format = json`):
//! the real binary in front of the fixture resolver, queried over UDP and
//! TCP; what it writes is read back as a person's log collector would.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Map, Value};
use spec_tests::dns::{self, QueryBuilder};
use spec_tests::proxy::Proxy;
use spec_tests::{Chain, FixtureResolver, Misbehave, Resolver as _, wait_until, zone};

/// Sends one UDP query from a socket of our own; returns that socket's
/// address (the client the log must name) and the RCODE.
fn udp_query(proxy: SocketAddr, name: &str, rtype: RecordType) -> (SocketAddr, ResponseCode) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
    let query = QueryBuilder::new(name, rtype).build();
    sock.send_to(&dns::encode(&query), proxy).expect("send");
    let answer = dns::recv_answer(&sock, query.id(), Duration::from_secs(5)).expect("an answer");
    (
        sock.local_addr().expect("local addr"),
        answer.response_code(),
    )
}

/// Sends one TCP query; returns the client address and the RCODE.
fn tcp_query(proxy: SocketAddr, name: &str, rtype: RecordType) -> (SocketAddr, ResponseCode) {
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let answers = dns::tcp_exchange(&mut stream, &[QueryBuilder::new(name, rtype).build()]);
    (
        stream.local_addr().expect("local addr"),
        answers[0].response_code(),
    )
}

/// Every line of the log as a JSON object; panics on a line that is not one.
fn json_lines(log: &str) -> Vec<Map<String, Value>> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(o)) => o,
            _ => panic!("not a JSON object: {l}\nwhole log:\n{log}"),
        })
        .collect()
}

fn query_lines(log: &str) -> Vec<Map<String, Value>> {
    json_lines(log)
        .into_iter()
        .filter(|l| l["target"] == "dnsproxy::query")
        .collect()
}

#[test]
fn json_query_log_names_client_name_type_rcode_upstream_and_duration() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let proxy = Proxy::in_front_of(
        &[&resolver],
        &[("LOG_QUERIES", "true"), ("LOG_FORMAT", "json")],
    );
    let upstream = resolver.addr().to_string();
    let (udp_client, rcode) = udp_query(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(rcode, ResponseCode::NoError);
    let (tcp_client, rcode) = tcp_query(proxy.addr(), zone::NX_NAME, RecordType::AAAA);
    assert_eq!(rcode, ResponseCode::NXDomain);
    assert!(
        proxy.wait_for_log("nx.dot.test.", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    let lines = query_lines(&proxy.log());
    let [udp, tcp] = &lines[..] else {
        panic!("two query lines:\n{}", proxy.log());
    };
    for (line, client, proto, name, qtype, rcode) in [
        (udp, udp_client, "udp", zone::A_NAME, "A", "NOERROR"),
        (tcp, tcp_client, "tcp", zone::NX_NAME, "AAAA", "NXDOMAIN"),
    ] {
        assert_eq!(line["message"], "query", "{line:?}");
        assert_eq!(line["level"], "info", "{line:?}");
        assert_eq!(line["client"], client.to_string(), "{line:?}");
        assert_eq!(line["proto"], proto, "{line:?}");
        assert_eq!(line["name"], name, "{line:?}");
        assert_eq!(line["type"], qtype, "{line:?}");
        assert_eq!(line["rcode"], rcode, "{line:?}");
        assert_eq!(line["upstream"], upstream.as_str(), "{line:?}");
        let ms: f64 = line["duration_ms"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("duration_ms in milliseconds: {line:?}"));
        assert!((0.0..5000.0).contains(&ms), "{line:?}");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    // The component's own events are JSON too, with their fields as keys.
    let serving = json_lines(&proxy.log())
        .into_iter()
        .find(|l| l["message"] == "serving")
        .expect("the serving line");
    assert_eq!(serving["target"], "dnsproxy::component");
    assert_eq!(serving["listen"], proxy.addr().to_string());
}

#[test]
fn text_query_log_is_one_line_per_query() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let proxy = Proxy::in_front_of(&[&resolver], &[("LOG_QUERIES", "1")]);
    let (client, _) = udp_query(proxy.addr(), zone::AAAA_NAME, RecordType::AAAA);
    let (_, _) = udp_query(proxy.addr(), zone::AAAA_NAME, RecordType::AAAA);
    assert!(
        proxy.wait_for_log(&format!("client={client} "), Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    let want = format!(
        "dnsproxy::query: query client={client} proto=udp name={} type=AAAA rcode=NOERROR upstream={} duration_ms=",
        zone::AAAA_NAME,
        resolver.addr()
    );
    assert!(proxy.log().contains(&want), "{want}\nin:\n{}", proxy.log());
    // Each line is written before its answer is sent, but the harness reads
    // the log through a pipe: the second may not have been read yet.
    assert!(
        wait_until(Duration::from_secs(5), || {
            proxy.log_lines_with("dnsproxy::query: query ") == 2
        }),
        "one line per query:\n{}",
        proxy.log()
    );
}

#[test]
fn without_log_queries_no_query_is_logged() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let proxy = Proxy::in_front_of(&[&resolver], &[("LOG_FORMAT", "json")]);
    udp_query(proxy.addr(), zone::A_NAME, RecordType::A);
    tcp_query(proxy.addr(), zone::NX_NAME, RecordType::A);
    // The answers are out; a query line would have been written before them.
    std::thread::sleep(Duration::from_millis(200));
    let log = proxy.log();
    assert!(query_lines(&log).is_empty(), "{log}");
    assert!(!log.contains("dot.test."), "no query name in:\n{log}");
}
