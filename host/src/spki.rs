//! `dnsproxy spki`: prints the certificates of a live DoT server's chain (or
//! of a PEM file) with the SPKI pin of each, in the form `spki =` takes.
//! Replaces the seed's `utils/spki.sh`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use dnsproxy_core::core::pins::{self, DisplayPins, Pin, PinSet};
use dnsproxy_core::shell::tls::{self, PinnedVerifier};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cli::SpkiArgs;
use crate::config::{ProxyConfig, UpstreamConfig};

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

/// What one TLS handshake showed: the chain the server sent and the
/// verdict on it (the pins of the verified path, leaf first, or why it did
/// not verify).
struct Live {
    chain: Vec<CertificateDer<'static>>,
    verdict: Result<Vec<Pin>, String>,
}

/// Connects to `addr`, sends `name` as SNI and verifies the chain against
/// `anchors` (the web roots when `None`) like the proxy does, without pins.
async fn fetch(
    addr: SocketAddr,
    name: ServerName<'static>,
    anchors: Option<Vec<TrustAnchor<'static>>>,
) -> Result<Live> {
    let recording = Arc::new(Recording {
        inner: PinnedVerifier::new(anchors, Default::default()),
        seen: Mutex::new(None),
    });
    let config = tls::client_config(tls::provider(), recording.clone())?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("{addr}: connect timed out"))?
        .with_context(|| format!("{addr}: connect failed"))?;
    let handshake = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
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
    Ok(Live { chain, verdict })
}

/// The certificates of a live chain, one block each, and the trust anchor
/// of the verified path when the server did not send it.
fn describe_chain(out: &mut String, live: &Live, trust: &str) {
    for (i, cert) in live.chain.iter().enumerate() {
        let role = if i == 0 { "leaf" } else { "intermediate" };
        out.push_str(&describe(cert, i, role));
    }
    if let Some(anchor) = anchor_not_sent(live) {
        let _ = writeln!(
            out,
            "{}  trust anchor  (from {trust})\n   spki          {anchor}",
            live.chain.len()
        );
    }
}

/// The verified path may end in an anchor the server did not send.
fn anchor_not_sent(live: &Live) -> Option<&Pin> {
    let pins = live.verdict.as_ref().ok()?;
    pins.last().filter(|p| {
        !live
            .chain
            .iter()
            .filter_map(|c| pin_of(c))
            .any(|c| c == **p)
    })
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
    let live = fetch(addr, server_name, anchors).await?;
    let trust = match &args.ca_file {
        Some(p) => p.display().to_string(),
        None => "the built-in web roots".to_owned(),
    };
    let mut out = String::new();
    let ok = match &live.verdict {
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
    describe_chain(&mut out, &live, &trust);
    if let Ok(pins) = &live.verdict {
        let _ = writeln!(
            out,
            "\n# any one of these pins accepts this chain:\nspki = {}",
            DisplayPins(pins)
        );
    }
    Ok((out, ok))
}

/// Where a configured pin stands against a live chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinRole {
    /// It is the key of the certificate at this position of the chain the
    /// server sent, which is on the verified path.
    Matches {
        /// 0 for the leaf.
        position: usize,
        /// Its subject.
        subject: String,
    },
    /// It is the key of the verified path's trust anchor, which the server
    /// did not send.
    MatchesAnchor,
    /// It matches no certificate of the verified path: a backup for the
    /// next key (or a stale pin).
    Backup,
}

/// Where `pin` stands against `chain` (as sent) and `path` (the pins of the
/// verified path, leaf first). A certificate sent but not on the verified
/// path never matches, as in the proxy.
pub fn classify(pin: &Pin, chain: &[CertificateDer<'_>], path: &[Pin]) -> PinRole {
    if !path.contains(pin) {
        return PinRole::Backup;
    }
    let sent = chain.iter().enumerate().find_map(|(i, der)| {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        (Pin::of_spki(cert.tbs_certificate.subject_pki.raw) == *pin)
            .then(|| (i, cert.subject().to_string()))
    });
    match sent {
        Some((position, subject)) => PinRole::Matches { position, subject },
        None => PinRole::MatchesAnchor,
    }
}

/// What a pin set lacks against a live chain (RFC 7469 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainWarning {
    /// One distinct pin, or every pin matches the current chain: nothing is
    /// left for the next key.
    NoBackup,
    /// Only the leaf's key matches; leaf keys rotate more often than
    /// intermediates'.
    LeafOnly,
}

impl ChainWarning {
    /// The label the metric uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoBackup => "no_backup",
            Self::LeafOnly => "leaf_only",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            Self::NoBackup => {
                "no backup pin: every configured pin matches the current chain, so \
                 a new key is refused; add the next key's pin (RFC 7469 4.3)"
            }
            Self::LeafOnly => {
                "only the leaf key is pinned: leaf keys rotate more often than \
                 intermediates'; pin an intermediate or the root too"
            }
        }
    }
}

/// The warnings for `pins` against the verified `path` (leaf first), as the
/// proxy itself decides them after a handshake (`core::pins::assess`): none
/// when no pin is configured, or none matches (that chain is refused
/// outright).
pub fn chain_warnings(pins: &PinSet, path: &[Pin]) -> Vec<ChainWarning> {
    let assessment = pins::assess(pins, path);
    if !assessment.matched.iter().any(|&m| m) {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if assessment.no_backup {
        warnings.push(ChainWarning::NoBackup);
    }
    if assessment.leaf_only {
        warnings.push(ChainWarning::LeafOnly);
    }
    warnings
}

/// The report on one configured upstream, and whether the proxy would
/// accept its live chain (verified, and matching the pin set if any).
fn report_upstream(u: &UpstreamConfig, live: &Result<Live>) -> (String, bool) {
    let trust =
        u.ca.as_ref()
            .map_or("the built-in web roots".to_owned(), |c| {
                c.path.display().to_string()
            });
    let mut out = format!("# upstream {} ({}, {})\n", u.name, u.addr, u.auth_name);
    let live = match live {
        Ok(live) => live,
        Err(e) => {
            let _ = writeln!(out, "REFUSED: {e:#}");
            return (out, false);
        }
    };
    let path = match &live.verdict {
        Ok(path) => {
            let _ = writeln!(out, "chain verified against {trust}");
            Some(path)
        }
        Err(e) => {
            let _ = writeln!(out, "chain NOT verified against {trust}: {e}");
            None
        }
    };
    describe_chain(&mut out, live, &trust);
    let Some(path) = path else {
        let _ = writeln!(out, "REFUSED: the chain does not verify");
        return (out, false);
    };
    // Each distinct pin once, in configured order.
    let mut pins: Vec<Pin> = Vec::new();
    for pin in u.pins.pins() {
        if !pins.contains(pin) {
            pins.push(*pin);
        }
    }
    if pins.is_empty() {
        let _ = writeln!(
            out,
            "no pins configured: CA validation only\naccepted: the chain verifies"
        );
        return (out, true);
    }
    let _ = writeln!(out, "configured pins:");
    let roles: Vec<PinRole> = pins
        .iter()
        .map(|p| classify(p, &live.chain, path))
        .collect();
    for (pin, role) in pins.iter().zip(&roles) {
        let role = match role {
            PinRole::Matches { position, subject } => {
                let what = if *position == 0 {
                    "leaf"
                } else {
                    "intermediate"
                };
                format!("matches {position} {what} {subject}")
            }
            PinRole::MatchesAnchor => format!("matches the trust anchor (from {trust})"),
            PinRole::Backup => "backup (matches no certificate of the live chain)".to_owned(),
        };
        let _ = writeln!(out, "   {pin}  {role}");
    }
    for warning in chain_warnings(&u.pins, path) {
        let _ = writeln!(out, "warning: {}", warning.advice());
    }
    if roles.iter().all(|r| *r == PinRole::Backup) {
        let _ = writeln!(
            out,
            "REFUSED: no configured pin matches the chain\n\
             # any one of these pins accepts this chain:\nspki = {}",
            DisplayPins(path)
        );
        return (out, false);
    }
    let _ = writeln!(
        out,
        "accepted: the chain verifies and matches a configured pin"
    );
    (out, true)
}

/// `spki --config`: connects to every configured upstream and says, for
/// each of its pins, whether it matches the live chain or is a backup.
/// Returns the report and whether the proxy would accept every upstream.
pub async fn from_config(config: &ProxyConfig) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    for (i, u) in config.upstreams.iter().enumerate() {
        let live = async {
            let name = tls::server_name(&u.auth_name)
                .with_context(|| format!("{}: not a valid name", u.auth_name))?;
            let anchors = match &u.ca {
                Some(ca) => Some(
                    tls::anchors_from_pem(&ca.pem)
                        .with_context(|| ca.path.display().to_string())?,
                ),
                None => None,
            };
            fetch(u.addr, name, anchors).await
        }
        .await;
        let (report, ok) = report_upstream(u, &live);
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&report);
        all_ok &= ok;
    }
    (out, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture chain as the fixture resolver sends it (leaf,
    /// intermediate) and the pins of its verified path (leaf,
    /// intermediate, root): fixtures/pki/pins.txt.
    fn fixture() -> (Vec<CertificateDer<'static>>, Vec<Pin>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/pki/dot-test.chain.pem"
        );
        let chain = CertificateDer::pem_file_iter(path)
            .expect("the fixture chain")
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM");
        let pins = [
            "+cK3t6tOLaP11fDjdtpwbjNf9A+B6waIkyE1RDzUqkg=",
            "XG/GqfSdqPkv+F0Wp7DYcRWWE/s1rWb+zX+fd8jwLDk=",
            "q30wc9aOD2Q0iARVIpKCd0Yfv9InJKmLOHy9uqrbLUI=",
        ]
        .map(|p| Pin::from_base64(p).expect("a pin"))
        .to_vec();
        (chain, pins)
    }

    #[test]
    fn pins_are_placed_on_the_verified_path_or_are_backups() {
        let (chain, path) = fixture();
        assert_eq!(
            classify(&path[0], &chain, &path),
            PinRole::Matches {
                position: 0,
                subject: "CN=dot.test".into()
            }
        );
        assert!(matches!(
            classify(&path[1], &chain, &path),
            PinRole::Matches { position: 1, .. }
        ));
        assert_eq!(classify(&path[2], &chain, &path), PinRole::MatchesAnchor);
        let other = Pin::of_spki(b"the next key");
        assert_eq!(classify(&other, &chain, &path), PinRole::Backup);
        // A certificate sent but not on the verified path never matches.
        assert_eq!(classify(&path[1], &chain, &path[..1]), PinRole::Backup);
    }

    #[test]
    fn rfc7469_4_3_warnings_without_a_backup_or_with_only_the_leaf() {
        let [leaf, inter, anchor, backup] =
            [b"leaf", b"intr", b"root", b"next"].map(|k| Pin::of_spki(k));
        let path = [leaf, inter, anchor];
        let warns = |pins: &[Pin]| chain_warnings(&PinSet::new(pins.to_vec()), &path);
        use ChainWarning::{LeafOnly, NoBackup};
        assert_eq!(warns(&[leaf, backup]), [LeafOnly]);
        assert_eq!(warns(&[inter, anchor]), [NoBackup]);
        assert_eq!(warns(&[leaf]), [NoBackup, LeafOnly]);
        assert_eq!(warns(&[inter, backup, anchor]), []);
        // Refused outright: nothing to warn about a set that matches nothing.
        assert_eq!(warns(&[backup]), []);
        assert_eq!(warns(&[]), []);
    }
}
