//! Connection pragmas and schema migrations, versioned by `PRAGMA
//! user_version`. A migration is appended, never edited: version N of the
//! schema is `MIGRATIONS[..N]` applied in order. A database newer than this
//! binary is refused rather than guessed at.

use rusqlite::Connection;

use super::SqlResultExt;
use crate::storage::StoreError;

/// Every schema version, oldest first; `MIGRATIONS[i]` moves `user_version`
/// from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    username      TEXT PRIMARY KEY,
    identity_key  BLOB NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    -- Highest queue seq ever assigned to this account; never decreases.
    last_seq      INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username    TEXT NOT NULL REFERENCES accounts(username),
    data        BLOB NOT NULL,
    last_resort INTEGER NOT NULL
) STRICT;
CREATE INDEX key_packages_by_owner ON key_packages(username, last_resort, id);
CREATE UNIQUE INDEX key_packages_one_last_resort
    ON key_packages(username) WHERE last_resort = 1;

CREATE TABLE groups (
    group_id      BLOB PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          INTEGER NOT NULL,
    creator       TEXT NOT NULL REFERENCES accounts(username),
    epoch         INTEGER NOT NULL,
    state_version INTEGER NOT NULL,
    state         BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE group_members (
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    username TEXT NOT NULL,
    leaving  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, username)
) STRICT, WITHOUT ROWID;
CREATE INDEX group_members_by_user ON group_members(username, group_id);

-- Message bodies, each stored once; deleted when no queue references them.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   BLOB NOT NULL,
    group_id     BLOB NOT NULL,
    sender       TEXT NOT NULL,
    kind         INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    payload      BLOB NOT NULL
) STRICT;

-- Idempotency records; they outlive the bodies so a late retry is still
-- recognised.
CREATE TABLE message_ids (
    sender       TEXT NOT NULL,
    message_id   BLOB NOT NULL,
    message_row  INTEGER NOT NULL,
    group_id     BLOB NOT NULL,
    kind         INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sender, message_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE queue (
    username    TEXT NOT NULL REFERENCES accounts(username),
    seq         INTEGER NOT NULL,
    message_row INTEGER NOT NULL REFERENCES messages(id),
    PRIMARY KEY (username, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX queue_by_message ON queue(message_row);
"#,
    r#"
-- Version 2: registration invites (`qpc-server invite create`).
CREATE TABLE invites (
    token         TEXT PRIMARY KEY,
    uses_total    INTEGER NOT NULL,
    uses_left     INTEGER NOT NULL,
    -- Exclusive; NULL: never expires.
    expires_at_ms INTEGER,
    created_at_ms INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- Version 3: every stored key package's HPKE init key, unique, so one init
-- key is never served twice (RFC 9420 §16.8). NULL for packages stored by
-- a version-2 server.
ALTER TABLE key_packages ADD COLUMN init_key BLOB;
CREATE UNIQUE INDEX key_packages_by_init_key ON key_packages(init_key);
"#,
    r#"
-- Version 4: a group's view is its snapshot (`group_snapshots.state`, the
-- serialised view as of log entry `groups.snapshot_through`) followed by
-- its log; a commit appends to the log instead of rewriting the whole
-- view. The snapshot has a table of its own so that reading or updating a
-- group's row never walks megabytes of blob (SQLite stores a row's columns
-- in order, overflow pages included).
CREATE TABLE group_snapshots (
    group_id BLOB PRIMARY KEY REFERENCES groups(group_id),
    state    BLOB NOT NULL
) STRICT;
INSERT INTO group_snapshots (group_id, state) SELECT group_id, state FROM groups;
ALTER TABLE groups ADD COLUMN snapshot_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE groups SET snapshot_bytes = length(state);
ALTER TABLE groups DROP COLUMN state;
ALTER TABLE groups ADD COLUMN log_head INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN snapshot_through INTEGER NOT NULL DEFAULT 0;
CREATE TABLE group_log (
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    seq      INTEGER NOT NULL,
    kind     INTEGER NOT NULL,
    payload  BLOB NOT NULL,
    PRIMARY KEY (group_id, seq)
) STRICT;
CREATE INDEX groups_with_log ON groups(group_id) WHERE log_head > snapshot_through;
"#,
    r#"
-- Version 5: idempotency records in the order they were stored (message
-- rows only grow), so expiry walks the oldest first and stops at the first
-- one still kept.
CREATE INDEX message_ids_by_row ON message_ids(message_row);
"#,
    r#"
-- Version 6: key packages served and not used yet. A commit may add a
-- member only with a package served to its committer, and uses it up.
CREATE TABLE key_packages_served (
    requester    TEXT NOT NULL,
    init_key     BLOB NOT NULL,
    target       TEXT NOT NULL,
    last_resort  INTEGER NOT NULL,
    served_at_ms INTEGER NOT NULL,
    PRIMARY KEY (requester, init_key)
) WITHOUT ROWID;
"#,
    r#"
-- Version 7: devices (issue 18). An account has one or more devices, each
-- with its own queue, named `queue`: the username for the device keyed by
-- the account key (every account's first device, and the only one before
-- version 7), `username#<device id>` for a linked device. Each account gets
-- its device row here; its device id (a hash of its key) is filled in by
-- `fill_device_ids` in the same transaction. Queues and their sequence
-- numbers move to the device, entries kept.
CREATE TABLE devices (
    queue         TEXT PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES accounts(username),
    device_id     BLOB NOT NULL,
    device_key    BLOB NOT NULL,
    -- The account key's certificate; NULL for the device keyed by it.
    certificate   BLOB,
    label         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    -- Set when the device is removed: it can no longer log in or receive.
    removed_at_ms INTEGER,
    -- Highest queue seq ever assigned to this device; never decreases.
    last_seq      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (username, device_id)
) STRICT;
INSERT INTO devices (queue, username, device_id, device_key, label, created_at_ms, last_seq)
    SELECT username, username, x'', identity_key, 'first device', created_at_ms, last_seq FROM accounts;
ALTER TABLE accounts DROP COLUMN last_seq;

CREATE TABLE device_queue (
    device      TEXT NOT NULL REFERENCES devices(queue),
    seq         INTEGER NOT NULL,
    message_row INTEGER NOT NULL REFERENCES messages(id),
    PRIMARY KEY (device, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO device_queue (device, seq, message_row) SELECT username, seq, message_row FROM queue;
DROP TABLE queue;
ALTER TABLE device_queue RENAME TO queue;
CREATE INDEX queue_by_message ON queue(message_row);
"#,
    r#"
-- Version 8: the devices of a group's roster, one row per MLS leaf, named
-- by their queues: what the group's messages fan out to. Every member so
-- far is its account's first device, whose queue is the username.
CREATE TABLE group_devices (
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    device   TEXT NOT NULL,
    PRIMARY KEY (group_id, device)
) STRICT, WITHOUT ROWID;
INSERT INTO group_devices (group_id, device) SELECT group_id, username FROM group_members;
"#,
    r#"
-- Version 9: the device that made each key package, so removing a device
-- deletes its packages. Every package so far is its account's first
-- device's, whose queue is the username.
ALTER TABLE key_packages ADD COLUMN device_id BLOB;
UPDATE key_packages SET device_id = (SELECT device_id FROM devices WHERE devices.queue = key_packages.username);
"#,
    r#"
-- Version 10: key packages are per device. Every device of an account has
-- a stock of its own and a last-resort package of its own, and a fetch
-- serves one package per device. Every package so far stays with the
-- device version 9 gave it (the first device's, for those stored before).
DROP INDEX key_packages_one_last_resort;
CREATE UNIQUE INDEX key_packages_one_last_resort
    ON key_packages(username, device_id) WHERE last_resort = 1;
DROP INDEX key_packages_by_owner;
CREATE INDEX key_packages_by_owner ON key_packages(username, device_id, last_resort, id);
"#,
    r#"
-- Version 11: facts about the server itself. `domain` is the server.domain
-- recorded when federation is first used: the domain of every name and
-- group this database shares with other servers, which can then no longer
-- change.
CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
"#,
    r#"
-- Version 12: the streams between this server and each peer server. Our
-- outbound side: its instance, how far the peer acknowledged, the last seq
-- written and the last deleted unacknowledged by retention, with the
-- entries not yet acknowledged in fed_outbound. The peer's inbound side:
-- the instance and seq applied here, moved in the transaction that applies
-- its entries. And the labels of the groups peers host, for queue entries.
-- (How each peer is reachable is kept in memory, served on /federation.)
CREATE TABLE fed_streams (
    peer         TEXT PRIMARY KEY,
    out_instance INTEGER NOT NULL,
    out_acked    INTEGER NOT NULL DEFAULT 0,
    out_last     INTEGER NOT NULL DEFAULT 0,
    out_expired  INTEGER NOT NULL DEFAULT 0,
    in_instance  INTEGER NOT NULL DEFAULT 0,
    in_applied   INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
CREATE TABLE fed_outbound (
    peer           TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    accepted_at_ms INTEGER NOT NULL,
    entry          BLOB NOT NULL,
    PRIMARY KEY (peer, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE remote_groups (
    group_id BLOB PRIMARY KEY,
    hub      TEXT NOT NULL,
    name     TEXT NOT NULL,
    kind     INTEGER NOT NULL
) STRICT;
"#,
];

/// A migration's step in Rust, run in its transaction after its SQL.
type MigrationStep = fn(&Connection) -> Result<(), StoreError>;

/// Rust-side steps of migrations: (the version the migration moves to, the step).
const MIGRATION_STEPS: &[(usize, MigrationStep)] = &[(7, fill_device_ids)];

/// Version 7: the device id of each device row, a hash of its key that SQL
/// cannot compute.
fn fill_device_ids(connection: &Connection) -> Result<(), StoreError> {
    const OPERATION: &str = "migrate";
    let devices: Vec<(String, Vec<u8>)> = connection
        .prepare("SELECT queue, device_key FROM devices")
        .and_then(|mut statement| {
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .during(OPERATION)?;
    let mut update = connection.prepare("UPDATE devices SET device_id = ?2 WHERE queue = ?1").during(OPERATION)?;
    for (queue, key) in devices {
        let device_id = quicprochat_core::DeviceId::of_key(&key);
        update.execute(rusqlite::params![queue, device_id.as_bytes().as_slice()]).during(OPERATION)?;
    }
    Ok(())
}

/// Sets the per-connection pragmas: WAL, fsync on every commit, foreign keys.
pub(super) fn configure(connection: &Connection) -> Result<(), StoreError> {
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).during("open")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Io {
            operation: "open",
            detail: format!("could not enable WAL journal mode (got {mode})"),
        });
    }
    // Checkpoints run on their own thread (`checkpoint`), not inside a commit.
    connection
        .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;")
        .during("open")
}

/// Applies every migration newer than the database's `user_version`, each in
/// its own transaction together with the version bump.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let current: usize = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).during("migrate")?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt {
            operation: "migrate",
            detail: format!("database schema version {current} is newer than this server's {}", MIGRATIONS.len()),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let transaction = connection.transaction().during("migrate")?;
        transaction.execute_batch(migration).during("migrate")?;
        for (_, step) in MIGRATION_STEPS.iter().filter(|(version, _)| *version == index + 1) {
            step(&transaction)?;
        }
        transaction.pragma_update(None, "user_version", index + 1).during("migrate")?;
        transaction.commit().during("migrate")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::{
        CommitResult, CommitWrite, EntryKind, Fanout, InviteUse, KeyPackageStock, KeyPackagesAdded, NewKeyPackage,
        NewMessage, SqliteStore, Store,
    };

    /// The crash tests (`kill -9`) cannot see a missing fsync: the page cache
    /// survives a killed process. This pins the settings that make a commit
    /// durable before `write` returns and the RPC is acknowledged
    /// (`SqliteStore::open` runs `configure` on its write connection).
    #[test]
    fn every_commit_is_fsynced_write_ahead_logged() {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(dir.path().join("qpc.db")).unwrap();
        configure(&connection).unwrap();
        let synchronous: i64 = connection.query_row("PRAGMA synchronous", [], |row| row.get(0)).unwrap();
        assert_eq!(synchronous, 2, "synchronous = FULL");
        let mode: String = connection.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    /// A database written by a version-6 server (one queue per account)
    /// opens with one device per account, keyed by the account key, whose
    /// queue keeps the account's entries and sequence numbers.
    #[test]
    fn version_6_database_gets_a_device_per_account_and_keeps_its_queues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qpc.db");
        let (alice_key, bob_key) = ([1u8; 32], [2u8; 32]);
        {
            let mut connection = Connection::open(&path).unwrap();
            let transaction = connection.transaction().unwrap();
            for migration in &MIGRATIONS[..6] {
                transaction.execute_batch(migration).unwrap();
            }
            transaction.pragma_update(None, "user_version", 6).unwrap();
            transaction.commit().unwrap();
            for (name, key, last_seq) in [("alice", alice_key, 0), ("bob", bob_key, 7)] {
                connection
                    .execute(
                        "INSERT INTO accounts (username, identity_key, created_at_ms, last_seq) VALUES (?1, ?2, 5, ?3)",
                        rusqlite::params![name, key.as_slice(), last_seq],
                    )
                    .unwrap();
            }
            connection
                .execute_batch(
                    "INSERT INTO groups (group_id, name, kind, creator, epoch, state_version, created_at_ms)
                         VALUES (x'01', 'team', 0, 'alice', 0, 1, 5);
                     INSERT INTO messages (id, message_id, group_id, sender, kind, epoch, stored_at_ms, payload)
                         VALUES (1, x'aa', x'01', 'alice', 0, 0, 6, x'0102'),
                                (2, x'bb', x'01', 'alice', 0, 0, 7, x'0304');
                     INSERT INTO queue (username, seq, message_row) VALUES ('bob', 6, 1), ('bob', 7, 2);",
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        for (name, key) in [("alice", alice_key), ("bob", bob_key)] {
            let devices = store.devices(name).unwrap();
            assert_eq!(devices.len(), 1, "{name}");
            let device = &devices[0];
            assert_eq!((device.queue.as_str(), device.device_key.as_slice()), (name, key.as_slice()));
            assert_eq!(device.device_id, quicprochat_core::DeviceId::of_key(&key));
            assert_eq!((device.certificate.as_ref(), device.removed_at_ms), (None, None));
        }
        let queued = store.fetch("bob", 0, 10).unwrap();
        let entries: Vec<(u64, &[u8])> = queued.items.iter().map(|item| (item.seq, item.payload.as_slice())).collect();
        assert_eq!(entries, [(6, [1u8, 2].as_slice()), (7, [3u8, 4].as_slice())], "queued messages are kept");
        assert_eq!(queued.head_seq, 7);
        // Sequence numbers go on from the account's.
        let message = NewMessage {
            message_id: b"cc".to_vec(),
            group_id: vec![1],
            sender: "alice".to_owned(),
            kind: EntryKind::Application,
            payload: vec![5],
            epoch: 0,
            stored_at_ms: 8,
        };
        let outcome = store.enqueue(&message, &["bob".to_owned(), "alice".to_owned()]).unwrap();
        let seqs: Vec<(&str, u64)> = outcome.deliveries.iter().map(|d| (d.queue.as_str(), d.seq)).collect();
        assert_eq!(seqs, [("alice", 1), ("bob", 8)]);
        assert_eq!(store.ack("bob", 8).unwrap(), 3);
        assert_eq!(store.stored_message_count().unwrap(), 1, "alice still holds the new one");
    }

    /// A database written by a version-9 server (one key package stock and
    /// one last-resort package per account, each package marked with its
    /// device) opens with a stock per device: the first device keeps
    /// serving the packages it had, its last-resort one included, and
    /// another device may now have a last-resort package of its own.
    #[test]
    fn version_9_database_keeps_serving_the_first_devices_key_packages() {
        use quicprochat_core::DeviceId;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qpc.db");
        let (alice_key, phone_key) = ([1u8; 32], [2u8; 32]);
        let (first, phone) = (DeviceId::of_key(&alice_key), DeviceId::of_key(&phone_key));
        {
            let mut connection = Connection::open(&path).unwrap();
            let transaction = connection.transaction().unwrap();
            for migration in &MIGRATIONS[..9] {
                transaction.execute_batch(migration).unwrap();
            }
            transaction.pragma_update(None, "user_version", 9).unwrap();
            transaction.commit().unwrap();
            connection
                .execute(
                    "INSERT INTO accounts (username, identity_key, created_at_ms) VALUES ('alice', ?1, 5)",
                    rusqlite::params![alice_key.as_slice()],
                )
                .unwrap();
            let phone_queue = format!("alice#{phone}");
            for (queue, device_id, key, certificate) in
                [("alice", first, alice_key, None), (phone_queue.as_str(), phone, phone_key, Some(vec![9u8; 64]))]
            {
                connection
                    .execute(
                        "INSERT INTO devices (queue, username, device_id, device_key, certificate, label, created_at_ms)
                         VALUES (?1, 'alice', ?2, ?3, ?4, 'device', 5)",
                        rusqlite::params![queue, device_id.as_bytes().as_slice(), key.as_slice(), certificate],
                    )
                    .unwrap();
            }
            for (data, last_resort, device_id) in
                [("kp1", false, first), ("lr", true, first), ("p1", false, phone), ("kp2", false, first)]
            {
                connection
                    .execute(
                        "INSERT INTO key_packages (username, data, last_resort, init_key, device_id)
                         VALUES ('alice', ?1, ?2, ?3, ?4)",
                        rusqlite::params![
                            data.as_bytes(),
                            last_resort,
                            format!("init-{data}").as_bytes(),
                            device_id.as_bytes().as_slice()
                        ],
                    )
                    .unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.key_package_stock("alice", &first).unwrap(),
            KeyPackageStock { count: 2, has_last_resort: true }
        );
        assert_eq!(
            store.key_package_stock("alice", &phone).unwrap(),
            KeyPackageStock { count: 1, has_last_resort: false }
        );
        let take = |device: &DeviceId| {
            let taken = store.take_key_package("alice", device).unwrap().unwrap();
            (String::from_utf8(taken.key_package).unwrap(), taken.last_resort)
        };
        assert_eq!(take(&first), ("kp1".to_owned(), false), "oldest first, as before");
        assert_eq!(take(&first), ("kp2".to_owned(), false));
        assert_eq!(take(&first), ("lr".to_owned(), true));
        assert_eq!(take(&first), ("lr".to_owned(), true), "the last-resort package is kept");
        assert_eq!(take(&phone), ("p1".to_owned(), false));
        assert_eq!(store.take_key_package("alice", &phone).unwrap(), None);
        // One last-resort package per device now, not per account.
        let phone_last_resort = NewKeyPackage { data: b"p-lr".to_vec(), init_key: b"init-p-lr".to_vec() };
        let added = store.add_key_packages("alice", &phone, &[], Some(&phone_last_resort), 1000).unwrap();
        assert_eq!(added, KeyPackagesAdded::Stored(KeyPackageStock { count: 0, has_last_resort: true }));
        assert_eq!(store.last_resort_key_package("alice", &first).unwrap().as_deref(), Some(&b"lr"[..]));
        assert_eq!(store.last_resort_key_package("alice", &phone).unwrap().as_deref(), Some(&b"p-lr"[..]));
        drop(store);
        let connection = Connection::open(&path).unwrap();
        let owner_index: Vec<String> = connection
            .prepare("SELECT name FROM pragma_index_info('key_packages_by_owner') ORDER BY seqno")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(owner_index, ["username", "device_id", "last_resort", "id"]);
    }

    /// A database written by a version-1 server (before invites, init keys
    /// and group logs) opens, keeps its accounts and groups (each stored
    /// view becomes the group's snapshot, with an empty log) and gains the
    /// newer tables and columns.
    #[test]
    fn version_1_database_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qpc.db");
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(MIGRATIONS[0]).unwrap();
            connection.pragma_update(None, "user_version", 1).unwrap();
            connection
                .execute("INSERT INTO accounts (username, identity_key, created_at_ms) VALUES ('alice', x'07', 5)", [])
                .unwrap();
            connection
                .execute(
                    "INSERT INTO groups (group_id, name, kind, creator, epoch, state_version, state, created_at_ms)
                     VALUES (x'01', 'old', 0, 'alice', 3, 7, x'0a0b', 5)",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_account("alice").unwrap().unwrap().identity_key, [7]);
        store.create_invite("token", 1, None, 0).unwrap();
        assert_eq!(store.consume_invite("token", 0).unwrap(), InviteUse::Consumed { remaining: 0 });
        let group = store.get_group(&[1]).unwrap().unwrap();
        assert_eq!((group.epoch, group.state_version, group.state.as_slice()), (3, 7, [10, 11].as_slice()));
        assert_eq!((group.snapshot_through, group.log.len()), (0, 0));
        let roster = store.group_roster(&[1]).unwrap().unwrap();
        assert_eq!((roster.log_head, roster.snapshot_through, roster.snapshot_bytes), (0, 0, 2));
        assert!(store.groups_with_log().unwrap().is_empty());
        // The upgraded group takes commits: its log starts at 1.
        let commit = NewMessage {
            message_id: b"c1".to_vec(),
            group_id: vec![1],
            sender: "alice".to_owned(),
            kind: EntryKind::Commit,
            payload: b"commit".to_vec(),
            epoch: 3,
            stored_at_ms: 6,
        };
        let write = CommitWrite {
            group_id: vec![1],
            expected_epoch: 3,
            new_epoch: 4,
            new_members: vec!["alice".to_owned()],
            new_devices: vec!["alice".to_owned()],
            snapshot: None,
            outbound: Vec::new(),
            served: Vec::new(),
            commit: Fanout { message: commit, recipients: Vec::new() },
            welcome: None,
        };
        assert!(
            matches!(store.apply_commit(&write).unwrap(), CommitResult::Applied(applied) if applied.state_version == 8)
        );
        let group = store.get_group(&[1]).unwrap().unwrap();
        assert_eq!((group.log.len(), group.log[0].seq, group.state.as_slice()), (1, 1, [10, 11].as_slice()));
        drop(store);
        let connection = Connection::open(&path).unwrap();
        let version: usize = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
        assert_eq!(version, 12);
        let expiry_index: i64 = connection
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'message_ids_by_row'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(expiry_index, 1, "version 5 indexes the idempotency records by message row");
        let served: i64 = connection
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'key_packages_served'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(served, 1, "version 6 records the key packages served");
    }
}
