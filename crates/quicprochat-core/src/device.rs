//! Devices of an account: device ids, device certificates, and the MLS
//! credential that names an account's device.
//!
//! An account has one Ed25519 **account key** and one or more devices, each
//! with its own Ed25519 **device key**, which is its MLS signature key. A
//! device's **certificate** is the account key's signature over (account,
//! device id, device key) ([`certificate_transcript`]); a device whose key
//! *is* the account key (an account's first device, and every device made
//! before devices existed) needs none.
//!
//! The MLS credential of a device ([`MemberCredential`]) is a
//! `BasicCredential` whose identity is either the plain UTF-8 username (a
//! device keyed by the account key: the form every existing group holds) or
//! [`LINKED_MAGIC`] followed by the username, the account key and the
//! certificate (a linked device). [`verify_member`] turns a credential and
//! the leaf's signature key into the member's (account, device, account
//! key); the caller then compares the account key with the one it knows for
//! that account (a client: the key it pinned; the server: the registered
//! one), so a server can never make a device of someone else's account.
//! The device id is derived from the device key ([`DeviceId::of_key`]), so
//! a credential never names a device its key does not fit.

use sha2::{Digest, Sha256};

use crate::identity::{length_prefixed, verify_signature, Identity, IdentityError, PUBLIC_KEY_LEN};

/// Length of a device id.
pub const DEVICE_ID_LEN: usize = 8;

/// Length of an Ed25519 signature (a device certificate).
pub const CERTIFICATE_LEN: usize = 64;

/// Longest username a credential may carry (bytes): a `name@domain`
/// (a linked device's credential stores its length in one byte).
pub const MAX_CREDENTIAL_USERNAME_LEN: usize = 255;

/// First bytes of a linked device's credential identity. A username never
/// starts with a NUL byte, so the two forms cannot be confused.
pub const LINKED_MAGIC: &[u8] = b"\0qpc-device-v1";

/// Longest credential identity [`MemberCredential::parse`] reads.
pub const MAX_CREDENTIAL_IDENTITY_LEN: usize =
    LINKED_MAGIC.len() + 1 + MAX_CREDENTIAL_USERNAME_LEN + PUBLIC_KEY_LEN + CERTIFICATE_LEN;

/// Domain separation label of [`certificate_transcript`].
const CERTIFICATE_LABEL: &[u8] = b"qpc-device-certificate-v1";

/// Domain separation label of [`DeviceId::of_key`].
const DEVICE_ID_LABEL: &[u8] = b"qpc-device-id-v1";

/// Why a credential or device certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The credential identity is longer than [`MAX_CREDENTIAL_IDENTITY_LEN`].
    #[error("credential identity has {len} bytes, at most {MAX_CREDENTIAL_IDENTITY_LEN} allowed")]
    TooLong { len: usize },
    /// The credential identity is not a username or a linked device's credential.
    #[error("credential identity is malformed: {reason}")]
    Malformed { reason: &'static str },
    /// A key in the credential or leaf is not an Ed25519 public key.
    #[error("{what} has {len} bytes, expected {PUBLIC_KEY_LEN}")]
    BadKey { what: &'static str, len: usize },
    /// A linked device's certificate does not verify under the account key it names.
    #[error("the device certificate of {username:?} does not verify under the account key it names")]
    BadCertificate { username: String },
    /// The account key differs from the one known for the account.
    #[error("{username:?} is shown with an account key other than the one known for that user")]
    UnknownAccountKey { username: String },
}

/// A device's id: the first [`DEVICE_ID_LEN`] bytes of a hash of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId([u8; DEVICE_ID_LEN]);

impl DeviceId {
    /// The id of the device whose key is `device_key`.
    pub fn of_key(device_key: &[u8]) -> DeviceId {
        let mut hasher = Sha256::new();
        hasher.update(DEVICE_ID_LABEL);
        hasher.update(device_key);
        let digest = hasher.finalize();
        let mut id = [0u8; DEVICE_ID_LEN];
        id.copy_from_slice(&digest[..DEVICE_ID_LEN]);
        DeviceId(id)
    }

    /// The id from its bytes, if there are exactly [`DEVICE_ID_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<DeviceId> {
        bytes.try_into().ok().map(DeviceId)
    }

    pub fn as_bytes(&self) -> &[u8; DEVICE_ID_LEN] {
        &self.0
    }

    /// The id as users type it: 16 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`DeviceId::to_hex`]'s form.
    pub fn from_hex(text: &str) -> Option<DeviceId> {
        hex::decode(text).ok().and_then(|bytes| DeviceId::from_bytes(&bytes))
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The bytes an account key signs to certify a device: domain-separated,
/// each field preceded by its length as a big-endian u32 ("qpc-device-certificate-v1",
/// username, device id, device key). The username is its name part: a
/// `name@domain` credential (once the server federates) keeps the
/// certificate made for the bare name, and the account key it verifies
/// under is the one pinned for the whole `name@domain`.
pub fn certificate_transcript(username: &str, device_id: &DeviceId, device_key: &[u8]) -> Vec<u8> {
    let name = crate::names::local_part(username);
    length_prefixed(&[CERTIFICATE_LABEL, name.as_bytes(), device_id.as_bytes(), device_key])
}

/// The account key's certificate for the device of `username` keyed by `device_key`.
pub fn certify_device(account: &Identity, username: &str, device_key: &[u8]) -> Result<Vec<u8>, IdentityError> {
    account.sign(&certificate_transcript(username, &DeviceId::of_key(device_key), device_key))
}

/// Checks `certificate` for the device of `username` keyed by `device_key`
/// under `account_key`.
pub fn verify_certificate(
    account_key: &[u8],
    username: &str,
    device_key: &[u8],
    certificate: &[u8],
) -> Result<(), CredentialError> {
    check_key("the account key", account_key)?;
    check_key("the device key", device_key)?;
    let transcript = certificate_transcript(username, &DeviceId::of_key(device_key), device_key);
    verify_signature(account_key, &transcript, certificate)
        .map_err(|_| CredentialError::BadCertificate { username: username.to_owned() })
}

fn check_key(what: &'static str, key: &[u8]) -> Result<(), CredentialError> {
    if key.len() == PUBLIC_KEY_LEN {
        Ok(())
    } else {
        Err(CredentialError::BadKey { what, len: key.len() })
    }
}

/// What a device's MLS credential identity says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberCredential {
    /// The plain username: a device keyed by the account key.
    AccountKeyed { username: String },
    /// A linked device: its account, the account key and its certificate.
    Linked { username: String, account_key: Vec<u8>, certificate: Vec<u8> },
}

impl MemberCredential {
    /// The credential of a linked device.
    pub fn linked(username: &str, account_key: &[u8], certificate: &[u8]) -> MemberCredential {
        MemberCredential::Linked {
            username: username.to_owned(),
            account_key: account_key.to_vec(),
            certificate: certificate.to_vec(),
        }
    }

    pub fn username(&self) -> &str {
        match self {
            MemberCredential::AccountKeyed { username } | MemberCredential::Linked { username, .. } => username,
        }
    }

    /// The credential identity bytes.
    pub fn to_identity(&self) -> Vec<u8> {
        match self {
            MemberCredential::AccountKeyed { username } => username.as_bytes().to_vec(),
            MemberCredential::Linked { username, account_key, certificate } => {
                let name = username.as_bytes();
                let mut bytes = Vec::with_capacity(LINKED_MAGIC.len() + 1 + name.len() + 96);
                bytes.extend_from_slice(LINKED_MAGIC);
                // Usernames this long are refused by `parse`; saturate rather than wrap.
                bytes.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                bytes.extend_from_slice(name);
                bytes.extend_from_slice(account_key);
                bytes.extend_from_slice(certificate);
                bytes
            }
        }
    }

    /// Reads a credential identity (untrusted bytes, at most
    /// [`MAX_CREDENTIAL_IDENTITY_LEN`]). Checks the form only; see
    /// [`verify_member`] for the certificate.
    pub fn parse(identity: &[u8]) -> Result<MemberCredential, CredentialError> {
        if identity.len() > MAX_CREDENTIAL_IDENTITY_LEN {
            return Err(CredentialError::TooLong { len: identity.len() });
        }
        let Some(rest) = identity.strip_prefix(LINKED_MAGIC) else {
            return Ok(MemberCredential::AccountKeyed { username: parse_username(identity)?.to_owned() });
        };
        let (&name_len, rest) =
            rest.split_first().ok_or(CredentialError::Malformed { reason: "no username length" })?;
        let name_len = usize::from(name_len);
        if rest.len() != name_len + PUBLIC_KEY_LEN + CERTIFICATE_LEN {
            return Err(CredentialError::Malformed { reason: "wrong length for a linked device's credential" });
        }
        let (name, rest) = rest.split_at(name_len);
        let (account_key, certificate) = rest.split_at(PUBLIC_KEY_LEN);
        Ok(MemberCredential::Linked {
            username: parse_username(name)?.to_owned(),
            account_key: account_key.to_vec(),
            certificate: certificate.to_vec(),
        })
    }
}

/// Longest device label (bytes).
pub const MAX_DEVICE_LABEL_LEN: usize = 64;

/// Checks a device's label, as shown in device lists: 1 to
/// [`MAX_DEVICE_LABEL_LEN`] bytes without control characters.
pub fn check_device_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() || label.len() > MAX_DEVICE_LABEL_LEN || label.chars().any(char::is_control) {
        return Err("a device label is 1 to 64 bytes without control characters");
    }
    Ok(())
}

/// A username as a credential may carry it: 1 to 64 bytes of UTF-8 without
/// control characters (the server's own rules are stricter).
fn parse_username(bytes: &[u8]) -> Result<&str, CredentialError> {
    let name =
        std::str::from_utf8(bytes).map_err(|_| CredentialError::Malformed { reason: "username is not UTF-8" })?;
    if name.is_empty() || name.len() > MAX_CREDENTIAL_USERNAME_LEN {
        return Err(CredentialError::Malformed { reason: "username is empty or too long" });
    }
    if name.chars().any(char::is_control) {
        return Err(CredentialError::Malformed { reason: "username has control characters" });
    }
    Ok(name)
}

/// A group member (an MLS leaf or key package) as its credential and key prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMember {
    pub username: String,
    pub device_id: DeviceId,
    /// The account key the device is certified by (its own key for a device
    /// keyed by the account key). Compare it with the one known for `username`.
    pub account_key: Vec<u8>,
}

impl VerifiedMember {
    /// Checks that the account key is `known_account_key`, the one the
    /// caller knows for this member's account.
    pub fn check_account_key(&self, known_account_key: &[u8]) -> Result<(), CredentialError> {
        if self.account_key == known_account_key {
            Ok(())
        } else {
            Err(CredentialError::UnknownAccountKey { username: self.username.clone() })
        }
    }
}

/// The member whose credential identity is `identity` and whose leaf (or key
/// package leaf) signs with `signature_key`: for a linked device, the
/// certificate must verify under the account key it names.
pub fn verify_member(identity: &[u8], signature_key: &[u8]) -> Result<VerifiedMember, CredentialError> {
    check_key("the leaf's signature key", signature_key)?;
    let device_id = DeviceId::of_key(signature_key);
    match MemberCredential::parse(identity)? {
        MemberCredential::AccountKeyed { username } => {
            Ok(VerifiedMember { username, device_id, account_key: signature_key.to_vec() })
        }
        MemberCredential::Linked { username, account_key, certificate } => {
            verify_certificate(&account_key, &username, signature_key, &certificate)?;
            Ok(VerifiedMember { username, device_id, account_key })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_keyed_by_the_account_key_is_its_plain_username() {
        let account = Identity::generate().unwrap();
        let member = verify_member(b"alice", account.public_key()).unwrap();
        assert_eq!(member.username, "alice");
        assert_eq!(member.account_key, account.public_key());
        assert_eq!(member.device_id, DeviceId::of_key(account.public_key()));
        member.check_account_key(account.public_key()).unwrap();
        let other = Identity::generate().unwrap();
        assert_eq!(
            member.check_account_key(other.public_key()),
            Err(CredentialError::UnknownAccountKey { username: "alice".into() })
        );
    }

    #[test]
    fn a_linked_device_needs_a_certificate_by_the_account_key() {
        let account = Identity::generate().unwrap();
        let device = Identity::generate().unwrap();
        let certificate = certify_device(&account, "alice", device.public_key()).unwrap();
        let credential = MemberCredential::linked("alice", account.public_key(), &certificate);
        let identity = credential.to_identity();
        assert_eq!(MemberCredential::parse(&identity).unwrap(), credential);

        let member = verify_member(&identity, device.public_key()).unwrap();
        assert_eq!(member.username, "alice");
        assert_eq!(member.device_id, DeviceId::of_key(device.public_key()));
        member.check_account_key(account.public_key()).unwrap();

        // The certificate is for this device key and this account only.
        let rogue = Identity::generate().unwrap();
        let refused = CredentialError::BadCertificate { username: "alice".into() };
        assert_eq!(verify_member(&identity, rogue.public_key()), Err(refused.clone()));
        let as_bob = MemberCredential::linked("bob", account.public_key(), &certificate).to_identity();
        assert_eq!(
            verify_member(&as_bob, device.public_key()),
            Err(CredentialError::BadCertificate { username: "bob".into() })
        );
        // A server's own "account key" certifies its rogue device, but that
        // key is not the one known for alice.
        let server_key = Identity::generate().unwrap();
        let forged = certify_device(&server_key, "alice", rogue.public_key()).unwrap();
        let forged = MemberCredential::linked("alice", server_key.public_key(), &forged).to_identity();
        let member = verify_member(&forged, rogue.public_key()).unwrap();
        assert_eq!(
            member.check_account_key(account.public_key()),
            Err(CredentialError::UnknownAccountKey { username: "alice".into() })
        );
    }

    #[test]
    fn malformed_credentials_are_refused() {
        let key = Identity::generate().unwrap();
        let key = key.public_key();
        let too_long = vec![b'a'; MAX_CREDENTIAL_IDENTITY_LEN + 1];
        assert!(matches!(verify_member(&too_long, key), Err(CredentialError::TooLong { .. })));
        for bad in [&b""[..], b"\xff\xfe", b"al\nice", LINKED_MAGIC, &[LINKED_MAGIC, &[5u8][..], b"alice"].concat()] {
            assert!(matches!(verify_member(bad, key), Err(CredentialError::Malformed { .. })), "{bad:?}");
        }
        assert_eq!(
            verify_member(b"alice", &key[..31]),
            Err(CredentialError::BadKey { what: "the leaf's signature key", len: 31 })
        );
    }

    #[test]
    fn device_ids_round_trip_as_hex() {
        let key = Identity::generate().unwrap();
        let id = DeviceId::of_key(key.public_key());
        assert_eq!(id.to_hex().len(), 2 * DEVICE_ID_LEN);
        assert_eq!(DeviceId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(DeviceId::from_hex("abc"), None);
        assert_eq!(DeviceId::from_hex("zz00000000000000"), None);
    }
}
