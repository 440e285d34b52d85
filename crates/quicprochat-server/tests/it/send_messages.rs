//! `SendMessages`: a burst stored in request order, answered per message;
//! a refusal for good answers its message only, a refusal for now stops
//! the burst there; a resent burst is deduplicated.

use std::time::Duration;

use quicprochat_core::MlsClient;
use quicprochat_proto::{v1, Method, Status, MAX_SEND_MESSAGES};
use quicprochat_rpc::RpcClient;
use quicprochat_server::config::RateLimit;

use crate::harness::{alice_and_bob, queue_in_order, status_of, Harness, TestServer};

fn message(mls: &MlsClient, group_id: &[u8], id: &str) -> v1::SendMessageRequest {
    v1::SendMessageRequest {
        group_id: group_id.to_vec().into(),
        message_id: id.as_bytes().to_vec().into(),
        ciphertext: mls.encrypt(group_id, id.as_bytes()).expect("encrypt").into(),
    }
}

async fn send_burst(rpc: &RpcClient, messages: Vec<v1::SendMessageRequest>) -> Vec<Status> {
    let response: v1::SendMessagesResponse =
        rpc.call(Method::SendMessages, &v1::SendMessagesRequest { messages }).await.expect("answered");
    response
        .results
        .iter()
        .map(|result| {
            let status = Status::from(v1::StatusCode::try_from(result.status).expect("known status"));
            assert_eq!(result.sent.is_some(), status == Status::Ok, "{result:?}");
            status
        })
        .collect()
}

fn ids(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|name| name.as_bytes().to_vec()).collect()
}

#[tokio::test]
async fn a_burst_is_stored_in_order_and_a_message_refused_for_good_answers_alone() {
    let harness = Harness::start().await;
    let (alice, alice_mls, bob, group_id) = alice_and_bob(&harness).await;
    let alice_rpc = harness.login("alice", &alice).await;
    let bob_rpc = harness.login("bob", &bob).await;
    let before = queue_in_order(&bob_rpc).await;

    let mut forged = message(&alice_mls, &group_id, "m2");
    forged.group_id = vec![3u8; 16].into();
    let burst = vec![
        message(&alice_mls, &group_id, "m1"),
        forged,
        message(&alice_mls, &group_id, "m3"),
        message(&alice_mls, &group_id, "m4"),
    ];
    let statuses = send_burst(&alice_rpc, burst.clone()).await;
    assert_eq!(statuses, [Status::Ok, Status::InvalidArgument, Status::Ok, Status::Ok]);
    let queued = queue_in_order(&bob_rpc).await;
    assert_eq!(queued[before.len()..], ids(&["m1", "m3", "m4"]), "stored in request order, the refused one left out");

    // The same burst again (a client that lost the answer): answered alike,
    // nothing queued twice.
    assert_eq!(send_burst(&alice_rpc, burst).await, statuses);
    assert_eq!(queue_in_order(&bob_rpc).await, queued);
}

#[tokio::test]
async fn a_rate_limited_message_stops_the_burst_so_order_holds_on_resend() {
    let harness = Harness::start_with(|config| {
        config.rate_limits.send_per_account = RateLimit { burst: 3, period: Duration::from_secs(3600) };
    })
    .await;
    let (alice, alice_mls, bob, group_id) = alice_and_bob(&harness).await;
    let alice_rpc = harness.login("alice", &alice).await;
    let bob_rpc = harness.login("bob", &bob).await;
    let before = queue_in_order(&bob_rpc).await;

    let burst: Vec<_> = ["m1", "m2", "m3", "m4", "m5"].iter().map(|id| message(&alice_mls, &group_id, id)).collect();
    let response: v1::SendMessagesResponse =
        alice_rpc.call(Method::SendMessages, &v1::SendMessagesRequest { messages: burst }).await.expect("answered");
    let statuses: Vec<i32> = response.results.iter().map(|result| result.status).collect();
    let expected = [v1::StatusCode::Ok, v1::StatusCode::Ok, v1::StatusCode::Ok, v1::StatusCode::ResourceExhausted];
    assert_eq!(statuses[..4], expected.map(|code| code as i32));
    assert_eq!(statuses[4], v1::StatusCode::Unavailable as i32, "not tried after a refusal for now");
    for refused in &response.results[3..] {
        let body = refused.error.as_ref().expect("an error body");
        assert!(body.retry_after_ms > 0, "{body:?}");
    }
    assert_eq!(queue_in_order(&bob_rpc).await[before.len()..], ids(&["m1", "m2", "m3"]));
}

#[tokio::test]
async fn empty_and_oversized_bursts_are_refused() {
    let harness = Harness::start().await;
    let (alice, alice_mls, _bob, group_id) = alice_and_bob(&harness).await;
    let alice_rpc = harness.login("alice", &alice).await;
    let empty = alice_rpc
        .call::<_, v1::SendMessagesResponse>(Method::SendMessages, &v1::SendMessagesRequest { messages: Vec::new() })
        .await;
    assert_eq!(status_of(empty), Status::InvalidArgument);
    let one = message(&alice_mls, &group_id, "m1");
    let messages = vec![one; MAX_SEND_MESSAGES + 1];
    let oversized = alice_rpc
        .call::<_, v1::SendMessagesResponse>(Method::SendMessages, &v1::SendMessagesRequest { messages })
        .await;
    assert_eq!(status_of(oversized), Status::InvalidArgument);
    // The connection still serves.
    assert_eq!(send_burst(&alice_rpc, vec![message(&alice_mls, &group_id, "m2")]).await, [Status::Ok]);
}

#[tokio::test]
async fn the_operator_bounds_bursts_or_turns_them_off() {
    for (most, refused_at) in [(2usize, 3usize), (0, 1)] {
        let harness = Harness::start_with(|config| config.max_send_burst = most as u32).await;
        let (alice, alice_mls, _bob, group_id) = alice_and_bob(&harness).await;
        let alice_rpc = harness.login("alice", &alice).await;
        let messages = (0..refused_at).map(|n| message(&alice_mls, &group_id, &format!("m{n}"))).collect();
        let over = alice_rpc
            .call::<_, v1::SendMessagesResponse>(Method::SendMessages, &v1::SendMessagesRequest { messages })
            .await;
        assert_eq!(status_of(over), Status::InvalidArgument, "a burst of {refused_at} where at most {most} may go");
        if most > 0 {
            let within = (0..most).map(|n| message(&alice_mls, &group_id, &format!("w{n}"))).collect();
            assert_eq!(send_burst(&alice_rpc, within).await, vec![Status::Ok; most]);
        }
    }
}
