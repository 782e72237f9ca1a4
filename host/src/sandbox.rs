//! Runs the proxy component: links exactly the `proxy` world (with a closed
//! stream's destructor that never blocks it, see [`crate::linger`]), grants it its
//! sockets (see [`crate::policy`]) and nothing else, hands it the validated
//! configuration, renders its log events, bounds its memory and CPU (see
//! [`crate::watchdog`]) and restarts it when it traps.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::{Config, LogLevel};
use crate::policy::SocketPolicy;
use crate::policy::refusals::LOG_EVERY;
use crate::watchdog::{Life, Next, Restarts, Stuck, Ticker, Verdict, Watchdog};

/// Host bindings of the `proxy` world (generated from `wit/world.wit`).
mod bindings {
    #![allow(missing_docs, unreachable_pub)]
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "proxy",
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
        },
        exports: { default: async },
    });
}

use bindings::Proxy;
use bindings::dnsproxy::proxy::config as wit_config;
use bindings::dnsproxy::proxy::log as wit_log;
use bindings::dnsproxy::proxy::types as wit_types;
use bindings::dnsproxy::proxy::watchdog as wit_watchdog;

/// Memory one component instance may use.
pub const MEMORY_LIMIT: usize = 512 << 20;

/// The store data of one component instance.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    config: wit_config::ProxyConfig,
    /// Calls of `watchdog.heartbeat` so far.
    heartbeats: u64,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_types::Host for State {}

impl wit_watchdog::Host for State {
    fn heartbeat(&mut self) {
        self.heartbeats += 1;
    }
}

impl wit_config::Host for State {
    fn get(&mut self) -> wit_config::ProxyConfig {
        self.config.clone()
    }
}

impl wit_log::Host for State {
    fn emit(&mut self, level: wit_log::Level, message: String, fields: Vec<wit_log::Field>) {
        let mut line = message;
        for f in fields {
            line.push(' ');
            line.push_str(&f.key);
            line.push('=');
            line.push_str(&f.value);
        }
        match level {
            wit_log::Level::Error => tracing::error!(target: "dnsproxy::component", "{line}"),
            wit_log::Level::Warn => tracing::warn!(target: "dnsproxy::component", "{line}"),
            wit_log::Level::Info => tracing::info!(target: "dnsproxy::component", "{line}"),
            wit_log::Level::Debug => tracing::debug!(target: "dnsproxy::component", "{line}"),
            wit_log::Level::Trace => tracing::trace!(target: "dnsproxy::component", "{line}"),
        }
    }
}

/// The linker for the `proxy` world: WASI (p2) plus our own interfaces.
pub fn linker(engine: &Engine) -> Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::linger::shadow_output_stream_drop(&mut linker)?;
    wit_types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_config::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit_watchdog::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

fn wit_ip(ip: IpAddr) -> wit_types::IpAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            wit_types::IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            wit_types::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

fn wit_socket(addr: SocketAddr) -> wit_types::SocketAddress {
    wit_types::SocketAddress {
        ip: wit_ip(addr.ip()),
        port: addr.port(),
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The configuration as the component receives it.
pub fn wit_config(config: &Config) -> Result<wit_config::ProxyConfig> {
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        let mut pins = Vec::with_capacity(u.spki.len());
        for p in &u.spki {
            pins.push(
                dnsproxy_core::core::pins::Pin::from_base64(p)?
                    .digest()
                    .to_vec(),
            );
        }
        upstreams.push(wit_config::Upstream {
            name: u.name.clone(),
            address: wit_socket(u.addr),
            auth_name: u.tls_hostname.clone(),
            spki_pins: pins,
            ca_pem: u.ca.as_ref().map(|c| c.pem.clone()),
        });
    }
    Ok(wit_config::ProxyConfig {
        listen: wit_socket(config.listen),
        allow_networks: config
            .allow_networks
            .iter()
            .map(|n| wit_types::IpNetwork {
                address: wit_ip(n.addr()),
                prefix_len: n.prefix_len(),
            })
            .collect(),
        upstreams,
        timeouts: wit_config::Timeouts {
            query_ms: ms(config.query_timeout),
            upstream_ms: ms(config.upstream_timeout),
            tcp_idle_ms: ms(config.tcp_idle_timeout),
            upstream_idle_ms: ms(config.upstream_idle_timeout),
        },
        limits: wit_config::Limits {
            max_tcp_clients: config.max_tcp_clients,
            max_inflight: config.max_inflight,
            max_udp_size: config.max_udp_size,
            client_buffer_budget: u32::try_from(dnsproxy_core::shell::config::CLIENT_BUFFER_BUDGET)
                .unwrap_or(u32::MAX),
        },
        log_level: match config.log_level {
            LogLevel::Error => wit_log::Level::Error,
            LogLevel::Warn => wit_log::Level::Warn,
            LogLevel::Info => wit_log::Level::Info,
            LogLevel::Debug => wit_log::Level::Debug,
            LogLevel::Trace => wit_log::Level::Trace,
        },
    })
}

/// The WASI context: sockets per the policy, stderr for panics, and nothing
/// else (no preopened directories, an empty environment, no arguments, name
/// lookup denied).
fn wasi_ctx(policy: SocketPolicy) -> WasiCtx {
    WasiCtx::builder()
        .inherit_stderr()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(false)
        // Called per datagram: the decision is made (and a refusal counted)
        // right here, the future only carries it.
        .socket_addr_check(move |addr, use_| Box::pin(std::future::ready(policy.check(addr, use_))))
        .build()
}

/// How an instance stopped.
#[derive(Debug)]
pub enum Outcome {
    /// It returned or called exit with this code.
    Exited(i32),
    /// It trapped (or failed to instantiate) after living `life`.
    Trapped {
        /// The trap.
        error: anyhow::Error,
        /// How far it got.
        life: Life,
    },
}

/// Runs one instance until it returns or traps.
async fn run_once(
    engine: &Engine,
    linker: &Linker<State>,
    component: &Component,
    config: &wit_config::ProxyConfig,
    policy: &SocketPolicy,
) -> Outcome {
    let state = State {
        wasi: wasi_ctx(policy.clone()),
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build(),
        config: config.clone(),
        heartbeats: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    let mut watchdog = Watchdog::default();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |ctx| match watchdog.on_tick(ctx.data().heartbeats) {
        // Yielding lets the host's other tasks (signals, the log flush) run
        // on this worker even while the instance is busy.
        Verdict::Continue => Ok(UpdateDeadline::Yield(1)),
        Verdict::Stuck(ticks) => Err(Stuck::new(ticks).into()),
    });
    let started = Instant::now();
    let result = match Proxy::instantiate_async(&mut store, component, linker).await {
        Ok(proxy) => proxy.wasi_cli_run().call_run(&mut store).await,
        Err(e) => Err(e),
    };
    let error = match result {
        Ok(Ok(())) => return Outcome::Exited(0),
        Ok(Err(())) => return Outcome::Exited(1),
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => return Outcome::Exited(exit.0),
            None => anyhow::Error::from(e),
        },
    };
    Outcome::Trapped {
        error,
        life: Life {
            heartbeats: store.data().heartbeats,
            uptime: started.elapsed(),
        },
    }
}

/// Runs the component, restarting it after a trap (with a log line, never
/// silently; see [`Restarts`] for the backoff). Returns the exit code when the
/// component exits by itself, or an error when it keeps trapping before it
/// ever served.
pub async fn run(
    engine: Engine,
    component: Component,
    config: &Config,
    policy: SocketPolicy,
) -> Result<i32> {
    let linker = linker(&engine)?;
    let wit = wit_config(config)?;
    let _ticker = Ticker::start(engine.clone())?;
    // Reports the tail of a burst of refusals that ended within LOG_EVERY.
    let _flush = AbortOnDrop({
        let policy = policy.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(LOG_EVERY);
            loop {
                every.tick().await;
                policy.refusals().flush();
            }
        })
    });
    let mut restarts = Restarts::default();
    let mut traps = 0u32;
    let code = loop {
        let (error, life) = match run_once(&engine, &linker, &component, &wit, &policy).await {
            Outcome::Exited(code) => break code,
            Outcome::Trapped { error, life } => (error, life),
        };
        traps += 1;
        let stuck = error.downcast_ref::<Stuck>().is_some();
        let what = if stuck {
            "the proxy component was stuck in a loop and was stopped"
        } else {
            "the proxy component trapped"
        };
        // The cause first, on one line; where in the component, when known.
        let cause = error.root_cause().to_string();
        let backtrace = error
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(ToString::to_string)
            .unwrap_or_default();
        match restarts.after_trap(life) {
            Next::RestartAfter(delay) => {
                tracing::error!(
                    error = cause,
                    uptime = ?life.uptime,
                    served = life.served(),
                    traps,
                    restart_in = ?delay,
                    backtrace,
                    "{what}; restarting it"
                );
                tokio::time::sleep(delay).await;
            }
            Next::GiveUp => {
                tracing::debug!(backtrace, "where the component was");
                bail!(
                    "{what} {traps} times in a row before it ever served (a broken build or \
                     configuration?); giving up: {cause}"
                );
            }
        }
    };
    Ok(code)
}

/// A task that ends with the scope that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The component's imports, by name (for the allow-list test and `--help`).
pub fn imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine;

    /// The engine and the component built into this binary, compiled.
    fn embedded_component() -> (Engine, Component) {
        let engine = engine::engine().expect("engine");
        let wasm = engine::embedded_wasm().expect("the component is embedded (make build-host)");
        let component = Component::new(&engine, wasm).expect("the embedded component compiles");
        (engine, component)
    }

    /// Every import of the shipped component, versions stripped. A new
    /// import (a new capability the component asks for) changes this
    /// snapshot and so needs a reviewed decision; the host still grants
    /// only what `wasi_ctx` and the socket policy allow.
    #[test]
    fn component_imports_are_allow_listed() {
        let (engine, component) = embedded_component();
        let mut names: Vec<String> = imports(&engine, &component)
            .into_iter()
            .map(|n| n.split('@').next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        insta::assert_snapshot!(names.join("\n"));
        let allowed = [
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:io/",
            "wasi:random/",
            "wasi:sockets/",
            "wasi:filesystem/",
            "dnsproxy:proxy/",
        ];
        for name in &names {
            assert!(
                allowed.iter().any(|p| name.starts_with(p)),
                "unexpected import {name}"
            );
        }
        assert!(
            !names.iter().any(|n| n.starts_with("wasi:http/")),
            "no HTTP"
        );
    }

    /// The component links against exactly the world the host provides.
    #[test]
    fn embedded_component_instantiates_against_the_proxy_world() {
        let (engine, component) = embedded_component();
        let linker = linker(&engine).expect("linker");
        linker
            .instantiate_pre(&component)
            .expect("every import is provided by the host");
    }
}
