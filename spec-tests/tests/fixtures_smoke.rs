//! The fixtures work without the proxy: the PKI verifies (openssl and rustls), the fixture
//! unbound serves the zone over DoT with the documented answers, and the `Proxy` harness
//! behaves (checked against a stand-in script, not the real binary).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use spec_tests::*;

fn root_ca() -> std::path::PathBuf {
    fixture("pki/root.pem")
}

/// Runs `openssl s_client` against `addr`; returns (exit success, combined output).
fn s_client(u: &Unbound, servername: &str, ca: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &u.addr().to_string(),
            "-servername",
            servername,
        ])
        .args([
            "-verify_hostname",
            servername,
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(fixture(ca))
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn pins_file_lists_every_certificate() {
    let pins = pins();
    let names: Vec<&str> = pins.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "dot-test",
            "evil-dot-test",
            "evil-root",
            "expired-dot-test",
            "intermediate",
            "other-test",
            "root"
        ]
    );
    for (name, p) in &pins {
        assert_eq!(p.len(), 44, "{name}: {p}");
        assert!(p.ends_with('='), "{name}: {p}");
    }
    let distinct: BTreeSet<_> = pins.values().collect();
    assert_eq!(distinct.len(), pins.len(), "every key is different");
    assert_eq!(pin("root"), pins["root"]);
}

#[test]
fn openssl_verifies_the_good_chain_and_rejects_the_evil_one() {
    let good = Unbound::start(Chain::DotTest);
    let (ok, out) = s_client(&good, "dot.test", "pki/root.pem");
    assert!(ok, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    let evil = Unbound::start(Chain::Evil);
    let (ok, out) = s_client(&evil, "dot.test", "pki/root.pem");
    assert!(!ok, "{out}");
    assert!(!out.contains("Verify return code: 0 (ok)"), "{out}");
    // The evil chain is internally consistent: it verifies against its own root.
    let (ok, out) = s_client(&evil, "dot.test", "pki/evil-root.pem");
    assert!(ok, "{out}");
}

#[test]
fn unbound_serves_the_zone_over_dot() {
    let u = Unbound::start(Chain::DotTest);
    let ca = root_ca();
    let q = |name: &str, rtype| query_dot(u.addr(), "dot.test", &ca, name, rtype);

    let a = q(zone::A_NAME, RecordType::A);
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert_eq!(a_records(&a), [zone::A_ADDR]);
    assert_eq!(a.answers()[0].ttl(), zone::TTL);

    let mut multi = a_records(&q(zone::MULTI_NAME, RecordType::A));
    multi.sort();
    assert_eq!(multi, zone::MULTI_ADDRS);

    assert_eq!(
        aaaa_records(&q(zone::AAAA_NAME, RecordType::AAAA)),
        [zone::AAAA_ADDR]
    );

    let mut medium = txt_strings(&q(zone::MEDIUM_NAME, RecordType::TXT));
    medium.sort();
    assert_eq!(medium, zone::medium_txt());

    let big = q(zone::BIG_NAME, RecordType::TXT);
    assert!(!big.truncated());
    assert!(
        encode(&big).len() > 4096,
        "big answer is {} bytes",
        encode(&big).len()
    );
    let mut strings = txt_strings(&big);
    strings.sort();
    assert_eq!(strings, zone::big_txt());

    let nx = q(zone::NX_NAME, RecordType::A);
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert!(nx.answers().is_empty());
    assert_eq!(nx.name_servers()[0].record_type(), RecordType::SOA);

    let nodata = q(zone::A_NAME, RecordType::AAAA);
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.answers().is_empty());

    let outside = q(zone::OUTSIDE_NAME, RecordType::A);
    assert_eq!(outside.response_code(), ResponseCode::Refused);
}

#[test]
fn pipelined_queries_on_one_dot_connection() {
    let u = Unbound::start(Chain::DotTest);
    let msgs: Vec<_> = (0..20u16)
        .map(|i| {
            QueryBuilder::new(zone::A_NAME, RecordType::A)
                .id(1000 + i)
                .edns(1232)
                .dnssec_ok(i % 2 == 0)
                .build()
        })
        .collect();
    let answers = dot_exchange(u.addr(), "dot.test", &root_ca(), &msgs);
    let ids: BTreeSet<u16> = answers.iter().map(|m| m.id()).collect();
    assert_eq!(ids, (1000..1020).collect());
    for m in &answers {
        assert_eq!(a_records(m), [zone::A_ADDR]);
        assert!(m.extensions().is_some(), "EDNS echoed");
    }
}

#[test]
fn rustls_rejects_the_bad_chains() {
    let ca = root_ca();
    let cases = [
        (Chain::Evil, "dot.test", "UnknownIssuer"),
        (Chain::Expired, "dot.test", "certificate expired"),
        (Chain::OtherTest, "dot.test", "not valid for name"),
    ];
    for (chain, name, reason) in cases {
        let u = Unbound::start(chain);
        let err = dot_connect(u.addr(), name, &ca)
            .err()
            .unwrap_or_else(|| panic!("{chain:?} must fail verification"));
        assert!(err.to_string().contains(reason), "{chain:?}: {err}");
    }
    // other.test is valid for its own name; the leaf also has IP SAN 127.0.0.1 on dot-test.
    let other = Unbound::start(Chain::OtherTest);
    assert!(dot_connect(other.addr(), "other.test", &ca).is_ok());
    let good = Unbound::start(Chain::DotTest);
    assert!(dot_connect(good.addr(), "127.0.0.1", &ca).is_ok());
}

#[test]
fn unbound_restarts_on_the_same_port() {
    let mut u = Unbound::start(Chain::DotTest);
    let addr = u.addr();
    u.stop();
    assert!(
        dot_connect(addr, "dot.test", &root_ca()).is_err(),
        "stopped = dead upstream"
    );
    u.start_again();
    assert_eq!(u.addr(), addr);
    let a = query_dot(addr, "dot.test", &root_ca(), zone::A_NAME, RecordType::A);
    assert_eq!(a_records(&a), [zone::A_ADDR]);
    assert_eq!(u.log().matches("start of service").count(), 2);
}

fn fake_bin() -> std::path::PathBuf {
    fixture("harness/fake-dnsproxy.sh")
}

#[test]
fn proxy_harness_isolates_waits_and_terminates() {
    let mut p = Proxy::start_binary(&fake_bin(), &[("FAKE_MODE", "serve")], &[]);
    assert_eq!(p.addr().ip().to_string(), "127.0.0.1");
    assert_ne!(p.addr().port(), 0);
    // The fake prints its arguments to stdout and the rest to stderr, and
    // the harness reads each pipe on its own thread: the readiness line
    // (stderr) can be in the log before the arguments are.
    assert!(
        p.wait_for_log("fake args: ", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains("fake args: --config "), "{log}");
    assert!(log.contains("empty.ini"), "{log}");
    assert!(
        log.contains(&format!("LOCAL_PORT={}", p.addr().port())),
        "{log}"
    );
    assert!(
        log.contains("LOG_LEVEL=info HOME=unset"),
        "env is cleared: {log}"
    );
    assert!(p.wait_for_log("serving listen=127.0.0.1:", Duration::from_secs(1)));
    assert!(!p.wait_for_log("never printed", Duration::from_millis(100)));
    assert!(p.exit_status_within(Duration::from_millis(200)).is_none());
    let status = p.stop().expect("exited");
    assert!(status.success(), "SIGTERM handled: {status:?}\n{}", p.log());
    assert!(p.wait_for_log("got SIGTERM", Duration::from_secs(1)));
}

#[test]
fn proxy_harness_reports_config_errors() {
    let (code, log) = Proxy::run_binary_to_exit(
        &fake_bin(),
        &[("FAKE_MODE", "bad-config"), ("TLS_PORT", "abc")],
        &["--config", "/nonexistent.ini"],
        Duration::from_secs(5),
    );
    assert_eq!(code, Some(64), "{log}");
    assert!(
        log.contains("fake args: --config /nonexistent.ini\n"),
        "{log}"
    );
    assert!(log.contains("TLS_PORT"), "{log}");
}

#[test]
#[should_panic(expected = "exited before it was ready")]
fn proxy_harness_panics_with_the_log_if_the_proxy_dies() {
    let _p = Proxy::start_binary(&fake_bin(), &[("FAKE_MODE", "crash")], &[]);
}

#[test]
fn unbound_answers_plain_udp_too_and_truncates() {
    // unbound also serves plain DNS over UDP on the TLS port; handy for UDP helper checks.
    let u = Unbound::start(Chain::DotTest);
    let a = query_udp(u.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(a_records(&a), [zone::A_ADDR]);
    let big = QueryBuilder::new(zone::BIG_NAME, RecordType::TXT)
        .edns(4096)
        .build();
    let answer = exchange_udp(u.addr(), &big, DEFAULT_TIMEOUT).expect("UDP answer");
    assert!(answer.truncated());
    let raw = query_udp_raw(u.addr(), &encode(&query(zone::A_NAME, RecordType::A)))
        .expect("raw UDP answer");
    assert_eq!(a_records(&decode(&raw)), [zone::A_ADDR]);
}
