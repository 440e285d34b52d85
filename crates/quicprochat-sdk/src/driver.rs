//! The connection driver: the async side of [`crate::supervisor`].
//!
//! One task per [`crate::QpcClient`] performs the supervisor's actions
//! (connect and log in, heartbeat with `Ping`, resync after each connect,
//! close) and feeds it events (connection closed, heartbeat answered, timer
//! due). The current connection lives in a [`ConnectionSlot`] that client
//! operations read, so a reconnect never waits for a running operation.
//! Status changes are published on a `watch` channel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Instant;

use quicprochat_core::{auth_transcript, AuthPurpose, Identity};
use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::{CertFingerprint, PinnedServer, RpcClient, RpcError, CLOSE_CLIENT_DONE};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::client::{ClientOptions, Inner};
use crate::profile::Profile;
use crate::supervisor::{ConnectionStatus, Supervisor, SupervisorAction, SupervisorConfig};
use crate::SdkError;

/// The current connection, shared by the client's operations and the driver,
/// with the server instance it logged in to (`LoginResponse.server_instance`;
/// 0 when not told) and the most messages one `SendMessages` may carry there
/// (`LoginResponse.max_send_messages`; 0: send one `SendMessage` at a time).
#[derive(Clone)]
pub(crate) struct ConnectionSlot(Arc<StdMutex<(RpcClient, u64, u32)>>);

impl ConnectionSlot {
    pub(crate) fn new(rpc: RpcClient, instance: u64, max_send_messages: u32) -> ConnectionSlot {
        ConnectionSlot(Arc::new(StdMutex::new((rpc, instance, max_send_messages))))
    }

    /// The current connection (a cheap clone).
    pub(crate) fn get(&self) -> RpcClient {
        self.current().0
    }

    /// The current connection and the server instance it logged in to.
    pub(crate) fn current(&self) -> (RpcClient, u64) {
        let (rpc, instance, _) = self.slot().clone();
        (rpc, instance)
    }

    /// The most messages one `SendMessages` may carry on the current
    /// connection's server (0: it has none).
    pub(crate) fn max_send_messages(&self) -> u32 {
        self.slot().2
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, (RpcClient, u64, u32)> {
        // Each update is one assignment, consistent under a panic elsewhere.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn replace(&self, rpc: RpcClient, instance: u64, max_send_messages: u32) {
        *self.slot() = (rpc, instance, max_send_messages);
    }
}

/// Everything needed to (re)connect and log in.
pub(crate) struct LoginParams {
    server: SocketAddr,
    fingerprint: CertFingerprint,
    username: String,
    identity: Identity,
    options: ClientOptions,
}

impl LoginParams {
    pub(crate) fn from_profile(profile: &Profile, options: &ClientOptions) -> Result<LoginParams, SdkError> {
        Ok(LoginParams {
            server: profile.server,
            fingerprint: profile.server_fingerprint,
            username: profile.username.clone(),
            identity: Identity::from_bytes(&profile.identity.to_bytes())?,
            options: options.clone(),
        })
    }

    /// Connects (checking the pinned certificate) and logs in.
    pub(crate) async fn connect_and_login(&self) -> Result<(RpcClient, v1::LoginResponse), SdkError> {
        let options = &self.options;
        let pin = PinnedServer::new(Some(self.fingerprint));
        let connect = RpcClient::connect(self.server, pin, &options.transport, options.call_timeout);
        let rpc = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| RpcError::Timeout {
                method: Method::Challenge,
                timeout_ms: options.connect_timeout.as_millis() as u64,
            })??
            .with_retry_budget(options.retry_budget);
        let (nonce, exporter) = challenge(&rpc).await?;
        let transcript =
            auth_transcript(AuthPurpose::Login, &nonce, &exporter, &self.username, self.identity.public_key());
        let request = v1::LoginRequest {
            username: self.username.clone(),
            signature: self.identity.sign(&transcript)?.into(),
            // This device's key (the account key itself on the first device).
            device_key: self.identity.public_key().to_vec().into(),
        };
        let response: v1::LoginResponse = rpc.call(Method::Login, &request).await?;
        Ok((rpc, response))
    }
}

/// Asks for a login challenge; returns it with the connection's exporter.
pub(crate) async fn challenge(rpc: &RpcClient) -> Result<(Vec<u8>, [u8; 32]), SdkError> {
    let response: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await?;
    Ok((response.nonce.to_vec(), rpc.auth_exporter()?))
}

/// Stops the driver (on `disconnect()` or when the client is dropped).
pub(crate) struct DriverHandle {
    task: StdMutex<Option<JoinHandle<()>>>,
    status: watch::Sender<ConnectionStatus>,
}

impl DriverHandle {
    /// Stops the driver at once (even mid-attempt) and reports `Offline`.
    pub(crate) async fn stop(&self) {
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.status.send_if_modified(|status| {
            let changed = *status != ConnectionStatus::Offline;
            *status = ConnectionStatus::Offline;
            changed
        });
    }
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
    }
}

/// Starts the driver for a client that is already connected and logged in.
pub(crate) fn spawn_driver(
    params: LoginParams,
    link: ConnectionSlot,
    inner: Weak<Mutex<Inner>>,
    status: watch::Sender<ConnectionStatus>,
    config: SupervisorConfig,
) -> DriverHandle {
    let handle_status = status.clone();
    let driver =
        Driver { params, link, inner, status, supervisor: Supervisor::new(config, rand::random(), Instant::now()) };
    let task = tokio::spawn(driver.run());
    DriverHandle { task: StdMutex::new(Some(task)), status: handle_status }
}

struct Driver {
    params: LoginParams,
    link: ConnectionSlot,
    inner: Weak<Mutex<Inner>>,
    status: watch::Sender<ConnectionStatus>,
    supervisor: Supervisor,
}

impl Driver {
    async fn run(mut self) {
        // The client connected before starting us: the first Connect is done.
        while let Some(action) = self.supervisor.poll_action() {
            if let SupervisorAction::Connect { .. } = action {
                break;
            }
        }
        self.supervisor.handle_connected(Instant::now());
        loop {
            while let Some(action) = self.supervisor.poll_action() {
                self.perform(action).await;
            }
            if self.supervisor.status() == ConnectionStatus::Offline && self.supervisor.poll_timeout().is_none() {
                // Offline for good: a failure that retrying cannot fix (e.g. the
                // pinned certificate changed) or too many failed attempts.
                return;
            }
            let connection = self.link.get().connection().clone();
            let connected = self.supervisor.status() == ConnectionStatus::Connected;
            let deadline = self.supervisor.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = connection.closed(), if connected => self.supervisor.handle_connection_lost(Instant::now()),
                _ = sleep_until(deadline) => self.supervisor.handle_timeout(Instant::now()),
            }
        }
    }

    async fn perform(&mut self, action: SupervisorAction) {
        match action {
            SupervisorAction::Connect { attempt } => {
                tracing::debug!(attempt, "connecting");
                let budget = self.params.options.connect_timeout + self.params.options.call_timeout;
                let result = tokio::time::timeout(budget, self.params.connect_and_login()).await;
                match result {
                    Ok(Ok((rpc, login))) => {
                        self.link.replace(rpc, login.server_instance, login.max_send_messages);
                        self.supervisor.handle_connected(Instant::now());
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "connect attempt failed");
                        self.supervisor.handle_connect_failed(Instant::now(), error.is_retryable());
                    }
                    Err(_elapsed) => self.supervisor.handle_connect_failed(Instant::now(), true),
                }
            }
            SupervisorAction::SendHeartbeat { id } => {
                let rpc = self.link.get();
                let ping = rpc.call::<_, v1::PingResponse>(Method::Ping, &v1::PingRequest {});
                let timeout = self.params.options.supervisor.heartbeat_timeout;
                if let Ok(Ok(_)) = tokio::time::timeout(timeout, ping).await {
                    self.supervisor.handle_heartbeat_ok(id, Instant::now());
                }
            }
            SupervisorAction::Resync => {
                // Its own task: a user operation may hold the client's lock.
                if let Some(inner) = self.inner.upgrade() {
                    tokio::spawn(async move {
                        let mut inner = inner.lock().await;
                        inner.push.clear();
                        if let Err(error) = inner.sync_and_settle().await {
                            tracing::debug!(%error, "resync after connect failed");
                        }
                    });
                }
            }
            SupervisorAction::CloseConnection { reason } => {
                tracing::debug!(?reason, "closing connection");
                self.link.get().connection().close(CLOSE_CLIENT_DONE.into(), b"client closed");
            }
            SupervisorAction::StatusChanged(status) => {
                tracing::info!(?status, "connection status");
                self.status.send_replace(status);
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
