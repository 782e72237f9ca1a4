//! The Prometheus endpoint's data: the component's reports (WIT `metrics`,
//! converted by `sandbox`) added up, so counters stay monotonic across
//! component restarts, and rendered in the Prometheus text format 0.0.4 by
//! the `prometheus` crate's encoder. [`http`] serves it with `/health` and
//! `/ready`.
//!
//! Labels are fixed sets (protocol, rcode, reason, check) and the configured
//! upstream names: never a client address or a query name. Upstreams are
//! keyed by name, so a reload that adds, removes or reorders them keeps each
//! one's counters; one a reload removed keeps its counters (they stay
//! monotonic) and loses its gauges.
//!
//! With several workers (component instances), each reports on its own:
//! counters are added up as they come, and each worker's latest gauges are
//! kept apart and combined for the exposition (in flight, clients, open
//! connections and cache sizes summed; an upstream is up if some worker
//! has it up; its srtt is the mean of the workers that measured it).

pub mod http;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dnsproxy_core::core::cache::{CacheCounters, CacheReport};
use dnsproxy_core::core::stats::{
    BUCKETS, ChainCert, Check, DropReason, Histogram, RcodeCounts, RcodeLabel, Report, Stats,
    UpstreamGauges,
};
use prometheus::proto::{Bucket, Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// A report older than this means the component is not serving (it pushes
/// about once a second).
pub const HEALTH_WINDOW: Duration = Duration::from_secs(3);

/// The totals and the latest gauges, shared by the sandbox (writer) and the
/// HTTP server (reader).
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<State>,
}

/// One worker's latest gauges.
#[derive(Debug, Default, Clone)]
struct WorkerGauges {
    inflight: u32,
    tcp_clients: u32,
    /// Aligned with `State::gauges`.
    upstreams: Vec<UpstreamGauges>,
    cache_entries: u64,
    cache_bytes: u64,
    cache_max_bytes: u64,
    ready: bool,
    /// When it last reported; `None` while it is not running.
    last_report: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    /// Each worker's latest gauges; what the proxy as a whole shows is made
    /// from them when it is read (the methods below).
    workers: Vec<WorkerGauges>,
    /// Counters summed over every report of every instance; one upstream
    /// entry per name ever configured, aligned with `chains` and with each
    /// worker's `upstreams`. Its `tcp_clients` gauge is not used: see
    /// [`State::tcp_clients`].
    totals: Stats,
    /// Configuration reloads: accepted, refused.
    reloads: [u64; 2],
    /// Each upstream's last verified chain.
    chains: Vec<Vec<ChainCert>>,
    restarts: u64,
    /// The cache's counters, summed.
    cache: CacheCounters,
}

impl State {
    fn inflight(&self) -> u32 {
        self.workers.iter().map(|g| g.inflight).sum()
    }

    fn tcp_clients(&self) -> u32 {
        self.workers.iter().map(|g| g.tcp_clients).sum()
    }

    /// Some worker has an upstream it can reach.
    fn ready(&self) -> bool {
        self.workers.iter().any(|g| g.ready)
    }

    /// The oldest of the workers' last reports; `None` while one of them is
    /// not running.
    fn last_report(&self) -> Option<Instant> {
        self.workers
            .iter()
            .map(|g| g.last_report)
            .try_fold(None, |oldest: Option<Instant>, at| {
                at.map(|at| Some(oldest.map_or(at, |o| o.min(at))))
            })
            .flatten()
    }

    /// The cache: counters summed, sizes summed over the workers.
    fn cache(&self) -> CacheReport {
        let w = &self.workers;
        CacheReport {
            counters: self.cache.clone(),
            entries: w.iter().map(|g| g.cache_entries).sum(),
            bytes: w.iter().map(|g| g.cache_bytes).sum(),
            max_bytes: w.iter().map(|g| g.cache_max_bytes).sum(),
        }
    }

    /// Upstream `i` over the workers: configured or up in some worker,
    /// connections summed, srtt the mean of the workers that measured it.
    fn upstream(&self, i: usize) -> UpstreamGauges {
        let of = || self.workers.iter().filter_map(move |g| g.upstreams.get(i));
        let srtts: Vec<Duration> = of().filter_map(|g| g.srtt).collect();
        UpstreamGauges {
            configured: of().any(|g| g.configured),
            up: of().any(|g| g.up),
            connections: of().map(|g| g.connections).sum(),
            waiting: of().map(|g| g.waiting).sum(),
            window: of().map(|g| g.window).sum(),
            srtt: u32::try_from(srtts.len())
                .ok()
                .filter(|&n| n > 0)
                .map(|n| srtts.iter().sum::<Duration>() / n),
        }
    }
}

fn add_rcodes(total: &mut RcodeCounts, delta: &RcodeCounts) {
    for (t, d) in total.0.iter_mut().zip(delta.0) {
        *t = t.saturating_add(d);
    }
}

fn add_histogram(total: &mut Histogram, delta: &Histogram) {
    for (t, d) in total.buckets.iter_mut().zip(delta.buckets) {
        *t = t.saturating_add(d);
    }
    total.sum_us = total.sum_us.saturating_add(delta.sum_us);
}

/// The cache's families: lookups by result, prefetches, inserts,
/// evictions, and its size against its bound.
fn cache_families(c: &CacheReport) -> Vec<MetricFamily> {
    let n = &c.counters;
    let wide = |v: u64| v as f64;
    vec![
        family(
            "dnsproxy_cache_lookups_total",
            "Cacheable queries by what the cache had: hit (fresh), miss (sent upstream), stale \
             (expired, served because every upstream failed, RFC 8767) or failure (a recent \
             failure, answered SERVFAIL, RFC 9520).",
            MetricType::COUNTER,
            vec![
                counter(&[("result", "hit")], n.hits),
                counter(&[("result", "miss")], n.misses),
                counter(&[("result", "stale")], n.stale),
                counter(&[("result", "failure")], n.failures),
            ],
        ),
        family(
            "dnsproxy_cache_prefetches_total",
            "Popular entries refreshed before they expired.",
            MetricType::COUNTER,
            vec![counter(&[], n.prefetches)],
        ),
        family(
            "dnsproxy_cache_inserts_total",
            "Answers stored in the cache.",
            MetricType::COUNTER,
            vec![counter(&[], n.inserts)],
        ),
        family(
            "dnsproxy_cache_evictions_total",
            "Entries dropped, least recently used first, to stay within cache_size_mib.",
            MetricType::COUNTER,
            vec![counter(&[], n.evictions)],
        ),
        family(
            "dnsproxy_cache_entries",
            "Entries in the cache.",
            MetricType::GAUGE,
            vec![gauge(&[], wide(c.entries))],
        ),
        family(
            "dnsproxy_cache_bytes",
            "Bytes the cache's entries hold, overhead included.",
            MetricType::GAUGE,
            vec![gauge(&[], wide(c.bytes))],
        ),
        family(
            "dnsproxy_cache_max_bytes",
            "The cache's bound (cache_size_mib); 0: the cache is off.",
            MetricType::GAUGE,
            vec![gauge(&[], wide(c.max_bytes))],
        ),
    ]
}

fn add_all(total: &mut [u64], delta: &[u64]) {
    for (t, d) in total.iter_mut().zip(delta) {
        *t = t.saturating_add(*d);
    }
}

impl Metrics {
    /// Metrics for one worker and the upstreams named `upstreams`, in
    /// priority order.
    pub fn new(upstreams: Vec<String>) -> Self {
        Self::with_workers(upstreams, 1)
    }

    /// Metrics for `workers` workers (at least one) and the upstreams named
    /// `upstreams`, in priority order.
    pub fn with_workers(upstreams: Vec<String>, workers: usize) -> Self {
        let n = upstreams.len();
        let configured = UpstreamGauges {
            configured: true,
            ..UpstreamGauges::default()
        };
        let worker = WorkerGauges {
            upstreams: vec![configured; n],
            ..WorkerGauges::default()
        };
        Self {
            state: Mutex::new(State {
                workers: vec![worker; workers.max(1)],
                totals: Stats::named(upstreams.iter().map(String::as_str)),
                chains: vec![Vec::new(); n],
                ..State::default()
            }),
        }
    }

    /// A reload was accepted (`ok`) or refused.
    pub fn reloaded(&self, ok: bool) {
        self.state().reloads[usize::from(!ok)] += 1;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a report of the instance running as `worker` (at `now`).
    pub fn apply(&self, worker: usize, report: Report, now: Instant) {
        let mut s = self.state();
        let s = &mut *s;
        if worker >= s.workers.len() {
            return;
        }
        let t = &mut s.totals;
        let d = &report.stats;
        add_rcodes(&mut t.udp_answers, &d.udp_answers);
        add_rcodes(&mut t.tcp_answers, &d.tcp_answers);
        add_histogram(&mut t.udp_latency, &d.udp_latency);
        add_histogram(&mut t.tcp_latency, &d.tcp_latency);
        t.refused_inflight = t.refused_inflight.saturating_add(d.refused_inflight);
        add_all(&mut t.drops, &d.drops);
        t.truncated = t.truncated.saturating_add(d.truncated);
        let tcp_clients = d.tcp_clients;
        let Report {
            stats,
            inflight,
            upstreams,
            ready,
            cache,
        } = report;
        s.cache.add(&cache.counters);
        let mut mine = WorkerGauges {
            inflight,
            tcp_clients,
            // Upstreams the report does not name are not configured any
            // more (in this worker).
            upstreams: vec![UpstreamGauges::default(); s.chains.len()],
            cache_entries: cache.entries,
            cache_bytes: cache.bytes,
            cache_max_bytes: cache.max_bytes,
            ready,
            last_report: Some(now),
        };
        for (d, gauges) in stats.upstreams.into_iter().zip(upstreams) {
            let i = s.totals.slot(&d.name);
            if i == s.chains.len() {
                s.chains.push(Vec::new());
                for w in &mut s.workers {
                    w.upstreams.push(UpstreamGauges::default());
                }
                mine.upstreams.push(UpstreamGauges::default());
            }
            let t = &mut s.totals.upstreams[i];
            t.queries = t.queries.saturating_add(d.queries);
            add_rcodes(&mut t.responses, &d.responses);
            add_histogram(&mut t.rtt, &d.rtt);
            add_all(&mut t.failures, &d.failures);
            add_all(&mut t.handshakes, &d.handshakes);
            t.hedges = t.hedges.saturating_add(d.hedges);
            t.window_probes = t.window_probes.saturating_add(d.window_probes);
            t.no_backup = d.no_backup;
            t.leaf_only = d.leaf_only;
            if let Some(chain) = d.chain {
                s.chains[i] = chain;
            }
            mine.upstreams[i] = gauges;
        }
        s.workers[worker] = mine;
    }

    /// The instance running as `worker` stopped (it trapped): nothing of
    /// it is in flight or open any more (a new instance starts with an
    /// empty cache), and the proxy is not healthy until the next one
    /// reports.
    pub fn instance_stopped(&self, worker: usize) {
        let mut s = self.state();
        let Some(w) = s.workers.get_mut(worker) else {
            return;
        };
        let upstreams = w
            .upstreams
            .iter()
            .map(|g| UpstreamGauges {
                configured: g.configured,
                ..UpstreamGauges::default()
            })
            .collect();
        *w = WorkerGauges {
            upstreams,
            ..WorkerGauges::default()
        };
    }

    /// A new instance replaces one that trapped.
    pub fn restarted(&self) {
        self.state().restarts += 1;
    }

    /// `/health`: every worker's instance is running and reported within
    /// [`HEALTH_WINDOW`] of `now`.
    pub fn healthy(&self, now: Instant) -> bool {
        self.state()
            .last_report()
            .is_some_and(|at| now.saturating_duration_since(at) <= HEALTH_WINDOW)
    }

    /// `/ready`: healthy, and some upstream is not in backoff (see
    /// `Selector::reachable` in the component's core).
    pub fn ready(&self, now: Instant) -> bool {
        self.healthy(now) && self.state().ready()
    }

    /// The exposition, Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        // The encoder refuses a family without metrics (an upstream family
        // when every upstream was removed by a reload, or none is known).
        let families: Vec<MetricFamily> = self
            .families()
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }

    fn families(&self) -> Vec<MetricFamily> {
        let s = self.state();
        let t = &s.totals;
        let mut out = Vec::new();
        out.push(family(
            "dnsproxy_build_info",
            "The running dnsproxy's version (always 1).",
            MetricType::GAUGE,
            vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        ));
        out.push(family(
            "dnsproxy_config_reloads_total",
            "Configuration reloads (SIGHUP), by result: ok (served within about a second) or \
             error (refused; the running configuration kept serving).",
            MetricType::COUNTER,
            vec![
                counter(&[("result", "ok")], s.reloads[0]),
                counter(&[("result", "error")], s.reloads[1]),
            ],
        ));
        out.push(family(
            "dnsproxy_component_restarts_total",
            "Times the proxy component was restarted after a trap.",
            MetricType::COUNTER,
            vec![counter(&[], s.restarts)],
        ));
        out.push(family(
            "dnsproxy_workers",
            "Component instances (workers) serving the listen addresses, by state: running, or \
             stopped (restarting after a trap).",
            MetricType::GAUGE,
            {
                let running = s.workers.iter().filter(|w| w.last_report.is_some()).count();
                let stopped = s.workers.len() - running;
                vec![
                    gauge(&[("state", "running")], running as f64),
                    gauge(&[("state", "stopped")], stopped as f64),
                ]
            },
        ));
        let mut queries = Vec::new();
        for (protocol, counts) in [("udp", &t.udp_answers), ("tcp", &t.tcp_answers)] {
            for (label, n) in RcodeLabel::ALL.iter().zip(counts.0) {
                queries.push(counter(
                    &[("protocol", protocol), ("rcode", label.as_str())],
                    n,
                ));
            }
        }
        out.push(family(
            "dnsproxy_queries_total",
            "Answers sent to clients, by protocol and RCODE.",
            MetricType::COUNTER,
            queries,
        ));
        out.push(family(
            "dnsproxy_answer_duration_seconds",
            "Client query in to answer out.",
            MetricType::HISTOGRAM,
            vec![
                histogram(&[("protocol", "udp")], &t.udp_latency),
                histogram(&[("protocol", "tcp")], &t.tcp_latency),
            ],
        ));
        out.push(family(
            "dnsproxy_inflight",
            "Queries in flight.",
            MetricType::GAUGE,
            vec![gauge(&[], f64::from(s.inflight()))],
        ));
        out.push(family(
            "dnsproxy_tcp_clients",
            "Open client TCP connections.",
            MetricType::GAUGE,
            vec![gauge(&[], f64::from(s.tcp_clients()))],
        ));
        out.push(family(
            "dnsproxy_refusals_total",
            "Queries answered REFUSED by the proxy itself, by reason.",
            MetricType::COUNTER,
            vec![counter(&[("reason", "inflight_limit")], t.refused_inflight)],
        ));
        out.push(family(
            "dnsproxy_drops_total",
            "Client messages dropped or connections closed without answer, by reason.",
            MetricType::COUNTER,
            DropReason::ALL
                .iter()
                .zip(t.drops)
                .map(|(r, n)| counter(&[("reason", r.as_str())], n))
                .collect(),
        ));
        out.push(family(
            "dnsproxy_truncated_total",
            "UDP answers truncated with TC=1.",
            MetricType::COUNTER,
            vec![counter(&[], t.truncated)],
        ));
        out.extend(cache_families(&s.cache()));
        out.extend(self.upstream_families(&s));
        out
    }

    fn upstream_families(&self, s: &State) -> Vec<MetricFamily> {
        let (mut queries, mut responses, mut rtt, mut failures) = (vec![], vec![], vec![], vec![]);
        let (mut up, mut conns, mut certs, mut warnings) = (vec![], vec![], vec![], vec![]);
        let (mut waiting, mut window) = (vec![], vec![]);
        let (mut handshakes, mut hedges, mut srtt) = (vec![], vec![], vec![]);
        let mut probes = vec![];
        for (i, t) in s.totals.upstreams.iter().enumerate() {
            let name = t.name.as_str();
            let g = s.upstream(i);
            queries.push(counter(&[("upstream", name)], t.queries));
            for (label, n) in RcodeLabel::ALL.iter().zip(t.responses.0) {
                responses.push(counter(&[("upstream", name), ("rcode", label.as_str())], n));
            }
            rtt.push(histogram(&[("upstream", name)], &t.rtt));
            for (check, n) in Check::ALL.iter().zip(t.failures) {
                failures.push(counter(&[("upstream", name), ("check", check.as_str())], n));
            }
            for (kind, n) in ["full", "resumed"].iter().zip(t.handshakes) {
                handshakes.push(counter(&[("upstream", name), ("kind", kind)], n));
            }
            hedges.push(counter(&[("upstream", name)], t.hedges));
            probes.push(counter(&[("upstream", name)], t.window_probes));
            // A removed upstream keeps its counters, not its state.
            if !g.configured {
                continue;
            }
            up.push(gauge(&[("upstream", name)], f64::from(u8::from(g.up))));
            conns.push(gauge(&[("upstream", name)], f64::from(g.connections)));
            waiting.push(gauge(&[("upstream", name)], f64::from(g.waiting)));
            window.push(gauge(&[("upstream", name)], f64::from(g.window)));
            if let Some(s) = g.srtt {
                srtt.push(gauge(&[("upstream", name)], s.as_secs_f64()));
            }
            for c in &s.chains[i] {
                let Some(not_after) = c.not_after else {
                    continue;
                };
                let position = c.position.to_string();
                certs.push(gauge(
                    &[
                        ("upstream", name),
                        ("position", &position),
                        ("pinned", if c.pinned { "true" } else { "false" }),
                    ],
                    not_after as f64,
                ));
            }
            for (warning, on) in [("no_backup", t.no_backup), ("leaf_only", t.leaf_only)] {
                warnings.push(gauge(
                    &[("upstream", name), ("warning", warning)],
                    f64::from(u8::from(on)),
                ));
            }
        }
        let mut out = vec![
            family(
                "dnsproxy_upstream_queries_total",
                "Queries sent to the upstream (each attempt).",
                MetricType::COUNTER,
                queries,
            ),
            family(
                "dnsproxy_upstream_responses_total",
                "Answers received from the upstream, by RCODE.",
                MetricType::COUNTER,
                responses,
            ),
            family(
                "dnsproxy_upstream_rtt_seconds",
                "Query sent to answer received on the upstream's TLS connection.",
                MetricType::HISTOGRAM,
                rtt,
            ),
            family(
                "dnsproxy_upstream_failures_total",
                "Failed attempts on the upstream, by the check that failed.",
                MetricType::COUNTER,
                failures,
            ),
            family(
                "dnsproxy_upstream_handshakes_total",
                "TLS handshakes completed with the upstream: full (chain, name and pins verified) \
                 or resumed (TLS 1.3, from a session of a full one to this upstream).",
                MetricType::COUNTER,
                handshakes,
            ),
            family(
                "dnsproxy_upstream_hedges_total",
                "Queries sent to the upstream as hedges: another upstream had not answered \
                 within its usual time.",
                MetricType::COUNTER,
                hedges,
            ),
            family(
                "dnsproxy_upstream_srtt_seconds",
                "The upstream's smoothed round-trip time (RFC 6298), which orders `fastest` \
                 and times hedges.",
                MetricType::GAUGE,
                srtt,
            ),
            family(
                "dnsproxy_upstream_up",
                "1 when the upstream's last connect or exchange succeeded and it is not in backoff.",
                MetricType::GAUGE,
                up,
            ),
            family(
                "dnsproxy_upstream_connections",
                "Open TLS connections to the upstream.",
                MetricType::GAUGE,
                conns,
            ),
            family(
                "dnsproxy_upstream_waiting",
                "Queries the proxy holds back for the upstream because its connections' windows \
                 are full; they are written source by source as answers make room.",
                MetricType::GAUGE,
                waiting,
            ),
            family(
                "dnsproxy_upstream_window",
                "How many queries may be written to the upstream and unanswered at once, over \
                 its connections; it shrinks while a queue stands at the upstream.",
                MetricType::GAUGE,
                window,
            ),
            family(
                "dnsproxy_upstream_window_probes_total",
                "Probes the upstream's connections' windows began: each holds a window at its \
                 minimum for about a round trip, to measure the upstream without the proxy's own \
                 queue there. Under sustained load, one per connection every 5 s, on the same \
                 wall-clock grid in every worker.",
                MetricType::COUNTER,
                probes,
            ),
            family(
                "dnsproxy_upstream_pin_warning",
                "1 when the upstream's pin set is not rotation-safe: no_backup (no pin outside \
                 the current chain) or leaf_only (only the leaf key pinned).",
                MetricType::GAUGE,
                warnings,
            ),
        ];
        // A family needs a metric; there is none before the first handshake.
        if !certs.is_empty() {
            out.push(family(
                "dnsproxy_upstream_certificate_not_after_seconds",
                "notAfter (unix time) of each certificate of the upstream's last verified \
                 chain; position 0 is the leaf; pinned when a configured pin matched it.",
                MetricType::GAUGE,
                certs,
            ));
        }
        out
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn histogram(pairs: &[(&str, &str)], h: &Histogram) -> Metric {
    let mut buckets = Vec::with_capacity(BUCKETS.len());
    let mut cumulative = 0;
    for (bound, n) in BUCKETS.iter().zip(h.buckets) {
        cumulative += n;
        let mut b = Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let mut p = prometheus::proto::Histogram::default();
    p.set_bucket(buckets);
    p.set_sample_count(h.count());
    p.set_sample_sum(h.sum_us as f64 / 1e6);
    let mut m = Metric::from_label(labels(pairs));
    m.set_histogram(p);
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

#[cfg(test)]
mod tests {
    use dnsproxy_core::core::cache::CacheCounters;

    use super::*;

    fn report(queries: u64, ready: bool) -> Report {
        let mut stats = Stats::named(["dot"]);
        stats.udp_answers.0[0] = queries;
        stats.udp_latency.observe(Duration::from_millis(3));
        stats.upstreams[0].queries = queries;
        stats.upstreams[0].chain = Some(vec![ChainCert {
            position: 0,
            not_after: Some(1_795_686_000),
            pinned: true,
        }]);
        stats.upstreams[0].no_backup = true;
        stats.upstreams[0].window_probes = 2;
        Report {
            stats,
            inflight: 2,
            upstreams: vec![UpstreamGauges {
                configured: true,
                up: true,
                connections: 1,
                waiting: 5,
                window: 128,
                srtt: None,
            }],
            ready,
            cache: CacheReport {
                counters: CacheCounters {
                    hits: queries,
                    misses: 1,
                    ..CacheCounters::default()
                },
                entries: 10,
                bytes: 4096,
                max_bytes: 16 << 20,
            },
        }
    }

    /// A reload that replaces upstream `dot` with `new`: both keep their
    /// counters; only `new` has gauges. A reload is counted by result.
    #[test]
    fn upstreams_are_keyed_by_name_across_reloads() {
        let m = Metrics::new(vec!["dot".into()]);
        let t0 = Instant::now();
        m.apply(0, report(3, true), t0);
        let mut stats = Stats::named(["dot", "new"]);
        stats.upstreams[0].queries = 1;
        stats.upstreams[1].queries = 5;
        m.apply(
            0,
            Report {
                stats,
                inflight: 0,
                upstreams: vec![
                    UpstreamGauges::default(),
                    UpstreamGauges {
                        configured: true,
                        up: true,
                        connections: 1,
                        srtt: None,
                        ..UpstreamGauges::default()
                    },
                ],
                ready: true,
                cache: CacheReport::default(),
            },
            t0,
        );
        m.reloaded(true);
        m.reloaded(false);
        let text = m.render();
        assert!(
            text.contains(r#"dnsproxy_upstream_queries_total{upstream="dot"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"dnsproxy_upstream_queries_total{upstream="new"} 5"#));
        assert!(text.contains(r#"dnsproxy_upstream_up{upstream="new"} 1"#));
        assert!(
            !text.contains(r#"dnsproxy_upstream_up{upstream="dot"}"#),
            "{text}"
        );
        assert!(!text.contains(r#"upstream_certificate_not_after_seconds{upstream="dot""#));
        assert!(text.contains(r#"dnsproxy_config_reloads_total{result="ok"} 1"#));
        assert!(text.contains(r#"dnsproxy_config_reloads_total{result="error"} 1"#));
    }

    #[test]
    fn counters_add_up_across_instances_and_gauges_are_replaced() {
        let m = Metrics::new(vec!["dot".into()]);
        let t0 = Instant::now();
        m.apply(0, report(3, true), t0);
        m.instance_stopped(0);
        m.restarted();
        let mut second = report(4, true);
        second.stats.upstreams[0].chain = None;
        m.apply(0, second, t0);
        let text = m.render();
        assert!(
            text.contains(r#"dnsproxy_queries_total{protocol="udp",rcode="NOERROR"} 7"#),
            "{text}"
        );
        assert!(text.contains(r#"dnsproxy_upstream_queries_total{upstream="dot"} 7"#));
        assert!(text.contains("dnsproxy_component_restarts_total 1"));
        assert!(text.contains("dnsproxy_inflight 2"));
        // Cache counters add up; its gauges are the latest report's.
        assert!(
            text.contains(r#"dnsproxy_cache_lookups_total{result="hit"} 7"#),
            "{text}"
        );
        assert!(text.contains(r#"dnsproxy_cache_lookups_total{result="miss"} 2"#));
        assert!(text.contains("dnsproxy_cache_entries 10"));
        assert!(text.contains("dnsproxy_cache_max_bytes 16777216"));
        assert!(
            text.contains(
                r#"dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="0.005"} 2"#
            )
        );
        assert!(text.contains(r#"dnsproxy_answer_duration_seconds_count{protocol="udp"} 2"#));
        assert!(
            text.contains(
                r#"dnsproxy_upstream_certificate_not_after_seconds{upstream="dot",position="0",pinned="true"} 1795686000"#
            ),
            "the chain is kept when a report has none: {text}"
        );
        assert!(
            text.contains(r#"dnsproxy_upstream_pin_warning{upstream="dot",warning="no_backup"} 1"#)
        );
    }

    #[test]
    fn health_needs_a_recent_report_and_ready_a_reachable_upstream() {
        let m = Metrics::new(vec!["dot".into()]);
        let t0 = Instant::now();
        assert!(!m.healthy(t0), "no instance has reported yet");
        m.apply(0, report(0, false), t0);
        assert!(m.healthy(t0));
        assert!(!m.ready(t0));
        m.apply(0, report(0, true), t0);
        assert!(m.ready(t0));
        assert!(!m.healthy(t0 + HEALTH_WINDOW + Duration::from_millis(1)));
        m.instance_stopped(0);
        assert!(!m.healthy(t0) && !m.ready(t0));
    }

    /// Two workers: counters add up, gauges are summed (or combined), the
    /// proxy is healthy only while both report and ready while one can
    /// reach an upstream; a stopped worker's gauges go.
    #[test]
    fn workers_are_combined() {
        let m = Metrics::with_workers(vec!["dot".into()], 2);
        let t0 = Instant::now();
        let srtt = |ms| {
            let mut r = report(3, true);
            r.upstreams[0].srtt = Some(Duration::from_millis(ms));
            r
        };
        m.apply(0, srtt(10), t0);
        assert!(!m.healthy(t0), "worker 1 has not reported yet");
        let mut second = srtt(30);
        second.ready = false;
        m.apply(1, second, t0);
        assert!(m.healthy(t0) && m.ready(t0), "worker 0 reaches an upstream");
        let text = m.render();
        for line in [
            r#"dnsproxy_upstream_queries_total{upstream="dot"} 6"#,
            "dnsproxy_inflight 4",
            "dnsproxy_cache_entries 20",
            "dnsproxy_cache_max_bytes 33554432",
            r#"dnsproxy_upstream_connections{upstream="dot"} 2"#,
            r#"dnsproxy_upstream_waiting{upstream="dot"} 10"#,
            r#"dnsproxy_upstream_window{upstream="dot"} 256"#,
            r#"dnsproxy_upstream_window_probes_total{upstream="dot"} 4"#,
            r#"dnsproxy_upstream_srtt_seconds{upstream="dot"} 0.02"#,
            r#"dnsproxy_workers{state="running"} 2"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.instance_stopped(1);
        assert!(!m.healthy(t0), "a stopped worker is not healthy");
        let text = m.render();
        for line in [
            "dnsproxy_inflight 2",
            r#"dnsproxy_upstream_connections{upstream="dot"} 1"#,
            r#"dnsproxy_upstream_srtt_seconds{upstream="dot"} 0.01"#,
            r#"dnsproxy_workers{state="stopped"} 1"#,
            r#"dnsproxy_upstream_queries_total{upstream="dot"} 6"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.apply(7, report(1, true), t0);
        assert!(
            m.render()
                .contains(r#"dnsproxy_upstream_queries_total{upstream="dot"} 6"#),
            "a worker that does not exist is ignored"
        );
    }
}
