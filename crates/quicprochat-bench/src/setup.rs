//! The system under test: an in-process `qpc-server` on a temporary data
//! dir (embedded SQLite, `synchronous=FULL`), with limits raised so that the
//! load generator measures the server rather than its rate limiter, and
//! sender/recipient pairs, each pair a two-member MLS group.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quicprochat_core::{auth_transcript, AuthPurpose, Identity, MlsClient};
use quicprochat_proto::{v1, Method};
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{PinnedServer, RpcClient};
use quicprochat_server::config::RateLimit;
use quicprochat_server::{RunningServer, ServerConfig};

/// How long one setup call may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server on a temporary directory, removed on drop.
pub(crate) struct BenchServer {
    pub(crate) server: RunningServer,
    pub(crate) dir: tempfile::TempDir,
}

/// One sender, one recipient, their group, and a pre-encrypted message.
pub(crate) struct Pair {
    pub(crate) sender: RpcClient,
    pub(crate) recipient: RpcClient,
    pub(crate) group_id: Bytes,
    /// An MLS PrivateMessage made once at setup: the load measures the
    /// server, not client crypto (B1 measures that).
    pub(crate) ciphertext: Bytes,
}

/// Starts the server with every per-address and per-account limit raised.
pub(crate) async fn start_server() -> anyhow::Result<BenchServer> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let mut config = ServerConfig::new(dir.path().join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let unlimited = RateLimit { burst: 1_000_000, period: Duration::from_secs(1) };
    config.rate_limits.register_per_address = unlimited;
    config.rate_limits.key_package_fetch_per_requester = unlimited;
    config.rate_limits.key_package_fetch_per_target = unlimited;
    config.rate_limits.send_per_account = unlimited;
    config.connections.per_address = 100_000;
    config.transport = TransportLimits { max_concurrent_rpcs: 1024, ..TransportLimits::default() };
    let server = RunningServer::start(config).await.context("start qpc-server")?;
    Ok(BenchServer { server, dir })
}

pub(crate) async fn connect(addr: SocketAddr, pin: PinnedServer) -> anyhow::Result<RpcClient> {
    let limits = TransportLimits { max_concurrent_rpcs: 1024, ..TransportLimits::default() };
    let rpc = RpcClient::connect(addr, pin, &limits, SETUP_TIMEOUT).await.context("connect")?;
    Ok(rpc.with_retry_budget(Duration::ZERO))
}

/// A new connection registered (and so logged in) as `name`.
pub(crate) async fn register(server: &BenchServer, name: &str) -> anyhow::Result<(RpcClient, Identity)> {
    let pin = PinnedServer::new(Some(server.server.fingerprint()));
    let rpc = connect(server.server.local_addr(), pin).await?;
    let identity = Identity::generate()?;
    let challenge: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await?;
    let exporter = rpc.auth_exporter()?;
    let transcript = auth_transcript(AuthPurpose::Register, &challenge.nonce, &exporter, name, identity.public_key());
    let request = v1::RegisterRequest {
        username: name.into(),
        identity_key: identity.public_key().to_vec().into(),
        signature: identity.sign(&transcript)?.into(),
        invite_token: String::new(),
    };
    let _: v1::RegisterResponse =
        rpc.call(Method::Register, &request).await.with_context(|| format!("register {name}"))?;
    Ok((rpc, identity))
}

/// Registers `index`'s sender and recipient and puts them in one group.
pub(crate) async fn make_pair(server: &BenchServer, index: usize, payload_len: usize) -> anyhow::Result<Pair> {
    let (sender, sender_identity) = register(server, &format!("s{index}")).await?;
    let (recipient, recipient_identity) = register(server, &format!("r{index}")).await?;
    let state = server.dir.path().join(format!("clients-{index}"));
    std::fs::create_dir_all(&state)?;
    let sender_mls = MlsClient::open(&state.join("s.db"), sender_identity, &format!("s{index}"))?;
    let recipient_mls = MlsClient::open(&state.join("r.db"), recipient_identity, &format!("r{index}"))?;
    let upload = v1::UploadKeyPackagesRequest {
        key_packages: recipient_mls.generate_key_packages(1)?.into_iter().map(Into::into).collect(),
        last_resort: recipient_mls.generate_last_resort_key_package()?.into(),
    };
    let _: v1::UploadKeyPackagesResponse = recipient.call(Method::UploadKeyPackages, &upload).await?;

    let group_id = format!("bench-grp{index:07}").into_bytes(); // group ids are 16 bytes
    let bootstrap = sender_mls.create_group(&group_id)?;
    let create = v1::CreateGroupRequest {
        group_id: group_id.clone().into(),
        name: format!("bench {index}"),
        kind: v1::GroupKind::Named as i32,
        group_info: bootstrap.group_info.into(),
        ratchet_tree: bootstrap.ratchet_tree.into(),
    };
    let _: v1::CreateGroupResponse = sender.call(Method::CreateGroup, &create).await?;
    let fetched: v1::FetchKeyPackageResponse =
        sender.call(Method::FetchKeyPackage, &v1::FetchKeyPackageRequest { username: format!("r{index}") }).await?;
    let pending = sender_mls.add_members(&group_id, &[fetched.key_package.to_vec()])?;
    let submit = v1::SubmitCommitRequest {
        group_id: group_id.clone().into(),
        epoch: pending.epoch,
        commit: pending.commit.into(),
        welcome: pending.welcome.unwrap_or_default().into(),
        message_id: b"add".to_vec().into(),
    };
    let _: v1::SubmitCommitResponse = sender.call(Method::SubmitCommit, &submit).await?;
    sender_mls.merge_pending_commit(&group_id)?;
    let ciphertext = sender_mls.encrypt(&group_id, &vec![b'x'; payload_len])?;

    // The Welcome and the commit are not part of the measurement.
    let fetched: v1::FetchResponse =
        recipient.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 10 }).await?;
    let _: v1::AckResponse = recipient.call(Method::Ack, &v1::AckRequest { up_to_seq: fetched.head_seq }).await?;
    Ok(Pair { sender, recipient, group_id: group_id.into(), ciphertext: ciphertext.into() })
}
