//! The harness's container images, built here (the machine has no registry):
//!
//! - [`fixture_image`]: our fixture DoT resolver (`fixtures/dot-resolver`), a static
//!   binary plus `fixtures/pki/`, `FROM scratch` (`fixtures/dot-resolver/Dockerfile`);
//! - [`unbound_image`]: Debian's `/usr/sbin/unbound` with the libraries `ldd` lists,
//!   `libgcc_s.so.1`, `fixtures/pki/` and `fixtures/zone/`, put together with
//!   `docker import` (its config is copied into each container, see `containers`).
//!
//! Each image is tagged with a hash of everything that goes into it, so it is built
//! once and rebuilt only when an input changes. Built at most once per test process.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::docker::{self, LABEL, docker};
use crate::paths::{NATIVE_TARGET, fixture, native_build, workspace_root};

/// Debian's unbound.
const UNBOUND: &str = "/usr/sbin/unbound";

/// The image of the fixture DoT resolver (built on first use).
pub fn fixture_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        docker::require();
        let bin = fixture_binary();
        let dockerfile = fixture("dot-resolver/Dockerfile");
        let pki = pki_files();
        let mut inputs = vec![bin.clone(), dockerfile.clone()];
        inputs.extend(pki.iter().cloned());
        let tag = format!("dnsproxy-spec/dot-fixture:{}", content_hash(&inputs));
        if !docker::image_exists(&tag) {
            let ctx = tempfile::Builder::new()
                .prefix("spec-image-")
                .tempdir()
                .expect("temp dir for the build context");
            copy(&bin, &ctx.path().join("dot-fixture"));
            for f in &pki {
                copy(f, &ctx.path().join("pki").join(file_name(f)));
            }
            let ctx_dir = ctx.path().to_string_lossy().into_owned();
            let dockerfile = dockerfile.to_string_lossy().into_owned();
            let label = format!("{LABEL}=1");
            docker(&[
                "build",
                "--quiet",
                "--label",
                &label,
                "--tag",
                &tag,
                "--file",
                &dockerfile,
                &ctx_dir,
            ])
            .unwrap_or_else(|e| panic!("building the fixture resolver image: {e}"));
        }
        tag
    })
}

/// The image of Debian's unbound (imported on first use).
pub fn unbound_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        docker::require();
        assert!(
            Path::new(UNBOUND).is_file(),
            "{UNBOUND} not found: install Debian's `unbound` package (scripts/setup.sh does)"
        );
        let mut files = shared_libraries(Path::new(UNBOUND));
        files.push(PathBuf::from(UNBOUND));
        let mut inputs = files.clone();
        inputs.extend(pki_files());
        inputs.push(fixture("zone/dot.test.conf"));
        let tag = format!("dnsproxy-spec/unbound:{}", content_hash(&inputs));
        if !docker::image_exists(&tag) {
            import_unbound(&tag, &files);
        }
        tag
    })
}

/// The static fixture resolver binary, built by `make spec` in the tests' own
/// profile (the harness does not run cargo itself: a running `cargo test` may
/// hold the build directory's lock).
fn fixture_binary() -> PathBuf {
    let bin = match std::env::var_os("DOT_FIXTURE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => native_build("release-tests", "dot-fixture"),
    };
    assert!(
        bin.is_file(),
        "the fixture resolver binary {} is missing: run `make spec`, or `cargo build \
         --profile release-tests --target {NATIVE_TARGET} -p dot-fixture` (or set \
         DOT_FIXTURE_BIN)",
        bin.display()
    );
    bin
}

/// Every certificate and key of the test PKI (test-only keys, public).
fn pki_files() -> Vec<PathBuf> {
    let dir = fixture("pki");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("pem" | "key")))
        .collect();
    files.sort();
    files
}

/// The shared libraries `ldd` lists for `bin`, plus `libgcc_s.so.1` (loaded at run
/// time by glibc for thread cancellation, so `ldd` does not show it).
fn shared_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ldd: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs: Vec<PathBuf> = text
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    let gcc_s = Path::new("/lib/x86_64-linux-gnu/libgcc_s.so.1");
    if gcc_s.is_file() && !libs.iter().any(|l| l == gcc_s) {
        libs.push(gcc_s.to_path_buf());
    }
    libs.sort();
    libs.dedup();
    libs
}

/// Assembles the unbound root filesystem and `docker import`s it as `tag`.
fn import_unbound(tag: &str, files: &[PathBuf]) {
    let root = tempfile::Builder::new()
        .prefix("spec-rootfs-")
        .tempdir()
        .expect("temp dir for the rootfs");
    for f in files {
        // Keep the path the dynamic loader expects (`/lib64/ld-linux-x86-64.so.2`, ...).
        copy(f, &root.path().join(f.strip_prefix("/").unwrap_or(f)));
    }
    for f in pki_files() {
        copy(&f, &root.path().join("pki").join(file_name(&f)));
    }
    copy(
        &fixture("zone/dot.test.conf"),
        &root.path().join("etc/unbound/dot.test.conf"),
    );
    std::fs::create_dir_all(root.path().join("tmp")).expect("mkdir /tmp");
    let tar = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(root.path())
        .args(["-c", "."])
        .output()
        .unwrap_or_else(|e| panic!("cannot run tar: {e}"));
    assert!(tar.status.success(), "tar of the unbound rootfs failed");
    let mut import = Command::new("docker")
        .args([
            "import",
            "--change",
            r#"ENTRYPOINT ["/usr/sbin/unbound", "-d", "-c", "/etc/unbound/unbound.conf"]"#,
            "--change",
            "USER 65532:65532",
            "--change",
            "EXPOSE 853/tcp",
            "-",
            tag,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run docker import: {e}"));
    import
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&tar.stdout)
        .expect("send the rootfs to docker import");
    let out = import.wait_with_output().expect("docker import");
    assert!(
        out.status.success(),
        "docker import of the unbound rootfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A short hash of the paths and contents of `inputs` (an image tag). Paths in
/// the workspace count relative to it, so every checkout shares the images.
fn content_hash(inputs: &[PathBuf]) -> String {
    let root = workspace_root();
    let mut h = DefaultHasher::new();
    for p in inputs {
        p.strip_prefix(&root).unwrap_or(p).hash(&mut h);
        std::fs::read(p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// Copies a file (following symlinks), creating directories, readable by everyone.
fn copy(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    let mode = std::fs::metadata(from)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    // Readable by the containers' non-root user; executables stay executable.
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
}

fn file_name(p: &Path) -> &std::ffi::OsStr {
    p.file_name().expect("a file path")
}
