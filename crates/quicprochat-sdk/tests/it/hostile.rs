//! A hostile server or group creator against the client's own checks
//! (security review 2026-12, F1): a direct conversation is the one whose
//! MLS roster is exactly us and the peer, whatever name or kind the server
//! gives a group. The server's database is edited under it, as a server
//! that lies would.

use crate::harness::{receive_n, texts, Harness};

/// Relabels the groups `creator` created, in the running server's
/// database, as the server itself could: every member fetching a Welcome
/// afterwards sees `name` and `kind` (0 = named, 1 = direct).
fn relabel_groups_of(harness: &Harness, creator: &str, name: &str, kind: i64) {
    let path = harness.dir.path().join("server").join("qpc-server.db");
    let connection = rusqlite::Connection::open(path).expect("open the server's database");
    connection.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
    let changed = connection
        .execute("UPDATE groups SET name = ?1, kind = ?2 WHERE creator = ?3", rusqlite::params![name, kind, creator])
        .expect("relabel");
    assert!(changed > 0, "{creator} created no group");
}

#[tokio::test]
async fn a_group_labelled_direct_with_someone_else_never_receives_their_messages() {
    let harness = Harness::start().await;
    let alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    let mallory = harness.register("mallory").await;
    // Mallory opens a direct conversation with bob, and the server calls it
    // bob's direct conversation with alice (the name the review's attack
    // chose, sorting before the real one).
    mallory.send("@bob", "hi bob").await.expect("mallory's direct message");
    relabel_groups_of(&harness, "mallory", "dm:alice:", 1);
    let at_bob = receive_n(&bob, 1).await;
    assert_eq!((at_bob[0].group.as_str(), at_bob[0].from.as_str()), ("@mallory", "mallory"), "named by its roster");

    // Bob writes to alice: a new direct conversation with her, not mallory's group.
    bob.send("@alice", "for alice only").await.expect("bob writes to alice");
    let at_alice = receive_n(&alice, 1).await;
    assert_eq!((texts(&at_alice), at_alice[0].group.as_str()), (vec!["for alice only"], "@bob"));
    assert!(mallory.receive().await.expect("mallory receives").is_empty(), "mallory got nothing of bob's");
    let mut groups: Vec<(String, Vec<String>)> =
        bob.groups().await.expect("groups").into_iter().map(|group| (group.name, group.members)).collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            ("@alice".to_owned(), vec!["alice".to_owned(), "bob".to_owned()]),
            ("@mallory".to_owned(), vec!["bob".to_owned(), "mallory".to_owned()]),
        ]
    );
    // Once they exist, `@alice` keeps meaning the verified conversation.
    bob.send("@alice", "again").await.expect("bob writes again");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["again"]);
    assert!(mallory.receive().await.expect("mallory receives").is_empty());
}

#[tokio::test]
async fn a_group_of_three_labelled_direct_is_a_named_group() {
    let harness = Harness::start().await;
    let alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    let mallory = harness.register("mallory").await;
    mallory.create_group("club").await.expect("create");
    mallory.add_members("club", &["alice".into(), "bob".into()]).await.expect("add");
    relabel_groups_of(&harness, "mallory", "dm:alice:bob", 1);
    bob.sync().await.expect("bob joins");
    let groups = bob.groups().await.expect("groups");
    assert_eq!(groups.len(), 1);
    assert!(!groups[0].name.starts_with('@') && !groups[0].name.starts_with("dm:"), "{:?}", groups[0].name);
    assert_eq!(groups[0].members, ["alice", "bob", "mallory"]);
    assert!(bob.members("@alice").await.is_err(), "no direct conversation with alice yet");
    bob.send("@alice", "just us").await.expect("bob writes to alice");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["just us"]);
    assert!(mallory.receive().await.expect("mallory receives").is_empty(), "mallory is not in bob's @alice");
}

#[tokio::test]
async fn a_named_group_cannot_pose_as_a_direct_conversation() {
    let harness = Harness::start().await;
    let _alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    let mallory = harness.register("mallory").await;
    mallory.create_group("plain").await.expect("create");
    mallory.add_members("plain", &["bob".into()]).await.expect("add");
    relabel_groups_of(&harness, "mallory", "@alice", 0);
    bob.sync().await.expect("bob joins");
    let groups = bob.groups().await.expect("groups");
    assert_eq!(groups.len(), 1);
    assert!(groups[0].name.starts_with("group-"), "renamed: {:?}", groups[0].name);
    assert!(bob.members("@alice").await.is_err());
}

/// Review F13: a server that serves another account's key package when
/// asked for alice's is caught before anything is committed.
#[tokio::test]
async fn a_key_package_served_for_the_wrong_user_is_refused() {
    let harness = Harness::start().await;
    let _alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    let _carol = harness.register("carol").await;
    bob.create_group("team").await.expect("create");
    let path = harness.dir.path().join("server").join("qpc-server.db");
    let connection = rusqlite::Connection::open(path).expect("open the server's database");
    connection.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
    connection.execute("DELETE FROM key_packages WHERE username = 'alice'", []).expect("drop alice's packages");
    connection.execute("UPDATE key_packages SET username = 'alice' WHERE username = 'carol'", []).expect("swap");
    // The server's own check (packages come from a current device of the
    // account) is relabelled too: carol's device posing as one of alice's.
    connection
        .execute(
            "INSERT INTO devices (queue, username, device_id, device_key, label, created_at_ms)
             SELECT 'alice#rogue', 'alice', device_id, device_key, 'rogue', created_at_ms FROM devices
             WHERE queue = 'carol'",
            [],
        )
        .expect("a rogue device");
    let refused = bob.add_members("team", &["alice".into()]).await.expect_err("carol's package is not alice's");
    assert!(refused.to_string().contains("key package of \"carol\""), "{refused}");
    assert_eq!(bob.members("team").await.expect("members"), ["bob"]);
}

/// An insider's raw access to the server: logged in as `name` with the
/// identity of its profile, holding its MLS state.
pub(crate) struct Insider {
    pub(crate) rpc: quicprochat_rpc::RpcClient,
    pub(crate) mls: quicprochat_core::MlsClient,
}

impl Insider {
    pub(crate) async fn of(harness: &Harness, name: &str) -> Insider {
        use quicprochat_core::{auth_transcript, AuthPurpose, Identity};
        use quicprochat_proto::{v1, Method};
        let profile = quicprochat_sdk::profile::Profile::load(&harness.profile(name)).expect("profile");
        let identity = Identity::from_bytes(&profile.identity.to_bytes()).expect("identity");
        let pin = quicprochat_rpc::PinnedServer::new(Some(profile.server_fingerprint));
        let limits = quicprochat_rpc::transport::TransportLimits::default();
        let rpc = quicprochat_rpc::RpcClient::connect(profile.server, pin, &limits, crate::harness::WAIT)
            .await
            .expect("connect");
        let challenge: v1::ChallengeResponse =
            rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await.expect("challenge");
        let exporter = rpc.auth_exporter().expect("exporter");
        let transcript = auth_transcript(AuthPurpose::Login, &challenge.nonce, &exporter, name, identity.public_key());
        let login = v1::LoginRequest {
            username: name.into(),
            signature: identity.sign(&transcript).expect("sign").into(),
            device_key: Default::default(),
        };
        let _: v1::LoginResponse = rpc.call(Method::Login, &login).await.expect("login");
        let (mls, _store) = profile.open_state().expect("the insider's MLS state");
        Insider { rpc, mls }
    }

    /// Commits a removal of `member` with one byte of the commit's
    /// membership tag (its last bytes) flipped: the server cannot check
    /// that tag and accepts the commit; no member can process it.
    async fn commit_with_a_bad_tag(&self, group_id: &[u8], member: &str) {
        use quicprochat_proto::{v1, Method};
        let pending = self.mls.remove_members(group_id, &[member.to_owned()]).expect("a removal");
        let mut commit = pending.commit;
        let last = commit.len() - 1;
        commit[last] ^= 0x01;
        let request = v1::SubmitCommitRequest {
            group_id: group_id.to_vec().into(),
            epoch: pending.epoch,
            commit: commit.into(),
            welcome: Default::default(),
            message_id: b"bad-tag".to_vec().into(),
        };
        let _: v1::SubmitCommitResponse =
            self.rpc.call(Method::SubmitCommit, &request).await.expect("the server accepts what it cannot check");
    }
}

/// Review F5: an insider's commit the server accepts but members cannot
/// process breaks the group; the members are told who broke it, sends
/// stop instead of retrying, and the first honest member by name rebuilds
/// it without the insider, who receives nothing sent afterwards.
#[tokio::test]
async fn a_group_broken_by_an_insider_is_rebuilt_without_them() {
    let harness = Harness::start().await;
    let alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    let carol = harness.register("carol").await;
    let mallory = harness.register("mallory").await;
    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["bob".into(), "carol".into(), "mallory".into()]).await.expect("add");
    for client in [&bob, &carol, &mallory] {
        client.sync().await.expect("join");
    }
    alice.send("team", "before").await.expect("send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["before"]);
    let group_id = quicprochat_sdk::local_store::LocalStore::open(&harness.profile("bob").join("client.db"))
        .expect("bob's store")
        .find_active("team")
        .expect("find")
        .expect("team")
        .group_id;
    mallory.disconnect().await;
    drop(mallory);

    let insider = Insider::of(&harness, "mallory").await;
    insider.commit_with_a_bad_tag(&group_id, "carol").await;

    // bob notices first; he is not the rebuilder (alice is first by name).
    bob.sync().await.expect("bob syncs");
    let refused = bob.send("team", "anyone?").await.expect_err("a broken group takes no sends");
    let message = refused.to_string();
    assert!(message.contains("broken by mallory") && message.contains("alice rebuilds"), "{message}");

    // alice notices, and rebuilds the group without mallory.
    alice.sync().await.expect("alice syncs and rebuilds");
    for client in [&bob, &carol] {
        client.sync().await.expect("joins the rebuilt group");
    }
    for client in [&alice, &bob, &carol] {
        assert_eq!(client.members("team").await.expect("members"), ["alice", "bob", "carol"]);
        let groups: Vec<String> = client.groups().await.expect("groups").into_iter().map(|group| group.name).collect();
        assert_eq!(groups, ["team"], "the broken group is retired");
    }
    bob.send("team", "after the repair").await.expect("bob sends in the rebuilt group");
    assert_eq!(texts(&receive_n(&carol, 2).await), ["before", "after the repair"]);
    assert_eq!(texts(&receive_n(&alice, 1).await), ["after the repair"]);

    // mallory's own client shows nothing sent after her commit.
    drop(insider);
    let mallory = harness.open("mallory").await;
    let seen = mallory.receive().await.expect("mallory receives");
    assert!(seen.iter().all(|message| message.text != "after the repair" && message.text != "anyone?"), "{seen:?}");
}

/// Review F8: an adder whose Welcome shows another group than the one the
/// server holds (same id, another member list) is found out by the commit
/// the server sequenced: the joiner drops the group before showing it.
#[tokio::test]
async fn a_welcome_that_does_not_match_the_servers_group_is_dropped() {
    use quicprochat_proto::{v1, Method};
    let harness = Harness::start().await;
    let bob = harness.register("bob").await;
    let _carol = harness.register("carol").await;
    let mallory = harness.register("mallory").await;
    mallory.disconnect().await;
    drop(mallory);
    let insider = Insider::of(&harness, "mallory").await;
    let group_id = vec![0x5au8; 16];
    let bootstrap = insider.mls.create_group(&group_id).expect("the real group");
    let create = v1::CreateGroupRequest {
        group_id: group_id.clone().into(),
        name: "real".into(),
        kind: v1::GroupKind::Named as i32,
        group_info: bootstrap.group_info.into(),
        ratchet_tree: bootstrap.ratchet_tree.into(),
    };
    let _: v1::CreateGroupResponse = insider.rpc.call(Method::CreateGroup, &create).await.expect("create");
    let fetch = |user: &str| {
        let request = v1::FetchKeyPackageRequest { username: user.into(), device_id: Default::default() };
        let rpc = insider.rpc.clone();
        async move {
            let fetched: v1::FetchKeyPackageResponse =
                rpc.call(Method::FetchKeyPackage, &request).await.expect("fetch");
            fetched.key_package.to_vec()
        }
    };
    let (bob_real, bob_fake, carol_fake) = (fetch("bob").await, fetch("bob").await, fetch("carol").await);
    let real = insider.mls.add_members(&group_id, &[bob_real]).expect("the real add");
    // A second state of mallory's with a group of the same id, bob and carol in it.
    let fake_dir = tempfile::tempdir().expect("tempdir");
    let profile = quicprochat_sdk::profile::Profile::load(&harness.profile("mallory")).expect("profile");
    let identity = quicprochat_core::Identity::from_bytes(&profile.identity.to_bytes()).expect("identity");
    let fake_mls =
        quicprochat_core::MlsClient::open(&fake_dir.path().join("fake.db"), identity, "mallory").expect("fake state");
    fake_mls.create_group(&group_id).expect("a fake group of the same id");
    let fake = fake_mls.add_members(&group_id, &[bob_fake, carol_fake]).expect("the fake add");
    let submit = v1::SubmitCommitRequest {
        group_id: group_id.clone().into(),
        epoch: real.epoch,
        commit: real.commit.into(),
        welcome: fake.welcome.expect("a Welcome").into(),
        message_id: b"add-bob".to_vec().into(),
    };
    let _: v1::SubmitCommitResponse =
        insider.rpc.call(Method::SubmitCommit, &submit).await.expect("the server cannot check a Welcome");

    bob.sync().await.expect("bob syncs");
    assert!(bob.groups().await.expect("groups").is_empty(), "the fake group was dropped");
    assert!(bob.receive().await.expect("receive").is_empty());
}
