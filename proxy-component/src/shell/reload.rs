//! Serving a new configuration without dropping a query (the host's
//! SIGHUP). The host cannot call into the component while it runs, so the
//! component polls the configuration's generation number about once a
//! second; when it changes, it builds the new [`Generation`] beside the one
//! serving and swaps it in ([`Context::apply`]). New queries take the new
//! one; queries in flight finish on the one they started with, whose
//! upstream connections close with it. The sockets stay bound throughout:
//! the listen addresses are fixed for the life of the process.

use std::rc::Rc;
use std::time::Duration;

use crate::shell::config::ProxyConfig;
use crate::shell::context::{Context, Generation, describe_upstreams};
use crate::shell::log::Level;

/// How often the generation is polled: the longest a reload waits to be
/// served.
pub const POLL: Duration = Duration::from_secs(1);

/// Where the configuration comes from.
pub trait Source {
    /// The number of the configuration [`Source::get`] returns now; it
    /// changes when a new one is available (never 0).
    fn generation(&self) -> u64;
    /// The configuration now. An error is a host bug (the host validates
    /// every configuration it hands over), reported and not served.
    fn get(&self) -> Result<ProxyConfig, String>;
}

/// A configuration that never changes (the native build).
pub struct Fixed(pub ProxyConfig);

impl Source for Fixed {
    fn generation(&self) -> u64 {
        1
    }

    fn get(&self) -> Result<ProxyConfig, String> {
        Ok(self.0.clone())
    }
}

/// Serves each new configuration of `source`, forever. It starts from
/// generation 0, which no source has, so a reload that raced the start is
/// not missed: the first poll fetches the current configuration, and one
/// equal to the one serving is left alone.
pub(crate) async fn watch(ctx: Rc<Context>, source: Rc<dyn Source>) {
    let mut seen = 0;
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = source.generation();
        if now == seen {
            continue;
        }
        seen = now;
        match source.get() {
            Ok(config) => apply(&ctx, config, now),
            Err(e) => ctx.log.event(
                Level::Error,
                "invalid configuration from the host; keeping the one serving",
                &[("generation", &now), ("error", &e)],
            ),
        }
    }
}

/// Serves `config` (generation `number`) from now on, unless it is the one
/// serving or its upstreams cannot be set up.
fn apply(ctx: &Context, mut config: ProxyConfig, number: u64) {
    let current = ctx.current();
    // The sockets are bound once; the host keeps these as they were.
    config.listen.clone_from(&current.config.listen);
    if config == current.config {
        return;
    }
    match Generation::new(config, ctx.log.clone(), ctx.stats.clone()) {
        Ok(next) => {
            let upstreams = describe_upstreams(&next.config);
            ctx.apply(next);
            ctx.log.event(
                Level::Info,
                "serving the reloaded configuration",
                &[("generation", &number), ("upstreams", &upstreams)],
            );
        }
        Err(e) => ctx.log.event(
            Level::Error,
            "cannot serve the reloaded configuration; keeping the one serving",
            &[("generation", &number), ("error", &e)],
        ),
    }
}
