//! The metrics endpoint (`metrics_listen`) of the real binary: counters that
//! move with real traffic through the fixture DoT resolver, an exposition
//! Prometheus's own checker (`promtool check metrics`) accepts, `/health`
//! and `/ready`, pin-rotation warnings after the handshake, and component
//! restarts. Every test talks to the proxy only over the network.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use spec_tests::hickory_proto::op::ResponseCode;
use spec_tests::hickory_proto::rr::RecordType;
use spec_tests::proxy::{upstream_env, with_settings};
use spec_tests::scrape::{get, value};
use spec_tests::unbound::Chain;
use spec_tests::{
    ClosedPort, FixtureResolver, Misbehave, Proxy, dns, free_port, pin, wait_until, workspace_root,
    zone,
};

/// notAfter of every fixture certificate: 2125-01-01T00:00:00Z
/// (`openssl x509 -enddate`, fixtures/pki/gen.sh).
const FIXTURE_NOT_AFTER: &str = "4891363200";

fn promtool() -> PathBuf {
    let path = PathBuf::from("/usr/bin/promtool");
    assert!(
        path.is_file(),
        "promtool is missing: scripts/setup.sh installs it (Debian package prometheus)"
    );
    path
}

/// Runs `promtool check metrics` on `text`; its verdict and output.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Scrapes until `done` holds on the body (reports come once a second).
fn scrape_until(proxy: &Proxy, metrics: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        body = get(metrics, "/metrics").1;
        done(&body)
    });
    assert!(ok, "metrics never got there:\n{body}\n{}", proxy.log());
    body
}

#[test]
fn counters_move_with_traffic_and_promtool_accepts_the_exposition() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    // The intermediate pinned plus a backup key the chain does not use: no
    // rotation warning.
    let pins = format!("{},{}", pin("intermediate"), pin("other-test"));
    let env = with_settings(upstream_env(&resolver), &[("SPKI", &pins)]);
    let (proxy, metrics) = Proxy::start_with_metrics(env);

    // Before any traffic: serving and ready (nothing has failed yet).
    assert!(
        wait_until(Duration::from_secs(5), || get(metrics, "/health").0 == 200),
        "{}",
        proxy.log()
    );
    assert_eq!(get(metrics, "/ready"), (200, "ready\n".to_owned()));
    assert_eq!(get(metrics, "/nope").0, 404);

    for _ in 0..3 {
        let a = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(a.response_code(), ResponseCode::NoError);
    }
    let nx = dns::query_udp(proxy.addr(), zone::NX_NAME, RecordType::A);
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    for _ in 0..2 {
        let a = dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(a.response_code(), ResponseCode::NoError);
    }

    let body = scrape_until(&proxy, metrics, |b| {
        value(b, "dnsproxy_upstream_queries_total", &[]).as_deref() == Some("6")
            && value(
                b,
                "dnsproxy_queries_total",
                &[r#"protocol="tcp""#, r#"rcode="NOERROR""#],
            )
            .as_deref()
                == Some("2")
    });
    let v = |name: &str, labels: &[&str]| {
        value(&body, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"))
    };
    assert_eq!(
        v(
            "dnsproxy_queries_total",
            &[r#"protocol="udp""#, r#"rcode="NOERROR""#]
        ),
        "3"
    );
    assert_eq!(
        v(
            "dnsproxy_queries_total",
            &[r#"protocol="udp""#, r#"rcode="NXDOMAIN""#]
        ),
        "1"
    );
    assert_eq!(
        v(
            "dnsproxy_answer_duration_seconds_count",
            &[r#"protocol="udp""#]
        ),
        "4"
    );
    assert_eq!(
        v("dnsproxy_upstream_responses_total", &[r#"rcode="NOERROR""#]),
        "5"
    );
    assert_eq!(v("dnsproxy_upstream_rtt_seconds_count", &[]), "6");
    assert_eq!(v("dnsproxy_upstream_up", &[]), "1");
    assert_eq!(v("dnsproxy_upstream_connections", &[]), "1");
    assert_eq!(v("dnsproxy_tcp_clients", &[]), "0");
    assert_eq!(v("dnsproxy_build_info", &[]), "1");
    // The verified chain, leaf first; the pin matched the intermediate.
    for (position, pinned) in [("0", "false"), ("1", "true"), ("2", "false")] {
        assert_eq!(
            v(
                "dnsproxy_upstream_certificate_not_after_seconds",
                &[
                    &format!(r#"position="{position}""#),
                    &format!(r#"pinned="{pinned}""#)
                ]
            ),
            FIXTURE_NOT_AFTER,
            "position {position}"
        );
    }
    for warning in ["no_backup", "leaf_only"] {
        assert_eq!(
            v(
                "dnsproxy_upstream_pin_warning",
                &[&format!(r#"warning="{warning}""#)]
            ),
            "0"
        );
    }
    assert!(!body.contains(zone::A_NAME), "no query names in metrics");
    let (ok, said) = promtool_check(&body);
    assert!(ok, "promtool check metrics rejects it: {said}\n{body}");
}

/// It failed under load with a refused UDP query: the harness took the
/// host's `serving metrics at` line for the component's bind (fixed in
/// `spec_tests::proxy`).
#[test]
fn rfc7469_a_leaf_only_pin_set_without_backup_warns_once_after_the_handshake() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let env = with_settings(upstream_env(&resolver), &[("SPKI", &pin("dot-test"))]);
    let (proxy, metrics) = Proxy::start_with_metrics(env);
    for _ in 0..3 {
        let a = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(a.response_code(), ResponseCode::NoError);
    }
    let body = scrape_until(&proxy, metrics, |b| {
        value(
            b,
            "dnsproxy_upstream_pin_warning",
            &[r#"warning="leaf_only""#],
        )
        .as_deref()
            == Some("1")
    });
    assert_eq!(
        value(
            &body,
            "dnsproxy_upstream_pin_warning",
            &[r#"warning="no_backup""#]
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &body,
            "dnsproxy_upstream_certificate_not_after_seconds",
            &[r#"position="0""#, r#"pinned="true""#]
        )
        .as_deref(),
        Some(FIXTURE_NOT_AFTER)
    );
    let log = proxy.log();
    assert_eq!(
        proxy.log_lines_with("pin set is not rotation-safe"),
        1,
        "one warning, not one per query\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("pin set is not rotation-safe"))
        .unwrap_or_default();
    assert!(line.contains("WARN") && line.contains("no_backup=") && line.contains("leaf_only="));
}

/// It failed because of its own last assertion: `rcode="SERVFAIL"` alone
/// matches the UDP and the TCP series, and `value` wants exactly one. The
/// failures counter counts attempts: one connect is refused, then the
/// upstream is in backoff and the queries after it make no attempt.
#[test]
fn unready_while_every_upstream_is_in_backoff_and_failures_are_counted_by_check() {
    let closed = ClosedPort::new();
    let env = vec![
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_PORT".to_owned(), closed.port().to_string()),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
    ];
    let (proxy, metrics) = Proxy::start_with_metrics(env);
    assert!(
        wait_until(Duration::from_secs(5), || get(metrics, "/ready").0 == 200),
        "ready before any traffic\n{}",
        proxy.log()
    );
    // Each failed connect doubles the backoff (1 s, 2 s, 4 s...), so the
    // upstream stays in backoff long enough to be seen between reports.
    let unready = wait_until(Duration::from_secs(8), || {
        let answer = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(answer.response_code(), ResponseCode::ServFail);
        get(metrics, "/ready").0 == 503
    });
    assert!(unready, "{}", proxy.log());
    assert_eq!(get(metrics, "/health").0, 200, "still serving");
    let body = get(metrics, "/metrics").1;
    let failures = value(
        &body,
        "dnsproxy_upstream_failures_total",
        &[r#"check="network""#],
    )
    .and_then(|v| v.parse::<u64>().ok())
    .unwrap_or_default();
    assert!(failures >= 1, "{body}");
    assert_eq!(
        value(&body, "dnsproxy_upstream_up", &[]).as_deref(),
        Some("0")
    );
    assert!(
        value(
            &body,
            "dnsproxy_queries_total",
            &[r#"protocol="udp""#, r#"rcode="SERVFAIL""#]
        )
        .is_some_and(|v| v != "0"),
        "{body}"
    );
    let (ok, said) = promtool_check(&body);
    assert!(ok, "{said}\n{body}");
}

#[test]
fn component_restarts_are_counted_and_health_fails_while_none_reports() {
    let stall = workspace_root().join("target/wasm32-wasip2/release/stall-probe.wasm");
    assert!(
        stall.is_file(),
        "build the test guests with `make build-host`"
    );
    let env = vec![
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_PORT".to_owned(), free_port().to_string()),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
    ];
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let env = with_settings(env, &[("METRICS_LISTEN", &metrics.to_string())]);
    let stall = stall.display().to_string();
    let proxy = Proxy::start(&env, &["--component", &stall]);
    let mut body = String::new();
    let restarted = wait_until(Duration::from_secs(20), || {
        body = get(metrics, "/metrics").1;
        value(&body, "dnsproxy_component_restarts_total", &[])
            .is_some_and(|v| v.parse::<u64>().unwrap_or(0) >= 2)
    });
    assert!(restarted, "{body}\n{}", proxy.log());
    // The test guest never reports, so it is never taken for serving.
    assert_eq!(get(metrics, "/health").0, 503);
    assert_eq!(get(metrics, "/ready").0, 503);
}

#[test]
fn a_metrics_listen_address_in_use_stops_the_start_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let env = vec![
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_PORT".to_owned(), free_port().to_string()),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
        ("METRICS_LISTEN".to_owned(), addr.clone()),
    ];
    let (status, log) = Proxy::run_to_exit(&env, &[], Duration::from_secs(10));
    assert!(status.is_some_and(|c| c != 0), "{status:?}\n{log}");
    assert!(
        log.contains(&format!("cannot listen on metrics_listen {addr}")),
        "{log}"
    );
}
