//! `dnsproxy spki`: prints the certificates of a live DoT server's chain (or
//! of a PEM file) with the SPKI pin of each, in the form `spki =` takes.
//! Replaces the seed's `utils/spki.sh`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use dnsproxy_core::core::pins::{DisplayPins, Pin};
use dnsproxy_core::shell::tls::{self, PinnedVerifier};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cli::SpkiArgs;

/// One line per certificate: position, role, subject, not-after, pin.
pub fn describe(der: &[u8], position: usize, role: &str) -> String {
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => {
            let pin = Pin::of_spki(cert.tbs_certificate.subject_pki.raw);
            format!(
                "{position}  {role:<13} {}\n   not after     {}\n   spki          {pin}\n",
                cert.subject(),
                cert.validity().not_after
            )
        }
        Err(e) => format!("{position}  {role:<13} (unparseable certificate: {e})\n"),
    }
}

fn pin_of(der: &[u8]) -> Option<Pin> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| Pin::of_spki(c.tbs_certificate.subject_pki.raw))
}

/// `spki --pem FILE`: every certificate in the file, in file order.
pub fn from_pem(path: &std::path::Path) -> Result<String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    let mut out = format!("# {}\n", path.display());
    let mut pins = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        out.push_str(&describe(cert, i, "certificate"));
        pins.extend(pin_of(cert));
    }
    let _ = writeln!(out, "\nspki = {}", DisplayPins(&pins));
    Ok(out)
}

/// The chain a server presented and the verdict on it.
type Seen = (Vec<CertificateDer<'static>>, Result<Vec<Pin>, String>);

/// Records the chain the server presented, then verifies it.
#[derive(Debug)]
struct Recording {
    inner: PinnedVerifier,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self
            .inner
            .verify_chain(end_entity, intermediates, server_name, now)
            .map_err(|e| e.to_string());
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        let ok = result.is_ok();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((chain, result));
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate chain not verified".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `spki --host --port --name [--ca-file]`: connects, verifies, prints.
/// Returns the report and whether the chain verified.
pub async fn from_server(args: &SpkiArgs) -> Result<(String, bool)> {
    let Some(host) = args.host else {
        bail!("--host is required without --pem");
    };
    let addr = SocketAddr::new(host, args.port);
    let anchors = match &args.ca_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(tls::anchors_from_pem(&pem).with_context(|| format!("{}", path.display()))?)
        }
        None => None,
    };
    let recording = Arc::new(Recording {
        inner: PinnedVerifier::new(anchors, Default::default()),
        seen: Mutex::new(None),
    });
    let config = tls::client_config(tls::provider(), recording.clone())?;
    // Without --name the chain is verified for the address, as the proxy
    // does for an upstream without tls_hostname.
    let (server_name, name) = match args.name.as_deref() {
        Some(name) => (
            ServerName::try_from(name.to_owned()).context("--name is not a valid DNS name")?,
            name.to_owned(),
        ),
        None => (
            ServerName::IpAddress(host.into()),
            "by IP address".to_owned(),
        ),
    };
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("{addr}: connect timed out"))?
        .with_context(|| format!("{addr}: connect failed"))?;
    let handshake = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .with_context(|| format!("{addr}: TLS handshake timed out"))?;
    let seen = recording
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some((chain, verdict)) = seen else {
        // The handshake failed before the server sent certificates.
        handshake.with_context(|| format!("{addr}: TLS handshake failed"))?;
        bail!("{addr}: the server sent no certificate");
    };
    let trust = match &args.ca_file {
        Some(p) => p.display().to_string(),
        None => "the built-in web roots".to_owned(),
    };
    let mut out = String::new();
    let ok = match &verdict {
        Ok(_) => {
            let _ = writeln!(out, "# {addr} ({name}): chain verified against {trust}");
            true
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "# {addr} ({name}): chain NOT verified against {trust}: {e}"
            );
            false
        }
    };
    for (i, cert) in chain.iter().enumerate() {
        let role = if i == 0 { "leaf" } else { "intermediate" };
        out.push_str(&describe(cert, i, role));
    }
    if let Ok(pins) = &verdict {
        // The verified path may end in an anchor the server did not send.
        if let Some(anchor) = pins
            .last()
            .filter(|p| !chain.iter().filter_map(|c| pin_of(c)).any(|c| c == **p))
        {
            let _ = writeln!(
                out,
                "{}  trust anchor  (from {trust})\n   spki          {anchor}",
                chain.len()
            );
        }
        let _ = writeln!(
            out,
            "\n# any one of these pins accepts this chain:\nspki = {}",
            DisplayPins(pins)
        );
    }
    Ok((out, ok))
}
