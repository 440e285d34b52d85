//! The push stream: after `Subscribe`, the server opens a unidirectional
//! stream and sends every queue entry with `seq > after_seq` as it arrives.
//!
//! The loop registers for wake-ups *before* reading the queue, so an entry
//! enqueued between the read and the wait is never missed; it reads by
//! cursor, so a push carries no gaps.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use quicprochat_proto::v1::PushEvent;
use quicprochat_proto::Frame;
use quicprochat_rpc::stream::write_frame;

use super::dispatch::queue_entry;
use super::ServerState;

const PUSH_BATCH: u32 = 100;

/// Pushes `username`'s queue to `connection` until either side goes away.
pub(crate) async fn push_loop(
    connection: quinn::Connection,
    state: Arc<ServerState>,
    username: String,
    after_seq: u64,
) {
    let mut send = match connection.open_uni().await {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%error, "cannot open push stream");
            return;
        }
    };
    // An empty first event makes the stream visible to the client at once
    // (QUIC announces a stream only with its first bytes).
    let hello = PushEvent { entries: Vec::new() };
    if write_frame(&mut send, &Frame::push(Bytes::from(hello.encode_to_vec()))).await.is_err() {
        return;
    }
    let notify = state.notifier.handle(&username);
    let mut cursor = after_seq;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let store = state.store.clone();
        let user = username.clone();
        let fetched = tokio::task::spawn_blocking(move || store.fetch(&user, cursor, PUSH_BATCH)).await;
        let entries = match fetched {
            Ok(Ok(queue)) => queue.items,
            Ok(Err(error)) => {
                tracing::warn!(%error, "push: cannot read queue");
                return;
            }
            Err(_) => return,
        };
        if let Some(last) = entries.last() {
            cursor = last.seq;
            let event = PushEvent { entries: entries.into_iter().map(queue_entry).collect() };
            if write_frame(&mut send, &Frame::push(Bytes::from(event.encode_to_vec()))).await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = state.shutdown.cancelled() => {
                let _ = send.finish();
                return;
            }
            _ = connection.closed() => return,
        }
    }
}
