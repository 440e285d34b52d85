//! A server that starts federating (issue 19, step 4): its users go on
//! talking in the groups they had, their clients learn the server's domain
//! at login, name themselves `username@domain` in new key packages, and
//! new groups carry the domain in their id (the server hosts them); names
//! of the server's own domain still read bare.

use std::net::{Ipv4Addr, SocketAddr};

use quicprochat_server::storage::{SqliteStore, Store};

use crate::harness::{open_profile, receive_n, team_of_three, texts, Harness};

mod partition;
mod peers_down;
mod three_servers;

#[tokio::test]
async fn a_server_that_starts_federating_keeps_its_users_talking_and_hosts_their_new_groups() {
    let mut harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    alice.send("team", "before").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["before"]);
    for client in [&alice, &bob, &carol] {
        client.disconnect().await;
    }
    drop((alice, bob, carol));

    harness.stop_server().await;
    harness
        .start_server_with(|config| {
            config.domain = "a.test".to_owned();
            config.federation.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        })
        .await;
    let alice = open_profile(&harness.profile("alice")).await;
    let bob = open_profile(&harness.profile("bob")).await;

    // The group of before goes on, names unchanged.
    alice.send("team", "after").await.expect("send");
    let after = receive_n(&bob, 1).await;
    assert_eq!((texts(&after), after[0].from.as_str()), (vec!["after"], "alice"));

    // A new group is hosted here: its id names a.test.
    alice.create_group("fed").await.expect("create");
    alice.add_members("fed", &["bob".into()]).await.expect("add bob (his packages name bob@a.test)");
    bob.sync().await.expect("bob joins");
    bob.send("fed", "hi from bob").await.expect("send");
    let hi = receive_n(&alice, 1).await;
    assert_eq!((texts(&hi), hi[0].from.as_str()), (vec!["hi from bob"], "bob"));
    assert_eq!(alice.members("fed").await.expect("members"), ["alice", "bob"]);

    let store = SqliteStore::open(harness.dir.path().join("server").join("qpc-server.db")).expect("server database");
    let groups = store.groups_of("alice").expect("groups");
    let fed = groups.iter().find(|group| group.name == "fed").expect("the new group");
    assert!(fed.group_id.ends_with(b"a.test") && fed.group_id.len() == 16 + 6, "{:?}", fed.group_id);
    let team = groups.iter().find(|group| group.name == "team").expect("the old group");
    assert_eq!(team.group_id.len(), 16, "the old group keeps its id");
}

/// A federating server for `domain` on a new data dir under `dir`, on the
/// federation address `listen`, whose peers are `peers` (domain, address,
/// pin).
pub(crate) async fn federated_server(
    dir: &std::path::Path,
    (domain, listen): (&str, SocketAddr),
    peers: &[(&str, SocketAddr, quicprochat_rpc::CertFingerprint)],
) -> quicprochat_server::RunningServer {
    let mut config =
        quicprochat_server::ServerConfig::new(dir.join(domain), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.domain = domain.to_owned();
    config.federation.listen = Some(listen);
    config.federation.retry_min = std::time::Duration::from_millis(50);
    config.federation.retry_max = std::time::Duration::from_secs(1);
    config.federation.peers = peers
        .iter()
        .map(|(peer, address, pin)| quicprochat_server::config::PeerConfig {
            domain: (*peer).to_owned(),
            address: address.to_string(),
            fingerprints: vec![*pin],
        })
        .collect();
    quicprochat_server::RunningServer::start(config).await.expect("server starts")
}

/// The certificate pin a server on `dir` for `domain` will present.
pub(crate) fn pin_of(dir: &std::path::Path, domain: &str) -> quicprochat_rpc::CertFingerprint {
    let mut config =
        quicprochat_server::ServerConfig::new(dir.join(domain), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.domain = domain.to_owned();
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    quicprochat_server::server_identity(&config).expect("certificate").fingerprint()
}

/// Servers for a.test and b.test on `dir`, each the other's peer, each
/// reaching the other.
pub(crate) async fn two_peered_servers(
    dir: &std::path::Path,
) -> (quicprochat_server::RunningServer, quicprochat_server::RunningServer) {
    quicprochat_sdk::install_crypto_provider();
    let (pin_a, pin_b) = (pin_of(dir, "a.test"), pin_of(dir, "b.test"));
    // Each must know the other's federation address: a starts first on a
    // free port, b with a's, then a again on the same port with b's.
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let nowhere = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    let first_a = federated_server(dir, ("a.test", any), &[("b.test", nowhere, pin_b)]).await;
    let a_port = first_a.federation_addr().expect("a's port");
    let b = federated_server(dir, ("b.test", any), &[("a.test", a_port, pin_a)]).await;
    first_a.shutdown().await;
    let b_port = b.federation_addr().expect("b's port");
    let a = federated_server(dir, ("a.test", a_port), &[("b.test", b_port, pin_b)]).await;
    for (server, peer) in [(&a, "b.test"), (&b, "a.test")] {
        assert!(server.wait_for_peer(peer, crate::harness::WAIT, |status| status.reachable).await.is_some(), "{peer}");
    }
    (a, b)
}

/// A user registered on `server` with a profile in `dir`.
pub(crate) async fn user_on(
    dir: &std::path::Path,
    server: &quicprochat_server::RunningServer,
    name: &str,
) -> quicprochat_sdk::QpcClient {
    let options = quicprochat_sdk::ClientOptions::default();
    quicprochat_sdk::QpcClient::register(&dir.join(name), server.local_addr(), name, None, options)
        .await
        .expect("registers")
}

/// alice and carol on `a`, bob on `b`, in alice's group "team" (created
/// on a), each holding it.
pub(crate) async fn team_across(
    dir: &std::path::Path,
    a: &quicprochat_server::RunningServer,
    b: &quicprochat_server::RunningServer,
) -> [quicprochat_sdk::QpcClient; 3] {
    let alice = user_on(dir, a, "alice").await;
    let carol = user_on(dir, a, "carol").await;
    let bob = user_on(dir, b, "bob").await;
    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["carol".into(), "bob@b.test".into()]).await.expect("add carol and bob@b.test");
    wait_for_welcome(&bob).await;
    carol.sync().await.expect("carol joins");
    [alice, carol, bob]
}

/// Syncs `client` until it holds a group (its Welcome crossed the stream).
pub(crate) async fn wait_for_welcome(client: &quicprochat_sdk::QpcClient) {
    let deadline = tokio::time::Instant::now() + crate::harness::WAIT;
    while client.groups().await.expect("groups").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the Welcome never came");
        client.sync().await.expect("sync");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_user_of_one_server_adds_a_user_of_another_who_reads_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_peered_servers(dir.path()).await;
    let alice = user_on(dir.path(), &a, "alice").await;
    let bob = user_on(dir.path(), &b, "bob").await;

    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["bob@b.test".into()]).await.expect("alice adds bob@b.test");
    assert_eq!(alice.members("team").await.expect("members"), ["alice", "bob@b.test"]);

    // The Welcome crosses to b through the stream; bob joins.
    wait_for_welcome(&bob).await;
    assert_eq!(bob.members("team").await.expect("members"), ["alice@a.test", "bob"]);

    alice.send("team", "hi bob").await.expect("send");
    let received = receive_n(&bob, 1).await;
    assert_eq!((texts(&received), received[0].from.as_str()), (vec!["hi bob"], "alice@a.test"));

    // Bob's reply goes through b to the hub a, which fans it out.
    bob.send("team", "hi alice").await.expect("bob sends through b");
    let reply = receive_n(&alice, 1).await;
    assert_eq!((texts(&reply), reply[0].from.as_str()), (vec!["hi alice"], "bob@b.test"));

    // A direct conversation across servers, both ways in one group.
    let direct = alice.send("@bob@b.test", "just us").await.expect("alice opens a direct conversation");
    let got = receive_n(&bob, 1).await;
    assert_eq!((texts(&got), got[0].from.as_str()), (vec!["just us"], "alice@a.test"));
    let answer = bob.send("@alice@a.test", "indeed").await.expect("bob answers in it");
    assert_eq!(receive_n(&alice, 1).await[0].group, direct.group);
    assert_eq!(answer.group, got[0].group, "bob answers in the conversation he joined");
    assert_eq!(bob.groups().await.expect("groups").len(), 2, "no second direct conversation");

    // Safety numbers: the same digits on both sides, over both qualified names.
    let (at_alice, at_bob) = (
        alice.safety_number("bob@b.test").await.expect("alice verifies bob@b.test"),
        bob.safety_number("@alice@a.test").await.expect("bob verifies alice@a.test"),
    );
    assert_eq!(at_alice.digits, at_bob.digits);
    assert_eq!((at_alice.user.as_str(), at_bob.user.as_str()), ("bob@b.test", "alice@a.test"));
    a.shutdown().await;
    b.shutdown().await;
}

/// Bob's commits and leave go to b, which forwards them to the group's
/// hub a (FedSubmitCommit, FedLeaveGroup); a orders them with its own. He
/// adds a user of a (claimed at a for him) and one of b (b vouches).
#[tokio::test]
async fn a_member_on_another_server_removes_and_adds_members_and_leaves_through_its_own_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_peered_servers(dir.path()).await;
    let [alice, carol, bob] = team_across(dir.path(), &a, &b).await;

    // The message goes through the stream, the removal around it: the
    // hub still sees them in bob's order, so carol reads the message.
    bob.send("team", "last one for carol").await.expect("send");
    bob.remove_members("team", &["carol@a.test".into()]).await.expect("bob removes carol through b");
    assert_eq!(bob.members("team").await.expect("members"), ["alice@a.test", "bob"]);
    assert_eq!(texts(&receive_n(&carol, 1).await), ["last one for carol"]);
    assert!(carol.groups().await.expect("groups").is_empty(), "carol was removed");
    bob.send("team", "carol is out").await.expect("send");
    let received = receive_n(&alice, 2).await;
    assert_eq!(texts(&received), ["last one for carol", "carol is out"]);
    assert_eq!(received[1].from, "bob@b.test");
    assert_eq!(alice.members("team").await.expect("members"), ["alice", "bob@b.test"]);

    // bob adds a user of a (whose package a served to him through b) and
    // one of b (whose package b vouches for).
    let dave = user_on(dir.path(), &a, "dave").await;
    let erin = user_on(dir.path(), &b, "erin").await;
    bob.add_members("team", &["dave@a.test".into(), "erin".into()]).await.expect("bob adds dave and erin");
    dave.sync().await.expect("dave joins");
    wait_for_welcome(&erin).await;
    let everyone = ["alice", "bob@b.test", "dave", "erin@b.test"];
    assert_eq!(dave.members("team").await.expect("members"), everyone);
    bob.send("team", "welcome both").await.expect("send");
    for client in [&alice, &dave, &erin] {
        assert_eq!(texts(&receive_n(client, 1).await), ["welcome both"]);
    }

    // bob leaves: the proposal goes to a, alice (the first staying) commits it.
    bob.leave_group("team").await.expect("bob leaves through b");
    let deadline = tokio::time::Instant::now() + crate::harness::WAIT;
    while alice.members("team").await.expect("members") != ["alice", "dave", "erin@b.test"] {
        assert!(tokio::time::Instant::now() < deadline, "alice never committed bob's leave");
        alice.sync().await.expect("alice syncs");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}
