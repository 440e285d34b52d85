//! Our tasks that hold quinn handles: in-flight RPCs, connections (from
//! the start of their handshake) and push streams.
//!
//! Every such task is spawned here, never with a bare `tokio::spawn`: a
//! `quinn::Connection`, stream or `Incoming` kept alive by a forgotten task
//! keeps the UDP socket open after shutdown. Shutdown waits for the RPCs
//! (draining), then for the connection tasks, each within a bound, and then
//! [`Tasks::abort`] drops whatever is still running. Deciding those bounds
//! is `server::shut_down`'s business, not this module's.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's tasks that hold quinn handles, in two groups.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    /// In-flight RPCs, drained first.
    rpcs: TaskTracker,
    /// Handshakes, connections and push streams; they end once their
    /// connection is closed.
    connections: TaskTracker,
    /// Cancelled when shutdown stops waiting: every task still running is
    /// dropped at its next `.await`.
    abort: CancellationToken,
}

impl Tasks {
    /// Runs one RPC (one request stream).
    pub(crate) fn spawn_rpc(&self, rpc: impl Future<Output = ()> + Send + 'static) {
        self.rpcs.spawn(self.abort.clone().run_until_cancelled_owned(rpc));
    }

    /// Runs a connection's handshake and stream loop, or its push stream.
    pub(crate) fn spawn_connection_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.connections.spawn(self.abort.clone().run_until_cancelled_owned(task));
    }

    /// RPCs running now.
    pub(crate) fn rpcs_in_flight(&self) -> usize {
        self.rpcs.len()
    }

    /// Waits up to `bound` until no RPC is running; RPCs that start
    /// meanwhile are waited for too. `Err` carries how many still run.
    pub(crate) async fn drain_rpcs(&self, bound: Duration) -> Result<(), usize> {
        self.rpcs.close();
        match tokio::time::timeout(bound, self.rpcs.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.rpcs.len()),
        }
    }

    /// Waits up to `bound` until every connection and push task ended.
    /// `Err` carries how many still run.
    pub(crate) async fn wait_connections(&self, bound: Duration) -> Result<(), usize> {
        self.connections.close();
        match tokio::time::timeout(bound, self.connections.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.connections.len()),
        }
    }

    /// Drops every task still running and waits until all are gone. Tasks
    /// spawned afterwards are dropped before they run.
    pub(crate) async fn abort(&self) {
        self.abort.cancel();
        self.rpcs.close();
        self.connections.close();
        self.rpcs.wait().await;
        self.connections.wait().await;
    }
}
