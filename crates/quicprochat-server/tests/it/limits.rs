//! Each limit trips with the right status (or stream/connection outcome)
//! while the server stays healthy for other clients.

use std::time::Duration;

use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{PinnedServer, RpcClient};

use crate::harness::{status_of, Harness, TestServer, WAIT};

#[tokio::test]
async fn connections_per_address_are_capped() {
    let harness = Harness::start_with(|config| config.connections.per_address = 2).await;
    let first = harness.connect().await;
    let _second = harness.connect().await;
    let pin = PinnedServer::new(Some(harness.server.fingerprint()));
    let third = RpcClient::connect(
        harness.server.local_addr(),
        pin.clone(),
        &TransportLimits::default(),
        Duration::from_secs(2),
    )
    .await;
    assert!(third.is_err(), "a third connection from the same address is refused");
    // Closing one frees its place; the server notices the close asynchronously.
    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempt =
            RpcClient::connect(harness.server.local_addr(), pin.clone(), &TransportLimits::default(), WAIT).await;
        if attempt.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed place was never reused");
    }
}

/// A register request signed for `rpc`'s connection.
async fn register_request(rpc: &RpcClient, name: &str) -> v1::RegisterRequest {
    let identity = quicprochat_core::Identity::generate().expect("identity");
    let nonce = crate::harness::challenge(rpc).await;
    let exporter = rpc.auth_exporter().expect("exporter");
    let transcript = quicprochat_core::auth_transcript(
        quicprochat_core::AuthPurpose::Register,
        &nonce,
        &exporter,
        name,
        identity.public_key(),
    );
    v1::RegisterRequest {
        username: name.into(),
        identity_key: identity.public_key().to_vec().into(),
        signature: identity.sign(&transcript).expect("sign").into(),
        ..Default::default()
    }
}

/// Holds the database's write lock from outside the server, so every
/// server write waits: a storage call that is slow for certain.
fn lock_database(harness: &Harness) -> rusqlite::Connection {
    let connection =
        rusqlite::Connection::open(harness.dir.path().join("data").join("qpc-server.db")).expect("open db");
    connection.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
    connection
}

#[tokio::test]
async fn rpc_deadline_gives_deadline_exceeded() {
    let harness = Harness::start_with(|config| config.rpc_timeout = Duration::from_millis(200)).await;
    let rpc = harness.connect().await;
    let lock = lock_database(&harness);
    let request = register_request(&rpc, "alice").await;
    let register = rpc.call::<_, v1::RegisterResponse>(Method::Register, &request).await;
    assert_eq!(status_of(register), Status::DeadlineExceeded);
    drop(lock);
    let request = register_request(&rpc, "bob").await;
    let _: v1::RegisterResponse = rpc.call(Method::Register, &request).await.expect("served once the lock is gone");
}

#[tokio::test]
async fn storage_deadline_gives_unavailable() {
    let harness = Harness::start_with(|config| config.storage_timeout = Duration::from_millis(200)).await;
    let rpc = harness.connect().await;
    let lock = lock_database(&harness);
    let request = register_request(&rpc, "alice").await;
    let error = rpc
        .call::<_, v1::RegisterResponse>(Method::Register, &request)
        .await
        .expect_err("the write waits on the lock past the storage deadline");
    assert_eq!(error.status(), Some(Status::Unavailable));
    assert!(error.is_retryable());
    drop(lock);
}
