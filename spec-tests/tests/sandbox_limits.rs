//! The host's sandbox under hostile and overload traffic, against the real
//! `dnsproxy` binary and real components (the proxy, or purpose-built test
//! guests from `policy-probe/`). No resolver is needed: the upstream is a
//! local port that nothing here ever asks to resolve, and the proxy answers
//! OPCODE STATUS queries itself (NOTIMP, RFC 1035 §4.1.1).
//!
//! - clients outside `allow_networks` get silence over UDP and a reset over
//!   TCP, and the refusals are logged at a bounded rate;
//! - the component may send a UDP datagram only as a reply;
//! - a component stuck in a loop is trapped within ~2 s and restarted,
//!   forever once it has served, and the process gives up only on a
//!   component that never served;
//! - the open files limit is raised, so a thousand TCP clients are served
//!   at once.

use std::io::{ErrorKind, Read as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use spec_tests::hickory_proto::rr::RecordType;
use spec_tests::{Proxy, QueryBuilder, free_port, guest, read_framed, write_framed};

/// RCODE NOTIMP (RFC 1035 §4.1.1).
const NOTIMP: u8 = 4;

/// The proxy's settings with an upstream nobody will ask: the proxy starts
/// (it needs one), the tests never send it a query it must forward.
fn no_upstream_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("TLS_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("TLS_PORT".to_owned(), free_port().to_string()),
        ("TLS_HOSTNAME".to_owned(), "dot.test".to_owned()),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

/// A STATUS query (which the proxy answers itself) with id `id`.
fn status_query(id: u16) -> Vec<u8> {
    let mut q = QueryBuilder::new(".", RecordType::NS).id(id).to_bytes();
    q[2] = (q[2] & 0x87) | (2 << 3);
    q
}

/// The id and RCODE of an answer.
fn id_rcode(answer: &[u8]) -> (u16, u8) {
    assert!(answer.len() >= 12, "short answer {answer:?}");
    (u16::from_be_bytes([answer[0], answer[1]]), answer[3] & 0x0F)
}

/// Log lines containing `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// Seconds since midnight of a log line's RFC 3339 timestamp
/// (`2026-11-28T14:34:19.123456Z  INFO ...`).
fn timestamp(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let time = stamp
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let mut parts = time.split(':');
    let mut field = || -> f64 {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad timestamp in {line:?}"))
    };
    field() * 3600.0 + field() * 60.0 + field()
}

/// Seconds from line `a` to line `b` (same day or the next).
fn seconds_between(a: &str, b: &str) -> f64 {
    let d = timestamp(b) - timestamp(a);
    if d < 0.0 { d + 86_400.0 } else { d }
}

/// Pairs each `start` line with the first `end` line after it, in log order.
fn start_end_pairs<'a>(log: &'a str, start: &str, end: &str) -> Vec<(&'a str, &'a str)> {
    let mut pairs = Vec::new();
    let mut open: Option<&str> = None;
    for line in log.lines() {
        if line.contains(start) {
            open = Some(line);
        } else if line.contains(end)
            && let Some(s) = open.take()
        {
            pairs.push((s, line));
        }
    }
    pairs
}

/// Waits up to `timeout` until `needle` appears `n` times in the proxy's log.
fn wait_for_count(proxy: &Proxy, needle: &str, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if lines_with(&proxy.log(), needle).len() >= n {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `key=` in a log line (`restart_in=400ms`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

#[test]
fn outsiders_get_silence_over_udp_and_a_reset_over_tcp() {
    // Only 127.0.0.2 may query; the tests' usual source, 127.0.0.1, is an outsider.
    let proxy = Proxy::start(&no_upstream_env(&[("ALLOW_NETWORKS", "127.0.0.2/32")]), &[]);
    let to = proxy.addr();

    // An insider is answered: the proxy serves, the silence below is the policy.
    let insider = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).unwrap();
    insider
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    insider.send_to(&status_query(0x1234), to).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = insider
        .recv_from(&mut buf)
        .expect("the insider is answered");
    assert_eq!(id_rcode(&buf[..n]), (0x1234, NOTIMP));

    // An outsider's datagrams are dropped before the component sees them.
    let outsider = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    outsider
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    for id in 0..20u16 {
        outsider.send_to(&status_query(id), to).unwrap();
    }
    match outsider.recv_from(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("an outsider got {other:?}, not silence\n{}", proxy.log()),
    }

    // An outsider's TCP connection is reset at accept: the handshake is the
    // kernel's, the first read or write after it meets an RST.
    let mut tcp = TcpStream::connect(to).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let outcome = write_framed(&mut tcp, &status_query(7)).and_then(|()| {
        let mut byte = [0u8; 1];
        tcp.read(&mut byte).map(|_| ())
    });
    match outcome {
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
        other => panic!("an outsider's TCP connection got {other:?}, not a reset"),
    }

    // 20 datagrams and a connection refused, one WARN line per reason.
    std::thread::sleep(Duration::from_millis(200));
    let log = proxy.log();
    let udp_lines = lines_with(&log, "reason=\"udp_receive_outside_allow_networks\"");
    let tcp_lines = lines_with(&log, "reason=\"tcp_accept_outside_allow_networks\"");
    assert_eq!(udp_lines.len(), 1, "{log}");
    assert_eq!(tcp_lines.len(), 1, "{log}");
    assert!(udp_lines[0].contains("WARN"), "{log}");
    assert!(
        udp_lines[0].contains("refused=1"),
        "the first one logs at once: {log}"
    );
    assert!(
        lines_with(&log, "reason=\"udp_send_without_query\"").is_empty(),
        "the component never tried to answer an outsider: {log}"
    );
}

#[test]
fn the_component_may_send_udp_only_as_a_reply() {
    // The probe connects to the upstream: let that succeed.
    let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = upstream.local_addr().unwrap().port().to_string();
    let probe = guest("policy-probe");
    let (code, log) = Proxy::run_to_exit(
        &no_upstream_env(&[("TLS_PORT", &port)]),
        &["--component", &probe],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{log}");
    // Through wasi-libc's `sendto`, and through the host's batch of
    // datagrams, which the component's UDP answers use.
    for op in ["udp-send-unsolicited", "udp-batch-send-unsolicited"] {
        let results = lines_with(&log, &format!(" probe op={op} "));
        assert_eq!(results.len(), 1, "{log}");
        assert!(results[0].ends_with("result=denied"), "{op}: {log}");
    }
    // A batch the host cannot read is refused whole, before any check.
    let cut = lines_with(&log, " probe op=udp-batch-send-cut-short ");
    assert_eq!(cut.len(), 1, "{log}");
    assert!(cut[0].ends_with("result=error: invalid-argument"), "{log}");
    // One log line for the first refusal; the second is counted.
    assert_eq!(
        lines_with(&log, "reason=\"udp_send_without_query\"").len(),
        1,
        "{log}"
    );
}

#[test]
fn a_component_that_never_serves_is_trapped_within_two_seconds_and_then_given_up() {
    let spin = guest("spin-probe");
    let started = Instant::now();
    let (code, log) = Proxy::run_to_exit(
        &no_upstream_env(&[]),
        &["--component", &spin],
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{log}");
    let stuck = "stuck in a loop and was stopped";
    let pairs = start_end_pairs(&log, "probe spinning", stuck);
    // Restarted after each trap until it has failed 3 times without serving.
    assert_eq!(pairs.len(), 3, "{log}");
    assert_eq!(lines_with(&log, "probe spinning").len(), 3, "{log}");
    for (spinning, trapped) in &pairs {
        let secs = seconds_between(spinning, trapped);
        assert!(
            (0.5..2.0).contains(&secs),
            "trapped {secs:.2} s after it started spinning\n{log}"
        );
    }
    let restarts = lines_with(&log, "; restarting it");
    assert_eq!(restarts.len(), 2, "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("ERROR")
            && last.contains("before it ever served")
            && last.contains("giving up"),
        "the last line says why the proxy exits: {last}\n{log}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}\n{log}");
}

#[test]
fn a_component_that_recurses_without_end_is_trapped_by_the_stack_limit() {
    // The epoch is checked at loop headers only (the engine's patched
    // Cranelift): a guest that never ends without a loop recurses, and the
    // stack limit must stop it as surely as the watchdog stops a loop.
    let recurse = guest("recurse-probe");
    let started = Instant::now();
    let (code, log) = Proxy::run_to_exit(
        &no_upstream_env(&[]),
        &["--component", &recurse],
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{log}");
    assert!(lines_with(&log, "probe returned").is_empty(), "{log}");
    let trapped = "the proxy component trapped";
    let pairs = start_end_pairs(&log, "probe recursing", trapped);
    assert_eq!(pairs.len(), 3, "{log}");
    for (recursing, trapped) in &pairs {
        let secs = seconds_between(recursing, trapped);
        assert!(
            secs < 1.0,
            "trapped {secs:.2} s after it started recursing\n{log}"
        );
        assert!(
            trapped.contains("stack"),
            "the cause is the stack: {trapped}"
        );
    }
    assert!(took < Duration::from_secs(10), "took {took:?}\n{log}");
}

#[test]
fn a_component_stuck_after_serving_is_restarted_with_backoff_and_never_given_up() {
    let stall = guest("stall-probe");
    // The probe logs "serving listen=none (stall probe)" (the harness's
    // readiness line) first.
    let mut proxy = Proxy::start(&no_upstream_env(&[]), &["--component", &stall]);
    let restarted_four_times = wait_for_count(
        &proxy,
        "serving listen=none (stall probe)",
        5,
        Duration::from_secs(30),
    );
    let log = proxy.log();
    assert!(restarted_four_times, "{log}");
    assert!(
        proxy.exit_status_within(Duration::ZERO).is_none(),
        "the proxy kept running\n{log}"
    );
    let pairs = start_end_pairs(&log, "probe spinning", "stuck in a loop and was stopped");
    assert!(pairs.len() >= 4, "{log}");
    for (spinning, trapped) in &pairs {
        let secs = seconds_between(spinning, trapped);
        assert!(
            (0.5..2.0).contains(&secs),
            "trapped after {secs:.2} s\n{log}"
        );
    }
    let delays: Vec<&str> = lines_with(&log, "; restarting it")
        .iter()
        .filter_map(|l| field(l, "restart_in"))
        .collect();
    assert_eq!(&delays[..4], &["200ms", "400ms", "800ms", "1.6s"], "{log}");
    assert!(
        lines_with(&log, "giving up").is_empty(),
        "a component that served is never given up on\n{log}"
    );
    assert_eq!(
        proxy.stop().and_then(|s| s.code()),
        Some(0),
        "SIGTERM stops it cleanly even while an instance spins\n{}",
        proxy.log()
    );
}

/// `dnsproxy` started through `sh` with the soft open files limit at 256,
/// as many systems default to 1024 or less.
fn low_nofile_wrapper(dir: &std::path::Path) -> PathBuf {
    let script = dir.join("dnsproxy-low-nofile");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit -S -n 256 || exit 99\nexec '{}' \"$@\"\n",
            Proxy::binary().display()
        ),
    )
    .expect("write the wrapper script");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("make the wrapper executable");
    script
}

/// The soft and hard "Max open files" of a process.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits =
        std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read the process's limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open files limit in {limits}"));
    let mut words = line["Max open files".len()..].split_whitespace();
    let soft = words.next().unwrap_or_default().to_owned();
    let hard = words.next().unwrap_or_default().to_owned();
    (soft, hard)
}

#[test]
fn a_thousand_simultaneous_tcp_clients_are_served_despite_a_low_open_files_limit() {
    const CLIENTS: usize = 1100;
    let (own_soft, _) = open_files_limits(std::process::id());
    assert!(
        own_soft == "unlimited" || own_soft.parse::<usize>().unwrap_or(0) > CLIENTS + 100,
        "this test itself needs more than {CLIENTS} open files (ulimit -n is {own_soft})"
    );
    let dir = tempfile::tempdir().unwrap();
    let wrapper = low_nofile_wrapper(dir.path());
    let proxy = Proxy::start_binary(
        &wrapper,
        &no_upstream_env(&[("MAX_TCP_CLIENTS", "2000")]),
        &[],
    );
    let (soft, hard) = open_files_limits(proxy.pid());
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");

    let to: SocketAddr = proxy.addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = TcpStream::connect(to).unwrap_or_else(|e| panic!("client {i}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write_framed(&mut c, &status_query(i as u16)).unwrap();
        clients.push(c);
    }
    // All connected and asked before any answer is read: they are open at once.
    for (i, c) in clients.iter_mut().enumerate() {
        let answer = read_framed(c).unwrap_or_else(|e| {
            panic!(
                "client {i} of {CLIENTS} got no answer: {e}\n{}",
                proxy.log()
            )
        });
        assert_eq!(id_rcode(&answer), (i as u16, NOTIMP), "client {i}");
        assert!(Instant::now() < deadline, "too slow: {i} answered in 60 s");
    }
}
