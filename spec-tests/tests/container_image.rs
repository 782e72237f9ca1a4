//! The shipped image (`dnsproxy:latest`, built by `make build`), run as users run it:
//! against a DoT resolver container on a user-defined Docker network, read-only, with
//! no capabilities, configured by `-e` variables over the image's settings.ini.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use spec_tests::docker::{self, LABEL, Network};
use spec_tests::{Chain, Resolver as _, Unbound, dns, fixture, free_port, pin, zone};
use testcontainers::core::wait::ExitWaitStrategy;
use testcontainers::core::{AccessMode, ContainerPort, Mount, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{GenericImage, ImageExt};

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

#[test]
fn image_resolves_over_udp_and_tcp_through_a_resolver_on_a_user_defined_network() {
    let net = Network::new("image");
    let unbound = Unbound::start_full(Chain::DotTest, "", Vec::new(), Some(&net));
    let upstream = unbound.network_addr().expect("an address on the network");
    // The host port is picked before Docker binds it: if another process takes it
    // in between, Docker says so and the container starts on another port.
    let start = |port: u16| {
        image()
            .with_wait_for(WaitFor::message_on_stderr("serving listen="))
            .with_network(net.name())
            .with_env_var("TLS_HOST", upstream.ip().to_string())
            .with_env_var("TLS_PORT", upstream.port().to_string())
            .with_env_var("TLS_HOSTNAME", "dot.test")
            .with_env_var("TLS_CA_FILE", "/pki/root.pem")
            .with_env_var("SPKI", pin("intermediate"))
            .with_env_var("LOG_LEVEL", "debug")
            .with_mount(
                Mount::bind_mount(
                    fixture("pki/root.pem").display().to_string(),
                    "/pki/root.pem",
                )
                .with_access_mode(AccessMode::ReadOnly),
            )
            .with_mapped_port(port, ContainerPort::Udp(53))
            .with_mapped_port(port, ContainerPort::Tcp(53))
            .with_host_config_modifier(docker::publish_on_loopback)
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
                Err(e) if attempt < 5 && e.to_string().contains("already") => None,
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
