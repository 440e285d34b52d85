//! Receiving: fetch the server queue from the stored cursor (or take the
//! entries the server pushed, when they continue the cursor), process every
//! entry (Welcomes, commits, proposals, application messages), store the
//! results, advance the cursor durably, and only then acknowledge.
//!
//! A message delivered twice is shown once: the local store is keyed by
//! (sender, message id). A broken entry is logged and skipped, never allowed
//! to block the queue.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::{PushStream, RpcClient};

use crate::client::{Inner, Local, QpcClient};
use crate::entries::EntryEffect;
use crate::local_store::StoredMessage;
use crate::push_stream::{with_ready_events, ParkOnCancel};
use crate::SdkError;

const CURSOR_KEY: &str = "delivery_cursor";
/// The server instance (`LoginResponse.server_instance`) the cursor was
/// last checked against ([`Inner::rewind_cursor`]).
const INSTANCE_KEY: &str = "server_instance";
/// Queue entries that expired on the server before this device fetched
/// them, not yet reported by [`QpcClient::take_expired_count`].
const EXPIRED_KEY: &str = "expired_entries";
pub(crate) const FETCH_LIMIT: u32 = 200;

/// How many seqs `entries` (in order) skip past `cursor`. The server gives
/// each account's entries consecutive seqs and deletes them only when
/// acknowledged (never past our cursor) or when its retention period
/// passed (oldest first), so a skipped seq is an entry that expired.
fn skipped(cursor: u64, entries: &[v1::QueueEntry]) -> u64 {
    let mut last = cursor;
    let mut skipped = 0u64;
    for entry in entries.iter().filter(|entry| entry.seq > cursor) {
        skipped = skipped.saturating_add(entry.seq.saturating_sub(last).saturating_sub(1));
        last = last.max(entry.seq);
    }
    skipped
}

/// Whether pushed entries (all past `cursor`, in order) continue it
/// without a gap, so they can be processed without a fetch.
fn continues(cursor: u64, fresh: &[v1::QueueEntry]) -> bool {
    let mut expected = cursor;
    fresh.iter().all(|entry| {
        let next = expected.checked_add(1) == Some(entry.seq);
        expected = entry.seq;
        next
    })
}

/// Whether a fetch of `count` entries from `cursor`, the last with seq
/// `last_seq`, reached the end of a queue whose head is `head_seq`. The
/// server also stops at a byte budget, so a short answer is the end only
/// when it reached the head; an answer that moved nothing forward ends the
/// loop too, whatever the server claims.
fn caught_up(count: usize, cursor: u64, last_seq: u64, head_seq: u64) -> bool {
    count == 0 || last_seq <= cursor || (count < FETCH_LIMIT as usize && last_seq >= head_seq)
}

impl QpcClient {
    /// Fetches and processes everything waiting on the server and returns
    /// the messages not shown before (oldest first), marking them shown.
    pub async fn receive(&self) -> Result<Vec<StoredMessage>, SdkError> {
        let mut inner = self.inner.lock().await;
        inner.sync_and_settle().await?;
        Ok(inner.store.take_unshown()?)
    }

    /// How many queue entries expired on the server before this device
    /// fetched them (the server's retention period passed), since the last
    /// call; the count starts again at 0. Anything but 0 means messages or
    /// group changes were lost: a group whose commits expired can no longer
    /// be read until its members add this user again.
    pub async fn take_expired_count(&self) -> Result<u64, SdkError> {
        let inner = self.inner.lock().await;
        let expired = inner.store.meta(EXPIRED_KEY)?;
        if expired > 0 {
            inner.store.set_meta(EXPIRED_KEY, 0)?;
        }
        Ok(expired)
    }

    /// Fetches and processes everything waiting on the server (joins,
    /// membership changes, messages) without marking messages as shown.
    pub async fn sync(&self) -> Result<(), SdkError> {
        self.inner.lock().await.sync_and_settle().await
    }

    /// Returns the messages not shown before, waiting up to `wait` for the
    /// server to push one if there are none. Survives reconnects: while the
    /// connection is down it waits for the driver to restore it. Queued
    /// sends are retried on every round.
    ///
    /// Pushed entries that continue the cursor are processed as they
    /// arrive, without a fetch; every event already arrived is taken with
    /// them, so one `Ack` covers a burst. The push stream is kept for the
    /// next call only once everything it delivered is processed, so a call
    /// that fetches whenever it holds no stream (the first, after a
    /// reconnect, after a gap in the pushed seqs, a failure, or a
    /// cancellation while processing) never leaves anything behind. A call
    /// cancelled while it waits on the stream leaves the stream to the next.
    pub async fn receive_wait(&self, wait: Duration) -> Result<Vec<StoredMessage>, SdkError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut status = self.status.clone();
        let mut fetch = true;
        {
            let mut inner = self.inner.lock().await;
            if self.push.holds() {
                // A kept push stream has everything after the cursor on its
                // way: no fetch, only what is queued or processed here.
                fetch = false;
                if let Err(error) = inner.flush_outbox().await {
                    tracing::debug!(%error, "outbox not flushed");
                }
                // Shown nowhere yet, e.g. processed by a send's catch-up.
                let unshown = inner.store.take_unshown()?;
                if !unshown.is_empty() {
                    return Ok(unshown);
                }
            }
        }
        // A stream whose entries need a fetch first: kept only in this call.
        let mut carried: Option<PushStream> = None;
        loop {
            if fetch {
                match self.receive().await {
                    Ok(messages) if !messages.is_empty() => return Ok(messages),
                    Ok(_) => {}
                    Err(error) if error.is_retryable() => {
                        // Connection trouble: wait for the driver to report a change.
                        tracing::debug!(%error, "receive failed; waiting for the connection");
                        if tokio::time::timeout_at(deadline, status.changed()).await.is_err() {
                            return Ok(Vec::new());
                        }
                        continue;
                    }
                    Err(error) => return Err(error),
                }
            }
            fetch = true;
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            // Take the push stream out so other operations are not blocked while we wait.
            let existing = match carried.take() {
                Some(push) => Some(push),
                None => self.push.take(),
            };
            let push = match existing {
                Some(push) => push,
                None => match self.subscribe(deadline).await {
                    Ok(Some(push)) => push,
                    Ok(None) => return Ok(Vec::new()),
                    Err(error) if error.is_retryable() => continue,
                    Err(error) => return Err(error),
                },
            };
            let parking = ParkOnCancel { push: Some(push), kept: &self.push };
            let Some((waited, mut push)) = parking.wait(deadline).await else { continue };
            match waited {
                Err(_elapsed) => {
                    self.push.keep(push);
                    return Ok(Vec::new());
                }
                Ok(Ok(Some(event))) => {
                    let (entries, intact) = with_ready_events(Some(event), &mut push);
                    let mut inner = self.inner.lock().await;
                    match inner.receive_pushed(entries).await {
                        Ok(Some(messages)) => {
                            if intact {
                                self.push.keep(push);
                            }
                            if !messages.is_empty() {
                                return Ok(messages);
                            }
                            fetch = !intact;
                        }
                        // A gap: fetch, then wait on the same stream.
                        Ok(None) => carried = intact.then_some(push),
                        Err(error) if error.is_retryable() => {
                            tracing::debug!(%error, "processing a push failed; fetching instead");
                        }
                        Err(error) => return Err(error),
                    }
                }
                // The push stream ended or broke: subscribe again next round
                // (on a new connection if the driver had to reconnect).
                Ok(Ok(None)) | Ok(Err(_)) => {}
            }
        }
    }
}

impl QpcClient {
    /// Subscribes and waits (until `deadline`, without holding the client's
    /// lock) for the server to open the push stream. `None` at the deadline.
    async fn subscribe(&self, deadline: tokio::time::Instant) -> Result<Option<PushStream>, SdkError> {
        let (rpc, after_seq) = {
            let mut inner = self.inner.lock().await;
            let (rpc, instance) = inner.link.current();
            // Never subscribe from a cursor not checked against this server.
            let cursor = inner.checked_cursor(&rpc, instance).await?;
            (rpc, cursor)
        };
        let _: v1::SubscribeResponse = rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq }).await?;
        match tokio::time::timeout_at(deadline, rpc.accept_push()).await {
            Ok(push) => Ok(Some(push?)),
            Err(_elapsed) => Ok(None),
        }
    }
}

impl Inner {
    /// Syncs, then commits pending proposals (members leaving) in groups
    /// where we are the member designated to do it.
    pub(crate) async fn sync_and_settle(&mut self) -> Result<(), SdkError> {
        let due = self.sync().await?;
        self.settle(due).await
    }

    /// After processing: flushes the outbox, then commits the leaves of
    /// `due.leavers` in groups where we are the member designated to do it,
    /// and sends our own leaves again where a commit left them out.
    async fn settle(&mut self, due: Due) -> Result<(), SdkError> {
        // Whatever is still queued goes out now that the server answers.
        if let Err(error) = self.flush_outbox().await {
            tracing::debug!(%error, "outbox not flushed");
        }
        if due.rebuild {
            self.rebuild_broken().await?;
        }
        for group_id in due.leave_again {
            if let Err(error) = self.leave_again(&group_id).await {
                tracing::warn!(group = %hex::encode(&group_id), %error, "could not send our leave again");
            }
        }
        for (group_id, leaving) in due.leavers {
            let Some(conversation) = self.store.conversation(&group_id)? else { continue };
            if !conversation.active || !self.mls.is_active(&group_id)? {
                continue;
            }
            // The first remaining member (by name) commits, so members do not race.
            let members = self.mls.members(&group_id)?;
            let committer = members.iter().find(|member| !leaving.contains(member));
            if committer != Some(&self.username) {
                continue;
            }
            let result =
                self.submit_commit_with_retry(&conversation, |mls| mls.commit_pending_proposals(&group_id)).await;
            if let Err(error) = result {
                tracing::warn!(group = %conversation.display_name(), %error, "could not commit a member's leave");
            }
        }
        Ok(())
    }

    /// Processes entries the server pushed, if they continue the cursor
    /// without a gap (those at or below it were processed already), then
    /// settles as [`Inner::sync_and_settle`] does, and returns the messages
    /// not shown before (marking them shown only now, after every await, so
    /// a failure or a cancellation before leaves them to the next call);
    /// `None`, having processed nothing, when the entries do not continue
    /// the cursor: the caller fetches instead.
    pub(crate) async fn receive_pushed(
        &mut self,
        entries: Vec<v1::QueueEntry>,
    ) -> Result<Option<Vec<StoredMessage>>, SdkError> {
        if !self.apply_pushed(entries).await? {
            return Ok(None);
        }
        Ok(Some(self.store.take_unshown()?))
    }

    /// [`Inner::receive_pushed`] without taking the messages to show:
    /// `false`, having processed nothing, when the entries do not continue
    /// the cursor.
    async fn apply_pushed(&mut self, entries: Vec<v1::QueueEntry>) -> Result<bool, SdkError> {
        let cursor = self.store.meta(CURSOR_KEY)?;
        let (rpc, instance) = self.link.current();
        if self.server_changed(instance)? {
            // The cursor has not been checked against this server yet.
            return Ok(false);
        }
        let fresh: Vec<v1::QueueEntry> = entries.into_iter().filter(|entry| entry.seq > cursor).collect();
        if !continues(cursor, &fresh) {
            return Ok(false);
        }
        if !fresh.is_empty() {
            let mut due = Due::default();
            if self.apply(&rpc, fresh, cursor, &mut due).await?.welcomed {
                self.check_key_package_stock().await?;
            }
            self.settle(due).await?;
        }
        Ok(true)
    }

    /// Catches up before a send, so it encrypts in the groups' current
    /// epochs. With a push stream parked (everything it delivered before
    /// was processed), the server pushes what is queued for this device as
    /// it comes: the events already arrived in it are processed (their
    /// messages wait to be shown) and no `Fetch` is made. Without one (none,
    /// or a `receive_wait` holds it), or when the stream missed entries or
    /// broke, [`Inner::sync_and_settle`]. A commit still on its way can
    /// leave one burst in the epoch before it, as with a `Fetch` that just
    /// missed it: the server takes it (the sender is still a member) and
    /// the members of that epoch read it; a member the commit adds cannot.
    pub(crate) async fn catch_up_for_sending(&mut self) -> Result<(), SdkError> {
        let Some(mut push) = self.push.take() else {
            return self.sync_and_settle().await;
        };
        loop {
            let (entries, intact) = with_ready_events(None, &mut push);
            if !intact {
                // Ended or broken: what it delivered is fetched instead.
                return self.sync_and_settle().await;
            }
            if entries.is_empty() {
                self.push.keep(push);
                return Ok(());
            }
            if !self.apply_pushed(entries).await? {
                // A gap: fetch, and keep the stream for what follows.
                let synced = self.sync_and_settle().await;
                self.push.keep(push);
                return synced;
            }
        }
    }

    /// Fetches and processes the queue until it is empty. Returns what is
    /// due afterwards ([`Due`]).
    pub(crate) async fn sync(&mut self) -> Result<Due, SdkError> {
        let mut due = Due::default();
        let mut welcomed = false;
        loop {
            // One connection for the fetch and its Ack: both must reach the
            // server instance the cursor was checked against.
            let (rpc, instance) = self.link.current();
            let cursor = self.checked_cursor(&rpc, instance).await?;
            let request = v1::FetchRequest { after_seq: cursor, limit: FETCH_LIMIT };
            let response: v1::FetchResponse = rpc.call(Method::Fetch, &request).await?;
            let count = response.entries.len();
            let head_seq = response.head_seq;
            if head_seq < cursor {
                self.rewind_cursor(&rpc, cursor, instance).await?;
                continue;
            }
            if count == 0 && head_seq > cursor {
                // Everything past the cursor expired: nothing of it can come any more.
                self.advance_cursor(head_seq, head_seq - cursor)?;
                break;
            }
            let applied = self.apply(&rpc, response.entries, cursor, &mut due).await?;
            welcomed |= applied.welcomed;
            let last_seq = applied.last_seq;
            if caught_up(count, cursor, last_seq, head_seq) {
                break;
            }
        }
        if welcomed {
            self.check_key_package_stock().await?;
        }
        Ok(due)
    }

    /// Whether the connection's server `instance` is not the one the cursor
    /// was last checked against (a restarted server, or the first login
    /// since this version).
    fn server_changed(&self, instance: u64) -> Result<bool, SdkError> {
        Ok(instance != 0 && instance != self.store.meta(INSTANCE_KEY)?)
    }

    /// The stored cursor, first checked against the server behind `rpc`
    /// ([`Inner::rewind_cursor`]) if its `instance` is not the one it was
    /// last checked against.
    async fn checked_cursor(&mut self, rpc: &RpcClient, instance: u64) -> Result<u64, SdkError> {
        let cursor = self.store.meta(CURSOR_KEY)?;
        if !self.server_changed(instance)? {
            return Ok(cursor);
        }
        self.rewind_cursor(rpc, cursor, instance).await
    }

    /// Checks the cursor against the server behind `rpc` (whose instance is
    /// `instance`), after a restart or when its queue's head is below the
    /// cursor. A server restored from an older backup assigns again seqs
    /// the cursor already passed; fetching after the cursor would skip them
    /// for good. So the cursor moves back to just before the oldest entry
    /// the server holds, if that is at or below it, and never past the
    /// server's head; returns the cursor as stored. After a plain restart the server holds nothing at or
    /// below the cursor (all of it was acknowledged) and nothing moves,
    /// except when an `Ack` was lost: entries fetched again that were
    /// processed before are dropped as duplicates or fail to decrypt (their
    /// keys are used up) and are skipped.
    ///
    /// Left open: entries queued after a restore that expire before the
    /// client logs in are neither delivered nor counted as expired; a
    /// pushed event read from the old connection just before a reconnect
    /// can be processed after this check; a Welcome fetched again for a
    /// group left since can join it again at its old epoch.
    async fn rewind_cursor(&mut self, rpc: &RpcClient, cursor: u64, instance: u64) -> Result<u64, SdkError> {
        let request = v1::FetchRequest { after_seq: 0, limit: 1 };
        let response: v1::FetchResponse = rpc.call(Method::Fetch, &request).await?;
        let before_oldest = response.entries.first().map_or(u64::MAX, |entry| entry.seq.saturating_sub(1));
        let rewound = cursor.min(before_oldest).min(response.head_seq);
        if rewound < cursor {
            tracing::warn!(
                cursor,
                rewound,
                head_seq = response.head_seq,
                "the server's queue is behind this device (restored from a backup?); fetching it again"
            );
        }
        self.store.set_metas(&[(CURSOR_KEY, rewound), (INSTANCE_KEY, instance)])?;
        Ok(rewound)
    }

    /// Processes `entries` ([`Local::apply_batch`], one local transaction)
    /// and only then acknowledges the new cursor on `rpc` (not awaited).
    async fn apply(
        &mut self,
        rpc: &RpcClient,
        entries: Vec<v1::QueueEntry>,
        cursor: u64,
        due: &mut Due,
    ) -> Result<Applied, SdkError> {
        if entries.iter().all(|entry| entry.seq <= cursor) {
            // Nothing to process (an empty fetch): no transaction, and no
            // bump of the lock's counter, which makes other processes
            // sharing the profile reload their groups.
            return Ok(Applied { last_seq: cursor, welcomed: false });
        }
        let local = &self.local;
        let applied = local.mls.batch(|| local.apply_batch(entries, cursor, due))?;
        quicprochat_core::crash_point::crash_point("batch_after_commit");
        if applied.last_seq > cursor {
            // Durable locally first (the batch committed), then
            // acknowledged: nothing acknowledged is lost. The caller shows
            // the messages without waiting for the answer (`crate::acks`).
            self.acks.send(rpc.clone(), applied.last_seq).await;
        }
        Ok(applied)
    }
}

impl Local {
    /// Processes `entries` in order (skipping any at or below the cursor)
    /// and stores the new cursor, inside the caller's
    /// [`quicprochat_core::MlsClient::batch`]: the ratchet steps, history
    /// rows, commits merged and the cursor past them commit together, with
    /// one fsync, or not at all (and the entries are fetched again). An
    /// entry that cannot be processed is skipped, as before. Adds the
    /// members whose leave proposals arrived, and the groups we must leave
    /// again, to `due`.
    fn apply_batch(&self, entries: Vec<v1::QueueEntry>, cursor: u64, due: &mut Due) -> Result<Applied, SdkError> {
        // Another process sharing the profile (`qpc recv --follow` beside a
        // `qpc send`) may have processed some of these entries since they
        // were fetched: under the batch's locks, the stored cursor is the
        // truth, and entries at or below it are not processed again (their
        // keys are used; they would only fail to decrypt).
        let cursor = cursor.max(self.store.meta(CURSOR_KEY)?);
        let expired = skipped(cursor, &entries);
        let mut welcomed = false;
        let mut last_seq = cursor;
        for entry in entries {
            if entry.seq <= last_seq {
                continue;
            }
            last_seq = entry.seq;
            match self.take_entry(&entry) {
                Ok(EntryEffect::Leaving(user)) => due.leavers.entry(entry.group_id.to_vec()).or_default().push(user),
                Ok(EntryEffect::StillLeaving) => {
                    due.leave_again.insert(entry.group_id.to_vec());
                }
                Ok(EntryEffect::Joined) => welcomed = true,
                Ok(EntryEffect::Forked) => due.rebuild = true,
                Ok(EntryEffect::None) => {}
                Err(error) => tracing::warn!(seq = entry.seq, %error, "skipping an entry that cannot be processed"),
            }
            // A failed write may have ended the transaction (a full disk):
            // the writes after it would commit one by one, the cursor alone.
            self.mls.check_batch()?;
        }
        if last_seq > cursor {
            self.advance_cursor(last_seq, expired)?;
        }
        Ok(Applied { last_seq, welcomed })
    }

    /// Stores the cursor `to`, and in the same local transaction counts the
    /// `expired` entries it passes over for [`QpcClient::take_expired_count`]
    /// (so a crash between the two cannot count them twice).
    fn advance_cursor(&self, to: u64, expired: u64) -> Result<(), SdkError> {
        if expired == 0 {
            return Ok(self.store.set_meta(CURSOR_KEY, to)?);
        }
        tracing::warn!(expired, "queue entries expired on the server before this device fetched them");
        let unreported = self.store.meta(EXPIRED_KEY)?.saturating_add(expired);
        Ok(self.store.set_metas(&[(CURSOR_KEY, to), (EXPIRED_KEY, unreported)])?)
    }
}

/// What is due after processing entries: commits of other members' leaves
/// and our own leaves to send again.
#[derive(Default)]
pub(crate) struct Due {
    /// Per group, the members whose leave proposals arrived.
    leavers: BTreeMap<Vec<u8>, Vec<String>>,
    /// Groups we are leaving where a commit left our leave out.
    leave_again: BTreeSet<Vec<u8>>,
    /// A group forked: rebuild those this client is the rebuilder of.
    rebuild: bool,
}

/// What [`Inner::apply`] did: the seq it reached and whether a Welcome
/// was among the entries.
struct Applied {
    last_seq: u64,
    welcomed: bool,
}

#[cfg(test)]
mod tests {
    use super::{caught_up, continues, skipped, FETCH_LIMIT};
    use quicprochat_proto::v1::QueueEntry;

    fn entries(seqs: &[u64]) -> Vec<QueueEntry> {
        seqs.iter().map(|&seq| QueueEntry { seq, ..QueueEntry::default() }).collect()
    }

    #[test]
    fn pushed_entries_are_used_only_when_they_continue_the_cursor() {
        assert!(continues(10, &entries(&[11, 12, 13])));
        assert!(continues(10, &entries(&[])), "nothing new: nothing to fetch either");
        // Entry 11 is missing (say it expired): fetch from the cursor instead.
        assert!(!continues(10, &entries(&[12, 13])));
        assert!(!continues(10, &entries(&[11, 13])));
        assert!(!continues(10, &entries(&[11, 11])));
        assert!(!continues(u64::MAX, &entries(&[0])));
    }

    #[test]
    fn skipped_seqs_past_the_cursor_are_counted() {
        assert_eq!(skipped(10, &entries(&[11, 12])), 0);
        assert_eq!(skipped(10, &entries(&[14, 15])), 3, "11 to 13 expired");
        assert_eq!(skipped(10, &entries(&[9, 10, 12, 15])), 3, "at or below the cursor: already seen");
        assert_eq!(skipped(0, &entries(&[1])), 0, "a new account starts at 1");
        assert_eq!(skipped(10, &entries(&[])), 0);
    }

    #[test]
    fn a_short_answer_below_the_head_is_not_the_end() {
        // A full page: fetch again.
        assert!(!caught_up(FETCH_LIMIT as usize, 0, 200, 200));
        // Short because of the server's byte budget: fetch again.
        assert!(!caught_up(3, 10, 13, 40));
        // Short and at the head: done.
        assert!(caught_up(3, 10, 13, 13));
        // Empty (entries past the cursor expired): done.
        assert!(caught_up(0, 10, 10, 40));
        // Nothing moved forward (a confused server): done rather than loop.
        assert!(caught_up(5, 10, 10, 40));
    }
}
