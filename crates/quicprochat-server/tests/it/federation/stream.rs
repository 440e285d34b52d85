//! The stream between two servers (step 3): entries written for a peer, as
//! the hub's writer will write them, reach the peer's users once and in
//! order, over a partition and across restarts, and leave nothing pending.

use prost::Message;
use quicprochat_core::names::group_id_hosted_by;
use quicprochat_core::DeviceId;
use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::RpcClient;
use quicprochat_server::storage::{NewOutboundEntry, Store};

use super::{quick_to_notice, Pair};
use crate::harness::{TestServer, WAIT};

/// `count` group events from `alice@a.test` for `bob`'s device, numbered
/// from `first`, appended to a's stream to b.
pub(super) fn write_events(store: &dyn Store, bob_device: &DeviceId, first: u32, count: u32) {
    write_events_at(store, bob_device, first, count, now_ms(), 0);
}

/// [`write_events`], accepted at `accepted_at_ms`, each payload padded with
/// `padding` bytes.
fn write_events_at(
    store: &dyn Store,
    bob_device: &DeviceId,
    first: u32,
    count: u32,
    accepted_at_ms: u64,
    padding: usize,
) {
    let entries: Vec<NewOutboundEntry> = (first..first + count)
        .map(|number| {
            let event = v1::FedGroupEvent {
                group_id: group_id_hosted_by([5; 16], "a.test").into(),
                group_name: "team".into(),
                group_kind: v1::GroupKind::Named as i32,
                sender: "alice@a.test".into(),
                message_id: format!("m{number}").into_bytes().into(),
                kind: v1::EntryKind::Application as i32,
                epoch: 1,
                payload: [number.to_be_bytes().as_slice(), &vec![0; padding]].concat().into(),
                recipients: vec![v1::FedRecipient {
                    username: "bob".into(),
                    device_id: bob_device.as_bytes().to_vec().into(),
                }],
            };
            let entry = v1::FedEntry { seq: 0, accepted_at_ms, event: Some(v1::fed_entry::Event::GroupEvent(event)) };
            NewOutboundEntry { accepted_at_ms, entry: entry.encode_to_vec() }
        })
        .collect();
    store.append_outbound("b.test", &entries).expect("append");
}

/// Reads pushed entries from `rpc` until `count` arrived; returns their numbers.
pub(super) async fn receive(rpc: &RpcClient, count: usize) -> Vec<u32> {
    let _: v1::SubscribeResponse =
        rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq: 0 }).await.expect("subscribe");
    let mut push = tokio::time::timeout(WAIT, rpc.accept_push()).await.expect("push stream in time").expect("push");
    let mut numbers = Vec::new();
    while numbers.len() < count {
        let event = tokio::time::timeout(WAIT, push.next()).await;
        let event = event.unwrap_or_else(|_| panic!("only {} of {count} entries arrived", numbers.len()));
        for entry in event.expect("push").expect("push stream open").entries {
            assert_eq!((entry.sender.as_str(), entry.group_name.as_str()), ("alice@a.test", "team"));
            numbers.push(u32::from_be_bytes(entry.payload[..4].try_into().expect("4 bytes")));
        }
    }
    numbers
}

#[tokio::test]
async fn entries_for_a_peer_reach_its_users_once_in_order_across_a_partition_and_restarts() {
    let pair = Pair::start(quick_to_notice).await;
    let (_, bob) = pair.b.register("bob").await;
    let bob_device = DeviceId::of_key(bob.public_key());

    // 600 entries (three batches' worth: a batch holds at most 256), written
    // while a is down and the link to b is cut.
    pair.to_b.cut();
    let pair = pair.restart_a(|store| write_events(store, &bob_device, 1, 600)).await;
    let stuck = pair.a.server.wait_for_peer("b.test", WAIT, |status| status.pending == 600).await;
    assert!(stuck.is_some(), "a holds them while b is unreachable: {:?}", pair.a.server.federation_peers());

    pair.to_b.heal();
    let bob_rpc = pair.b.login("bob", &bob).await;
    assert_eq!(receive(&bob_rpc, 600).await, (1..=600).collect::<Vec<_>>(), "once each, in order");
    let drained = pair.a.server.wait_for_peer("b.test", WAIT, |status| status.pending == 0).await;
    assert!(drained.is_some(), "nothing stays pending once b applied them");

    // A restart resends nothing already applied; new entries follow in order.
    let pair = pair.restart_a(|store| write_events(store, &bob_device, 601, 5)).await;
    let bob_rpc = pair.b.login("bob", &bob).await;
    let numbers = receive(&bob_rpc, 605).await;
    assert_eq!(numbers, (1..=605).collect::<Vec<_>>(), "unacknowledged entries are still queued, none twice");
    let stream = pair.a.server.wait_for_peer("b.test", WAIT, |status| status.pending == 0).await;
    assert!(stream.is_some());
    pair.a.server.shutdown().await;
    pair.b.server.shutdown().await;
}

fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    u64::try_from(since_epoch.as_millis()).expect("clock in range")
}

#[tokio::test]
async fn entries_that_wait_past_the_retention_expire_and_the_stream_goes_on_after_them() {
    let pair = Pair::start(quick_to_notice).await;
    let (_, bob) = pair.b.register("bob").await;
    let bob_device = DeviceId::of_key(bob.public_key());
    pair.to_b.cut();
    // 50 entries accepted two retention periods ago, then 5 fresh ones.
    let retention_ms = u64::try_from(
        quicprochat_server::ServerConfig::new(".".into(), "127.0.0.1:0".parse().expect("addr")).retention.as_millis(),
    )
    .expect("ms");
    let pair = pair
        .restart_a(|store| {
            write_events_at(store, &bob_device, 1, 50, now_ms() - 2 * retention_ms, 0);
            write_events(store, &bob_device, 51, 5);
        })
        .await;
    let expired = pair.a.server.wait_for_peer("b.test", WAIT, |status| status.pending == 5).await;
    assert!(expired.is_some(), "the old entries expire while b is cut off: {:?}", pair.a.server.federation_peers());
    pair.to_b.heal();
    let bob_rpc = pair.b.login("bob", &bob).await;
    assert_eq!(receive(&bob_rpc, 5).await, (51..=55).collect::<Vec<_>>(), "b goes on after the expired ones");
    let drained = pair.a.server.wait_for_peer("b.test", WAIT, |status| status.pending == 0).await;
    assert!(drained.is_some());
    pair.a.server.shutdown().await;
    pair.b.server.shutdown().await;
}

#[tokio::test]
async fn large_entries_go_in_several_batches_within_the_byte_limit() {
    let pair = Pair::start(quick_to_notice).await;
    let (_, bob) = pair.b.register("bob").await;
    let bob_device = DeviceId::of_key(bob.public_key());
    // 40 entries of 512 KiB: 20 MiB, at least three batches of at most 8 MiB.
    let pair = pair.restart_a(|store| write_events_at(store, &bob_device, 1, 40, now_ms(), 512 * 1024)).await;
    let bob_rpc = pair.b.login("bob", &bob).await;
    assert_eq!(receive(&bob_rpc, 40).await, (1..=40).collect::<Vec<_>>());
    let drained = pair.a.server.wait_for_peer("b.test", WAIT, |status| status.pending == 0).await;
    assert!(drained.is_some());
    pair.a.server.shutdown().await;
    pair.b.server.shutdown().await;
}
