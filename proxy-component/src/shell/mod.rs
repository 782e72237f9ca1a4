//! The async I/O shell: moves bytes between sockets and the sans-IO core.
//! Single-threaded (tokio's `LocalRuntime`, or a `LocalSet` in tests), the
//! same code natively and in the component.

pub mod accept;
pub mod clock;
pub mod config;
pub mod conn;
pub mod context;
pub mod datagrams;
pub mod deadline;
#[cfg(wasi_libc_descriptors)]
pub mod descriptors;
#[cfg(wasi_libc_descriptors)]
pub mod host_tcp;
pub mod log;
pub mod quick_ack;
pub mod readiness;
pub mod record;
pub mod reload;
pub mod reply;
pub mod report;
pub mod resolver;
pub mod send;
pub mod signal;
pub mod tcp;
pub mod tls;
pub mod udp;
#[cfg(wasi_libc_descriptors)]
pub mod watch;

use std::cell::RefCell;
use std::rc::Rc;

use crate::core::stats::Stats;
use crate::shell::config::ProxyConfig;
use crate::shell::context::{Context, Generation, describe_upstreams};
use crate::shell::log::{Level, Log};
use crate::shell::report::Reporter;
use crate::shell::resolver::SetupError;

/// The proxy could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An upstream's TLS configuration is unusable.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The listen address cannot be bound (in use, or not granted).
    #[error("cannot listen on {addr} ({proto}): {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// udp or tcp.
        proto: &'static str,
        /// The OS (or sandbox) error.
        error: std::io::Error,
    },
}

/// Binds the listeners and serves until an unrecoverable error, pushing
/// the metrics to `reporter` about once a second and serving each new
/// configuration `source` hands over (see [`reload`]). Must run where
/// `spawn_local` does: on a `LocalRuntime` or inside a `LocalSet`.
pub async fn serve(
    config: ProxyConfig,
    log: Log,
    reporter: Rc<dyn Reporter>,
    source: Rc<dyn reload::Source>,
) -> Result<(), ServeError> {
    let stats = Rc::new(RefCell::new(Stats::named(
        config.upstreams.iter().map(|u| u.name.as_str()),
    )));
    let generation = Generation::new(config, log.clone(), stats.clone())?;
    let listen = generation.config.listen.clone();
    let mut listeners = Vec::with_capacity(listen.len());
    for &addr in &listen {
        let udp = udp::bind(addr).map_err(|error| ServeError::Bind {
            addr,
            proto: "udp",
            error,
        })?;
        let tcp = accept::Acceptor::bind(addr).map_err(|error| ServeError::Bind {
            addr,
            proto: "tcp",
            error,
        })?;
        listeners.push((udp, tcp));
    }
    let listen_list = listen
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    log.event(
        Level::Info,
        "serving",
        &[
            ("listen", &listen_list),
            ("upstreams", &describe_upstreams(&generation.config)),
        ],
    );
    let ctx = Rc::new(Context::new(generation, log, stats));
    let _report = AbortOnDrop(tokio::task::spawn_local(report::every_second(
        ctx.clone(),
        reporter,
    )));
    let _reload = AbortOnDrop(tokio::task::spawn_local(reload::watch(ctx.clone(), source)));
    // One client table for every TCP listener: max_tcp_clients is over all.
    let clients = tcp::Clients::default();
    let mut tasks = tokio::task::JoinSet::new();
    for (udp, tcp) in listeners {
        tasks.spawn_local(udp::serve(udp, ctx.clone()));
        tasks.spawn_local(tcp::serve(tcp, ctx.clone(), clients.clone()));
    }
    // A listener returns only when its socket failed for good.
    tasks.join_next().await;
    tasks.abort_all();
    Ok(())
}

/// A task that ends with the scope that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
