//! Start-up, the accept loop and shutdown.
//!
//! Shutdown (on [`RunningServer::shutdown`] or a signal in `main`): stop
//! accepting connections and streams, let in-flight RPCs finish (they are
//! counted by a task tracker, not slept on) up to the grace period, then close
//! every connection with the application close code "server shutting down".

use std::net::SocketAddr;
use std::sync::Arc;

use quicprochat_rpc::tls::load_or_generate_server_identity;
use quicprochat_rpc::transport::{server_endpoint, IncomingLimits};
use quicprochat_rpc::{CertFingerprint, RpcError, CLOSE_SERVER_SHUTDOWN};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::serve_http;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiters;
use crate::storage::{SqliteStore, Store, StoreError, TimedStore};
use crate::transport::{handle_connection, Admission, Admissions, Notifier, ServerState};
use crate::ServerConfig;

/// How often rate-limit state is pruned and the queue-depth gauge refreshed.
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// Messages name the failing part only; the cause is the `source()` chain
/// (printed by `qpc-server` as `part: cause`).
pub enum ServerError {
    /// The data directory cannot be created or used.
    #[error("data dir {path}")]
    DataDir {
        /// The directory.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("database")]
    Store(#[from] StoreError),
    /// TLS or the QUIC endpoint could not be set up (e.g. the address is taken).
    #[error("listener")]
    Listen(#[from] RpcError),
    /// The metrics/health HTTP listener could not be bound.
    #[error("metrics listener {addr}")]
    MetricsListen {
        /// The configured address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

/// A server running on the current tokio runtime.
pub struct RunningServer {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    fingerprint: CertFingerprint,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Opens the data dir, the database and the listener, and starts serving.
    pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
        let data_dir_error = |source| ServerError::DataDir { path: config.data_dir.display().to_string(), source };
        std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
        let db_path = config.data_dir.join("qpc-server.db");
        let sqlite: Arc<dyn Store> =
            Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(db_path)).await.map_err(|join| {
                ServerError::DataDir { path: "database open task".into(), source: std::io::Error::other(join) }
            })??);
        let metrics = Metrics::new();
        let store: Arc<dyn Store> = Arc::new(TimedStore::new(sqlite, metrics.clone()));
        let names = vec![config.domain.clone(), "localhost".to_owned(), "qpc-server".to_owned()];
        let identity = load_or_generate_server_identity(&config.data_dir, &names)?;
        let incoming = IncomingLimits {
            max_pending_handshakes: config.connections.max_pending_handshakes,
            incoming_buffer_bytes: config.connections.incoming_buffer_bytes,
        };
        let endpoint = server_endpoint(config.listen, &identity, &config.transport, incoming)?;
        let local_addr = endpoint.local_addr().map_err(RpcError::Io)?;
        let shutdown = CancellationToken::new();
        let http_shutdown = CancellationToken::new();
        let metrics_addr = match config.metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::MetricsListen { addr, source })?;
                let bound = listener.local_addr().map_err(|source| ServerError::MetricsListen { addr, source })?;
                tokio::spawn(serve_http(listener, metrics.clone(), metrics.clone(), http_shutdown.clone()));
                tracing::info!(%bound, "metrics and health on http://{bound}/metrics and /healthz");
                Some(bound)
            }
            None => None,
        };
        let state = Arc::new(ServerState {
            store,
            notifier: Notifier::default(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            rpcs: TaskTracker::new(),
            admissions: Arc::new(Admissions::default()),
            limiters: RateLimiters::new(&config.rate_limits),
            metrics,
        });
        tracing::info!(
            %local_addr,
            fingerprint = %identity.fingerprint(),
            key_exchange = quicprochat_rpc::tls::KEY_EXCHANGE_GROUP,
            data_dir = %config.data_dir.display(),
            "qpc-server listening"
        );
        tokio::spawn(housekeeping(state.clone()));
        let task = tokio::spawn(async move {
            serve(endpoint, state).await;
            http_shutdown.cancel();
        });
        Ok(RunningServer { local_addr, metrics_addr, fingerprint: identity.fingerprint(), shutdown, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound metrics/health HTTP address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The certificate fingerprint clients pin.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// A token that, when cancelled, shuts the server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Applies the admission policy to one connection attempt.
fn admit(incoming: quinn::Incoming, state: &Arc<ServerState>, connections: &TaskTracker) {
    let ip = incoming.remote_address().ip();
    let decision = state.admissions.decide(
        &state.config.connections,
        ip,
        incoming.remote_address_validated(),
        incoming.may_retry(),
    );
    match decision {
        Admission::Accept => {
            let guard = state.admissions.admit(ip);
            connections.spawn(handle_connection(incoming, state.clone(), guard));
        }
        Admission::Retry => {
            if incoming.retry().is_err() {
                tracing::debug!(%ip, "retry impossible; connection attempt dropped");
            }
        }
        Admission::Refuse => {
            tracing::debug!(%ip, "refused: too many connections from this address");
            incoming.refuse();
        }
    }
}

/// Periodic upkeep until shutdown: forget idle rate-limit keys and refresh
/// the queue-depth gauge.
async fn housekeeping(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        state.limiters.retain_recent();
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || store.total_queue_depth()).await {
            Ok(Ok(depth)) => state.metrics.set_queue_depth(depth),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read queue depth"),
            Err(_) => return,
        }
    }
}

async fn serve(endpoint: quinn::Endpoint, state: Arc<ServerState>) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => admit(incoming, &state, &connections),
                None => break,
            },
        }
    }
    state.metrics.set_draining(true);
    tracing::info!(in_flight = state.rpcs.len(), "shutting down: no new connections or RPCs");
    endpoint.set_server_config(None);
    state.rpcs.close();
    if tokio::time::timeout(state.config.shutdown_grace, state.rpcs.wait()).await.is_err() {
        tracing::warn!(abandoned = state.rpcs.len(), "grace period over with RPCs still running");
    }
    endpoint.close(CLOSE_SERVER_SHUTDOWN.into(), b"server shutting down");
    connections.close();
    let _ = tokio::time::timeout(state.config.shutdown_grace, connections.wait()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
    tracing::info!("qpc-server stopped");
}
