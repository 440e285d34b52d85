//! The `Ack` after a committed batch, off the caller's path.
//!
//! A batch of queue entries is acknowledged only after it is durable on the
//! device (its transaction committed), but the caller need not wait for the
//! server's answer before showing the messages: the `Ack` runs in a task of
//! its own. At most one is in flight; the next waits for it, and
//! `QpcClient::disconnect` waits for the last. A failed `Ack` is only
//! logged: acks are cumulative, so the next one covers its entries, and the
//! device never fetches them again (it fetches from its stored cursor).

use quicprochat_proto::{v1, Method};
use quicprochat_rpc::{RpcClient, RpcError};
use tokio::task::JoinHandle;

/// The `Ack` in flight, if any.
#[derive(Default)]
pub(crate) struct Acks {
    in_flight: Option<JoinHandle<Result<(), RpcError>>>,
}

impl Acks {
    /// Acknowledges every entry up to `up_to_seq` on `rpc` (the connection
    /// the entries came from), after the one in flight.
    pub(crate) async fn send(&mut self, rpc: RpcClient, up_to_seq: u64) {
        self.settle().await;
        self.in_flight = Some(tokio::spawn(async move {
            let _: v1::AckResponse = rpc.call(Method::Ack, &v1::AckRequest { up_to_seq }).await?;
            Ok(())
        }));
    }

    /// Waits for the `Ack` in flight to be answered (or to fail).
    pub(crate) async fn settle(&mut self) {
        let Some(in_flight) = self.in_flight.take() else { return };
        match in_flight.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "an ack failed; the next one covers its entries"),
            Err(error) => tracing::warn!(%error, "an ack's task failed"),
        }
    }
}
