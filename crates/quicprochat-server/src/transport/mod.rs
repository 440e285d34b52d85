//! The QUIC side of the server: one task per connection, one per RPC
//! stream, and one per push subscription.
//!
//! - `session`: per-connection login state (challenge, TLS exporter, user).
//! - `connection`: accepting streams, reading the request frame, applying
//!   the RPC deadline, writing the response frame.
//! - `dispatch`: decoding each method's request, calling the domain on a
//!   blocking thread, encoding the response.
//! - `push`: the server-opened stream that pushes queue entries to a
//!   subscribed connection.
//! - `tasks`: every task of ours holding a quinn handle is spawned there;
//!   `drivers`: quinn's own tasks, spawned through the endpoint's runtime.
//!   Shutdown ends both, so the socket is closed when it returns.

mod admission;
mod connection;
mod dispatch;
mod drivers;
mod push;
mod session;
mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::rate_limit::RateLimiters;
use crate::storage::Store;
use crate::ServerConfig;

pub(crate) use admission::{Admission, Admissions};
pub(crate) use connection::handle_connection;
pub(crate) use drivers::DriverTasks;
pub(crate) use tasks::Tasks;

/// What every connection task shares.
pub(crate) struct ServerState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) notifier: Notifier,
    pub(crate) config: ServerConfig,
    /// Cancelled when the server starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Every task holding a quinn handle, so shutdown can drain and end them.
    pub(crate) tasks: Tasks,
    /// Pending handshakes and connections per source address.
    pub(crate) admissions: Arc<Admissions>,
    /// Every metric the server exports.
    pub(crate) metrics: Metrics,
    /// Per-address and per-account rate limits.
    pub(crate) limiters: RateLimiters,
}

/// Wakes push tasks when a user's queue grows.
#[derive(Default)]
pub(crate) struct Notifier {
    by_user: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Notifier {
    /// The wake-up handle of `username`'s queue.
    pub(crate) fn handle(&self, username: &str) -> Arc<Notify> {
        match self.by_user.lock() {
            Ok(mut map) => map.entry(username.to_owned()).or_default().clone(),
            // A poisoned map only means another task panicked mid-insert; a fresh
            // handle is still correct (push also re-fetches by cursor).
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Wakes every push task of these users.
    pub(crate) fn notify<'a>(&self, usernames: impl IntoIterator<Item = &'a str>) {
        let Ok(map) = self.by_user.lock() else { return };
        for username in usernames {
            if let Some(notify) = map.get(username) {
                notify.notify_waiters();
            }
        }
    }
}
