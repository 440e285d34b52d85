//! TLS and QUIC set-up of the federation port (server to server, ALPN
//! `qpc-fed/1`): mutual authentication by pinned certificate fingerprints.
//!
//! Each side presents the server's own self-signed certificate (the one
//! clients pin). A server accepts an inbound connection only when the
//! certificate it is shown is one of the pins of its configured peers
//! ([`PeerPins`]), so an unknown peer fails the handshake before any
//! application state is touched; [`peer_fingerprint`] then tells which pin
//! it was, and the caller maps it to the peer's domain. Outbound, the
//! server accepts the callee's certificate only when it matches a pin of
//! the domain it meant to reach. TLS 1.3 and `X25519MLKEM768` only, as on
//! every hop, so a classical-only peer cannot connect.
//!
//! Certificate names and expiry are not checked: the pin is the identity
//! (as SSH host keys are), and a pin is rotated by listing the new one next
//! to the old before the peer switches certificates.

use std::collections::HashMap;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::tls::{crypto_provider, refuse_tls12, supported_schemes, verify_tls13, CertFingerprint, ServerIdentity};
use crate::transport::{IncomingLimits, TransportLimits};
use crate::RpcError;

/// The pins of every configured peer: which certificate speaks for which
/// domain. A fingerprint names at most one domain.
#[derive(Debug, Clone, Default)]
pub struct PeerPins {
    domains: HashMap<CertFingerprint, String>,
}

impl PeerPins {
    /// Pins `fingerprint` to `domain`. Returns the domain it already named,
    /// if another one did (the caller refuses such a configuration).
    pub fn insert(&mut self, fingerprint: CertFingerprint, domain: &str) -> Option<String> {
        match self.domains.insert(fingerprint, domain.to_owned()) {
            Some(previous) if previous != domain => Some(previous),
            _ => None,
        }
    }

    /// The peer domain `fingerprint` is pinned for.
    pub fn domain_of(&self, fingerprint: &CertFingerprint) -> Option<&str> {
        self.domains.get(fingerprint).map(String::as_str)
    }
}

/// The fingerprint of the certificate the other side of a federation
/// connection presented (the pin it matched).
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<CertFingerprint> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|cert| CertFingerprint::of(cert))
}

/// Accepts a client certificate only when it is pinned for a peer.
#[derive(Debug)]
struct PinnedPeerClients {
    pins: Arc<PeerPins>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedPeerClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = CertFingerprint::of(end_entity);
        match self.pins.domain_of(&presented) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => Err(rustls::Error::General(format!("certificate {presented} is not pinned for any peer"))),
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

/// Accepts the callee's certificate only when it is one of the pins of the
/// domain being dialled.
#[derive(Debug)]
struct PinnedPeerServer {
    domain: String,
    pins: Vec<CertFingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedPeerServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::of(end_entity);
        if self.pins.contains(&presented) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "peer {} presented certificate {presented}, which is not among its pins",
            self.domain
        )))
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

fn tls_error(error: impl std::fmt::Display) -> RpcError {
    RpcError::Tls(error.to_string())
}

/// quinn server config of the federation port: ALPN `qpc-fed/1` only, a
/// client certificate required and accepted only when pinned.
pub fn federation_server_config(
    identity: &ServerIdentity,
    pins: Arc<PeerPins>,
    limits: &TransportLimits,
    incoming: IncomingLimits,
) -> Result<quinn::ServerConfig, RpcError> {
    let provider = Arc::new(crypto_provider());
    let verifier = Arc::new(PinnedPeerClients { pins, provider: provider.clone() });
    let key = PrivateKeyDer::Pkcs8(identity.key.clone_key());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], key)
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![quicprochat_proto::FED_ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic_tls = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
    config
        .max_incoming(incoming.max_pending_handshakes as usize)
        .incoming_buffer_size(incoming.incoming_buffer_bytes.min(1024 * 1024))
        .incoming_buffer_size_total(incoming.incoming_buffer_bytes);
    config.transport_config(Arc::new(limits.transport_config(0)?));
    Ok(config)
}

/// quinn client config for dialling the peer `domain`: presents our
/// certificate and accepts the peer's only when it is one of `pins`.
pub fn federation_client_config(
    identity: &ServerIdentity,
    domain: &str,
    pins: Vec<CertFingerprint>,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, RpcError> {
    let provider = Arc::new(crypto_provider());
    let verifier = Arc::new(PinnedPeerServer { domain: domain.to_owned(), pins, provider: provider.clone() });
    let key = PrivateKeyDer::Pkcs8(identity.key.clone_key());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], key)
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![quicprochat_proto::FED_ALPN.to_vec()];
    let quic_tls = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic_tls));
    // The callee answers on our streams and opens none of its own.
    let mut transport = limits.transport_config(0)?;
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
