//! A server that starts federating (issue 19, step 4): its users go on
//! talking in the groups they had, their clients learn the server's domain
//! at login, name themselves `username@domain` in new key packages, and
//! new groups carry the domain in their id (the server hosts them); names
//! of the server's own domain still read bare.

use std::net::{Ipv4Addr, SocketAddr};

use quicprochat_server::storage::{SqliteStore, Store};

use crate::harness::{open_profile, receive_n, team_of_three, texts, Harness};

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
