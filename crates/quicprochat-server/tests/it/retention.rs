//! Retention: what no recipient acknowledged within `delivery.retention` is
//! deleted, and its message id forgotten, while the server runs.

use std::net::SocketAddr;
use std::time::Duration;

use quicprochat_proto::v1;
use quicprochat_proto::Method;

use crate::harness::{alice_and_bob, http_get, queued_message_ids, sample, Harness, TestServer, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_expire_and_their_ids_are_forgotten() {
    // Set directly: the config loader allows an hour at least.
    let retention = Duration::from_secs(4);
    let harness = Harness::start_with(|config| {
        config.retention = retention;
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let metrics = harness.server.metrics_addr().expect("metrics enabled");
    let (alice, alice_mls, bob, group_id) = alice_and_bob(&harness).await;
    let alice_rpc = harness.login("alice", &alice).await;
    let bob_rpc = harness.login("bob", &bob).await;
    let send = v1::SendMessageRequest {
        group_id: group_id.clone().into(),
        message_id: b"unread".to_vec().into(),
        ciphertext: alice_mls.encrypt(&group_id, b"read me").expect("encrypt").into(),
    };
    let _: v1::SendMessageResponse = alice_rpc.call(Method::SendMessage, &send).await.expect("send");
    assert!(queued_message_ids(&bob_rpc).await.contains(b"unread".as_slice()));

    // Bob never acknowledges: his queue empties once the retention passed,
    // and the metrics count it (the Welcome that added him and the message).
    let expired = tokio::time::timeout(WAIT + retention, async {
        loop {
            let (_, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.expect("scrape");
            let counted = sample(&body, "qpc_expired_queue_entries_total") >= 2.0
                && sample(&body, "qpc_expired_message_ids_total") >= 1.0;
            if counted && queued_message_ids(&bob_rpc).await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(expired.is_ok(), "bob's entries were not expired and counted after the retention period");

    // The id was forgotten with it: the same id is a new message now.
    let _: v1::SendMessageResponse = alice_rpc.call(Method::SendMessage, &send).await.expect("send again");
    assert!(queued_message_ids(&bob_rpc).await.contains(b"unread".as_slice()), "stored again, not a duplicate");
}
