//! `dnsproxy check`, run as a user runs it: the real binary on a config file,
//! the environment and flags. It validates like `run` and prints where each
//! value came from, but binds and connects nothing.

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use spec_tests::proxy::Proxy;
use spec_tests::{fixture, workspace_root};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The shipped settings.ini, copied into a temp dir (so the output names a
/// path the test knows).
fn shipped() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("settings.ini");
    std::fs::copy(workspace_root().join("settings.ini"), &path).expect("copy settings.ini");
    (dir, path.display().to_string())
}

/// The 1-based line of the shipped settings.ini that sets `key`.
fn line_of(path: &str, key: &str) -> usize {
    let text = std::fs::read_to_string(path).expect("read settings.ini");
    text.lines()
        .position(|l| l.starts_with(&format!("{key} =")))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("settings.ini sets {key}"))
}

/// The output line for `key` (the first one, for upstream keys), split into
/// words.
fn row(out: &str, key: &str) -> Vec<String> {
    out.lines()
        .map(str::trim_start)
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("a line for {key}:\n{out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn check_prints_each_setting_with_its_origin_and_exits_0() {
    let (_dir, path) = shipped();
    let (code, out) = Proxy::run_to_exit(
        &[("TLS_PORT", "8853"), ("LOCAL_PORT", "5353")],
        &["check", "--config", &path, "--log-level", "debug"],
        TIMEOUT,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("config OK\n"), "{out}");
    assert_eq!(
        row(&out, "local_port"),
        ["local_port", "5353", "env", "LOCAL_PORT"]
    );
    assert_eq!(
        row(&out, "tls_port"),
        ["tls_port", "8853", "env", "TLS_PORT"]
    );
    assert_eq!(
        row(&out, "tls_hostname"),
        [
            "tls_hostname".to_owned(),
            "cloudflare-dns.com".to_owned(),
            format!("{path}:{}", line_of(&path, "tls_hostname"))
        ]
    );
    assert_eq!(
        row(&out, "log_level"),
        ["log_level", "debug", "flag", "--log-level"]
    );
    assert_eq!(row(&out, "max_inflight")[0..2], ["max_inflight", "2048"]);
    // Both of the file's upstreams, on the port from the environment.
    assert!(out.contains("upstream 1 1.1.1.1:8853\n"), "{out}");
    assert!(out.contains("upstream 2 1.0.0.1:8853\n"), "{out}");
}

#[test]
fn check_shows_an_env_upstream_verified_by_ip_address() {
    let (_dir, path) = shipped();
    let root = fixture("pki/root.pem").display().to_string();
    let (code, out) = Proxy::run_to_exit(
        &[("TLS_HOST", "8.8.8.8"), ("TLS_CA_FILE", root.as_str())],
        &["check", "--config", &path],
        TIMEOUT,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("upstream 1 8.8.8.8:853\n"), "{out}");
    assert!(!out.contains("upstream 2"), "{out}");
    assert_eq!(
        row(&out, "tls_hostname"),
        [
            "tls_hostname",
            "none:",
            "verified",
            "by",
            "IP",
            "address",
            "default"
        ]
    );
    assert_eq!(
        row(&out, "tls_ca_file"),
        ["tls_ca_file", root.as_str(), "env", "TLS_CA_FILE"]
    );
}

#[test]
fn check_exits_64_with_one_line_on_a_bad_config() {
    let (dir, path) = shipped();
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nMIIBnotDER\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let broken = broken.display().to_string();
    for (env, needle) in [
        (
            ("TLS_PORT", "abc"),
            r#"invalid tls_port "abc" (env TLS_PORT)"#,
        ),
        (("TLS_CA_FILE", broken.as_str()), "invalid tls_ca_file"),
    ] {
        let (code, out) = Proxy::run_to_exit(&[env], &["check", "--config", &path], TIMEOUT);
        assert_eq!(code, Some(64), "{out}");
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line:\n{out}");
        assert!(
            lines[0].starts_with("dnsproxy: ") && lines[0].contains(needle),
            "{out}"
        );
    }
}

#[test]
fn check_binds_nothing() {
    // The listen port is taken, over UDP and TCP: `run` would fail to bind it.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let port = udp.local_addr().expect("addr").port();
    let _tcp = TcpListener::bind(("127.0.0.1", port)).ok();
    let (_dir, path) = shipped();
    let port = port.to_string();
    let (code, out) = Proxy::run_to_exit(
        &[("LOCAL_HOST", "127.0.0.1"), ("LOCAL_PORT", port.as_str())],
        &["check", "--config", &path],
        TIMEOUT,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(row(&out, "local_port")[1], port);
}
