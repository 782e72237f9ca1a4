//! The wasmtime engine and the compiled component, with an ahead-of-time
//! (AOT) compilation cache: compiling the component takes ~0.7 s, loading a
//! precompiled one ~1 ms.
//!
//! Lookup order for the embedded component: `dnsproxy-<hash>.cwasm` beside
//! the executable (written by `dnsproxy precompile`, which `make build-host`
//! runs), then in `lib/dnsproxy/` of the installation prefix (`/usr/bin/dnsproxy`
//! looks in `/usr/lib/dnsproxy/`, where `make install` puts it: a system
//! service with a read-only file system and no home has no cache to write),
//! then the per-user cache (`$XDG_CACHE_HOME/dnsproxy` or
//! `~/.cache/dnsproxy`), then compile, in a child process (see
//! `compile_in_child`), and store in the per-user cache. The
//! hash covers the component bytes and the engine's compilation settings, so
//! a stale or foreign file is never picked; wasmtime also re-checks its
//! version and settings when loading.
//!
//! An artefact is native code that runs outside the sandbox, so a file is
//! used only if nobody but root or the running user can have written it: a
//! regular file (opened without following symlinks) owned by one of them and
//! not writable by group or others. Anything else is ignored with an info
//! line and the component is compiled in memory. A trusted file is mapped
//! (through the descriptor it was checked on), not copied: its resident
//! pages are the page cache's, shared, not a private copy. Artefacts are
//! written under
//! a fresh temporary name (`O_CREAT|O_EXCL|O_NOFOLLOW`) and renamed into
//! place, so neither a planted symlink nor a half-written file is ever read.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

mod embedded {
    #![allow(unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/component.rs"));
}

/// Mode of an artefact written by `precompile` (beside the executable, in
/// an image): readable by the unprivileged user the image runs as.
const SHARED_MODE: u32 = 0o644;
/// Mode of an artefact in the per-user cache, and of that cache directory.
const PRIVATE_MODE: u32 = 0o600;
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Set (to anything) in the host's environment, wasmtime writes
/// `/tmp/perf-PID.map` so that `perf report` names the component's
/// functions: a developer's aid for profiling (bench/README.md), off
/// otherwise.
pub const PERF_MAP_VAR: &str = "DNSPROXY_PERF_MAP";

/// The engine every component instance runs on. Epoch interruption lets
/// the watchdog stop an instance stuck in a loop (see [`crate::watchdog`]);
/// it changes the compiled code, and so the artefact name.
///
/// The epoch is checked at loop headers only, not at every function entry
/// (`vendor/wasmtime-internal-cranelift`, patch 1): a guest that never ends
/// either loops, and is checked there, or recurses without end, and the
/// stack limit traps it. Tail calls are off so that recursion always grows
/// the stack (`return_call` would let a guest recurse forever unchecked);
/// the component is built without them (wasm32-wasip2's default features),
/// and one that used them would be refused when compiled.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config.epoch_interruption(true);
    config.wasm_tail_call(false);
    if std::env::var_os(PERF_MAP_VAR).is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
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

/// The embedded component's SHA-256 digest, taken at build time: hashing
/// it here would read every page of it, and keep 12 MB of the binary
/// resident for as long as the proxy runs.
pub fn embedded_digest() -> [u8; 32] {
    embedded::WASM_SHA256
}

/// A stable name for the AOT artefact, on `engine`, of the component whose
/// SHA-256 digest is `digest`.
pub fn artefact_name(engine: &Engine, digest: &[u8; 32]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    digest.as_slice().hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("dnsproxy-{:016x}.cwasm", h.finish())
}

/// Why an artefact on disk is not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Untrusted {
    /// There is no such file (the common case: not precompiled).
    #[error("not found")]
    Missing,
    /// A symbolic link: whoever can write its directory chose the target.
    #[error("is a symbolic link")]
    Symlink,
    /// A directory, FIFO, device, ...
    #[error("is not a regular file")]
    NotRegular,
    /// Owned by someone who is neither root nor the running user.
    #[error("is owned by uid {owner}, neither root nor the running user ({me})")]
    Owner {
        /// The file's owner.
        owner: u32,
        /// The running user.
        me: u32,
    },
    /// Writable by users other than its owner.
    #[error("is writable by group or others (mode {0:o})")]
    Writable(u32),
    /// It could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Whether a file with this owner and mode may hold native code run by
/// user `me`. Root-owned files are trusted (an image's files are root's,
/// read by an unprivileged user).
fn trusted(is_file: bool, owner: u32, mode: u32, me: u32) -> Result<(), Untrusted> {
    if !is_file {
        return Err(Untrusted::NotRegular);
    }
    if owner != 0 && owner != me {
        return Err(Untrusted::Owner { owner, me });
    }
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable(mode & 0o7777));
    }
    Ok(())
}

/// Opens an artefact if it is trusted (see [`trusted`]). The checks are made
/// on the open file, and [`load_cwasm`] loads that same open file, so the
/// file cannot be swapped between check and use.
pub fn open_trusted(path: &Path) -> Result<File, Untrusted> {
    // NONBLOCK: opening a FIFO planted in place of the file must not hang
    // the start; it is refused below as not a regular file.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(Untrusted::Symlink),
        Err(Errno::NOENT) => return Err(Untrusted::Missing),
        Err(e) => return Err(Untrusted::Io(e.into())),
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    trusted(
        meta.file_type().is_file(),
        meta.uid(),
        meta.mode(),
        rustix::process::geteuid().as_raw(),
    )?;
    Ok(file)
}

/// Loads a trusted artefact (see [`open_trusted`]), mapped from its file:
/// only pages that are touched become resident (about 4.6 of its 6.6 MB at
/// idle, most of the code), and they are the page cache's, shared by every
/// dnsproxy started from that file, where a copy would keep all of it
/// resident in each process's own memory. Where the file
/// cannot be mapped as code (no `/proc`, a `noexec` mount) it is read
/// instead.
fn load_cwasm(engine: &Engine, file: &File) -> Result<Component> {
    // `/proc/self/fd/N` names the file opened and checked, not the path:
    // whatever was put at the path since is not what gets mapped.
    let opened = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    // SAFETY: `deserialize_file` runs native code from the file. Only root
    // or the running user can have written it (`open_trusted`), and only
    // they could change it while it is mapped (`dnsproxy precompile` and
    // `make install` replace the file rather than write into it). It is
    // named by the hash of the exact component and engine settings, and
    // wasmtime validates the header, version and settings before use.
    #[allow(unsafe_code)]
    match unsafe { Component::deserialize_file(engine, &opened) } {
        Ok(component) => return Ok(component),
        Err(e) => {
            tracing::debug!(
                error = format!("{e:#}"),
                "precompiled component not mapped, reading it"
            );
        }
    }
    let mut bytes = Vec::new();
    (&*file).read_to_end(&mut bytes)?;
    // SAFETY: as above; the bytes were read from the same open file.
    #[allow(unsafe_code)]
    Ok(unsafe { Component::deserialize(engine, &bytes) }?)
}

/// Where precompiled artefacts are installed for the executable at `exe`:
/// beside it, and in `<prefix>/lib/dnsproxy` for `<prefix>/bin/dnsproxy`
/// (`make install`).
fn installed_dirs(exe: &Path) -> Vec<PathBuf> {
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(prefix) = dir.parent() {
        dirs.push(prefix.join("lib").join("dnsproxy"));
    }
    dirs
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
    let name = artefact_name(engine, &embedded_digest());
    let installed = std::env::current_exe()
        .map(|exe| installed_dirs(&exe))
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(&name));
    let cached = user_cache_dir().map(|d| d.join(&name));
    for path in installed.chain(cached.iter().cloned()) {
        let file = match open_trusted(&path) {
            Ok(file) => file,
            Err(Untrusted::Missing) => continue,
            Err(why) => {
                tracing::info!(path = %path.display(), %why, "ignoring the precompiled component");
                continue;
            }
        };
        match load_cwasm(engine, &file) {
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
    let component = compile_and_load(engine, wasm, cached);
    return_freed_memory();
    component
}

/// Compiles the embedded `wasm` (in a child process if it can), stores the
/// artefact at `cached` when there is one, and loads it.
fn compile_and_load(engine: &Engine, wasm: &[u8], cached: Option<PathBuf>) -> Result<Component> {
    let started = std::time::Instant::now();
    let bytes = match compile_in_child(COMPILE_DEADLINE) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not compile the component in a child process; compiling it in this \
                 one, which keeps the compiler's memory (about 150 MiB) for as long as it runs"
            );
            engine
                .precompile_component(wasm)
                .map_err(anyhow::Error::from)
                .context("compiling the component")?
        }
    };
    let elapsed = started.elapsed();
    match cached.map(|path| (store_private(&path, &bytes), path)) {
        Some((Ok(()), path)) => {
            tracing::info!(?elapsed, cached = %path.display(), "compiled the component");
            // Mapped from the file just written, as at the next start: its
            // pages are the page cache's, not a second private copy.
            let mapped = open_trusted(&path)
                .map_err(anyhow::Error::from)
                .and_then(|file| load_cwasm(engine, &file));
            match mapped {
                Ok(component) => return Ok(component),
                Err(e) => tracing::debug!(
                    error = format!("{e:#}"),
                    "the stored component could not be mapped, loading it from memory"
                ),
            }
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

/// Hands the memory freed so far back to the system. mimalloc keeps freed
/// pages for reuse and purges them only as the thread that freed them goes
/// on allocating; after compiling, that is the artefact's buffer (8 MiB,
/// grown by doubling as the pipe was read) and the child's pipe buffers,
/// 18 MiB in all that would otherwise stay resident.
fn return_freed_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: `mi_collect` takes no pointer; it frees the calling thread's
    // unused pages and purges the arenas, which mimalloc allows at any time.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// How long [`compile_in_child`] waits for the child: compiling takes 1 to
/// 2 s on this project's machines, so this is a hung child, not a slow one.
const COMPILE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// The most of a failed child's stderr quoted in the error.
const CHILD_STDERR_QUOTED: usize = 2_048;

/// Compiles the embedded component in a child process, this very executable
/// (`/proc/self/exe`, the same file even if it was replaced on disk since)
/// running `precompile --out -`, and returns the artefact it wrote to the
/// pipe.
///
/// Why a child: Cranelift's peak (about 200 MiB, on rayon's threads) is
/// freed when compiling ends, but the allocator keeps most of it mapped for
/// as long as the process lives: a proxy that compiled at start held
/// 190 MiB of RSS where one that loaded an artefact held 30 MiB. A child's
/// memory goes back to the system when it exits. The child is given an
/// empty environment (except [`PERF_MAP_VAR`], which selects the engine's
/// settings, and so the artefact) and no stdin; its stderr is quoted in the
/// error when it fails. Waited for at most `deadline`, then killed.
fn compile_in_child(deadline: std::time::Duration) -> Result<Vec<u8>> {
    use std::process::{Command, Stdio};
    let mut command = Command::new("/proc/self/exe");
    command
        .args(["precompile", "--out", "-"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = std::env::var_os(PERF_MAP_VAR) {
        command.env(PERF_MAP_VAR, v);
    }
    let child = command.spawn().context("starting the child")?;
    let pid = rustix::process::Pid::from_child(&child);
    let (done, finished) = std::sync::mpsc::sync_channel(1);
    // `wait_with_output` reads both pipes to their end and reaps the child;
    // the thread ends with it (the kill below makes sure it does).
    std::thread::Builder::new()
        .name("compile-child".into())
        .spawn(move || {
            let _ = done.send(child.wait_with_output());
        })
        .context("starting the thread that waits for the child")?;
    let output = match finished.recv_timeout(deadline) {
        Ok(output) => output.context("waiting for the child")?,
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            bail!("the child did not finish within {deadline:?} and was killed");
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let from = stderr.floor_char_boundary(stderr.len().saturating_sub(CHILD_STDERR_QUOTED));
        bail!("the child {}: {}", output.status, &stderr[from..]);
    }
    if output.stdout.is_empty() {
        bail!("the child wrote no artefact");
    }
    Ok(output.stdout)
}

fn load_bytes(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    // SAFETY: the bytes were produced a moment ago by `precompile_component`
    // on this very engine, or by this same executable (the same file) in a
    // child, which builds its engine the same way (`engine()`); wasmtime
    // also checks the artefact's version and settings against the engine.
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
    let path = dir.join(artefact_name(engine, &embedded_digest()));
    let bytes = engine.precompile_component(wasm)?;
    write_artefact(&path, &bytes)?;
    Ok(path)
}

/// Writes an artefact for everyone to read (`precompile`), atomically.
pub fn write_artefact(path: &Path, bytes: &[u8]) -> Result<()> {
    store_atomically(path, bytes, SHARED_MODE)
}

/// Writes an artefact into the per-user cache, creating it private.
fn store_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("no parent directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    store_atomically(path, bytes, PRIVATE_MODE)
}

/// Writes `bytes` to a new file beside `path` (a fresh name, `O_EXCL`, never
/// through a symlink), then renames it over `path`: readers see the old file
/// or the complete new one, and a file or link planted at either name is
/// never written through.
fn store_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("no parent directory")?;
    let name = path
        .file_name()
        .context("no file name")?
        .to_string_lossy()
        .into_owned();
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for attempt in 0..16 {
        let tmp = dir.join(format!(".{name}.{}.{attempt}.tmp", std::process::id()));
        let fd = match rustix::fs::open(&tmp, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => fd,
            // A leftover of a crashed run, or something planted: another name.
            Err(Errno::EXIST) => continue,
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("creating {}", tmp.display()));
            }
        };
        let written = (|| -> std::io::Result<()> {
            // The exact mode, whatever the umask.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            let mut file = File::from(fd);
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        return Ok(());
    }
    bail!("no free temporary name beside {}", path.display())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The smallest valid component: the preamble alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn the_build_time_digest_is_the_embedded_components() {
        let wasm = embedded_wasm().expect("the component is embedded (make build-host)");
        let digest = ring::digest::digest(&ring::digest::SHA256, wasm);
        assert_eq!(embedded_digest().as_slice(), digest.as_ref());
    }

    /// A core module of one function that calls itself: by `call` (opcode
    /// 0x10) or by `return_call` (0x12, a tail call).
    fn self_calling_module(opcode: u8) -> Vec<u8> {
        let mut wasm = b"\0asm\x01\x00\x00\x00".to_vec();
        // Types: one, `func () -> ()`. Functions: one, of type 0.
        wasm.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]);
        wasm.extend_from_slice(&[0x03, 0x02, 0x01, 0x00]);
        // Code: one body, no locals, the call of function 0, `end`.
        wasm.extend_from_slice(&[0x0a, 0x06, 0x01, 0x04, 0x00, opcode, 0x00, 0x0b]);
        wasm
    }

    #[test]
    fn the_engine_refuses_tail_calls_but_not_plain_recursion() {
        // Epoch checks sit at loop headers only, so a guest's only way to
        // run forever without a loop would be endless tail calls.
        let engine = engine().unwrap();
        wasmtime::Module::validate(&engine, &self_calling_module(0x10))
            .expect("a plain call is accepted");
        let refused = wasmtime::Module::validate(&engine, &self_calling_module(0x12))
            .expect_err("a tail call is refused");
        assert!(format!("{refused:#}").contains("tail call"), "{refused:#}");
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("dnsproxy-engine-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn artefact(engine: &Engine) -> Vec<u8> {
        engine.precompile_component(EMPTY_COMPONENT).unwrap()
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_artefact_we_wrote_loads() {
        let engine = engine().unwrap();
        let dir = TempDir::new();
        let path = dir.0.join("cache/dnsproxy/a.cwasm");
        store_private(&path, &artefact(&engine)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, PRIVATE_MODE);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode();
        assert_eq!(dir_mode & 0o777, PRIVATE_DIR_MODE);
        let file = open_trusted(&path).unwrap();
        load_cwasm(&engine, &file).unwrap();
    }

    #[test]
    fn the_artefact_checked_is_the_one_loaded_even_if_the_path_is_replaced() {
        let engine = engine().unwrap();
        let dir = TempDir::new();
        let path = dir.0.join("a.cwasm");
        write_artefact(&path, &artefact(&engine)).unwrap();
        let file = open_trusted(&path).unwrap();
        // Swapped after the check: garbage that would fail to load.
        let other = dir.0.join("other");
        std::fs::write(&other, b"not an artefact").unwrap();
        std::fs::rename(&other, &path).unwrap();
        load_cwasm(&engine, &file).unwrap();
        assert!(load_cwasm(&engine, &open_trusted(&path).unwrap()).is_err());
    }

    #[test]
    fn precompile_writes_a_world_readable_artefact_whatever_the_umask() {
        let engine = engine().unwrap();
        let dir = TempDir::new();
        let path = dir.0.join("a.cwasm");
        write_artefact(&path, &artefact(&engine)).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            SHARED_MODE
        );
        assert!(open_trusted(&path).is_ok());
    }

    #[test]
    fn a_group_or_world_writable_artefact_is_refused() {
        let engine = engine().unwrap();
        let dir = TempDir::new();
        let path = dir.0.join("a.cwasm");
        write_artefact(&path, &artefact(&engine)).unwrap();
        for mode in [0o664, 0o646, 0o666] {
            set_mode(&path, mode);
            assert!(
                matches!(open_trusted(&path), Err(Untrusted::Writable(m)) if m == mode),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn a_symlinked_artefact_is_refused_even_to_a_good_file() {
        let engine = engine().unwrap();
        let dir = TempDir::new();
        let good = dir.0.join("good.cwasm");
        write_artefact(&good, &artefact(&engine)).unwrap();
        let link = dir.0.join("link.cwasm");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(matches!(open_trusted(&link), Err(Untrusted::Symlink)));
    }

    #[test]
    fn a_fifo_in_place_of_the_artefact_is_refused_without_blocking() {
        let dir = TempDir::new();
        let path = dir.0.join("fifo.cwasm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(open_trusted(&path), Err(Untrusted::NotRegular)));
    }

    #[test]
    fn a_missing_artefact_is_just_missing() {
        let dir = TempDir::new();
        assert!(matches!(
            open_trusted(&dir.0.join("none.cwasm")),
            Err(Untrusted::Missing)
        ));
    }

    #[test]
    fn installed_artefacts_are_looked_for_beside_the_binary_then_in_the_prefix_lib() {
        assert_eq!(
            installed_dirs(Path::new("/usr/bin/dnsproxy")),
            [
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/lib/dnsproxy")
            ]
        );
        assert_eq!(
            installed_dirs(Path::new("/opt/dns/bin/dnsproxy")),
            [
                PathBuf::from("/opt/dns/bin"),
                PathBuf::from("/opt/dns/lib/dnsproxy")
            ]
        );
        // A binary at the root has no prefix above it.
        assert_eq!(installed_dirs(Path::new("/dnsproxy")), [PathBuf::from("/")]);
    }

    #[test]
    fn ownership_rules_trust_root_and_the_running_user_only() {
        // The image: root-owned 0644 files, run as user 65532.
        assert!(trusted(true, 0, 0o100644, 65532).is_ok());
        assert!(trusted(true, 65532, 0o100600, 65532).is_ok());
        assert!(trusted(true, 0, 0o100444, 0).is_ok());
        assert!(matches!(
            trusted(true, 1000, 0o100644, 65532),
            Err(Untrusted::Owner {
                owner: 1000,
                me: 65532
            })
        ));
        assert!(matches!(
            trusted(true, 65532, 0o100644, 0),
            Err(Untrusted::Owner { .. })
        ));
        assert!(matches!(
            trusted(false, 0, 0o040755, 0),
            Err(Untrusted::NotRegular)
        ));
    }

    #[test]
    fn writing_never_follows_a_symlink_planted_at_the_artefact_name() {
        let engine = engine().unwrap();
        let dir = TempDir::new();
        let victim = dir.0.join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let path = dir.0.join("a.cwasm");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        // And at the first temporary name, too.
        let tmp = dir.0.join(format!(".a.cwasm.{}.0.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_artefact(&path, &artefact(&engine)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert!(open_trusted(&path).is_ok());
    }
}
