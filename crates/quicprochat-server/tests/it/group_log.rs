//! A group's view survives a restart whatever part of it is only in the
//! group's log: the commits accepted since the last snapshot are replayed
//! (or snapshotted at start), and the next commit builds on them.

use quicprochat_proto::v1;
use quicprochat_proto::Method;

use crate::harness::{group_of_two, GroupOfTwo, Harness, TestServer};

const GROUP: [u8; 16] = [0x6c; 16];

/// Entries in the group's log that no snapshot covers (read from the
/// database file while no server runs).
fn logged_entries(harness_dir: &std::path::Path) -> i64 {
    let db = rusqlite::Connection::open(harness_dir.join("data").join("qpc-server.db")).expect("open database");
    db.query_row("SELECT log_head - snapshot_through FROM groups WHERE group_id = ?1", [GROUP.as_slice()], |row| {
        row.get(0)
    })
    .expect("the group's row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_only_in_the_log_survive_a_restart() {
    let harness = Harness::start().await;
    let GroupOfTwo { alice, alice_mls, .. } = group_of_two(&harness, harness.dir(), &GROUP).await;
    harness.server.shutdown().await;
    let dir = harness.dir;
    assert_eq!(logged_entries(dir.path()), 1, "the add is logged, not yet in a snapshot");

    let harness = Harness::restart(dir).await;
    let alice_rpc = harness.login("alice", &alice).await;
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
