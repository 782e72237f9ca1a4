//! What the proxy counts, for the host's metrics: plain counters and
//! histograms bumped where each decision is made, taken as deltas about once
//! a second ([`Stats::take`]) and pushed to the host in one call. No
//! allocation and no host call per query; no per-client or per-name data.
//!
//! The host adds the deltas to counters it keeps across component restarts,
//! so a counter here may start again from zero at any time.

use std::time::Duration;

/// Upper bounds, in seconds, of the latency histograms' buckets (the
/// answer latency and each upstream's RTT). An observation above the last
/// bound falls in the implicit `+Inf` bucket.
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Bucket bounds in microseconds, for integer comparison.
const BUCKETS_US: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// A latency histogram: per-bucket counts (not cumulative; the last one is
/// `+Inf`) and the sum of observations in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket of [`BUCKETS`], then above the last bound.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        let us = crate::core::duration::micros(d);
        let i = BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The RCODEs the metrics tell apart; the rest are `OTHER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcodeLabel {
    /// 0.
    NoError,
    /// 1.
    FormErr,
    /// 2.
    ServFail,
    /// 3.
    NxDomain,
    /// 4.
    NotImp,
    /// 5.
    Refused,
    /// Any other value.
    Other,
}

impl RcodeLabel {
    /// Every label, in the order of [`RcodeCounts`].
    pub const ALL: [RcodeLabel; 7] = [
        Self::NoError,
        Self::FormErr,
        Self::ServFail,
        Self::NxDomain,
        Self::NotImp,
        Self::Refused,
        Self::Other,
    ];

    /// The label of a DNS message's RCODE (header bits, RFC 1035 §4.1.1); a
    /// message shorter than a header is `Other`.
    pub fn of(msg: &[u8]) -> Self {
        match msg.get(3).map(|b| b & 0x0f) {
            Some(0) => Self::NoError,
            Some(1) => Self::FormErr,
            Some(2) => Self::ServFail,
            Some(3) => Self::NxDomain,
            Some(4) => Self::NotImp,
            Some(5) => Self::Refused,
            _ => Self::Other,
        }
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoError => "NOERROR",
            Self::FormErr => "FORMERR",
            Self::ServFail => "SERVFAIL",
            Self::NxDomain => "NXDOMAIN",
            Self::NotImp => "NOTIMP",
            Self::Refused => "REFUSED",
            Self::Other => "OTHER",
        }
    }
}

/// Messages counted by RCODE, indexed like [`RcodeLabel::ALL`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcodeCounts(pub [u64; 7]);

impl RcodeCounts {
    /// Counts one message by its RCODE.
    pub fn count(&mut self, msg: &[u8]) {
        self.0[RcodeLabel::of(msg) as usize] += 1;
    }
}

/// Why an upstream attempt failed, as the metrics name the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Connect refused or reset, connection lost, TLS handshake failure.
    Network,
    /// The chain does not verify against the trusted roots.
    Ca,
    /// The certificate does not carry the configured name.
    Name,
    /// No certificate of the verified chain has a pinned key.
    Pin,
    /// No answer within the upstream timeout.
    Timeout,
    /// An answer that does not parse or does not answer the question.
    Protocol,
}

impl Check {
    /// Every check, in the order of [`UpstreamStats::failures`].
    pub const ALL: [Check; 6] = [
        Self::Network,
        Self::Ca,
        Self::Name,
        Self::Pin,
        Self::Timeout,
        Self::Protocol,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Ca => "ca",
            Self::Name => "name",
            Self::Pin => "pin",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
        }
    }
}

/// Why the proxy dropped a client message (UDP) or closed its connection
/// (TCP) without an answer; see `admission`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The client is outside `allow_networks`.
    Acl,
    /// Not a query: shorter than a header, or a response (QR=1).
    Malformed,
    /// Longer than the longest query the proxy forwards.
    TooLong,
}

impl DropReason {
    /// Every reason, in the order of [`Stats::drops`].
    pub const ALL: [DropReason; 3] = [Self::Acl, Self::Malformed, Self::TooLong];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acl => "acl",
            Self::Malformed => "malformed",
            Self::TooLong => "too_long",
        }
    }
}

/// One certificate of a verified chain, for the expiry metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainCert {
    /// 0 = leaf, then the intermediates path building used, then the anchor.
    pub position: u8,
    /// notAfter, in seconds since 1970; `None` when unknown (a built-in
    /// root, whose certificate the proxy does not hold).
    pub not_after: Option<i64>,
    /// Whether a configured pin matched its key.
    pub pinned: bool,
}

/// Counters and state of one upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Its configured name: the key its counters are kept under, across
    /// reloads that add, remove or reorder upstreams.
    pub name: String,
    /// Queries sent to it (each attempt and resend counts).
    pub queries: u64,
    /// Answers received from it, by RCODE.
    pub responses: RcodeCounts,
    /// Query sent to answer received, on the TLS connection.
    pub rtt: Histogram,
    /// Failures counted, indexed like [`Check::ALL`].
    pub failures: [u64; 6],
    /// TLS handshakes completed: full (the chain verified, pins checked),
    /// then resumed (RFC 8446 §2.2, from a session of a full one).
    pub handshakes: [u64; 2],
    /// Hedges sent to it: queries it was asked because another upstream
    /// was slower than usual to answer.
    pub hedges: u64,
    /// Probes its connections' windows began (each holds a window at the
    /// minimum for about a round trip; see `core::window`).
    pub window_probes: u64,
    /// Its last verified chain, if a handshake succeeded since the last
    /// [`Stats::take`] (unchanged otherwise).
    pub chain: Option<Vec<ChainCert>>,
    /// Its pin set has no backup pin (see `pins::assess`).
    pub no_backup: bool,
    /// Only the leaf's key is pinned (see `pins::assess`).
    pub leaf_only: bool,
}

impl UpstreamStats {
    /// Counts a failure of `check`.
    pub fn failed(&mut self, check: Check) {
        self.failures[check as usize] += 1;
    }
}

/// Gauges: the state at the time of a report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamGauges {
    /// It is in the configuration served now (not only in one a reload
    /// replaced, whose queries are finishing).
    pub configured: bool,
    /// The last connect or exchange succeeded and it is not in backoff.
    pub up: bool,
    /// Open TLS connections to it.
    pub connections: u32,
    /// Queries waiting for its connections' windows.
    pub waiting: u32,
    /// Its connections' windows summed.
    pub window: u32,
    /// Its smoothed round-trip time, once measured.
    pub srtt: Option<std::time::Duration>,
}

/// Everything counted since the last [`Stats::take`], plus the counted
/// gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Answers sent to UDP clients, by RCODE.
    pub udp_answers: RcodeCounts,
    /// Answers sent to TCP clients, by RCODE.
    pub tcp_answers: RcodeCounts,
    /// Client query in to answer out, UDP.
    pub udp_latency: Histogram,
    /// Client query in to answer queued, TCP.
    pub tcp_latency: Histogram,
    /// Queries answered REFUSED by the proxy because it had no room in
    /// flight (`max_inflight`, or the source's share of it).
    pub refused_inflight: u64,
    /// Messages dropped and connections closed without answer, indexed like
    /// [`DropReason::ALL`].
    pub drops: [u64; 3],
    /// UDP answers truncated with TC=1.
    pub truncated: u64,
    /// Open client TCP connections (a gauge).
    pub tcp_clients: u32,
    /// Per upstream, one entry per name ever configured in this instance,
    /// in the order they were first configured (see [`Stats::slot`]).
    pub upstreams: Vec<UpstreamStats>,
}

impl Stats {
    /// Zeroed counters for `upstreams` unnamed upstreams (tests).
    pub fn new(upstreams: usize) -> Self {
        Self {
            upstreams: vec![UpstreamStats::default(); upstreams],
            ..Self::default()
        }
    }

    /// Zeroed counters for the upstreams named `names`, in that order.
    pub fn named<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut stats = Self::default();
        for name in names {
            stats.slot(name);
        }
        stats
    }

    /// The entry of the upstream named `name`, added if it has none: a
    /// reload that keeps a name keeps counting into the same entry. Entries
    /// are never removed while the instance runs, so their number is the
    /// number of distinct names configured since it started.
    pub fn slot(&mut self, name: &str) -> usize {
        if let Some(i) = self.upstreams.iter().position(|u| u.name == name) {
            return i;
        }
        self.upstreams.push(UpstreamStats {
            name: name.to_owned(),
            ..UpstreamStats::default()
        });
        self.upstreams.len() - 1
    }

    /// Counts a message dropped for `reason`.
    pub fn dropped(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// The counters since the last call, which start again from zero.
    /// Gauges and pin warnings stay; a chain is reported once.
    pub fn take(&mut self) -> Stats {
        let mut next = Stats::new(self.upstreams.len());
        next.tcp_clients = self.tcp_clients;
        for (new, old) in next.upstreams.iter_mut().zip(&self.upstreams) {
            new.name.clone_from(&old.name);
            new.no_backup = old.no_backup;
            new.leaf_only = old.leaf_only;
        }
        std::mem::replace(self, next)
    }
}

/// One push to the host: the deltas of [`Stats::take`] and the gauges read
/// at that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Counter deltas.
    pub stats: Stats,
    /// Queries in flight.
    pub inflight: u32,
    /// Per upstream, aligned with `stats.upstreams`.
    pub upstreams: Vec<UpstreamGauges>,
    /// Whether some upstream is reachable (see `Selector::reachable`).
    pub ready: bool,
    /// The answer cache.
    pub cache: crate::core::cache::CacheReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_the_first_bucket_not_below_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(500)); // le=0.0005 includes its bound
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(6)); // +Inf
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[BUCKETS.len()], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_us, 500 + 501 + 6_000_000);
    }

    #[test]
    fn microsecond_bounds_match_the_published_buckets() {
        for (us, s) in BUCKETS_US.iter().zip(BUCKETS) {
            assert_eq!(*us as f64 / 1e6, s);
        }
    }

    #[test]
    fn rcodes_are_read_from_the_header() {
        let mut msg = [0u8; 12];
        msg[3] = 0x83; // RA set, NXDOMAIN
        assert_eq!(RcodeLabel::of(&msg), RcodeLabel::NxDomain);
        msg[3] = 0x09; // NOTZONE
        assert_eq!(RcodeLabel::of(&msg), RcodeLabel::Other);
        assert_eq!(RcodeLabel::of(&msg[..3]), RcodeLabel::Other);
        let mut counts = RcodeCounts::default();
        counts.count(&[0u8; 12]);
        assert_eq!(counts.0[RcodeLabel::NoError as usize], 1);
    }

    #[test]
    fn take_returns_deltas_and_keeps_gauges_and_warnings() {
        let mut stats = Stats::new(1);
        stats.truncated = 2;
        stats.tcp_clients = 3;
        stats.upstreams[0].queries = 4;
        stats.upstreams[0].no_backup = true;
        stats.upstreams[0].chain = Some(Vec::new());
        let taken = stats.take();
        assert_eq!(taken.truncated, 2);
        assert_eq!(taken.upstreams[0].queries, 4);
        assert_eq!(stats.truncated, 0);
        assert_eq!(stats.upstreams[0].queries, 0);
        assert_eq!(stats.tcp_clients, 3);
        assert!(stats.upstreams[0].no_backup);
        assert_eq!(stats.upstreams[0].chain, None);
    }

    /// A reload that keeps a name keeps its entry; a new name gets a new
    /// one; names survive `take`.
    #[test]
    fn upstreams_are_keyed_by_name_across_reloads() {
        let mut stats = Stats::named(["a", "b"]);
        stats.upstreams[1].queries = 5;
        assert_eq!(stats.slot("b"), 1);
        assert_eq!(stats.slot("c"), 2);
        assert_eq!(stats.slot("a"), 0);
        let taken = stats.take();
        assert_eq!(taken.upstreams[1].queries, 5);
        let names: Vec<_> = stats.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(stats.upstreams[1].queries, 0);
    }
}
