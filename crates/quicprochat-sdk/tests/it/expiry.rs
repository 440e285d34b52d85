//! Retention seen from a client: entries that expired on the server while
//! a device was away are counted and reported to it, and delivery goes on
//! after them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{receive_n, team_of_three, texts, Harness, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_away_past_the_retention_is_told_what_expired() {
    // Set directly: the config loader allows an hour at least.
    let retention = Duration::from_secs(3);
    let harness = Harness::start_with(|config| {
        config.retention = retention;
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    drop(bob);
    drop(carol);
    alice.send("team", "lost one").await.expect("send");
    alice.send("team", "lost two").await.expect("send");

    // Bob's and carol's copies of both expire.
    let deadline = tokio::time::Instant::now() + WAIT + retention;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while harness.metric("qpc_expired_queue_entries_total").await < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the messages never expired");
        poll.tick().await;
    }

    // Carol is back before anything new: her fetch finds nothing past her
    // cursor, and the queue's head tells her what expired.
    let carol = harness.open("carol").await;
    carol.sync().await.expect("carol syncs");
    assert_eq!(carol.take_expired_count().await.expect("count"), 2);

    alice.send("team", "kept").await.expect("send");
    // Bob's first fetch starts with a gap of two.
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["kept"], "delivery goes on past the gap");
    assert_eq!(bob.take_expired_count().await.expect("count"), 2);
    assert_eq!(bob.take_expired_count().await.expect("count"), 0, "reported once");
    assert_eq!(texts(&receive_n(&carol, 1).await), ["kept"]);
    assert_eq!(carol.take_expired_count().await.expect("count"), 0, "counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_queue_went_over_its_quota_gets_the_newest_and_is_told_the_rest() {
    // Set directly: the config loader allows 100 at least.
    let harness = Harness::start_with(|config| {
        config.max_queue_entries = 3;
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    drop(bob);
    drop(carol);
    for n in 1..=5 {
        alice.send("team", &format!("m{n}")).await.expect("send");
    }
    // Housekeeping trims bob's and carol's queues to their newest three.
    let deadline = tokio::time::Instant::now() + WAIT + Duration::from_secs(5);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while harness.metric("qpc_trimmed_queue_entries_total").await < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the queues were never trimmed");
        poll.tick().await;
    }
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 3).await), ["m3", "m4", "m5"]);
    assert_eq!(bob.take_expired_count().await.expect("count"), 2);
}
