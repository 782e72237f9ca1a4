//! Several component instances (`workers`) serving one address, against the
//! real binary: each binds the listen addresses with SO_REUSEPORT and the
//! kernel spreads clients over them by their address and port.
//!
//! - two workers both serve, over UDP and TCP, each with its own upstream
//!   connection, and the metrics add them up;
//! - a worker that traps is restarted on its own, on its own backoff;
//! - a port another socket holds is a start-up error with one worker and
//!   with two (SO_REUSEPORT shares a port only among sockets that all set
//!   it);
//! - both workers' connections to an upstream kept at its capacity probe it
//!   on the same grid of the wall clock, so neither takes the other's queue
//!   there for the path (`core::window`).

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// The probe grid's step (`core::window::PROBE_GRID`): probes the grid asks
/// for start at the first answer after a whole number of these since the
/// Unix epoch.
const PROBE_GRID: Duration = Duration::from_secs(5);

/// Where `t` falls in its step of the probe grid.
fn grid_phase(t: SystemTime) -> Duration {
    let since = t.duration_since(UNIX_EPOCH).expect("after 1970");
    let step = PROBE_GRID.as_nanos();
    Duration::from_nanos(u64::try_from(since.as_nanos() % step).expect("under a step"))
}

/// `2026-12-01T13:22:34.123456Z` (the JSON log's `time`) as a time.
fn parse_log_time(s: &str) -> SystemTime {
    let num = |r: std::ops::Range<usize>| -> i64 { s[r].parse().expect("a number in the time") };
    let (y, mo, d) = (num(0..4), num(5..7), num(8..10));
    let (h, mi, sec) = (num(11..13), num(14..16), num(17..19));
    let frac = s[19..].trim_start_matches('.').trim_end_matches('Z');
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().expect("fraction");
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's
    // days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + mi * 60 + sec).expect("after 1970");
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos)
}

#[test]
fn log_times_parse_to_the_instant_they_name() {
    let t = parse_log_time("2026-12-01T13:22:34.123456Z");
    let since = t.duration_since(UNIX_EPOCH).unwrap();
    // date -u -d 2026-12-01T13:22:34Z +%s
    assert_eq!(since.as_secs(), 1_796_131_354);
    assert_eq!(since.subsec_micros(), 123_456);
    assert_eq!(grid_phase(t), Duration::from_micros(4_123_456));
}

/// One probe of a window, as its debug line tells it.
#[derive(Debug)]
struct Probe {
    at: SystemTime,
    cause: String,
    worker: String,
    upstream: String,
}

/// The debug lines `message` of a JSON log, each as its time and its
/// fields.
fn events(log: &str, message: &str) -> Vec<(SystemTime, serde_json::Value)> {
    let quoted = format!("\"message\":\"{message}\"");
    log.lines()
        .filter(|l| l.contains(&quoted))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (parse_log_time(v["time"].as_str().expect("time")), v)
        })
        .collect()
}

/// Every `upstream window probe` line of a JSON log.
fn probes(log: &str) -> Vec<Probe> {
    events(log, "upstream window probe")
        .into_iter()
        .map(|(at, v)| {
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            Probe {
                at,
                cause: field("cause"),
                worker: field("worker"),
                upstream: field("upstream"),
            }
        })
        .collect()
}

/// An upstream that answers 400 queries a second over all its connections
/// (one queue), and a flood that keeps 192 queries in flight (half a second
/// of the upstream's work, well within a query's deadline) from many source
/// ports, so both workers' connections are always full.
/// A window that is full in every interval has no clean measurement of the
/// path and probes it. Every probe must start just after a whole multiple
/// of 5 s of the wall clock, in both workers, where the other worker's
/// connections hold back too; the only exception is a connection's first,
/// just after it opened. The connections are opened mid-step, so a probe
/// timed from a connection's own start (each worker on its own grid, or a
/// baseline that runs out ten seconds after it opened) falls 2.5 s off.
#[test]
fn both_workers_probe_a_saturated_upstream_on_the_same_wall_clock_grid() {
    // 16 source ports all reaching one worker of two: once in 2^15 runs.
    const SOCKETS: usize = 16;
    const IN_FLIGHT: usize = 12;
    const FLOOD: Duration = Duration::from_secs(15);
    let upstream = FixtureResolver::start(Chain::DotTest, Misbehave::Rate(400));
    let (proxy, metrics) = Proxy::start_with_metrics(upstreams_env(
        &[&upstream],
        &[
            ("WORKERS", "2"),
            ("LOG_LEVEL", "debug"),
            ("LOG_FORMAT", "json"),
        ],
    ));
    assert!(
        wait_until(Duration::from_secs(10), || proxy
            .log_lines_with("\"serving\"")
            == 2),
        "each worker says it serves:\n{}",
        proxy.log()
    );
    // Mid-step: 2.5 s from the grid's points on either side.
    let phase = grid_phase(SystemTime::now());
    let mid = PROBE_GRID / 2;
    thread::sleep(if phase <= mid {
        mid - phase
    } else {
        PROBE_GRID + mid - phase
    });
    let stop = Arc::new(AtomicBool::new(false));
    let addr = proxy.addr();
    // Each socket keeps IN_FLIGHT queries out, a new one for each answer
    // (REFUSED ones too); bounded in time and count.
    let flood: Vec<_> = (0..SOCKETS)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || flood_one(addr, IN_FLIGHT, FLOOD, &stop))
        })
        .collect();
    let answered: u64 = flood.into_iter().map(|t| t.join().expect("flood")).sum();
    stop.store(true, Ordering::Relaxed);
    let log = proxy.log();
    let all = probes(&log);
    let connected: Vec<(SystemTime, String)> = events(&log, "upstream connected")
        .into_iter()
        .map(|(at, v)| (at, v["worker"].as_str().unwrap_or_default().to_owned()))
        .collect();
    let on_grid = |p: &Probe| grid_phase(p.at) < Duration::from_millis(250);
    eprintln!(
        "{answered} answers to the flood; connections opened {connected:?}; probes: {:#?}",
        all.iter()
            .map(|p| (grid_phase(p.at), &p.cause, &p.worker))
            .collect::<Vec<_>>()
    );
    // Off the grid only a connection's first probe, for want of a baseline,
    // just after it opened.
    for p in all.iter().filter(|p| !on_grid(p)) {
        let just_opened = connected.iter().any(|(at, worker)| {
            *worker == p.worker
                && p.at
                    .duration_since(*at)
                    .is_ok_and(|d| d < Duration::from_secs(1))
        });
        assert!(
            p.cause == "no-baseline" && just_opened,
            "a probe {:?} after a grid point, not at it: {p:?}\n{log}",
            grid_phase(p.at)
        );
    }
    let workers: BTreeSet<&str> = all
        .iter()
        .filter(|p| on_grid(p))
        .map(|p| p.worker.as_str())
        .collect();
    assert_eq!(
        workers,
        BTreeSet::from(["0", "1"]),
        "both workers' windows were full and probed on the grid\n{log}"
    );
    // The metric counts every probe, the first of each connection too.
    let label = format!("upstream=\"{}\"", all[0].upstream);
    let logged = all.len() as f64;
    proxy.metric_when(
        metrics,
        "dnsproxy_upstream_window_probes_total",
        &[&label],
        |v| v == logged,
    );
}

/// How often a flooding socket adds one more query in flight.
const RAMP: Duration = Duration::from_millis(50);

/// Keeps `in_flight` queries out to `addr` from one socket for `time`, or
/// until `stop`, reaching that many over the first `in_flight` × [`RAMP`];
/// returns how many were answered.
fn flood_one(addr: SocketAddr, in_flight: usize, time: Duration, stop: &AtomicBool) -> u64 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(addr).expect("connect");
    sock.set_read_timeout(Some(RAMP)).expect("timeout");
    let query = |id: u16| {
        dns::encode(
            &dns::QueryBuilder::new(zone::A_NAME, RecordType::A)
                .id(id)
                .build(),
        )
    };
    let mut id = 0u16;
    let mut send = |sock: &UdpSocket| {
        let _ = sock.send(&query(id));
        id = id.wrapping_add(1);
    };
    let started = Instant::now();
    let (mut answered, mut buf, mut out) = (0u64, [0u8; 1500], 0usize);
    while started.elapsed() < time && !stop.load(Ordering::Relaxed) && answered < 100_000 {
        // One more every 50 ms up to `in_flight`: the windows' first
        // baseline is measured before the queue builds, as it would be
        // under load that grew.
        while out < in_flight && started.elapsed() >= RAMP * u32::try_from(out).expect("small") {
            send(&sock);
            out += 1;
        }
        // Still queued (no top-up: more in flight would only lengthen the
        // upstream's queue towards the queries' deadline).
        let Ok(n) = sock.recv(&mut buf) else { continue };
        answered += 1;
        // An answer the proxy made itself (SERVFAIL, REFUSED) comes at
        // once: pace the next, or the flood would spin.
        if n < 4 || buf[3] & 0x0f != 0 {
            thread::sleep(Duration::from_millis(10));
        }
        send(&sock);
    }
    answered
}

/// Context switches (voluntary: each a wait that blocked) of the thread of
/// process `pid` named `name`.
fn context_switches(pid: u32, name: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).expect("status");
        return status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches");
    }
    panic!("no thread {name} in process {pid}");
}

/// An idle worker sleeps: it wakes for its own timers (metrics and
/// configuration once a second, an upstream connection's idle timeout), not
/// to tell the watchdog it is alive. Each wait of its event loop is its
/// heartbeat; a timer that beat ten times a second woke it some thirty
/// times a second (with tokio's timer wheel moving that timer between
/// levels, and the epoch's yield after each).
#[test]
fn an_idle_worker_is_not_woken_to_beat() {
    let upstream = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let proxy = Proxy::in_front_of(&[&upstream], &[("WORKERS", "1")]);
    let m = dns::query_over(false, proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError, "{}", proxy.log());
    thread::sleep(Duration::from_secs(1));
    let before = context_switches(proxy.pid(), "worker-0");
    let idle = Duration::from_secs(5);
    thread::sleep(idle);
    let woke = context_switches(proxy.pid(), "worker-0") - before;
    assert!(
        woke <= 10 * idle.as_secs(),
        "the idle worker woke {woke} times in {idle:?}; log:\n{}",
        proxy.log()
    );
    // And it still serves: the loop that slept was not stuck.
    let m = dns::query_over(true, proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError, "{}", proxy.log());
    assert!(!proxy.log().contains("restarting it"), "{}", proxy.log());
}
