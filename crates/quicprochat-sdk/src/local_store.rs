//! The client's local store (`client.db`): conversations, message history
//! (incoming and outgoing, with delivery state and the sending device), the
//! delivery cursor and the pinned account keys (`known_accounts`).
//!
//! Messages are keyed by (sender, message id), so a message delivered twice
//! is stored, and shown, once.

use std::path::Path;

use quicprochat_core::{Savepoint, StateDb};
use rusqlite::{params, Connection, OptionalExtension};

mod group_marks;
mod known_accounts;

pub use group_marks::Broken;
pub use known_accounts::Pinned;

/// A conversation as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// MLS group id.
    pub group_id: Vec<u8>,
    /// Group name, shared by every member (for direct conversations `dm:a:b`).
    pub name: String,
    /// Direct conversation peer, if this is a two-member direct conversation.
    pub peer: Option<String>,
    /// False once we left or were removed.
    pub active: bool,
}

impl Conversation {
    /// How the conversation is shown: its name, or `@peer` for a direct one.
    pub fn display_name(&self) -> String {
        match &self.peer {
            Some(peer) => format!("@{peer}"),
            None => self.name.clone(),
        }
    }
}

/// Delivery state of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Outgoing, written locally, not yet acknowledged by the server.
    Pending,
    /// Outgoing, durably stored by the server.
    Sent,
    /// Outgoing, refused by the server (the reason is kept).
    Failed,
    /// Incoming.
    Received,
}

impl MessageState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Sent => "sent",
            MessageState::Failed => "failed",
            MessageState::Received => "received",
        }
    }

    pub(crate) fn parse(text: &str) -> MessageState {
        match text {
            "pending" => MessageState::Pending,
            "sent" => MessageState::Sent,
            "failed" => MessageState::Failed,
            _ => MessageState::Received,
        }
    }
}

/// One message of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Client-generated message id (hex).
    pub id: String,
    /// Conversation display name.
    pub group: String,
    /// Sender username.
    pub from: String,
    /// Message text.
    pub text: String,
    /// Sender's clock when sent (ms since the Unix epoch).
    pub sent_at_ms: u64,
    /// When this device stored it (ms since the Unix epoch).
    pub received_at_ms: u64,
    /// Delivery state.
    pub state: MessageState,
    /// The sending device's id (16 hex digits), when known: every message
    /// this version stores, but not those stored before devices existed,
    /// nor one from a past epoch whose sender's leaf left since.
    pub device: Option<String>,
}

/// The local store: its tables live in the profile's state database, beside
/// the MLS state, on the same connection ([`StateDb`]), so one transaction
/// ([`quicprochat_core::MlsClient::batch`]) can cover both. Its own
/// multi-statement writes are savepoints: a transaction of their own outside
/// a batch, part of the batch inside one.
pub struct LocalStore {
    db: StateDb,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    group_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    peer TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    sender TEXT NOT NULL,
    message_id BLOB NOT NULL,
    group_id BLOB NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    shown INTEGER NOT NULL,
    error TEXT,
    sender_device BLOB,
    PRIMARY KEY (sender, message_id)
);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (group_id, received_at_ms);
-- take_unshown runs after every receiving call: without this partial index it
-- scans the whole history (O(history) per message shown).
CREATE INDEX IF NOT EXISTS messages_unshown ON messages (received_at_ms) WHERE shown = 0;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leaving (group_id BLOB PRIMARY KEY, epoch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS unverified_joins (group_id BLOB PRIMARY KEY, epoch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS broken_groups (group_id BLOB PRIMARY KEY, epoch INTEGER NOT NULL, culprit TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS known_accounts (
    username TEXT PRIMARY KEY,
    account_key BLOB NOT NULL,
    first_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS removed_devices (
    device_id BLOB PRIMARY KEY,
    removed_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id BLOB NOT NULL UNIQUE,
    group_id BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
";

impl LocalStore {
    /// Opens (creating if needed) a store alone in the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<LocalStore> {
        LocalStore::on(StateDb::open(path)?)
    }

    /// The store in `db` (its tables made or brought up to date).
    pub fn on(db: StateDb) -> rusqlite::Result<LocalStore> {
        {
            let connection = db.lock();
            connection.execute_batch(SCHEMA)?;
            add_missing_columns(&connection)?;
        }
        Ok(LocalStore { db })
    }

    /// The connection, for one statement or savepoint.
    pub(crate) fn conn(&self) -> impl std::ops::Deref<Target = Connection> + '_ {
        self.db.lock()
    }

    /// Records a conversation (idempotent on the group id; a conversation
    /// recorded before takes the new name and peer).
    pub fn add_conversation(
        &self,
        group_id: &[u8],
        name: &str,
        peer: Option<&str>,
        now_ms: u64,
    ) -> rusqlite::Result<()> {
        // Joined again: named and classified anew (the roster may differ
        // from the last time), and no longer leaving.
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        transaction.execute(
            "INSERT INTO conversations (group_id, name, peer, active, created_at_ms) VALUES (?1, ?2, ?3, 1, ?4)
             ON CONFLICT (group_id) DO UPDATE SET active = 1, name = ?2, peer = ?3",
            params![group_id, name, peer, now_ms as i64],
        )?;
        transaction.execute("DELETE FROM leaving WHERE group_id = ?1", params![group_id])?;
        transaction.commit()
    }

    /// Marks a conversation as left (no more sending or receiving).
    pub fn deactivate(&self, group_id: &[u8]) -> rusqlite::Result<()> {
        self.conn().execute("UPDATE conversations SET active = 0 WHERE group_id = ?1", params![group_id])?;
        Ok(())
    }

    /// Every conversation, by name.
    pub fn conversations(&self) -> rusqlite::Result<Vec<Conversation>> {
        let connection = self.conn();
        let mut statement =
            connection.prepare_cached("SELECT group_id, name, peer, active FROM conversations ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok(Conversation { group_id: row.get(0)?, name: row.get(1)?, peer: row.get(2)?, active: row.get(3)? })
        })?;
        rows.collect()
    }

    /// The conversation with this group id.
    pub fn conversation(&self, group_id: &[u8]) -> rusqlite::Result<Option<Conversation>> {
        self.conn()
            .query_row(
                "SELECT group_id, name, peer, active FROM conversations WHERE group_id = ?1",
                params![group_id],
                |row| {
                    Ok(Conversation {
                        group_id: row.get(0)?,
                        name: row.get(1)?,
                        peer: row.get(2)?,
                        active: row.get(3)?,
                    })
                },
            )
            .optional()
    }

    /// Active conversations recorded as direct with `peer` (to be checked
    /// against their MLS roster before use), by group id.
    pub fn direct_candidates(&self, peer: &str) -> rusqlite::Result<Vec<Conversation>> {
        let connection = self.conn();
        let mut statement = connection.prepare_cached(
            "SELECT group_id, name, peer, active FROM conversations WHERE peer = ?1 AND active = 1 ORDER BY group_id",
        )?;
        let rows = statement.query_map(params![peer], |row| {
            Ok(Conversation { group_id: row.get(0)?, name: row.get(1)?, peer: row.get(2)?, active: row.get(3)? })
        })?;
        rows.collect()
    }

    /// Changes how a conversation is recorded: its name and its direct peer.
    pub fn set_conversation_kind(&self, group_id: &[u8], name: &str, peer: Option<&str>) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE conversations SET name = ?2, peer = ?3 WHERE group_id = ?1",
            params![group_id, name, peer],
        )?;
        Ok(())
    }

    /// Finds an active conversation by target: `@user` (direct) or a group name.
    pub fn find_active(&self, target: &str) -> rusqlite::Result<Option<Conversation>> {
        let found = self.conversations()?.into_iter().filter(|c| c.active).find(|conversation| {
            match target.strip_prefix('@') {
                Some(peer) => conversation.peer.as_deref() == Some(peer),
                None => conversation.peer.is_none() && conversation.name == target,
            }
        });
        Ok(found)
    }

    /// Finds any conversation (active or not) by target, for history.
    pub fn find_any(&self, target: &str) -> rusqlite::Result<Option<Conversation>> {
        if let Some(active) = self.find_active(target)? {
            return Ok(Some(active));
        }
        Ok(self.conversations()?.into_iter().find(|conversation| conversation.display_name() == target))
    }

    /// Stores an incoming message unless (sender, id) is already known.
    /// Returns whether it was new.
    pub fn insert_incoming(&self, message: &IncomingRecord<'_>) -> rusqlite::Result<bool> {
        insert_message(&self.conn(), message, MessageState::Received, false)
    }

    /// Returns incoming messages not shown yet, oldest first, and marks them shown.
    pub fn take_unshown(&self) -> rusqlite::Result<Vec<StoredMessage>> {
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        let messages = {
            let mut statement = transaction
                .prepare_cached(&format!("{SELECT_MESSAGES} WHERE m.shown = 0 ORDER BY m.received_at_ms, m.rowid"))?;
            let rows = statement.query_map([], stored_message)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        transaction.execute("UPDATE messages SET shown = 1 WHERE shown = 0", [])?;
        transaction.commit()?;
        Ok(messages)
    }

    /// The last `limit` messages of a conversation, oldest first.
    pub fn history(&self, group_id: &[u8], limit: u32) -> rusqlite::Result<Vec<StoredMessage>> {
        let connection = self.conn();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT * FROM ({SELECT_MESSAGES} WHERE m.group_id = ?1 ORDER BY m.received_at_ms DESC, m.rowid DESC LIMIT ?2)
             ORDER BY received_at_ms, rowid"
        ))?;
        let rows = statement.query_map(params![group_id, limit], stored_message)?;
        rows.collect()
    }

    /// Reads a counter (e.g. the delivery cursor); 0 when unset.
    pub fn meta(&self, key: &str) -> rusqlite::Result<u64> {
        let value: Option<i64> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |row| row.get(0))
            .optional()?;
        Ok(value.unwrap_or(0) as u64)
    }

    /// Writes a counter durably.
    pub fn set_meta(&self, key: &str, value: u64) -> rusqlite::Result<()> {
        self.set_metas(&[(key, value)])
    }

    /// Writes several counters durably, all or none.
    pub fn set_metas(&self, values: &[(&str, u64)]) -> rusqlite::Result<()> {
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        for (key, value) in values {
            transaction.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![key, *value as i64],
            )?;
        }
        transaction.commit()
    }
}

/// Columns added after a table was first released (`CREATE TABLE IF NOT
/// EXISTS` leaves an existing table as it is): added where missing.
const ADDED_COLUMNS: &[(&str, &str, &str)] =
    &[("messages", "sender_device", "BLOB"), ("broken_groups", "reason", "TEXT")];

fn add_missing_columns(connection: &Connection) -> rusqlite::Result<()> {
    // One writer at a time: two processes opening the store at once must
    // not both add a column.
    let transaction = Savepoint::begin(connection)?;
    for (table, column, kind) in ADDED_COLUMNS {
        let present: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            params![table, column],
            |row| row.get(0),
        )?;
        if !present {
            transaction.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    transaction.commit()
}

/// Inserts a message unless `(sender, message id)` is known; returns whether it was new.
pub(crate) fn insert_message(
    connection: &Connection,
    message: &IncomingRecord<'_>,
    state: MessageState,
    shown: bool,
) -> rusqlite::Result<bool> {
    let inserted = connection.execute(
        "INSERT OR IGNORE INTO messages
             (sender, message_id, group_id, text, sent_at_ms, received_at_ms, state, shown, sender_device)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            message.sender,
            message.message_id,
            message.group_id,
            message.text,
            message.sent_at_ms as i64,
            message.received_at_ms as i64,
            state.as_str(),
            shown,
            message.sender_device
        ],
    )?;
    Ok(inserted == 1)
}

const SELECT_MESSAGES: &str = "SELECT m.message_id, CASE WHEN c.peer IS NULL THEN c.name ELSE '@' || c.peer END,
        m.sender, m.text, m.sent_at_ms, m.received_at_ms, m.state, m.rowid, m.sender_device
     FROM messages m JOIN conversations c ON c.group_id = m.group_id";

fn stored_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let id: Vec<u8> = row.get(0)?;
    let state: String = row.get(6)?;
    let device: Option<Vec<u8>> = row.get(8)?;
    Ok(StoredMessage {
        id: hex::encode(id),
        group: row.get(1)?,
        from: row.get(2)?,
        text: row.get(3)?,
        sent_at_ms: row.get::<_, i64>(4)? as u64,
        received_at_ms: row.get::<_, i64>(5)? as u64,
        state: MessageState::parse(&state),
        device: device.map(hex::encode),
    })
}

/// A message about to be stored.
pub struct IncomingRecord<'a> {
    /// Sender username.
    pub sender: &'a str,
    /// The sending device's id, when known.
    pub sender_device: Option<&'a [u8]>,
    /// Client-generated id.
    pub message_id: &'a [u8],
    /// Group id.
    pub group_id: &'a [u8],
    /// Text.
    pub text: &'a str,
    /// Sender's clock.
    pub sent_at_ms: u64,
    /// Our clock.
    pub received_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(sender: &'a str, id: &'a [u8], text: &'a str, at: u64) -> IncomingRecord<'a> {
        IncomingRecord {
            sender,
            sender_device: Some(b"\x01\x02"),
            message_id: id,
            group_id: b"g1",
            text,
            sent_at_ms: at,
            received_at_ms: at,
        }
    }

    #[test]
    fn duplicates_are_stored_and_shown_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&dir.path().join("client.db")).expect("open");
        store.add_conversation(b"g1", "team", None, 1).expect("conversation");
        assert!(store.insert_incoming(&record("bob", b"m1", "hi", 10)).expect("insert"));
        assert!(!store.insert_incoming(&record("bob", b"m1", "hi", 10)).expect("insert again"));
        assert!(store.insert_incoming(&record("carol", b"m1", "same id, other sender", 11)).expect("insert"));
        let shown = store.take_unshown().expect("unshown");
        assert_eq!(shown.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["hi", "same id, other sender"]);
        assert_eq!(shown[0].group, "team");
        assert!(store.take_unshown().expect("again").is_empty());
    }

    #[test]
    fn history_keeps_order_limit_and_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&dir.path().join("client.db")).expect("open");
        store.add_conversation(b"g1", "dm:alice:bob", Some("bob"), 1).expect("conversation");
        for (index, id) in [b"a", b"b", b"c"].iter().enumerate() {
            store.queue_outgoing(&record("alice", *id, "x", index as u64), b"cipher").expect("outgoing");
        }
        store.outbox_sent("alice", b"c").expect("state");
        let history = store.history(b"g1", 2).expect("history");
        assert_eq!(history.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [hex::encode("b"), hex::encode("c")]);
        assert_eq!(history[0].state, MessageState::Pending);
        assert_eq!(history[1].state, MessageState::Sent);
        assert_eq!(history[1].group, "@bob");
        assert_eq!(store.find_active("@bob").expect("find").map(|c| c.name), Some("dm:alice:bob".to_owned()));
        assert_eq!(store.find_active("bob").expect("find"), None);
    }

    /// `client.db` as the release before devices made it.
    const SCHEMA_BEFORE_DEVICES: &str = "
        CREATE TABLE conversations (group_id BLOB PRIMARY KEY, name TEXT NOT NULL, peer TEXT,
            active INTEGER NOT NULL DEFAULT 1, created_at_ms INTEGER NOT NULL);
        CREATE TABLE messages (sender TEXT NOT NULL, message_id BLOB NOT NULL, group_id BLOB NOT NULL,
            text TEXT NOT NULL, sent_at_ms INTEGER NOT NULL, received_at_ms INTEGER NOT NULL,
            state TEXT NOT NULL, shown INTEGER NOT NULL, error TEXT, PRIMARY KEY (sender, message_id));
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO conversations VALUES (x'6731', 'team', NULL, 1, 1);
        INSERT INTO messages VALUES ('bob', x'6d31', x'6731', 'before the upgrade', 5, 6, 'received', 0, NULL);
        INSERT INTO meta VALUES ('cursor', 7);
    ";

    #[test]
    fn a_store_made_before_devices_keeps_its_history_and_gains_device_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.db");
        Connection::open(&path).expect("old store").execute_batch(SCHEMA_BEFORE_DEVICES).expect("old schema");
        let store = LocalStore::open(&path).expect("open after the upgrade");
        assert_eq!(store.meta("cursor").expect("cursor"), 7);
        let kept = store.take_unshown().expect("unshown");
        assert_eq!(
            kept.iter().map(|m| (m.from.as_str(), m.text.as_str())).collect::<Vec<_>>(),
            [("bob", "before the upgrade")]
        );
        assert_eq!(kept[0].device, None, "no device was recorded before devices existed");
        assert!(store.insert_incoming(&record("carol", b"m2", "after", 8)).expect("insert"));
        assert_eq!(store.history(b"g1", 10).expect("history")[1].device.as_deref(), Some("0102"));
        assert_eq!(store.pinned_account_key("bob").expect("pins"), None);
        drop(store);
        LocalStore::open(&path).expect("a second open adds nothing twice");
    }

    #[test]
    fn cursor_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.db");
        LocalStore::open(&path).expect("open").set_meta("cursor", 42).expect("set");
        assert_eq!(LocalStore::open(&path).expect("reopen").meta("cursor").expect("get"), 42);
    }
}
