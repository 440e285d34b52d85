//! Catalogue: device requests that must be refused (issue 18) — a
//! certificate that does not verify under the caller's account key (signed
//! by another key, or for another account or device key), a bad label, a
//! key already in use, one device past the account's limit, a device id
//! that is not the caller's, the account's last device, and a removed
//! device's session; and link requests (a link nobody started, a malformed
//! one, an approval before the device is registered, a flood from one
//! address).

use quicprochat_core::device::certify_device;
use quicprochat_core::identity::Identity;
use quicprochat_core::link::{LinkCode, LinkKeyPair};
use quicprochat_core::DeviceId;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::RpcClient;

use super::{Bench, Connection, Outcome};
use crate::harness::{link_start_request, TestServer};

/// Most devices per account in this catalogue: the first plus two linked ones.
const MAX_DEVICES: u32 = 3;

async fn add(rpc: &RpcClient, device_key: &[u8], certificate: &[u8], label: &str) -> Outcome {
    let request = v1::AddDeviceRequest {
        device_key: device_key.to_vec().into(),
        certificate: certificate.to_vec().into(),
        label: label.into(),
    };
    Outcome::of(rpc.call::<_, v1::AddDeviceResponse>(Method::AddDevice, &request).await)
}

async fn remove(rpc: &RpcClient, device_id: &[u8]) -> Outcome {
    let request = v1::RemoveDeviceRequest { device_id: device_id.to_vec().into() };
    Outcome::of(rpc.call::<_, v1::RemoveDeviceResponse>(Method::RemoveDevice, &request).await)
}

#[tokio::test]
async fn devices_catalogue() {
    let mut bench = Bench::start_with(|config| config.max_devices_per_account = MAX_DEVICES).await;
    let (alice_rpc, alice) = bench.harness.register("alice").await;
    let (_bob_rpc, bob) = bench.harness.register("bob").await;
    let rpc = &alice_rpc;
    let invalid = Outcome::Status(Status::InvalidArgument);
    let phone = Identity::generate().expect("key");
    let phone_key = phone.public_key();

    let by_bob = certify_device(&bob, "alice", phone_key).expect("certify");
    let outcome = add(rpc, phone_key, &by_bob, "phone");
    bench.case("device certified by another account's key", rpc, invalid.clone(), Connection::Survives, outcome).await;
    let for_bob = certify_device(&alice, "bob", phone_key).expect("certify");
    let outcome = add(rpc, phone_key, &for_bob, "phone");
    bench.case("device certified for another account", rpc, invalid.clone(), Connection::Survives, outcome).await;
    let other = Identity::generate().expect("key");
    let for_other = certify_device(&alice, "alice", other.public_key()).expect("certify");
    let outcome = add(rpc, phone_key, &for_other, "phone");
    bench.case("certificate of another device key", rpc, invalid.clone(), Connection::Survives, outcome).await;
    let good = certify_device(&alice, "alice", phone_key).expect("certify");
    let outcome = add(rpc, phone_key, &good, "pho\nne");
    bench.case("device label with a control character", rpc, invalid.clone(), Connection::Survives, outcome).await;
    let own = certify_device(&alice, "alice", alice.public_key()).expect("certify");
    let outcome = add(rpc, alice.public_key(), &own, "again");
    bench
        .case(
            "the account key's own device again",
            rpc,
            Outcome::Status(Status::AlreadyExists),
            Connection::Survives,
            outcome,
        )
        .await;

    // Fill the account up to its limit, then one more.
    assert_eq!(add(rpc, phone_key, &good, "phone").await, Outcome::Served);
    let laptop = Identity::generate().expect("key");
    let laptop_certificate = certify_device(&alice, "alice", laptop.public_key()).expect("certify");
    assert_eq!(add(rpc, laptop.public_key(), &laptop_certificate, "laptop").await, Outcome::Served);
    let tablet = Identity::generate().expect("key");
    let tablet_certificate = certify_device(&alice, "alice", tablet.public_key()).expect("certify");
    let outcome = add(rpc, tablet.public_key(), &tablet_certificate, "tablet");
    bench
        .case(
            "one device past the account's limit",
            rpc,
            Outcome::Status(Status::ResourceExhausted),
            Connection::Survives,
            outcome,
        )
        .await;

    let bobs_first = DeviceId::of_key(bob.public_key());
    let outcome = remove(rpc, bobs_first.as_bytes());
    bench
        .case(
            "removing another account's device",
            rpc,
            Outcome::Status(Status::NotFound),
            Connection::Survives,
            outcome,
        )
        .await;
    let outcome = remove(rpc, &[1, 2, 3]);
    bench.case("a device id of the wrong length", rpc, invalid.clone(), Connection::Survives, outcome).await;

    // The phone logs in; the first device removes it; the phone's open
    // session is refused from then on.
    let phone_rpc = bench.harness.login_device("alice", &phone).await;
    let listed: v1::ListDevicesResponse =
        phone_rpc.call(Method::ListDevices, &v1::ListDevicesRequest {}).await.expect("list");
    assert_eq!(listed.devices.len(), 3);
    assert_eq!(remove(rpc, DeviceId::of_key(phone_key).as_bytes()).await, Outcome::Served);
    let outcome = async {
        Outcome::of(phone_rpc.call::<_, v1::FetchResponse>(Method::Fetch, &v1::FetchRequest::default()).await)
    };
    bench
        .case(
            "a removed device's open session",
            &phone_rpc,
            Outcome::Status(Status::PermissionDenied),
            Connection::Survives,
            outcome,
        )
        .await;

    // Down to one device: it cannot remove itself.
    assert_eq!(remove(rpc, DeviceId::of_key(laptop.public_key()).as_bytes()).await, Outcome::Served);
    let first_device = DeviceId::of_key(alice.public_key());
    let outcome = remove(rpc, first_device.as_bytes());
    bench.case("removing the account's only device", rpc, invalid, Connection::Survives, outcome).await;

    assert_eq!(bench.cases(), 10);
}

/// A new device's link request, published on `rpc` (not logged in).
async fn start_link(rpc: &RpcClient, code: &LinkCode, device: &Identity, keys: &LinkKeyPair) -> Outcome {
    let request = link_start_request(code, device, keys);
    Outcome::of(rpc.call::<_, v1::LinkStartResponse>(Method::LinkStart, &request).await)
}

async fn approve(rpc: &RpcClient, code: &LinkCode, sealed: Vec<u8>) -> Outcome {
    let request = v1::LinkApproveRequest { link_id: code.link_id.to_vec().into(), sealed: sealed.into() };
    Outcome::of(rpc.call::<_, v1::LinkApproveResponse>(Method::LinkApprove, &request).await)
}

#[tokio::test]
async fn device_links_catalogue() {
    let mut bench = Bench::start_with(|config| {
        config.rate_limits.link_per_address =
            quicprochat_server::config::RateLimit { burst: 2, period: std::time::Duration::from_secs(3600) };
    })
    .await;
    let (alice_rpc, _alice) = bench.harness.register("alice").await;
    let newcomer = bench.harness.connect().await;
    let (code, device, keys) =
        (LinkCode::generate(), Identity::generate().expect("key"), LinkKeyPair::generate().expect("keys"));

    let unknown = LinkCode::generate();
    let outcome = async {
        let request = v1::LinkFetchRequest { link_id: unknown.link_id.to_vec().into() };
        Outcome::of(alice_rpc.call::<_, v1::LinkFetchResponse>(Method::LinkFetch, &request).await)
    };
    bench
        .case(
            "fetching a link nobody started",
            &alice_rpc,
            Outcome::Status(Status::NotFound),
            Connection::Survives,
            outcome,
        )
        .await;
    let outcome = async {
        let request =
            v1::LinkStartRequest { link_id: vec![1; 16].into(), device_key: vec![1; 31].into(), ..Default::default() };
        Outcome::of(newcomer.call::<_, v1::LinkStartResponse>(Method::LinkStart, &request).await)
    };
    bench
        .case(
            "a link request with a short device key",
            &newcomer,
            Outcome::Status(Status::InvalidArgument),
            Connection::Survives,
            outcome,
        )
        .await;

    assert_eq!(start_link(&newcomer, &code, &device, &keys).await, Outcome::Served);
    let outcome = approve(&alice_rpc, &code, vec![1; 64]);
    bench
        .case(
            "approving a link before registering its device",
            &alice_rpc,
            Outcome::Status(Status::InvalidArgument),
            Connection::Survives,
            outcome,
        )
        .await;
    let another = LinkCode::generate();
    let outcome = start_link(&newcomer, &another, &device, &keys);
    bench
        .case(
            "a third link from one address (limit 2; the refused one above counted)",
            &newcomer,
            Outcome::Status(Status::ResourceExhausted),
            Connection::Survives,
            outcome,
        )
        .await;
    assert_eq!(bench.cases(), 4);
}
