//! Layering, upstream assembly and error-line tests for `load`.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser as _;
use dnsproxy_core::core::pins::{Pin, PinSet};

use super::*;
use crate::cli::{Cli, Command, RunArgs};

const PIN_A: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
const PIN_B: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
/// A CA bundle that parses: the test PKI's root.
const PEM: &str = include_str!("../../../fixtures/pki/root.pem");
const UPSTREAM: &str = "[TLS_SERVER]\ntls_host = 192.0.2.1\ntls_hostname = dns.example\n";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dnsproxy-config-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("write temp file");
        path
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A failed load: the error, and its line with the temp directory removed so
/// the file reads `settings.ini` as it would for a user.
#[derive(Debug)]
struct Failure {
    error: ConfigError,
    line: String,
}

/// Loads with `ini` as `--config` (no config file if `None`), `env` as the
/// whole environment and `argv` as the flags after `dnsproxy`.
fn load_in(
    dir: &TempDir,
    ini: Option<&str>,
    env: &[(&str, &str)],
    argv: &[&str],
) -> Result<ProxyConfig, Box<Failure>> {
    let cli = Cli::try_parse_from(std::iter::once("dnsproxy").chain(argv.iter().copied()))
        .expect("valid flags");
    let Command::Run(mut flags) = cli.into_command() else {
        panic!("expected run flags");
    };
    let env = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    };
    let result = match ini {
        Some(text) => {
            flags.config = Some(dir.write("settings.ini", text));
            load(&flags, &env)
        }
        // Not `load`: it would read ./settings.ini if the working directory had one.
        None => resolve(&Layers {
            file: None,
            env: &env,
            flags: &flags,
        })
        .map(|(config, _)| config),
    };
    result.map_err(|error| {
        let line = error
            .to_string()
            .replace(&format!("{}/", dir.0.display()), "");
        Box::new(Failure { error, line })
    })
}

fn load_with(
    ini: Option<&str>,
    env: &[(&str, &str)],
    argv: &[&str],
) -> Result<ProxyConfig, Box<Failure>> {
    load_in(&TempDir::new(), ini, env, argv)
}

fn ok(result: Result<ProxyConfig, Box<Failure>>) -> ProxyConfig {
    result.unwrap_or_else(|f| panic!("unexpected error: {}", f.line))
}

fn err(result: Result<ProxyConfig, Box<Failure>>) -> Failure {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(failure) => *failure,
    }
}

fn addrs(config: &ProxyConfig) -> Vec<String> {
    config
        .upstreams
        .iter()
        .map(|u| u.addr.to_string())
        .collect()
}

fn names(config: &ProxyConfig) -> Vec<&str> {
    config.upstreams.iter().map(|u| u.name.as_str()).collect()
}

/// An upstream's pins in the base64 form `spki =` takes.
fn spki(upstream: &UpstreamConfig) -> Vec<String> {
    upstream
        .pins
        .pins()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn defaults_apply_when_no_layer_sets_a_key() {
    let config = ok(load_with(
        None,
        &[("TLS_HOST", "192.0.2.1"), ("TLS_HOSTNAME", "dns.example")],
        &[],
    ));
    assert_eq!(config.listen, ["0.0.0.0:53".parse().expect("addr")]);
    let nets: Vec<String> = config.allow_networks.iter().map(IpNet::to_string).collect();
    assert_eq!(
        nets.join(", "),
        defaults::ALLOW_NETWORKS
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        config.upstreams,
        [UpstreamConfig {
            name: "192.0.2.1:853".into(),
            addr: "192.0.2.1:853".parse().expect("addr"),
            auth_name: AuthName::Dns("dns.example".into()),
            pins: PinSet::default(),
            ca: None,
        }]
    );
    assert_eq!(config.query_timeout, Duration::from_secs(4));
    assert_eq!(config.upstream_timeout, Duration::from_millis(1500));
    assert_eq!(config.tcp_idle_timeout, Duration::from_secs(10));
    assert_eq!(config.upstream_idle_timeout, Duration::from_secs(30));
    assert_eq!(config.max_tcp_clients, 2048);
    assert_eq!(config.max_udp_size, 1232);
    assert_eq!(config.max_inflight, 2048);
    assert_eq!(config.client_buffer_budget, 32 << 20);
    assert_eq!(config.log_level, Level::Info);
    assert_eq!(config.log_format, crate::config::LogFormat::Text);
    assert!(!config.log_queries, "the query log is opt-in");
}

#[test]
fn empty_values_mean_the_default() {
    let ini = format!(
        "[LOCAL_SERVER]\nlocal_host =\nlocal_port =\n{UPSTREAM}tls_port =\nspki =\n\
         tls_ca_file =\n[PROXY]\nquery_timeout =\nmax_inflight =\nlog_level =\n"
    );
    let config = ok(load_with(Some(&ini), &[], &[]));
    assert_eq!(config.listen, ["0.0.0.0:53".parse().expect("addr")]);
    assert_eq!(addrs(&config), ["192.0.2.1:853"]);
    assert_eq!(config.upstreams[0].pins, PinSet::default());
    assert_eq!(config.upstreams[0].ca, None);
    assert_eq!(config.query_timeout, defaults::QUERY_TIMEOUT.default);
    assert_eq!(config.max_inflight, defaults::MAX_INFLIGHT.default as usize);
    assert_eq!(config.log_level, Level::Info);
}

/// One key: three values (ini, env, flag) and how each shows in the ProxyConfig.
struct Case {
    key: Key,
    values: [(String, String); 3],
    show: fn(&ProxyConfig) -> String,
}

fn case(key: Key, values: [(&str, &str); 3], show: fn(&ProxyConfig) -> String) -> Case {
    Case {
        key,
        values: values.map(|(given, shown)| (given.to_owned(), shown.to_owned())),
        show,
    }
}

/// `UPSTREAM` plus `[section] key = value`, merged into an existing section.
fn ini_with(key: Key, value: &str) -> String {
    let header = format!("[{}]\n", key.section().header());
    let line = format!("{} = {value}\n", key.name());
    match key {
        Key::TlsHost | Key::TlsHostname => {
            let mut ini = UPSTREAM.to_owned();
            let old = ini
                .lines()
                .find(|l| l.starts_with(key.name()))
                .map(str::to_owned);
            if let Some(old) = old {
                ini = ini.replace(&format!("{old}\n"), &line);
            }
            ini
        }
        _ if key.section() == Section::TlsServer => format!("{UPSTREAM}{line}"),
        _ => format!("{UPSTREAM}{header}{line}"),
    }
}

#[test]
fn every_key_follows_ini_then_env_then_flags() {
    let dir = TempDir::new();
    let ca: Vec<String> = (0..3)
        .map(|i| dir.write(&format!("ca{i}.pem"), PEM).display().to_string())
        .collect();
    let cases = [
        case(
            Key::LocalHost,
            [
                ("127.0.0.1", "127.0.0.1"),
                ("::1", "::1"),
                ("[::2], 0.0.0.0, ::2", "::2 0.0.0.0"),
            ],
            |c| {
                c.listen
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ),
        case(
            Key::LocalPort,
            [("5353", "5353"), ("5354", "5354"), ("5355", "5355")],
            |c| c.listen[0].port().to_string(),
        ),
        case(
            Key::AllowNetworks,
            [
                ("10.1.0.0/16", "10.1.0.0/16"),
                ("::1, 10.9.9.9", "::1/128 10.9.9.9/32"),
                ("0.0.0.0/0", "0.0.0.0/0"),
            ],
            |c| {
                c.allow_networks
                    .iter()
                    .map(IpNet::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ),
        case(
            Key::TlsHost,
            [
                ("192.0.2.7", "192.0.2.7"),
                ("198.51.100.1", "198.51.100.1"),
                ("203.0.113.1", "203.0.113.1"),
            ],
            |c| c.upstreams[0].addr.ip().to_string(),
        ),
        case(
            Key::TlsPort,
            [("8853", "8853"), ("9853", "9853"), ("10853", "10853")],
            |c| c.upstreams[0].addr.port().to_string(),
        ),
        case(
            Key::TlsHostname,
            [
                ("a.example", "a.example"),
                ("b.example", "b.example"),
                ("c.example", "c.example"),
            ],
            |c| c.upstreams[0].auth_name.to_string(),
        ),
        case(
            Key::Spki,
            [
                (PIN_A, PIN_A),
                (PIN_B, PIN_B),
                (&format!("{PIN_A},{PIN_B}"), &format!("{PIN_A} {PIN_B}")),
            ],
            |c| spki(&c.upstreams[0]).join(" "),
        ),
        case(
            Key::TlsCaFile,
            [(&ca[0], &ca[0]), (&ca[1], &ca[1]), (&ca[2], &ca[2])],
            |c| {
                c.upstreams[0]
                    .ca
                    .as_ref()
                    .map(|ca| ca.path.display().to_string())
                    .unwrap_or_default()
            },
        ),
        case(
            Key::QueryTimeout,
            [("5s", "5s"), ("6000ms", "6s"), ("7.5", "7.5s")],
            |c| format!("{:?}", c.query_timeout),
        ),
        case(
            Key::UpstreamTimeout,
            [("1s", "1s"), ("2s", "2s"), ("250ms", "250ms")],
            |c| format!("{:?}", c.upstream_timeout),
        ),
        case(
            Key::TcpIdleTimeout,
            [("1s", "1s"), ("20", "20s"), ("300s", "300s")],
            |c| format!("{:?}", c.tcp_idle_timeout),
        ),
        case(
            Key::UpstreamIdleTimeout,
            [("5s", "5s"), ("3600", "3600s"), ("1.5s", "1.5s")],
            |c| format!("{:?}", c.upstream_idle_timeout),
        ),
        case(
            Key::Strategy,
            [
                ("round_robin", "RoundRobin"),
                ("FASTEST", "Fastest"),
                ("priority", "Priority"),
            ],
            |c| format!("{:?}", c.strategy),
        ),
        case(
            Key::HedgePercent,
            [("0", "0"), ("10", "10"), ("50", "50")],
            |c| c.hedge_percent.to_string(),
        ),
        case(
            Key::Workers,
            [("auto", "None"), ("1", "Some(1)"), ("256", "Some(256)")],
            |c| format!("{:?}", c.workers),
        ),
        case(
            Key::MaxTcpClients,
            [("1", "1"), ("65535", "65535"), ("300", "300")],
            |c| c.max_tcp_clients.to_string(),
        ),
        case(
            Key::MaxInflight,
            [("10", "10"), ("65536", "65536"), ("20", "20")],
            |c| c.max_inflight.to_string(),
        ),
        case(
            Key::MaxUdpSize,
            [("512", "512"), ("4096", "4096"), ("1400", "1400")],
            |c| c.max_udp_size.to_string(),
        ),
        case(
            Key::ClientBufferMib,
            [("1", "1048576"), ("256", "268435456"), ("8", "8388608")],
            |c| c.client_buffer_budget.to_string(),
        ),
        case(
            Key::CacheSizeMib,
            [("0", "0"), ("4096", "4294967296"), ("8", "8388608")],
            |c| c.cache.max_bytes.to_string(),
        ),
        case(
            Key::CacheMinTtl,
            [("0", "0"), ("60s", "60"), ("3600", "3600")],
            |c| c.cache.ttl.min.to_string(),
        ),
        case(
            Key::CacheMaxTtl,
            [("3600", "3600"), ("60s", "60"), ("604800", "604800")],
            |c| c.cache.ttl.max.to_string(),
        ),
        case(
            Key::CacheFailureTtl,
            [("1s", "1s"), ("5", "5s"), ("300s", "300s")],
            |c| format!("{:?}", c.cache.failure_ttl),
        ),
        case(
            Key::ServeStale,
            [("0", "0ns"), ("3600", "3600s"), ("259200s", "259200s")],
            |c| format!("{:?}", c.cache.stale_window),
        ),
        case(
            Key::CachePrefetch,
            [("no", "false"), ("on", "true"), ("0", "false")],
            |c| c.cache.prefetch.to_string(),
        ),
        case(
            Key::LogLevel,
            [("warn", "warn"), ("DEBUG", "debug"), ("Trace", "trace")],
            |c| c.log_level.to_string(),
        ),
        case(
            Key::LogFormat,
            [("json", "json"), ("TEXT", "text"), ("Json", "json")],
            |c| c.log_format.to_string(),
        ),
        case(
            Key::LogQueries,
            [("yes", "true"), ("off", "false"), ("1", "true")],
            |c| c.log_queries.to_string(),
        ),
        case(
            Key::MetricsListen,
            [
                ("127.0.0.1:9153", "127.0.0.1:9153"),
                ("[::1]:9154", "[::1]:9154"),
                (" 0.0.0.0:9155", "0.0.0.0:9155"),
            ],
            |c| c.metrics_listen.map(|a| a.to_string()).unwrap_or_default(),
        ),
    ];
    assert_eq!(cases.len(), Key::ALL.len(), "every key has a case");
    for Case {
        key,
        values: [(ini_v, ini_s), (env_v, env_s), (flag_v, flag_s)],
        show,
    } in &cases
    {
        let ini = ini_with(*key, ini_v);
        let env = [(key.env(), env_v.as_str())];
        let flag = [key.flag(), flag_v.as_str()];
        let shown = |result| show(&ok(result));
        assert_eq!(
            &shown(load_in(&dir, Some(&ini), &[], &[])),
            ini_s,
            "{key} from ini"
        );
        assert_eq!(
            &shown(load_in(&dir, Some(&ini), &env, &[])),
            env_s,
            "{key}: env beats ini"
        );
        assert_eq!(
            &shown(load_in(&dir, Some(&ini), &env, &flag)),
            flag_s,
            "{key}: flag beats env"
        );
        assert_eq!(
            &shown(load_in(&dir, Some(&ini), &[], &flag)),
            flag_s,
            "{key}: flag beats ini"
        );
    }
}

#[test]
fn single_values_apply_to_every_upstream_of_a_list() {
    let config = ok(load_with(
        None,
        &[
            ("TLS_HOST", "1.1.1.1, 2606:4700:4700::1111"),
            ("TLS_HOSTNAME", "one.one.one.one"),
            ("SPKI", PIN_A),
        ],
        &[],
    ));
    assert_eq!(
        addrs(&config),
        ["1.1.1.1:853", "[2606:4700:4700::1111]:853"]
    );
    assert_eq!(
        names(&config),
        ["1.1.1.1:853", "[2606:4700:4700::1111]:853"]
    );
    assert!(
        config
            .upstreams
            .iter()
            .all(|u| u.auth_name == AuthName::Dns("one.one.one.one".into()) && spki(u) == [PIN_A])
    );
}

#[test]
fn lists_align_by_position() {
    let config = ok(load_with(
        None,
        &[
            ("TLS_HOST", "192.0.2.1,192.0.2.2"),
            ("TLS_PORT", "853,8853"),
            ("TLS_HOSTNAME", "a.example,b.example"),
        ],
        &[],
    ));
    let got: Vec<(String, String)> = config
        .upstreams
        .iter()
        .map(|u| (u.addr.to_string(), u.auth_name.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("192.0.2.1:853".into(), "a.example".into()),
            ("192.0.2.2:8853".into(), "b.example".into())
        ]
    );
}

#[test]
fn a_list_of_ports_multiplies_a_single_host() {
    let config = ok(load_with(
        None,
        &[
            ("TLS_HOST", "192.0.2.1"),
            ("TLS_PORT", "853, 8853"),
            ("TLS_HOSTNAME", "a.example"),
        ],
        &[],
    ));
    assert_eq!(addrs(&config), ["192.0.2.1:853", "192.0.2.1:8853"]);
}

#[test]
fn list_length_mismatch_is_an_error() {
    let failure = err(load_with(
        Some(
            "[TLS_SERVER]\ntls_host = 192.0.2.1, 192.0.2.2, 192.0.2.3\n\
             tls_hostname = a.example, b.example\n",
        ),
        &[],
        &[],
    ));
    assert!(matches!(
        &failure.error,
        ConfigError::ListLengths { first, second }
            if (first.key, first.len, second.key, second.len)
                == (Key::TlsHost, 3, Key::TlsHostname, 2)
    ));
}

#[test]
fn named_sections_follow_the_plain_section_in_file_order() {
    let dir = TempDir::new();
    let ca = dir.write("quad9.pem", PEM);
    let ini = format!(
        "[TLS_SERVER]\ntls_host = 1.1.1.1, 1.0.0.1\ntls_hostname = cloudflare-dns.com\n\
         spki = {PIN_A}\n\
         [TLS_SERVER quad9]\ntls_host = 9.9.9.9\ntls_hostname = dns.quad9.net\n\
         spki = {PIN_B}\ntls_ca_file = {}\n\
         [TLS_SERVER google]\ntls_host = 8.8.8.8, 8.8.4.4\ntls_port = 8853\n\
         tls_hostname = dns.google\n",
        ca.display()
    );
    let config = ok(load_in(&dir, Some(&ini), &[], &[]));
    assert_eq!(
        names(&config),
        [
            "1.1.1.1:853",
            "1.0.0.1:853",
            "quad9",
            "google#1",
            "google#2"
        ]
    );
    assert_eq!(
        addrs(&config),
        [
            "1.1.1.1:853",
            "1.0.0.1:853",
            "9.9.9.9:853",
            "8.8.8.8:8853",
            "8.8.4.4:8853"
        ]
    );
    let pins: Vec<Vec<String>> = config.upstreams.iter().map(spki).collect();
    assert_eq!(
        pins,
        [
            vec![PIN_A.to_owned()],
            vec![PIN_A.to_owned()],
            vec![PIN_B.to_owned()],
            vec![],
            vec![]
        ]
    );
    let quad9_ca = config.upstreams[2]
        .ca
        .as_ref()
        .expect("quad9 has a CA bundle");
    assert_eq!(
        (quad9_ca.path.as_path(), quad9_ca.pem.as_str()),
        (ca.as_path(), PEM)
    );
    assert!(
        config
            .upstreams
            .iter()
            .filter(|u| u.name != "quad9")
            .all(|u| u.ca.is_none())
    );
}

#[test]
fn named_section_inherits_nothing_from_the_plain_section() {
    let ini = format!("{UPSTREAM}spki = {PIN_A}\n[TLS_SERVER quad9]\ntls_host = 9.9.9.9\n");
    let config = ok(load_with(Some(&ini), &[], &[]));
    let quad9 = &config.upstreams[1];
    assert_eq!(quad9.name, "quad9");
    assert_eq!(
        quad9.auth_name,
        AuthName::Ip("9.9.9.9".parse().expect("ip"))
    );
    assert!(quad9.pins.is_empty());
    let ini = "[TLS_SERVER quad9]\ntls_hostname = dns.quad9.net\n";
    assert!(matches!(
        &err(load_with(Some(ini), &[], &[])).error,
        ConfigError::Missing {
            key: Key::TlsHost,
            scope: MissingScope::Section { section, at },
        } if section == "TLS_SERVER quad9" && at.line == 1
    ));
}

#[test]
fn no_tls_hostname_means_verified_by_ip_address() {
    for ini in [
        "[TLS_SERVER]\ntls_host = 192.0.2.1, 2001:db8::1\n",
        "[TLS_SERVER]\ntls_host = 192.0.2.1, 2001:db8::1\ntls_hostname =\n",
    ] {
        let config = ok(load_with(Some(ini), &[], &[]));
        let auth: Vec<&AuthName> = config.upstreams.iter().map(|u| &u.auth_name).collect();
        assert_eq!(
            auth,
            [
                &AuthName::Ip("192.0.2.1".parse().expect("ip")),
                &AuthName::Ip("2001:db8::1".parse().expect("ip"))
            ],
            "{ini}"
        );
    }
    // Set but empty above the file: the file's upstreams are verified by address.
    let config = ok(load_with(Some(UPSTREAM), &[("TLS_HOSTNAME", "")], &[]));
    assert_eq!(
        config.upstreams[0].auth_name,
        AuthName::Ip("192.0.2.1".parse().expect("ip"))
    );
}

#[test]
fn a_plain_section_without_keys_adds_no_upstream() {
    let ini = "[TLS_SERVER]\n# tls_host = 1.1.1.1\n\
               [TLS_SERVER quad9]\ntls_host = 9.9.9.9\ntls_hostname = dns.quad9.net\n";
    assert_eq!(names(&ok(load_with(Some(ini), &[], &[]))), ["quad9"]);
}

#[test]
fn no_upstream_anywhere_is_an_error() {
    assert!(matches!(
        err(load_with(None, &[], &[])).error,
        ConfigError::NoUpstream
    ));
    assert!(matches!(
        err(load_with(Some("[TLS_SERVER]\n[PROXY]\n"), &[], &[])).error,
        ConfigError::NoUpstream
    ));
}

/// `tls_hots` on line 5.
const UNKNOWN_KEY: &str =
    "[TLS_SERVER]\ntls_host = 192.0.2.1\ntls_hostname = dns.example\n\ntls_hots = 1.1.1.1\n";

/// A plain section pinned to `PIN_A` and a named one.
const FILE_WITH_TWO_DEFINITIONS: &str = "[TLS_SERVER]\n\
    tls_host = 1.1.1.1, 1.0.0.1\ntls_port = 853\ntls_hostname = cloudflare-dns.com\n\
    spki = 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\
    [TLS_SERVER quad9]\ntls_host = 9.9.9.9\ntls_hostname = dns.quad9.net\n";

#[test]
fn env_tls_host_takes_nothing_from_the_file() {
    let dir = TempDir::new();
    let ca = dir.write("ca.pem", PEM);
    let ini = format!(
        "[TLS_SERVER]\ntls_host = 1.1.1.1\ntls_port = 8853\n\
         tls_hostname = cloudflare-dns.com\nspki = {PIN_A}\ntls_ca_file = {}\n\
         [TLS_SERVER quad9]\ntls_host = 9.9.9.9\n",
        ca.display()
    );
    let config = ok(load_in(&dir, Some(&ini), &[("TLS_HOST", "9.9.9.9")], &[]));
    assert_eq!(
        config.upstreams,
        [UpstreamConfig {
            name: "9.9.9.9:853".into(),
            addr: "9.9.9.9:853".parse().expect("addr"),
            auth_name: AuthName::Ip("9.9.9.9".parse().expect("ip")),
            pins: PinSet::default(),
            ca: None,
        }]
    );
}

/// The seed's example over the shipped settings.ini (Cloudflare's name and
/// pins): 8.8.8.8 with the given pin, verified by its address.
#[test]
fn seed_example_tls_host_and_spki_over_the_shipped_file() {
    let shipped = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../settings.ini"))
        .expect("read settings.ini");
    let seed_pin = "p83wULLjdmtlLA0xgsnLEJsbxPNY5JxiThviEON81z4=";
    let config = ok(load_with(
        Some(&shipped),
        &[("TLS_HOST", "8.8.8.8"), ("SPKI", seed_pin)],
        &[],
    ));
    assert_eq!(
        config.upstreams,
        [UpstreamConfig {
            name: "8.8.8.8:853".into(),
            addr: "8.8.8.8:853".parse().expect("addr"),
            auth_name: AuthName::Ip("8.8.8.8".parse().expect("ip")),
            pins: PinSet::new(vec![Pin::from_base64(seed_pin).expect("pin")]),
            ca: None,
        }]
    );
    // `make run LOCAL_PORT=5353 EXTRA_VARS="-e TLS_PORT=5353"`: the file's
    // upstreams, name and pins on the new port.
    let config = ok(load_with(Some(&shipped), &[("TLS_PORT", "5353")], &[]));
    assert_eq!(addrs(&config), ["1.1.1.1:5353", "1.0.0.1:5353"]);
    let file_only = ok(load_with(Some(&shipped), &[], &[]));
    for (moved, file) in config.upstreams.iter().zip(&file_only.upstreams) {
        assert_eq!(moved.auth_name, AuthName::Dns("cloudflare-dns.com".into()));
        assert_eq!((&moved.pins, &moved.ca), (&file.pins, &file.ca));
    }
}

#[test]
fn env_tls_host_takes_its_other_keys_from_env_and_flags() {
    let config = ok(load_with(
        Some(FILE_WITH_TWO_DEFINITIONS),
        &[("TLS_HOST", "192.0.2.9"), ("SPKI", PIN_B)],
        &["--tls-hostname", "dns.example", "--tls-port", "8853"],
    ));
    assert_eq!(addrs(&config), ["192.0.2.9:8853"]);
    assert_eq!(
        config.upstreams[0].auth_name,
        AuthName::Dns("dns.example".into())
    );
    assert_eq!(spki(&config.upstreams[0]), [PIN_B]);
}

#[test]
fn flag_tls_host_takes_its_other_keys_from_flags_only() {
    let config = ok(load_with(
        Some(FILE_WITH_TWO_DEFINITIONS),
        &[
            ("TLS_HOST", "192.0.2.9"),
            ("TLS_HOSTNAME", "env.example"),
            ("SPKI", PIN_B),
            ("TLS_PORT", "9853"),
        ],
        &["--tls-host", "8.8.8.8", "--spki", PIN_A],
    ));
    assert_eq!(addrs(&config), ["8.8.8.8:853"]);
    assert_eq!(
        config.upstreams[0].auth_name,
        AuthName::Ip("8.8.8.8".parse().expect("ip"))
    );
    assert_eq!(spki(&config.upstreams[0]), [PIN_A]);
}

#[test]
fn tls_port_alone_moves_every_upstream_of_the_file() {
    for (env, argv) in [
        (&[("TLS_PORT", "5353")][..], &[][..]),
        (&[][..], &["--tls-port", "5353"][..]),
    ] {
        let config = ok(load_with(Some(FILE_WITH_TWO_DEFINITIONS), env, argv));
        assert_eq!(
            addrs(&config),
            ["1.1.1.1:5353", "1.0.0.1:5353", "9.9.9.9:5353"]
        );
        assert_eq!(names(&config), ["1.1.1.1:5353", "1.0.0.1:5353", "quad9"]);
        let auth: Vec<String> = config
            .upstreams
            .iter()
            .map(|u| u.auth_name.to_string())
            .collect();
        assert_eq!(
            auth,
            ["cloudflare-dns.com", "cloudflare-dns.com", "dns.quad9.net"]
        );
        assert_eq!(spki(&config.upstreams[0]), [PIN_A]);
        assert!(config.upstreams[2].pins.is_empty());
    }
}

#[test]
fn upstream_keys_without_tls_host_apply_to_every_upstream_of_the_file() {
    let dir = TempDir::new();
    let ca = dir.write("ca.pem", PEM);
    let env = [
        ("TLS_HOSTNAME", "dns.example"),
        ("SPKI", PIN_B),
        ("TLS_CA_FILE", ca.to_str().expect("utf-8 path")),
    ];
    let config = ok(load_in(&dir, Some(FILE_WITH_TWO_DEFINITIONS), &env, &[]));
    assert_eq!(
        addrs(&config),
        ["1.1.1.1:853", "1.0.0.1:853", "9.9.9.9:853"]
    );
    assert!(config.upstreams.iter().all(|u| {
        u.auth_name == AuthName::Dns("dns.example".into())
            && spki(u) == [PIN_B]
            && u.ca.as_ref().map(|c| c.path.as_path()) == Some(ca.as_path())
    }));
}

#[test]
fn empty_env_spki_turns_pinning_off() {
    let config = ok(load_with(
        Some(FILE_WITH_TWO_DEFINITIONS),
        &[("SPKI", "")],
        &[],
    ));
    assert_eq!(
        addrs(&config),
        ["1.1.1.1:853", "1.0.0.1:853", "9.9.9.9:853"]
    );
    assert!(config.upstreams.iter().all(|u| u.pins.is_empty()));
}

#[test]
fn sections_dropped_by_tls_host_are_not_validated() {
    let ini = format!("{UPSTREAM}[TLS_SERVER broken]\ntls_host = not-an-ip\n");
    assert!(load_with(Some(&ini), &[], &[]).is_err());
    assert!(load_with(Some(&ini), &[("TLS_PORT", "853")], &[]).is_err());
    assert_eq!(
        names(&ok(load_with(
            Some(&ini),
            &[("TLS_HOST", "192.0.2.7")],
            &[]
        ))),
        ["192.0.2.7:853"]
    );
}

#[test]
fn a_later_layer_hides_an_invalid_file_value() {
    let ini = format!("{UPSTREAM}[PROXY]\nquery_timeout = soon\n");
    assert!(load_with(Some(&ini), &[], &[]).is_err());
    let config = ok(load_with(Some(&ini), &[("QUERY_TIMEOUT", "2s")], &[]));
    assert_eq!(config.query_timeout, Duration::from_secs(2));
}

#[test]
fn upstream_keys_without_tls_host_or_a_file_define_no_upstream() {
    assert!(matches!(
        err(load_with(
            None,
            &[("TLS_PORT", "853"), ("TLS_HOSTNAME", "a.example")],
            &[]
        ))
        .error,
        ConfigError::NoUpstream
    ));
    let config = ok(load_with(None, &[("TLS_HOST", "192.0.2.1")], &[]));
    assert_eq!(addrs(&config), ["192.0.2.1:853"]);
}

#[test]
fn shorter_query_timeout_caps_the_default_upstream_timeout() {
    let config = ok(load_with(Some(UPSTREAM), &[("QUERY_TIMEOUT", "1s")], &[]));
    assert_eq!(config.upstream_timeout, Duration::from_secs(1));
}

#[test]
fn upstream_timeout_longer_than_query_timeout_is_an_error() {
    let failure = err(load_with(
        Some(UPSTREAM),
        &[("UPSTREAM_TIMEOUT", "5s")],
        &[],
    ));
    assert!(matches!(
        failure.error,
        ConfigError::Invalid {
            key: Key::UpstreamTimeout,
            expected: Expected::AtMostQueryTimeout {
                origin: Origin::Default,
                ..
            },
            ..
        }
    ));
    assert!(load_with(Some(UPSTREAM), &[("UPSTREAM_TIMEOUT", "4s")], &[]).is_ok());
}

#[test]
fn the_cache_is_on_by_default_and_every_layer_sets_it() {
    let config = ok(load_with(Some(UPSTREAM), &[], &[]));
    assert_eq!(config.cache, CacheSettings::default());
    assert_eq!(config.cache.max_bytes, 16 << 20);
    let ini = format!(
        "{UPSTREAM}[PROXY]\ncache_size_mib = 64\ncache_min_ttl = 30\ncache_max_ttl = 3600\n\
         cache_failure_ttl = 5s\nserve_stale = 0\ncache_prefetch = no\n"
    );
    let config = ok(load_with(Some(&ini), &[("CACHE_SIZE_MIB", "0")], &[]));
    assert_eq!(
        config.cache,
        CacheSettings {
            max_bytes: 0,
            ttl: TtlClamp { min: 30, max: 3600 },
            failure_ttl: Duration::from_secs(5),
            stale_window: Duration::ZERO,
            prefetch: false,
        }
    );
    let config = ok(load_with(Some(&ini), &[], &["--cache-max-ttl", "60"]));
    assert_eq!(config.cache.ttl.max, 60);
    assert_eq!(config.cache.max_bytes, 64 << 20);
}

#[test]
fn cache_bounds_are_checked_with_one_line_each() {
    let failure = err(load_with(
        Some(UPSTREAM),
        &[("CACHE_MIN_TTL", "600"), ("CACHE_MAX_TTL", "60")],
        &[],
    ));
    assert_eq!(
        failure.line,
        "invalid cache_max_ttl \"60\" (env CACHE_MAX_TTL): expected at least cache_min_ttl, \
         which is 600s (env CACHE_MIN_TTL)"
    );
    for (key, value) in [
        ("CACHE_SIZE_MIB", "4097"),
        ("CACHE_FAILURE_TTL", "0"),
        ("CACHE_FAILURE_TTL", "301"),
        ("SERVE_STALE", "4d"),
        ("CACHE_PREFETCH", "maybe"),
    ] {
        let failure = err(load_with(Some(UPSTREAM), &[(key, value)], &[]));
        assert!(
            failure
                .line
                .starts_with(&format!("invalid {}", key.to_lowercase())),
            "{}",
            failure.line
        );
    }
}

#[test]
fn explicit_config_that_does_not_exist_is_an_error() {
    let dir = TempDir::new();
    let flags = RunArgs {
        config: Some(dir.0.join("missing.ini")),
        ..RunArgs::default()
    };
    let result = load(&flags, &|_| None);
    assert!(matches!(
        result,
        Err(ConfigError::ConfigFile { given_by: ConfigFileSource::Flag, io, .. })
            if io.kind() == std::io::ErrorKind::NotFound
    ));
}

#[test]
fn default_config_file_is_read_only_if_it_exists() {
    let dir = TempDir::new();
    let absent = dir.0.join("settings.ini");
    assert!(matches!(ConfigFile::load(None, &absent), Ok(None)));
    let present = dir.write("settings.ini", UPSTREAM);
    assert!(matches!(ConfigFile::load(None, &present), Ok(Some(_))));
    // A directory where the file should be is not "absent".
    let odd = dir.0.join("dir.ini");
    fs::create_dir(&odd).expect("mkdir");
    assert!(matches!(
        ConfigFile::load(None, &odd),
        Err(ConfigError::ConfigFile {
            given_by: ConfigFileSource::Default,
            ..
        })
    ));
}

#[test]
fn allow_networks_are_normalised_and_empty_is_rejected() {
    let config = ok(load_with(
        Some(UPSTREAM),
        &[("ALLOW_NETWORKS", "10.1.2.3/8, ::1")],
        &[],
    ));
    assert_eq!(
        config.allow_networks,
        [
            IpNet::new("10.0.0.0".parse().expect("ip"), 8).expect("net"),
            IpNet::new("::1".parse().expect("ip"), 128).expect("net")
        ]
    );
    assert!(matches!(
        err(load_with(Some(UPSTREAM), &[("ALLOW_NETWORKS", " ")], &[])).error,
        ConfigError::Invalid {
            key: Key::AllowNetworks,
            expected: Expected::SomeNetwork,
            ..
        }
    ));
}

#[test]
fn ca_file_is_read_at_load() {
    let dir = TempDir::new();
    let ca = dir.write("ca.pem", PEM);
    let env = [("TLS_CA_FILE", ca.to_str().expect("utf-8 path"))];
    let config = ok(load_in(&dir, Some(UPSTREAM), &env, &[]));
    assert_eq!(
        config.upstreams[0].ca,
        Some(CaBundle {
            path: ca,
            pem: PEM.into()
        })
    );
}

#[test]
fn the_contract_examples_print_as_specified() {
    let failure = err(load_with(Some(UPSTREAM), &[("TLS_PORT", "abc")], &[]));
    assert_eq!(
        failure.line,
        r#"invalid tls_port "abc" (env TLS_PORT): expected a port number from 1 to 65535"#
    );
    let ini = "# upstream\n\n[TLS_SERVER]\ntls_host = 192.0.2.1\n\
               tls_hostname = dns.example\n\nspki = xyz\n";
    assert_eq!(
        err(load_with(Some(ini), &[], &[])).line,
        "invalid spki \"xyz\" (settings.ini:7): \
         expected base64 of a 32-byte SHA-256 SPKI digest"
    );
    let ini = UNKNOWN_KEY;
    assert!(
        err(load_with(Some(ini), &[], &[]))
            .line
            .starts_with(r#"unknown key "tls_hots" in [TLS_SERVER] (settings.ini:5)"#)
    );
}

/// One way to fail: a config file (or none), environment and flags.
struct ErrCase {
    name: &'static str,
    ini: Option<String>,
    env: Vec<(&'static str, String)>,
    argv: Vec<String>,
}

impl ErrCase {
    fn file(name: &'static str, ini: String) -> ErrCase {
        ErrCase {
            name,
            ini: Some(ini),
            env: Vec::new(),
            argv: Vec::new(),
        }
    }

    fn no_file(name: &'static str) -> ErrCase {
        ErrCase {
            name,
            ini: None,
            env: Vec::new(),
            argv: Vec::new(),
        }
    }

    fn env(mut self, key: &'static str, value: &str) -> ErrCase {
        self.env.push((key, value.to_owned()));
        self
    }

    fn flag(mut self, flag: &str, value: &str) -> ErrCase {
        self.argv.extend([flag.to_owned(), value.to_owned()]);
        self
    }
}

/// Every error path, one line each, as a user sees them (insta snapshot).
#[test]
fn error_lines() {
    let dir = TempDir::new();
    let no_cert = dir.write("empty.pem", "# no certificates here\n");
    let no_cert = no_cert.to_str().expect("utf-8 path");
    let missing_ca = dir.path("missing.pem");
    let broken = dir.write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nMIIBnotDER\n-----END CERTIFICATE-----\n",
    );
    let broken = broken.to_str().expect("utf-8 path");
    let upstream = |name| ErrCase::file(name, UPSTREAM.to_owned());
    let proxy = |name, body: &str| ErrCase::file(name, format!("{UPSTREAM}[PROXY]\n{body}\n"));
    let no_file = |name| ErrCase::no_file(name);
    let cases = [
        upstream("bad port (env)").env("TLS_PORT", "abc"),
        upstream("port 0 (flag)").flag("--local-port", "0"),
        ErrCase::file(
            "bad local_host",
            format!("{UPSTREAM}[LOCAL_SERVER]\nlocal_host = 1.2.3\n"),
        ),
        upstream("local_host: a wildcard and an address it covers")
            .env("LOCAL_HOST", "0.0.0.0, ::, 127.0.0.1"),
        no_file("bad tls_host")
            .env("TLS_HOST", "192.0.2.1, 1.2.3.4.5")
            .env("TLS_HOSTNAME", "a.example"),
        ErrCase::file(
            "host name in tls_host",
            "[TLS_SERVER]\ntls_host = dns.quad9.net\ntls_hostname = dns.quad9.net\n".into(),
        ),
        no_file("empty item in a list")
            .env("TLS_HOST", "192.0.2.1,,192.0.2.2")
            .env("TLS_HOSTNAME", "a.example"),
        ErrCase::file(
            "bad tls_hostname",
            "[TLS_SERVER]\ntls_host = 1.1.1.1\ntls_hostname = 1.1.1.1\n".into(),
        ),
        ErrCase::file("bad pin", format!("{UPSTREAM}spki = {PIN_A}, xyz\n")),
        no_file("pin of the wrong length")
            .env("TLS_HOST", "192.0.2.1")
            .env("TLS_HOSTNAME", "a.example")
            .flag("--spki", "AAAA"),
        proxy("bad duration", "query_timeout = 4 seconds"),
        proxy("duration below min", "upstream_timeout = 10ms"),
        upstream("duration above max").flag("--tcp-idle-timeout", "301"),
        proxy("integer out of range", "max_tcp_clients = 65536"),
        upstream("integer not a number").env("MAX_INFLIGHT", "lots"),
        upstream("bad log level").env("LOG_LEVEL", "verbose"),
        upstream("bad log format").env("LOG_FORMAT", "logfmt"),
        upstream("bad log_queries").env("LOG_QUERIES", "maybe"),
        proxy("unknown strategy", "strategy = random"),
        upstream("hedge_percent above max").flag("--hedge-percent", "51"),
        upstream("workers zero").env("WORKERS", "0"),
        upstream("workers above max").flag("--workers", "257"),
        upstream("metrics_listen without a port").env("METRICS_LISTEN", "127.0.0.1"),
        proxy(
            "upstream_timeout > query_timeout",
            "query_timeout = 2s\nupstream_timeout = 2500ms",
        ),
        upstream("upstream_timeout > default query_timeout").env("UPSTREAM_TIMEOUT", "5s"),
        ErrCase::file(
            "bad CIDR",
            format!("[LOCAL_SERVER]\nallow_networks = 10.0.0.0/8, 192.168.0.0/33\n{UPSTREAM}"),
        ),
        upstream("empty allow_networks").env("ALLOW_NETWORKS", ""),
        ErrCase::file("unknown key", UNKNOWN_KEY.into()),
        proxy("key in the wrong section", "tls_port = 853"),
        ErrCase::file(
            "unknown section",
            format!("{UPSTREAM}[DEFAULT]\nlog_level = info\n"),
        ),
        ErrCase::file(
            "bad section name",
            format!("{UPSTREAM}[TLS_SERVER my resolver]\n"),
        ),
        ErrCase::file("section header missing", "local_port = 53\n".into()),
        ErrCase::file("malformed line", format!("{UPSTREAM}tls_port 853\n")),
        ErrCase::file("duplicate key", format!("{UPSTREAM}tls_host = 192.0.2.2\n")),
        ErrCase::file(
            "duplicate section",
            format!("{UPSTREAM}[PROXY]\n{UPSTREAM}"),
        ),
        ErrCase::file(
            "missing tls_host in the plain section",
            "[TLS_SERVER]\ntls_hostname = dns.example\n".into(),
        ),
        ErrCase::file(
            "missing tls_host in a named section",
            "[TLS_SERVER quad9]\ntls_hostname = dns.quad9.net\n".into(),
        ),
        no_file("no upstream"),
        no_file("list lengths")
            .env("TLS_HOST", "192.0.2.1, 192.0.2.2, 192.0.2.3")
            .env("TLS_HOSTNAME", "a.example")
            .flag("--tls-port", "853, 854"),
        upstream("missing ca file").env("TLS_CA_FILE", &missing_ca),
        ErrCase::file(
            "ca file without certificates",
            format!("{UPSTREAM}tls_ca_file = {no_cert}\n"),
        ),
        upstream("ca file with a broken certificate").flag("--tls-ca-file", broken),
    ];
    let mut lines = Vec::new();
    for ErrCase {
        name,
        ini,
        env,
        argv,
    } in &cases
    {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let failure = err(load_in(&dir, ini.as_deref(), &env, &argv));
        assert!(!failure.line.contains('\n'), "{name}: one line");
        lines.push(format!("{name}:\n  {}", failure.line));
    }
    let missing_config = RunArgs {
        config: Some(dir.0.join("nope.ini")),
        ..RunArgs::default()
    };
    let error = load(&missing_config, &|_| None).expect_err("missing --config");
    lines.push(format!("explicit --config missing:\n  {error}"));
    let text = lines
        .join("\n")
        .replace(&format!("{}/", dir.0.display()), "");
    insta::assert_snapshot!("error_lines", text);
}

#[test]
fn shipped_settings_ini_loads_with_the_documented_defaults() {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../settings.ini"));
    let text = fs::read_to_string(&path).expect("read settings.ini");
    let file = ConfigFile::parse(&path, &text).expect("valid settings.ini");
    for key in Key::ALL {
        assert!(
            file.get(key.section().header(), key).is_some(),
            "settings.ini documents {key}"
        );
    }
    let flags = RunArgs {
        config: Some(path),
        ..RunArgs::default()
    };
    let config = load(&flags, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let defaults_only = ok(load_with(
        None,
        &[
            ("TLS_HOST", "1.1.1.1, 1.0.0.1"),
            ("TLS_HOSTNAME", "cloudflare-dns.com"),
        ],
        &[],
    ));
    assert_eq!(
        config, defaults_only,
        "settings.ini repeats the built-in defaults"
    );
    assert_eq!(addrs(&config), ["1.1.1.1:853", "1.0.0.1:853"]);
}

/// What `dnsproxy check` prints for `ini` as `--config`, `env` and `argv`,
/// with the temp directory removed; `Err` holds the error line.
fn check_in(
    dir: &TempDir,
    ini: &str,
    env: &[(&str, &str)],
    argv: &[&str],
) -> Result<String, String> {
    let cli = Cli::try_parse_from(
        ["dnsproxy", "check"]
            .into_iter()
            .chain(argv.iter().copied()),
    )
    .expect("valid flags");
    let Some(Command::Check(mut flags)) = cli.command else {
        panic!("expected check flags");
    };
    flags.config = Some(dir.write("settings.ini", ini));
    let env = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    };
    let strip = |text: String| text.replace(&format!("{}/", dir.0.display()), "");
    crate::check::check(&flags, &env).map(strip).map_err(strip)
}

/// The effective values of `key` in a report: the top-level setting, or the
/// upstreams' in order.
fn origins(report: &Report, key: Key) -> Vec<(String, String)> {
    report
        .settings
        .iter()
        .chain(report.upstreams.iter().flat_map(|u| &u.settings))
        .filter(|e| e.key == key)
        .map(|e| (e.value.clone(), e.origin.to_string()))
        .collect()
}

#[test]
fn check_names_the_layer_of_every_value() {
    let dir = TempDir::new();
    let ini = format!(
        "[LOCAL_SERVER]\nlocal_port = 5353\n\n{UPSTREAM}tls_port =\n[PROXY]\nmax_inflight = 100\n"
    );
    let flags = RunArgs {
        config: Some(dir.write("settings.ini", &ini)),
        log_level: Some("debug".into()),
        ..RunArgs::default()
    };
    let env = |name: &str| (name == "QUERY_TIMEOUT").then(|| "2500ms".to_owned());
    let (config, report) = load_with_origins(&flags, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, load(&flags, &env).expect("same config"));
    let file = |line| format!("{}/settings.ini:{line}", dir.0.display());
    let one = |value: &str, origin: &str| vec![(value.to_owned(), origin.to_owned())];
    assert_eq!(origins(&report, Key::LocalHost), one("0.0.0.0", "default"));
    assert_eq!(origins(&report, Key::LocalPort), one("5353", &file(2)));
    assert_eq!(origins(&report, Key::TlsHost), one("192.0.2.1", &file(5)));
    // Set but empty: the default value, from the line that asked for it.
    assert_eq!(origins(&report, Key::TlsPort), one("853", &file(7)));
    assert_eq!(
        origins(&report, Key::Spki),
        one("none: CA validation only", "default")
    );
    assert_eq!(
        origins(&report, Key::QueryTimeout),
        one("2.5s", "env QUERY_TIMEOUT")
    );
    assert_eq!(origins(&report, Key::MaxInflight), one("100", &file(9)));
    assert_eq!(
        origins(&report, Key::LogLevel),
        one("debug", "flag --log-level")
    );
    let every: Vec<Key> = report
        .settings
        .iter()
        .chain(&report.upstreams[0].settings)
        .map(|e| e.key)
        .collect();
    assert!(
        Key::ALL.iter().all(|k| every.contains(k)),
        "every key reported"
    );
    assert_eq!(
        report.file,
        Some((dir.0.join("settings.ini"), ConfigFileSource::Flag))
    );
}

#[test]
fn check_exits_0_on_a_good_config_and_64_on_a_bad_one() {
    let dir = TempDir::new();
    let good = check_in(&dir, UPSTREAM, &[], &[]);
    assert!(
        good.as_ref().is_ok_and(|out| out.ends_with("config OK\n")),
        "{good:?}"
    );
    assert_eq!(crate::check::exit_code(&good), 0);
    let bad = check_in(&dir, UPSTREAM, &[("TLS_PORT", "abc")], &[]);
    assert_eq!(
        bad,
        Err(r#"dnsproxy: invalid tls_port "abc" (env TLS_PORT): expected a port number from 1 to 65535"#.into())
    );
    assert_eq!(crate::check::exit_code(&bad), 64);
    let broken_ca = check_in(
        &dir,
        UPSTREAM,
        &[],
        &[
            "--tls-ca-file",
            dir.write(
                "b.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )
            .to_str()
            .expect("utf-8"),
        ],
    );
    assert!(
        broken_ca
            .as_ref()
            .is_err_and(|e| e.starts_with("dnsproxy: invalid tls_ca_file")),
        "{broken_ca:?}"
    );
}

/// `dnsproxy check` as a person reads it (insta snapshot): a file with two
/// sections, the environment and a flag over it.
#[test]
fn check_output() {
    let dir = TempDir::new();
    // Relative to the working directory, which is the crate's under cargo
    // test: the same path on every machine.
    let ini = format!(
        "# sample\n[LOCAL_SERVER]\nlocal_host = 127.0.0.1\n\n\
         [TLS_SERVER]\ntls_host = 1.1.1.1, 1.0.0.1\ntls_hostname = cloudflare-dns.com\n\
         spki = {PIN_A}, {PIN_B}\n\n\
         [TLS_SERVER quad9]\ntls_host = 9.9.9.9\ntls_ca_file = ../fixtures/pki/root.pem\n\n\
         [PROXY]\nquery_timeout = 3s\n"
    );
    let out = check_in(
        &dir,
        &ini,
        &[("LOCAL_PORT", "5353"), ("TLS_PORT", "8853")],
        &["--max-inflight", "512"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!("check_output", out);
}

/// The process-wide limits are split over the workers, rounded up, never
/// to 0; the cache and everything else is each worker's own.
#[test]
fn each_worker_gets_its_share_of_the_limits() {
    let config = ok(load_with(
        None,
        &[
            ("TLS_HOST", "192.0.2.1"),
            ("MAX_TCP_CLIENTS", "1001"),
            ("MAX_INFLIGHT", "1"),
            ("CLIENT_BUFFER_MIB", "32"),
            ("CACHE_SIZE_MIB", "16"),
        ],
        &[],
    ));
    let one = config.worker_share(std::num::NonZeroUsize::MIN);
    assert_eq!(one, config, "one worker holds everything");
    let share = config.worker_share(std::num::NonZeroUsize::new(4).unwrap());
    assert_eq!(share.max_tcp_clients, 251);
    assert_eq!(share.max_inflight, 1, "never 0");
    assert_eq!(share.client_buffer_budget, 8 << 20);
    assert_eq!(
        share.cache.max_bytes,
        16 << 20,
        "each worker has its own cache"
    );
    assert_eq!(share.upstreams, config.upstreams);
}
