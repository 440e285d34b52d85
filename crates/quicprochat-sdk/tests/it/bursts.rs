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
