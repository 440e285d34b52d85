//! Stateless checks the Delivery Service runs on uploaded key packages and on
//! application messages before storing or fanning them out. Nothing here decrypts.

use openmls::prelude::tls_codec::{DeserializeBytes as _, Size as _};
use openmls::prelude::{ContentType, KeyPackageIn, MlsMessageIn, ProtocolVersion, WireFormat};
use openmls_rust_crypto::RustCrypto;

use super::DsError;
use crate::ciphersuite::is_allowed_ciphersuite;
use crate::device::DeviceId;
use crate::identity::member_of;

/// What the server learns from a valid KeyPackage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPackageInfo {
    /// The account named by the credential.
    pub username: String,
    /// The account key the device is certified by (the identity key the
    /// account registered; the device key itself for a device keyed by it).
    pub identity_key: Vec<u8>,
    /// The device's key (the leaf's signature key).
    pub device_key: Vec<u8>,
    /// Whether it carries the last-resort extension (may be served more than once).
    pub last_resort: bool,
    /// The HPKE init key; RFC 9420 §16.8: a KeyPackage (and so its init key) is used once.
    pub init_key: Vec<u8>,
    /// Start of its lifetime (seconds since the Unix epoch).
    pub not_before: u64,
    /// End of its lifetime (seconds since the Unix epoch): no member may
    /// process an Add of it afterwards.
    pub not_after: u64,
}

impl KeyPackageInfo {
    /// The device that made the package (derived from its key).
    pub fn device_id(&self) -> DeviceId {
        DeviceId::of_key(&self.device_key)
    }
}

/// Routing facts of an application message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationInfo {
    /// The group id in the PrivateMessage header.
    pub group_id: Vec<u8>,
    /// The epoch in the PrivateMessage header.
    pub epoch: u64,
}

/// Parses and validates (signature, lifetime, allowed ciphersuite; `KeyPackageIn::validate`)
/// a TLS-serialised KeyPackage.
pub fn validate_key_package(bytes: &[u8]) -> Result<KeyPackageInfo, DsError> {
    let key_package_in =
        KeyPackageIn::tls_deserialize_exact_bytes(bytes).map_err(|err| DsError::malformed("KeyPackage", err))?;
    let key_package = key_package_in
        .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
        .map_err(|err| DsError::InvalidKeyPackage { reason: err.to_string() })?;
    let ciphersuite = key_package.ciphersuite();
    if !is_allowed_ciphersuite(ciphersuite) {
        return Err(DsError::CiphersuiteNotAllowed { ciphersuite: ciphersuite.into() });
    }
    let leaf = key_package.leaf_node();
    let device_key = leaf.signature_key().as_slice();
    let member = member_of(leaf.credential(), device_key)
        .map_err(|error| DsError::InvalidCredential { reason: error.to_string() })?;
    super::precheck::check_leaf_size(leaf, "the key package's")?;
    let extensions = key_package.extensions().tls_serialized_len();
    super::precheck::check_size(
        || "key package's extensions".to_owned(),
        extensions,
        super::MAX_LEAF_EXTENSIONS_BYTES,
    )?;
    let lifetime = key_package.life_time();
    Ok(KeyPackageInfo {
        username: member.username,
        identity_key: member.account_key,
        device_key: device_key.to_vec(),
        last_resort: key_package.last_resort(),
        init_key: key_package.hpke_init_key().as_slice().to_vec(),
        not_before: lifetime.not_before(),
        not_after: lifetime.not_after(),
    })
}

/// Checks that bytes are an MlsMessage carrying a PrivateMessage of content type
/// `application` and returns its group id and epoch. The content type is in the
/// PrivateMessage's clear header (and bound to the ciphertext as AAD), so a commit
/// or proposal smuggled past the DS's ordering as a PrivateMessage is refused here;
/// members refuse encrypted handshakes too (`PURE_PLAINTEXT_WIRE_FORMAT_POLICY`).
pub fn inspect_application(bytes: &[u8]) -> Result<ApplicationInfo, DsError> {
    let message =
        MlsMessageIn::tls_deserialize_exact_bytes(bytes).map_err(|err| DsError::malformed("MlsMessage", err))?;
    let wire_format = message.wire_format();
    if wire_format != WireFormat::PrivateMessage {
        return Err(DsError::WrongWireFormat { expected: "PrivateMessage", found: format!("{wire_format:?}") });
    }
    let protocol = message.try_into_protocol_message().map_err(|err| DsError::malformed("PrivateMessage", err))?;
    let content_type = protocol.content_type();
    if content_type != ContentType::Application {
        return Err(DsError::WrongContentType { expected: "application message", found: format!("{content_type:?}") });
    }
    Ok(ApplicationInfo { group_id: protocol.group_id().to_vec(), epoch: protocol.epoch().as_u64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(validate_key_package(b"garbage"), Err(DsError::Malformed { .. })));
        assert!(matches!(validate_key_package(&[]), Err(DsError::Malformed { .. })));
        assert!(matches!(inspect_application(&[0, 1, 0, 2, 0xff]), Err(DsError::Malformed { .. })));
    }
}
