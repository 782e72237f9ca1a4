//! Workspace paths, fixture files, SPKI pins and free loopback ports.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

/// The cargo workspace root (the parent of the `spec-tests` crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("spec-tests lives one level below the workspace root")
        .to_path_buf()
}

/// Absolute path of a file under `fixtures/`, e.g. `fixture("pki/root.pem")`.
pub fn fixture(path: impl AsRef<Path>) -> PathBuf {
    workspace_root().join("fixtures").join(path)
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

/// A port on 127.0.0.1 that was free for both TCP and UDP a moment ago.
///
/// Binds `127.0.0.1:0` for TCP, checks UDP can bind the same port, then releases both.
/// Another process may still grab it before the caller binds it; that race is accepted.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 (TCP)");
        let port = tcp
            .local_addr()
            .expect("local address of a bound TCP listener")
            .port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 free for both TCP and UDP after 100 attempts");
}
