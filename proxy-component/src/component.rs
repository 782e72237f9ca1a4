//! Glue between the WIT world and the shell. The one place the component
//! reads the WIT `config` record: [`from_wit`]. Its counterpart on the host is
//! `sandbox::wit_config`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use dnsproxy_core::core::acl::{BadPrefix, IpNet};
use dnsproxy_core::core::cache::{CacheCounters, CacheReport};
use dnsproxy_core::core::message::TtlClamp;
use dnsproxy_core::core::pins::{BadPin, Pin, PinSet};
use dnsproxy_core::core::stats::{self, Histogram, RcodeCounts, Report};
use dnsproxy_core::core::upstreams::Strategy;
use dnsproxy_core::shell::config::{
    AuthName, CaBundle, CacheSettings, ProxyConfig, UpstreamConfig,
};
use dnsproxy_core::shell::log::{Level, Log, LogFormat, Sink};
use dnsproxy_core::shell::reload::Source;
use dnsproxy_core::shell::report::Reporter;

wit_bindgen::generate!({
    path: "../wit",
    world: "host-services",
        // The vendored WASI 0.2.12 WIT gates wasi:clocks/timezone behind
        // this feature; without it the package does not resolve.
        features: ["clocks-timezone"],
});

use dnsproxy::proxy::types::{IpAddress, SocketAddress};
use dnsproxy::proxy::{config, log, metrics};

struct HostSink;

impl Sink for HostSink {
    fn emit(&self, level: Level, message: &str, fields: &[(&str, String)]) {
        let fields: Vec<log::Field> = fields
            .iter()
            .map(|(k, v)| log::Field {
                key: (*k).to_owned(),
                value: v.clone(),
            })
            .collect();
        log::emit(to_wit_level(level), message, &fields);
    }
}

/// Pushes reports through the WIT `metrics` interface.
struct HostReporter;

impl Reporter for HostReporter {
    fn report(&self, report: Report) {
        metrics::push(&wit_report(report));
    }
}

fn wit_rcodes(c: &RcodeCounts) -> metrics::Rcodes {
    let [noerror, formerr, servfail, nxdomain, notimp, refused, other] = c.0;
    metrics::Rcodes {
        noerror,
        formerr,
        servfail,
        nxdomain,
        notimp,
        refused,
        other,
    }
}

fn wit_histogram(h: &Histogram) -> metrics::Histogram {
    metrics::Histogram {
        buckets: h.buckets.to_vec(),
        sum_us: h.sum_us,
    }
}

/// The report as the WIT record; every field of [`Report`] is destructured,
/// so one added there must be handled here.
fn wit_report(report: Report) -> metrics::Report {
    let Report {
        stats:
            stats::Stats {
                udp_answers,
                tcp_answers,
                udp_latency,
                tcp_latency,
                refused_inflight,
                drops: [acl, malformed, too_long],
                truncated,
                tcp_clients,
                upstreams,
            },
        inflight,
        upstreams: gauges,
        ready,
        cache,
    } = report;
    let upstreams = upstreams
        .into_iter()
        .zip(gauges)
        .map(|(u, g)| {
            let [network, ca, name, pin, timeout, protocol] = u.failures;
            metrics::Upstream {
                name: u.name,
                configured: g.configured,
                queries: u.queries,
                responses: wit_rcodes(&u.responses),
                rtt: wit_histogram(&u.rtt),
                failures: metrics::Failures {
                    network,
                    ca,
                    name,
                    pin,
                    timeout,
                    protocol,
                },
                full_handshakes: u.handshakes[0],
                resumed_handshakes: u.handshakes[1],
                hedges: u.hedges,
                window_probes: u.window_probes,
                srtt_us: g.srtt.map(dnsproxy_core::core::duration::micros),
                up: g.up,
                connections: g.connections,
                waiting: g.waiting,
                window: g.window,
                chain: u.chain.map(|chain| {
                    chain
                        .into_iter()
                        .map(|c| metrics::ChainCert {
                            position: c.position,
                            not_after: c.not_after,
                            pinned: c.pinned,
                        })
                        .collect()
                }),
                pin_no_backup: u.no_backup,
                pin_leaf_only: u.leaf_only,
            }
        })
        .collect();
    metrics::Report {
        udp_answers: wit_rcodes(&udp_answers),
        tcp_answers: wit_rcodes(&tcp_answers),
        udp_latency: wit_histogram(&udp_latency),
        tcp_latency: wit_histogram(&tcp_latency),
        refused_inflight,
        drops: metrics::Drops {
            acl,
            malformed,
            too_long,
        },
        truncated,
        inflight,
        tcp_clients,
        upstreams,
        ready,
        cache: wit_cache(cache),
    }
}

fn wit_cache(report: CacheReport) -> metrics::CacheStats {
    let CacheReport {
        counters:
            CacheCounters {
                hits,
                misses,
                failures,
                stale,
                prefetches,
                inserts,
                evictions,
            },
        entries,
        bytes,
        max_bytes,
    } = report;
    metrics::CacheStats {
        hits,
        misses,
        failures,
        stale,
        prefetches,
        inserts,
        evictions,
        entries,
        bytes,
        max_bytes,
    }
}

fn to_wit_level(level: Level) -> log::Level {
    match level {
        Level::Error => log::Level::Error,
        Level::Warn => log::Level::Warn,
        Level::Info => log::Level::Info,
        Level::Debug => log::Level::Debug,
        Level::Trace => log::Level::Trace,
    }
}

fn from_wit_level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warn,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

fn ip(addr: IpAddress) -> IpAddr {
    match addr {
        IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).into(),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => Ipv6Addr::new(a, b, c, d, e, f, g, h).into(),
    }
}

fn socket(addr: SocketAddress) -> SocketAddr {
    SocketAddr::new(ip(addr.ip), addr.port)
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

/// A record the host should not have sent: the host validates everything,
/// so each of these is a host bug, reported as such.
#[derive(Debug, thiserror::Error)]
enum WitConfigError {
    /// An allowed network with host bits beyond its address.
    #[error("allow network: {0}")]
    Network(#[from] BadPrefix),
    /// A pin that is not a 32-byte digest.
    #[error("upstream {upstream}: {error}")]
    Pin {
        /// Which upstream.
        upstream: String,
        /// What is wrong with it.
        error: BadPin,
    },
    /// The upstream list is empty.
    #[error("no upstream configured")]
    NoUpstream,
    /// The listen list is empty.
    #[error("no listen address")]
    NoListen,
}

/// The configuration the host handed over, as the shell takes it. Every
/// field of the record is destructured, so a field added to the WIT must be
/// handled here.
fn from_wit(c: config::ProxyConfig) -> Result<ProxyConfig, WitConfigError> {
    let config::ProxyConfig {
        listen,
        allow_networks,
        upstreams,
        strategy,
        hedge_percent,
        timeouts:
            config::Timeouts {
                query_ms,
                upstream_ms,
                tcp_idle_ms,
                upstream_idle_ms,
            },
        limits:
            config::Limits {
                max_tcp_clients,
                max_inflight,
                max_udp_size,
                client_buffer_budget,
            },
        log_level,
        log_queries,
        cache,
    } = c;
    let allow_networks = allow_networks
        .into_iter()
        .map(|n| IpNet::new(ip(n.address), n.prefix_len))
        .collect::<Result<Vec<_>, _>>()?;
    let upstreams = upstreams
        .into_iter()
        .map(|u| {
            let config::Upstream {
                name,
                address,
                auth_name,
                spki_pins,
                ca,
            } = u;
            let pins = spki_pins
                .iter()
                .map(|p| Pin::from_digest(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| WitConfigError::Pin {
                    upstream: name.clone(),
                    error,
                })?;
            Ok(UpstreamConfig {
                name,
                addr: socket(address),
                auth_name: match auth_name {
                    config::AuthName::DnsName(name) => AuthName::Dns(name),
                    config::AuthName::IpAddress(addr) => AuthName::Ip(ip(addr)),
                },
                pins: PinSet::new(pins),
                ca: ca.map(|c| CaBundle {
                    path: PathBuf::from(c.path),
                    pem: c.pem,
                }),
            })
        })
        .collect::<Result<Vec<_>, WitConfigError>>()?;
    if upstreams.is_empty() {
        return Err(WitConfigError::NoUpstream);
    }
    if listen.is_empty() {
        return Err(WitConfigError::NoListen);
    }
    Ok(ProxyConfig {
        listen: listen.into_iter().map(socket).collect(),
        allow_networks,
        upstreams,
        query_timeout: ms(query_ms),
        upstream_timeout: ms(upstream_ms),
        tcp_idle_timeout: ms(tcp_idle_ms),
        upstream_idle_timeout: ms(upstream_idle_ms),
        strategy: match strategy {
            config::Strategy::Priority => Strategy::Priority,
            config::Strategy::RoundRobin => Strategy::RoundRobin,
            config::Strategy::Fastest => Strategy::Fastest,
        },
        hedge_percent: u32::from(hedge_percent),
        // The host's: the component is one worker and gets its share.
        workers: std::num::NonZeroUsize::new(1),
        max_tcp_clients: max_tcp_clients as usize,
        max_inflight: max_inflight as usize,
        max_udp_size: usize::from(max_udp_size),
        client_buffer_budget: client_buffer_budget as usize,
        log_level: from_wit_level(log_level),
        // The host renders every line; the component never formats one.
        log_format: LogFormat::default(),
        log_queries,
        // The host's listener; the component never sees it.
        metrics_listen: None,
        cache: from_wit_cache(cache),
    })
}

/// The cache settings as the core takes them.
fn from_wit_cache(c: config::Cache) -> CacheSettings {
    let config::Cache {
        max_bytes,
        min_ttl_s,
        max_ttl_s,
        failure_ttl_ms,
        serve_stale_s,
        prefetch,
    } = c;
    CacheSettings {
        max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
        ttl: TtlClamp {
            min: min_ttl_s,
            max: max_ttl_s,
        },
        failure_ttl: ms(failure_ttl_ms),
        stale_window: Duration::from_secs(u64::from(serve_stale_s)),
        prefetch,
    }
}

fn fatal(message: &str, error: &dyn std::fmt::Display) -> ! {
    let error = error.to_string();
    log::emit(
        log::Level::Error,
        message,
        &[log::Field {
            key: "error".into(),
            value: error,
        }],
    );
    std::process::exit(1)
}

/// The host's configuration and its generation (WIT `config`).
struct HostSource;

impl Source for HostSource {
    fn generation(&self) -> u64 {
        config::generation()
    }

    fn get(&self) -> Result<ProxyConfig, String> {
        from_wit(config::get()).map_err(|e| e.to_string())
    }
}

pub(crate) fn main() {
    let config = match from_wit(config::get()) {
        Ok(c) => c,
        Err(e) => fatal("invalid configuration from the host", &e),
    };
    let log = Log::new(config.log_level, Rc::new(HostSink));
    // Before the runtime registers a socket: idle sockets wait in the
    // host's watch set, not in every wait's list.
    #[cfg(wasi_libc_descriptors)]
    dnsproxy_core::shell::watch::install();
    // Time is read once per wake-up (`shell::clock`), and the loop blocks
    // until a deadline counted from that reading (`shell::watch`).
    // A local runtime (`tokio_unstable`) runs the shell's tasks itself: no
    // `LocalSet` between them and the scheduler, which polled its own queue
    // and woke the runtime's `block_on` on every wake-up of a task. A
    // cache hit at 100 qps took 5% fewer of the component's instructions
    // (10,840 -> 10,295; bench/profile.sh).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build_local(tokio::runtime::LocalOptions::default())
    {
        Ok(r) => r,
        Err(e) => fatal("cannot start the runtime", &e),
    };
    // The host traps an instance that runs ~1 s of wasm without a heartbeat
    // (a stuck loop). Each wait of the event loop is one
    // (`shell::watch`): no timer wakes an idle instance to beat.
    let serve = async move {
        // Without the wait set (a wasi-libc whose descriptor layout is not
        // known, see build.rs) the loop waits in wasi-libc's `poll`, which
        // the host does not count: a timer beats while the loop turns.
        #[cfg(not(wasi_libc_descriptors))]
        tokio::task::spawn_local(async {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(100));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                dnsproxy::proxy::watchdog::heartbeat();
            }
        });
        dnsproxy_core::shell::serve(config, log, Rc::new(HostReporter), Rc::new(HostSource)).await
    };
    if let Err(e) = runtime.block_on(serve) {
        fatal("cannot serve", &e);
    }
}
