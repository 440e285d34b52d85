//! A user of one server looks up a user of another (step 5): its own server
//! forwards `ResolveUser` and `FetchKeyPackage` of `name@domain` to the
//! user's home, which answers with the account key and claims one key
//! package per device, serving only packages that name the user with its
//! domain.

use quicprochat_core::ds::validate_key_package;
use quicprochat_core::MlsClient;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::RpcClient;

use super::{quick_to_notice, Pair};
use crate::harness::{clone_identity, status_of, TestServer, WAIT};

/// Uploads key packages of `client` (bob's first device) on `rpc`.
async fn upload(rpc: &RpcClient, packages: Vec<Vec<u8>>) {
    let request = v1::UploadKeyPackagesRequest {
        key_packages: packages.into_iter().map(Into::into).collect(),
        last_resort: Default::default(),
    };
    let _: v1::UploadKeyPackagesResponse = rpc.call(Method::UploadKeyPackages, &request).await.expect("upload");
}

fn fetch(username: &str) -> v1::FetchKeyPackageRequest {
    v1::FetchKeyPackageRequest { username: username.to_owned(), device_id: Default::default() }
}

#[tokio::test]
async fn a_user_of_another_server_is_resolved_and_claimed_at_their_home() {
    let pair = Pair::start(quick_to_notice).await;
    for (server, peer) in [(&pair.a, "b.test"), (&pair.b, "a.test")] {
        assert!(server.server.wait_for_peer(peer, WAIT, |status| status.reachable).await.is_some(), "{peer} up");
    }
    let (alice_rpc, _alice) = pair.a.register("alice").await;
    let (bob_rpc, bob) = pair.b.register("bob").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // One package from before bob's client knew its domain (bare), one after.
    let bare = MlsClient::open(&dir.path().join("bare.db"), clone_identity(&bob), "bob").expect("client");
    let qualified = MlsClient::open(&dir.path().join("mls.db"), clone_identity(&bob), "bob")
        .expect("client")
        .with_home_domain("b.test")
        .expect("domain");
    upload(
        &bob_rpc,
        [bare.generate_key_packages(1).expect("kp"), qualified.generate_key_packages(1).expect("kp")].concat(),
    )
    .await;

    let resolved: v1::ResolveUserResponse = alice_rpc
        .call(Method::ResolveUser, &v1::ResolveUserRequest { username: "bob@b.test".into() })
        .await
        .expect("resolve bob@b.test");
    assert_eq!((resolved.username.as_str(), resolved.identity_key.as_ref()), ("bob@b.test", bob.public_key()));

    let fetched: v1::FetchKeyPackageResponse =
        alice_rpc.call(Method::FetchKeyPackage, &fetch("bob@b.test")).await.expect("claim bob's package");
    assert_eq!(fetched.key_packages.len(), 1, "one package per device");
    let info = validate_key_package(&fetched.key_packages[0]).expect("a valid key package");
    assert_eq!(info.username, "bob@b.test", "the bare package was skipped: it would read as a user of the hub");
    assert_eq!(fetched.key_package, fetched.key_packages[0]);
    // The qualified package is used up and the bare one discarded: nothing left.
    assert_eq!(
        status_of(
            alice_rpc.call::<_, v1::FetchKeyPackageResponse>(Method::FetchKeyPackage, &fetch("bob@b.test")).await
        ),
        Status::NotFound
    );

    assert_eq!(
        status_of(
            alice_rpc.call::<_, v1::FetchKeyPackageResponse>(Method::FetchKeyPackage, &fetch("carol@b.test")).await
        ),
        Status::NotFound
    );
    assert_eq!(
        status_of(
            alice_rpc.call::<_, v1::FetchKeyPackageResponse>(Method::FetchKeyPackage, &fetch("carol@c.test")).await
        ),
        Status::NotFound,
        "c.test is no peer"
    );
    // A name of our own domain is a local one.
    let own: Result<v1::ResolveUserResponse, _> =
        alice_rpc.call(Method::ResolveUser, &v1::ResolveUserRequest { username: "alice@a.test".into() }).await;
    assert_eq!(own.expect("alice@a.test is alice").username, "alice");

    // b unreachable: the lookup is retryable.
    pair.to_b.cut();
    let down = pair.a.server.wait_for_peer("b.test", WAIT, |status| !status.reachable).await;
    assert!(down.is_some());
    let unreachable = alice_rpc
        .call::<_, v1::ResolveUserResponse>(
            Method::ResolveUser,
            &v1::ResolveUserRequest { username: "bob@b.test".into() },
        )
        .await;
    assert_eq!(status_of(unreachable), Status::Unavailable);
    pair.to_b.heal();
}
