//! `record`: the TLS record protection the component hands to the host
//! (`shell::record`, TLS 1.3 and TLS 1.2), with ring in-process as the
//! cipher, against rustls's own ring suites.
//!
//! Input: `[suite(1), seq(8), cut(2), bytes]`. `suite` picks one of ring's
//! suites with a 32-byte key (AES-256-GCM and ChaCha20-Poly1305, both
//! versions), `seq` the record's sequence number; the key, IV and explicit
//! nonce are fixed.
//!
//! - **Forged records.** `bytes` as a received record's payload: refused
//!   with `DecryptError` (its tag cannot verify) or, past the largest
//!   record, `PeerSentOversizedRecord`; never a panic, never plaintext. The
//!   stock suite refuses it too.
//! - **Sealed records.** `bytes[..cut]` (at most one record's 16 KiB) sealed
//!   under `seq` is byte for byte what the stock suite seals, opens to the
//!   same content type and plaintext, and is refused under `seq + 1` and with
//!   the byte at `cut` (modulo its length) changed.

use std::sync::LazyLock;

use dnsproxy_core::shell::record::{self, native::Ring};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage,
};
use rustls::{CipherSuite, ContentType, Error, ProtocolVersion, SupportedCipherSuite};

/// The largest plaintext of one record (RFC 8446 §5.1).
const MAX_FRAGMENT_LEN: usize = 16_384;

/// ring's suites whose key is 32 bytes (rustls makes a shorter
/// [`AeadKey`] only inside its key schedule).
const SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Each of [`SUITES`], stock and offloaded, made once: [`record::offload`]
/// leaks the suite it makes, as rustls wants it `'static`.
static SUITE_PAIRS: LazyLock<Vec<(SupportedCipherSuite, SupportedCipherSuite)>> =
    LazyLock::new(|| {
        SUITES
            .iter()
            .map(|id| {
                let stock = rustls::crypto::ring::default_provider()
                    .cipher_suites
                    .into_iter()
                    .find(|s| s.suite() == *id)
                    .expect("ring has the suite");
                (
                    stock,
                    record::offload::<Ring>(stock).expect("the suite is offloaded"),
                )
            })
            .collect()
    });

/// A sealer and an opener of `suite` with the fixed key material.
fn pair(suite: SupportedCipherSuite) -> (Box<dyn MessageEncrypter>, Box<dyn MessageDecrypter>) {
    let key = || AeadKey::from([3; 32]);
    let iv = [4; 12];
    match suite {
        SupportedCipherSuite::Tls13(s) => (
            s.aead_alg.encrypter(key(), Iv::new(iv)),
            s.aead_alg.decrypter(key(), Iv::new(iv)),
        ),
        SupportedCipherSuite::Tls12(s) => {
            let shape = s.aead_alg.key_block_shape();
            let iv = &iv[..shape.fixed_iv_len];
            (
                s.aead_alg
                    .encrypter(key(), iv, &[5; 8][..shape.explicit_nonce_len]),
                s.aead_alg.decrypter(key(), iv),
            )
        }
    }
}

/// `payload` opened as a received record under `seq`: its content type and
/// plaintext.
fn open(
    opener: &mut dyn MessageDecrypter,
    payload: &[u8],
    seq: u64,
) -> Result<(ContentType, Vec<u8>), Error> {
    let mut payload = payload.to_vec();
    let message = InboundOpaqueMessage::new(
        ContentType::ApplicationData,
        ProtocolVersion::TLSv1_2,
        &mut payload,
    );
    opener
        .decrypt(message, seq)
        .map(|plain| (plain.typ, plain.payload.to_vec()))
}

/// Runs one input; panics if an invariant does not hold.
pub fn check(data: &[u8]) {
    let [pick, s0, s1, s2, s3, s4, s5, s6, s7, c0, c1, bytes @ ..] = data else {
        return;
    };
    let id = SUITES[usize::from(*pick) % SUITES.len()];
    let seq = u64::from_be_bytes([*s0, *s1, *s2, *s3, *s4, *s5, *s6, *s7]);
    let cut = usize::from(u16::from_be_bytes([*c0, *c1]));
    let (stock, ours) = SUITE_PAIRS[usize::from(*pick) % SUITES.len()];
    let (mut our_sealer, mut our_opener) = pair(ours);
    let (mut stock_sealer, mut stock_opener) = pair(stock);

    let forged = open(our_opener.as_mut(), bytes, seq);
    assert!(
        matches!(
            forged,
            Err(Error::DecryptError | Error::PeerSentOversizedRecord)
        ),
        "{id:?}: a forged record gave {forged:?}"
    );
    assert!(open(stock_opener.as_mut(), bytes, seq).is_err());

    let plaintext = &bytes[..cut.min(bytes.len()).min(MAX_FRAGMENT_LEN)];
    let seal = |sealer: &mut dyn MessageEncrypter| {
        let message = OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(plaintext),
        };
        sealer
            .encrypt(message, seq)
            .expect("a record within the limit is sealed")
            .encode()
    };
    let sealed = seal(our_sealer.as_mut());
    assert_eq!(
        sealed,
        seal(stock_sealer.as_mut()),
        "{id:?}: not the stock suite's record"
    );
    let payload = &sealed[5..];
    assert_eq!(
        open(our_opener.as_mut(), payload, seq),
        Ok((ContentType::ApplicationData, plaintext.to_vec())),
        "{id:?}: the sealed record does not open"
    );
    assert_eq!(
        open(our_opener.as_mut(), payload, seq.wrapping_add(1)),
        Err(Error::DecryptError),
        "{id:?}: opened under another sequence number"
    );
    let mut damaged = payload.to_vec();
    let at = cut % damaged.len();
    damaged[at] ^= 0x01;
    assert_eq!(
        open(our_opener.as_mut(), &damaged, seq),
        Err(Error::DecryptError),
        "{id:?}: opened with byte {at} changed"
    );
}
