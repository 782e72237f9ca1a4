//! Several component instances (`workers`) serving one address, against the
//! real binary: each binds the listen addresses with SO_REUSEPORT and the
//! kernel spreads clients over them by their address and port.
//!
//! - two workers both serve, over UDP and TCP, each with its own upstream
//!   connection, and the metrics add them up;
//! - a worker that traps is restarted on its own, on its own backoff;
//! - a port another socket holds is a start-up error with one worker and
//!   with two (SO_REUSEPORT shares a port only among sockets that all set
//!   it).

use std::net::UdpSocket;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use spec_tests::proxy::{Proxy, upstreams_env};
use spec_tests::scrape::get;
use spec_tests::{
    Chain, FixtureResolver, Misbehave, Resolver, dns, free_port, guest, wait_until, zone,
};

#[test]
fn two_workers_serve_one_address_each_with_its_own_upstream_connection() {
    let upstream = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let (proxy, metrics) =
        Proxy::start_with_metrics(upstreams_env(&[&upstream], &[("WORKERS", "2")]));
    // The harness waits for the first worker's line; each says it serves.
    assert!(
        wait_until(Duration::from_secs(10), || proxy
            .log_lines_with("serving listen=")
            == 2),
        "each worker says it serves:\n{}",
        proxy.log()
    );
    // Each query from a new socket, so a new source port: 40 of them all
    // reaching one worker of two would happen once in 2^39 runs.
    for i in 0..40 {
        let m = dns::query_over(i % 4 == 3, proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(
            (m.response_code(), dns::a_records(&m)),
            (ResponseCode::NoError, vec![zone::A_ADDR]),
            "query {i}; log:\n{}",
            proxy.log()
        );
    }
    let label = format!("upstream=\"{}\"", upstream.addr());
    proxy.metric_when(metrics, "dnsproxy_workers", &["state=\"running\""], |v| {
        v == 2.0
    });
    proxy.metric_when(metrics, "dnsproxy_upstream_queries_total", &[&label], |v| {
        v == 40.0
    });
    // Both served: each holds its own pipelined connection to the upstream.
    proxy.metric_when(metrics, "dnsproxy_upstream_connections", &[&label], |v| {
        v == 2.0
    });
    proxy.metric_when(
        metrics,
        "dnsproxy_queries_total",
        &["protocol=\"udp\"", "rcode=\"NOERROR\""],
        |v| v == 30.0,
    );
    proxy.metric_when(
        metrics,
        "dnsproxy_queries_total",
        &["protocol=\"tcp\"", "rcode=\"NOERROR\""],
        |v| v == 10.0,
    );
    assert_eq!(get(metrics, "/health").0, 200, "both workers report");
}

/// The `restart_in` delays of the restart lines of `worker`, in order.
fn restart_delays(log: &str, worker: usize) -> Vec<String> {
    let tag = format!("worker={worker} ");
    log.lines()
        .filter(|l| l.contains("; restarting it") && l.contains(&tag))
        .filter_map(|l| {
            let at = l.find("restart_in=")? + "restart_in=".len();
            Some(l[at..].split_whitespace().next()?.to_owned())
        })
        .collect()
}

#[test]
fn a_worker_that_traps_is_restarted_on_its_own_backoff() {
    // The stall probe serves (its readiness line), then spins until the
    // watchdog traps it; each worker's instance does so on its own.
    let stall = guest("stall-probe");
    let env = [
        ("TLS_HOST", "127.0.0.1".to_owned()),
        ("TLS_PORT", free_port().to_string()),
        ("TLS_HOSTNAME", "dot.test".to_owned()),
        ("WORKERS", "2".to_owned()),
    ];
    let proxy = Proxy::start(&env, &["--component", &stall]);
    let both_restarted_thrice = wait_until(Duration::from_secs(30), || {
        let log = proxy.log();
        restart_delays(&log, 0).len() >= 3 && restart_delays(&log, 1).len() >= 3
    });
    let log = proxy.log();
    assert!(both_restarted_thrice, "{log}");
    // Each worker's backoff doubles from 200 ms, whatever the other does:
    // one worker's traps never delay or count against the other.
    for worker in [0, 1] {
        assert_eq!(
            &restart_delays(&log, worker)[..3],
            &["200ms", "400ms", "800ms"],
            "worker {worker}\n{log}"
        );
    }
    assert!(!log.contains("giving up"), "{log}");
}

#[test]
fn a_port_another_socket_holds_is_a_start_up_error_with_one_worker_or_two() {
    for workers in ["1", "2"] {
        // Held without SO_REUSEPORT, as any other program would hold it.
        let holder = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = holder
            .local_addr()
            .expect("local address")
            .port()
            .to_string();
        let env = [
            ("TLS_HOST", "127.0.0.1".to_owned()),
            ("TLS_PORT", free_port().to_string()),
            ("TLS_HOSTNAME", "dot.test".to_owned()),
            ("LOCAL_PORT", port),
            ("WORKERS", workers.to_owned()),
        ];
        let (code, log) = Proxy::run_to_exit(&env, &[], Duration::from_secs(20));
        assert_ne!(
            code,
            Some(0),
            "workers={workers}: started on a taken port\n{log}"
        );
        assert!(
            log.to_lowercase().contains("in use"),
            "workers={workers}: the error names the cause\n{log}"
        );
        drop(holder);
    }
}
