//! Issue 19, scenario 2: the link between two servers is cut (a relay that
//! drops every datagram both ways) while alice on a sends 200 numbered
//! messages with a membership change among them and bob on b sends 50.
//! Every send succeeds, a's local members keep receiving, and after the heal
//! bob shows 1..200 and alice bob's 50, each once and in order.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use quicprochat_sdk::QpcClient;
use quicprochat_server::RunningServer;

use super::{federated_server, pin_of, team_across, user_on, wait_for_welcome};
use crate::harness::{receive_n, receive_within, texts, WAIT};
use crate::impairment::relay::{Impairment, Relay};

/// How long after the heal every message must have arrived (the bound).
const AFTER_HEAL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_partition_between_servers_delays_messages_but_never_loses_repeats_or_reorders_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let Linked { a, b, to_a, to_b } = servers_behind_relays(dir).await;
    let [alice, bob] = alice_and_bob_across(dir, &a, &b).await;
    let carol = user_on(dir, &a, "carol").await;
    to_a.set_blackhole(true);
    to_b.set_blackhole(true);
    for n in 1..=100 {
        alice.send("team", &format!("a{n}")).await.expect("alice's send succeeds during the cut");
    }
    alice.add_members("team", &["carol".into()]).await.expect("the membership change, during the cut");
    carol.sync().await.expect("carol joins");
    for n in 101..=200 {
        alice.send("team", &format!("a{n}")).await.expect("alice's send succeeds during the cut");
    }
    for n in 1..=50 {
        bob.send("team", &format!("b{n}")).await.expect("bob's send is kept by b during the cut");
    }
    let at_carol = receive_n(&carol, 100).await;
    assert_eq!(texts(&at_carol), numbered("a", 101..=200), "local members keep receiving");
    for (server, peer) in [(&a, "b.test"), (&b, "a.test")] {
        let pending = server.wait_for_peer(peer, WAIT, |status| status.pending > 0).await;
        assert!(pending.is_some(), "{peer}: entries wait for the heal");
    }

    to_a.set_blackhole(false);
    to_b.set_blackhole(false);
    let at_bob = receive_within(&bob, 200, AFTER_HEAL).await;
    assert_eq!(texts(&at_bob), numbered("a", 1..=200), "bob: once each, in order");
    assert!(at_bob.iter().all(|message| message.from == "alice@a.test"));
    assert_eq!(bob.members("team").await.expect("members"), ["alice@a.test", "bob", "carol@a.test"]);
    let at_alice = receive_within(&alice, 50, AFTER_HEAL).await;
    assert_eq!(texts(&at_alice), numbered("b", 1..=50), "alice: once each, in order");

    // Nothing more arrives: no message was delivered twice.
    for client in [&alice, &bob] {
        assert!(client.receive_wait(Duration::from_millis(300)).await.expect("receive").is_empty());
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// alice on `a` and bob on `b` in alice's group "team", both holding it.
async fn alice_and_bob_across(dir: &std::path::Path, a: &RunningServer, b: &RunningServer) -> [QpcClient; 2] {
    let alice = user_on(dir, a, "alice").await;
    let bob = user_on(dir, b, "bob").await;
    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["bob@b.test".into()]).await.expect("add bob@b.test");
    wait_for_welcome(&bob).await;
    [alice, bob]
}

/// a.test and b.test, each reaching the other through a relay in front of
/// it (cut both to partition them).
struct Linked {
    a: RunningServer,
    b: RunningServer,
    to_a: Relay,
    to_b: Relay,
}

async fn servers_behind_relays(dir: &std::path::Path) -> Linked {
    quicprochat_sdk::install_crypto_provider();
    let (pin_a, pin_b) = (pin_of(dir, "a.test"), pin_of(dir, "b.test"));
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let nowhere = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    let first_a = federated_server(dir, ("a.test", any), &[("b.test", nowhere, pin_b)]).await;
    let a_port = first_a.federation_addr().expect("a's port");
    first_a.shutdown().await;
    let to_a = Relay::start(a_port, Impairment::NONE, 1).await;
    let b = federated_server(dir, ("b.test", any), &[("a.test", to_a.addr(), pin_a)]).await;
    let to_b = Relay::start(b.federation_addr().expect("b's port"), Impairment::NONE, 2).await;
    let a = federated_server(dir, ("a.test", a_port), &[("b.test", to_b.addr(), pin_b)]).await;
    for (server, peer) in [(&a, "b.test"), (&b, "a.test")] {
        assert!(server.wait_for_peer(peer, WAIT, |status| status.reachable).await.is_some(), "{peer}");
    }
    Linked { a, b, to_a, to_b }
}

/// Issue 19, scenario 6: bob sends while his removal is on its way to b;
/// b takes the message (relayed), the hub refuses it, and bob's client
/// shows it as failed, not as sent.
#[tokio::test]
async fn a_message_the_hub_refuses_after_the_senders_removal_shows_as_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let Linked { a, b, to_a, to_b } = servers_behind_relays(dir).await;
    let [alice, bob] = alice_and_bob_across(dir, &a, &b).await;
    to_a.set_blackhole(true);
    to_b.set_blackhole(true);
    alice.remove_members("team", &["bob@b.test".into()]).await.expect("alice removes bob");
    let sent = bob.send("team", "too late").await.expect("b takes bob's message");
    assert_eq!(sent.state, quicprochat_sdk::MessageState::Sent);
    to_a.set_blackhole(false);
    to_b.set_blackhole(false);

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let history = bob.history("team", 10).await.expect("history");
        let mine = history.iter().find(|message| message.text == "too late").expect("bob's message");
        if mine.state == quicprochat_sdk::MessageState::Failed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refusal never reached bob: {mine:?}");
        bob.receive_wait(Duration::from_millis(200)).await.expect("bob syncs");
    }
    assert!(bob.groups().await.expect("groups").is_empty(), "bob was removed");
    assert!(alice.receive_wait(Duration::from_millis(300)).await.expect("receive").is_empty(), "alice reads nothing");
    a.shutdown().await;
    b.shutdown().await;
}

/// A message bob sent while the link was cut, then his removal of carol:
/// b forwards the removal only once a has the message (one order per
/// user), so carol, removed after it, still reads it.
#[tokio::test]
async fn a_message_sent_before_a_removal_reaches_the_removed_member_across_a_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let Linked { a, b, to_a, to_b } = servers_behind_relays(dir).await;
    let [alice, carol, bob] = team_across(dir, &a, &b).await;

    to_a.set_blackhole(true);
    to_b.set_blackhole(true);
    bob.send("team", "sent during the cut").await.expect("b keeps bob's message");
    // b's batches to a fail and back off while the link is cut.
    assert!(b.wait_for_peer("a.test", WAIT, |status| status.pending > 0).await.is_some());
    to_a.set_blackhole(false);
    to_b.set_blackhole(false);
    bob.remove_members("team", &["carol@a.test".into()]).await.expect("bob removes carol once a is back");
    assert_eq!(texts(&receive_n(&carol, 1).await), ["sent during the cut"]);
    assert_eq!(texts(&receive_n(&alice, 1).await), ["sent during the cut"]);
    a.shutdown().await;
    b.shutdown().await;
}

fn numbered(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}
