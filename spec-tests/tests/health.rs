//! `dnsproxy health`, end to end: the real binary probing the real proxy
//! (which runs the real component) in front of Debian's unbound serving
//! DNS-over-TLS on loopback, or in front of nothing.
//!
//! The probe reads its configuration like `run`: each test gives it the
//! proxy's own environment.

use std::time::{Duration, Instant};

use spec_tests::proxy::{Proxy, upstream_env, with_settings as with};
use spec_tests::unbound::{Chain, Unbound};
use spec_tests::{ClosedPort, free_port, zone};

/// How long a probe process may run before the test gives up on it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The proxy's environment with its listen address made explicit, so the
/// probe reads the same settings.
fn env_of(proxy: &Proxy, env: Vec<(String, String)>) -> Vec<(String, String)> {
    let port = proxy.addr().port().to_string();
    let mut env = env;
    if !env.iter().any(|(k, _)| k == "LOCAL_HOST") {
        env.push(("LOCAL_HOST".into(), "127.0.0.1".into()));
    }
    with(env, &[("LOCAL_PORT", &port)])
}

/// Runs `dnsproxy health <args>` (with an empty config file, as the proxy
/// has) and returns its exit code and output.
fn health(env: &[(String, String)], args: &[&str]) -> (Option<i32>, String) {
    let mut argv = vec!["health", "--config", "/dev/null"];
    argv.extend_from_slice(args);
    Proxy::run_to_exit(env, &argv, EXIT_TIMEOUT)
}

fn assert_one_line(log: &str) {
    assert_eq!(log.trim().lines().count(), 1, "one line: {log}");
}

#[test]
fn live_and_ready_pass_with_a_working_upstream() {
    let unbound = Unbound::start(Chain::DotTest);
    let env = upstream_env(&unbound);
    let proxy = Proxy::start(&env, &[]);
    let env = env_of(&proxy, env);

    let (code, log) = health(&env, &[]);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("live:") && log.contains("UDP and TCP"),
        "{log}"
    );

    // `.` is outside the fixture zone: unbound REFUSES it, which is still an
    // upstream's answer.
    let (code, log) = health(&env, &["--ready"]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("ready:") && log.contains("RCODE 5"), "{log}");

    let (code, log) = health(&env, &["--ready", "--name", zone::ZONE]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("RCODE 0"), "{log}");
    assert!(proxy.log().contains("serving"), "{}", proxy.log());
}

#[test]
fn live_passes_and_ready_fails_when_the_only_upstream_is_dead() {
    let dead = ClosedPort::new();
    let env = vec![
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_PORT".to_owned(), dead.port().to_string()),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
        ("QUERY_TIMEOUT".to_owned(), "1s".to_owned()),
    ];
    let proxy = Proxy::start(&env, &[]);
    let env = env_of(&proxy, env);

    let started = Instant::now();
    let (code, log) = health(&env, &[]);
    assert_eq!(code, Some(0), "liveness does not need an upstream: {log}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let (code, log) = health(&env, &["--ready", "--timeout", "3s"]);
    assert_eq!(code, Some(1), "{log}");
    assert_one_line(&log);
    assert!(
        log.starts_with("dnsproxy health: not ready:") && log.contains("SERVFAIL"),
        "{log}"
    );
}

#[test]
fn ready_gives_up_at_its_timeout_when_the_upstream_is_slower() {
    // A hung upstream: the kernel accepts the TCP connection, TLS never
    // answers. The proxy's SERVFAIL comes after upstream_timeout (1.5 s),
    // after the probe's deadline.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().expect("addr").port().to_string();
    let env = vec![
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_PORT".to_owned(), hung_port),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
    ];
    let proxy = Proxy::start(&env, &[]);
    let env = env_of(&proxy, env);

    let started = Instant::now();
    let (code, log) = health(&env, &["--ready", "--timeout", "1s"]);
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{log}");
    assert_one_line(&log);
    assert!(log.contains("within 1s"), "{log}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(hung);
}

#[test]
fn live_fails_when_nothing_listens() {
    let port = free_port().to_string();
    let env = vec![
        ("LOCAL_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("LOCAL_PORT".to_owned(), port.clone()),
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
    ];
    for args in [&[][..], &["--ready"]] {
        let (code, log) = health(&env, args);
        assert_eq!(code, Some(1), "{log}");
        assert_one_line(&log);
        assert_eq!(
            log.trim(),
            format!(
                "dnsproxy health: no answer: nothing listens on UDP 127.0.0.1:{port} \
                 (connection refused)"
            )
        );
    }
}

#[test]
fn a_wildcard_listen_address_is_probed_on_loopback() {
    let unbound = Unbound::start(Chain::DotTest);
    for (wildcard, loopback) in [("0.0.0.0", "127.0.0.1"), ("::", "[::1]")] {
        let env = with(upstream_env(&unbound), &[("LOCAL_HOST", wildcard)]);
        let proxy = Proxy::start(&env, &[]);
        let env = env_of(&proxy, env);
        let (code, log) = health(&env, &["--ready"]);
        assert_eq!(code, Some(0), "{wildcard}: {log}");
        let expected = format!("{loopback}:{}", proxy.addr().port());
        assert!(log.contains(&expected), "{wildcard}: {log}");
    }
}

#[test]
fn live_and_ready_fail_at_once_when_allow_networks_excludes_the_probe() {
    // The proxy answers nothing to addresses outside allow_networks (not even
    // REFUSED), so the probe from 127.0.0.1 could only time out: it says why
    // instead, at once, for liveness and readiness alike.
    let unbound = Unbound::start(Chain::DotTest);
    let env = with(upstream_env(&unbound), &[("ALLOW_NETWORKS", "10.0.0.0/8")]);
    let proxy = Proxy::start(&env, &[]);
    let env = env_of(&proxy, env);
    for args in [&[][..], &["--ready"]] {
        let started = Instant::now();
        let (code, log) = health(&env, args);
        assert_eq!(code, Some(1), "{args:?}: {log}");
        assert_one_line(&log);
        assert_eq!(
            log.trim(),
            "dnsproxy health: the proxy does not answer this probe: allow_networks must \
             include 127.0.0.1",
            "{args:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{args:?}: took {:?}, not at once",
            started.elapsed()
        );
    }
}

#[test]
fn bad_config_exits_64_with_one_line_like_run() {
    let env = vec![("LOCAL_PORT".to_owned(), "x".to_owned())];
    let (code, log) = health(&env, &[]);
    assert_eq!(code, Some(64), "{log}");
    assert_one_line(&log);
    assert!(
        log.starts_with("dnsproxy health: invalid local_port \"x\" (env LOCAL_PORT)"),
        "{log}"
    );
}
