//! The same shell, run natively from environment variables. Not shipped: it
//! exists so `make bench` can measure what the WASI sandbox costs.
//!
//! `PB_LISTEN=127.0.0.1:5300 PB_UPSTREAM=127.0.0.1:853 PB_TLS_NAME=dot.test
//! PB_CA_FILE=ca.pem [PB_SPKI_PIN=base64] proxy-component`; without
//! `PB_TLS_NAME` the certificate is verified by the upstream's IP address.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use dnsproxy_core::core::acl::IpNet;
use dnsproxy_core::core::pins::{Pin, PinSet};
use dnsproxy_core::core::upstreams::Strategy;
use dnsproxy_core::shell::config::{
    AuthName, CaBundle, CacheSettings, ProxyConfig, UpstreamConfig,
};
use dnsproxy_core::shell::log::{Level, Log, LogFormat, StderrSink};
use dnsproxy_core::shell::reload::Fixed;
use dnsproxy_core::shell::report::Discard;

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn config() -> Result<ProxyConfig, String> {
    let listen: SocketAddr = var("PB_LISTEN")?
        .parse()
        .map_err(|e| format!("PB_LISTEN: {e}"))?;
    let addr: SocketAddr = var("PB_UPSTREAM")?
        .parse()
        .map_err(|e| format!("PB_UPSTREAM: {e}"))?;
    let ca = match std::env::var("PB_CA_FILE") {
        Ok(path) => Some(CaBundle {
            pem: std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?,
            path: path.into(),
        }),
        Err(_) => None,
    };
    let pins = match std::env::var("PB_SPKI_PIN") {
        Ok(p) if !p.is_empty() => {
            vec![Pin::from_base64(&p).map_err(|e| format!("PB_SPKI_PIN: {e}"))?]
        }
        _ => Vec::new(),
    };
    let loopback = IpNet::new([127, 0, 0, 0].into(), 8).map_err(|e| e.to_string())?;
    Ok(ProxyConfig {
        listen: vec![listen],
        allow_networks: vec![loopback],
        upstreams: vec![UpstreamConfig {
            name: addr.to_string(),
            addr,
            auth_name: match std::env::var("PB_TLS_NAME") {
                Ok(name) if !name.is_empty() => AuthName::Dns(name),
                _ => AuthName::Ip(addr.ip()),
            },
            pins: PinSet::new(pins),
            ca,
        }],
        query_timeout: Duration::from_secs(4),
        upstream_timeout: Duration::from_millis(1500),
        tcp_idle_timeout: Duration::from_secs(10),
        upstream_idle_timeout: Duration::from_secs(30),
        strategy: Strategy::default(),
        hedge_percent: 0,
        workers: std::num::NonZeroUsize::new(1),
        max_tcp_clients: 2048,
        max_inflight: 2048,
        max_udp_size: usize::from(dnsproxy_core::core::message::EDNS_UDP_PAYLOAD),
        client_buffer_budget: dnsproxy_core::shell::config::CLIENT_BUFFER_BUDGET,
        log_level: Level::Info,
        log_format: LogFormat::Text,
        log_queries: std::env::var_os("PB_LOG_QUERIES").is_some(),
        metrics_listen: None,
        cache: CacheSettings {
            max_bytes: match std::env::var("PB_CACHE_MIB") {
                Ok(mib) => {
                    mib.parse::<usize>()
                        .map_err(|e| format!("PB_CACHE_MIB: {e}"))?
                        << 20
                }
                Err(_) => CacheSettings::default().max_bytes,
            },
            ..CacheSettings::default()
        },
    })
}

pub(crate) fn main() {
    let config = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("proxy-component (native): {e}");
            std::process::exit(64);
        }
    };
    let log = Log::new(config.log_level, Rc::new(StderrSink));
    // Sockets get writable events only while a write waits, as the host's
    // workers do (vendor/mio, patch 3): the runtime is single-threaded.
    mio::arm_writes_on_demand(true);
    // A local runtime, as the component's (`component.rs`): the shell's
    // tasks are its own, with no `LocalSet` between them and the scheduler.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build_local(tokio::runtime::LocalOptions::default())
        .expect("a current-thread runtime needs no resources that can be missing");
    let source = Rc::new(Fixed(config.clone()));
    if let Err(e) = runtime.block_on(dnsproxy_core::shell::serve(
        config,
        log,
        Rc::new(Discard),
        source,
    )) {
        eprintln!("proxy-component (native): {e}");
        std::process::exit(1);
    }
}
