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
    let line = log
        .lines()
        .find(|l| l.contains("upstream refused") && l.contains(&needle))
        .unwrap_or_else(|| panic!("an `upstream refused` line with {needle}:\n{log}"))
        .to_string();
    let addr = resolver.addr().to_string();
    assert!(
        line.contains(&addr),
        "the line names the upstream {addr}: {line}"
    );
    (stable_line(&line, &addr), log)
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
);
