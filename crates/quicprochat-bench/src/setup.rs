//! The system under test: an in-process `qpc-server` on a temporary data
//! dir (embedded SQLite, `synchronous=FULL`), with limits raised so that the
//! load generator measures the server rather than its rate limiter. Also the
//! client steps every suite shares: connect, register, log in, subscribe,
//! and running many of them with a bounded number in flight. B3's pairs are
//! `pairs.rs`; further devices of an account, `devices.rs`.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quicprochat_core::{auth_transcript, AuthPurpose, Identity, MlsClient};
use quicprochat_proto::{v1, Method};
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{CertFingerprint, PinnedServer, PushStream, RpcClient, CLOSE_CLIENT_DONE};
use quicprochat_server::config::RateLimit;
use quicprochat_server::{RunningServer, ServerConfig};
use tokio::task::JoinSet;

/// How long one setup call may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server on a temporary directory, removed on drop.
pub(crate) struct BenchServer {
    pub(crate) server: RunningServer,
    pub(crate) dir: tempfile::TempDir,
}

/// Where a server listens and the certificate clients pin for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerAddress {
    pub(crate) addr: SocketAddr,
    pub(crate) fingerprint: CertFingerprint,
}

impl ServerAddress {
    pub(crate) fn pin(&self) -> PinnedServer {
        PinnedServer::new(Some(self.fingerprint))
    }
}

impl BenchServer {
    pub(crate) fn address(&self) -> ServerAddress {
        ServerAddress { addr: self.server.local_addr(), fingerprint: self.server.fingerprint() }
    }
}

/// The transport limits the load generator's server and clients use: more
/// concurrent RPCs per connection than the default, nothing else changed.
pub(crate) fn bench_transport() -> TransportLimits {
    TransportLimits { max_concurrent_rpcs: 1024, ..TransportLimits::default() }
}

/// The bench configuration on `data_dir`: every per-address and per-account
/// rate limit raised, the given transport limits, the rest the defaults.
pub(crate) fn bench_config(data_dir: &Path, listen: SocketAddr, transport: TransportLimits) -> ServerConfig {
    let mut config = ServerConfig::new(data_dir.to_path_buf(), listen);
    let unlimited = RateLimit { burst: 1_000_000, period: Duration::from_secs(1) };
    config.rate_limits.register_per_address = unlimited;
    config.rate_limits.key_package_fetch_per_requester = unlimited;
    config.rate_limits.key_package_fetch_per_target = unlimited;
    config.rate_limits.last_resort_per_pair = unlimited;
    config.rate_limits.send_per_account = unlimited;
    config.rate_limits.commit_per_account = unlimited;
    config.rate_limits.create_group_per_account = unlimited;
    config.connections.per_address = 100_000;
    config.transport = transport;
    config
}

/// Starts the server with every per-address and per-account limit raised.
pub(crate) async fn start_server() -> anyhow::Result<BenchServer> {
    start_server_with(bench_transport()).await
}

/// Like [`start_server`], with the given transport limits.
pub(crate) async fn start_server_with(transport: TransportLimits) -> anyhow::Result<BenchServer> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let config = bench_config(&dir.path().join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), transport);
    let server = RunningServer::start(config).await.context("start qpc-server")?;
    Ok(BenchServer { server, dir })
}

pub(crate) async fn connect(addr: SocketAddr, pin: PinnedServer) -> anyhow::Result<RpcClient> {
    connect_with(addr, pin, &bench_transport()).await
}

/// A connection with the given client-side transport limits.
pub(crate) async fn connect_with(
    addr: SocketAddr,
    pin: PinnedServer,
    limits: &TransportLimits,
) -> anyhow::Result<RpcClient> {
    let rpc = RpcClient::connect(addr, pin, limits, SETUP_TIMEOUT).await.context("connect")?;
    Ok(rpc.with_retry_budget(Duration::ZERO))
}

/// Closes `rpc` without waiting for the close to be acknowledged.
pub(crate) fn close_now(rpc: &RpcClient) {
    rpc.connection().close(CLOSE_CLIENT_DONE.into(), b"bench done");
}

/// Uploads `packages` of `owner` on its connection `owner_rpc`, then has
/// `fetcher` fetch as many of `owner`'s: the server adds a member only with
/// a package served to the committer (one add per fetch).
pub(crate) async fn serve_key_packages(
    owner_rpc: &RpcClient,
    owner: &str,
    packages: Vec<Vec<u8>>,
    fetcher: &RpcClient,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let count = packages.len();
    for chunk in packages.chunks(100) {
        let upload = v1::UploadKeyPackagesRequest {
            key_packages: chunk.iter().cloned().map(Into::into).collect(),
            last_resort: Bytes::new(),
        };
        let _: v1::UploadKeyPackagesResponse =
            owner_rpc.call(Method::UploadKeyPackages, &upload).await.context("upload key packages")?;
    }
    let mut served = Vec::with_capacity(count);
    for _ in 0..count {
        let request = v1::FetchKeyPackageRequest { username: owner.to_owned(), device_id: Default::default() };
        let fetched: v1::FetchKeyPackageResponse =
            fetcher.call(Method::FetchKeyPackage, &request).await.context("fetch a key package")?;
        served.push(fetched.key_package.to_vec());
    }
    Ok(served)
}

/// A new connection registered (and so logged in) as `name`.
pub(crate) async fn register(server: ServerAddress, name: &str) -> anyhow::Result<(RpcClient, Identity)> {
    let rpc = connect(server.addr, server.pin()).await?;
    let identity = Identity::generate()?;
    register_on(&rpc, name, &identity).await?;
    Ok((rpc, identity))
}

/// Registers `name` with `identity` on an existing connection (which is then logged in).
pub(crate) async fn register_on(rpc: &RpcClient, name: &str, identity: &Identity) -> anyhow::Result<()> {
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
    Ok(())
}

/// Logs in as `name` on an existing connection, as the SDK does on every connect.
pub(crate) async fn login_on(rpc: &RpcClient, name: &str, identity: &Identity) -> anyhow::Result<()> {
    let challenge: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await?;
    let exporter = rpc.auth_exporter()?;
    let transcript = auth_transcript(AuthPurpose::Login, &challenge.nonce, &exporter, name, identity.public_key());
    let request = v1::LoginRequest {
        username: name.into(),
        signature: identity.sign(&transcript)?.into(),
        device_key: Default::default(),
    };
    let _: v1::LoginResponse = rpc.call(Method::Login, &request).await.with_context(|| format!("log in {name}"))?;
    Ok(())
}

/// Subscribes from the start of the queue and waits for the server's push stream.
pub(crate) async fn subscribe(rpc: &RpcClient) -> anyhow::Result<PushStream> {
    let _: v1::SubscribeResponse = rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq: 0 }).await?;
    Ok(rpc.accept_push().await?)
}

/// Registers every name, at most `in_flight` at once; connections in name order.
pub(crate) async fn register_many(
    server: ServerAddress,
    names: &[String],
    in_flight: usize,
) -> anyhow::Result<Vec<(RpcClient, Identity)>> {
    let names = std::sync::Arc::new(names.to_vec());
    bounded(names.len(), in_flight, |index| {
        let names = names.clone();
        async move { register(server, &names[index]).await }
    })
    .await
    .into_iter()
    .collect()
}

/// Runs `task(index)` for every index below `count`, at most `in_flight` at
/// once (each on its own tokio task); results in index order.
pub(crate) async fn bounded<T, F, Fut>(count: usize, in_flight: usize, task: F) -> Vec<anyhow::Result<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut results: Vec<Option<anyhow::Result<T>>> = (0..count).map(|_| None).collect();
    let mut running = JoinSet::new();
    let mut next = 0;
    loop {
        while next < count && running.len() < in_flight.max(1) {
            let started = task(next);
            let index = next;
            running.spawn(async move { (index, started.await) });
            next += 1;
        }
        match running.join_next().await {
            Some(Ok((index, result))) => results[index] = Some(result),
            // Its slot stays empty and is reported as an error below.
            Some(Err(join)) => eprintln!("a bench task failed: {join}"),
            None => break,
        }
    }
    results.into_iter().map(|result| result.unwrap_or_else(|| Err(anyhow::anyhow!("task panicked")))).collect()
}

/// Creates the MLS group `group_id` with `mls` and registers it with the
/// server as a named group called `name`.
pub(crate) async fn create_named_group(
    rpc: &RpcClient,
    mls: &MlsClient,
    group_id: &[u8],
    name: String,
) -> anyhow::Result<()> {
    let bootstrap = mls.create_group(group_id)?;
    let create = v1::CreateGroupRequest {
        group_id: group_id.to_vec().into(),
        name,
        kind: v1::GroupKind::Named as i32,
        group_info: bootstrap.group_info.into(),
        ratchet_tree: bootstrap.ratchet_tree.into(),
    };
    let _: v1::CreateGroupResponse = rpc.call(Method::CreateGroup, &create).await?;
    Ok(())
}

/// Adds `key_packages` to the group with one commit of `mls`, submitted
/// under `message_id` and merged once the server took it.
pub(crate) async fn add_and_merge(
    rpc: &RpcClient,
    mls: &MlsClient,
    group_id: &[u8],
    key_packages: &[Vec<u8>],
    message_id: &[u8],
) -> anyhow::Result<()> {
    let pending = mls.add_members(group_id, key_packages)?;
    let submit = v1::SubmitCommitRequest {
        group_id: group_id.to_vec().into(),
        epoch: pending.epoch,
        commit: pending.commit.into(),
        welcome: pending.welcome.unwrap_or_default().into(),
        message_id: message_id.to_vec().into(),
    };
    let _: v1::SubmitCommitResponse = rpc.call(Method::SubmitCommit, &submit).await?;
    mls.merge_pending_commit(group_id)?;
    Ok(())
}
