//! Restarts: a client reopening its profile continues its groups; a server
//! restarted on the same data dir still holds every queued message; a
//! server restored from an older backup is caught up with.

use std::path::{Path, PathBuf};

use quicprochat_sdk::{MessageState, QpcClient};

use crate::harness::{receive_n, team_of_three, texts, Harness};

#[tokio::test]
async fn client_restart_keeps_state_and_continues() {
    let harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    alice.send("team", "before restart").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["before restart"]);
    bob.disconnect().await;
    drop(bob);

    alice.send("team", "while bob was away").await.expect("send");
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["while bob was away"]);
    bob.send("team", "bob is back").await.expect("bob sends after restart");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["bob is back"]);
    let history = bob.history("team", 10).await.expect("history");
    assert_eq!(texts(&history), ["before restart", "while bob was away", "bob is back"]);
}

#[tokio::test]
async fn server_restart_keeps_queued_messages() {
    let mut harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    alice.send("team", "queued before the restart").await.expect("send");
    for client in [alice, bob, carol] {
        client.disconnect().await;
    }
    harness.restart_server().await;
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["queued before the restart"]);
    let carol = harness.open("carol").await;
    assert_eq!(texts(&receive_n(&carol, 1).await), ["queued before the restart"]);
    // The group still works after the restart (the DS view was persisted).
    carol.send("team", "after the restart").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["after the restart"]);
}

#[tokio::test]
async fn outbox_survives_client_restart_and_delivers_once() {
    let mut harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    harness.stop_server().await;
    let queued = alice.send("team", "written while the server was down").await.expect("queued locally");
    assert_eq!(queued.state, quicprochat_sdk::MessageState::Pending);
    alice.disconnect().await;
    drop(alice);
    bob.disconnect().await;
    drop(bob);

    harness.start_server().await;
    // Reopening the profile logs in and flushes the outbox with the original id.
    let alice = harness.open("alice").await;
    let history = alice.history("team", 10).await.expect("history");
    assert_eq!(history.last().map(|message| message.state), Some(quicprochat_sdk::MessageState::Sent));
    assert_eq!(alice.flush_outbox().await.expect("flush"), 0, "nothing left queued");
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["written while the server was down"]);
    assert!(bob.receive().await.expect("receive").is_empty(), "delivered exactly once");
}

/// alice sends a message bob receives; the server is backed up; alice sends
/// two more that bob receives (his cursor passes them). Returns the data
/// dir and the backup, for [`restore`].
async fn backup_then_two_messages(harness: &mut Harness, alice: &QpcClient, bob: &QpcClient) -> (PathBuf, PathBuf) {
    alice.send("team", "in the backup").await.expect("send");
    assert_eq!(texts(&receive_n(bob, 1).await), ["in the backup"]);
    let data_dir = harness.dir.path().join("server");
    let backup = harness.dir.path().join("backup");
    harness.stop_server().await;
    copy_dir(&data_dir, &backup);
    harness.start_server().await;

    alice.send("team", "lost in the restore 1").await.expect("send");
    alice.send("team", "lost in the restore 2").await.expect("send");
    assert_eq!(texts(&receive_n(bob, 2).await), ["lost in the restore 1", "lost in the restore 2"]);
    (data_dir, backup)
}

/// Stops the server, puts `backup` in place of `data_dir`, starts it again.
async fn restore(harness: &mut Harness, data_dir: &Path, backup: &Path) {
    harness.stop_server().await;
    std::fs::remove_dir_all(data_dir).expect("remove the data dir");
    copy_dir(backup, data_dir);
    harness.start_server().await;
}

/// Copies the directory `from` to `to` (files only, one level deep: a
/// stopped server's data dir).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the data dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
        }
    }
}

/// A server restored from a backup assigns again seqs that bob's cursor
/// already passed: bob notices (the server's head is below his cursor),
/// takes the queue from its oldest entry, and gets what was sent since,
/// without showing anything twice.
#[tokio::test]
async fn a_server_restored_from_an_older_backup_loses_nothing_sent_after() {
    let mut harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    let (data_dir, backup) = backup_then_two_messages(&mut harness, &alice, &bob).await;
    restore(&mut harness, &data_dir, &backup).await;

    // alice's next message gets a seq bob's cursor has already passed.
    alice.send("team", "after the restore").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["after the restore"]);
    assert!(bob.receive().await.expect("receive").is_empty(), "nothing shown twice");
    bob.send("team", "bob still talks").await.expect("bob sends");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["bob still talks"]);
}

/// The same restore while bob is away, and alice sends as many messages
/// after it as the backup was behind: the server's head is back at bob's
/// cursor when he logs in, so only the new server instance tells him to
/// check his cursor. He gets both messages.
#[tokio::test]
async fn a_restore_hidden_by_new_messages_is_noticed_by_the_new_server_instance() {
    let mut harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    let (data_dir, backup) = backup_then_two_messages(&mut harness, &alice, &bob).await;
    bob.disconnect().await;
    drop(bob);
    alice.disconnect().await;
    drop(alice);
    restore(&mut harness, &data_dir, &backup).await;

    // Logged in to the restored server before sending: both are queued
    // for bob (not held in alice's outbox) before he logs in.
    let alice = harness.open("alice").await;
    for text in ["after the restore 1", "after the restore 2"] {
        assert_eq!(alice.send("team", text).await.expect("send").state, MessageState::Sent);
    }
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 2).await), ["after the restore 1", "after the restore 2"]);
    assert!(bob.receive().await.expect("receive").is_empty(), "nothing shown twice");
}

/// The local store's tables; every other table of `client.db` is OpenMLS's.
const LOCAL_STORE_TABLES: &[&str] = &[
    "conversations",
    "messages",
    "meta",
    "leaving",
    "unverified_joins",
    "broken_groups",
    "known_accounts",
    "removed_devices",
    "outbox",
];

/// Rewrites a closed profile into the layout of the releases before the
/// MLS state moved into `client.db`: OpenMLS's tables (and their migration
/// record) alone in `mls.db`, none of them in `client.db`.
fn split_into_the_earlier_layout(profile: &Path) {
    let client_db = profile.join("client.db");
    let mls_db = profile.join("mls.db");
    let connection = rusqlite::Connection::open(&client_db).expect("client.db");
    connection.execute("VACUUM INTO ?1", [mls_db.to_str().expect("utf-8 path")]).expect("copy");
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .expect("tables")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    let legacy = rusqlite::Connection::open(&mls_db).expect("mls.db");
    for table in &tables {
        let store_table = LOCAL_STORE_TABLES.contains(&table.as_str());
        let drop_from = if store_table { &legacy } else { &connection };
        drop_from.execute_batch(&format!("DROP TABLE \"{table}\"")).expect("drop");
    }
    assert!(tables.iter().any(|table| table == "openmls_group_data"), "the profile had MLS state: {tables:?}");
}

#[tokio::test]
async fn a_profile_of_the_earlier_layout_moves_its_mls_state_into_client_db() {
    let harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    alice.send("team", "before the upgrade").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["before the upgrade"]);
    bob.disconnect().await;
    drop(bob);
    split_into_the_earlier_layout(&harness.profile("bob"));

    alice.send("team", "during the upgrade").await.expect("send");
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["during the upgrade"], "the group's keys moved in");
    bob.send("team", "after the upgrade").await.expect("bob still sends");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["after the upgrade"]);
    let history = bob.history("team", 10).await.expect("history");
    assert_eq!(texts(&history), ["before the upgrade", "during the upgrade", "after the upgrade"]);
    let tombstone = std::fs::read(harness.profile("bob").join("mls.db")).expect("mls.db");
    assert!(!tombstone.starts_with(b"SQLite format 3"), "an older qpc cannot open the profile any more");
    // A second open does not move anything again.
    bob.disconnect().await;
    drop(bob);
    let bob = harness.open("bob").await;
    alice.send("team", "after a second open").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["after a second open"]);
}
