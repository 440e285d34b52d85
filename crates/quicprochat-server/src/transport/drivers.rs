//! quinn's own tasks, tracked: the endpoint driver and one driver per
//! connection.
//!
//! quinn runs each endpoint and connection on a background task it spawns
//! through its [`quinn::Runtime`], and every one of them holds the UDP
//! socket. With the stock `TokioRuntime` they are detached: after the last
//! `Endpoint` handle is dropped the endpoint driver still has to be polled
//! once more to end, and a closed connection's driver lives on for 3 × PTO
//! (about 3 s for a handshake that never got a round-trip sample). So the
//! port stayed bound after shutdown. [`DriverTasks`] is `TokioRuntime` except
//! that it spawns on a [`TaskTracker`], and [`DriverTasks::stop`] ends them
//! all and returns once they are dropped, that is, once the socket is closed.
//!
//! It does not decide when to stop: `server::shut_down` calls `stop` after
//! every connection was closed and given its bounded time to drain, and
//! after every task of ours holding a quinn handle has ended.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The [`quinn::Runtime`] of the server endpoint: tokio, with quinn's tasks tracked.
#[derive(Debug, Clone, Default)]
pub(crate) struct DriverTasks {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl DriverTasks {
    /// Ends every driver still running (a connection still draining stops
    /// answering its peer) and waits until all of them are dropped.
    ///
    /// Call it after the endpoint handle and every connection handle are
    /// dropped: then nothing holds the socket any more when this returns.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Runtime for DriverTasks {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        TokioRuntime.new_timer(deadline)
    }

    fn spawn(&self, driver: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.tasks.spawn(self.stop.clone().run_until_cancelled_owned(driver));
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        TokioRuntime.wrap_udp_socket(socket)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}
