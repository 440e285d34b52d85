//! Group life cycle: messages both ways, removal, leave, direct
//! conversations, and two members committing in the same epoch.

use crate::harness::{receive_n, team_of_three, texts, Harness};

#[tokio::test]
async fn group_of_three_talks_both_ways() {
    let harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    for client in [&alice, &bob, &carol] {
        assert_eq!(client.members("team").await.expect("members"), ["alice", "bob", "carol"]);
    }
    alice.send("team", "hello from alice").await.expect("alice sends");
    bob.send("team", "hello from bob").await.expect("bob sends");
    let at_carol = receive_n(&carol, 2).await;
    assert_eq!(texts(&at_carol), ["hello from alice", "hello from bob"]);
    assert_eq!(at_carol[0].from, "alice");
    assert_eq!(at_carol[0].group, "team");
    let at_alice = receive_n(&alice, 1).await;
    assert_eq!((at_alice[0].from.as_str(), at_alice[0].text.as_str()), ("bob", "hello from bob"));
    let at_bob = receive_n(&bob, 1).await;
    assert_eq!(texts(&at_bob), ["hello from alice"]);
    // Nothing is shown twice.
    assert!(carol.receive().await.expect("receive").is_empty());
}

#[tokio::test]
async fn removed_member_cannot_read_later_messages() {
    let harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    alice.remove_members("team", &["carol".into()]).await.expect("remove carol");
    alice.send("team", "after carol left").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["after carol left"]);
    assert!(carol.receive().await.expect("carol receives").is_empty());
    assert!(carol.groups().await.expect("groups").is_empty(), "carol's group is no longer active");
    assert_eq!(bob.members("team").await.expect("members"), ["alice", "bob"]);
    let refused = carol.send("team", "let me in").await;
    assert!(refused.is_err(), "a removed member cannot post");
}

#[tokio::test]
async fn leaving_member_is_removed_by_the_next_member() {
    let harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    carol.leave_group("team").await.expect("carol leaves");
    // alice is the first remaining member by name: her next sync commits the removal.
    alice.sync().await.expect("alice syncs");
    bob.sync().await.expect("bob syncs");
    assert_eq!(alice.members("team").await.expect("members"), ["alice", "bob"]);
    assert_eq!(bob.members("team").await.expect("members"), ["alice", "bob"]);
    bob.send("team", "bye carol").await.expect("send");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["bye carol"]);
    assert!(carol.receive().await.expect("receive").is_empty());
}

/// Review F6: a commit built before the leave arrived leaves it out; the
/// leaver's client sends it again for the new epoch, and it is committed.
#[tokio::test]
async fn a_leave_left_out_of_a_commit_is_sent_again_until_it_is_committed() {
    let harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    let dave = harness.register("dave").await;
    carol.leave_group("team").await.expect("carol leaves");
    // bob has not seen the leave: his add leaves it out.
    bob.add_members("team", &["dave".into()]).await.expect("bob adds dave");
    assert_eq!(bob.members("team").await.expect("members"), ["alice", "bob", "carol", "dave"]);
    // carol's client sees a commit that kept her and leaves again.
    carol.sync().await.expect("carol syncs");
    // alice, first by name of those staying, commits the new leave.
    alice.sync().await.expect("alice syncs");
    for client in [&alice, &bob, &dave] {
        client.sync().await.expect("sync");
        assert_eq!(client.members("team").await.expect("members"), ["alice", "bob", "dave"]);
    }
    carol.sync().await.expect("carol learns she is out");
    assert!(carol.groups().await.expect("groups").is_empty());
    bob.send("team", "carol is gone").await.expect("send");
    assert_eq!(texts(&receive_n(&dave, 1).await), ["carol is gone"]);
    assert!(carol.receive().await.expect("receive").is_empty());
}

#[tokio::test]
async fn direct_conversation_is_created_once() {
    let harness = Harness::start().await;
    let alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    alice.send("@bob", "hi bob").await.expect("first direct message");
    alice.send("@bob", "second").await.expect("second direct message");
    let at_bob = receive_n(&bob, 2).await;
    assert_eq!(texts(&at_bob), ["hi bob", "second"]);
    assert!(at_bob.iter().all(|message| message.group == "@alice"));
    bob.send("@alice", "hi alice").await.expect("reply");
    let at_alice = receive_n(&alice, 1).await;
    assert_eq!(at_alice[0].group, "@bob");
    assert_eq!(alice.groups().await.expect("groups").len(), 1, "one direct conversation, reused");
    assert_eq!(bob.groups().await.expect("groups").len(), 1);
    assert!(alice.send("@nobody", "hello?").await.is_err(), "unknown user is an error");
}

#[tokio::test]
async fn concurrent_commits_in_one_epoch_converge() {
    let harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    let dave = harness.register("dave").await;
    let erin = harness.register("erin").await;
    // alice commits first; bob has not seen it and commits for the same epoch.
    alice.add_members("team", &["dave".into()]).await.expect("alice adds dave");
    bob.add_members("team", &["erin".into()]).await.expect("bob's stale commit is retried transparently");
    let everyone = ["alice", "bob", "carol", "dave", "erin"];
    for client in [&alice, &bob, &carol, &dave, &erin] {
        client.sync().await.expect("sync");
        assert_eq!(client.members("team").await.expect("members"), everyone, "{}", client.username());
    }
    erin.send("team", "hi all").await.expect("erin sends");
    for client in [&alice, &bob, &carol, &dave] {
        assert_eq!(texts(&receive_n(client, 1).await), ["hi all"]);
    }
}

#[tokio::test]
async fn simultaneous_commits_both_land() {
    let harness = Harness::start().await;
    let (alice, bob, carol) = team_of_three(&harness).await;
    let _dave = harness.register("dave").await;
    let _erin = harness.register("erin").await;
    let (dave, erin) = (["dave".to_owned()], ["erin".to_owned()]);
    let (first, second) = tokio::join!(alice.add_members("team", &dave), bob.add_members("team", &erin));
    first.expect("alice's add");
    second.expect("bob's add");
    for client in [&alice, &bob, &carol] {
        client.sync().await.expect("sync");
        assert_eq!(client.members("team").await.expect("members"), ["alice", "bob", "carol", "dave", "erin"]);
    }
}
