//! The TLS record protection (TLS 1.3: RFC 8446 §5.2; TLS 1.2: RFC 5246
//! §6.2.3.3 with RFC 5288's AES-GCM and RFC 7905's ChaCha20-Poly1305) with
//! the AEAD itself done elsewhere: in the component, by the host (the WIT
//! `aead` interface).
//!
//! WebAssembly has no AES instructions, and ring uses no SIMD there: its
//! portable ChaCha20 and Poly1305 were 45% of the component's instructions
//! per query (`make profile`). The host runs the same ring natively with the
//! CPU's AES-NI, CLMUL and SIMD. Everything else stays in the sandbox and in
//! rustls: the handshake, certificate and pin checks, the key schedule, the
//! sequence numbers, padding and content types. A [`Cipher`] sees one
//! record at a time: a key, a nonce, the record header and the bytes.
//!
//! Every AEAD suite of ring's provider is offloaded ([`offload`]), TLS 1.3
//! and TLS 1.2 alike; those are all the suites it has.

use std::marker::PhantomData;

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, KeyBlockShape, MessageDecrypter,
    MessageEncrypter, NONCE_LEN, Nonce, OutboundOpaqueMessage, OutboundPlainMessage,
    PrefixedPayload, Tls12AeadAlgorithm, Tls13AeadAlgorithm, UnsupportedOperationError,
    make_tls12_aad, make_tls13_aad,
};
use rustls::{
    ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, SupportedCipherSuite,
    Tls12CipherSuite, Tls13CipherSuite,
};

/// The AEADs of the TLS 1.3 suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// AES-128-GCM: 16-byte keys.
    Aes128Gcm,
    /// AES-256-GCM: 32-byte keys.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439): 32-byte keys.
    Chacha20Poly1305,
}

impl Algorithm {
    /// The key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm | Self::Chacha20Poly1305 => 32,
        }
    }
}

/// Every algorithm here has a 16-byte tag.
pub const TAG_LEN: usize = 16;

/// Who seals and opens.
pub trait Cipher: 'static {
    /// A key of one direction of one connection.
    type Key: Send + Sync;

    /// `secret` (exactly `algorithm.key_len()` bytes) as a key.
    fn key(algorithm: Algorithm, secret: &[u8]) -> Self::Key;

    /// `plaintext` encrypted, the tag appended.
    fn seal(key: &Self::Key, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8>;

    /// `sealed` decrypted, or `None` when its tag does not verify.
    fn open(key: &Self::Key, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8])
    -> Option<Vec<u8>>;
}

/// `base` (one of ring's suites, either version) with its records
/// protected by `C`, or `None` for a suite with another AEAD. The suite is
/// leaked to be `'static`, as rustls wants: make each once.
pub fn offload<C: Cipher>(base: SupportedCipherSuite) -> Option<SupportedCipherSuite> {
    Some(match base {
        SupportedCipherSuite::Tls13(_) => {
            SupportedCipherSuite::Tls13(Box::leak(Box::new(offloaded::<C>(base)?)))
        }
        SupportedCipherSuite::Tls12(_) => {
            SupportedCipherSuite::Tls12(Box::leak(Box::new(offloaded_tls12::<C>(base)?)))
        }
    })
}

/// `base` (one of ring's TLS 1.3 suites) with its records protected by `C`;
/// `None` for a TLS 1.2 suite or one with another AEAD.
fn offloaded<C: Cipher>(base: SupportedCipherSuite) -> Option<Tls13CipherSuite> {
    let SupportedCipherSuite::Tls13(base) = base else {
        return None;
    };
    use rustls::CipherSuite as S;
    let aead_alg: &'static dyn Tls13AeadAlgorithm = match base.common.suite {
        S::TLS13_AES_128_GCM_SHA256 => &Offloaded::<C>(Algorithm::Aes128Gcm, PhantomData),
        S::TLS13_AES_256_GCM_SHA384 => &Offloaded::<C>(Algorithm::Aes256Gcm, PhantomData),
        S::TLS13_CHACHA20_POLY1305_SHA256 => {
            &Offloaded::<C>(Algorithm::Chacha20Poly1305, PhantomData)
        }
        _ => return None,
    };
    Some(Tls13CipherSuite {
        common: rustls::crypto::CipherSuiteCommon {
            suite: base.common.suite,
            hash_provider: base.common.hash_provider,
            confidentiality_limit: base.common.confidentiality_limit,
        },
        hkdf_provider: base.hkdf_provider,
        aead_alg,
        // Not a QUIC client.
        quic: None,
    })
}

/// A TLS 1.3 AEAD done by `C`.
struct Offloaded<C>(Algorithm, PhantomData<fn() -> C>);

impl<C: Cipher> Tls13AeadAlgorithm for Offloaded<C> {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Sealer::<C> {
            key: C::key(self.0, key.as_ref()),
            iv,
            plaintext: Vec::new(),
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Opener::<C> {
            key: C::key(self.0, key.as_ref()),
            iv,
        })
    }

    fn key_len(&self) -> usize {
        self.0.key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(match self.0 {
            Algorithm::Aes128Gcm => ConnectionTrafficSecrets::Aes128Gcm { key, iv },
            Algorithm::Aes256Gcm => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
            Algorithm::Chacha20Poly1305 => ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
        })
    }
}

struct Sealer<C: Cipher> {
    key: C::Key,
    iv: Iv,
    /// The inner plaintext being built (payload and content type), kept
    /// for the next record.
    plaintext: Vec<u8>,
}

impl<C: Cipher> MessageEncrypter for Sealer<C> {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let nonce = Nonce::new(&self.iv, seq).0;
        let aad = make_tls13_aad(total_len);
        self.plaintext.clear();
        msg.payload.copy_to_vec(&mut self.plaintext);
        // TLSInnerPlaintext: the content, then its real type, no padding.
        self.plaintext.push(u8::from(msg.typ));
        let sealed = C::seal(&self.key, &nonce, &aad, &self.plaintext);
        if sealed.len() != total_len {
            return Err(Error::EncryptError);
        }
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_slice(&sealed);
        // Every TLS 1.3 record says TLS 1.2 on the wire (RFC 8446 §5.1).
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

struct Opener<C: Cipher> {
    key: C::Key,
    iv: Iv,
}

impl<C: Cipher> MessageDecrypter for Opener<C> {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let nonce = Nonce::new(&self.iv, seq).0;
        let aad = make_tls13_aad(payload.len());
        let plain = C::open(&self.key, &nonce, &aad, payload).ok_or(Error::DecryptError)?;
        if plain.len() != payload.len() - TAG_LEN {
            return Err(Error::DecryptError);
        }
        payload[..plain.len()].copy_from_slice(&plain);
        payload.truncate(plain.len());
        msg.into_tls13_unpadded_message()
    }
}

/// `base` (one of ring's TLS 1.2 suites) with its records protected by `C`;
/// `None` for a TLS 1.3 suite or one with another AEAD.
fn offloaded_tls12<C: Cipher>(base: SupportedCipherSuite) -> Option<Tls12CipherSuite> {
    let SupportedCipherSuite::Tls12(base) = base else {
        return None;
    };
    use rustls::CipherSuite as S;
    let aead_alg: &'static dyn Tls12AeadAlgorithm = match base.common.suite {
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => {
            &Gcm12::<C>(Algorithm::Aes128Gcm, PhantomData)
        }
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => {
            &Gcm12::<C>(Algorithm::Aes256Gcm, PhantomData)
        }
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => &Chacha12::<C>(PhantomData),
        _ => return None,
    };
    Some(Tls12CipherSuite {
        common: rustls::crypto::CipherSuiteCommon {
            suite: base.common.suite,
            hash_provider: base.common.hash_provider,
            confidentiality_limit: base.common.confidentiality_limit,
        },
        prf_provider: base.prf_provider,
        kx: base.kx,
        sign: base.sign,
        aead_alg,
    })
}

/// The largest TLS plaintext fragment (RFC 5246 §6.2.1).
const MAX_FRAGMENT_LEN: usize = 16_384;

/// TLS 1.2 AES-GCM (RFC 5288): a 4-byte salt from the key block, and an
/// 8-byte explicit nonce in front of each record; as rustls does, the
/// explicit part starts from the key block's and is XORed with the sequence
/// number, so it never repeats under one key.
struct Gcm12<C>(Algorithm, PhantomData<fn() -> C>);

/// The explicit nonce in front of each TLS 1.2 AES-GCM record.
const GCM_EXPLICIT_NONCE_LEN: usize = 8;

/// The salt and the first explicit nonce as one 12-byte IV.
fn gcm_iv(salt: &[u8], explicit: &[u8]) -> Iv {
    let mut iv = [0; NONCE_LEN];
    iv[..4].copy_from_slice(salt);
    iv[4..].copy_from_slice(explicit);
    Iv::new(iv)
}

impl<C: Cipher> Tls12AeadAlgorithm for Gcm12<C> {
    fn encrypter(&self, key: AeadKey, salt: &[u8], explicit: &[u8]) -> Box<dyn MessageEncrypter> {
        Box::new(Sealer12::<C> {
            key: C::key(self.0, key.as_ref()),
            iv: gcm_iv(salt, explicit),
            explicit_nonce: true,
            plaintext: Vec::new(),
        })
    }

    fn decrypter(&self, key: AeadKey, salt: &[u8]) -> Box<dyn MessageDecrypter> {
        let mut fixed = [0; 4];
        fixed.copy_from_slice(salt);
        Box::new(Opener12::<C> {
            key: C::key(self.0, key.as_ref()),
            nonce: Nonce12::Salt(fixed),
        })
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: self.0.key_len(),
            fixed_iv_len: 4,
            explicit_nonce_len: GCM_EXPLICIT_NONCE_LEN,
        }
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        salt: &[u8],
        explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        let iv = gcm_iv(salt, explicit);
        Ok(match self.0 {
            Algorithm::Aes128Gcm => ConnectionTrafficSecrets::Aes128Gcm { key, iv },
            _ => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
        })
    }
}

/// TLS 1.2 ChaCha20-Poly1305 (RFC 7905): the 12-byte IV from the key block
/// XORed with the sequence number, as in TLS 1.3; no explicit nonce.
struct Chacha12<C>(PhantomData<fn() -> C>);

impl<C: Cipher> Tls12AeadAlgorithm for Chacha12<C> {
    fn encrypter(&self, key: AeadKey, iv: &[u8], _: &[u8]) -> Box<dyn MessageEncrypter> {
        Box::new(Sealer12::<C> {
            key: C::key(Algorithm::Chacha20Poly1305, key.as_ref()),
            iv: Iv::copy(iv),
            explicit_nonce: false,
            plaintext: Vec::new(),
        })
    }

    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        Box::new(Opener12::<C> {
            key: C::key(Algorithm::Chacha20Poly1305, key.as_ref()),
            nonce: Nonce12::Iv(Iv::copy(iv)),
        })
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: Algorithm::Chacha20Poly1305.key_len(),
            fixed_iv_len: NONCE_LEN,
            explicit_nonce_len: 0,
        }
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: &[u8],
        _: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 {
            key,
            iv: Iv::copy(iv),
        })
    }
}

struct Sealer12<C: Cipher> {
    key: C::Key,
    iv: Iv,
    /// AES-GCM: the record starts with the nonce's last 8 bytes.
    explicit_nonce: bool,
    /// The plaintext gathered for the host, kept for the next record.
    plaintext: Vec<u8>,
}

impl<C: Cipher> MessageEncrypter for Sealer12<C> {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let nonce = Nonce::new(&self.iv, seq).0;
        let aad = make_tls12_aad(seq, msg.typ, msg.version, msg.payload.len());
        self.plaintext.clear();
        msg.payload.copy_to_vec(&mut self.plaintext);
        let sealed = C::seal(&self.key, &nonce, &aad, &self.plaintext);
        let mut payload = PrefixedPayload::with_capacity(total_len);
        if self.explicit_nonce {
            payload.extend_from_slice(&nonce[NONCE_LEN - GCM_EXPLICIT_NONCE_LEN..]);
        }
        payload.extend_from_slice(&sealed);
        if payload.as_ref().len() != total_len {
            return Err(Error::EncryptError);
        }
        Ok(OutboundOpaqueMessage::new(msg.typ, msg.version, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        let explicit = if self.explicit_nonce {
            GCM_EXPLICIT_NONCE_LEN
        } else {
            0
        };
        explicit + payload_len + TAG_LEN
    }
}

/// Where a TLS 1.2 record's nonce comes from.
enum Nonce12 {
    /// AES-GCM: the salt, then the record's explicit nonce.
    Salt([u8; 4]),
    /// ChaCha20-Poly1305: the IV XORed with the sequence number.
    Iv(Iv),
}

struct Opener12<C: Cipher> {
    key: C::Key,
    nonce: Nonce12,
}

impl<C: Cipher> MessageDecrypter for Opener12<C> {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        let (nonce, start) = match &self.nonce {
            Nonce12::Salt(salt) => {
                if payload.len() < GCM_EXPLICIT_NONCE_LEN + TAG_LEN {
                    return Err(Error::DecryptError);
                }
                let mut nonce = [0; NONCE_LEN];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(&payload[..GCM_EXPLICIT_NONCE_LEN]);
                (nonce, GCM_EXPLICIT_NONCE_LEN)
            }
            Nonce12::Iv(iv) => {
                if payload.len() < TAG_LEN {
                    return Err(Error::DecryptError);
                }
                (Nonce::new(iv, seq).0, 0)
            }
        };
        let plain_len = payload.len() - start - TAG_LEN;
        let aad = make_tls12_aad(seq, msg.typ, msg.version, plain_len);
        let plain =
            C::open(&self.key, &nonce, &aad, &payload[start..]).ok_or(Error::DecryptError)?;
        if plain.len() != plain_len {
            return Err(Error::DecryptError);
        }
        if plain_len > MAX_FRAGMENT_LEN {
            return Err(Error::PeerSentOversizedRecord);
        }
        payload[..plain_len].copy_from_slice(&plain);
        payload.truncate(plain_len);
        Ok(msg.into_plain_message())
    }
}

/// ring in-process: the computation the host's `aead` interface does
/// (`host/src/aead.rs`), for the native build's tests and the `record` fuzz
/// target. Natively the proxy uses ring's own suites, not these.
#[cfg(not(target_os = "wasi"))]
#[doc(hidden)]
pub mod native {
    use ring::aead::{self, Aad, LessSafeKey, UnboundKey};

    use super::{Algorithm, Cipher, NONCE_LEN};

    /// [`Cipher`] by ring, in this process.
    pub struct Ring;

    impl Cipher for Ring {
        type Key = LessSafeKey;

        /// Panics unless `secret` has the algorithm's key length, which
        /// rustls's key schedule guarantees.
        fn key(algorithm: Algorithm, secret: &[u8]) -> LessSafeKey {
            let algorithm = match algorithm {
                Algorithm::Aes128Gcm => &aead::AES_128_GCM,
                Algorithm::Aes256Gcm => &aead::AES_256_GCM,
                Algorithm::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
            };
            LessSafeKey::new(
                UnboundKey::new(algorithm, secret).expect("a key of the AEAD's length"),
            )
        }

        fn seal(
            key: &LessSafeKey,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            plaintext: &[u8],
        ) -> Vec<u8> {
            let mut buffer = plaintext.to_vec();
            let nonce = aead::Nonce::assume_unique_for_key(*nonce);
            key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut buffer)
                .expect("a record is far below the AEAD's limit");
            buffer
        }

        fn open(
            key: &LessSafeKey,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            sealed: &[u8],
        ) -> Option<Vec<u8>> {
            let mut buffer = sealed.to_vec();
            let nonce = aead::Nonce::assume_unique_for_key(*nonce);
            let len = key
                .open_in_place(nonce, Aad::from(aad), &mut buffer)
                .ok()?
                .len();
            buffer.truncate(len);
            Some(buffer)
        }
    }
}

/// The component's cipher: the host's `aead` interface.
#[cfg(target_os = "wasi")]
pub mod host {
    use super::{Algorithm, Cipher, NONCE_LEN};

    mod bindings {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        wit_bindgen::generate!({
            path: "../wit",
            world: "host-crypto",
            features: ["clocks-timezone"],
        });
    }

    use bindings::dnsproxy::proxy::aead;

    /// A key held by the host, dropped there with its handle.
    pub struct HostKey(aead::Key);

    /// Records sealed and opened by the host.
    pub struct Host;

    impl Cipher for Host {
        type Key = HostKey;

        fn key(algorithm: Algorithm, secret: &[u8]) -> HostKey {
            let algorithm = match algorithm {
                Algorithm::Aes128Gcm => aead::Algorithm::Aes128Gcm,
                Algorithm::Aes256Gcm => aead::Algorithm::Aes256Gcm,
                Algorithm::Chacha20Poly1305 => aead::Algorithm::Chacha20Poly1305,
            };
            HostKey(aead::Key::new(algorithm, secret))
        }

        fn seal(key: &HostKey, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
            key.0.seal(nonce, aad, plaintext)
        }

        fn open(
            key: &HostKey,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            sealed: &[u8],
        ) -> Option<Vec<u8>> {
            key.0.open(nonce, aad, sealed)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

    use super::native::Ring;
    use super::*;

    /// A provider whose only suite is `suite`, offloaded to `Ring`.
    fn offloaded_provider(suite: SupportedCipherSuite) -> CryptoProvider {
        CryptoProvider {
            cipher_suites: vec![offload::<Ring>(suite).expect("an offloaded suite")],
            ..rustls::crypto::ring::default_provider()
        }
    }

    /// The fixture resolver's identity: `dot.test`, leaf and intermediate.
    fn server_identity() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let chain = include_str!("../../../fixtures/pki/dot-test.chain.pem");
        let key = include_str!("../../../fixtures/pki/dot-test.key");
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (
            chain,
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
    }

    fn root_certificate() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(include_str!("../../../fixtures/pki/root.pem").as_bytes())
            .unwrap()
    }

    /// Moves every byte each side wants to send to the other until both
    /// are quiet; returns the plaintext the server and the client received.
    fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> (Vec<u8>, Vec<u8>) {
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        for _ in 0..64 {
            let moved_up = carry(client, server, &mut to_server);
            let moved_down = carry(server, client, &mut to_client);
            if !moved_up && !moved_down {
                return (to_server, to_client);
            }
        }
        panic!("the connection did not settle");
    }

    /// Moves what `from` wants to send into `to`, and the plaintext `to`
    /// then has into `received`; whether any byte moved.
    fn carry<A, B>(
        from: &mut rustls::ConnectionCommon<A>,
        to: &mut rustls::ConnectionCommon<B>,
        received: &mut Vec<u8>,
    ) -> bool {
        let mut buffer = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buffer).unwrap();
        }
        // read_tls takes an empty read for the peer's close, and reads at
        // most one buffer's worth at a time.
        let mut rest = &buffer[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets().unwrap();
            drain(to.reader(), received);
        }
        !buffer.is_empty()
    }

    fn drain(mut reader: rustls::Reader<'_>, into: &mut Vec<u8>) {
        let mut chunk = [0; 4096];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => into.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// An offloaded client and a stock rustls server agree on every byte,
    /// both ways, for each suite of each version (the fixture's key is
    /// ECDSA): the record layer is the RFCs', not merely self-consistent.
    /// Several records each way, the second larger than one record (16
    /// KiB), so sequence numbers, explicit nonces and fragmentation are
    /// exercised.
    #[test]
    fn offloaded_suites_interoperate_with_stock_rustls() {
        use rustls::crypto::ring::cipher_suite as ring_suites;
        for suite in [
            ring_suites::TLS13_AES_128_GCM_SHA256,
            ring_suites::TLS13_AES_256_GCM_SHA384,
            ring_suites::TLS13_CHACHA20_POLY1305_SHA256,
            ring_suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ring_suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ring_suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ] {
            let version = suite.version();
            let (chain, key) = server_identity();
            let server = ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root_certificate()).unwrap();
            let client = ClientConfig::builder_with_provider(Arc::new(offloaded_provider(suite)))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from("dot.test").unwrap();
            let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
            let mut server = ServerConnection::new(Arc::new(server)).unwrap();
            pump(&mut client, &mut server);
            assert_eq!(client.negotiated_cipher_suite(), Some(suite));
            assert_eq!(client.protocol_version(), Some(version.version));
            for size in [12usize, 40_000, 512] {
                let query: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                client.writer().write_all(&query).unwrap();
                let (got, _) = pump(&mut client, &mut server);
                assert_eq!(got, query, "{suite:?}: client to server, {size} bytes");

                let answer: Vec<u8> = query.iter().map(|b| b ^ 0x5a).collect();
                server.writer().write_all(&answer).unwrap();
                let (_, got) = pump(&mut client, &mut server);
                assert_eq!(got, answer, "{suite:?}: server to client, {size} bytes");
            }
        }
    }

    /// One record sealed by `sealer` opens with `opener` under its sequence
    /// number, and is refused under another, with any byte changed, or one
    /// byte shorter than the smallest record (`overhead`: explicit nonce
    /// and tag, and TLS 1.3's content type).
    fn assert_damage_is_refused(
        mut sealer: Box<dyn MessageEncrypter>,
        mut opener: Box<dyn MessageDecrypter>,
        overhead: usize,
    ) {
        use rustls::crypto::cipher::OutboundChunks;
        let message = OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(b"an answer"),
        };
        let record = sealer.encrypt(message, 7).unwrap().encode();
        assert_eq!(record.len(), 5 + 9 + overhead);
        let mut open = |mut record: Vec<u8>, seq| {
            let message = InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                &mut record[5..],
            );
            opener
                .decrypt(message, seq)
                .map(|plain| (plain.typ, plain.payload.to_vec()))
        };
        assert_eq!(
            open(record.clone(), 7).unwrap(),
            (ContentType::ApplicationData, b"an answer".to_vec())
        );
        assert_eq!(open(record.clone(), 8), Err(Error::DecryptError));
        for i in 5..record.len() {
            let mut damaged = record.clone();
            damaged[i] ^= 0x80;
            assert_eq!(open(damaged, 7), Err(Error::DecryptError), "byte {i}");
        }
        let mut short = record.clone();
        short.truncate(5 + overhead - 1);
        assert_eq!(open(short, 7), Err(Error::DecryptError));
    }

    #[test]
    fn a_damaged_record_is_a_decrypt_error() {
        let suite = rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256;
        let aead = offloaded::<Ring>(suite).unwrap().aead_alg;
        let key = || AeadKey::from([3; 32]);
        assert_damage_is_refused(
            aead.encrypter(key(), Iv::new([4; NONCE_LEN])),
            aead.decrypter(key(), Iv::new([4; NONCE_LEN])),
            1 + TAG_LEN,
        );
    }

    /// TLS 1.2: the explicit nonce (AES-GCM) and the sequence number in the
    /// additional data are checked too.
    #[test]
    fn a_damaged_tls12_record_is_a_decrypt_error() {
        use rustls::crypto::ring::cipher_suite as ring_suites;
        for (suite, iv_len, explicit) in [
            (ring_suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, 4, 8),
            (
                ring_suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                12,
                0,
            ),
        ] {
            let aead = offloaded_tls12::<Ring>(suite).unwrap().aead_alg;
            let shape = aead.key_block_shape();
            assert_eq!(
                (
                    shape.enc_key_len,
                    shape.fixed_iv_len,
                    shape.explicit_nonce_len
                ),
                (32, iv_len, explicit),
                "{suite:?}"
            );
            let key = || AeadKey::from([3; 32]);
            assert_damage_is_refused(
                aead.encrypter(key(), &[4; 12][..iv_len], &[5; 8][..explicit]),
                aead.decrypter(key(), &[4; 12][..iv_len]),
                explicit + TAG_LEN,
            );
        }
    }

    /// Every suite of ring's provider is offloaded, by the function of its
    /// version: nothing is left to the sandbox's software AES.
    #[test]
    fn every_suite_is_offloaded() {
        for suite in rustls::crypto::ring::default_provider().cipher_suites {
            let tls13 = suite.version() == &rustls::version::TLS13;
            assert_eq!(offloaded::<Ring>(suite).is_some(), tls13, "{suite:?}");
            assert_eq!(
                offloaded_tls12::<Ring>(suite).is_some(),
                !tls13,
                "{suite:?}"
            );
            let offload = offload::<Ring>(suite).expect("offloaded");
            assert_eq!(
                (offload.suite(), offload.version()),
                (suite.suite(), suite.version())
            );
        }
    }
}
