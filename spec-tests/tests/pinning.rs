//! The pinning matrix (RFC 7858 §4.2 out-of-band key-pinned privacy profile, with
//! RFC 7469 pins), against both resolvers: Debian's unbound and our fixture resolver,
//! each in a container presenting a chain from `fixtures/pki/`.
//!
//! Accepted upstreams answer; refused ones get SERVFAIL, and the proxy's log names
//! the upstream and the check that failed (snapshots of those lines are what an
//! operator reads).

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use spec_tests::dns;
use spec_tests::proxy::Proxy;
use spec_tests::scrape::{get, value};
use spec_tests::{Chain, Kind, Resolver, fixture, pin, zone};

fn proxy_for(resolver: &dyn Resolver, extra: &[(&str, &str)]) -> Proxy {
    Proxy::in_front_of(&[resolver], extra)
}

fn assert_accepted(kind: Kind, pins: &str) {
    let resolver = kind.start(Chain::DotTest);
    let proxy = proxy_for(&*resolver, &[("SPKI", pins)]);
    for answer in [
        dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A),
        dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A),
    ] {
        assert_eq!(
            answer.response_code(),
            ResponseCode::NoError,
            "{}",
            proxy.log()
        );
        assert_eq!(dns::a_records(&answer), vec![zone::A_ADDR]);
    }
}

/// Refused: the client gets SERVFAIL, and the log has one `upstream refused` line
/// naming the upstream and `check=<check>`. Returns that line with the port and the
/// variable parts replaced, for a snapshot.
fn assert_refused(
    resolver: &dyn Resolver,
    extra: &[(&str, &str)],
    check: &str,
) -> (String, String) {
    let mut settings = vec![("QUERY_TIMEOUT", "2s")];
    settings.extend_from_slice(extra);
    let proxy = proxy_for(resolver, &settings);
    let line = refused_line(&proxy, check);
    let log = proxy.log();
    let addr = resolver.addr().to_string();
    assert!(
        line.contains(&addr),
        "the line names the upstream {addr}: {line}"
    );
    (stable_line(&line, &addr), log)
}

/// Queries `proxy`, expects SERVFAIL, and returns the `upstream refused` line
/// with `check=<check>` the log then holds.
fn refused_line(proxy: &Proxy, check: &str) -> String {
    let answer = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(
        answer.response_code(),
        ResponseCode::ServFail,
        "{}",
        proxy.log()
    );
    let needle = format!("check={check}");
    assert!(
        proxy.wait_for_log(&needle, Duration::from_secs(5)),
        "the log names the {check} check:\n{}",
        proxy.log()
    );
    let log = proxy.log();
    log.lines()
        .find(|l| l.contains("upstream refused") && l.contains(&needle))
        .unwrap_or_else(|| panic!("an `upstream refused` line with {needle}:\n{log}"))
        .to_string()
}

/// The refused line without what changes from run to run: the timestamp and level
/// prefix, and the upstream's port.
fn stable_line(line: &str, addr: &str) -> String {
    let from = line.find("upstream refused").unwrap_or(0);
    line[from..].replace(addr, "127.0.0.1:<port>")
}

fn leaf_pin_accepted(kind: Kind) {
    assert_accepted(kind, &pin("dot-test"));
}

fn intermediate_pin_accepted(kind: Kind) {
    assert_accepted(kind, &pin("intermediate"));
}

fn root_pin_accepted(kind: Kind) {
    // The root is not sent by the server: it is the verified path's anchor.
    assert_accepted(kind, &pin("root"));
}

fn one_of_many_pins_accepted(kind: Kind) {
    let pins = [pin("evil-root"), pin("other-test"), pin("intermediate")].join(",");
    assert_accepted(kind, &pins);
}

fn only_wrong_pins_refused(kind: Kind) {
    let resolver = kind.start(Chain::DotTest);
    let wrong = [pin("evil-root"), pin("evil-dot-test")].join(",");
    let (line, log) = assert_refused(&*resolver, &[("SPKI", &wrong)], "pin");
    for presented in ["dot-test", "intermediate", "root"] {
        assert!(
            log.contains(&pin(presented)),
            "the log lists the presented {presented} pin:\n{log}"
        );
    }
    insta::assert_snapshot!(format!("only_wrong_pins_refused_{kind:?}"), line);
}

fn untrusted_ca_refused(kind: Kind) {
    let resolver = kind.start(Chain::Evil);
    let (line, _) = assert_refused(&*resolver, &[], "CA");
    insta::assert_snapshot!(format!("untrusted_ca_refused_{kind:?}"), line);
}

fn untrusted_ca_refused_even_with_its_pin(kind: Kind) {
    // A pin never replaces CA validation: the evil chain's own pin does not help.
    let resolver = kind.start(Chain::Evil);
    assert_refused(&*resolver, &[("SPKI", &pin("evil-dot-test"))], "CA");
}

fn wrong_name_refused(kind: Kind) {
    let resolver = kind.start(Chain::OtherTest);
    let (line, _) = assert_refused(&*resolver, &[], "name");
    insta::assert_snapshot!(format!("wrong_name_refused_{kind:?}"), line);
}

fn expired_leaf_refused(kind: Kind) {
    let resolver = kind.start(Chain::Expired);
    let (line, _) = assert_refused(&*resolver, &[], "CA");
    insta::assert_snapshot!(format!("expired_leaf_refused_{kind:?}"), line);
}

fn pin_on_unverified_extra_certificate_refused(kind: Kind) {
    // The server sends the evil root after its valid chain; path building never
    // uses it, so a pin on it must not count.
    let mut pem = std::fs::read(fixture("pki/dot-test.chain.pem")).expect("chain");
    pem.extend(std::fs::read(fixture("pki/evil-root.pem")).expect("evil root"));
    let resolver = kind.start_presenting(Chain::DotTest, Some(pem));
    assert_refused(&*resolver, &[("SPKI", &pin("evil-root"))], "pin");
}

/// The shipped settings.ini with a Cloudflare-style upstream (`tls_hostname =
/// cloudflare-dns.com`) pinned to the evil root: an upstream that inherited
/// its name or its pins would be refused.
fn named_and_pinned_file() -> tempfile::NamedTempFile {
    let shipped = std::fs::read_to_string(spec_tests::workspace_root().join("settings.ini"))
        .expect("read the shipped settings.ini");
    assert!(shipped.contains("tls_hostname = cloudflare-dns.com\n"));
    let text = shipped.replacen("\nspki =\n", &format!("\nspki = {}\n", pin("evil-root")), 1);
    assert_ne!(text, shipped, "the file is pinned");
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("write settings");
    file
}

/// The seed's `-e TLS_HOST=<ip> -e SPKI=<pin>` over that file: the new
/// upstream takes neither the file's name nor its pins, and is verified by
/// its IP address (the fixture leaf carries IP 127.0.0.1).
fn tls_host_without_name_verified_by_ip_address(kind: Kind) {
    let resolver = kind.start(Chain::DotTest);
    let file = named_and_pinned_file();
    let addr = resolver.addr();
    let root = fixture("pki/root.pem").display().to_string();
    let env = [
        ("TLS_HOST", addr.ip().to_string()),
        ("TLS_PORT", addr.port().to_string()),
        ("SPKI", pin("intermediate")),
        ("TLS_CA_FILE", root.clone()),
    ];
    let config = file.path().to_str().expect("utf-8 path");
    let proxy = Proxy::start(&env, &["--config", config]);
    for answer in [
        dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A),
        dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A),
    ] {
        assert_eq!(
            dns::a_records(&answer),
            vec![zone::A_ADDR],
            "{}",
            proxy.log()
        );
    }
    let start = format!("{addr} (verified by IP address, {root}, 1 pin)");
    assert!(
        proxy.log().contains(&start),
        "start-up line says {start:?}:\n{}",
        proxy.log()
    );
    assert!(
        proxy
            .log()
            .contains(&format!("{addr} (verified by IP address)")),
        "the serving line too:\n{}",
        proxy.log()
    );
}

/// The same with a leaf that names only `other.test`: no IP SAN, so the
/// name check refuses it and says which address it wanted.
fn tls_host_without_name_and_no_ip_san_refused(kind: Kind) {
    let resolver = kind.start(Chain::OtherTest);
    let file = named_and_pinned_file();
    let addr = resolver.addr();
    let env = [
        ("TLS_HOST", addr.ip().to_string()),
        ("TLS_PORT", addr.port().to_string()),
        ("SPKI", pin("intermediate")),
        ("TLS_CA_FILE", fixture("pki/root.pem").display().to_string()),
        ("QUERY_TIMEOUT", "2s".into()),
    ];
    let config = file.path().to_str().expect("utf-8 path");
    let proxy = Proxy::start(&env, &["--config", config]);
    let line = refused_line(&proxy, "name");
    insta::assert_snapshot!(
        format!("tls_host_without_name_and_no_ip_san_refused_{kind:?}"),
        stable_line(&line, &addr.to_string())
    );
}

/// The `[TLS_SERVER dot]` section for `resolver`, pinned to `pins`.
fn pinned_section(resolver: &dyn Resolver, pins: &str) -> String {
    let addr = resolver.addr();
    format!(
        "[TLS_SERVER dot]\ntls_host = {}\ntls_port = {}\ntls_hostname = dot.test\n\
         tls_ca_file = {}\nspki = {pins}\n",
        addr.ip(),
        addr.port(),
        fixture("pki/root.pem").display()
    )
}

/// TLS 1.3 resumption (RFC 8446 §2.2) without skipping the pins: after one
/// full handshake that passed them, each reconnection (the idle connection
/// closed after 1 s) is resumed; a reload that changes the pins starts with
/// an empty session store, so the next connection is a full handshake,
/// checked against the new (wrong) pin and refused. A session from before
/// cannot carry the proxy past a pin it no longer trusts.
fn sessions_resume_and_a_pin_change_forces_a_full_handshake(kind: Kind) {
    let resolver = kind.start(Chain::DotTest);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("settings.ini");
    std::fs::write(&path, pinned_section(&*resolver, &pin("intermediate"))).expect("write");
    let metrics = format!("127.0.0.1:{}", spec_tests::free_port());
    let proxy = Proxy::start(
        &[
            ("METRICS_LISTEN", metrics.as_str()),
            ("UPSTREAM_IDLE_TIMEOUT", "1s"),
            ("QUERY_TIMEOUT", "2s"),
        ],
        &["--config", path.to_str().expect("utf-8 path")],
    );
    let metrics = metrics.parse().expect("address");
    let handshakes = |kind: &str| {
        let body = get(metrics, "/metrics").1;
        let label = format!("kind=\"{kind}\"");
        value(&body, "dnsproxy_upstream_handshakes_total", &[&label])
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for _ in 0..3 {
        let answer = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
        assert_eq!(
            answer.response_code(),
            ResponseCode::NoError,
            "{}",
            proxy.log()
        );
        // Past upstream_idle_timeout: the next query connects again.
        std::thread::sleep(Duration::from_millis(1_600));
    }
    assert!(
        spec_tests::wait_until(Duration::from_secs(5), || handshakes("resumed") == 2),
        "expected 1 full and 2 resumed handshakes, got {} and {}:\n{}",
        handshakes("full"),
        handshakes("resumed"),
        proxy.log()
    );
    assert_eq!(handshakes("full"), 1);

    std::fs::write(&path, pinned_section(&*resolver, &pin("other-test"))).expect("write");
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    // The component takes the new configuration within a second.
    std::thread::sleep(Duration::from_millis(1_500));
    refused_line(&proxy, "pin");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(
        handshakes("resumed"),
        2,
        "nothing resumed after the pin change"
    );
}

/// Each case, once per resolver, as its own named test.
macro_rules! against_both {
    ($($case:ident),* $(,)?) => {
        mod unbound {
            $( #[test] fn $case() { super::$case(spec_tests::Kind::Unbound) } )*
        }
        mod fixture {
            $( #[test] fn $case() { super::$case(spec_tests::Kind::Fixture) } )*
        }
    };
}

against_both!(
    leaf_pin_accepted,
    intermediate_pin_accepted,
    root_pin_accepted,
    one_of_many_pins_accepted,
    only_wrong_pins_refused,
    untrusted_ca_refused,
    untrusted_ca_refused_even_with_its_pin,
    wrong_name_refused,
    expired_leaf_refused,
    pin_on_unverified_extra_certificate_refused,
    tls_host_without_name_verified_by_ip_address,
    tls_host_without_name_and_no_ip_san_refused,
    sessions_resume_and_a_pin_change_forces_a_full_handshake,
);
