//! A server on a temporary data dir and raw RPC connections to it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use quicprochat_core::{auth_transcript, AuthPurpose, Identity, MlsClient};
use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{CertFingerprint, PinnedServer, RpcClient, RpcError};
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
}

impl TestServer for Harness {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn fingerprint(&self) -> CertFingerprint {
        self.server.fingerprint()
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// What tests need of a server, in-process or a child process.
#[allow(async_fn_in_trait)]
pub(crate) trait TestServer {
    /// The QUIC address.
    fn addr(&self) -> SocketAddr;
    /// The certificate to pin.
    fn fingerprint(&self) -> CertFingerprint;
    /// A scratch directory for client-side state.
    fn dir(&self) -> &Path;

    /// A new connection logged in as `name`.
    async fn login(&self, name: &str, identity: &Identity) -> RpcClient {
        let rpc = self.connect().await;
        let nonce = challenge(&rpc).await;
        let request = login_request(identity, name, &nonce, &rpc.auth_exporter().expect("exporter"));
        let _: v1::LoginResponse = rpc.call(Method::Login, &request).await.expect("login");
        rpc
    }

    /// A new connection logged in as `name` on the linked device keyed by `device`.
    async fn login_device(&self, name: &str, device: &Identity) -> RpcClient {
        let rpc = self.connect().await;
        let nonce = challenge(&rpc).await;
        let mut request = login_request(device, name, &nonce, &rpc.auth_exporter().expect("exporter"));
        request.device_key = device.public_key().to_vec().into();
        let _: v1::LoginResponse = rpc.call(Method::Login, &request).await.expect("device login");
        rpc
    }

    async fn connect(&self) -> RpcClient {
        let pin = PinnedServer::new(Some(self.fingerprint()));
        RpcClient::connect(self.addr(), pin, &TransportLimits::default(), WAIT).await.expect("connect")
    }

    /// Registers `name` on a fresh connection; returns the logged-in connection and the identity.
    async fn register(&self, name: &str) -> (RpcClient, Identity) {
        let rpc = self.connect().await;
        let identity = Identity::generate().expect("identity");
        register_identity(&rpc, &identity, name, "").await.expect("register");
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
    v1::LoginRequest {
        username: name.into(),
        signature: identity.sign(&transcript).expect("sign").into(),
        device_key: Default::default(),
    }
}

/// The `LinkStart` of a new device keyed by `device`, with the link key of
/// `keys`, under `code` (labelled "phone").
pub(crate) fn link_start_request(
    code: &quicprochat_core::link::LinkCode,
    device: &Identity,
    keys: &quicprochat_core::link::LinkKeyPair,
) -> v1::LinkStartRequest {
    let published = quicprochat_core::link::LinkRequest {
        device_key: device.public_key().to_vec(),
        link_key: keys.public_key().to_vec(),
        label: "phone".into(),
    };
    v1::LinkStartRequest {
        link_id: code.link_id.to_vec().into(),
        mac: code.authenticate(&published).expect("mac").into(),
        wait_proof_hash: code.wait_proof_hash().expect("proof hash").into(),
        device_key: published.device_key.into(),
        link_key: published.link_key.into(),
        label: published.label,
    }
}

/// The status of a failed call.
pub(crate) fn status_of<T: std::fmt::Debug>(result: Result<T, RpcError>) -> quicprochat_proto::Status {
    match result {
        Err(error) => error.status().unwrap_or_else(|| panic!("expected a status, got {error}")),
        Ok(value) => panic!("expected an error status, got {value:?}"),
    }
}

pub(crate) fn clone_identity(identity: &Identity) -> Identity {
    Identity::from_bytes(&identity.to_bytes()).expect("identity round trip")
}

/// alice and bob registered, logged in and in one group, built with raw
/// RPCs; their MLS state lives in `state_dir`.
pub(crate) struct GroupOfTwo {
    pub(crate) alice_rpc: RpcClient,
    pub(crate) alice: Identity,
    pub(crate) alice_mls: MlsClient,
    pub(crate) bob_rpc: RpcClient,
    pub(crate) bob: Identity,
}

pub(crate) async fn group_of_two(server: &impl TestServer, state_dir: &Path, group_id: &[u8]) -> GroupOfTwo {
    let (alice_rpc, alice) = server.register("alice").await;
    let (bob_rpc, bob) = server.register("bob").await;
    let alice_mls = MlsClient::open(&state_dir.join("alice.db"), clone_identity(&alice), "alice").expect("mls");
    let bob_mls = MlsClient::open(&state_dir.join("bob.db"), clone_identity(&bob), "bob").expect("mls");
    let upload = v1::UploadKeyPackagesRequest {
        key_packages: bob_mls.generate_key_packages(1).expect("kp").into_iter().map(Into::into).collect(),
        last_resort: bob_mls.generate_last_resort_key_package().expect("kp").into(),
    };
    let _: v1::UploadKeyPackagesResponse = bob_rpc.call(Method::UploadKeyPackages, &upload).await.expect("upload");
    create_group_with(&alice_rpc, &alice_mls, group_id, "bob").await;
    GroupOfTwo { alice_rpc, alice, alice_mls, bob_rpc, bob }
}

/// alice and bob in one group (id `[7; 16]`), MLS state in the harness dir.
pub(crate) async fn alice_and_bob(harness: &impl TestServer) -> (Identity, MlsClient, Identity, Vec<u8>) {
    let group_id = vec![7u8; 16];
    let pair = group_of_two(harness, harness.dir(), &group_id).await;
    (pair.alice, pair.alice_mls, pair.bob, group_id)
}

/// `creator` makes a named group `group_id` of its own and registers it
/// with the server as `name`.
pub(crate) async fn register_group(
    rpc: &RpcClient,
    creator: &MlsClient,
    group_id: &[u8],
    name: &str,
) -> Result<v1::CreateGroupResponse, RpcError> {
    let bootstrap = creator.create_group(group_id).expect("create");
    let create = v1::CreateGroupRequest {
        group_id: group_id.to_vec().into(),
        name: name.into(),
        kind: v1::GroupKind::Named as i32,
        group_info: bootstrap.group_info.into(),
        ratchet_tree: bootstrap.ratchet_tree.into(),
    };
    rpc.call(Method::CreateGroup, &create).await
}

/// `creator` registers a group `group_id` with the server, fetches one key
/// package of `member` and commits adding them.
pub(crate) async fn create_group_with(rpc: &RpcClient, creator: &MlsClient, group_id: &[u8], member: &str) {
    register_group(rpc, creator, group_id, "team").await.expect("create group");
    let fetched: v1::FetchKeyPackageResponse = rpc
        .call(
            Method::FetchKeyPackage,
            &v1::FetchKeyPackageRequest { username: member.into(), device_id: Default::default() },
        )
        .await
        .expect("fetch key package");
    let pending = creator.add_members(group_id, &[fetched.key_package.to_vec()]).expect("add");
    let submit = v1::SubmitCommitRequest {
        group_id: group_id.to_vec().into(),
        epoch: pending.epoch,
        commit: pending.commit.into(),
        welcome: pending.welcome.unwrap_or_default().into(),
        message_id: format!("add-{member}").into_bytes().into(),
    };
    let _: v1::SubmitCommitResponse = rpc.call(Method::SubmitCommit, &submit).await.expect("commit");
    creator.merge_pending_commit(group_id).expect("merge");
}

/// Every message id in `rpc`'s account's queue.
pub(crate) async fn queued_message_ids(rpc: &RpcClient) -> std::collections::HashSet<Vec<u8>> {
    queue_in_order(rpc).await.into_iter().collect()
}

/// Every message id in `rpc`'s account's queue, in queue order (repeats kept).
pub(crate) async fn queue_in_order(rpc: &RpcClient) -> Vec<Vec<u8>> {
    let mut ids = Vec::new();
    let mut cursor = 0;
    loop {
        let fetched: v1::FetchResponse =
            rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: cursor, limit: 500 }).await.expect("fetch");
        let Some(last) = fetched.entries.last() else { return ids };
        cursor = last.seq;
        ids.extend(fetched.entries.iter().map(|entry| entry.message_id.to_vec()));
    }
}

/// The value of one sample line (`name{labels} value`) in a metrics page,
/// 0 when absent.
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// `GET path` on the metrics endpoint; returns (status line, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics endpoint");
    stream.set_read_timeout(Some(crate::harness::WAIT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// Runs SQLite's `integrity_check` on the server database in `data_dir`.
pub(crate) fn assert_integrity(data_dir: &Path, when: &str) {
    let connection = rusqlite::Connection::open(data_dir.join("qpc-server.db")).expect("open the server database");
    let result: String = connection.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check");
    assert_eq!(result, "ok", "SQLite integrity_check {when}");
}

/// Registers `name` with a fresh identity (and `invite`, if not empty) on `rpc`.
pub(crate) async fn register_with(rpc: &RpcClient, name: &str, invite: &str) -> Result<v1::RegisterResponse, RpcError> {
    register_identity(rpc, &Identity::generate().expect("identity"), name, invite).await
}

/// Registers `name` with `identity` (and `invite`, if not empty) on `rpc`.
async fn register_identity(
    rpc: &RpcClient,
    identity: &Identity,
    name: &str,
    invite: &str,
) -> Result<v1::RegisterResponse, RpcError> {
    let nonce = challenge(rpc).await;
    let exporter = rpc.auth_exporter().expect("exporter");
    let transcript = auth_transcript(AuthPurpose::Register, &nonce, &exporter, name, identity.public_key());
    let request = v1::RegisterRequest {
        username: name.into(),
        identity_key: identity.public_key().to_vec().into(),
        signature: identity.sign(&transcript).expect("sign").into(),
        invite_token: invite.into(),
    };
    rpc.call(Method::Register, &request).await
}

/// Registers `name` with a fresh identity on `rpc`, without an invite.
pub(crate) async fn register_as(rpc: &RpcClient, name: &str) -> Result<v1::RegisterResponse, RpcError> {
    register_with(rpc, name, "").await
}
