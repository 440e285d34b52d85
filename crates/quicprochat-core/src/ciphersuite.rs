//! The MLS ciphersuites quicprochat uses and accepts.
//!
//! The default is the provisional hybrid post-quantum suite 0x004F
//! (ML-KEM-768 + X25519, AES-128-GCM, SHA-256, Ed25519; feature
//! `draft-ietf-mls-pq-ciphersuites`). Its code point is provisional: the
//! libcrux provider uses a different one (0x004D), so only RustCrypto peers
//! interoperate. The classical mandatory suite 0x0001 stays accepted.
//! This module only names suites; it does not negotiate anything.

use openmls::prelude::Ciphersuite;

/// The suite new groups and key packages use (0x004F, hybrid ML-KEM-768 + X25519).
pub const DEFAULT_CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

/// The classical mandatory-to-implement suite (0x0001), still accepted.
pub const CLASSICAL_CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Whether a group or key package with this suite is accepted.
pub fn is_allowed_ciphersuite(cs: Ciphersuite) -> bool {
    cs == DEFAULT_CIPHERSUITE || cs == CLASSICAL_CIPHERSUITE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_points_and_policy() {
        assert_eq!(u16::from(DEFAULT_CIPHERSUITE), 0x004F);
        assert_eq!(u16::from(CLASSICAL_CIPHERSUITE), 0x0001);
        assert!(is_allowed_ciphersuite(DEFAULT_CIPHERSUITE));
        assert!(is_allowed_ciphersuite(CLASSICAL_CIPHERSUITE));
        assert!(!is_allowed_ciphersuite(Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256));
    }
}
