//! A group's view survives any stop whatever part of it is only in the
//! group's log: after `kill -9` the commits accepted since the last
//! snapshot are replayed (or snapshotted at start) and the next commit
//! builds on them; a graceful stop snapshots the logged groups first. A
//! commit that adds members is stored with its snapshot, so the logged
//! commit here is a removal.

use std::path::Path;

use quicprochat_core::MlsClient;
use quicprochat_proto::v1;
use quicprochat_proto::Method;

use crate::harness::{group_of_two, GroupOfTwo, Harness, TestServer};
use crate::process::ServerProcess;

const GROUP: [u8; 16] = [0x6c; 16];

/// Entries in the group's log that no snapshot covers (read from the
/// database file while no server runs).
fn logged_entries(data_dir: &Path) -> i64 {
    let db = rusqlite::Connection::open(data_dir.join("qpc-server.db")).expect("open database");
    db.query_row("SELECT log_head - snapshot_through FROM groups WHERE group_id = ?1", [GROUP.as_slice()], |row| {
        row.get(0)
    })
    .expect("the group's row")
}

/// alice adds bob again (his last-resort package) in a commit the server
/// must accept on its view as restored.
async fn add_bob_again(server: &impl TestServer, alice: &quicprochat_core::Identity, alice_mls: &MlsClient) {
    let alice_rpc = server.login("alice", alice).await;
    let fetched: v1::FetchKeyPackageResponse = alice_rpc
        .call(
            Method::FetchKeyPackage,
            &v1::FetchKeyPackageRequest { username: "bob".into(), device_id: Default::default() },
        )
        .await
        .expect("bob's key package");
    let add = alice_mls.add_members(&GROUP, &[fetched.key_package.to_vec()]).expect("add bob");
    let submit = v1::SubmitCommitRequest {
        group_id: GROUP.to_vec().into(),
        epoch: add.epoch,
        commit: add.commit.into(),
        welcome: add.welcome.unwrap_or_default().into(),
        message_id: b"add-bob-again".to_vec().into(),
    };
    let accepted: v1::SubmitCommitResponse =
        alice_rpc.call(Method::SubmitCommit, &submit).await.expect("a commit on the restored view");
    assert_eq!(accepted.epoch, 3);
    alice_mls.merge_pending_commit(&GROUP).expect("merge");
}

/// alice removes bob in a commit the server must accept on its current view.
async fn remove_bob(server: &impl TestServer, alice: &quicprochat_core::Identity, alice_mls: &MlsClient) {
    let alice_rpc = server.login("alice", alice).await;
    let removal = alice_mls.remove_members(&GROUP, &["bob".to_owned()]).expect("remove bob");
    let submit = v1::SubmitCommitRequest {
        group_id: GROUP.to_vec().into(),
        epoch: removal.epoch,
        commit: removal.commit.into(),
        welcome: Default::default(),
        message_id: b"remove-bob".to_vec().into(),
    };
    let accepted: v1::SubmitCommitResponse =
        alice_rpc.call(Method::SubmitCommit, &submit).await.expect("a commit on the restored view");
    assert_eq!(accepted.epoch, 2);
    alice_mls.merge_pending_commit(&GROUP).expect("merge");
    let members: v1::GroupMembersResponse = alice_rpc
        .call(Method::GroupMembers, &v1::GroupMembersRequest { group_id: GROUP.to_vec().into() })
        .await
        .expect("members");
    assert_eq!(members.members, ["alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_only_in_the_log_survive_kill_9() {
    quicprochat_rpc::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data);
    let started = std::time::Instant::now();
    let GroupOfTwo { alice, alice_mls, .. } = group_of_two(&server, dir.path(), &GROUP).await;
    assert_eq!(logged_entries(&data), 0, "the add was stored with its snapshot");
    remove_bob(&server, &alice, &alice_mls).await;
    server.kill();
    // Housekeeping snapshots logged groups every 5 s; before its second
    // round the removal can only be in the log.
    if started.elapsed() < std::time::Duration::from_secs(4) {
        assert_eq!(logged_entries(&data), 1, "the removal is logged, not yet in a snapshot");
    }

    let restarted = ServerProcess::start(&data);
    add_bob_again(&restarted, &alice, &alice_mls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_snapshots_the_logged_groups() {
    let harness = Harness::start().await;
    let GroupOfTwo { alice, alice_mls, .. } = group_of_two(&harness, harness.dir(), &GROUP).await;
    remove_bob(&harness, &alice, &alice_mls).await;
    harness.server.shutdown().await;
    let dir = harness.dir;
    assert_eq!(logged_entries(&dir.path().join("data")), 0, "the stop stored a snapshot through the removal");

    let harness = Harness::restart(dir).await;
    add_bob_again(&harness, &alice, &alice_mls).await;
}
