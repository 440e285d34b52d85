//! Issue 19, scenario 5: a group hosted on a with members on b and c, where
//! b and c are peers of a only. Everyone reads everyone (b's and c's
//! messages go through the hub a); cutting a–c leaves b's traffic untouched,
//! and c gets what it missed after the heal.

use std::net::{Ipv4Addr, SocketAddr};

use super::{federated_server, pin_of, user_on, wait_for_welcome};
use crate::harness::{receive_n, texts, WAIT};
use crate::impairment::relay::{Impairment, Relay};

#[tokio::test]
async fn a_group_on_a_with_members_on_b_and_c_which_are_not_peers_of_each_other() {
    quicprochat_sdk::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let pins = ["a.test", "b.test", "c.test"].map(|domain| pin_of(dir, domain));
    let (any, nowhere) = (SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
    let first_a =
        federated_server(dir, ("a.test", any), &[("b.test", nowhere, pins[1]), ("c.test", nowhere, pins[2])]).await;
    let a_port = first_a.federation_addr().expect("a's port");
    first_a.shutdown().await;
    // The a–c link goes through a relay both ways, so it can be cut.
    let c_to_a = Relay::start(a_port, Impairment::NONE, 3).await;
    let b = federated_server(dir, ("b.test", any), &[("a.test", a_port, pins[0])]).await;
    let c = federated_server(dir, ("c.test", any), &[("a.test", c_to_a.addr(), pins[0])]).await;
    let a_to_c = Relay::start(c.federation_addr().expect("c's port"), Impairment::NONE, 4).await;
    let b_port = b.federation_addr().expect("b's port");
    let a =
        federated_server(dir, ("a.test", a_port), &[("b.test", b_port, pins[1]), ("c.test", a_to_c.addr(), pins[2])])
            .await;
    for (server, peer) in [(&a, "b.test"), (&a, "c.test"), (&b, "a.test"), (&c, "a.test")] {
        assert!(server.wait_for_peer(peer, WAIT, |status| status.reachable).await.is_some(), "{peer}");
    }

    let alice = user_on(dir, &a, "alice").await;
    let bob = user_on(dir, &b, "bob").await;
    let carol = user_on(dir, &c, "carol").await;
    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["bob@b.test".into(), "carol@c.test".into()]).await.expect("add bob and carol");
    wait_for_welcome(&bob).await;
    wait_for_welcome(&carol).await;
    assert_eq!(carol.members("team").await.expect("members"), ["alice@a.test", "bob@b.test", "carol"]);

    bob.send("team", "from b").await.expect("bob sends");
    for (client, from) in [(&alice, "bob@b.test"), (&carol, "bob@b.test")] {
        let got = receive_n(client, 1).await;
        assert_eq!((texts(&got), got[0].from.as_str()), (vec!["from b"], from));
    }
    carol.send("team", "from c").await.expect("carol sends");
    for client in [&alice, &bob] {
        let got = receive_n(client, 1).await;
        assert_eq!((texts(&got), got[0].from.as_str()), (vec!["from c"], "carol@c.test"));
    }

    // Cut a–c: b's traffic goes on.
    c_to_a.set_blackhole(true);
    a_to_c.set_blackhole(true);
    bob.send("team", "b during the cut").await.expect("bob sends");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["b during the cut"]);
    alice.send("team", "a during the cut").await.expect("alice sends");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["a during the cut"]);
    carol.send("team", "c during the cut").await.expect("carol's send is kept by c");

    c_to_a.set_blackhole(false);
    a_to_c.set_blackhole(false);
    assert_eq!(texts(&receive_n(&carol, 2).await), ["b during the cut", "a during the cut"]);
    for client in [&alice, &bob] {
        assert_eq!(texts(&receive_n(client, 1).await), ["c during the cut"]);
    }
    for server in [a, b, c] {
        server.shutdown().await;
    }
}
