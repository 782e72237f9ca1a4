//! Pushes the metrics to whoever collects them (the host, through the WIT
//! `metrics` interface), about once a second: one call with the deltas since
//! the last push, never one per query.

use std::rc::Rc;
use std::time::Duration;

use crate::core::stats::{Report, UpstreamGauges};
use crate::shell::context::Context;

/// How often the counters are pushed.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Takes the reports.
pub trait Reporter {
    /// One report: counter deltas since the previous one, current gauges.
    fn report(&self, report: Report);
}

/// Discards reports (the native build has no host to push to).
pub struct Discard;

impl Reporter for Discard {
    fn report(&self, _: Report) {}
}

/// Reports now and then every [`INTERVAL`], forever.
pub(crate) async fn every_second(ctx: Rc<Context>, reporter: Rc<dyn Reporter>) {
    let mut every = tokio::time::interval(INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = std::time::Instant::now();
        let stats = ctx.stats.borrow_mut().take();
        let generation = ctx.current();
        // Upstreams a reload removed stay `configured: false`.
        let mut upstreams = vec![UpstreamGauges::default(); stats.upstreams.len()];
        generation.resolver.gauges(now, &mut upstreams);
        let report = Report {
            stats,
            inflight: u32::try_from(ctx.inflight()).unwrap_or(u32::MAX),
            upstreams,
            ready: generation.resolver.reachable(now),
            cache: ctx.cache.borrow_mut().report(),
        };
        reporter.report(report);
    }
}
