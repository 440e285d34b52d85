//! The QUIC side of the server: one task per connection, one per RPC
//! stream, and one per push subscription.
//!
//! - `session`: per-connection login state (challenge, TLS exporter, user).
//! - `connection`: accepting streams, reading the request frame, applying
//!   the RPC deadline, writing the response frame.
//! - `dispatch`: decoding each method's request, calling the domain (on the
//!   storage thread for sends and acks, on a blocking thread otherwise),
//!   encoding the response; `sending`: `SendMessage` and `SendMessages`
//!   (a burst in order, one storage job).
//! - `push`: the server-opened stream that pushes queue entries to a
//!   subscribed connection; `mailbox`: how the send path hands it the
//!   entries it just stored, so a push needs no storage read.
//! - `federation`: the federation port (peer servers, ALPN `qpc-fed/1`);
//! - `link_relay`: pending device links between a new device and an
//!   approving one (in memory, minutes long).
//! - `tasks`: every task of ours holding a quinn handle is spawned there;
//!   `drivers`: quinn's own tasks, spawned through the endpoint's runtime.
//!   Shutdown ends both, so the socket is closed when it returns.

mod admission;
mod connection;
mod dispatch;
mod drivers;
pub(crate) mod federation;
pub(crate) mod link_relay;
mod mailbox;
mod push;
mod sending;
mod session;
mod tasks;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::rate_limit::RateLimiters;
use crate::storage::{StorageExecutor, Store};
use crate::ServerConfig;

pub(crate) use admission::{Admission, Admissions};
pub(crate) use connection::handle_connection;
pub(crate) use drivers::DriverTasks;
pub(crate) use mailbox::Mailboxes;
pub(crate) use tasks::Tasks;

/// What every connection task shares.
pub(crate) struct ServerState {
    pub(crate) store: Arc<dyn Store>,
    /// Runs the hot requests (send, ack) in batches on the storage thread.
    pub(crate) executor: Arc<dyn StorageExecutor>,
    /// Where the send path hands stored entries to push tasks.
    pub(crate) mailboxes: Arc<Mailboxes>,
    /// Decoded group views kept between commits.
    pub(crate) views: Arc<crate::domain::views::ViewCache>,
    pub(crate) config: ServerConfig,
    /// Random and never 0, new at every start; told to clients at login
    /// (`LoginResponse.server_instance`).
    pub(crate) instance: u64,
    /// Cancelled when the server starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Every task holding a quinn handle, so shutdown can drain and end them.
    pub(crate) tasks: Tasks,
    /// Pending handshakes and connections per source address.
    pub(crate) admissions: Arc<Admissions>,
    /// Every metric the server exports.
    pub(crate) metrics: Metrics,
    /// Per-address and per-account rate limits.
    pub(crate) limiters: Arc<RateLimiters>,
    /// Device links waiting for approval.
    pub(crate) links: link_relay::LinkRelay,
    /// The federation port and its peers, when `federation.listen` is set.
    pub(crate) federation: Option<Arc<federation::Federation>>,
    /// Loaded plugins (none unless `[[plugins]]` are configured).
    pub(crate) plugins: crate::plugins::Plugins,
}
