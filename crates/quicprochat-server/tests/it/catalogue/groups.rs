//! Catalogue: group operations at the Delivery Service that must be refused
//! — posts by non-members and removed members, messages for the wrong group
//! or of the wrong kind, stale or forged commits, and group creation with
//! taken ids or bad state.

use quicprochat_core::MlsClient;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::RpcClient;

use super::{submit, Bench, Connection, Outcome};
use crate::harness::{alice_and_bob, clone_identity, TestServer};

async fn send(rpc: &RpcClient, group_id: &[u8], message_id: &[u8], ciphertext: Vec<u8>) -> Outcome {
    let request = v1::SendMessageRequest {
        group_id: group_id.to_vec().into(),
        message_id: message_id.to_vec().into(),
        ciphertext: ciphertext.into(),
    };
    Outcome::of(rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await)
}

/// Joins `mls` to the group whose Welcome waits in `rpc`'s queue.
async fn join_from_queue(rpc: &RpcClient, mls: &MlsClient) {
    let fetched: v1::FetchResponse =
        rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 100 }).await.expect("fetch");
    let welcome = fetched
        .entries
        .iter()
        .find(|entry| entry.kind == v1::EntryKind::Welcome as i32)
        .expect("a welcome in the queue");
    mls.join_from_welcome(&welcome.payload).expect("join");
}

/// The offset of the content type byte in a PrivateMessage MlsMessage with a
/// group id shorter than 64 bytes: version (2), wire format (2), group id
/// length (1) and bytes, epoch (8).
fn content_type_offset(group_id: &[u8]) -> usize {
    2 + 2 + 1 + group_id.len() + 8
}

#[tokio::test]
async fn groups_catalogue() {
    let mut bench = Bench::start().await;
    let harness = &bench.harness;
    let (alice, alice_mls, bob, group_id) = alice_and_bob(harness).await;
    let alice_rpc = harness.login("alice", &alice).await;
    let bob_rpc = harness.login("bob", &bob).await;
    let bob_mls = MlsClient::open(&harness.dir().join("bob.db"), clone_identity(&bob), "bob").expect("mls");
    join_from_queue(&bob_rpc, &bob_mls).await;
    let (carol_rpc, carol) = harness.register("carol").await;
    let carol_mls = MlsClient::open(&harness.dir().join("carol.db"), clone_identity(&carol), "carol").expect("mls");
    let own_group = vec![9u8; 16];
    let carol_bootstrap = carol_mls.create_group(&own_group).expect("carol's own group");

    let denied = Outcome::Status(Status::PermissionDenied);
    let invalid = Outcome::Status(Status::InvalidArgument);
    let bob_message = bob_mls.encrypt(&group_id, b"hello").expect("encrypt");

    let outcome = send(&carol_rpc, &group_id, b"c1", bob_message.clone());
    bench.case("non-member posts to a group", &carol_rpc, denied.clone(), Connection::Survives, outcome).await;

    let outcome = send(&bob_rpc, &[3u8; 16], b"b1", bob_message.clone());
    bench
        .case(
            "message whose MLS group id is not the request's",
            &bob_rpc,
            invalid.clone(),
            Connection::Survives,
            outcome,
        )
        .await;

    let carol_message = carol_mls.encrypt(&own_group, b"hi").expect("encrypt");
    let outcome = send(&carol_rpc, &own_group, b"c2", carol_message);
    bench
        .case(
            "post to a group the server does not know",
            &carol_rpc,
            Outcome::Status(Status::NotFound),
            Connection::Survives,
            outcome,
        )
        .await;

    let outcome = send(&bob_rpc, &group_id, b"b2", b"\x00\x01\x00\x02garbage".to_vec());
    bench.case("garbage application message", &bob_rpc, invalid.clone(), Connection::Survives, outcome).await;

    let mut smuggled = bob_message.clone();
    smuggled[content_type_offset(&group_id)] = 3; // ContentType::Commit
    let outcome = send(&bob_rpc, &group_id, b"b3", smuggled);
    bench
        .case(
            "commit smuggled as an encrypted application message",
            &bob_rpc,
            invalid.clone(),
            Connection::Survives,
            outcome,
        )
        .await;

    let bob_commit = bob_mls.remove_members(&group_id, &["alice".to_owned()]).expect("bob's commit");
    bob_mls.clear_pending_commit(&group_id).expect("clear");
    let outcome = send(&bob_rpc, &group_id, b"b4", bob_commit.commit.clone());
    bench
        .case(
            "commit (PublicMessage) sent as an application message",
            &bob_rpc,
            invalid.clone(),
            Connection::Survives,
            outcome,
        )
        .await;

    // A member's PublicMessage ends with the signature (64 bytes), the
    // confirmation tag and the membership tag (32 bytes each, with 1-byte
    // length prefixes). The DS checks the signature; the two tags need group
    // secrets it does not have (THREAT_MODEL.md).
    let mut forged = bob_commit.commit.clone();
    let inside_signature = forged.len() - 2 * 33 - 10;
    forged[inside_signature] ^= 1;
    let outcome = submit(&bob_rpc, &group_id, bob_commit.epoch, forged, b"b5");
    bench.case("commit with a bad signature", &bob_rpc, invalid.clone(), Connection::Survives, outcome).await;

    let outcome = submit(&carol_rpc, &group_id, bob_commit.epoch, bob_commit.commit.clone(), b"c3");
    bench
        .case("member's commit submitted by a non-member", &carol_rpc, denied.clone(), Connection::Survives, outcome)
        .await;

    let outcome = submit(&bob_rpc, &group_id, bob_commit.epoch + 5, bob_commit.commit.clone(), b"b6");
    bench
        .case(
            "commit under a wrong epoch",
            &bob_rpc,
            Outcome::Status(Status::StaleEpoch),
            Connection::Survives,
            outcome,
        )
        .await;

    let outcome = submit(&bob_rpc, &[4u8; 16], bob_commit.epoch, bob_commit.commit.clone(), b"b7");
    bench
        .case("commit for an unknown group", &bob_rpc, Outcome::Status(Status::NotFound), Connection::Survives, outcome)
        .await;

    let outcome = submit(&bob_rpc, &group_id, bob_commit.epoch, bob_message.clone(), b"b8");
    bench
        .case("application message submitted as a commit", &bob_rpc, invalid.clone(), Connection::Survives, outcome)
        .await;

    let request = v1::CreateGroupRequest {
        group_id: group_id.clone().into(),
        name: "mine now".into(),
        kind: v1::GroupKind::Named as i32,
        group_info: carol_bootstrap.group_info.clone().into(),
        ratchet_tree: carol_bootstrap.ratchet_tree.clone().into(),
    };
    let outcome =
        async { Outcome::of(carol_rpc.call::<_, v1::CreateGroupResponse>(Method::CreateGroup, &request).await) };
    bench
        .case("create a group under another group's id", &carol_rpc, invalid.clone(), Connection::Survives, outcome)
        .await;

    let request = v1::CreateGroupRequest {
        group_id: own_group.clone().into(),
        name: "mine".into(),
        kind: v1::GroupKind::Named as i32,
        group_info: b"not a group info".to_vec().into(),
        ratchet_tree: carol_bootstrap.ratchet_tree.clone().into(),
    };
    let outcome =
        async { Outcome::of(carol_rpc.call::<_, v1::CreateGroupResponse>(Method::CreateGroup, &request).await) };
    bench
        .case("create a group with a garbage GroupInfo", &carol_rpc, invalid.clone(), Connection::Survives, outcome)
        .await;

    let outcome = async {
        Outcome::of(
            carol_rpc
                .call::<_, v1::GroupMembersResponse>(
                    Method::GroupMembers,
                    &v1::GroupMembersRequest { group_id: group_id.clone().into() },
                )
                .await,
        )
    };
    bench.case("member list of a group one is not in", &carol_rpc, denied.clone(), Connection::Survives, outcome).await;

    let request = v1::LeaveGroupRequest {
        group_id: group_id.clone().into(),
        proposal: b"garbage".to_vec().into(),
        message_id: b"c4".to_vec().into(),
    };
    let outcome =
        async { Outcome::of(carol_rpc.call::<_, v1::LeaveGroupResponse>(Method::LeaveGroup, &request).await) };
    bench.case("leave a group one is not in", &carol_rpc, denied.clone(), Connection::Survives, outcome).await;

    // A commit alice made and then dropped: once the group moves on, it is stale.
    let dropped = alice_mls.remove_members(&group_id, &["bob".to_owned()]).expect("remove");
    alice_mls.clear_pending_commit(&group_id).expect("clear");
    // alice removes bob; bob, not yet aware, keeps posting in the old epoch.
    let removal = alice_mls.remove_members(&group_id, &["bob".to_owned()]).expect("remove");
    let accepted = submit(&alice_rpc, &group_id, removal.epoch, removal.commit.clone(), b"remove-bob").await;
    assert_eq!(accepted, Outcome::Served);
    alice_mls.merge_pending_commit(&group_id).expect("merge");
    let outcome = send(&bob_rpc, &group_id, b"b9", bob_mls.encrypt(&group_id, b"still here?").expect("encrypt"));
    bench.case("removed member posts to the group", &bob_rpc, denied.clone(), Connection::Survives, outcome).await;

    let outcome = submit(&alice_rpc, &group_id, dropped.epoch, dropped.commit, b"a-stale");
    bench
        .case("stale-epoch commit", &alice_rpc, Outcome::Status(Status::StaleEpoch), Connection::Survives, outcome)
        .await;

    // Almost a million empty messages in under 2 MiB: refused before decoding.
    let empties: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], 1_000_000).flatten().collect();
    let outcome = async { Outcome::of(alice_rpc.call_raw(Method::SendMessages, empties.into()).await) };
    bench.case("a burst of a million empty messages", &alice_rpc, invalid.clone(), Connection::Survives, outcome).await;

    assert_eq!(bench.cases(), 18);
}
