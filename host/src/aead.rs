//! The component's record encryption, done natively (the WIT `aead`
//! interface): ring with the CPU's AES-NI, CLMUL and SIMD, which the
//! component's WebAssembly lacks.
//!
//! A [`Key`] is one direction of one TLS connection. The component derives
//! it (the whole key schedule stays in the sandbox) and hands it over when
//! rustls installs new traffic keys; the host keeps it in the instance's
//! resource table until the component drops the handle. What is sealed or
//! opened is not read, kept or logged here.

use ring::aead::{self, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// A key, ready to seal or open records.
pub struct Key(LessSafeKey);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_tuple("Key").field(self.0.algorithm()).finish()
    }
}

/// Why a call was refused: a component that asks for either is broken
/// (rustls never does), and the caller traps it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Misuse {
    /// A key of the wrong length for its algorithm.
    #[error("aead key of {got} bytes, {algorithm:?} takes {want}")]
    KeyLength {
        /// The algorithm asked for.
        algorithm: &'static aead::Algorithm,
        /// The length given.
        got: usize,
        /// The algorithm's key length.
        want: usize,
    },
    /// A nonce that is not 12 bytes.
    #[error("aead nonce of {0} bytes, 12 expected")]
    NonceLength(usize),
    /// Sealing failed (ring refuses only inputs past the algorithm's
    /// maximum length, far beyond a TLS record).
    #[error("aead seal failed")]
    Seal,
}

impl Key {
    /// `secret` as a key of `algorithm`.
    pub fn new(algorithm: &'static aead::Algorithm, secret: &[u8]) -> Result<Self, Misuse> {
        UnboundKey::new(algorithm, secret)
            .map(|key| Self(LessSafeKey::new(key)))
            .map_err(|_| Misuse::KeyLength {
                algorithm,
                got: secret.len(),
                want: algorithm.key_len(),
            })
    }

    /// `plaintext` encrypted, the tag appended.
    pub fn seal(&self, nonce: &[u8], aad: &[u8], plaintext: Vec<u8>) -> Result<Vec<u8>, Misuse> {
        let mut buffer = plaintext;
        buffer.reserve_exact(self.0.algorithm().tag_len());
        self.0
            .seal_in_place_append_tag(nonce_of(nonce)?, Aad::from(aad), &mut buffer)
            .map_err(|_| Misuse::Seal)?;
        Ok(buffer)
    }

    /// `sealed` decrypted, or `Ok(None)` when its tag does not verify.
    pub fn open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, Misuse> {
        let nonce = nonce_of(nonce)?;
        let mut buffer = sealed;
        let Ok(plain) = self.0.open_in_place(nonce, Aad::from(aad), &mut buffer) else {
            return Ok(None);
        };
        let len = plain.len();
        buffer.truncate(len);
        Ok(Some(buffer))
    }
}

fn nonce_of(bytes: &[u8]) -> Result<Nonce, Misuse> {
    let array: [u8; NONCE_LEN] = bytes
        .try_into()
        .map_err(|_| Misuse::NonceLength(bytes.len()))?;
    Ok(Nonce::assume_unique_for_key(array))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8439 §2.8.2, the AEAD_CHACHA20_POLY1305 test vector.
    #[test]
    fn chacha20_poly1305_matches_rfc8439() {
        let key = Key::new(
            &aead::CHACHA20_POLY1305,
            &hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"),
        )
        .unwrap();
        let nonce = hex("070000004041424344454647");
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        let sealed = key.seal(&nonce, &aad, plaintext.clone()).unwrap();
        let expected_ciphertext = hex(
            "d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6
             3dbea45e8ca9671282fafb69da92728b 1a71de0a9e060b2905d6a5b67ecd3b36
             92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc
             3ff4def08e4b7a9de576d26586cec64b 6116",
        );
        let expected_tag = hex("1ae10b594f09e26a7e902ecbd0600691");
        assert_eq!(sealed[..plaintext.len()], expected_ciphertext[..]);
        assert_eq!(sealed[plaintext.len()..], expected_tag[..]);
        assert_eq!(key.open(&nonce, &aad, sealed).unwrap(), Some(plaintext));
    }

    /// The GCM test case 4 of McGrew and Viega (AES-128, with AAD), also
    /// NIST's gcmEncryptExtIV128 vectors.
    #[test]
    fn aes_128_gcm_matches_the_gcm_spec() {
        let key = Key::new(&aead::AES_128_GCM, &hex("feffe9928665731c6d6a8f9467308308")).unwrap();
        let nonce = hex("cafebabefacedbaddecaf888");
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plaintext = hex(
            "d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72
             1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b39",
        );
        let sealed = key.seal(&nonce, &aad, plaintext.clone()).unwrap();
        let expected = hex(
            "42831ec2217774244b7221b784d0d49c e3aa212f2c02a4e035c17e2329aca12e
             21d514b25466931c7d8f6a5aac84aa05 1ba30b396a0aac973d58e091
             5bc94fbc3221a5db94fae95ae7121a47",
        );
        assert_eq!(sealed, expected);
        assert_eq!(key.open(&nonce, &aad, sealed).unwrap(), Some(plaintext));
    }

    #[test]
    fn aes_256_gcm_round_trips_and_rejects_other_aad() {
        let key = Key::new(&aead::AES_256_GCM, &[7; 32]).unwrap();
        let nonce = [1; 12];
        let sealed = key.seal(&nonce, b"header", b"answer".to_vec()).unwrap();
        assert_eq!(sealed.len(), 6 + 16);
        assert_eq!(key.open(&nonce, b"other", sealed.clone()).unwrap(), None);
        assert_eq!(
            key.open(&nonce, b"header", sealed).unwrap(),
            Some(b"answer".to_vec())
        );
    }

    /// A flipped bit anywhere, or a record cut short, is refused, never
    /// an error that would trap the component: forged records come from
    /// the network.
    #[test]
    fn damaged_records_are_refused() {
        let key = Key::new(&aead::CHACHA20_POLY1305, &[9; 32]).unwrap();
        let nonce = [2; 12];
        let sealed = key.seal(&nonce, b"aad", b"plaintext".to_vec()).unwrap();
        for i in 0..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[i] ^= 0x01;
            assert_eq!(
                key.open(&nonce, b"aad", damaged).unwrap(),
                None,
                "bit flipped at {i}"
            );
        }
        for len in 0..sealed.len() {
            assert_eq!(
                key.open(&nonce, b"aad", sealed[..len].to_vec()).unwrap(),
                None
            );
        }
        let other_nonce = [3; 12];
        assert_eq!(key.open(&other_nonce, b"aad", sealed).unwrap(), None);
    }

    #[test]
    fn misuse_is_an_error() {
        assert_eq!(
            Key::new(&aead::AES_128_GCM, &[0; 32]).unwrap_err(),
            Misuse::KeyLength {
                algorithm: &aead::AES_128_GCM,
                got: 32,
                want: 16
            }
        );
        let key = Key::new(&aead::AES_128_GCM, &[0; 16]).unwrap();
        assert_eq!(
            key.seal(&[0; 8], b"", vec![]).unwrap_err(),
            Misuse::NonceLength(8)
        );
        assert_eq!(
            key.open(&[0; 13], b"", vec![0; 16]).unwrap_err(),
            Misuse::NonceLength(13)
        );
        assert!(
            !format!("{key:?}").contains('0'),
            "Debug shows no secret: {key:?}"
        );
    }
}
