//! SIGHUP and dual-stack listening, against the real binary: a reload moves
//! the proxy to other upstreams while clients keep querying over UDP and over
//! TCP connections opened before it, and not one query is lost; a broken
//! file is refused in one line and the running configuration keeps serving;
//! settings that need a restart are kept and named; `local_host` as a list
//! serves IPv4 and IPv6 at once.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spec_tests::hickory_proto::op::ResponseCode;
use spec_tests::hickory_proto::rr::RecordType;
use spec_tests::scrape::{get, value};
use spec_tests::unbound::Chain;
use spec_tests::{
    FixtureResolver, Misbehave, Proxy, Resolver as _, dns, fixture, free_port, wait_until, zone,
};

/// A settings file naming each resolver in its own section (`[TLS_SERVER
/// <name>]`), so logs and metrics tell them apart, plus `extra` lines in
/// `[PROXY]`.
fn settings(upstreams: &[(&str, &FixtureResolver)], extra: &str) -> String {
    let ca = fixture("pki/root.pem");
    let mut text = String::new();
    for (name, resolver) in upstreams {
        let addr = resolver.addr();
        write!(
            text,
            "[TLS_SERVER {name}]\ntls_host = {}\ntls_port = {}\ntls_hostname = dot.test\n\
             tls_ca_file = {}\n",
            addr.ip(),
            addr.port(),
            ca.display()
        )
        .expect("write to a string");
    }
    write!(text, "[PROXY]\n{extra}\n").expect("write to a string");
    text
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the settings file");
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    answered: usize,
    failed: Vec<String>,
}

/// Queries `addr` one after another until `stop` (or 60 s, or 50,000
/// queries): over UDP, or over one TCP connection opened now and kept.
fn client(addr: SocketAddr, tcp: bool, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut stream = tcp.then(|| {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && tally.sent < 50_000 {
        let query = dns::query(zone::A_NAME, RecordType::A);
        tally.sent += 1;
        let answer = match &mut stream {
            Some(s) => dns::write_framed(s, &dns::encode(&query))
                .and_then(|()| dns::read_framed(s))
                .map(|b| dns::decode(&b)),
            None => dns::exchange_udp(addr, &query, Duration::from_secs(5)),
        };
        match answer {
            Ok(a) if a.id() == query.id() && a.response_code() == ResponseCode::NoError => {
                tally.answered += 1;
            }
            Ok(a) => tally.failed.push(format!("{:?}", a.response_code())),
            Err(e) => tally.failed.push(e.to_string()),
        }
    }
    tally
}

/// Clients keep querying over UDP and over TCP connections opened before
/// the reload; SIGHUP moves the proxy from upstream `a` to upstream `b`.
/// Every query is answered, `b` gets connections, and the metrics keep
/// `a`'s counters, drop its gauges and count the reload.
#[test]
fn sighup_moves_to_new_upstreams_without_losing_a_query() {
    let a = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let b = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("settings.ini");
    write(&path, &settings(&[("a", &a)], ""));
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics_env = metrics.to_string();
    let proxy = Proxy::start(
        &[("METRICS_LISTEN", metrics_env.as_str())],
        &["--config", path.to_str().expect("utf-8 path")],
    );
    assert_eq!(
        dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A).response_code(),
        ResponseCode::NoError,
        "{}",
        proxy.log()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [false, false, true, true]
        .into_iter()
        .map(|tcp| {
            let (addr, stop) = (proxy.addr(), stop.clone());
            std::thread::spawn(move || client(addr, tcp, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    write(&path, &settings(&[("b", &b)], ""));
    let b_before = b.accepted_connections();
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("serving the reloaded configuration", Duration::from_secs(5)),
        "the component did not take the new configuration:\n{}",
        proxy.log()
    );
    // Queries keep flowing on the new upstream for a while.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let sent: Vec<usize> = tallies.iter().map(|t| t.sent).collect();
    eprintln!("queries sent per client (udp, udp, tcp, tcp): {sent:?}");
    for (i, t) in tallies.iter().enumerate() {
        assert!(t.sent > 10, "client {i} barely ran: {t:?}");
        assert!(
            t.failed.is_empty() && t.answered == t.sent,
            "client {i} lost queries across the reload: {t:?}\n{}",
            proxy.log()
        );
    }
    assert!(
        b.accepted_connections() > b_before,
        "the new upstream got no connection:\n{}",
        proxy.log()
    );
    assert_eq!(proxy.log_lines_with("SIGHUP: configuration reloaded"), 1);

    let body = wait_for_metrics(metrics, |body| {
        value(body, "dnsproxy_upstream_up", &[r#"upstream="b""#]).as_deref() == Some("1")
    });
    let queries = |name: &str| {
        value(
            &body,
            "dnsproxy_upstream_queries_total",
            &[&format!(r#"upstream="{name}""#)],
        )
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
    };
    assert!(queries("a") > 0 && queries("b") > 0, "{body}");
    assert_eq!(
        value(&body, "dnsproxy_upstream_up", &[r#"upstream="a""#]),
        None,
        "a removed upstream keeps no gauge:\n{body}"
    );
    assert_eq!(
        value(&body, "dnsproxy_config_reloads_total", &[r#"result="ok""#]).as_deref(),
        Some("1")
    );
}

/// Scrapes until `done` holds (reports come once a second).
fn wait_for_metrics(metrics: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        body = get(metrics, "/metrics").1;
        done(&body)
    });
    assert!(ok, "metrics never got there:\n{body}");
    body
}

/// A file that does not load is refused in one line naming the problem;
/// the proxy keeps serving the running configuration and stays up through
/// repeated SIGHUPs. A good file that moves the listen port keeps the port
/// and says so, and applies the rest.
#[test]
fn a_bad_reload_is_refused_in_one_line_and_the_old_configuration_serves() {
    let a = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("settings.ini");
    write(&path, &settings(&[("a", &a)], ""));
    let mut proxy = Proxy::start(
        &[("LOG_LEVEL", "info")],
        &["--config", path.to_str().expect("utf-8 path")],
    );
    write(&path, &settings(&[("a", &a)], "query_timeout = soon"));
    // One signal at a time: signals sent while one is still pending merge
    // into one (the kernel keeps a bit, not a count), so three sent at once
    // may be two reloads.
    for sent in 1..=3 {
        proxy.signal("HUP");
        assert!(
            wait_until(Duration::from_secs(5), || {
                proxy.log_lines_with("configuration not reloaded") == sent
            }),
            "after SIGHUP {sent}:\n{}",
            proxy.log()
        );
    }
    let log = proxy.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("configuration not reloaded"))
        .collect();
    assert!(
        refused[0].contains("query_timeout") && refused[0].contains("soon"),
        "the line names the key and the value: {}",
        refused[0]
    );
    assert_eq!(proxy.exit_status_within(Duration::from_millis(200)), None);
    assert_eq!(
        dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A).response_code(),
        ResponseCode::NoError
    );

    // A good file that also turns the metrics listener on: that needs a
    // restart, so it stays off and the warning names it; the rest (the
    // upstream's section name here) applies. (The listen address is in the
    // environment here, which wins over the file: no reload changes it.)
    let metrics = format!("127.0.0.1:{}", free_port());
    write(
        &path,
        &settings(&[("renamed", &a)], &format!("metrics_listen = {metrics}")),
    );
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("serving the reloaded configuration", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    let kept = log
        .lines()
        .find(|l| l.contains("take effect at the next restart"))
        .unwrap_or_else(|| panic!("no warning about kept settings:\n{log}"));
    assert!(kept.contains("metrics_listen"), "{kept}");
    assert!(
        TcpStream::connect(&metrics).is_err(),
        "the metrics listener started without a restart"
    );
    assert_eq!(
        dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A).response_code(),
        ResponseCode::NoError,
        "still serving"
    );
}

/// `local_host = 127.0.0.1, ::1`: both addresses answer, over UDP and TCP.
/// `::1` alone does not answer on 127.0.0.1 (wasi:sockets sets
/// IPV6_V6ONLY), which is why the list exists.
#[test]
fn a_local_host_list_serves_ipv4_and_ipv6_at_once() {
    let a = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("settings.ini");
    write(&path, &settings(&[("a", &a)], ""));
    let config = ["--config", path.to_str().expect("utf-8 path")];
    let port_env = port.to_string();
    let proxy = Proxy::start(
        &[
            ("LOCAL_HOST", "127.0.0.1, ::1"),
            ("LOCAL_PORT", port_env.as_str()),
        ],
        &config,
    );
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        assert_eq!(
            dns::query_udp(addr, zone::A_NAME, RecordType::A).response_code(),
            ResponseCode::NoError,
            "UDP {addr}:\n{}",
            proxy.log()
        );
        assert_eq!(
            dns::query_tcp(addr, zone::A_NAME, RecordType::A).response_code(),
            ResponseCode::NoError,
            "TCP {addr}"
        );
    }
    assert!(proxy.log().contains("127.0.0.1:") && proxy.log().contains("[::1]:"));
    drop(proxy);

    let v6_only = Proxy::start(
        &[("LOCAL_HOST", "::"), ("LOCAL_PORT", port_env.as_str())],
        &config,
    );
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        dns::exchange_udp(
            v4,
            &dns::query(zone::A_NAME, RecordType::A),
            Duration::from_secs(1)
        )
        .is_err(),
        "`::` alone must not answer IPv4:\n{}",
        v6_only.log()
    );
}
