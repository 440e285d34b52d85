//! Sessions: every RPC needs a login, and a login proof is bound to one
//! connection and one challenge.

use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};

use crate::harness::{challenge, login_request, status_of, Harness, TestServer};

#[tokio::test]
async fn every_rpc_needs_a_session() {
    let harness = Harness::start().await;
    let rpc = harness.connect().await;
    let fetch = rpc.call::<_, v1::FetchResponse>(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 10 }).await;
    assert_eq!(status_of(fetch), Status::Unauthenticated);
    let send = rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &v1::SendMessageRequest::default()).await;
    assert_eq!(status_of(send), Status::Unauthenticated);
    let kp = rpc
        .call::<_, v1::FetchKeyPackageResponse>(
            Method::FetchKeyPackage,
            &v1::FetchKeyPackageRequest { username: "x".into(), device_id: Default::default() },
        )
        .await;
    assert_eq!(status_of(kp), Status::Unauthenticated);
}

#[tokio::test]
async fn login_proof_is_bound_to_the_connection_and_single_use() {
    let harness = Harness::start().await;
    let (_first, identity) = harness.register("alice").await;

    // A proof made for one connection's exporter does not work on another.
    let victim = harness.connect().await;
    let attacker = harness.connect().await;
    let nonce = challenge(&attacker).await;
    let stolen = login_request(&identity, "alice", &nonce, &victim.auth_exporter().expect("exporter"));
    let replay = attacker.call::<_, v1::LoginResponse>(Method::Login, &stolen).await;
    assert_eq!(status_of(replay), Status::Unauthenticated);

    // A correct proof works once; the challenge is consumed.
    let nonce = challenge(&victim).await;
    let proof = login_request(&identity, "alice", &nonce, &victim.auth_exporter().expect("exporter"));
    let _: v1::LoginResponse = victim.call(Method::Login, &proof).await.expect("login");
    let again = victim.call::<_, v1::LoginResponse>(Method::Login, &proof).await;
    assert_eq!(status_of(again), Status::Unauthenticated);
}

#[tokio::test]
async fn taken_and_invalid_usernames_are_refused() {
    let harness = Harness::start().await;
    let _ = harness.register("alice").await;
    let rpc = harness.connect().await;
    let identity = quicprochat_core::Identity::generate().expect("identity");
    for (name, expected) in
        [("alice", Status::AlreadyExists), ("Alice Smith", Status::InvalidArgument), ("", Status::InvalidArgument)]
    {
        let nonce = challenge(&rpc).await;
        let exporter = rpc.auth_exporter().expect("exporter");
        let transcript = quicprochat_core::auth_transcript(
            quicprochat_core::AuthPurpose::Register,
            &nonce,
            &exporter,
            name,
            identity.public_key(),
        );
        let request = v1::RegisterRequest {
            username: name.into(),
            identity_key: identity.public_key().to_vec().into(),
            signature: identity.sign(&transcript).expect("sign").into(),
            invite_token: String::new(),
        };
        let result = rpc.call::<_, v1::RegisterResponse>(Method::Register, &request).await;
        assert_eq!(status_of(result), expected, "{name:?}");
    }
}

#[tokio::test]
async fn ping_needs_no_session() {
    let harness = Harness::start().await;
    let rpc = harness.connect().await;
    let pong: v1::PingResponse = rpc.call(Method::Ping, &v1::PingRequest {}).await.expect("ping");
    assert!(pong.server_time_ms > 0);
}
