//! Workspace paths, fixture files, SPKI pins and free loopback ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The cargo workspace root (the parent of the `spec-tests` crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("spec-tests lives one level below the workspace root")
        .to_path_buf()
}

/// The native target the binaries under test are built for (static, musl).
pub(crate) const NATIVE_TARGET: &str = "x86_64-unknown-linux-musl";

/// A native binary of this workspace in cargo's output directory for
/// `profile`: `<target dir>/x86_64-unknown-linux-musl/<profile>/<name>`, the
/// target directory being `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub(crate) fn native_build(profile: &str, name: &str) -> PathBuf {
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace_root().join(d),
        _ => workspace_root().join("target"),
    };
    target_dir.join(NATIVE_TARGET).join(profile).join(name)
}

/// Absolute path of a file under `fixtures/`, e.g. `fixture("pki/root.pem")`.
pub fn fixture(path: impl AsRef<Path>) -> PathBuf {
    workspace_root().join("fixtures").join(path)
}

/// A test guest built by `make build-host` (the `policy-probe` crate), as
/// the `--component` argument takes it.
pub fn guest(name: &str) -> String {
    let path = workspace_root().join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        path.is_file(),
        "build the test guests with `make build-host` ({})",
        path.display()
    );
    path.display().to_string()
}

/// All pins from `fixtures/pki/pins.txt`: certificate name (`root`, `intermediate`,
/// `dot-test`, `other-test`, `evil-root`, `evil-dot-test`, `expired-dot-test`) to its
/// RFC 7469 pin (base64 of the SHA-256 of the SubjectPublicKeyInfo DER).
pub fn pins() -> BTreeMap<String, String> {
    let file = fixture("pki/pins.txt");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (run fixtures/pki/gen.sh)",
            file.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, pin) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("malformed line in {}: {l:?}", file.display()));
            (name.to_string(), pin.trim().to_string())
        })
        .collect()
}

/// The pin of one fixture certificate, read from `fixtures/pki/pins.txt` (see [`pins`]).
/// Panics if the name is unknown.
pub fn pin(name: &str) -> String {
    pins()
        .remove(name)
        .unwrap_or_else(|| panic!("no pin named {name:?} in fixtures/pki/pins.txt"))
}

/// A port on 127.0.0.1 that was free for both TCP and UDP a moment ago, and that no
/// other caller in this test process has been given.
///
/// Binds `127.0.0.1:0` for TCP, checks UDP can bind the same port, then releases both.
/// Tests in one process run in parallel, and the kernel may hand a just-released port
/// to the next `bind(0)`: a process-wide set of the ports given out keeps two tests of
/// one process from ever getting the same port. Another process may still grab it
/// before the caller binds it, so whoever binds it must retry with a new port when it
/// is taken (as [`crate::Proxy::start`] and the resolver containers do).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 (TCP)");
        let port = tcp
            .local_addr()
            .expect("local address of a bound TCP listener")
            .port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && GIVEN
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(port)
        {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 free for both TCP and UDP after 100 attempts");
}

/// A TCP port on 127.0.0.1 where nothing listens, held for as long as this lives:
/// a socket is bound to it but never listens, so connections to it are refused (RST)
/// and no other process can take the port meanwhile. A dead upstream without the
/// race of "find a free port, release it, hope nobody takes it".
#[derive(Debug)]
pub struct ClosedPort {
    _socket: socket2::Socket,
    port: u16,
}

impl ClosedPort {
    /// Binds a fresh one. Panics if the socket cannot be created or bound.
    pub fn new() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a TCP socket");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind 127.0.0.1:0 (TCP)");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("local address of a bound TCP socket")
            .port();
        Self {
            _socket: socket,
            port,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}
