//! Operator-facing behaviour: metrics that move with traffic, health,
//! rate limits and registration policy, each tripping with the right status.

use std::net::SocketAddr;
use std::time::Duration;

use quicprochat_core::MlsClient;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_server::config::{RateLimit, RegistrationPolicy};
use quicprochat_server::domain::invites::{self, NewInvite};
use quicprochat_server::storage::SqliteStore;

use crate::harness::{
    alice_and_bob, challenge, create_group_with, http_get, register_with, sample, status_of, Harness, TestServer,
};

const NEVER_REFILLS: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_after_traffic_and_health_says_ready() {
    let harness =
        Harness::start_with(|config| config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let addr = harness.server.metrics_addr().expect("metrics enabled");
    let challenges = r#"qpc_rpc_requests_total{method="Challenge",status="OK"}"#;
    let (status, before) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics")).await.expect("scrape");
    assert!(status.contains("200"), "{status}");
    let rpc = harness.connect().await;
    for _ in 0..3 {
        challenge(&rpc).await;
    }
    let fetch = rpc.call::<_, v1::FetchResponse>(Method::Fetch, &v1::FetchRequest::default()).await;
    assert_eq!(status_of(fetch), Status::Unauthenticated);
    let (_, after) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics")).await.expect("scrape");
    assert_eq!(sample(&after, challenges) - sample(&before, challenges), 3.0, "{after}");
    assert_eq!(sample(&after, r#"qpc_rpc_requests_total{method="Fetch",status="UNAUTHENTICATED"}"#), 1.0);
    assert_eq!(sample(&after, "qpc_open_connections"), 1.0);
    assert!(sample(&after, "qpc_uptime_seconds") >= 0.0 && after.contains("qpc_rpc_duration_seconds_bucket"));
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/healthz")).await.expect("health");
    assert!(status.contains("200") && body.trim() == "ready", "{status} {body}");
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let harness = Harness::start_with(|config| {
        config.rate_limits.register_per_address = RateLimit { burst: 2, period: NEVER_REFILLS };
    })
    .await;
    let rpc = harness.connect().await;
    register_with(&rpc, "user1", "").await.expect("first");
    register_with(&rpc, "user2", "").await.expect("second");
    let error = register_with(&rpc, "user3", "").await.expect_err("third is over the limit");
    assert_eq!(error.status(), Some(Status::ResourceExhausted));
    match error {
        quicprochat_rpc::RpcError::Status { retry_after_ms, .. } => assert!(retry_after_ms > 0),
        other => panic!("{other}"),
    }
    let _: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await.expect("healthy");
}

#[tokio::test]
async fn registration_policy_closed_and_invite() {
    let closed = Harness::start_with(|config| config.registration = RegistrationPolicy::Closed).await;
    let rpc = closed.connect().await;
    assert_eq!(status_of(register_with(&rpc, "alice", "").await), Status::PermissionDenied);

    let invite_only = Harness::start_with(|config| config.registration = RegistrationPolicy::Invite).await;
    let store = SqliteStore::open(invite_only.dir.path().join("data").join("qpc-server.db")).expect("open db");
    let invite = invites::create(&store, NewInvite { uses: 1, expires_in: None }, &mut rand::rng(), 1).expect("invite");
    let rpc = invite_only.connect().await;
    assert_eq!(status_of(register_with(&rpc, "alice", "").await), Status::PermissionDenied);
    assert_eq!(status_of(register_with(&rpc, "alice", "not-a-token").await), Status::PermissionDenied);
    register_with(&rpc, "alice", &invite.token).await.expect("the invite admits one registration");
    let rpc = invite_only.connect().await;
    assert_eq!(status_of(register_with(&rpc, "bob", &invite.token).await), Status::PermissionDenied, "single use");
}

#[tokio::test]
async fn sends_are_rate_limited_per_account() {
    let harness = Harness::start_with(|config| {
        config.rate_limits.send_per_account = RateLimit { burst: 2, period: NEVER_REFILLS };
    })
    .await;
    let (alice, alice_mls, _bob, group_id) = alice_and_bob(&harness).await;
    let rpc = harness.login("alice", &alice).await;
    let send = |index: u32| v1::SendMessageRequest {
        group_id: group_id.clone().into(),
        message_id: format!("m{index}").into_bytes().into(),
        ciphertext: alice_mls.encrypt(&group_id, b"hello").expect("encrypt").into(),
    };
    for index in 0..2 {
        let _: v1::SendMessageResponse = rpc.call(Method::SendMessage, &send(index)).await.expect("within the limit");
    }
    let third = rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &send(2)).await;
    assert_eq!(status_of(third), Status::ResourceExhausted);
}

#[tokio::test]
async fn key_package_exhaustion_keeps_last_resort_and_adds_still_work() {
    let harness = Harness::start_with(|config| {
        config.rate_limits.key_package_fetch_per_target = RateLimit { burst: 2, period: NEVER_REFILLS };
    })
    .await;
    let (bob_rpc, bob) = harness.register("bob").await;
    let bob_mls =
        MlsClient::open(&harness.dir.path().join("bob.db"), crate::harness::clone_identity(&bob), "bob").expect("mls");
    let upload = v1::UploadKeyPackagesRequest {
        key_packages: bob_mls.generate_key_packages(5).expect("kps").into_iter().map(Into::into).collect(),
        last_resort: bob_mls.generate_last_resort_key_package().expect("kp").into(),
    };
    let _: v1::UploadKeyPackagesResponse = bob_rpc.call(Method::UploadKeyPackages, &upload).await.expect("upload");

    // mallory drains as fast as the per-target limit lets her.
    let (mallory, _) = harness.register("mallory").await;
    let fetch = v1::FetchKeyPackageRequest { username: "bob".into(), device_id: Default::default() };
    let mut served_last_resort = 0;
    for _ in 0..7 {
        let response: v1::FetchKeyPackageResponse = mallory.call(Method::FetchKeyPackage, &fetch).await.expect("fetch");
        served_last_resort += usize::from(response.last_resort);
    }
    assert_eq!(served_last_resort, 5, "after the burst only the last-resort package is served");
    // ... and that only `last_resort_per_pair` (5) times to her.
    let past_budget = mallory.call::<_, v1::FetchKeyPackageResponse>(Method::FetchKeyPackage, &fetch).await;
    assert_eq!(status_of(past_budget), Status::ResourceExhausted);
    let stock: v1::KeyPackageStockResponse =
        bob_rpc.call(Method::KeyPackageStock, &v1::KeyPackageStockRequest {}).await.expect("stock");
    assert_eq!((stock.stock, stock.has_last_resort), (3, true), "the attack consumed only the burst");

    // A legitimate add still works, with the last-resort package: mallory
    // spent her own budget for bob, not alice's.
    let (alice_rpc, alice) = harness.register("alice").await;
    let alice_mls =
        MlsClient::open(&harness.dir.path().join("alice.db"), crate::harness::clone_identity(&alice), "alice")
            .expect("mls");
    // (create_group_with fetches bob's key package: past the burst, the last-resort one.)
    create_group_with(&alice_rpc, &alice_mls, &[9u8; 16], "bob").await;
}
