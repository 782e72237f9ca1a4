//! End to end: the real `dnsproxy` binary running the real component against
//! Debian's unbound serving DNS-over-TLS on loopback with the fixture PKI.
//! Every test talks to the proxy only over the network.

use std::io::{ErrorKind, Read as _, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use spec_tests::dns::{self, QueryBuilder};
use spec_tests::proxy::{Proxy, upstream_env};
use spec_tests::unbound::{Chain, Unbound};
use spec_tests::{ClosedPort, FixtureResolver, Resolver as _, fixture, pin, zone};

fn proxy_for(unbound: &Unbound, extra: &[(&str, &str)]) -> Proxy {
    Proxy::in_front_of(&[unbound], extra)
}

fn assert_a(msg: &Message) {
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert_eq!(dns::a_records(msg), vec![zone::A_ADDR]);
}

#[test]
fn udp_and_tcp_a_queries_are_answered_through_dot() {
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = proxy_for(&unbound, &[]);
    assert_a(&dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    assert_a(&dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A));
    let aaaa = dns::query_udp(proxy.addr(), zone::AAAA_NAME, RecordType::AAAA);
    assert_eq!(dns::aaaa_records(&aaaa), vec![zone::AAAA_ADDR]);
    let nx = dns::query_tcp(proxy.addr(), zone::NX_NAME, RecordType::A);
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
}

#[test]
fn rfc7766_pipelined_tcp_queries_get_their_own_answers() {
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = proxy_for(&unbound, &[]);
    let names = [
        zone::A_NAME,
        zone::MULTI_NAME,
        zone::NX_NAME,
        zone::AAAA_NAME,
    ];
    let queries: Vec<Message> = (0..40u16)
        .map(|i| {
            let name = names[usize::from(i) % names.len()];
            let rtype = if name == zone::AAAA_NAME {
                RecordType::AAAA
            } else {
                RecordType::A
            };
            // Two clients' worth of colliding IDs on one connection is legal
            // for the proxy to see; keep them unique here so answers can be
            // matched, and small so they collide with other connections.
            QueryBuilder::new(name, rtype).id(i + 1).build()
        })
        .collect();
    let mut stream = dns::connect_tcp(proxy.addr()).expect("connect to the proxy");
    let answers = dns::tcp_exchange(&mut stream, &queries);
    assert_eq!(answers.len(), queries.len());
    for q in &queries {
        let a = answers
            .iter()
            .find(|a| a.id() == q.id())
            .expect("an answer for every id");
        assert_eq!(
            a.queries(),
            q.queries(),
            "answer {} carries its own question",
            q.id()
        );
        assert_eq!(a.message_type(), MessageType::Response);
    }
}

#[test]
fn rfc6891_large_udp_answer_is_truncated_and_complete_over_tcp() {
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = proxy_for(&unbound, &[]);
    for payload in [512u16, 1232, 4096] {
        let q = QueryBuilder::new(zone::BIG_NAME, RecordType::TXT)
            .edns(payload)
            .build();
        let raw = dns::query_udp_raw(proxy.addr(), &dns::encode(&q)).expect("a UDP answer");
        assert!(
            raw.len() <= usize::from(payload),
            "{} bytes > {payload}",
            raw.len()
        );
        let a = dns::decode(&raw);
        assert!(a.truncated(), "TC=1 at payload {payload}");
        assert_eq!(a.id(), q.id());
        assert_eq!(a.queries(), q.queries());
        assert!(a.extensions().is_some(), "OPT kept in the truncated answer");
    }
    // Without EDNS the limit is 512 and no OPT appears (the proxy added one
    // upstream for padding and must remove it).
    let q = QueryBuilder::new(zone::MEDIUM_NAME, RecordType::TXT).build();
    let raw = dns::query_udp_raw(proxy.addr(), &dns::encode(&q)).expect("a UDP answer");
    assert!(raw.len() <= 512);
    let a = dns::decode(&raw);
    assert!(a.truncated());
    assert!(a.extensions().is_none(), "no OPT for a client without EDNS");
    let full = dns::query_tcp(proxy.addr(), zone::BIG_NAME, RecordType::TXT);
    assert!(!full.truncated());
    assert_eq!(dns::txt_strings(&full).len(), zone::BIG_COUNT);
}

#[test]
fn small_answer_without_edns_has_no_opt_record() {
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = proxy_for(&unbound, &[]);
    let q = QueryBuilder::new(zone::A_NAME, RecordType::A).build();
    let a = dns::exchange_udp(proxy.addr(), &q, dns::DEFAULT_TIMEOUT).expect("answer");
    assert_a(&a);
    assert!(a.extensions().is_none());
}

#[test]
fn second_upstream_serves_when_the_first_is_dead() {
    let unbound = Unbound::start(Chain::DotTest);
    let dead = ClosedPort::new();
    let ports = format!("{},{}", dead.port(), unbound.port());
    let proxy = proxy_for(&unbound, &[("TLS_HOST", "127.0.0.1"), ("TLS_PORT", &ports)]);
    for _ in 0..3 {
        assert_a(&dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    }
    assert!(
        proxy.wait_for_log("check=network", Duration::from_secs(2)),
        "{}",
        proxy.log()
    );
}

#[test]
fn hung_upstream_is_abandoned_for_the_next_within_the_deadline() {
    // Accepts TCP (the kernel completes the handshake from the backlog) but
    // never speaks TLS: an upstream that hangs.
    let hung = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    let unbound = Unbound::start(Chain::DotTest);
    let ports = format!("{hung_port},{}", unbound.port());
    let proxy = proxy_for(
        &unbound,
        &[
            ("TLS_PORT", &ports),
            ("QUERY_TIMEOUT", "3s"),
            ("UPSTREAM_TIMEOUT", "700ms"),
        ],
    );
    let started = Instant::now();
    assert_a(&dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within the deadline"
    );
    drop(hung);
}

#[test]
fn every_query_gets_servfail_within_the_deadline_when_no_upstream_answers() {
    let hung = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = hung.local_addr().expect("addr").port().to_string();
    let env = [
        ("TLS_HOST", "127.0.0.1"),
        ("TLS_PORT", port.as_str()),
        ("TLS_HOSTNAME", "dot.test"),
        ("QUERY_TIMEOUT", "1s"),
    ];
    let proxy = Proxy::start(&env, &[]);
    let started = Instant::now();
    let a = dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(a.response_code(), ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn malformed_input_gets_formerr_or_is_dropped_and_the_proxy_keeps_serving() {
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = proxy_for(&unbound, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // Shorter than a header: dropped.
    sock.send_to(&[1, 2, 3], proxy.addr()).expect("send");
    // A header with QDCOUNT=2: FORMERR with the same ID.
    let mut two_questions = QueryBuilder::new(zone::A_NAME, RecordType::A)
        .id(0x4242)
        .to_bytes();
    two_questions[5] = 2;
    sock.send_to(&two_questions, proxy.addr()).expect("send");
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("a FORMERR answer");
    let a = dns::decode(&buf[..n]);
    assert_eq!(a.id(), 0x4242);
    assert_eq!(a.response_code(), ResponseCode::FormErr);
    // A zero-length TCP frame closes that connection only.
    let mut bad = TcpStream::connect(proxy.addr()).expect("connect");
    bad.write_all(&[0, 0]).expect("write");
    assert_a(&dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    assert_a(&dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A));
}

#[test]
fn clients_outside_allow_networks_get_no_answer_at_all() {
    // 127.0.0.1 is outside; 127.0.0.2 is inside and shows the proxy serves.
    let inside = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = proxy_for(&unbound, &[("ALLOW_NETWORKS", "127.0.0.2/32")]);
    // UDP: the outsider's query is dropped before the component sees it. The
    // insider's query, sent after it, is answered; by then the outsider's has
    // been read, so a reply to it would already be there.
    let outsider = UdpSocket::bind("127.0.0.1:0").expect("bind");
    outsider.connect(proxy.addr()).expect("connect");
    let q = dns::query(zone::A_NAME, RecordType::A);
    outsider.send(&dns::encode(&q)).expect("send");
    let a = dns::exchange_udp_from(inside, proxy.addr(), &q, dns::DEFAULT_TIMEOUT)
        .expect("the insider is answered");
    assert_a(&a);
    outsider
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let got = outsider.recv(&mut buf);
    assert!(
        got.is_err(),
        "an outsider got a UDP answer: {:?}",
        got.map(|n| dns::decode(&buf[..n]))
    );
    // TCP: the accept is refused with a RST; no answer, no hang. The kernel
    // completes the handshake, so the reset arrives on the first read or
    // write, or already while the client sets its socket options.
    match dns::connect_tcp(proxy.addr()) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionReset,
            "an outsider's TCP connect failed otherwise than by a reset: {e}"
        ),
        Ok(mut s) => {
            let _ = dns::write_framed(&mut s, &dns::encode(&q));
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            match s.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => panic!("an outsider got {n} bytes over TCP"),
                Err(e) => assert!(
                    !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "an outsider's TCP connection was held open, not reset: {e}"
                ),
            }
        }
    }
    let mut s = dns::connect_tcp_with(
        proxy.addr(),
        dns::TcpOptions {
            from: Some(inside),
            ..dns::TcpOptions::default()
        },
    )
    .expect("connect from inside");
    assert_a(&dns::tcp_exchange(&mut s, &[q]).remove(0));
}

#[test]
fn ipv6_listen_address_serves() {
    if UdpSocket::bind("[::1]:0").is_err() {
        panic!("this machine has no ::1; the test needs IPv6 loopback");
    }
    let unbound = Unbound::start(Chain::DotTest);
    let proxy = proxy_for(&unbound, &[("LOCAL_HOST", "::1")]);
    let addr: SocketAddr = proxy.addr();
    assert!(addr.is_ipv6());
    assert_a(&dns::query_udp(addr, zone::A_NAME, RecordType::A));
    assert_a(&dns::query_tcp(addr, zone::A_NAME, RecordType::A));
}

#[test]
fn sigterm_stops_the_proxy_within_two_seconds() {
    let unbound = Unbound::start(Chain::DotTest);
    let mut proxy = proxy_for(&unbound, &[]);
    assert_a(&dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    let pid = proxy.pid().to_string();
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = proxy.exit_status_within(Duration::from_secs(2));
    assert!(
        exit.is_some_and(|s| s.success()),
        "exited cleanly within 2 s: {exit:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn bad_config_from_env_exits_64_with_one_line() {
    let (code, log) = Proxy::run_to_exit(
        &[
            ("TLS_HOST", "127.0.0.1"),
            ("TLS_HOSTNAME", "dot.test"),
            ("TLS_PORT", "abc"),
        ],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(64), "{log}");
    assert_eq!(log.trim().lines().count(), 1, "{log}");
    assert!(log.contains("TLS_PORT") && log.contains("abc"), "{log}");
}

fn probe_results(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains(" probe op="))
        .filter_map(|l| {
            let rest = &l[l.find("op=")? + 3..];
            let (op, result) = rest.split_once(" result=")?;
            Some((op.to_owned(), result.trim().to_owned()))
        })
        .collect()
}

#[test]
fn socket_policy_refuses_everything_not_configured_inside_the_component() {
    let probe = spec_tests::workspace_root().join("target/wasm32-wasip2/release/policy-probe.wasm");
    assert!(
        probe.is_file(),
        "build the probe guest with `make build-host` ({})",
        probe.display()
    );
    let unbound = Unbound::start(Chain::DotTest);
    let probe = probe.display().to_string();
    let (code, log) = Proxy::run_to_exit(
        &upstream_env(&unbound),
        &["--component", &probe],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{log}");
    let results = probe_results(&log);
    let expect = [
        ("udp-bind-listen", "ok"),
        ("tcp-listen-listen", "ok"),
        ("udp-bind-other-port", "denied"),
        ("tcp-listen-other-port", "denied"),
        ("udp-bind-wildcard", "denied"),
        ("udp-send-unsolicited", "denied"),
        ("udp-batch-send-unsolicited", "denied"),
        ("tcp-connect-upstream", "ok"),
        ("tcp-connect-other-port", "denied"),
        ("tcp-connect-other-host", "denied"),
        ("env-is-empty", "ok"),
    ];
    for (op, want) in expect {
        let got = results
            .iter()
            .find(|(o, _)| o == op)
            .map(|(_, r)| r.as_str());
        assert_eq!(got, Some(want), "{op}\n{log}");
    }
    for op in ["fs-read-root", "name-lookup"] {
        let got = results
            .iter()
            .find(|(o, _)| o == op)
            .map(|(_, r)| r.as_str());
        assert!(
            got.is_some_and(|r| r != "ok"),
            "{op} must fail: {got:?}\n{log}"
        );
    }
}

/// `dnsproxy spki` against a live unbound serving `chain`, trusting the test root.
fn spki_against(chain: Chain) -> std::process::Output {
    let unbound = Unbound::start(chain);
    spec_tests::proxy::run_spki(unbound.addr())
}

#[test]
fn spki_tool_prints_the_fixture_pins_of_a_live_chain() {
    let out = spki_against(Chain::DotTest);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["dot-test", "intermediate", "root"] {
        assert!(stdout.contains(&pin(name)), "{name} pin in:\n{stdout}");
    }
    assert!(stdout.contains("chain verified"));
}

#[test]
fn spki_tool_reports_an_unverified_chain() {
    let out = spki_against(Chain::Evil);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("NOT verified"), "{stdout}");
    assert!(stdout.contains(&pin("evil-dot-test")), "{stdout}");
}

#[test]
fn spki_tool_prints_pins_of_a_pem_file() {
    let out = std::process::Command::new(Proxy::binary())
        .args(["spki", "--pem"])
        .arg(fixture("pki/dot-test.chain.pem"))
        .output()
        .expect("run spki");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stable = stdout.replace(
        &spec_tests::workspace_root().display().to_string(),
        "<root>",
    );
    insta::assert_snapshot!(stable);
}

#[test]
fn upstream_without_chacha20_is_served_with_aes_gcm() {
    // Every suite's records are sealed by the host, so the component
    // offers them all in one configuration (there is no second one to
    // retry with): a server that only does AES-GCM is served by the first
    // handshake.
    let unbound = Unbound::start_with(
        Chain::DotTest,
        "tls-ciphersuites: \"TLS_AES_128_GCM_SHA256\"\ntls-ciphers: \"ECDHE-ECDSA-AES128-GCM-SHA256\"\n",
    );
    let proxy = proxy_for(&unbound, &[("LOG_LEVEL", "debug")]);
    assert_a(&dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    assert_a(&dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A));
    // One connection for both queries, and no failed attempt.
    let log = proxy.log();
    assert_eq!(log.matches("upstream connected").count(), 1, "{log}");
    assert!(!log.contains("upstream failed"), "{log}");
}

#[test]
fn a_tls12_only_upstream_is_served_with_its_records_sealed_by_the_host() {
    // TLS 1.2 records go through the host's `aead` interface as TLS 1.3
    // ones do (shell/record.rs); the fixture refuses TLS 1.3.
    let fixture = FixtureResolver::start_tls12_only(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&fixture], &[]);
    assert_a(&dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A));
    assert_a(&dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A));
    let log = fixture.log();
    assert!(
        log.contains("handshake done") && log.contains("version=Some(TLSv1_2)"),
        "{log}"
    );
    assert!(!log.contains("TLSv1_3"), "{log}");
}
