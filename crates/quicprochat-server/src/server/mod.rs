//! Start-up, the accept loop and shutdown.
//!
//! Shutdown (on [`RunningServer::shutdown`] or a signal in `main`): stop
//! accepting connections, answer new RPCs `UNAVAILABLE`, let in-flight RPCs
//! finish (they are counted by a task tracker, not slept on) up to the grace
//! period, then close every connection, handshakes in progress included,
//! with the application close code "server shutting down". The waits after
//! that are bounded too ([`CLOSE_LINGER`]), and then every task holding a
//! quinn handle, ours (`transport::Tasks`) and quinn's drivers
//! (`transport::DriverTasks`), is ended: when `shutdown()` returns, the UDP
//! socket is closed and a new server can bind the address at once.

use std::net::SocketAddr;
use std::sync::Arc;

use quicprochat_rpc::federation::federation_server_config;
use quicprochat_rpc::tls::{load_or_generate_server_identity, ServerIdentity};
use quicprochat_rpc::transport::{server_config, IncomingLimits};
use quicprochat_rpc::{CertFingerprint, RpcError, CLOSE_SERVER_SHUTDOWN};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::snapshots::{self, ViewSource};
use crate::http::serve_http;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiters;
use crate::storage::{SqliteStore, StorageExecutor, Store, StoreError, TimedStore};
use crate::transport::federation::{Federation, PeerStatus, PeerTable};

mod sockets;

use crate::transport::{handle_connection, Admission, Admissions, DriverTasks, Mailboxes, ServerState, Tasks};
use crate::ServerConfig;
use sockets::{bind_endpoint, bind_metrics};

/// How often rate-limit state is pruned and the queue-depth gauge refreshed.
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long shutdown waits, after closing the endpoint, for connection
/// tasks to end and then for quinn to finish closing connections (so peers
/// hear the close code); a handshake abandoned without a round-trip sample
/// would otherwise keep the socket for 3 × PTO, about 3 s.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// The database holds federated data of another domain: names and
    /// groups other servers know under it cannot move to a new one.
    #[error(
        "this data dir's database was used for federation as {recorded}, but server.domain is {configured}: \
         a server's domain cannot change once it federates (use {recorded}, or a new data dir)"
    )]
    DomainChanged {
        /// The domain recorded in the database.
        recorded: String,
        /// The configured `server.domain`.
        configured: String,
    },
    /// A peer's pins include this server's own certificate: a copied data
    /// dir, or a pin pasted into the wrong config.
    #[error("federation.peers: the pin of {peer} is this server's own certificate ({fingerprint})")]
    OwnPin {
        /// The peer listing it.
        peer: String,
        /// Our certificate's fingerprint.
        fingerprint: CertFingerprint,
    },
    /// A configured plugin could not be loaded or refused to start.
    #[error("plugins")]
    Plugin(#[from] crate::plugins::PluginError),
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
    federation: Option<Arc<Federation>>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// The server's TLS identity: the certificate and key in the data dir,
/// generated on first use. Clients and peer servers pin its fingerprint
/// (`qpc-server federation fingerprint` prints it).
pub fn server_identity(config: &ServerConfig) -> Result<ServerIdentity, ServerError> {
    let names = vec![config.domain.clone(), "localhost".to_owned(), "qpc-server".to_owned()];
    Ok(load_or_generate_server_identity(&config.data_dir, &names)?)
}

impl RunningServer {
    /// Opens the data dir, the database and the listener, and starts serving.
    pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
        let metrics = Metrics::new();
        let (store, executor) = open_store(&config, &metrics).await?;
        if config.federation.listen.is_some() {
            pin_domain(&store, &config.domain).await?;
        }
        let identity = Arc::new(server_identity(&config)?);
        // Before any socket: a plugin that cannot start stops the start.
        let plugins = crate::plugins::Plugins::start(&config.plugins, &metrics).await?;
        let incoming = IncomingLimits {
            max_pending_handshakes: config.connections.max_pending_handshakes,
            incoming_buffer_bytes: config.connections.incoming_buffer_bytes,
        };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind_metrics(addr).await?),
            None => None,
        };
        // The QUIC sockets are bound last: no start-up error can follow that
        // would leave quinn's tasks holding them.
        let drivers = DriverTasks::default();
        let quic_config = server_config(&identity, &config.transport, incoming)?;
        let peers = PeerTable::new(&config.federation.peers, metrics.clone());
        if let Some(peer) = peers.pins().domain_of(&identity.fingerprint()) {
            return Err(ServerError::OwnPin { peer: peer.to_owned(), fingerprint: identity.fingerprint() });
        }
        let federation_endpoint = match config.federation.listen {
            Some(listen) => {
                let federation_config = federation_server_config(&identity, peers.pins(), &config.transport, incoming)?;
                let receive_buffer = config.connections.udp_receive_buffer_bytes;
                Some(bind_endpoint(listen, receive_buffer, federation_config, &drivers)?)
            }
            None => None,
        };
        let bound = bind_endpoint(config.listen, config.connections.udp_receive_buffer_bytes, quic_config, &drivers);
        let (endpoint, local_addr) = match bound {
            Ok(bound) => bound,
            Err(error) => {
                drop(federation_endpoint);
                drivers.stop().await;
                return Err(error.into());
            }
        };
        let federation = federation_endpoint.map(|(endpoint, local_addr)| {
            Arc::new(Federation {
                domain: config.domain.clone(),
                endpoint,
                local_addr,
                identity: identity.clone(),
                peers,
                senders: tokio_util::task::TaskTracker::new(),
                workers_done: CancellationToken::new(),
                metrics: metrics.clone(),
            })
        });
        let shutdown = CancellationToken::new();
        let http_shutdown = CancellationToken::new();
        let (http, metrics_addr) = match metrics_listener {
            Some((listener, bound)) => {
                let http = tokio::spawn(serve_http(listener, metrics.clone(), metrics.clone(), http_shutdown.clone()));
                tracing::info!(%bound, "metrics and health on http://{bound}/metrics and /healthz");
                (Some(http), Some(bound))
            }
            None => (None, None),
        };
        let state = Arc::new(ServerState {
            store,
            executor,
            mailboxes: Arc::new(Mailboxes::default()),
            views: Arc::default(),
            config: config.clone(),
            instance: rand::random::<u64>().max(1),
            shutdown: shutdown.clone(),
            tasks: Tasks::default(),
            admissions: Arc::new(Admissions::default()),
            limiters: Arc::new(RateLimiters::new(&config.rate_limits)),
            links: crate::transport::link_relay::LinkRelay::new(config.link_code_ttl),
            metrics,
            federation: federation.clone(),
            plugins,
        });
        tracing::info!(
            %local_addr,
            fingerprint = %identity.fingerprint(),
            key_exchange = quicprochat_rpc::tls::KEY_EXCHANGE_GROUP,
            data_dir = %config.data_dir.display(),
            "qpc-server listening"
        );
        if let Some(federation) = &federation {
            federation.start(&state);
        }
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let expiry = tokio::spawn(crate::expiry::expire_until_shutdown(state.clone()));
        let federation_for_shutdown = federation.clone();
        let task = tokio::spawn(async move {
            serve(endpoint, federation_for_shutdown, drivers, state).await;
            let _ = housekeeping.await;
            let _ = expiry.await;
            http_shutdown.cancel();
            if let Some(mut http) = http {
                // Graceful first; a client holding a request open cannot keep the port.
                if tokio::time::timeout(CLOSE_LINGER, &mut http).await.is_err() {
                    http.abort();
                    let _ = http.await;
                }
            }
            tracing::info!("qpc-server stopped");
        });
        Ok(RunningServer { local_addr, metrics_addr, fingerprint: identity.fingerprint(), federation, shutdown, task })
    }

    /// The bound address of the federation port, if federation is on.
    pub fn federation_addr(&self) -> Option<SocketAddr> {
        self.federation.as_ref().map(|federation| federation.local_addr)
    }

    /// What this server knows of each configured peer now.
    pub fn federation_peers(&self) -> Vec<PeerStatus> {
        self.federation.as_ref().map(|federation| federation.peers.status()).unwrap_or_default()
    }

    /// Waits up to `bound` until the status of peer `domain` satisfies
    /// `condition`; returns it, or `None` on timeout (or when federation
    /// is off or `domain` is no peer).
    pub async fn wait_for_peer(
        &self,
        domain: &str,
        bound: std::time::Duration,
        condition: impl Fn(&PeerStatus) -> bool,
    ) -> Option<PeerStatus> {
        self.federation.as_ref()?.peers.wait_for(domain, bound, condition).await
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

    /// Shuts down gracefully and waits until the server has stopped: its
    /// tasks have ended and its sockets are closed, so a new server can
    /// bind the same addresses at once.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Opens the data dir and the database: the store (with storage metrics)
/// and its storage thread.
async fn open_store(
    config: &ServerConfig,
    metrics: &Metrics,
) -> Result<(Arc<dyn Store>, Arc<dyn StorageExecutor>), ServerError> {
    let data_dir_error = |source| ServerError::DataDir { path: config.data_dir.display().to_string(), source };
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
    let db_path = config.data_dir.join("qpc-server.db");
    let sqlite =
        Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(db_path)).await.map_err(|join| {
            ServerError::DataDir { path: "database open task".into(), source: std::io::Error::other(join) }
        })??);
    let executor: Arc<dyn StorageExecutor> = sqlite.clone();
    Ok((Arc::new(TimedStore::new(sqlite, metrics.clone())), executor))
}

/// Records `domain` as the database's domain, or refuses to start when the
/// database federated under another one.
async fn pin_domain(store: &Arc<dyn Store>, domain: &str) -> Result<(), ServerError> {
    let (store, pinned) = (store.clone(), domain.to_owned());
    let recorded = tokio::task::spawn_blocking(move || store.pin_domain(&pinned))
        .await
        .map_err(|join| ServerError::DataDir { path: "database task".into(), source: std::io::Error::other(join) })??;
    match recorded {
        Some(recorded) => Err(ServerError::DomainChanged { recorded, configured: domain.to_owned() }),
        None => Ok(()),
    }
}

/// Applies the admission policy to one connection attempt.
fn admit(incoming: quinn::Incoming, state: &Arc<ServerState>) {
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
            state.tasks.spawn_connection_task(handle_connection(incoming, state.clone(), guard));
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

/// Periodic upkeep until shutdown: forget idle rate-limit keys, end the
/// pushes of disabled accounts, refresh the queue-depth gauge, trim queues
/// over their quota and snapshot every group with logged commits.
async fn housekeeping(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    let mut sweep: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        state.limiters.retain_recent();
        end_pushes_of_disabled_accounts(&state).await;
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || store.total_queue_depth()).await {
            Ok(Ok(depth)) => state.metrics.set_queue_depth(depth),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read queue depth"),
            Err(_) => return,
        }
        if !crate::expiry::trim_all_queues(&state).await {
            return;
        }
        // Groups whose log no snapshot covers yet (at start: also commits
        // logged before the last stop). One sweep at a time: a sweep still
        // running when the next is due (many or large groups) is left to
        // finish, and the next starts on a later tick.
        if sweep.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
            sweep = Some(spawn_snapshot_sweep(&state));
        } else {
            tracing::debug!("the last snapshot sweep is still running; this one is skipped");
        }
    }
}

/// Snapshots every group with logged commits on a blocking thread (views
/// kept or restored); the handle ends when the sweep does.
fn spawn_snapshot_sweep(state: &ServerState) -> tokio::task::JoinHandle<()> {
    let (store, views) = (state.store.clone(), state.views.clone());
    tokio::task::spawn_blocking(move || {
        let source = ViewSource::KeptOrRestored;
        report_sweep(source, snapshots::snapshot_logged_groups(&*store, &views, source));
    })
}

/// Logs what a sweep of the logged groups did.
fn report_sweep(source: ViewSource, swept: Result<usize, crate::domain::DomainError>) {
    match swept {
        Ok(written) => tracing::debug!(written, ?source, "group snapshots stored"),
        Err(error) => tracing::warn!(%error, "cannot list groups with logged commits"),
    }
}

/// Ends the push subscriptions of accounts disabled since (`qpc-server
/// users disable` writes the database from another process, so the server
/// learns of it here, within one housekeeping interval; their Fetch, Ack
/// and Subscribe are refused at once).
async fn end_pushes_of_disabled_accounts(state: &ServerState) {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.disabled_accounts()).await {
        Ok(Ok(disabled)) => {
            for user in &disabled {
                state.mailboxes.end_user(user);
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot list disabled accounts"),
        Err(_) => {}
    }
}

async fn serve(
    endpoint: quinn::Endpoint,
    federation: Option<Arc<Federation>>,
    drivers: DriverTasks,
    state: Arc<ServerState>,
) {
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => admit(incoming, &state),
                None => break,
            },
        }
    }
    shut_down(endpoint, federation, drivers, &state).await;
}

/// Drains, closes every connection, and ends every task holding the socket.
async fn shut_down(
    endpoint: quinn::Endpoint,
    federation: Option<Arc<Federation>>,
    drivers: DriverTasks,
    state: &ServerState,
) {
    state.metrics.set_draining(true);
    tracing::info!(in_flight = state.tasks.rpcs_in_flight(), "shutting down: no new connections or RPCs");
    endpoint.set_server_config(None);
    let federation_endpoint = federation.as_ref().map(|federation| federation.endpoint.clone());
    if let Some(federation) = &federation_endpoint {
        federation.set_server_config(None);
    }
    let grace_ends = tokio::time::Instant::now() + state.config.shutdown_grace;
    if let Err(abandoned) = state.tasks.drain_rpcs(state.config.shutdown_grace).await {
        tracing::warn!(abandoned, "grace period over with RPCs still running");
    }
    if let Some(federation) = &federation {
        federation.drain_for_shutdown(grace_ends).await;
    }
    endpoint.close(CLOSE_SERVER_SHUTDOWN.into(), b"server shutting down");
    if let Some(federation) = &federation_endpoint {
        federation.close(CLOSE_SERVER_SHUTDOWN.into(), b"server shutting down");
    }
    if let Err(running) = state.tasks.wait_connections(CLOSE_LINGER).await {
        tracing::warn!(running, "connection tasks still running after the close; ending them");
    }
    state.tasks.abort().await;
    let idle = async {
        endpoint.wait_idle().await;
        if let Some(federation) = &federation_endpoint {
            federation.wait_idle().await;
        }
    };
    if tokio::time::timeout(CLOSE_LINGER, idle).await.is_err() {
        tracing::debug!(open = endpoint.open_connections(), "connections still closing; ending them");
    }
    drop(endpoint);
    drop(federation_endpoint);
    drivers.stop().await;
    // Logged commits of groups whose view is still decoded: snapshotting
    // them now is cheap and leaves the next start less to replay.
    snapshot_kept_groups(state).await;
    // Last: plugins may flush what they saw of the drain.
    state.plugins.shut_down(state.config.shutdown_grace).await;
}

/// Snapshots every group with logged commits whose view is still kept, on
/// a blocking thread, waiting at most the shutdown grace period for it.
async fn snapshot_kept_groups(state: &ServerState) {
    let (store, views) = (state.store.clone(), state.views.clone());
    let source = ViewSource::Kept;
    let sweep = tokio::task::spawn_blocking(move || snapshots::snapshot_logged_groups(&*store, &views, source));
    match tokio::time::timeout(state.config.shutdown_grace, sweep).await {
        Ok(Ok(swept)) => report_sweep(source, swept),
        Ok(Err(_)) | Err(_) => tracing::warn!(?source, "group snapshots did not finish"),
    }
}
