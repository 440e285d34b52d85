//! The push stream: after `Subscribe`, the server opens a unidirectional
//! stream and sends every queue entry with `seq > after_seq` as it arrives.
//!
//! The task registers its mailbox *before* reading the queue, so an entry
//! stored between the read and the wait is never missed. Fresh entries come
//! from the mailbox without a storage read as long as their seqs follow the
//! cursor without a gap; anything else is re-read from the queue by cursor,
//! so a push carries no gaps and no duplicates.
//!
//! A connection has at most one push task (a new `Subscribe` ends the old
//! one) and an account a few (`mailbox::MAX_SUBSCRIPTIONS_PER_ACCOUNT`), so
//! what subscriptions hold is bounded by connections, not by requests.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use quicprochat_proto::v1::{PushEvent, QueueEntry};
use quicprochat_proto::Frame;
use quicprochat_rpc::stream::write_frame;
use tokio_util::sync::CancellationToken;

use super::dispatch::queue_entry;
use super::mailbox::{Mailbox, Taken};
use super::ServerState;

/// Application error code of a push stream reset because its subscription
/// ended (replaced by a newer one, evicted, or the account disabled).
pub(crate) const PUSH_ENDED: u32 = 0x51;

/// Entries read from the queue at a time.
const PUSH_BATCH: u32 = 100;
/// Encoded entry bytes per push frame (a frame carries at least one entry).
const PUSH_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Pushes the device queue `queue` to `connection` until either side goes away,
/// shutdown, or `ended` (a newer `Subscribe` on the connection, too many
/// subscriptions of the account, the account disabled). Ending drops the
/// task at whatever it waits on, a write blocked by flow control included,
/// with the entries it holds, and resets the stream.
pub(crate) async fn push_loop(
    connection: quinn::Connection,
    state: Arc<ServerState>,
    queue: String,
    after_seq: u64,
    ended: CancellationToken,
) {
    state.metrics.push_started();
    let _counted = PushCounted(&state.metrics);
    // The client may never give credit for another stream: a replaced
    // subscription must not wait for it.
    let opened = tokio::select! {
        biased;
        () = ended.cancelled() => return,
        opened = connection.open_uni() => opened,
    };
    let mut send = match opened {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%error, "cannot open push stream");
            return;
        }
    };
    let registration = state.mailboxes.register(&queue, ended);
    let mailbox = Arc::clone(registration.mailbox());
    let stopped = tokio::select! {
        biased;
        () = mailbox.ended() => true,
        () = pump(&connection, &state, &queue, after_seq, &mailbox, &mut send) => false,
    };
    if stopped {
        tracing::debug!(%queue, "push subscription ended");
        let _ = send.reset(PUSH_ENDED.into());
    }
}

/// Counts a running push task in `qpc_push_subscriptions` until dropped.
struct PushCounted<'a>(&'a crate::metrics::Metrics);

impl Drop for PushCounted<'_> {
    fn drop(&mut self) {
        self.0.push_ended();
    }
}

/// The body of [`push_loop`]: the stream's opening event, then the queue
/// after `after_seq` and whatever reaches `mailbox`.
async fn pump(
    connection: &quinn::Connection,
    state: &ServerState,
    queue: &str,
    after_seq: u64,
    mailbox: &Mailbox,
    send: &mut quinn::SendStream,
) {
    // An empty first event makes the stream visible to the client at once
    // (QUIC announces a stream only with its first bytes).
    if write_event(send, Vec::new()).await.is_err() {
        return;
    }
    let mut cursor = after_seq;
    let mut reread = true;
    loop {
        if reread {
            let store = state.store.clone();
            let user = queue.to_owned();
            let entries = match tokio::task::spawn_blocking(move || store.fetch(&user, cursor, PUSH_BATCH)).await {
                Ok(Ok(queue)) => queue.items,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "push: cannot read queue");
                    return;
                }
                Err(_) => return,
            };
            if let Some(last) = entries.last() {
                cursor = last.seq;
                if write_event(send, entries.into_iter().map(queue_entry).collect()).await.is_err() {
                    return;
                }
                continue;
            }
        }
        let (fresh, gap) = in_order(mailbox.take(), &mut cursor);
        reread = gap;
        if !fresh.is_empty() {
            if write_event(send, fresh).await.is_err() {
                return;
            }
            continue;
        }
        if reread {
            continue;
        }
        tokio::select! {
            _ = mailbox.delivered() => {}
            _ = state.shutdown.cancelled() => {
                let _ = send.finish();
                return;
            }
            _ = connection.closed() => return,
        }
    }
}

/// The taken entries that continue `cursor` without a gap, each with its
/// seq, and whether the queue must be re-read. Entries at or below the
/// cursor were pushed already; the first gap stops the run (the re-read
/// finds the missing entry and everything after it).
fn in_order(taken: Taken, cursor: &mut u64) -> (Vec<QueueEntry>, bool) {
    if taken.reread {
        return (Vec::new(), true);
    }
    let mut fresh = Vec::with_capacity(taken.entries.len());
    for (seq, entry) in taken.entries {
        if seq <= *cursor {
            continue;
        }
        if Some(seq) != cursor.checked_add(1) {
            return (fresh, true);
        }
        let mut entry = QueueEntry::clone(&entry);
        entry.seq = seq;
        fresh.push(entry);
        *cursor = seq;
    }
    (fresh, false)
}

/// Writes `entries` as push events of at most [`PUSH_FRAME_BYTES`] each
/// (one event when empty, as the stream's opening).
async fn write_event(send: &mut quinn::SendStream, entries: Vec<QueueEntry>) -> Result<(), ()> {
    let mut event = PushEvent { entries: Vec::new() };
    let mut size = 0usize;
    for entry in entries {
        let len = entry.encoded_len();
        if !event.entries.is_empty() && size + len > PUSH_FRAME_BYTES {
            write_one(send, &event).await?;
            event.entries.clear();
            size = 0;
        }
        size += len;
        event.entries.push(entry);
    }
    write_one(send, &event).await
}

async fn write_one(send: &mut quinn::SendStream, event: &PushEvent) -> Result<(), ()> {
    write_frame(send, &Frame::push(Bytes::from(event.encode_to_vec()))).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(seqs: &[u64], reread: bool) -> Taken {
        let entry = Arc::new(QueueEntry::default());
        Taken { entries: seqs.iter().map(|seq| (*seq, Arc::clone(&entry))).collect(), reread }
    }

    fn pushed(entries: &[QueueEntry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.seq).collect()
    }

    #[test]
    fn contiguous_entries_are_pushed_with_their_seqs() {
        let mut cursor = 4;
        let (fresh, reread) = in_order(taken(&[5, 6, 7], false), &mut cursor);
        assert_eq!((pushed(&fresh), reread, cursor), (vec![5, 6, 7], false, 7));
    }

    #[test]
    fn entries_already_pushed_are_skipped() {
        let mut cursor = 6;
        let (fresh, reread) = in_order(taken(&[5, 6, 7, 6], false), &mut cursor);
        assert_eq!((pushed(&fresh), reread, cursor), (vec![7], false, 7));
    }

    #[test]
    fn a_gap_stops_the_run_and_asks_for_a_reread() {
        let mut cursor = 4;
        let (fresh, reread) = in_order(taken(&[5, 7, 6], false), &mut cursor);
        assert_eq!((pushed(&fresh), reread, cursor), (vec![5], true, 5));
    }

    #[test]
    fn a_reread_flag_pushes_nothing_from_the_mailbox() {
        let mut cursor = 4;
        let (fresh, reread) = in_order(taken(&[5], true), &mut cursor);
        assert_eq!((pushed(&fresh), reread, cursor), (vec![], true, 4));
    }

    #[test]
    fn the_cursor_never_overflows() {
        let mut cursor = u64::MAX;
        let (fresh, reread) = in_order(taken(&[u64::MAX], false), &mut cursor);
        assert_eq!((pushed(&fresh), reread), (vec![], false));
    }

    #[test]
    fn the_largest_deliverable_entry_fits_in_a_fetch_answer_and_a_push_event() {
        use crate::domain::accounts::MAX_USERNAME_LEN;
        use crate::domain::commits::MAX_ENTRY_PAYLOAD_LEN;
        use crate::domain::groups::{GROUP_ID_LEN, MAX_GROUP_NAME_LEN};
        use crate::domain::MAX_MESSAGE_ID_LEN;
        use quicprochat_proto::v1::FetchResponse;
        use quicprochat_proto::Method;
        // Every field at its largest: a 4-byte character in every place of
        // the group name, a federated sender with the longest DNS name.
        let entry = QueueEntry {
            seq: u64::MAX,
            message_id: vec![0xff; MAX_MESSAGE_ID_LEN].into(),
            group_id: vec![0xff; GROUP_ID_LEN].into(),
            group_name: "\u{1F510}".repeat(MAX_GROUP_NAME_LEN),
            group_kind: i32::MAX,
            sender: format!("{}@{}", "u".repeat(MAX_USERNAME_LEN), "d".repeat(253)),
            kind: i32::MAX,
            payload: vec![0xff; MAX_ENTRY_PAYLOAD_LEN].into(),
            stored_at_ms: u64::MAX,
            epoch: u64::MAX,
        };
        let fetch = FetchResponse { entries: vec![entry.clone()], head_seq: u64::MAX };
        assert!(fetch.encoded_len() <= Method::Fetch.max_response_len() as usize, "{}", fetch.encoded_len());
        let push = PushEvent { entries: vec![entry] };
        assert!(push.encoded_len() <= Method::Push.max_request_len() as usize, "{}", push.encoded_len());
    }
}
