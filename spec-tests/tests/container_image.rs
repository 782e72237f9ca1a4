//! The shipped image (`dnsproxy:latest`, built by `make build`), run as users run it:
//! against a DoT resolver container on a user-defined Docker network, read-only, with
//! no capabilities, configured by `-e` variables over the image's settings.ini.

use std::collections::HashMap;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use spec_tests::docker::{self, LABEL, Network};
use spec_tests::{Chain, Resolver as _, Unbound, dns, fixture, free_port, pin, zone};
use testcontainers::core::wait::ExitWaitStrategy;
use testcontainers::core::{AccessMode, ContainerPort, Mount, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

/// The image under test: `$DNSPROXY_IMAGE`, else `dnsproxy:latest`.
fn image() -> GenericImage {
    docker::require();
    let reference = std::env::var("DNSPROXY_IMAGE").unwrap_or_else(|_| "dnsproxy:latest".into());
    assert!(
        docker::image_exists(&reference),
        "no image {reference}: build it with `make build` (make spec does)"
    );
    let (name, tag) = reference.split_once(':').unwrap_or((&reference, "latest"));
    GenericImage::new(name, tag)
}

/// The image on `net` as users run it (read-only, no capabilities, the test
/// CA at `/pki/root.pem`), configured by `env`, with `sysctls` set in its
/// network namespace and port 53 (UDP and TCP) published on a free loopback
/// port: the container and that port.
fn start_on(
    net: &Network,
    env: &[(&str, String)],
    sysctls: &[(&str, &str)],
) -> (Container<GenericImage>, u16) {
    let sysctls: HashMap<String, String> = sysctls
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    // The host port is picked before Docker binds it: if another process takes it
    // in between, Docker says so and the container starts on another port.
    let start = |port: u16| {
        let mut request = image()
            .with_wait_for(WaitFor::message_on_stderr("serving listen="))
            .with_network(net.name());
        for (name, value) in env {
            request = request.with_env_var(*name, value.clone());
        }
        let sysctls = sysctls.clone();
        request
            .with_mount(
                Mount::bind_mount(
                    fixture("pki/root.pem").display().to_string(),
                    "/pki/root.pem",
                )
                .with_access_mode(AccessMode::ReadOnly),
            )
            .with_mapped_port(port, ContainerPort::Udp(53))
            .with_mapped_port(port, ContainerPort::Tcp(53))
            .with_host_config_modifier(move |hc| {
                docker::publish_on_loopback(hc);
                if !sysctls.is_empty() {
                    hc.sysctls = Some(sysctls.clone());
                }
            })
            .with_readonly_rootfs(true)
            .with_cap_drop("ALL")
            .with_security_opt("no-new-privileges")
            .with_label(LABEL, "1")
            .with_startup_timeout(Duration::from_secs(30))
            .start()
    };
    (1..=5)
        .find_map(|attempt| {
            let port = free_port();
            match start(port) {
                Ok(proxy) => Some((proxy, port)),
                Err(e) if attempt < 5 && e.to_string().contains("already") => None,
                Err(e) => panic!("the dnsproxy image did not start: {e}"),
            }
        })
        .expect("the last attempt starts or panics")
}

/// What the container wrote, stdout then stderr.
fn logs(proxy: &Container<GenericImage>) -> String {
    let mut out = proxy.stdout_to_vec().unwrap_or_default();
    out.extend(proxy.stderr_to_vec().unwrap_or_default());
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn image_resolves_over_udp_and_tcp_through_a_resolver_on_a_user_defined_network() {
    let net = Network::new("image");
    let unbound = Unbound::start_full(Chain::DotTest, "", Vec::new(), Some(&net));
    let upstream = unbound.network_addr().expect("an address on the network");
    let (proxy, port) = start_on(
        &net,
        &[
            ("TLS_HOST", upstream.ip().to_string()),
            ("TLS_PORT", upstream.port().to_string()),
            ("TLS_HOSTNAME", "dot.test".into()),
            ("TLS_CA_FILE", "/pki/root.pem".into()),
            ("SPKI", pin("intermediate")),
            ("LOG_LEVEL", "debug".into()),
        ],
        &[],
    );
    let logs = || logs(&proxy);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let udp = dns::query_udp(addr, zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&udp), [zone::A_ADDR], "logs:\n{}", logs());
    let tcp = dns::query_tcp(addr, zone::MULTI_NAME, RecordType::A);
    assert_eq!(
        dns::a_records(&tcp).len(),
        zone::MULTI_ADDRS.len(),
        "logs:\n{}",
        logs()
    );
    // At debug, `docker logs` shows the start-up line and one line per TCP client.
    let log = logs();
    assert!(log.contains("starting"), "{log}");
    assert!(log.contains("listen=0.0.0.0:53"), "{log}");
    assert!(
        log.contains("connected by") && log.contains("proto=tcp"),
        "a line per TCP client connection:\n{log}"
    );
}

#[test]
fn image_exits_64_with_one_line_on_a_bad_env_value() {
    let proxy = image()
        .with_wait_for(WaitFor::exit(ExitWaitStrategy::new()))
        .with_env_var("LOCAL_PORT", "not-a-port")
        .with_label(LABEL, "1")
        .with_startup_timeout(Duration::from_secs(30))
        .start()
        .expect("the container runs to its exit");
    assert_eq!(proxy.exit_code().expect("inspect"), Some(64));
    let stderr = String::from_utf8_lossy(&proxy.stderr_to_vec().unwrap_or_default()).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(lines[0].contains("LOCAL_PORT"), "{stderr}");
}

/// The original README's `make run EXTRA_VARS="-e TLS_HOST=8.8.8.8 -e SPKI=..."`
/// with the default image and its own settings.ini (Cloudflare's name): the
/// upstream given by address is verified by that address, with the given pin.
/// Against a local resolver whose certificate carries 127.0.0.1, so the image
/// runs on the host's network (and listens on loopback only).
#[test]
fn image_serves_an_upstream_given_by_tls_host_and_spki_alone() {
    let resolver = Unbound::start(Chain::DotTest);
    let upstream = resolver.addr();
    let start = |port: u16| {
        image()
            .with_wait_for(WaitFor::message_on_stderr("serving listen="))
            .with_network("host")
            .with_host_config_modifier(|hc| {
                hc.publish_all_ports = Some(false);
                hc.port_bindings = None;
            })
            .with_env_var("LOCAL_HOST", "127.0.0.1")
            .with_env_var("LOCAL_PORT", port.to_string())
            .with_env_var("TLS_HOST", upstream.ip().to_string())
            .with_env_var("TLS_PORT", upstream.port().to_string())
            .with_env_var("SPKI", pin("intermediate"))
            .with_env_var("TLS_CA_FILE", "/pki/root.pem")
            .with_mount(
                Mount::bind_mount(
                    fixture("pki/root.pem").display().to_string(),
                    "/pki/root.pem",
                )
                .with_access_mode(AccessMode::ReadOnly),
            )
            .with_readonly_rootfs(true)
            .with_cap_drop("ALL")
            .with_security_opt("no-new-privileges")
            .with_label(LABEL, "1")
            .with_startup_timeout(Duration::from_secs(30))
            .start()
    };
    let (proxy, port) = (1..=5)
        .find_map(|attempt| {
            let port = free_port();
            match start(port) {
                Ok(proxy) => Some((proxy, port)),
                Err(e) if attempt < 5 => {
                    eprintln!("attempt {attempt} on port {port}: {e}");
                    None
                }
                Err(e) => panic!("the dnsproxy image did not start: {e}"),
            }
        })
        .expect("the last attempt starts or panics");
    let logs = || {
        let mut out = proxy.stdout_to_vec().unwrap_or_default();
        out.extend(proxy.stderr_to_vec().unwrap_or_default());
        String::from_utf8_lossy(&out).into_owned()
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let answer = dns::query_udp(addr, zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&answer), [zone::A_ADDR], "logs:\n{}", logs());
    let log = logs();
    let line = format!("{upstream} (verified by IP address, /pki/root.pem, 1 pin)");
    assert!(
        log.contains(&line),
        "the start-up line says {line:?}:\n{log}"
    );
    assert!(!log.contains("cloudflare"), "{log}");
}

/// A query for `name` whose OPT record carries an option of `padding` bytes
/// (code 65001, unknown, so the proxy forwards it): a query near
/// `MAX_QUERY_LEN` (4,096 bytes), so few of them fill a send buffer.
fn bulky_query(name: &str, id: u16, padding: usize) -> Vec<u8> {
    let mut q = Vec::with_capacity(64 + padding);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("a short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let rdlen = u16::try_from(4 + padding).expect("an option that fits");
    let optlen = u16::try_from(padding).expect("an option that fits");
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    q.extend_from_slice(&rdlen.to_be_bytes());
    q.extend_from_slice(&65001u16.to_be_bytes());
    q.extend_from_slice(&optlen.to_be_bytes());
    q.resize(q.len() + padding, b'x');
    q
}

/// The proxy must never wait for a peer inside a write. In the component,
/// wasi-libc's `write` to a socket ended in `blocking-flush`, which waits
/// until the host has written every byte: once the kernel's send buffer to
/// an upstream that stopped reading was full, the worker stopped with it,
/// every client and every deadline, until that upstream read or closed.
/// With the loopback's send buffers (megabytes) the proxy's window of
/// queries never fills one, so the proxy runs in the image with the
/// buffers a smaller host has (`net.ipv4.tcp_wmem` at most 64 KiB, set in
/// the container's own network namespace), the first upstream reads
/// nothing after its handshake, and TCP clients pipeline 4-KB queries.
/// UDP probes meanwhile must each be answered, by the second upstream,
/// within the query deadline. Before `tcp-send` the probes went
/// unanswered from the first second of the flood to its end.
#[test]
fn image_keeps_serving_while_an_upstream_that_stopped_reading_has_a_full_send_buffer() {
    use std::io::Read as _;
    use std::time::Instant;

    use spec_tests::{FixtureResolver, Misbehave};

    let net = Network::new("stall");
    let stalled = FixtureResolver::start_full(
        Chain::DotTest,
        Misbehave::StallAfter(0),
        Vec::new(),
        Some(&net),
    );
    let good = FixtureResolver::start_full(Chain::DotTest, Misbehave::None, Vec::new(), Some(&net));
    let (a, b) = (
        stalled.network_addr().expect("an address"),
        good.network_addr().expect("an address"),
    );
    let (proxy, port) = start_on(
        &net,
        &[
            ("TLS_HOST", format!("{},{}", a.ip(), b.ip())),
            ("TLS_PORT", format!("{},{}", a.port(), b.port())),
            ("TLS_HOSTNAME", "dot.test".into()),
            ("TLS_CA_FILE", "/pki/root.pem".into()),
            ("WORKERS", "1".into()),
            ("CACHE_SIZE_MIB", "0".into()),
        ],
        &[("net.ipv4.tcp_wmem", "4096 16384 65536")],
    );
    let logs = || logs(&proxy);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // The first query waits out the stalled upstream, then the second answers.
    let probe = |name: &str| {
        let started = Instant::now();
        let answered = dns::exchange_udp(
            addr,
            &dns::query(name, RecordType::A),
            Duration::from_secs(6),
        )
        .is_ok();
        (answered, started.elapsed())
    };
    assert!(
        probe(zone::A_NAME).0,
        "no answer before the flood; logs:\n{}",
        logs()
    );

    let flood_for = Duration::from_secs(8);
    let until = Instant::now() + flood_for;
    let flood: Vec<_> = (0..16u16)
        .map(|c| {
            std::thread::spawn(move || {
                let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
                    return 0u64;
                };
                // A proxy that stopped reading must not hold up the flood's end.
                tcp.set_write_timeout(Some(Duration::from_secs(1)))
                    .expect("a write timeout");
                let mut rd = tcp.try_clone().expect("a clone of the stream");
                // Answers are read (the client is not what is tested).
                let reader = std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = rd.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                });
                let mut sent = 0u64;
                'flood: while Instant::now() < until {
                    for i in 0..32u16 {
                        let name = format!("bulky-{c}-{sent}.dot.test");
                        if dns::write_framed(&mut tcp, &bulky_query(&name, i, 3900)).is_err() {
                            break 'flood;
                        }
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = tcp.shutdown(std::net::Shutdown::Both);
                let _ = reader.join();
                sent
            })
        })
        .collect();
    let mut probes = Vec::new();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        probes.push(probe(&format!("probe-{n}.dot.test")));
        std::thread::sleep(Duration::from_millis(250));
    }
    let sent: u64 = flood.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let unanswered = probes.iter().filter(|(answered, _)| !answered).count();
    let slowest = probes
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{sent} bulky queries sent; {} probes, {unanswered} unanswered, slowest {slowest:?}",
        probes.len()
    );
    assert!(sent > 1000, "the flood sent only {sent} queries");
    assert_eq!(
        unanswered,
        0,
        "probes went unanswered during the flood; logs:\n{}",
        logs()
    );
    // The query deadline (4 s) bounds every answer, SERVFAIL included.
    assert!(
        slowest < Duration::from_millis(4500),
        "a probe took {slowest:?}"
    );
    assert!(
        probe(zone::A_NAME).0,
        "no answer after the flood; logs:\n{}",
        logs()
    );
}
