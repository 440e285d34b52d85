//! Surviving the network: server restarts under traffic, status changes,
//! connection migration.

use std::time::Instant;

use quicprochat_sdk::{ConnectionStatus, MessageState};

use crate::harness::{receive_n, team_of_three, texts, Harness, WAIT};

/// Waits until the client's status satisfies `condition`.
async fn wait_status(client: &quicprochat_sdk::QpcClient, condition: impl Fn(&ConnectionStatus) -> bool) {
    let mut status = client.status();
    tokio::time::timeout(WAIT, status.wait_for(|current| condition(current)))
        .await
        .expect("status reached in time")
        .expect("status channel open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_under_traffic_loses_and_duplicates_nothing() {
    let mut harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    let expected: Vec<String> = (1..=10).map(|index| format!("message {index}")).collect();
    for text in &expected[..5] {
        assert_eq!(alice.send("team", text).await.expect("send").state, MessageState::Sent);
    }

    harness.stop_server().await;
    wait_status(&alice, |status| matches!(status, ConnectionStatus::Reconnecting { .. })).await;
    for text in &expected[5..8] {
        let queued = alice.send("team", text).await.expect("queued while the server is down");
        assert_eq!(queued.state, MessageState::Pending);
    }

    let restarted = Instant::now();
    harness.start_server().await;
    wait_status(&alice, |status| *status == ConnectionStatus::Connected).await;
    wait_status(&bob, |status| *status == ConnectionStatus::Connected).await;
    eprintln!("resubscribed {:?} after the server came back", restarted.elapsed());
    for text in &expected[8..] {
        alice.send("team", text).await.expect("send after reconnect");
    }
    assert_eq!(alice.flush_outbox().await.expect("flush"), 0, "the outbox drained");

    let received = receive_n(&bob, expected.len()).await;
    assert_eq!(texts(&received), expected.iter().map(String::as_str).collect::<Vec<_>>(), "in order, exactly once");
    assert!(bob.receive().await.expect("receive").is_empty());
    let history = alice.history("team", 20).await.expect("history");
    assert!(history.iter().all(|message| message.state == MessageState::Sent), "{history:?}");
}

#[tokio::test]
async fn connection_migrates_to_a_new_socket_without_a_new_login() {
    let harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    let mut status = alice.status();
    status.mark_unchanged();
    let before = alice.local_addr().expect("local addr");
    alice.rebind().expect("rebind");
    let after = alice.local_addr().expect("local addr");
    assert_ne!(before.port(), after.port(), "a new UDP socket");
    alice.send("team", "from the new address").await.expect("send after migration");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["from the new address"]);
    assert!(!status.has_changed().expect("status channel"), "no reconnect happened");
}

#[tokio::test]
async fn disconnect_reports_offline() {
    let harness = Harness::start().await;
    let alice = harness.register("alice").await;
    assert_eq!(*alice.status().borrow(), ConnectionStatus::Connected);
    alice.disconnect().await;
    assert_eq!(*alice.status().borrow(), ConnectionStatus::Offline);
}
