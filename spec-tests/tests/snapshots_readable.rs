//! Snapshots (insta) of what a person reads: the proxy's start-up and shutdown log,
//! and `dnsproxy spki` against the fixture resolver. (The error line of each refused
//! check is snapshotted in `pinning.rs`.) What changes from run to run (timestamps,
//! ports, paths, durations) is replaced by a placeholder.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use spec_tests::proxy::Proxy;
use spec_tests::{Chain, FixtureResolver, Misbehave, Resolver, Unbound, dns, pin, zone};

/// `text` with each of `replace` (from, to) substituted, the workspace path as
/// `<root>`, tracing's timestamp column dropped and `ready_in=<duration>` elided.
fn stable(text: &str, replace: &[(String, &str)]) -> String {
    let root = spec_tests::workspace_root().display().to_string();
    text.lines()
        .map(|line| {
            // tracing's format: `<RFC 3339 time>  LEVEL target: message fields`.
            let line = match line.split_once(' ') {
                Some((time, rest)) if time.contains('T') && time.ends_with('Z') => {
                    rest.trim_start()
                }
                _ => line,
            };
            let mut line = line.replace(&root, "<root>");
            for (from, to) in replace {
                line = line.replace(from.as_str(), to);
            }
            if let Some(at) = line.find("ready_in=") {
                let end = line[at..].find(' ').map_or(line.len(), |e| at + e);
                line.replace_range(at..end, "ready_in=<duration>");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn start_up_and_shutdown_log() {
    let unbound = Unbound::start(Chain::DotTest);
    let fixture_resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let pins = [pin("intermediate"), pin("root")].join(",");
    let mut proxy = Proxy::in_front_of(&[&unbound, &fixture_resolver], &[("SPKI", &pins)]);
    let answer = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&answer), [zone::A_ADDR]);
    let status = proxy.stop().expect("it exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", proxy.log());
    assert!(proxy.wait_for_log("stopping", Duration::from_secs(1)));
    let log = stable(
        &proxy.log(),
        &[
            (unbound.addr().to_string(), "<unbound>"),
            (fixture_resolver.addr().to_string(), "<fixture>"),
            (proxy.addr().to_string(), "<listen>"),
        ],
    );
    insta::assert_snapshot!(log);
}

fn spki(resolver: &dyn Resolver) -> String {
    let port = resolver.addr().port().to_string();
    let out = spec_tests::proxy::run_spki(resolver.addr());
    let text = format!(
        "{}{}exit: {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    stable(
        &text,
        &[
            (format!("127.0.0.1:{port}"), "127.0.0.1:<port>"),
            (format!("port {port}"), "port <port>"),
        ],
    )
}

#[test]
fn spki_tool_against_the_fixture_resolver() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let out = spki(&resolver);
    for name in ["dot-test", "intermediate", "root"] {
        assert!(
            out.contains(&pin(name)),
            "the {name} pin (from pins.txt) in:\n{out}"
        );
    }
    insta::assert_snapshot!(out);
}

#[test]
fn spki_tool_against_an_untrusted_chain() {
    let resolver = FixtureResolver::start(Chain::Evil, Misbehave::None);
    let out = spki(&resolver);
    assert!(out.contains(&pin("evil-dot-test")), "{out}");
    insta::assert_snapshot!(out);
}

/// `dnsproxy spki --config`: a pin set with a leaf pin and a backup is
/// accepted with the leaf-only warning; one whose only pin matches nothing is
/// refused, and the tool exits 1.
#[test]
fn spki_tool_checks_a_config_against_the_live_chain() {
    let resolver = FixtureResolver::start(Chain::DotTest, Misbehave::None);
    let (ip, port) = (resolver.addr().ip(), resolver.addr().port());
    let ca = spec_tests::fixture("pki/root.pem");
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("settings.ini");
    let section = |name: &str, pins: &str| {
        format!(
            "[{name}]\ntls_host = {ip}\ntls_port = {port}\ntls_hostname = dot.test\n\
             tls_ca_file = {}\nspki = {pins}\n\n",
            ca.display()
        )
    };
    let ini = section(
        "TLS_SERVER",
        &format!("{}, {}", pin("dot-test"), pin("other-test")),
    ) + &section("TLS_SERVER stale", &pin("evil-dot-test"));
    std::fs::write(&config, ini).expect("write the config");
    let mut cmd = std::process::Command::new(Proxy::binary());
    cmd.env_clear().arg("spki").arg("--config").arg(&config);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd.output().expect("run dnsproxy spki --config");
    let text = format!(
        "{}{}exit: {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    for want in [
        format!("{}  matches 0 leaf CN=dot.test", pin("dot-test")),
        format!(
            "{}  backup (matches no certificate of the live chain)",
            pin("other-test")
        ),
        "warning: only the leaf key is pinned".to_owned(),
        "accepted: the chain verifies and matches a configured pin".to_owned(),
        "# upstream stale".to_owned(),
        "REFUSED: no configured pin matches the chain".to_owned(),
        "exit: Some(1)".to_owned(),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }
    insta::assert_snapshot!(stable(
        &text,
        &[(format!("{ip}:{port}"), "127.0.0.1:<port>")]
    ));
}
