//! The user's Ed25519 identity key and the bytes it signs to register or log in.
//!
//! The identity key is both the MLS credential's signature key and the key that
//! answers the server's login challenge. This module owns key generation, the
//! secret serialisation stored in a client profile, signing, verification, and the
//! domain-separated auth transcript. It does not talk to a server.

use openmls::prelude::{BasicCredential, Credential, OpenMlsCrypto, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::signatures::Signer;
use serde::{Deserialize, Serialize};

use crate::device::{verify_member, CredentialError, MemberCredential, VerifiedMember};

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Version tag of [`Identity::to_bytes`].
const IDENTITY_FORMAT_VERSION: u32 = 1;

/// Domain separation label of [`auth_transcript`].
const AUTH_LABEL: &[u8] = b"qpc-auth-v1";

/// Errors from identity key handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The random key generator or the Ed25519 implementation failed; not retryable.
    #[error("identity key generation failed: {reason}")]
    Generation {
        /// What the crypto library reported.
        reason: String,
    },
    /// Stored identity bytes are not a serialised identity (corrupt profile).
    #[error("identity bytes are malformed: {reason}")]
    Malformed {
        /// Why decoding failed.
        reason: String,
    },
    /// Stored identity uses a signature scheme other than Ed25519.
    #[error("identity uses signature scheme {scheme:?}, expected Ed25519")]
    WrongScheme {
        /// The scheme found.
        scheme: SignatureScheme,
    },
    /// A public key does not have the Ed25519 length.
    #[error("public key has {len} bytes, expected {PUBLIC_KEY_LEN}")]
    InvalidPublicKey {
        /// Length of the key given.
        len: usize,
    },
    /// Stored private and public halves do not belong together (corrupt profile).
    #[error("identity private key does not match its public key")]
    KeyMismatch,
    /// Signing failed (the private key bytes are unusable).
    #[error("signing with the identity key failed")]
    Signing,
    /// A signature does not verify under the given public key (peer sent bad data).
    #[error("signature does not verify")]
    BadSignature,
}

/// A user's Ed25519 identity key pair (secret).
pub struct Identity {
    key_pair: SignatureKeyPair,
}

#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    version: u32,
    key_pair: SignatureKeyPair,
}

impl Identity {
    /// Generates a fresh Ed25519 identity key pair.
    pub fn generate() -> Result<Identity, IdentityError> {
        let key_pair = SignatureKeyPair::new(SignatureScheme::ED25519)
            .map_err(|err| IdentityError::Generation { reason: format!("{err:?}") })?;
        Ok(Identity { key_pair })
    }

    /// Secret serialisation (JSON) for the client's profile. Keep it private.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = StoredIdentityRef { version: IDENTITY_FORMAT_VERSION, key_pair: &self.key_pair };
        serde_json::to_vec(&stored).expect("a struct of byte vectors and a fieldless enum always serialises to JSON")
    }

    /// Restores an identity written by [`Identity::to_bytes`], checking that the
    /// private key matches the public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Identity, IdentityError> {
        let stored: StoredIdentity =
            serde_json::from_slice(bytes).map_err(|err| IdentityError::Malformed { reason: err.to_string() })?;
        if stored.version != IDENTITY_FORMAT_VERSION {
            return Err(IdentityError::Malformed {
                reason: format!("unknown identity format version {}", stored.version),
            });
        }
        let scheme = stored.key_pair.signature_scheme();
        if scheme != SignatureScheme::ED25519 {
            return Err(IdentityError::WrongScheme { scheme });
        }
        let identity = Identity { key_pair: stored.key_pair };
        if identity.public_key().len() != PUBLIC_KEY_LEN {
            return Err(IdentityError::InvalidPublicKey { len: identity.public_key().len() });
        }
        let probe = b"qpc-identity-self-check";
        let signature = identity.sign(probe)?;
        verify_signature(identity.public_key(), probe, &signature).map_err(|_| IdentityError::KeyMismatch)?;
        Ok(identity)
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.key_pair.public()
    }

    /// Signs `message` with Ed25519 (64-byte signature).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.key_pair.sign(message).map_err(|_| IdentityError::Signing)
    }

    /// The key pair as an OpenMLS signer.
    pub(crate) fn key_pair(&self) -> &SignatureKeyPair {
        &self.key_pair
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("public_key", &hex::encode(self.public_key())).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct StoredIdentityRef<'a> {
    version: u32,
    key_pair: &'a SignatureKeyPair,
}

/// Verifies an Ed25519 signature over `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
    if public_key.len() != PUBLIC_KEY_LEN {
        return Err(IdentityError::InvalidPublicKey { len: public_key.len() });
    }
    RustCrypto::default()
        .verify_signature(SignatureScheme::ED25519, message, public_key, signature)
        .map_err(|_| IdentityError::BadSignature)
}

/// Why an auth transcript is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthPurpose {
    /// Binding a new username to an identity key.
    Register,
    /// Proving possession of a registered identity key.
    Login,
}

impl AuthPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            AuthPurpose::Register => b"register",
            AuthPurpose::Login => b"login",
        }
    }
}

/// The exact bytes signed to register or log in: domain-separated, length-prefixed fields
/// ("qpc-auth-v1", purpose, nonce, tls_exporter, username, identity_key), each preceded
/// by its length as a big-endian u32.
pub fn auth_transcript(
    purpose: AuthPurpose,
    nonce: &[u8],
    tls_exporter: &[u8],
    username: &str,
    identity_key: &[u8],
) -> Vec<u8> {
    length_prefixed(&[AUTH_LABEL, purpose.label(), nonce, tls_exporter, username.as_bytes(), identity_key])
}

/// `fields` concatenated, each preceded by its length as a big-endian u32:
/// the encoding of every domain-separated transcript the project signs or
/// MACs (login, device certificates, link requests).
pub(crate) fn length_prefixed(fields: &[&[u8]]) -> Vec<u8> {
    let mut transcript = Vec::with_capacity(fields.iter().map(|field| 4 + field.len()).sum());
    for field in fields {
        // Fields longer than 4 GiB cannot reach here from any bounded frame; saturate anyway.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        transcript.extend_from_slice(&len.to_be_bytes());
        transcript.extend_from_slice(field);
    }
    transcript
}

/// The account named by a credential (a device's credential, see
/// [`crate::device`]), if it is a BasicCredential of either form. Names
/// only: [`member_of`] checks a linked device's certificate.
pub(crate) fn username_of(credential: &Credential) -> Option<String> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    MemberCredential::parse(basic.identity()).ok().map(|member| member.username().to_owned())
}

/// The member a leaf already in a group's tree is, read from its
/// credential without checking its certificate again: every leaf was
/// checked ([`member_of`]) when it entered (an Add, a Welcome or a
/// GroupInfo), and a leaf update keeps its account. Reading a roster this
/// way costs no signature verification per leaf.
pub(crate) fn admitted_member(
    credential: &Credential,
    signature_key: &[u8],
) -> Result<VerifiedMember, CredentialError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| CredentialError::Malformed { reason: "not a BasicCredential" })?;
    let device_id = crate::device::DeviceId::of_key(signature_key);
    Ok(match MemberCredential::parse(basic.identity())? {
        MemberCredential::AccountKeyed { username } => {
            VerifiedMember { username, device_id, account_key: signature_key.to_vec() }
        }
        MemberCredential::Linked { username, account_key, .. } => VerifiedMember { username, device_id, account_key },
    })
}

/// The member whose leaf (or key package) has `credential` and signs with
/// `signature_key`, its certificate checked ([`verify_member`]).
pub(crate) fn member_of(credential: &Credential, signature_key: &[u8]) -> Result<VerifiedMember, CredentialError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| CredentialError::Malformed { reason: "not a BasicCredential" })?;
    verify_member(basic.identity(), signature_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_roundtrip() {
        let identity = Identity::generate().unwrap();
        assert_eq!(identity.public_key().len(), PUBLIC_KEY_LEN);
        let signature = identity.sign(b"hello").unwrap();
        assert_eq!(signature.len(), 64);
        verify_signature(identity.public_key(), b"hello", &signature).unwrap();
        assert!(matches!(
            verify_signature(identity.public_key(), b"hellO", &signature),
            Err(IdentityError::BadSignature)
        ));

        let restored = Identity::from_bytes(&identity.to_bytes()).unwrap();
        assert_eq!(restored.public_key(), identity.public_key());
        let signature2 = restored.sign(b"again").unwrap();
        verify_signature(identity.public_key(), b"again", &signature2).unwrap();
    }

    #[test]
    fn wrong_key_rejects() {
        let alice = Identity::generate().unwrap();
        let mallory = Identity::generate().unwrap();
        let signature = mallory.sign(b"msg").unwrap();
        assert!(matches!(verify_signature(alice.public_key(), b"msg", &signature), Err(IdentityError::BadSignature)));
        assert!(matches!(
            verify_signature(&[1, 2, 3], b"msg", &signature),
            Err(IdentityError::InvalidPublicKey { len: 3 })
        ));
    }

    #[test]
    fn from_bytes_rejects_garbage_and_mismatched_halves() {
        assert!(matches!(Identity::from_bytes(b"not json"), Err(IdentityError::Malformed { .. })));
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let mut spliced: serde_json::Value = serde_json::from_slice(&a.to_bytes()).unwrap();
        let b_json: serde_json::Value = serde_json::from_slice(&b.to_bytes()).unwrap();
        spliced["key_pair"]["public"] = b_json["key_pair"]["public"].clone();
        let bytes = serde_json::to_vec(&spliced).unwrap();
        assert!(matches!(Identity::from_bytes(&bytes), Err(IdentityError::KeyMismatch)));
    }

    #[test]
    fn auth_transcript_binds_every_field() {
        let base = auth_transcript(AuthPurpose::Login, b"n", b"tls", "alice", b"key");
        assert!(base.starts_with(&[0, 0, 0, 11]));
        let variants = [
            auth_transcript(AuthPurpose::Register, b"n", b"tls", "alice", b"key"),
            auth_transcript(AuthPurpose::Login, b"m", b"tls", "alice", b"key"),
            auth_transcript(AuthPurpose::Login, b"n", b"tlS", "alice", b"key"),
            auth_transcript(AuthPurpose::Login, b"n", b"tls", "alicf", b"key"),
            auth_transcript(AuthPurpose::Login, b"n", b"tls", "alice", b"kez"),
            // Moving a byte across a field boundary must change the transcript.
            auth_transcript(AuthPurpose::Login, b"nt", b"ls", "alice", b"key"),
        ];
        for variant in &variants {
            assert_ne!(&base, variant);
        }
        assert_eq!(base, auth_transcript(AuthPurpose::Login, b"n", b"tls", "alice", b"key"));
    }

    #[test]
    fn credentials_name_their_account_and_linked_ones_are_checked() {
        let plain: Credential = BasicCredential::new(b"bob".to_vec()).into();
        assert_eq!(username_of(&plain).as_deref(), Some("bob"));
        let account = Identity::generate().unwrap();
        let device = Identity::generate().unwrap();
        let certificate = crate::device::certify_device(&account, "bob", device.public_key()).unwrap();
        let linked = MemberCredential::linked("bob", account.public_key(), &certificate);
        let linked: Credential = BasicCredential::new(linked.to_identity()).into();
        assert_eq!(username_of(&linked).as_deref(), Some("bob"));
        assert_eq!(member_of(&linked, device.public_key()).unwrap().account_key, account.public_key());
        assert!(member_of(&linked, account.public_key()).is_err(), "certified for another key");
    }
}
