//! A server on a temporary data dir and raw RPC connections to it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use quicprochat_core::{auth_transcript, AuthPurpose, Identity};
use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{PinnedServer, RpcClient, RpcError};
use quicprochat_server::{RunningServer, ServerConfig};

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server: RunningServer,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// Starts a server whose default config `adjust` changes first.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Harness {
        quicprochat_rpc::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir.path().join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        adjust(&mut config);
        let server = RunningServer::start(config).await.expect("server starts");
        Harness { dir, server }
    }

    /// Starts a new server on the same data dir (after the old one stopped).
    pub(crate) async fn restart(dir: tempfile::TempDir) -> Harness {
        let config = ServerConfig::new(dir.path().join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let server = RunningServer::start(config).await.expect("server restarts");
        Harness { dir, server }
    }

    /// A new connection logged in as `name`.
    pub(crate) async fn login(&self, name: &str, identity: &Identity) -> RpcClient {
        let rpc = self.connect().await;
        let nonce = challenge(&rpc).await;
        let request = login_request(identity, name, &nonce, &rpc.auth_exporter().expect("exporter"));
        let _: v1::LoginResponse = rpc.call(Method::Login, &request).await.expect("login");
        rpc
    }

    pub(crate) async fn connect(&self) -> RpcClient {
        let pin = PinnedServer::new(Some(self.server.fingerprint()));
        RpcClient::connect(self.server.local_addr(), pin, &TransportLimits::default(), WAIT).await.expect("connect")
    }

    /// Registers `name` on a fresh connection; returns the logged-in connection and the identity.
    pub(crate) async fn register(&self, name: &str) -> (RpcClient, Identity) {
        let rpc = self.connect().await;
        let identity = Identity::generate().expect("identity");
        let nonce = challenge(&rpc).await;
        let exporter = rpc.auth_exporter().expect("exporter");
        let transcript = auth_transcript(AuthPurpose::Register, &nonce, &exporter, name, identity.public_key());
        let request = v1::RegisterRequest {
            username: name.into(),
            identity_key: identity.public_key().to_vec().into(),
            signature: identity.sign(&transcript).expect("sign").into(),
            invite_token: String::new(),
        };
        let _: v1::RegisterResponse = rpc.call(Method::Register, &request).await.expect("register");
        (rpc, identity)
    }
}

pub(crate) async fn challenge(rpc: &RpcClient) -> Vec<u8> {
    let response: v1::ChallengeResponse =
        rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await.expect("challenge");
    response.nonce.to_vec()
}

/// A login request signed for `rpc`'s connection (or for another exporter).
pub(crate) fn login_request(identity: &Identity, name: &str, nonce: &[u8], exporter: &[u8]) -> v1::LoginRequest {
    let transcript = auth_transcript(AuthPurpose::Login, nonce, exporter, name, identity.public_key());
    v1::LoginRequest { username: name.into(), signature: identity.sign(&transcript).expect("sign").into() }
}

/// The status of a failed call.
pub(crate) fn status_of<T: std::fmt::Debug>(result: Result<T, RpcError>) -> quicprochat_proto::Status {
    match result {
        Err(error) => error.status().unwrap_or_else(|| panic!("expected a status, got {error}")),
        Ok(value) => panic!("expected an error status, got {value:?}"),
    }
}
