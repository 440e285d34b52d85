//! Delivery guarantees: a message id is enqueued once however often it is
//! submitted, and a client shows a message once however often it arrives.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use quicprochat_core::{auth_transcript, AuthPurpose, MlsClient};
use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{PinnedServer, RpcClient};
use quicprochat_sdk::content::Content;
use quicprochat_sdk::profile::Profile;
use quicprochat_sdk::{QpcClient, SdkError, StoredMessage};
use tokio::task::JoinHandle;

use crate::harness::{receive_n, team_of_three, texts, Harness, WAIT};

/// alice's profile driven by hand: a raw logged-in RPC connection and her MLS state.
struct RawAlice {
    rpc: RpcClient,
    mls: MlsClient,
    group_id: Vec<u8>,
}

/// A raw RPC connection logged in as `name`, from its profile.
async fn raw_login(harness: &Harness, name: &str) -> (RpcClient, Profile) {
    let profile = Profile::load(&harness.profile(name)).expect("profile");
    let pin = PinnedServer::new(Some(profile.server_fingerprint));
    let rpc = RpcClient::connect(harness.addr, pin, &TransportLimits::default(), WAIT).await.expect("connect");
    let challenge: v1::ChallengeResponse =
        rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await.expect("challenge");
    let exporter = rpc.auth_exporter().expect("exporter");
    let transcript =
        auth_transcript(AuthPurpose::Login, &challenge.nonce, &exporter, name, profile.identity.public_key());
    let login = v1::LoginRequest {
        username: name.into(),
        signature: profile.identity.sign(&transcript).expect("sign").into(),
        device_key: Default::default(),
    };
    let _: v1::LoginResponse = rpc.call(Method::Login, &login).await.expect("login");
    (rpc, profile)
}

impl RawAlice {
    async fn open(harness: &Harness) -> RawAlice {
        let (rpc, profile) = raw_login(harness, "alice").await;
        let (mls, store) = profile.open_state().expect("alice's state");
        let group_id = store.find_active("team").expect("query").expect("team exists").group_id;
        RawAlice { rpc, mls, group_id }
    }

    async fn send(&self, wire_id: &[u8], content_id: &str, text: &str) {
        let content = Content { v: 1, id: content_id.into(), text: text.into(), sent_at: 1 };
        let ciphertext = self.mls.encrypt(&self.group_id, &content.encode()).expect("encrypt");
        let request = v1::SendMessageRequest {
            group_id: self.group_id.clone().into(),
            message_id: wire_id.to_vec().into(),
            ciphertext: ciphertext.into(),
        };
        let _: v1::SendMessageResponse = self.rpc.call(Method::SendMessage, &request).await.expect("send");
    }
}

#[tokio::test]
async fn duplicate_enqueue_is_delivered_once() {
    let harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    alice.disconnect().await;
    drop(alice);
    let raw = RawAlice::open(&harness).await;
    // A retry of the same wire message id (even re-encrypted) is stored once.
    raw.send(b"wire-1", "aa01", "first attempt").await;
    raw.send(b"wire-1", "aa02", "retry of the same message").await;
    raw.send(b"wire-2", "aa03", "next message").await;
    assert_eq!(texts(&receive_n(&bob, 2).await), ["first attempt", "next message"]);
    assert!(bob.receive().await.expect("receive").is_empty());
}

#[tokio::test]
async fn client_shows_a_message_once_even_if_delivered_twice() {
    let harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    alice.disconnect().await;
    drop(alice);
    let raw = RawAlice::open(&harness).await;
    // Same end-to-end message id under two wire ids: the server stores both,
    // the recipient shows one.
    raw.send(b"wire-a", "bb01", "only once please").await;
    raw.send(b"wire-b", "bb01", "only once please").await;
    raw.send(b"wire-c", "bb02", "sentinel").await;
    assert_eq!(texts(&receive_n(&bob, 2).await), ["only once please", "sentinel"]);
}

/// bob's `receive_wait`, running, and alice replaced by [`RawAlice`], on a
/// server with `/metrics`; the server has counted bob's `Subscribe`.
struct WaitingBob {
    harness: Harness,
    raw: RawAlice,
    bob: Arc<QpcClient>,
    _carol: QpcClient,
    waiting: JoinHandle<Result<Vec<StoredMessage>, SdkError>>,
}

async fn bob_waiting_on_push() -> WaitingBob {
    let harness =
        Harness::start_with(|config| config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    alice.disconnect().await;
    drop(alice);
    let raw = RawAlice::open(&harness).await;
    let bob = Arc::new(bob);
    // The first wait fetches, then subscribes and waits on the push stream.
    let subscribes = harness.calls("Subscribe").await;
    let waiting = spawn_wait(&bob);
    harness.wait_for_calls("Subscribe", subscribes + 1).await;
    WaitingBob { harness, raw, bob, _carol: carol, waiting }
}

fn spawn_wait(bob: &Arc<QpcClient>) -> JoinHandle<Result<Vec<StoredMessage>, SdkError>> {
    let bob = bob.clone();
    tokio::spawn(async move { bob.receive_wait(WAIT).await })
}

#[tokio::test]
async fn pushed_messages_are_received_without_a_fetch() {
    let WaitingBob { harness, raw, bob, waiting, .. } = bob_waiting_on_push().await;
    let (fetches, acks) = (harness.calls("Fetch").await, harness.calls("Ack").await);
    raw.send(b"wire-1", "cc01", "one").await;
    let first = tokio::time::timeout(WAIT, waiting).await.expect("in time").expect("task").expect("receive");
    assert_eq!(texts(&first), ["one"]);
    // A burst while bob is not reading; the next wait keeps the same stream.
    for (index, text) in ["two", "three", "four"].into_iter().enumerate() {
        raw.send(format!("wire-{}", index + 2).as_bytes(), &format!("cc0{}", index + 2), text).await;
    }
    assert_eq!(texts(&receive_n(&bob, 3).await), ["two", "three", "four"]);
    assert_eq!(harness.calls("Fetch").await, fetches, "pushed entries follow the cursor: nothing to fetch");
    // One Ack per batch taken: "one" alone, then the burst in one to three
    // batches (how many of its events had arrived when bob looked). The
    // Acks leave after the messages were returned, so wait for them.
    harness.wait_for_calls("Ack", acks + 2).await;
    let acked = harness.calls("Ack").await - acks;
    assert!(acked <= 4, "one Ack per batch of pushed entries, got {acked}");
    // Nothing was left behind: a fetch from the stored cursor finds nothing new.
    assert!(bob.receive().await.expect("receive").is_empty());
}

/// The REPL and TUI cancel `receive_wait` when a command runs. A call
/// cancelled while it waits on the push stream leaves the stream to the
/// next call: no new subscription, no fetch, and nothing missed.
#[tokio::test]
async fn a_wait_cancelled_on_the_push_stream_leaves_it_to_the_next() {
    let WaitingBob { harness, raw, bob, waiting, .. } = bob_waiting_on_push().await;
    // A wait that subscribed and gets "one" pushed keeps the stream.
    raw.send(b"wire-1", "dd01", "one").await;
    let first = tokio::time::timeout(WAIT, waiting).await.expect("in time").expect("task").expect("receive");
    assert_eq!(texts(&first), ["one"]);

    let (subscribes, fetches) = (harness.calls("Subscribe").await, harness.calls("Fetch").await);
    let cancelled = spawn_wait(&bob);
    // This test's runtime has one thread: the spawned call runs until it
    // waits on the push stream, then this task goes on and cancels it.
    tokio::task::yield_now().await;
    cancelled.abort();
    assert!(cancelled.await.expect_err("cancelled").is_cancelled());

    raw.send(b"wire-2", "dd02", "two").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["two"]);
    assert_eq!(harness.calls("Subscribe").await, subscribes, "the next call used the stream the cancelled one left");
    assert_eq!(harness.calls("Fetch").await, fetches, "nothing to fetch");
}

/// What a client received is acknowledged by the time it disconnects: the
/// server keeps nothing of it (a fresh connection as bob fetches nothing).
#[tokio::test]
async fn a_disconnect_right_after_receiving_leaves_nothing_unacknowledged() {
    let harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    alice.disconnect().await;
    drop(alice);
    let raw = RawAlice::open(&harness).await;
    for index in 0..5 {
        raw.send(format!("wire-{index}").as_bytes(), &format!("ee0{index}"), &format!("message {index}")).await;
    }
    assert_eq!(receive_n(&bob, 5).await.len(), 5);
    bob.disconnect().await;
    drop(bob);
    let (rpc, _) = raw_login(&harness, "bob").await;
    let queue: v1::FetchResponse =
        rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 200 }).await.expect("fetch");
    assert!(queue.entries.is_empty(), "{} entries left unacknowledged on the server", queue.entries.len());
}
