//! Push over real QUIC: what each subscribed connection receives is its
//! account's queue, in seq order, with no gap and no duplicate, whether an
//! entry came from the send path's mailbox or from a re-read of the queue
//! (commits, entries handed over out of order, a full mailbox).

use std::time::Duration;

use quicprochat_proto::{v1, Method};
use quicprochat_rpc::RpcClient;
use quicprochat_server::config::RateLimit;

use crate::harness::{group_of_two, queue_in_order, Harness, TestServer, WAIT};

/// Messages sent concurrently: more than a mailbox holds, so a slow push
/// task falls back to re-reading.
const MESSAGES: usize = 600;

/// `(seq, message_id)` of the first `count` entries pushed on `rpc`'s push stream.
async fn pushed(rpc: &RpcClient, after_seq: u64, count: usize) -> Vec<(u64, Vec<u8>)> {
    let _: v1::SubscribeResponse =
        rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq }).await.expect("subscribe");
    let mut push = tokio::time::timeout(WAIT, rpc.accept_push()).await.expect("push stream in time").expect("push");
    let mut entries = Vec::new();
    while entries.len() < count {
        let event = tokio::time::timeout(WAIT, push.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {count} entries pushed in time", entries.len()))
            .expect("push event")
            .expect("stream open");
        entries.extend(event.entries.into_iter().map(|entry| (entry.seq, entry.message_id.to_vec())));
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscription_gets_the_queue_in_order_under_concurrent_sends_and_a_commit() {
    let harness = Harness::start_with(|config| {
        config.rate_limits.send_per_account = RateLimit { burst: 100_000, period: Duration::from_secs(1) };
    })
    .await;
    let group_id = vec![9u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let (carol_rpc, carol) = harness.register("carol").await;
    let carol_mls =
        quicprochat_core::MlsClient::open(&harness.dir().join("carol.db"), carol, "carol").expect("carol's state");
    let upload = v1::UploadKeyPackagesRequest {
        key_packages: carol_mls.generate_key_packages(1).expect("kp").into_iter().map(Into::into).collect(),
        last_resort: carol_mls.generate_last_resort_key_package().expect("kp").into(),
    };
    let _: v1::UploadKeyPackagesResponse = carol_rpc.call(Method::UploadKeyPackages, &upload).await.expect("upload");

    // bob has the add commit's entries queued already; both of his
    // subscriptions start after them.
    let already_queued = queue_in_order(&pair.bob_rpc).await.len();
    let fetched: v1::FetchResponse =
        pair.bob_rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 1 }).await.expect("fetch");
    let head = fetched.head_seq;
    let second_bob = harness.login("bob", &pair.bob).await;
    let expected_count = MESSAGES + 1;
    let first_stream = tokio::spawn({
        let rpc = pair.bob_rpc.clone();
        async move { pushed(&rpc, head, expected_count).await }
    });
    let second_stream = tokio::spawn({
        let rpc = second_bob.clone();
        async move { pushed(&rpc, head, expected_count).await }
    });

    // Two alice connections send at once while alice also commits adding
    // carol (a commit reaches push tasks only as a wake-up to re-read).
    let second_alice = harness.login("alice", &pair.alice).await;
    let ciphertext = bytes::Bytes::from(pair.alice_mls.encrypt(&group_id, b"hello").expect("encrypt"));
    let mut sends = tokio::task::JoinSet::new();
    for index in 0..MESSAGES {
        let rpc = if index % 2 == 0 { pair.alice_rpc.clone() } else { second_alice.clone() };
        let request = v1::SendMessageRequest {
            group_id: group_id.clone().into(),
            message_id: format!("m{index:04}").into_bytes().into(),
            ciphertext: ciphertext.clone(),
        };
        sends.spawn(async move { rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await });
    }
    let fetched: v1::FetchKeyPackageResponse = pair
        .alice_rpc
        .call(
            Method::FetchKeyPackage,
            &v1::FetchKeyPackageRequest { username: "carol".into(), device_id: Default::default() },
        )
        .await
        .expect("carol's key package");
    let pending = pair.alice_mls.add_members(&group_id, &[fetched.key_package.to_vec()]).expect("add carol");
    let submit = v1::SubmitCommitRequest {
        group_id: group_id.clone().into(),
        epoch: pending.epoch,
        commit: pending.commit.into(),
        welcome: pending.welcome.unwrap_or_default().into(),
        message_id: b"add-carol".to_vec().into(),
    };
    let _: v1::SubmitCommitResponse = pair.alice_rpc.call(Method::SubmitCommit, &submit).await.expect("commit");
    while let Some(sent) = sends.join_next().await {
        sent.expect("send task").expect("send acknowledged");
    }

    let queue = queue_in_order(&pair.bob_rpc).await;
    let expected: Vec<Vec<u8>> = queue[already_queued..].to_vec();
    assert_eq!(expected.len(), expected_count, "every message and the commit are queued for bob");
    for (name, stream) in [("first", first_stream), ("second", second_stream)] {
        let entries = tokio::time::timeout(WAIT, stream).await.expect("stream in time").expect("stream task");
        let seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
        let want: Vec<u64> = (head + 1..=head + expected_count as u64).collect();
        assert_eq!(seqs, want, "{name} subscription: seqs follow the cursor without gap or repeat");
        let ids: Vec<Vec<u8>> = entries.into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, expected, "{name} subscription: the queue's entries, in its order");
    }
}

/// Review F12: an account disabled while connected (`qpc-server users
/// disable` writes the database from another process) loses Fetch, Ack and
/// Subscribe at once, and its running push stream ends within one
/// housekeeping round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_loses_fetch_ack_and_its_running_push() {
    let harness = Harness::start().await;
    let (rpc, _identity) = harness.register("mallory").await;
    let _: v1::SubscribeResponse =
        rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq: 0 }).await.expect("subscribe");
    let mut push = tokio::time::timeout(WAIT, rpc.accept_push()).await.expect("push stream in time").expect("push");
    let opening = tokio::time::timeout(WAIT, push.next()).await.expect("opening event in time");
    assert!(matches!(opening, Ok(Some(_))), "the stream opens with an empty event: {opening:?}");

    let database = rusqlite::Connection::open(harness.dir().join("data").join("qpc-server.db")).expect("open");
    database.busy_timeout(WAIT).expect("busy timeout");
    database.execute("UPDATE accounts SET disabled = 1 WHERE username = 'mallory'", []).expect("disable");

    let denied = quicprochat_proto::Status::PermissionDenied;
    let fetch = rpc.call::<_, v1::FetchResponse>(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 10 }).await;
    assert_eq!(crate::harness::status_of(fetch), denied);
    let ack = rpc.call::<_, v1::AckResponse>(Method::Ack, &v1::AckRequest { up_to_seq: 1 }).await;
    assert_eq!(crate::harness::status_of(ack), denied);
    let subscribe =
        rpc.call::<_, v1::SubscribeResponse>(Method::Subscribe, &v1::SubscribeRequest { after_seq: 0 }).await;
    assert_eq!(crate::harness::status_of(subscribe), denied);
    // The housekeeping round (every 5 s) ends the running push stream.
    let ended = tokio::time::timeout(Duration::from_secs(15), push.next()).await.expect("the push stream ended");
    assert!(!matches!(ended, Ok(Some(_))), "no more events: {ended:?}");
}
