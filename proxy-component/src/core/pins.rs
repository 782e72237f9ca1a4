//! SPKI pins (RFC 7469 §2.4 form): base64 of the SHA-256 digest of a
//! certificate's DER-encoded SubjectPublicKeyInfo.
//!
//! Matching is over the *verified* chain only: the caller passes the SPKIs of
//! the leaf, the intermediates path building actually used and the trust
//! anchor. Extra certificates a server sends that are not part of that path
//! never match (an attacker can append any certificate it likes).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest::{SHA256, digest};

/// A SHA-256 digest of a SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin([u8; 32]);

/// A pin that is not base64 of exactly 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected base64 of a 32-byte SHA-256 SPKI digest")]
pub struct BadPin;

impl Pin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo (the whole SEQUENCE).
    pub fn of_spki(spki_der: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, spki_der).as_ref());
        Self(out)
    }

    /// A pin from its raw 32-byte digest.
    pub fn from_digest(bytes: &[u8]) -> Result<Self, BadPin> {
        <[u8; 32]>::try_from(bytes).map(Self).map_err(|_| BadPin)
    }

    /// Parses the base64 form users put in `spki =`.
    pub fn from_base64(text: &str) -> Result<Self, BadPin> {
        let bytes = BASE64.decode(text.trim()).map_err(|_| BadPin)?;
        Self::from_digest(&bytes)
    }

    /// The raw digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// The pins configured for one upstream. Empty means CA validation only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinSet(Vec<Pin>);

impl PinSet {
    /// A set from its pins.
    pub fn new(pins: Vec<Pin>) -> Self {
        Self(pins)
    }

    /// True when no pin is configured (the chain check alone decides).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The configured pins.
    pub fn pins(&self) -> &[Pin] {
        &self.0
    }

    /// Checks the pins of a verified chain. An empty set accepts any chain;
    /// otherwise at least one certificate of the chain must carry a pinned
    /// key (RFC 7469 §2.6: any pin of the set may match any key of the chain).
    pub fn check(&self, verified_chain: &[Pin]) -> Result<(), PinMismatch> {
        if self.0.is_empty() || verified_chain.iter().any(|p| self.0.contains(p)) {
            Ok(())
        } else {
            Err(PinMismatch {
                presented: verified_chain.to_vec(),
            })
        }
    }
}

/// How a pin set stands against a verified chain, for pin rotation
/// (RFC 7469 §4.3: keep a backup pin that the current chain does not use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinAssessment {
    /// Per position of the chain (leaf first): whether a configured pin
    /// matched that certificate's key.
    pub matched: Vec<bool>,
    /// No backup: one pin is listed, or every listed pin matches the current
    /// chain, so a rotation of the pinned key(s) locks the upstream out.
    pub no_backup: bool,
    /// Only the leaf's key is pinned: leaf keys rotate more often than
    /// intermediates' (a new certificate may come with a new key).
    pub leaf_only: bool,
}

impl PinAssessment {
    /// Whether either warning holds.
    pub fn warns(&self) -> bool {
        self.no_backup || self.leaf_only
    }
}

/// Assesses `set` against the pins of a verified chain (leaf first). An
/// empty set (CA validation only) warns about nothing.
pub fn assess(set: &PinSet, verified_chain: &[Pin]) -> PinAssessment {
    let matched: Vec<bool> = verified_chain.iter().map(|p| set.0.contains(p)).collect();
    if set.is_empty() {
        return PinAssessment {
            matched,
            ..PinAssessment::default()
        };
    }
    let no_backup = set.0.len() == 1 || set.0.iter().all(|p| verified_chain.contains(p));
    let leaf_only = matched.first() == Some(&true) && !matched.iter().skip(1).any(|&m| m);
    PinAssessment {
        matched,
        no_backup,
        leaf_only,
    }
}

/// No certificate of the verified chain carries a configured pin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no pinned key in the verified chain; it presented {}", DisplayPins(.presented))]
pub struct PinMismatch {
    /// Pins of the verified chain, leaf first, anchor last.
    pub presented: Vec<Pin>,
}

/// Renders pins as the comma-separated list `spki =` takes.
pub struct DisplayPins<'a>(pub &'a [Pin]);

impl fmt::Display for DisplayPins<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pin) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{pin}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(n: u8) -> Pin {
        Pin([n; 32])
    }

    #[test]
    fn empty_set_accepts_any_chain() {
        assert!(PinSet::default().check(&[pin(1)]).is_ok());
    }

    #[test]
    fn one_of_many_pins_matches_any_position() {
        let set = PinSet::new(vec![pin(9), pin(2)]);
        assert!(set.check(&[pin(1), pin(2), pin(3)]).is_ok());
        assert!(set.check(&[pin(2)]).is_ok());
    }

    #[test]
    fn wrong_pins_report_what_the_chain_presented() {
        let set = PinSet::new(vec![pin(9)]);
        let err = set.check(&[pin(1), pin(2)]).unwrap_err();
        assert_eq!(err.presented, vec![pin(1), pin(2)]);
        assert!(err.to_string().contains(&pin(1).to_string()));
    }

    #[test]
    fn rfc7469_backup_pin_outside_the_chain_is_no_warning() {
        // Intermediate pinned, plus a backup key the chain does not use.
        let a = assess(
            &PinSet::new(vec![pin(2), pin(9)]),
            &[pin(1), pin(2), pin(3)],
        );
        assert_eq!(a.matched, vec![false, true, false]);
        assert!(!a.no_backup && !a.leaf_only && !a.warns());
    }

    #[test]
    fn a_single_pin_has_no_backup() {
        let a = assess(&PinSet::new(vec![pin(3)]), &[pin(1), pin(2), pin(3)]);
        assert!(a.no_backup);
        assert!(!a.leaf_only);
    }

    #[test]
    fn every_pin_in_the_chain_has_no_backup() {
        let a = assess(
            &PinSet::new(vec![pin(1), pin(2)]),
            &[pin(1), pin(2), pin(3)],
        );
        assert_eq!(a.matched, vec![true, true, false]);
        assert!(a.no_backup);
        assert!(!a.leaf_only, "the intermediate is pinned too");
    }

    #[test]
    fn only_the_leaf_pinned_warns_even_with_a_backup() {
        let a = assess(
            &PinSet::new(vec![pin(1), pin(9)]),
            &[pin(1), pin(2), pin(3)],
        );
        assert!(a.leaf_only);
        assert!(!a.no_backup);
    }

    #[test]
    fn ca_only_warns_about_nothing() {
        let a = assess(&PinSet::default(), &[pin(1), pin(2)]);
        assert_eq!(a.matched, vec![false, false]);
        assert!(!a.warns());
    }

    #[test]
    fn base64_round_trip_and_bad_lengths() {
        let p = Pin::of_spki(b"not really an spki");
        assert_eq!(Pin::from_base64(&p.to_string()), Ok(p));
        assert_eq!(Pin::from_base64("AAAA"), Err(BadPin));
        assert_eq!(Pin::from_base64("not base64!"), Err(BadPin));
    }

    #[test]
    fn sha256_of_known_input() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            Pin::of_spki(b"abc").to_string(),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
