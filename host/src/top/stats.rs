//! What `dnsproxy top` shows, computed from two scrapes: rates from counter
//! deltas, latency quantiles from histogram bucket deltas (as Prometheus's
//! `histogram_quantile` does), and the state of each upstream.

use std::collections::{BTreeMap, VecDeque};

use super::prom::Scrape;

/// The answer latency histogram (client query in, answer out).
pub const ANSWER_DURATION: &str = "dnsproxy_answer_duration_seconds";
/// Answers sent to clients, by protocol and rcode.
pub const QUERIES: &str = "dnsproxy_queries_total";
/// The upstream round-trip histogram.
pub const UPSTREAM_RTT: &str = "dnsproxy_upstream_rtt_seconds";

/// The RCODE labels in display order (the exporter's fixed set).
pub const RCODES: [&str; 7] = [
    "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "OTHER",
];

/// The `q` quantile (0..=1) of the observations counted by cumulative
/// `buckets` (upper bound, count; sorted by bound), by linear interpolation
/// inside the bucket it falls in, as Prometheus's `histogram_quantile`.
/// `None` without observations. A quantile in the `+Inf` bucket is the
/// largest finite bound (the best that can be said).
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// `now - before` per bucket (bounds present in `now`); a counter that went
/// down (the exporter restarted) counts from zero.
pub fn bucket_delta(before: &[(f64, f64)], now: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|&(le, count)| {
            let old = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            (le, counter_delta(old, count))
        })
        .collect()
}

/// The increase of a counter; a reset (lower value) counts from zero.
pub fn counter_delta(before: f64, now: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// One upstream's row.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRow {
    /// Its configured name.
    pub name: String,
    /// `dnsproxy_upstream_up`: `Some(true)` up, `Some(false)` down.
    pub up: Option<bool>,
    /// Queries sent to it per second over the interval.
    pub qps: Option<f64>,
    /// RTT median over the interval, else over its life, in seconds.
    pub rtt_p50: Option<f64>,
    /// Failures so far, by check, only the non-zero ones.
    pub failures: BTreeMap<String, f64>,
    /// Days until the earliest notAfter of its last verified chain.
    pub cert_days: Option<f64>,
    /// Open TLS connections.
    pub connections: Option<f64>,
    /// Active pin warnings (`no_backup`, `leaf_only`).
    pub pin_warnings: Vec<String>,
}

/// Everything one screen shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `dnsproxy_build_info{version}`.
    pub version: Option<String>,
    /// Answers per second over the interval (`None` on the first scrape).
    pub qps: Option<f64>,
    /// Share of each RCODE among the interval's answers (0..=1), in
    /// [`RCODES`] order, only those seen.
    pub rcodes: Vec<(String, f64)>,
    /// Answer latency quantiles over the interval, in seconds.
    pub p50: Option<f64>,
    /// See `p50`.
    pub p99: Option<f64>,
    /// Queries in flight.
    pub inflight: Option<f64>,
    /// Open client TCP connections.
    pub tcp_clients: Option<f64>,
    /// Component restarts so far.
    pub restarts: Option<f64>,
    /// One row per upstream, in name order.
    pub upstreams: Vec<UpstreamRow>,
}

/// The screen for scrape `now`, taken `secs` after `before` (if any), at
/// unix time `unix_now` (for certificate expiry).
pub fn snapshot(before: Option<&Scrape>, now: &Scrape, secs: f64, unix_now: f64) -> Snapshot {
    let per_sec = |name: &str, key: Option<(&str, &str)>| -> Option<f64> {
        let before = before?;
        let get = |s: &Scrape| match key {
            Some((k, v)) => s.sum_where(name, k, v),
            None => s.sum(name),
        };
        let delta = counter_delta(get(before).unwrap_or(0.0), get(now)?);
        (secs > 0.0).then(|| delta / secs)
    };
    let interval_buckets = |name: &str, with: &[(&str, &str)]| -> Option<Vec<(f64, f64)>> {
        Some(bucket_delta(
            &before?.buckets(name, with),
            &now.buckets(name, with),
        ))
    };
    let rcodes = match before {
        Some(before) => {
            let old = before.by_label(QUERIES, "rcode");
            let new = now.by_label(QUERIES, "rcode");
            let deltas: Vec<(String, f64)> = RCODES
                .iter()
                .filter_map(|r| {
                    let d = counter_delta(*old.get(*r).unwrap_or(&0.0), *new.get(*r)?);
                    (d > 0.0).then(|| ((*r).to_owned(), d))
                })
                .collect();
            let total: f64 = deltas.iter().map(|(_, d)| d).sum();
            deltas.into_iter().map(|(r, d)| (r, d / total)).collect()
        }
        None => Vec::new(),
    };
    let answers = interval_buckets(ANSWER_DURATION, &[]);
    let names: Vec<String> = now
        .named("dnsproxy_upstream_up")
        .chain(now.named("dnsproxy_upstream_queries_total"))
        .filter_map(|s| s.label("upstream").map(str::to_owned))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let upstreams = names
        .into_iter()
        .map(|name| {
            let with = [("upstream", name.as_str())];
            let rtt = interval_buckets(UPSTREAM_RTT, &with)
                .and_then(|b| quantile(&b, 0.5))
                .or_else(|| quantile(&now.buckets(UPSTREAM_RTT, &with), 0.5));
            let failures = now
                .named("dnsproxy_upstream_failures_total")
                .filter(|s| s.label("upstream") == Some(&name) && s.value > 0.0)
                .filter_map(|s| Some((s.label("check")?.to_owned(), s.value)))
                .fold(BTreeMap::new(), |mut m, (k, v)| {
                    *m.entry(k).or_insert(0.0) += v;
                    m
                });
            let not_after = now
                .named("dnsproxy_upstream_certificate_not_after_seconds")
                .filter(|s| s.label("upstream") == Some(&name))
                .map(|s| s.value)
                .reduce(f64::min);
            let pin_warnings = now
                .named("dnsproxy_upstream_pin_warning")
                .filter(|s| s.label("upstream") == Some(&name) && s.value > 0.0)
                .filter_map(|s| s.label("warning").map(str::to_owned))
                .collect();
            UpstreamRow {
                up: now
                    .sum_where("dnsproxy_upstream_up", "upstream", &name)
                    .map(|v| v > 0.0),
                qps: per_sec("dnsproxy_upstream_queries_total", Some(("upstream", &name))),
                rtt_p50: rtt,
                failures,
                cert_days: not_after.map(|t| (t - unix_now) / 86_400.0),
                connections: now.sum_where("dnsproxy_upstream_connections", "upstream", &name),
                pin_warnings,
                name,
            }
        })
        .collect();
    Snapshot {
        version: now
            .named("dnsproxy_build_info")
            .find_map(|s| s.label("version").map(str::to_owned)),
        qps: per_sec(QUERIES, None),
        rcodes,
        p50: answers.as_deref().and_then(|b| quantile(b, 0.5)),
        p99: answers.as_deref().and_then(|b| quantile(b, 0.99)),
        inflight: now.sum("dnsproxy_inflight"),
        tcp_clients: now.sum("dnsproxy_tcp_clients"),
        restarts: now.sum("dnsproxy_component_restarts_total"),
        upstreams,
    }
}

/// The last values of a series, oldest first, for a sparkline.
#[derive(Debug, Clone, Default)]
pub struct History {
    values: VecDeque<f64>,
}

impl History {
    /// Values kept.
    pub const LEN: usize = 120;

    /// Appends a value (a missing one as 0), dropping the oldest past
    /// [`History::LEN`].
    pub fn push(&mut self, value: Option<f64>) {
        if self.values.len() == Self::LEN {
            self.values.pop_front();
        }
        self.values.push_back(value.unwrap_or(0.0));
    }

    /// The values scaled by `scale` as sparkline bars, oldest first.
    pub fn bars(&self, scale: f64) -> Vec<u64> {
        self.values
            .iter()
            // Sparkline bars are integers; rounding is what we want.
            .map(|v| (v * scale).round().max(0.0) as u64)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 observations: 50 up to 1 ms, 40 more up to 5 ms, 10 up to 10 ms.
        let b = [(0.001, 50.0), (0.005, 90.0), (0.01, 100.0), (INF, 100.0)];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p75 = quantile(&b, 0.75).expect("p75");
        assert!((p75 - 0.0035).abs() < 1e-12, "{p75}");
        let p99 = quantile(&b, 0.99).expect("p99");
        assert!((p99 - 0.0095).abs() < 1e-12, "{p99}");
        assert_eq!(quantile(&[(0.001, 0.0), (INF, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_quantile_beyond_the_last_bound_is_that_bound() {
        let b = [(0.001, 1.0), (5.0, 2.0), (INF, 10.0)];
        assert_eq!(quantile(&b, 0.99), Some(5.0));
    }

    #[test]
    fn deltas_survive_counter_resets() {
        assert_eq!(counter_delta(10.0, 15.0), 5.0);
        assert_eq!(counter_delta(10.0, 3.0), 3.0);
        assert_eq!(
            bucket_delta(&[(0.001, 5.0), (INF, 9.0)], &[(0.001, 7.0), (INF, 12.0)]),
            [(0.001, 2.0), (INF, 3.0)]
        );
    }

    fn scrape(text: &str) -> Scrape {
        Scrape::parse(text).expect("valid exposition")
    }

    #[test]
    fn snapshot_rates_rcode_mix_latency_and_upstreams() {
        let before = scrape(
            r#"
dnsproxy_queries_total{protocol="udp",rcode="NOERROR"} 100
dnsproxy_queries_total{protocol="udp",rcode="NXDOMAIN"} 10
dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="0.001"} 100
dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="0.01"} 110
dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="+Inf"} 110
dnsproxy_upstream_queries_total{upstream="q9"} 110
"#,
        );
        let now = scrape(
            r#"
dnsproxy_build_info{version="0.1.0"} 1
dnsproxy_queries_total{protocol="udp",rcode="NOERROR"} 130
dnsproxy_queries_total{protocol="tcp",rcode="NOERROR"} 6
dnsproxy_queries_total{protocol="udp",rcode="NXDOMAIN"} 14
dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="0.001"} 100
dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="0.01"} 150
dnsproxy_answer_duration_seconds_bucket{protocol="udp",le="+Inf"} 150
dnsproxy_inflight 2
dnsproxy_upstream_up{upstream="q9"} 1
dnsproxy_upstream_up{upstream="cf"} 0
dnsproxy_upstream_queries_total{upstream="q9"} 150
dnsproxy_upstream_rtt_seconds_bucket{upstream="q9",le="0.01"} 150
dnsproxy_upstream_rtt_seconds_bucket{upstream="q9",le="+Inf"} 150
dnsproxy_upstream_failures_total{upstream="cf",check="network"} 3
dnsproxy_upstream_failures_total{upstream="cf",check="pin"} 0
dnsproxy_upstream_certificate_not_after_seconds{upstream="q9",position="0",pinned="false"} 1000000
dnsproxy_upstream_certificate_not_after_seconds{upstream="q9",position="1",pinned="true"} 2000000
dnsproxy_upstream_pin_warning{upstream="q9",warning="leaf_only"} 1
dnsproxy_upstream_pin_warning{upstream="q9",warning="no_backup"} 0
"#,
        );
        let s = snapshot(Some(&before), &now, 2.0, 1000000.0 - 86_400.0 * 3.0);
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        assert_eq!(s.qps, Some(20.0));
        assert_eq!(
            s.rcodes,
            [("NOERROR".to_owned(), 0.9), ("NXDOMAIN".to_owned(), 0.1)]
        );
        // All 40 answers of the interval fell in (1 ms, 10 ms].
        let p50 = s.p50.expect("p50");
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        assert_eq!(s.inflight, Some(2.0));
        let [cf, q9] = &s.upstreams[..] else {
            panic!("two upstreams: {:?}", s.upstreams);
        };
        assert_eq!((cf.name.as_str(), cf.up), ("cf", Some(false)));
        assert_eq!(cf.failures.get("network"), Some(&3.0));
        assert!(!cf.failures.contains_key("pin"));
        assert_eq!(cf.cert_days, None);
        assert_eq!(
            (q9.name.as_str(), q9.up, q9.qps),
            ("q9", Some(true), Some(20.0))
        );
        assert_eq!(q9.rtt_p50, Some(0.005));
        let days = q9.cert_days.expect("days");
        assert!((days - 3.0).abs() < 1e-9, "the earliest notAfter: {days}");
        assert_eq!(q9.pin_warnings, ["leaf_only"]);
    }

    #[test]
    fn the_first_scrape_has_no_rates() {
        let now = scrape("dnsproxy_queries_total{protocol=\"udp\",rcode=\"NOERROR\"} 5\n");
        let s = snapshot(None, &now, 1.0, 0.0);
        assert_eq!((s.qps, s.p50), (None, None));
        assert!(s.rcodes.is_empty());
    }

    #[test]
    fn history_keeps_the_last_values() {
        let mut h = History::default();
        for i in 0..History::LEN + 5 {
            h.push(Some(i as f64));
        }
        let bars = h.bars(1.0);
        assert_eq!(bars.len(), History::LEN);
        assert_eq!(bars[0], 5);
        h.push(None);
        assert_eq!(h.bars(2.0).last(), Some(&0));
    }
}
