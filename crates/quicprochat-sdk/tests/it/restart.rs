//! Restarts: a client reopening its profile continues its groups; a server
//! restarted on the same data dir still holds every queued message.

use crate::harness::{receive_n, team_of_three, texts, Harness};

#[tokio::test]
async fn client_restart_keeps_state_and_continues() {
    let harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    alice.send("team", "before restart").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["before restart"]);
    bob.disconnect().await;
    drop(bob);

    alice.send("team", "while bob was away").await.expect("send");
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["while bob was away"]);
    bob.send("team", "bob is back").await.expect("bob sends after restart");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["bob is back"]);
    let history = bob.history("team", 10).await.expect("history");
    assert_eq!(texts(&history), ["before restart", "while bob was away", "bob is back"]);
}

#[tokio::test]
async fn server_restart_keeps_queued_messages() {
    let mut harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    alice.send("team", "queued before the restart").await.expect("send");
    for client in [alice, bob, carol] {
        client.disconnect().await;
    }
    harness.restart_server().await;
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["queued before the restart"]);
    let carol = harness.open("carol").await;
    assert_eq!(texts(&receive_n(&carol, 1).await), ["queued before the restart"]);
    // The group still works after the restart (the DS view was persisted).
    carol.send("team", "after the restart").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["after the restart"]);
}

#[tokio::test]
async fn outbox_survives_client_restart_and_delivers_once() {
    let mut harness = Harness::start().await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    harness.stop_server().await;
    let queued = alice.send("team", "written while the server was down").await.expect("queued locally");
    assert_eq!(queued.state, quicprochat_sdk::MessageState::Pending);
    alice.disconnect().await;
    drop(alice);
    bob.disconnect().await;
    drop(bob);

    harness.start_server().await;
    // Reopening the profile logs in and flushes the outbox with the original id.
    let alice = harness.open("alice").await;
    let history = alice.history("team", 10).await.expect("history");
    assert_eq!(history.last().map(|message| message.state), Some(quicprochat_sdk::MessageState::Sent));
    assert_eq!(alice.flush_outbox().await.expect("flush"), 0, "nothing left queued");
    let bob = harness.open("bob").await;
    assert_eq!(texts(&receive_n(&bob, 1).await), ["written while the server was down"]);
    assert!(bob.receive().await.expect("receive").is_empty(), "delivered exactly once");
}
