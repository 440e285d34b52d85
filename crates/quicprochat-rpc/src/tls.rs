//! TLS for every quicprochat hop: the aws-lc-rs provider restricted to TLS 1.3
//! and the hybrid `X25519MLKEM768` key exchange, the server's self-signed
//! certificate (generated once in the data dir), and the client's
//! trust-on-first-use certificate pinning (like SSH `known_hosts`).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::RpcError;

/// Name of the only key-exchange group quicprochat negotiates.
pub const KEY_EXCHANGE_GROUP: &str = "X25519MLKEM768";

/// The one crypto provider of the whole tree: aws-lc-rs with only the
/// post-quantum hybrid key exchange enabled.
pub fn crypto_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    provider
}

/// SHA-256 of a DER certificate: what clients pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> CertFingerprint {
        CertFingerprint(Sha256::digest(cert_der).into())
    }

    /// Parses the `sha256:<hex>` form written by [`fmt::Display`].
    pub fn parse(text: &str) -> Option<CertFingerprint> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let bytes = hex::decode(hex_part).ok()?;
        Some(CertFingerprint(bytes.try_into().ok()?))
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The server's certificate and key, DER-encoded.
pub struct ServerIdentity {
    /// Self-signed certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 private key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl ServerIdentity {
    /// Fingerprint clients will pin.
    pub fn fingerprint(&self) -> CertFingerprint {
        CertFingerprint::of(&self.cert)
    }
}

/// Loads `cert.der`/`key.der` from `dir`, or generates a self-signed pair for
/// `names` and writes it there (key file mode 0600) on first start.
pub fn load_or_generate_server_identity(dir: &Path, names: &[String]) -> Result<ServerIdentity, RpcError> {
    let cert_path = dir.join("cert.der");
    let key_path = dir.join("key.der");
    if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read(&cert_path)?;
        let key = std::fs::read(&key_path)?;
        return Ok(ServerIdentity { cert: CertificateDer::from(cert), key: PrivatePkcs8KeyDer::from(key) });
    }
    let generated = generate_server_identity(names)?;
    std::fs::create_dir_all(dir)?;
    write_private(&key_path, generated.key.secret_pkcs8_der())?;
    std::fs::write(&cert_path, generated.cert.as_ref())?;
    Ok(generated)
}

/// Generates a fresh self-signed certificate for `names` (in memory only).
pub fn generate_server_identity(names: &[String]) -> Result<ServerIdentity, RpcError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|error| RpcError::Tls(format!("cannot generate certificate: {error}")))?;
    Ok(ServerIdentity {
        cert: certified.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// rustls server config: TLS 1.3 only, hybrid key exchange only, ALPN `qpc/1`.
pub fn server_tls_config(identity: &ServerIdentity) -> Result<rustls::ServerConfig, RpcError> {
    let key = PrivateKeyDer::Pkcs8(identity.key.clone_key());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| RpcError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], key)
        .map_err(|error| RpcError::Tls(error.to_string()))?;
    config.alpn_protocols = vec![quicprochat_proto::ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

/// What the client knows about the server's certificate before connecting,
/// and what it saw during the handshake.
#[derive(Debug, Clone, Default)]
pub struct PinnedServer {
    /// The pinned fingerprint; `None` on first use (trust on first use).
    pub expected: Option<CertFingerprint>,
    seen: Arc<Mutex<Option<CertFingerprint>>>,
}

impl PinnedServer {
    /// A pin check against `expected` (or trust on first use when `None`).
    pub fn new(expected: Option<CertFingerprint>) -> PinnedServer {
        PinnedServer { expected, seen: Arc::default() }
    }

    /// The fingerprint the server presented in the last handshake.
    pub fn seen(&self) -> Option<CertFingerprint> {
        self.seen.lock().ok().and_then(|seen| *seen)
    }
}

#[derive(Debug)]
struct PinningVerifier {
    pin: PinnedServer,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::of(end_entity);
        if let Ok(mut seen) = self.pin.seen.lock() {
            *seen = Some(presented);
        }
        match self.pin.expected {
            Some(expected) if expected != presented => Err(rustls::Error::General(format!(
                "server certificate changed: pinned {expected}, presented {presented}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes(&self.provider)
    }
}

/// A verifier's answer to a TLS 1.2 signature: refused (TLS 1.3 only).
pub(crate) fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General("TLS 1.2 is not supported".into()))
}

/// Checks a TLS 1.3 handshake signature with `provider`'s algorithms: a
/// pinned certificate still has to prove its key.
pub(crate) fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &provider.signature_verification_algorithms)
}

/// The signature schemes `provider` verifies.
pub(crate) fn supported_schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider.signature_verification_algorithms.supported_schemes()
}

/// rustls client config that pins the server certificate instead of using a CA.
pub fn client_tls_config(pin: PinnedServer) -> Result<rustls::ClientConfig, RpcError> {
    let provider = Arc::new(crypto_provider());
    let verifier = Arc::new(PinningVerifier { pin, provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| RpcError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![quicprochat_proto::ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_display_round_trips() {
        let fingerprint = CertFingerprint::of(b"certificate");
        assert_eq!(CertFingerprint::parse(&fingerprint.to_string()), Some(fingerprint));
        assert_eq!(CertFingerprint::parse("sha256:zz"), None);
    }

    #[test]
    fn server_identity_is_generated_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["localhost".to_owned()];
        let first = load_or_generate_server_identity(dir.path(), &names).expect("generate");
        let second = load_or_generate_server_identity(dir.path(), &names).expect("reload");
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert!(server_tls_config(&second).is_ok());
    }
}
