//! Upstream authentication (RFC 7858 §4.2, strict privacy profile of
//! RFC 8310): the chain is verified against the configured roots, the name
//! against `auth_name`, then the SPKI pin set against the *verified* chain.
//! Any failure refuses the upstream; there is no opportunistic or plaintext
//! fallback.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::core::pins::{Pin, PinMismatch, PinSet};
use crate::core::validity;
use crate::shell::config::AuthName;

/// Why an upstream's certificate was refused. Each variant is one of the
/// checks a user can fix in the configuration.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The chain does not lead to a trusted root (unknown issuer, expired,
    /// bad signature, wrong key usage): the CA check.
    #[error("CA check failed: {}", Explain(.0))]
    Chain(webpki::Error),
    /// The chain is trusted but not for `auth_name`: the name check.
    #[error("name check failed: the certificate is not valid for {name}{}", Explain(.error))]
    Name {
        /// The name that was expected.
        name: String,
        /// What webpki said.
        error: webpki::Error,
    },
    /// The chain is trusted and named right but carries no pinned key.
    #[error("pin check failed: no configured pin matches a key of the verified chain")]
    Pin(PinMismatch),
}

/// A webpki error in words an operator can act on; variants without a
/// better phrase fall back to webpki's name for them.
struct Explain<'a>(&'a webpki::Error);

impl fmt::Display for Explain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            webpki::Error::UnknownIssuer => {
                f.write_str("the chain does not lead to a trusted root (unknown issuer)")
            }
            webpki::Error::CertExpired { not_after, .. } => {
                write!(
                    f,
                    "the certificate expired at {}",
                    UtcDate(not_after.as_secs())
                )
            }
            webpki::Error::CertNotValidYet { not_before, .. } => write!(
                f,
                "the certificate is not valid before {}",
                UtcDate(not_before.as_secs())
            ),
            webpki::Error::CertNotValidForName(ctx) => {
                // webpki renders each name as `DnsName("x")` or `IpAddress(..)`.
                let names: Vec<&str> = ctx
                    .presented
                    .iter()
                    .map(|n| {
                        n.strip_prefix("DnsName(\"")
                            .and_then(|n| n.strip_suffix("\")"))
                            .unwrap_or(n)
                    })
                    .collect();
                write!(f, ": it names {}", names.join(", "))
            }
            webpki::Error::InvalidSignatureForPublicKey => {
                f.write_str("a signature in the chain does not verify")
            }
            other => write!(f, "{other:?}"),
        }
    }
}

/// Seconds since 1970 as `YYYY-MM-DD hh:mm:ss UTC` (proleptic Gregorian).
struct UtcDate(u64);

impl fmt::Display for UtcDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, secs) = (self.0 / 86_400, self.0 % 86_400);
        // Howard Hinnant's civil_from_days, for days >= 0.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

impl AuthError {
    /// The check that failed: `CA`, `name` or `pin`.
    pub fn check(&self) -> &'static str {
        match self {
            AuthError::Chain(_) => "CA",
            AuthError::Name { .. } => "name",
            AuthError::Pin(_) => "pin",
        }
    }

    /// Finds an [`AuthError`] inside a handshake error, if that is what
    /// failed.
    pub fn from_handshake(err: &std::io::Error) -> Option<&AuthError> {
        let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
        match tls {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                other.0.downcast_ref::<AuthError>()
            }
            _ => None,
        }
    }
}

/// A trust store that is not usable.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The PEM has no certificate.
    #[error("the CA bundle holds no certificate")]
    Empty,
    /// A certificate of the PEM cannot be parsed.
    #[error("a certificate of the CA bundle cannot be parsed: {0}")]
    BadCertificate(String),
    /// rustls refused the protocol versions.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The name rustls verifies the certificate against: a DNS name (also sent
/// as SNI) or, without `tls_hostname`, the address, checked against the IP
/// SANs with no SNI sent.
pub fn server_name(
    auth: &AuthName,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    match auth {
        AuthName::Dns(name) => ServerName::try_from(name.clone()),
        AuthName::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
    }
}

/// The trust anchors of a PEM bundle.
pub fn anchors_from_pem(pem: &str) -> Result<Vec<TrustAnchor<'static>>, TrustError> {
    let mut anchors = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| TrustError::BadCertificate(e.to_string()))?;
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| TrustError::BadCertificate(format!("{e:?}")))?;
        anchors.push(anchor.to_owned());
    }
    if anchors.is_empty() {
        return Err(TrustError::Empty);
    }
    Ok(anchors)
}

/// The notAfter of each root of a PEM bundle, by the pin of its key: trust
/// anchors keep no validity, so the expiry metric takes the anchor's from
/// here. Certificates that do not parse are left out (the bundle was
/// checked by [`anchors_from_pem`]).
pub fn anchor_expiry_from_pem(pem: &str) -> Vec<(Pin, i64)> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|cert| {
            let anchor = webpki::anchor_from_trusted_cert(&cert).ok()?;
            let pin = Pin::of_spki(&webpki::spki_for_anchor(&anchor));
            Some((pin, validity::not_after(&cert)?))
        })
        .collect()
}

/// One certificate of a verified chain: the pin of its key and its
/// notAfter (seconds since 1970) when known.
pub type VerifiedCert = (Pin, Option<i64>);

/// The verifier: chain, then name, then pins over the verified path.
pub struct PinnedVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    pins: PinSet,
    algorithms: WebPkiSupportedAlgorithms,
    /// notAfter of the configured roots, by pin (see
    /// [`anchor_expiry_from_pem`]).
    anchor_expiry: Vec<(Pin, i64)>,
    /// The chain of the last handshake that passed every check, until
    /// [`PinnedVerifier::take_verified`]. One verifier serves one upstream,
    /// whose connects are serialised, so it is that connection's chain.
    last_verified: Mutex<Option<Vec<VerifiedCert>>>,
}

impl fmt::Debug for PinnedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedVerifier")
            .field("anchors", &self.anchors.len())
            .field("pins", &self.pins)
            .finish()
    }
}

/// A certificate chain as verified: each certificate's pin, leaf first,
/// trust anchor last.
pub type VerifiedPins = Vec<Pin>;

impl PinnedVerifier {
    /// A verifier trusting `anchors` (or the built-in web roots if `None`).
    pub fn new(anchors: Option<Vec<TrustAnchor<'static>>>, pins: PinSet) -> Self {
        Self {
            anchors: anchors.unwrap_or_else(|| webpki_roots::TLS_SERVER_ROOTS.to_vec()),
            pins,
            algorithms: provider().signature_verification_algorithms,
            anchor_expiry: Vec::new(),
            last_verified: Mutex::new(None),
        }
    }

    /// Sets the notAfter of the configured roots (see
    /// [`anchor_expiry_from_pem`]).
    pub fn with_anchor_expiry(mut self, expiry: Vec<(Pin, i64)>) -> Self {
        self.anchor_expiry = expiry;
        self
    }

    /// The configured pins.
    pub fn pins(&self) -> &PinSet {
        &self.pins
    }

    /// The chain of the last handshake that passed every check, once.
    pub fn take_verified(&self) -> Option<Vec<VerifiedCert>> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.last_verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Verifies a presented chain and returns the pins of the verified path
    /// (leaf, intermediates used, anchor). Certificates the server sent that
    /// path building did not use are not in the result, so they can never
    /// satisfy a pin.
    pub fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<VerifiedPins, AuthError> {
        let chain = self.verify_path(end_entity, intermediates, server_name, now)?;
        Ok(chain.into_iter().map(|(pin, _)| pin).collect())
    }

    /// [`PinnedVerifier::verify_chain`], with each certificate's notAfter.
    fn verify_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<Vec<VerifiedCert>, AuthError> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(AuthError::Chain)?;
        let path = cert
            .verify_for_usage(
                self.algorithms.all,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(AuthError::Chain)?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|error| AuthError::Name {
                name: server_name.to_str().into_owned(),
                error,
            })?;
        let mut chain = vec![(
            Pin::of_spki(&cert.subject_public_key_info()),
            validity::not_after(end_entity),
        )];
        chain.extend(path.intermediate_certificates().map(|c| {
            (
                Pin::of_spki(&c.subject_public_key_info()),
                validity::not_after(&c.der()),
            )
        }));
        let anchor = Pin::of_spki(&webpki::spki_for_anchor(path.anchor()));
        let expiry = self
            .anchor_expiry
            .iter()
            .find(|(pin, _)| *pin == anchor)
            .map(|&(_, t)| t);
        chain.push((anchor, expiry));
        Ok(chain)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refuse = |e: AuthError| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        };
        let chain = self
            .verify_path(end_entity, intermediates, server_name, now)
            .map_err(refuse)?;
        let pins: VerifiedPins = chain.iter().map(|(pin, _)| *pin).collect();
        self.pins
            .check(&pins)
            .map_err(|e| refuse(AuthError::Pin(e)))?;
        *self
            .last_verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The crypto provider for upstream TLS: ring, and in the component every
/// suite's records sealed and opened by the host, TLS 1.3 and TLS 1.2
/// ([`record`](crate::shell::record)).
pub fn provider() -> CryptoProvider {
    #[cfg(target_os = "wasi")]
    {
        use std::sync::LazyLock;

        use crate::shell::record::{self, host::Host};

        /// ring's suites in ring's order, each offloaded, made once.
        static SUITES: LazyLock<Vec<rustls::SupportedCipherSuite>> = LazyLock::new(|| {
            rustls::crypto::ring::default_provider()
                .cipher_suites
                .into_iter()
                .map(|suite| record::offload::<Host>(suite).unwrap_or(suite))
                .collect()
        });
        CryptoProvider {
            cipher_suites: SUITES.clone(),
            ..rustls::crypto::ring::default_provider()
        }
    }
    #[cfg(not(target_os = "wasi"))]
    rustls::crypto::ring::default_provider()
}

/// The rustls client configuration of one upstream: ring's suites in
/// ring's order (AES-GCM first, fastest with AES-NI), every suite's records
/// protected natively ([`provider`]), so one configuration serves every
/// server. (The component used to offer ChaCha20 alone first, then retry
/// with everything, while TLS 1.2 records were protected in the sandbox
/// with software AES.)
///
/// Session resumption (TLS 1.3 only, RFC 8446 §2.2) is pin-safe: a resumed
/// handshake verifies no certificate, so what makes it safe is where its
/// session came from. Each upstream has its own store, in its
/// configuration and nowhere else (rustls would otherwise key sessions
/// by server name alone, which two addresses of one operator share); a
/// session enters it only through a full handshake with that upstream,
/// which the [`PinnedVerifier`] passed (chain, name, pins) before the
/// server could send a ticket; and the store lives as long as the
/// upstream's configuration: a reload builds new ones, so changing pins or
/// CA empties it. TLS 1.2 resumption (which RFC 7525 §3.4 advises against
/// without forward secrecy) and 0-RTT early data (replayable) stay off.
pub fn upstream_config(verifier: Arc<PinnedVerifier>) -> Result<Arc<ClientConfig>, TrustError> {
    let store: Arc<dyn ClientSessionStore> =
        Arc::new(ClientSessionMemoryCache::new(SESSIONS_PER_UPSTREAM));
    let resumption = Resumption::store(store).tls12_resumption(Tls12Resumption::Disabled);
    config_with(provider(), verifier, resumption)
}

/// Sessions kept per upstream: a TLS 1.3 server sends a few tickets per
/// connection (rustls and OpenSSL two), and each resumption uses one.
pub const SESSIONS_PER_UPSTREAM: usize = 8;

/// A client configuration with `provider`'s suites, `verifier`, no client
/// auth and no session resumption: every handshake verifies a chain (the
/// `spki` tool's).
pub fn client_config(
    provider: CryptoProvider,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, TrustError> {
    config_with(provider, verifier, Resumption::disabled())
}

fn config_with(
    provider: CryptoProvider,
    verifier: Arc<dyn ServerCertVerifier>,
    resumption: Resumption,
) -> Result<Arc<ClientConfig>, TrustError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        // rustls calls any custom verifier "dangerous"; ours verify the
        // chain like the default one and add pins, never weaker.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = resumption;
    // 0-RTT data can be replayed (RFC 8446 §8); rustls's default, kept.
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::UtcDate;

    /// `openssl x509 -noout -enddate` of every fixture certificate:
    /// notAfter=Jan  1 00:00:00 2125 GMT.
    const FIXTURE_NOT_AFTER: i64 = 4_891_363_200;

    #[test]
    fn fixture_certificates_not_after_matches_openssl() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let chain = include_str!("../../../fixtures/pki/dot-test.chain.pem");
        let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(|c| c.expect("fixture PEM"))
            .collect();
        assert!(!certs.is_empty());
        for cert in &certs {
            assert_eq!(
                crate::core::validity::not_after(cert),
                Some(FIXTURE_NOT_AFTER)
            );
        }
        let root = include_str!("../../../fixtures/pki/root.pem");
        let expiry = super::anchor_expiry_from_pem(root);
        assert_eq!(expiry.len(), 1);
        assert_eq!(expiry[0].1, FIXTURE_NOT_AFTER);
        // Keyed by the root's pin as fixtures/pki/pins.txt has it, the pin
        // the verified chain ends with.
        assert_eq!(
            expiry[0].0.to_string(),
            "q30wc9aOD2Q0iARVIpKCd0Yfv9InJKmLOHy9uqrbLUI="
        );
    }

    #[test]
    fn utc_dates_render_like_a_calendar() {
        for (secs, text) in [
            (0, "1970-01-01 00:00:00 UTC"),
            (978_307_200, "2001-01-01 00:00:00 UTC"),
            (951_827_696, "2000-02-29 12:34:56 UTC"),
            (1_795_686_000, "2026-11-26 09:40:00 UTC"),
            (4_891_363_200, "2125-01-01 00:00:00 UTC"),
        ] {
            assert_eq!(UtcDate(secs).to_string(), text, "{secs}");
        }
    }
}
