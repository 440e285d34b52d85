//! Concurrent sends of one client leave as bursts: in the order the calls
//! were made, each once, and a burst the server takes only in part keeps
//! its order when the rest is sent later.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use quicprochat_sdk::{MessageState, QpcClient, StoredMessage};
use quicprochat_server::config::RateLimit;

use crate::harness::{receive_n, texts, Harness};

/// `texts` sent by `client` with up to `in_flight` calls at once, started in order.
async fn send_concurrently(client: &QpcClient, texts: &[String], in_flight: usize) -> Vec<StoredMessage> {
    stream::iter(texts)
        .map(|text| async move { client.send("team", text).await.expect("send") })
        .buffered(in_flight)
        .collect()
        .await
}

async fn alice_and_bob(harness: &Harness) -> (QpcClient, QpcClient) {
    let alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["bob".into()]).await.expect("add");
    bob.sync().await.expect("bob joins");
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_arrive_once_in_call_order() {
    let harness =
        Harness::start_with(|config| config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await;
    let (alice, bob) = alice_and_bob(&harness).await;
    let sent: Vec<String> = (0..300).map(|n| format!("burst {n:03}")).collect();
    let answers = send_concurrently(&alice, &sent, 64).await;
    assert!(answers.iter().all(|message| message.state == MessageState::Sent), "{answers:?}");
    assert_eq!(answers.iter().map(|message| message.text.as_str()).collect::<Vec<_>>(), sent);
    let received = receive_n(&bob, sent.len()).await;
    assert_eq!(texts(&received), sent, "bob sees every message once, in alice's call order");
    let requests = harness.calls("SendMessages").await;
    assert!((1..300).contains(&requests), "300 sends went out in {requests} requests");
    // alice's history lists them in the same order.
    let history = alice.history("team", 400).await.expect("history");
    let mine: Vec<&str> = history.iter().filter(|m| m.from == "alice").map(|m| m.text.as_str()).collect();
    assert_eq!(mine, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_the_server_takes_in_part_keeps_its_order() {
    let harness = Harness::start_with(|config| {
        config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        config.rate_limits.send_per_account = RateLimit { burst: 5, period: Duration::from_millis(500) };
    })
    .await;
    let (alice, bob) = alice_and_bob(&harness).await;
    let sent: Vec<String> = (0..12).map(|n| format!("limited {n:02}")).collect();
    // The server stores each burst up to the message over the limit; the
    // client waits out its retry-after hint and sends the rest.
    let answers = send_concurrently(&alice, &sent, 12).await;
    assert!(answers.iter().all(|message| message.state == MessageState::Sent), "{answers:?}");
    let limited = harness.metric(r#"qpc_rate_limited_total{limit="send_per_account"}"#).await;
    assert!(limited > 0, "the rate limit refused part of a burst");
    let received = receive_n(&bob, sent.len()).await;
    assert_eq!(texts(&received), sent, "every message once, in order, after the resend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_beside_a_live_push_stream_makes_no_catch_up_fetch() {
    let harness =
        Harness::start_with(|config| config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).await;
    let (alice, bob) = alice_and_bob(&harness).await;
    // alice holds a push stream, as an app's receive loop does.
    assert!(alice.receive_wait(Duration::from_millis(50)).await.expect("subscribe").is_empty());
    let fetches = harness.calls("Fetch").await;
    let sent: Vec<String> = (0..5).map(|n| format!("pushed {n}")).collect();
    for text in &sent {
        assert_eq!(alice.send("team", text).await.expect("send").state, MessageState::Sent);
    }
    assert_eq!(harness.calls("Fetch").await, fetches, "the sends made no fetch");
    assert_eq!(texts(&receive_n(&bob, sent.len()).await), sent);
    // What bob sends reaches alice through the kept stream, once.
    bob.send("team", "to alice").await.expect("bob sends");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["to alice"]);
    alice.send("team", "after").await.expect("send after receiving");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_bursts_gets_one_message_per_request_in_order() {
    let harness = Harness::start_with(|config| {
        config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        // As a server older than SendMessages: it tells clients 0.
        config.max_send_burst = 0;
    })
    .await;
    let (alice, bob) = alice_and_bob(&harness).await;
    let sent: Vec<String> = (0..30).map(|n| format!("single {n:02}")).collect();
    let answers = send_concurrently(&alice, &sent, 30).await;
    assert!(answers.iter().all(|message| message.state == MessageState::Sent), "{answers:?}");
    assert_eq!(texts(&receive_n(&bob, sent.len()).await), sent);
    assert_eq!(harness.calls("SendMessages").await, 0);
    assert_eq!(harness.calls("SendMessage").await, 30, "one request per message");
}

/// The profile the child of [`a_burst_killed_before_and_after_the_server_took_it`] sends from.
const CHILD_PROFILE: &str = "QPC_TEST_BURST_PROFILE";
/// The first message number the child sends.
const CHILD_FIRST: &str = "QPC_TEST_BURST_FIRST";
/// Messages the child sends at once.
const CHILD_SENDS: usize = 20;

/// Sends `count` numbered messages from `first`, all at once, in a child
/// process of this test binary that `QPC_CRASH_AT` stops; returns how it ended.
#[cfg(unix)]
fn send_in_a_killed_child(profile: &std::path::Path, first: usize, crash_at: &str) -> std::process::ExitStatus {
    let test_binary = std::env::current_exe().expect("the test binary");
    std::process::Command::new(test_binary)
        .args(["--exact", "bursts::child_sends_a_burst", "--ignored", "--test-threads=1", "--nocapture"])
        .env(CHILD_PROFILE, profile)
        .env(CHILD_FIRST, first.to_string())
        .env("QPC_CRASH_AT", crash_at)
        .status()
        .expect("the child runs")
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("killed burst {n:03}")).collect()
}

/// The child's side: opens the profile and sends [`CHILD_SENDS`] messages at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_burst_killed_before_and_after_the_server_took_it"]
async fn child_sends_a_burst() {
    let profile = std::env::var(CHILD_PROFILE).expect("started by the parent test, which names the profile");
    let first: usize = std::env::var(CHILD_FIRST).expect("first message").parse().expect("a number");
    let alice = crate::harness::open_profile(std::path::Path::new(&profile)).await;
    send_concurrently(&alice, &numbered(first..first + CHILD_SENDS), CHILD_SENDS).await;
}

/// `kill -9` in the middle of a burst of sends: once with the burst durable
/// in the outbox and nothing sent, once after the server took it and before
/// the client recorded that. After a restart every message is delivered
/// once and in order, shown as sent, and the group still works.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_killed_before_and_after_the_server_took_it() {
    use std::os::unix::process::ExitStatusExt;
    let harness = Harness::start().await;
    let (alice, bob) = alice_and_bob(&harness).await;
    alice.disconnect().await;
    drop(alice);
    let profile = harness.profile("alice");
    // The first burst of several messages is durable in the outbox when
    // the child dies (how the 20 calls fall into bursts depends on timing).
    let status = send_in_a_killed_child(&profile, 0, "send_after_commit_of_several:1");
    assert_eq!(status.signal(), Some(9), "the child stopped at its crash point: {status:?}");
    let (_mls, store) =
        quicprochat_sdk::profile::Profile::load(&profile).expect("profile").open_state().expect("state");
    let queued = store.outbox().expect("outbox").len();
    assert!(queued > 1, "a burst of {queued} was queued and never left");
    drop(store);
    let alice = harness.open("alice").await;
    assert_eq!(alice.flush_outbox().await.expect("flush"), 0, "the killed burst left at the next open");
    alice.disconnect().await;
    drop(alice);
    // A request of several messages reaches the server, and the child dies
    // before recording its answer.
    let status = send_in_a_killed_child(&profile, CHILD_SENDS, "send_after_answer_of_several:1");
    assert_eq!(status.signal(), Some(9), "the child stopped at its crash point: {status:?}");

    let alice = harness.open("alice").await;
    assert_eq!(alice.flush_outbox().await.expect("flush"), 0, "the outbox drained");
    let sent = numbered(0..2 * CHILD_SENDS);
    assert_eq!(texts(&receive_n(&bob, sent.len()).await), sent, "every message once, in order");
    let history = alice.history("team", 100).await.expect("history");
    let mine: Vec<&StoredMessage> = history.iter().filter(|message| message.from == "alice").collect();
    assert_eq!(mine.iter().map(|message| message.text.as_str()).collect::<Vec<_>>(), sent);
    assert!(mine.iter().all(|message| message.state == MessageState::Sent), "{mine:?}");
    // The ratchets are consistent: both directions still work.
    alice.send("team", "after the kills").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["after the kills"]);
    bob.send("team", "welcome back").await.expect("bob sends");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["welcome back"]);
}
