//! `dnsproxy`: a DNS-over-TLS forwarding proxy whose data path runs as a
//! WASI 0.2 component inside wasmtime, with only the sockets it needs.
//!
//! The host parses the command line, layers the configuration (defaults,
//! settings.ini, environment, flags), grants the component its listen address,
//! its clients and its upstreams, renders its log events, bounds its CPU and
//! memory, restarts it if it traps, reloads the configuration on SIGHUP
//! ([`reload`]) and stops on SIGTERM/SIGINT. It never interprets a DNS payload
//! (it seals and opens the component's TLS records, [`aead`], unread).

pub mod aead;
pub mod check;
pub mod cli;
pub mod config;
pub mod engine;
pub mod generate;
pub mod health;
pub mod linger;
pub mod logfmt;
pub mod metrics;
pub mod policy;
pub mod query_name;
pub mod readiness;
pub mod reload;
pub mod sandbox;
pub mod spki;
pub mod top;
pub mod wait_timer;
pub mod watchdog;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::cli::{Command, PrecompileArgs, RunArgs, SpkiArgs};
use crate::config::{EXIT_CONFIG, LogFormat, ProxyConfig};
use crate::metrics::Metrics;

/// The allocator: musl's is slow under threads (see Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: plain_mimalloc::MiMalloc = plain_mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = cli::parse().into_command();
    match command {
        Command::Run(args) => run(&args),
        Command::Check(args) => check::run(&args),
        Command::Spki(args) => spki(&args),
        Command::Health(args) => health::run(&args),
        Command::Top(args) => top::run(&args),
        Command::Precompile(args) => precompile(&args),
        Command::Generate(args) => generate::run(&args),
    }
}

fn init_logging(level: &str) {
    // RUST_LOG, when set, refines the configured level (e.g. wasmtime=debug).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    logfmt::init(LogFormat::Text, filter);
}

/// Raises the soft limit of open files to the hard limit: every client TCP
/// connection is a file descriptor, and the common soft default (1024) is
/// short of the thousand-plus simultaneous clients the proxy serves.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        tracing::debug!(open_files = ?limit.current, "open files limit already at its maximum");
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(
            from = ?limit.current,
            to = ?limit.maximum,
            "raised the open files limit"
        ),
        Err(e) => tracing::warn!(
            current = ?limit.current,
            error = %e,
            "cannot raise the open files limit"
        ),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(args: &RunArgs) -> ExitCode {
    let config = match config::load(args, &|name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dnsproxy: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    logfmt::init(
        config.log_format,
        logfmt::filter(config.log_level, config.log_queries),
    );
    raise_open_files_limit();
    match runtime().and_then(|rt| rt.block_on(serve(config, args))) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ProxyConfig, args: &RunArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    // First of all: a SIGHUP while the component loads must not stop the
    // process (the default action); it waits for the loop below.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let engine = engine::engine()?;
    let component = match &args.component {
        Some(path) => engine::load_path(&engine, path)?,
        None => engine::load_embedded(&engine)?,
    };
    let upstreams = config::describe_upstreams(&config);
    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    let workers = sandbox::workers(&config);
    tracing::info!(
        listen = listen.join(", "),
        upstreams,
        workers,
        ready_in = ?started.elapsed(),
        "dnsproxy {} starting",
        env!("CARGO_PKG_VERSION")
    );
    reload::warn_pin_sets(&config);
    let metrics = Arc::new(Metrics::with_workers(
        config.upstreams.iter().map(|u| u.name.clone()).collect(),
        workers.get(),
    ));
    // Bound before the component starts: a taken port is a start-up error,
    // not a proxy without the metrics it was configured with.
    let _metrics_server = match config.metrics_listen {
        Some(addr) => {
            let listener = metrics::http::bind(addr).await?;
            tracing::info!(%addr, "serving metrics at http://{addr}/metrics, /health, /ready");
            Some(AbortOnDrop(tokio::spawn(metrics::http::serve(
                listener,
                metrics.clone(),
            ))))
        }
        None => None,
    };
    let published = sandbox::Published::new(config);
    let mut proxy = tokio::spawn({
        let (published, metrics) = (published.clone(), metrics.clone());
        async move { sandbox::run(engine, component, published, metrics, workers).await }
    });
    loop {
        tokio::select! {
            finished = &mut proxy => {
                let code = finished.context("the component task panicked")??;
                if code != 0 {
                    tracing::error!(code, "the proxy component exited");
                }
                return Ok(code);
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(0); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(0); }
            _ = hup.recv() => {
                // Reading the file and the CA bundles blocks; a reload is rare.
                let (args, published, metrics) = (args.clone(), published.clone(), metrics.clone());
                let reloaded = tokio::task::spawn_blocking(move || {
                    reload::reload(&args, &|name| std::env::var(name).ok(), &published, &metrics)
                })
                .await;
                if let Err(e) = reloaded {
                    tracing::error!(error = %e, "SIGHUP: the reload failed; the running configuration keeps serving");
                }
            }
        }
    }
}

/// A task that ends with the scope that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spki(args: &SpkiArgs) -> ExitCode {
    let result = match (&args.pem, &args.config) {
        (Some(path), _) => spki::from_pem(path).map(|out| (out, true)),
        (None, Some(path)) => {
            let run = RunArgs {
                config: Some(path.clone()),
                ..RunArgs::default()
            };
            let config = match config::load(&run, &|name| std::env::var(name).ok()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("dnsproxy spki: {e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            runtime().map(|rt| rt.block_on(spki::from_config(&config)))
        }
        (None, None) => runtime().and_then(|rt| rt.block_on(spki::from_server(args))),
    };
    match result {
        Ok((out, verified)) => {
            print!("{out}");
            if verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("dnsproxy spki: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn precompile(args: &PrecompileArgs) -> ExitCode {
    init_logging("warn");
    // `Some(path)` is printed; `None` when the artefact itself went to stdout.
    let result = engine::engine().and_then(|engine| match &args.component {
        Some(wasm) => {
            let bytes = engine.precompile_component(&std::fs::read(wasm)?)?;
            engine::write_artefact(&args.out, &bytes)?;
            Ok(Some(args.out.clone()))
        }
        // The proxy's own child (see `engine::load_embedded`): the bytes go
        // to the pipe it reads, and nothing else is written there.
        None if args.out.as_os_str() == "-" => {
            let bytes = engine.precompile_component(engine::embedded_wasm()?)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
            Ok(None)
        }
        // A directory gets the name the host looks for beside itself.
        None if args.out.is_dir() => engine::precompile(&engine, Some(&args.out)).map(Some),
        None => {
            let bytes = engine.precompile_component(engine::embedded_wasm()?)?;
            engine::write_artefact(&args.out, &bytes)?;
            Ok(Some(args.out.clone()))
        }
    });
    match result {
        Ok(path) => {
            if let Some(path) = path {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dnsproxy precompile: {e:#}");
            ExitCode::FAILURE
        }
    }
}
