//! The async I/O shell: moves bytes between sockets and the sans-IO core.
//! Single-threaded (`LocalSet`), the same code natively and in the component.

pub mod accept;
pub mod config;
pub mod conn;
pub mod log;
pub mod resolver;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::cell::Cell;
use std::rc::Rc;

use crate::core::acl::Acl;
use crate::shell::config::ProxyConfig;
use crate::shell::log::{Level, Log};
use crate::shell::resolver::{Resolver, SetupError};

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

/// State shared by the listeners.
pub struct Context {
    /// The upstream side.
    pub resolver: Resolver,
    /// Who may query.
    pub acl: Acl,
    /// Configuration.
    pub config: ProxyConfig,
    /// Events.
    pub log: Log,
    inflight: Cell<usize>,
}

/// A slot of the global in-flight budget, released on drop.
pub struct InflightPermit(Rc<Context>);

impl Drop for InflightPermit {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get() - 1);
    }
}

impl Context {
    /// Takes a slot of the in-flight budget; `None` at the cap (the query is
    /// then answered REFUSED rather than queued behind everyone else).
    pub fn try_admit(self: &Rc<Self>) -> Option<InflightPermit> {
        let n = self.inflight.get();
        (n < self.config.max_inflight).then(|| {
            self.inflight.set(n + 1);
            InflightPermit(self.clone())
        })
    }
}

/// Binds the listeners and serves until an unrecoverable error. Must run
/// inside a `LocalSet`.
pub async fn serve(config: ProxyConfig, log: Log) -> Result<(), ServeError> {
    let resolver = Resolver::new(&config, log.clone())?;
    let listen = config.listen;
    let udp = udp::bind(listen).map_err(|error| ServeError::Bind {
        addr: listen,
        proto: "udp",
        error,
    })?;
    let tcp = accept::Acceptor::bind(listen).map_err(|error| ServeError::Bind {
        addr: listen,
        proto: "tcp",
        error,
    })?;
    let names: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| format!("{}={}#{}", u.name, u.addr, u.auth_name))
        .collect();
    let upstreams = names.join(",");
    log.event(
        Level::Info,
        "serving",
        &[("listen", &listen), ("upstreams", &upstreams)],
    );
    let ctx = Rc::new(Context {
        resolver,
        acl: config.acl.clone(),
        config,
        log,
        inflight: Cell::new(0),
    });
    let udp_task = tokio::task::spawn_local(udp::serve(udp, ctx.clone()));
    tcp::serve(tcp, ctx).await;
    udp_task.abort();
    Ok(())
}
