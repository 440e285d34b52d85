//! The durable outbox: every outgoing message is written here (with its
//! ciphertext and the pending entry in the history) in one transaction
//! before it is sent, and leaves only when the server acknowledged it (sent)
//! or refused it for good (failed, with the reason). Retries reuse the same
//! message id and ciphertext, which the server deduplicates, so a message is
//! never delivered twice and never lost, across reconnects and restarts.

use quicprochat_core::Savepoint;
use rusqlite::{params, OptionalExtension};

use crate::local_store::{insert_message, IncomingRecord, LocalStore, MessageState};

/// The server's answer to one queued message: `Err` carries the reason it
/// was refused for good.
#[derive(Debug, Clone, Copy)]
pub struct Settled<'a> {
    /// The message.
    pub message_id: &'a [u8],
    /// Sent, or refused for good.
    pub outcome: Result<(), &'a str>,
}

/// One message waiting for the server's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Client-generated id (also the end-to-end id inside the ciphertext).
    pub message_id: Vec<u8>,
    /// The group it goes to.
    pub group_id: Vec<u8>,
    /// The MLS PrivateMessage to submit.
    pub ciphertext: Vec<u8>,
    /// Send attempts so far.
    pub attempts: u32,
}

impl LocalStore {
    /// Stores an outgoing message as pending and queues its ciphertext, atomically.
    pub fn queue_outgoing(&self, message: &IncomingRecord<'_>, ciphertext: &[u8]) -> rusqlite::Result<()> {
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        insert_message(&transaction, message, MessageState::Pending, true)?;
        transaction.execute(
            "INSERT OR IGNORE INTO outbox (message_id, group_id, ciphertext) VALUES (?1, ?2, ?3)",
            params![message.message_id, message.group_id, ciphertext],
        )?;
        transaction.commit()
    }

    /// Queued messages, oldest first.
    pub fn outbox(&self) -> rusqlite::Result<Vec<OutboxEntry>> {
        let connection = self.conn();
        let mut statement =
            connection.prepare_cached("SELECT message_id, group_id, ciphertext, attempts FROM outbox ORDER BY seq")?;
        let rows = statement.query_map([], |row| {
            Ok(OutboxEntry {
                message_id: row.get(0)?,
                group_id: row.get(1)?,
                ciphertext: row.get(2)?,
                attempts: row.get(3)?,
            })
        })?;
        rows.collect()
    }

    /// The server acknowledged the message: it leaves the outbox as sent.
    pub fn outbox_sent(&self, sender: &str, message_id: &[u8]) -> rusqlite::Result<()> {
        self.outbox_settle(sender, &[Settled { message_id, outcome: Ok(()) }])
    }

    /// The server refused the message for good: it leaves the outbox as failed.
    pub fn outbox_failed(&self, sender: &str, message_id: &[u8], reason: &str) -> rusqlite::Result<()> {
        self.outbox_settle(sender, &[Settled { message_id, outcome: Err(reason) }])
    }

    /// The server's answers to a burst: each message leaves the outbox, sent
    /// or failed, all in one transaction (one fsync for the burst).
    pub fn outbox_settle(&self, sender: &str, settled: &[Settled<'_>]) -> rusqlite::Result<()> {
        if settled.is_empty() {
            return Ok(());
        }
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        {
            let mut update = transaction
                .prepare_cached("UPDATE messages SET state = ?3, error = ?4 WHERE sender = ?1 AND message_id = ?2")?;
            let mut delete = transaction.prepare_cached("DELETE FROM outbox WHERE message_id = ?1")?;
            for entry in settled {
                let (state, error) = match entry.outcome {
                    Ok(()) => (MessageState::Sent, None),
                    Err(reason) => (MessageState::Failed, Some(reason)),
                };
                update.execute(params![sender, entry.message_id, state.as_str(), error])?;
                delete.execute(params![entry.message_id])?;
            }
        }
        transaction.commit()
    }

    /// A group's hub on another server refused a message of ours that our
    /// server had taken (relayed): it shows as failed, and leaves the outbox
    /// if it was still there. Returns whether we sent such a message.
    pub fn relayed_message_refused(
        &self,
        sender: &str,
        message_id: &[u8],
        group_id: &[u8],
        reason: &str,
    ) -> rusqlite::Result<bool> {
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        let changed = transaction.execute(
            "UPDATE messages SET state = ?4, error = ?5
             WHERE sender = ?1 AND message_id = ?2 AND group_id = ?3 AND state IN ('sent', 'pending')",
            params![sender, message_id, group_id, MessageState::Failed.as_str(), reason],
        )?;
        transaction
            .execute("DELETE FROM outbox WHERE message_id = ?1 AND group_id = ?2", params![message_id, group_id])?;
        transaction.commit()?;
        Ok(changed > 0)
    }

    /// A send attempt failed in a way worth retrying; the messages stay queued.
    pub fn outbox_attempt_failed<'a>(
        &self,
        message_ids: impl IntoIterator<Item = &'a [u8]>,
        reason: &str,
    ) -> rusqlite::Result<()> {
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        {
            let mut update = transaction
                .prepare_cached("UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE message_id = ?1")?;
            for message_id in message_ids {
                update.execute(params![message_id, reason])?;
            }
        }
        transaction.commit()
    }

    /// The delivery state of one of our messages, if it exists.
    pub fn message_state(&self, sender: &str, message_id: &[u8]) -> rusqlite::Result<Option<MessageState>> {
        let state: Option<String> = self
            .conn()
            .query_row(
                "SELECT state FROM messages WHERE sender = ?1 AND message_id = ?2",
                params![sender, message_id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(state.as_deref().map(MessageState::parse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_message_the_hub_refused_shows_as_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&dir.path().join("client.db")).expect("open");
        store.add_conversation(b"g1", "team", None, 1).expect("conversation");
        store.queue_outgoing(&record(b"m1"), b"ciphertext").expect("queue");
        store.outbox_sent("alice", b"m1").expect("sent");
        assert!(!store.relayed_message_refused("alice", b"m1", b"another group", "not_a_member").expect("update"));
        assert_eq!(store.message_state("alice", b"m1").expect("state"), Some(MessageState::Sent));
        assert!(store.relayed_message_refused("alice", b"m1", b"g1", "not_a_member").expect("update"));
        assert_eq!(store.message_state("alice", b"m1").expect("state"), Some(MessageState::Failed));
        assert!(!store.relayed_message_refused("bob", b"m1", b"g1", "not_a_member").expect("not ours"));
    }

    fn record<'a>(id: &'a [u8]) -> IncomingRecord<'a> {
        IncomingRecord {
            sender: "alice",
            sender_device: None,
            message_id: id,
            group_id: b"g1",
            text: "hi",
            sent_at_ms: 1,
            received_at_ms: 1,
        }
    }

    #[test]
    fn queued_messages_survive_reopen_and_leave_when_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.db");
        {
            let store = LocalStore::open(&path).expect("open");
            store.add_conversation(b"g1", "team", None, 1).expect("conversation");
            store.queue_outgoing(&record(b"m1"), b"cipher-1").expect("queue");
            store.queue_outgoing(&record(b"m2"), b"cipher-2").expect("queue");
            store.queue_outgoing(&record(b"m1"), b"cipher-1").expect("queue again is a no-op");
            store.outbox_attempt_failed([b"m1".as_slice()], "connection lost").expect("attempt");
        }
        let store = LocalStore::open(&path).expect("reopen");
        let queued = store.outbox().expect("outbox");
        assert_eq!(queued.iter().map(|entry| entry.message_id.as_slice()).collect::<Vec<_>>(), [b"m1", b"m2"]);
        assert_eq!(queued[0].attempts, 1);
        assert_eq!(store.message_state("alice", b"m1").expect("state"), Some(MessageState::Pending));

        store.outbox_sent("alice", b"m1").expect("sent");
        store.outbox_failed("alice", b"m2", "PERMISSION_DENIED").expect("failed");
        assert!(store.outbox().expect("outbox").is_empty());
        assert_eq!(store.message_state("alice", b"m1").expect("state"), Some(MessageState::Sent));
        assert_eq!(store.message_state("alice", b"m2").expect("state"), Some(MessageState::Failed));
        assert_eq!(store.message_state("alice", b"m3").expect("state"), None);
    }
}
