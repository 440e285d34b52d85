//! [`QpcClient`]: opening a profile, connecting and logging in, registering,
//! key-package stock, and the small queries (groups, members, safety numbers).
//!
//! All operations of one client are serialised by an async mutex around the
//! client's state: MLS state must change in one order, and the OpenMLS
//! storage provider is not `Sync`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quicprochat_core::names::{split_qualified, Naming};
use quicprochat_core::{auth_transcript, safety_number, AuthPurpose, Identity, MlsClient};
use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{PinnedServer, RpcClient};
use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use crate::acks::Acks;
use crate::bursts::SendQueue;
use crate::driver::{challenge, spawn_driver, ConnectionSlot, DriverHandle, LoginParams};
use crate::supervisor::{ConnectionStatus, SupervisorConfig};

use crate::local_store::LocalStore;
use crate::profile::Profile;
use crate::push_stream::KeptPush;
use crate::SdkError;

/// Tunables of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of every RPC.
    pub call_timeout: Duration,
    /// Deadline of a QUIC handshake when (re)connecting.
    pub connect_timeout: Duration,
    /// How many key packages to upload when the server's stock runs low.
    pub key_package_batch: usize,
    /// How many a newly linked device uploads first: the approving device
    /// adds it to every group of the account at once, one package each
    /// (default 100, the most one upload takes: enough for 100 groups;
    /// groups beyond wait for its refill and the next reconcile).
    pub linked_key_package_batch: usize,
    /// QUIC limits.
    pub transport: TransportLimits,
    /// Reconnect backoff and heartbeat.
    pub supervisor: SupervisorConfig,
    /// How long one call may wait in total for the server's retry-after
    /// hints (rate limits, a draining server) before failing.
    pub retry_budget: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            call_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            key_package_batch: 20,
            linked_key_package_batch: 100,
            transport: TransportLimits::default(),
            retry_budget: Duration::from_secs(10),
            supervisor: SupervisorConfig::default(),
        }
    }
}

/// A conversation with its current members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Display name (`@peer` for direct conversations).
    pub name: String,
    /// Members by username, sorted.
    pub members: Vec<String>,
}

/// The safety number shared by us and another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// The other user.
    pub user: String,
    /// 60 digits in groups of 5; both sides see the same digits.
    pub digits: String,
    /// The other user's account key (hex), as pinned here.
    pub their_key: String,
}

pub(crate) struct Inner {
    /// What processing needs no server for: account, MLS state, local store.
    pub(crate) local: Local,
    /// The current connection; the driver swaps it on reconnect.
    pub(crate) link: ConnectionSlot,
    /// The push stream `receive_wait` keeps between calls; the driver clears it on reconnect.
    pub(crate) push: KeptPush,
    /// The `Ack` in flight (`crate::acks`).
    pub(crate) acks: Acks,
    pub(crate) options: ClientOptions,
}

/// The part of a client that works without the server: the account name,
/// the MLS state and the local store. Processing a queue entry needs only
/// this (see `entries`); [`Inner`] derefs to it.
pub(crate) struct Local {
    pub(crate) username: String,
    /// Our account's key (the public key the account's devices are
    /// certified by); safety numbers are computed over it.
    pub(crate) account_key: Vec<u8>,
    pub(crate) mls: MlsClient,
    pub(crate) store: LocalStore,
}

impl std::ops::Deref for Inner {
    type Target = Local;
    fn deref(&self) -> &Local {
        &self.local
    }
}

impl std::ops::DerefMut for Inner {
    fn deref_mut(&mut self) -> &mut Local {
        &mut self.local
    }
}

/// A logged-in quicprochat client bound to one profile.
///
/// A background driver (see `crate::driver`) keeps the connection alive:
/// heartbeats, reconnects with backoff, login and resync after each
/// reconnect. [`QpcClient::status`] reports its state.
pub struct QpcClient {
    pub(crate) inner: Arc<Mutex<Inner>>,
    /// `Inner::push`, reachable without the client's lock: a cancelled
    /// `receive_wait` puts its stream back there (see `sync::ParkOnCancel`).
    pub(crate) push: KeptPush,
    /// Sends waiting for a burst (`crate::bursts`).
    pub(crate) sends: SendQueue,
    pub(crate) status: watch::Receiver<ConnectionStatus>,
    link: ConnectionSlot,
    driver: DriverHandle,
    username: String,
    server: SocketAddr,
    profile_dir: PathBuf,
}

impl QpcClient {
    /// Creates an account `username` on the server at `server` and stores it
    /// in `profile_dir` (which must not hold an account yet). The server's
    /// certificate is pinned on this first contact. `invite` is the token a
    /// server with the `invite` registration policy requires.
    pub async fn register(
        profile_dir: &Path,
        server: SocketAddr,
        username: &str,
        invite: Option<&str>,
        options: ClientOptions,
    ) -> Result<QpcClient, SdkError> {
        Profile::refuse_existing(profile_dir)?;
        let identity = Identity::generate()?;
        let rpc = RpcClient::connect(server, PinnedServer::new(None), &options.transport, options.call_timeout)
            .await?
            .with_retry_budget(options.retry_budget);
        let transcript = |nonce: &[u8], exporter: &[u8]| {
            auth_transcript(AuthPurpose::Register, nonce, exporter, username, identity.public_key())
        };
        let (nonce, exporter) = challenge(&rpc).await?;
        let request = v1::RegisterRequest {
            username: username.to_owned(),
            identity_key: identity.public_key().to_vec().into(),
            signature: identity.sign(&transcript(&nonce, &exporter))?.into(),
            invite_token: invite.unwrap_or_default().to_owned(),
        };
        let response: v1::RegisterResponse = rpc.call(Method::Register, &request).await?;
        let profile = Profile {
            dir: profile_dir.to_path_buf(),
            username: response.username,
            server,
            server_fingerprint: rpc.server_fingerprint(),
            identity,
            link: None,
        };
        profile.save()?;
        // A new account has no queue behind it yet: no instance to compare.
        let client = QpcClient::from_parts(profile, rpc, (0, response.max_send_messages), &response.domain, options)?;
        client.inner.lock().await.refill_key_packages(0, false).await?;
        Ok(client)
    }

    /// Opens the account in `profile_dir`, connects to its server (checking
    /// the pinned certificate) and logs in.
    pub async fn open(profile_dir: &Path, options: ClientOptions) -> Result<QpcClient, SdkError> {
        let profile = Profile::load(profile_dir)?;
        let (rpc, response) = LoginParams::from_profile(&profile, &options)?.connect_and_login().await?;
        let server = (response.server_instance, response.max_send_messages);
        let client = QpcClient::from_parts(profile, rpc, server, &response.domain, options)?;
        {
            let mut inner = client.inner.lock().await;
            inner.refill_key_packages(response.key_package_stock, response.has_last_resort).await?;
            inner.qualify_key_packages().await?;
            // Messages queued while offline (or by an earlier run) go out now.
            if let Err(error) = inner.flush_outbox().await {
                tracing::debug!(%error, "outbox not flushed at login");
            }
            // A device linked or removed since (and a crash halfway through
            // adding one): every group in step with the account's devices.
            if let Err(error) = inner.reconcile_devices_if_changed().await {
                tracing::warn!(%error, "groups not brought in step with this account's devices");
            }
        }
        Ok(client)
    }

    /// `domain`: the server's, when it federates (empty otherwise), as its
    /// login or registration answer told it; `server`: its instance and the
    /// most messages one `SendMessages` may carry there.
    fn from_parts(
        profile: Profile,
        rpc: RpcClient,
        (instance, max_send_messages): (u64, u32),
        domain: &str,
        options: ClientOptions,
    ) -> Result<QpcClient, SdkError> {
        let (mut mls, store) = profile.open_state()?;
        if !domain.is_empty() {
            mls = mls.with_home_domain(domain)?;
        }
        let account_key = profile.account_key().to_vec();
        let params = LoginParams::from_profile(&profile, &options)?;
        let link = ConnectionSlot::new(rpc, instance, max_send_messages);
        let push = KeptPush::default();
        let supervisor = options.supervisor.clone();
        let local = Local { username: profile.username.clone(), account_key, mls, store };
        local.pin_known_accounts()?;
        let inner = Arc::new(Mutex::new(Inner {
            local,
            link: link.clone(),
            push: push.clone(),
            acks: Acks::default(),
            options,
        }));
        let (status_tx, status) = watch::channel(ConnectionStatus::Connected);
        let driver = spawn_driver(params, link.clone(), Arc::downgrade(&inner), status_tx, supervisor);
        Ok(QpcClient {
            inner,
            push,
            sends: SendQueue::default(),
            status,
            link,
            driver,
            username: profile.username,
            server: profile.server,
            profile_dir: profile.dir,
        })
    }

    /// The connection state, as a stream of changes (`Connected`,
    /// `Reconnecting { attempt, next_try }`, `Offline`).
    pub fn status(&self) -> watch::Receiver<ConnectionStatus> {
        self.status.clone()
    }

    /// Moves the connection to a new local UDP socket (e.g. after the
    /// network changed); QUIC migrates the connection, no new login needed.
    pub fn rebind(&self) -> Result<(), SdkError> {
        let rpc = self.link.get();
        let local = rpc.endpoint().local_addr().map_err(quicprochat_rpc::RpcError::Io)?;
        let socket = std::net::UdpSocket::bind((local.ip(), 0)).map_err(quicprochat_rpc::RpcError::Io)?;
        rpc.endpoint().rebind(socket).map_err(quicprochat_rpc::RpcError::Io)?;
        Ok(())
    }

    /// The local UDP address the connection currently uses.
    pub fn local_addr(&self) -> Result<SocketAddr, SdkError> {
        Ok(self.link.get().endpoint().local_addr().map_err(quicprochat_rpc::RpcError::Io)?)
    }

    /// Our username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The server address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The profile directory.
    pub fn profile_dir(&self) -> &Path {
        &self.profile_dir
    }

    /// The pinned server certificate fingerprint.
    pub async fn server_fingerprint(&self) -> quicprochat_rpc::CertFingerprint {
        self.link.get().server_fingerprint()
    }

    /// Our conversations that are still active, with their members.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, SdkError> {
        let inner = self.inner.lock().await;
        let mut summaries = Vec::new();
        for conversation in inner.store.conversations()?.into_iter().filter(|c| c.active) {
            let members = inner.mls.members(&conversation.group_id)?;
            summaries.push(GroupSummary { name: conversation.display_name(), members });
        }
        Ok(summaries)
    }

    /// Current members of a conversation (`NAME` or `@user`).
    pub async fn members(&self, target: &str) -> Result<Vec<String>, SdkError> {
        let inner = self.inner.lock().await;
        let conversation = inner.active_conversation(target)?;
        Ok(inner.mls.members(&conversation.group_id)?)
    }

    /// The safety number between us and `user`, over both account keys
    /// (so it does not change when either links or removes a device). The
    /// server's key for `user` must be the one pinned here. Compare the
    /// digits out of band.
    pub async fn safety_number(&self, user: &str) -> Result<SafetyNumber, SdkError> {
        let inner = self.inner.lock().await;
        let naming = Naming::at_home(inner.mls.home_domain());
        let user = naming.read(user.trim_start_matches('@'));
        let request = v1::ResolveUserRequest { username: user.clone() };
        let response: v1::ResolveUserResponse = inner.rpc().call(Method::ResolveUser, &request).await?;
        // The key the server reports must be the one pinned here (first
        // seen in a group, a key package or an earlier `verify`).
        inner.check_and_pin(&user, &response.identity_key)?;
        // Both sides must hash the same two names: users of one server
        // their bare names (as before it federated), users of two servers
        // their qualified ones.
        let me = match split_qualified(&user) {
            Some(_) => naming.qualified(&inner.username),
            None => inner.username.clone(),
        };
        Ok(SafetyNumber {
            digits: safety_number(&me, &inner.account_key, &user, &response.identity_key),
            user,
            their_key: hex::encode(&response.identity_key),
        })
    }

    /// Closes the connection to the server and stops reconnecting.
    pub async fn disconnect(&self) {
        // The last batch's `Ack` first, so the server can drop its entries.
        self.inner.lock().await.acks.settle().await;
        self.driver.stop().await;
        self.link.get().close().await;
    }
}

/// `meta` key: 1 once key packages naming us `username@domain` were
/// uploaded (see `Inner::qualify_key_packages`).
const QUALIFIED_KEY_PACKAGES: &str = "qualified_key_packages";

impl Inner {
    /// The current connection.
    pub(crate) fn rpc(&self) -> RpcClient {
        self.link.get()
    }

    /// Uploads a batch of key packages (and a last-resort one if missing)
    /// when the server's stock is below its low-water mark.
    pub(crate) async fn refill_key_packages(&mut self, stock: u32, has_last_resort: bool) -> Result<(), SdkError> {
        const LOW_WATER: u32 = 10;
        if stock >= LOW_WATER && has_last_resort {
            return Ok(());
        }
        let key_packages = self.mls.generate_key_packages(self.options.key_package_batch)?;
        let last_resort = if has_last_resort { Vec::new() } else { self.mls.generate_last_resort_key_package()? };
        let request = v1::UploadKeyPackagesRequest {
            key_packages: key_packages.into_iter().map(Into::into).collect(),
            last_resort: last_resort.into(),
        };
        let response: v1::UploadKeyPackagesResponse = self.rpc().call(Method::UploadKeyPackages, &request).await?;
        tracing::debug!(stock = response.stock, "uploaded key packages");
        if self.mls.home_domain().is_some() {
            // This batch names us `username@domain`.
            self.store.set_meta(QUALIFIED_KEY_PACKAGES, 1)?;
        }
        Ok(())
    }

    /// Once the server federates: uploads a fresh batch of key packages
    /// naming us `username@domain` (and a new last-resort one), once, so that
    /// other servers are served packages that name us with our domain.
    pub(crate) async fn qualify_key_packages(&mut self) -> Result<(), SdkError> {
        if self.mls.home_domain().is_none() || self.store.meta(QUALIFIED_KEY_PACKAGES)? == 1 {
            return Ok(());
        }
        self.refill_key_packages(0, false).await?;
        self.store.set_meta(QUALIFIED_KEY_PACKAGES, 1)?;
        Ok(())
    }

    /// Asks the server for our stock and refills if low.
    pub(crate) async fn check_key_package_stock(&mut self) -> Result<(), SdkError> {
        let response: v1::KeyPackageStockResponse =
            self.rpc().call(Method::KeyPackageStock, &v1::KeyPackageStockRequest {}).await?;
        if response.stock < response.low_water || !response.has_last_resort {
            self.refill_key_packages(response.stock, response.has_last_resort).await?;
        }
        Ok(())
    }

    /// The active conversation `target` names: a group name, or `@user` for
    /// the direct conversation with `user` whose MLS roster is checked.
    pub(crate) fn active_conversation(&self, target: &str) -> Result<crate::local_store::Conversation, SdkError> {
        let found = match target.strip_prefix('@') {
            Some(peer) => self.verified_direct(peer)?,
            None => self.store.find_active(target)?,
        };
        found.ok_or_else(|| SdkError::InvalidInput(format!("no conversation named {target:?} (see `qpc group list`)")))
    }
}
