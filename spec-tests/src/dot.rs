//! A direct DNS-over-TLS client (rustls), to talk to fixture resolvers without the proxy.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::dns::{connect_tcp, query, tcp_exchange};

/// A TLS stream to a DoT server (blocking; the 5 s timeouts of [`connect_tcp`]).
pub type DotStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr`, verifies the server's chain against the PEM bundle `ca_file` for
/// `server_name` (also sent as SNI) and completes the handshake. A verification failure
/// is an `io::Error` whose message carries rustls' reason (e.g. `UnknownIssuer`,
/// `Expired`, `NotValidForName`).
pub fn dot_connect(addr: SocketAddr, server_name: &str, ca_file: &Path) -> io::Result<DotStream> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| io::Error::other(format!("{}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| io::Error::other(format!("{}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(io::Error::other)?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, connect_tcp(addr)?);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Pipelines `msgs` on one fresh DoT connection and returns the answers (any order).
/// Panics on connection or verification failure.
pub fn dot_exchange(
    addr: SocketAddr,
    server_name: &str,
    ca_file: &Path,
    msgs: &[Message],
) -> Vec<Message> {
    let mut s = dot_connect(addr, server_name, ca_file)
        .unwrap_or_else(|e| panic!("DoT connect to {addr} ({server_name}): {e}"));
    tcp_exchange(&mut s, msgs)
}

/// One query over a fresh DoT connection; an oracle that bypasses the proxy.
pub fn query_dot(
    addr: SocketAddr,
    server_name: &str,
    ca_file: &Path,
    name: &str,
    rtype: RecordType,
) -> Message {
    let q = query(name, rtype);
    dot_exchange(addr, server_name, ca_file, std::slice::from_ref(&q)).remove(0)
}
