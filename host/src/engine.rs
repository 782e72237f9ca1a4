//! The wasmtime engine and the compiled component, with an ahead-of-time
//! (AOT) compilation cache: compiling the component takes ~0.7 s, loading a
//! precompiled one ~1 ms.
//!
//! Lookup order for the embedded component: `dnsproxy-<hash>.cwasm` beside
//! the executable (written by `dnsproxy precompile`, which `make build-host`
//! runs), then the per-user cache (`$XDG_CACHE_HOME/dnsproxy` or
//! `~/.cache/dnsproxy`), then compile (and store in the per-user cache). The
//! hash covers the component bytes and the engine's compilation settings, so
//! a stale or foreign file is never picked; wasmtime also re-checks its
//! version and settings when loading.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

mod embedded {
    #![allow(unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/component.rs"));
}

/// The engine every component instance runs on. Epoch interruption lets
/// the watchdog stop an instance stuck in a loop (see [`crate::watchdog`]);
/// it changes the compiled code, and so the artefact name.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config.epoch_interruption(true);
    Ok(Engine::new(&config)?)
}

/// The component bytes built into this binary.
pub fn embedded_wasm() -> Result<&'static [u8]> {
    if embedded::WASM.is_empty() {
        bail!(
            "this dnsproxy binary was built without its component; build it with `make build-host`"
        );
    }
    Ok(embedded::WASM)
}

/// A stable name for the AOT artefact of `wasm` on `engine`.
pub fn artefact_name(engine: &Engine, wasm: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, wasm);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    digest.as_ref().hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("dnsproxy-{:016x}.cwasm", h.finish())
}

/// Loads a precompiled artefact.
fn load_cwasm(engine: &Engine, path: &Path) -> Result<Component> {
    // SAFETY: `deserialize_file` runs native code from the file. Only files
    // we wrote ourselves are passed here: beside our own executable, or in
    // the user's private cache directory, named by the hash of the exact
    // component and engine settings; wasmtime validates the header, version
    // and settings before use.
    #[allow(unsafe_code)]
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}

fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("dnsproxy"))
}

/// The embedded component, from the fastest source that has it.
pub fn load_embedded(engine: &Engine) -> Result<Component> {
    let wasm = embedded_wasm()?;
    let name = artefact_name(engine, wasm);
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(&name)));
    let cached = user_cache_dir().map(|d| d.join(&name));
    for path in beside_exe.iter().chain(cached.iter()) {
        if path.is_file() {
            match load_cwasm(engine, path) {
                Ok(c) => {
                    tracing::debug!(path = %path.display(), "loaded precompiled component");
                    return Ok(c);
                }
                // E.g. compiled on a CPU with other features (an image
                // built elsewhere): compile instead, as if it were absent.
                Err(e) => {
                    tracing::info!(path = %path.display(), error = format!("{e:#}"), "precompiled component unusable, compiling it")
                }
            }
        }
    }
    let started = std::time::Instant::now();
    let bytes = engine
        .precompile_component(wasm)
        .map_err(anyhow::Error::from)
        .context("compiling the component")?;
    let elapsed = started.elapsed();
    match cached.map(|path| (store_atomically(&path, &bytes), path)) {
        Some((Ok(()), path)) => {
            tracing::info!(?elapsed, cached = %path.display(), "compiled the component");
        }
        // A read-only file system (a container) or no home: compile at
        // every start.
        Some((Err(e), path)) => tracing::info!(
            ?elapsed,
            not_cached = format!("{}: {e:#}", path.display()),
            "compiled the component"
        ),
        None => tracing::info!(
            ?elapsed,
            not_cached = "neither XDG_CACHE_HOME nor HOME is set",
            "compiled the component"
        ),
    }
    load_bytes(engine, &bytes)
}

fn load_bytes(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    // SAFETY: the bytes were produced by `precompile_component` on this very
    // engine a moment ago.
    #[allow(unsafe_code)]
    Ok(unsafe { Component::deserialize(engine, bytes) }?)
}

/// Loads a component from a path given on the command line (tests run
/// purpose-built guests with the real host this way): `.wasm` is compiled.
pub fn load_path(engine: &Engine, path: &Path) -> Result<Component> {
    Component::from_file(engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("loading component {}", path.display()))
}

/// `dnsproxy precompile`: writes the AOT artefact of the embedded component
/// into `dir` (default: beside the executable) and returns its path.
pub fn precompile(engine: &Engine, dir: Option<&Path>) -> Result<PathBuf> {
    let wasm = embedded_wasm()?;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("the executable has no directory")?
            .to_path_buf(),
    };
    let path = dir.join(artefact_name(engine, wasm));
    let bytes = engine.precompile_component(wasm)?;
    store_atomically(&path, &bytes)?;
    Ok(path)
}

fn store_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("no parent directory")?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
