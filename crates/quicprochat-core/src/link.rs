//! Linking a new device to an account, end to end: the **link code** the new
//! device shows, the **link request** it publishes through the server, and
//! the **bundle** an existing device seals to it.
//!
//! The new device makes a random link id and a 32-byte secret; the code is
//! both, base64url, one token ([`LinkCode`]). It publishes its device key and
//! an HPKE public key ([`LinkRequest`]) with a MAC under the secret
//! ([`LinkCode::authenticate`]), so a server that swaps either key is caught
//! by the approving device, which holds the code. The approving device (the
//! one keyed by the account key: only it holds the account's private key,
//! and it never leaves it) seals the bundle (the account's public key, the
//! new device's certificate) with HPKE
//! (RFC 9180) in PSK mode: X-Wing (ML-KEM-768 + X25519, the KEM of the
//! project's MLS suite), HKDF-SHA256, ChaCha20-Poly1305, `psk` = the secret,
//! `psk_id` = the link id. Opening needs both the new device's HPKE private
//! key and the code, so the server, which relays the bytes, can read
//! nothing, now or after a break of either primitive alone.
//!
//! Nothing here talks to a server or keeps state; see
//! docs/design/devices.md for the flow.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hpke_rs::hpke_types::{AeadAlgorithm, KdfAlgorithm, KemAlgorithm};
use hpke_rs::rustcrypto::HpkeRustCrypto;
use hpke_rs::{Hpke, HpkePrivateKey, HpkePublicKey, Mode};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::device::{check_device_label, verify_certificate, CredentialError};
use crate::identity::{length_prefixed, PUBLIC_KEY_LEN};

/// Length of a link id.
pub const LINK_ID_LEN: usize = 16;
/// Length of a link secret (RFC 9180 asks 32 bytes of entropy for a PSK).
pub const LINK_SECRET_LEN: usize = 32;
/// Version byte at the start of a link code.
const LINK_CODE_VERSION: u8 = 1;
/// Characters of a link code.
pub const LINK_CODE_LEN: usize = (4 * (1 + LINK_ID_LEN + LINK_SECRET_LEN)).div_ceil(3);
/// Longest text [`LinkCode::parse`] looks at (a pasted code with spaces around).
pub const MAX_LINK_CODE_INPUT: usize = 256;
/// Largest sealed bundle [`open_bundle`] reads.
pub const MAX_SEALED_BUNDLE_LEN: usize = 16 * 1024;

/// Domain separation of the request MAC and the HPKE info.
const LINK_LABEL: &[u8] = b"qpc-link-v1";

/// Domain separation of [`LinkCode::wait_proof`].
const WAIT_LABEL: &[u8] = b"qpc-link-wait-v1";

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of a wait proof: what the server keeps and compares.
pub fn proof_hash(proof: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    Sha256::digest(proof).to_vec()
}

/// Why linking refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The text is not a link code.
    #[error("not a link code: {reason}")]
    BadCode { reason: &'static str },
    /// The request the server relayed does not carry the MAC of this code's
    /// secret: a wrong code, or keys swapped on the way.
    #[error("the link request does not match the link code (a wrong code, or keys changed on the way)")]
    Mismatch,
    /// A key or label in the request has the wrong form.
    #[error("the link request is malformed: {reason}")]
    BadRequest { reason: &'static str },
    /// The sealed bundle does not open with this device's key and code.
    #[error("the link bundle does not open with this device's key and link code")]
    Unsealed,
    /// The opened bundle is not a bundle, or its certificate is wrong.
    #[error("the link bundle is malformed: {reason}")]
    BadBundle { reason: String },
    /// The HPKE implementation failed (key generation, sealing).
    #[error("link encryption failed: {reason}")]
    Crypto { reason: String },
}

/// A link code: the link id the server files the link under, and the
/// secret that never reaches the server.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode {
    pub link_id: [u8; LINK_ID_LEN],
    secret: [u8; LINK_SECRET_LEN],
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCode").field("link_id", &hex::encode(self.link_id)).finish_non_exhaustive()
    }
}

impl LinkCode {
    /// A fresh code from the system's random generator.
    pub fn generate() -> LinkCode {
        let mut code = LinkCode { link_id: [0; LINK_ID_LEN], secret: [0; LINK_SECRET_LEN] };
        let mut rng = rand::rng();
        rng.fill_bytes(&mut code.link_id);
        rng.fill_bytes(&mut code.secret);
        code
    }

    /// The code as users pass it on: [`LINK_CODE_LEN`] base64url characters.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + LINK_ID_LEN + LINK_SECRET_LEN);
        bytes.push(LINK_CODE_VERSION);
        bytes.extend_from_slice(&self.link_id);
        bytes.extend_from_slice(&self.secret);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a code typed or pasted by a user (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<LinkCode, LinkError> {
        if text.len() > MAX_LINK_CODE_INPUT {
            return Err(LinkError::BadCode { reason: "too long" });
        }
        let text = text.trim();
        if text.len() != LINK_CODE_LEN {
            return Err(LinkError::BadCode { reason: "wrong length" });
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| LinkError::BadCode { reason: "not base64url" })?;
        let (&version, rest) = bytes.split_first().ok_or(LinkError::BadCode { reason: "empty" })?;
        if version != LINK_CODE_VERSION {
            return Err(LinkError::BadCode { reason: "unknown version" });
        }
        let (link_id, secret) = rest.split_at_checked(LINK_ID_LEN).ok_or(LinkError::BadCode { reason: "too short" })?;
        Ok(LinkCode {
            link_id: link_id.try_into().map_err(|_| LinkError::BadCode { reason: "wrong length" })?,
            secret: secret.try_into().map_err(|_| LinkError::BadCode { reason: "wrong length" })?,
        })
    }

    /// The MAC the new device publishes with `request`.
    pub fn authenticate(&self, request: &LinkRequest) -> Result<Vec<u8>, LinkError> {
        Ok(self.mac(request)?.finalize().into_bytes().to_vec())
    }

    /// What the new device shows to collect its bundle (`LinkWait`): a value
    /// derived from the secret, which the server cannot compute before the
    /// new device reveals it, and which reveals nothing of the secret.
    pub fn wait_proof(&self) -> Result<Vec<u8>, LinkError> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).map_err(crypto)?;
        mac.update(WAIT_LABEL);
        mac.update(&self.link_id);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// The hash of [`LinkCode::wait_proof`] the new device files with its
    /// link, so the server can check the proof later.
    pub fn wait_proof_hash(&self) -> Result<Vec<u8>, LinkError> {
        Ok(proof_hash(&self.wait_proof()?))
    }

    /// Checks the MAC the server relayed with `request` (constant time).
    pub fn check(&self, request: &LinkRequest, mac: &[u8]) -> Result<(), LinkError> {
        request.check_form()?;
        self.mac(request)?.verify_slice(mac).map_err(|_| LinkError::Mismatch)
    }

    fn mac(&self, request: &LinkRequest) -> Result<HmacSha256, LinkError> {
        // HMAC takes a key of any length, so this does not fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).map_err(crypto)?;
        let fields = [LINK_LABEL, &self.link_id, &request.device_key, &request.link_key, request.label.as_bytes()];
        mac.update(&length_prefixed(&fields));
        Ok(mac)
    }
}

/// What a new device publishes through the server: its device key (the
/// key to certify), its HPKE public key (the key to seal the bundle to) and
/// a label for device lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    pub device_key: Vec<u8>,
    pub link_key: Vec<u8>,
    pub label: String,
}

impl LinkRequest {
    /// Checks key lengths and the label (untrusted when relayed).
    pub fn check_form(&self) -> Result<(), LinkError> {
        if self.device_key.len() != PUBLIC_KEY_LEN {
            return Err(LinkError::BadRequest { reason: "the device key is not an Ed25519 key" });
        }
        if self.link_key.len() != X_WING_PUBLIC_KEY_LEN {
            return Err(LinkError::BadRequest { reason: "the link key is not an X-Wing public key" });
        }
        check_device_label(&self.label).map_err(|reason| LinkError::BadRequest { reason })
    }
}

/// Length of an X-Wing public key (ML-KEM-768's 1184 bytes and X25519's 32).
pub const X_WING_PUBLIC_KEY_LEN: usize = 1216;

/// The new device's HPKE key pair for one link; kept in memory only.
pub struct LinkKeyPair {
    private: HpkePrivateKey,
    public: Vec<u8>,
}

impl LinkKeyPair {
    pub fn generate() -> Result<LinkKeyPair, LinkError> {
        let pair = hpke().generate_key_pair().map_err(crypto)?;
        let (private, public) = pair.into_keys();
        Ok(LinkKeyPair { private, public: public.as_slice().to_vec() })
    }

    pub fn public_key(&self) -> &[u8] {
        &self.public
    }
}

fn hpke() -> Hpke<HpkeRustCrypto> {
    Hpke::new(Mode::Psk, KemAlgorithm::XWingDraft06, KdfAlgorithm::HkdfSha256, AeadAlgorithm::ChaCha20Poly1305)
}

fn crypto(error: impl std::fmt::Debug) -> LinkError {
    LinkError::Crypto { reason: format!("{error:?}") }
}

/// What the approving device hands the new one.
pub struct LinkBundle {
    pub username: String,
    /// The account's public key. The private key stays on the device keyed
    /// by it: a linked device that is removed later must not be able to log
    /// in as that device or certify others.
    pub account_key: Vec<u8>,
    /// The account key's certificate of the new device's key.
    pub certificate: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct BundleWire {
    version: u32,
    username: String,
    account_key: String,
    certificate: String,
}

/// Seals `bundle` to the link key the approving device checked with `code`.
pub fn seal_bundle(code: &LinkCode, request: &LinkRequest, bundle: &LinkBundle) -> Result<Vec<u8>, LinkError> {
    let wire = BundleWire {
        version: 1,
        username: bundle.username.clone(),
        account_key: URL_SAFE_NO_PAD.encode(&bundle.account_key),
        certificate: URL_SAFE_NO_PAD.encode(&bundle.certificate),
    };
    let plain = serde_json::to_vec(&wire).map_err(crypto)?;
    seal_bytes(code, &request.link_key, &plain)
}

/// HPKE-seals `plain` to `link_key` under `code` (see the module doc):
/// the encapsulated key's length (u16), the key, the ciphertext.
fn seal_bytes(code: &LinkCode, link_key: &[u8], plain: &[u8]) -> Result<Vec<u8>, LinkError> {
    let public = HpkePublicKey::new(link_key.to_vec());
    let (enc, ciphertext) = hpke()
        .seal(&public, LINK_LABEL, &code.link_id, plain, Some(&code.secret[..]), Some(&code.link_id[..]), None)
        .map_err(crypto)?;
    let enc_len = u16::try_from(enc.len()).map_err(crypto)?;
    let mut sealed = Vec::with_capacity(2 + enc.len() + ciphertext.len());
    sealed.extend_from_slice(&enc_len.to_be_bytes());
    sealed.extend_from_slice(&enc);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// [`seal_bytes`] for the `link_inputs` fuzz target, so that it reaches the
/// bundle parser behind the AEAD with any plaintext. Not an API.
#[doc(hidden)]
pub fn seal_plaintext_for_fuzzing(code: &LinkCode, link_key: &[u8], plain: &[u8]) -> Result<Vec<u8>, LinkError> {
    seal_bytes(code, link_key, plain)
}

/// Opens a sealed bundle (untrusted bytes, at most [`MAX_SEALED_BUNDLE_LEN`])
/// on the new device, whose device key is `device_key`, and checks that its
/// certificate certifies that key for its user under its account key.
pub fn open_bundle(
    code: &LinkCode,
    keys: &LinkKeyPair,
    device_key: &[u8],
    sealed: &[u8],
) -> Result<LinkBundle, LinkError> {
    if sealed.len() > MAX_SEALED_BUNDLE_LEN {
        return Err(LinkError::BadBundle {
            reason: format!("{} bytes, at most {MAX_SEALED_BUNDLE_LEN}", sealed.len()),
        });
    }
    let (enc_len, rest) = sealed.split_at_checked(2).ok_or(LinkError::Unsealed)?;
    let enc_len = usize::from(u16::from_be_bytes([enc_len[0], enc_len[1]]));
    let (enc, ciphertext) = rest.split_at_checked(enc_len).ok_or(LinkError::Unsealed)?;
    let plain = hpke()
        .open(
            enc,
            &keys.private,
            LINK_LABEL,
            &code.link_id,
            ciphertext,
            Some(&code.secret[..]),
            Some(&code.link_id[..]),
            None,
        )
        .map_err(|_| LinkError::Unsealed)?;
    let bad = |reason: String| LinkError::BadBundle { reason };
    let wire: BundleWire = serde_json::from_slice(&plain).map_err(|error| bad(error.to_string()))?;
    if wire.version != 1 {
        return Err(bad(format!("unknown version {}", wire.version)));
    }
    let account_key = URL_SAFE_NO_PAD.decode(&wire.account_key).map_err(|error| bad(error.to_string()))?;
    let certificate = URL_SAFE_NO_PAD.decode(&wire.certificate).map_err(|error| bad(error.to_string()))?;
    verify_certificate(&account_key, &wire.username, device_key, &certificate)
        .map_err(|error: CredentialError| bad(error.to_string()))?;
    Ok(LinkBundle { username: wire.username, account_key, certificate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::certify_device;
    use crate::identity::Identity;

    fn new_device() -> (Identity, LinkKeyPair, LinkRequest) {
        let device = Identity::generate().unwrap();
        let keys = LinkKeyPair::generate().unwrap();
        assert_eq!(keys.public_key().len(), X_WING_PUBLIC_KEY_LEN);
        let request = LinkRequest {
            device_key: device.public_key().to_vec(),
            link_key: keys.public_key().to_vec(),
            label: "phone".into(),
        };
        (device, keys, request)
    }

    #[test]
    fn a_code_round_trips_as_one_token() {
        let code = LinkCode::generate();
        let text = code.encode();
        assert_eq!(text.len(), LINK_CODE_LEN);
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{text}");
        assert_eq!(LinkCode::parse(&format!("  {text}\n")).unwrap(), code);
        assert_ne!(LinkCode::generate(), code);
        for bad in ["", "abc", &text[1..], &format!("{text}A"), &"A".repeat(MAX_LINK_CODE_INPUT + 1)] {
            assert!(matches!(LinkCode::parse(bad), Err(LinkError::BadCode { .. })), "{bad:?}");
        }
        let mut other_version = URL_SAFE_NO_PAD.decode(&text).unwrap();
        other_version[0] = 2;
        let other_version = URL_SAFE_NO_PAD.encode(other_version);
        assert_eq!(LinkCode::parse(&other_version), Err(LinkError::BadCode { reason: "unknown version" }));
    }

    #[test]
    fn the_approving_device_catches_swapped_keys_and_wrong_codes() {
        let code = LinkCode::generate();
        let (_, _, request) = new_device();
        let mac = code.authenticate(&request).unwrap();
        code.check(&request, &mac).unwrap();
        let (_, _, swapped) = new_device();
        assert_eq!(
            code.check(&LinkRequest { label: "phone".into(), ..swapped.clone() }, &mac),
            Err(LinkError::Mismatch)
        );
        let only_link_key = LinkRequest { link_key: swapped.link_key, ..request.clone() };
        assert_eq!(code.check(&only_link_key, &mac), Err(LinkError::Mismatch));
        assert_eq!(LinkCode::generate().check(&request, &mac), Err(LinkError::Mismatch), "another code");
        let proof = code.wait_proof().unwrap();
        assert_eq!(proof_hash(&proof), code.wait_proof_hash().unwrap());
        assert_ne!(proof, LinkCode::generate().wait_proof().unwrap());
        let renamed = LinkRequest { label: "laptop".into(), ..request.clone() };
        assert_eq!(code.check(&renamed, &mac), Err(LinkError::Mismatch));
        let short = LinkRequest { device_key: vec![1; 31], ..request };
        assert!(matches!(code.check(&short, &mac), Err(LinkError::BadRequest { .. })));
    }

    #[test]
    fn only_the_new_device_with_the_code_opens_the_bundle() {
        let code = LinkCode::generate();
        let (device, keys, request) = new_device();
        let account = Identity::generate().unwrap();
        let certificate = certify_device(&account, "alice", device.public_key()).unwrap();
        let bundle = LinkBundle {
            username: "alice".into(),
            account_key: account.public_key().to_vec(),
            certificate: certificate.clone(),
        };
        let sealed = seal_bundle(&code, &request, &bundle).unwrap();
        assert!(sealed.len() < MAX_SEALED_BUNDLE_LEN);

        let opened = open_bundle(&code, &keys, device.public_key(), &sealed).unwrap();
        assert_eq!(opened.username, "alice");
        assert_eq!(opened.account_key, account.public_key());
        assert_eq!(opened.certificate, certificate);

        // The relayed bytes open with neither the key alone nor the code alone.
        assert_eq!(
            open_bundle(&LinkCode::generate(), &keys, device.public_key(), &sealed).err(),
            Some(LinkError::Unsealed)
        );
        let (_, server_keys, _) = new_device();
        assert_eq!(open_bundle(&code, &server_keys, device.public_key(), &sealed).err(), Some(LinkError::Unsealed));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(open_bundle(&code, &keys, device.public_key(), &tampered).err(), Some(LinkError::Unsealed));
        for cut in [0, 1, 2, 100] {
            assert!(open_bundle(&code, &keys, device.public_key(), &sealed[..cut]).is_err());
        }
        // A certificate for another key is refused.
        let other = Identity::generate().unwrap();
        assert!(matches!(open_bundle(&code, &keys, other.public_key(), &sealed), Err(LinkError::BadBundle { .. })));
    }
}
