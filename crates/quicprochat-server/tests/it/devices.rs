//! Devices end to end over QUIC (issue 18). Linking a device through the
//! relay: the server relays only public keys, a MAC and ciphertext; the
//! bundle opens only on the new device holding the code; a wrong code is
//! caught by the approving device, and a used code is refused; the new
//! device then logs in with its own key. Key packages per device: a fetch
//! answers one package per device, or the one device it names.

use quicprochat_core::device::certify_device;
use quicprochat_core::identity::Identity;
use quicprochat_core::link::{open_bundle, seal_bundle, LinkBundle, LinkCode, LinkError, LinkKeyPair, LinkRequest};
use quicprochat_core::{DeviceId, MemberCredential, MlsClient};
use quicprochat_proto::{v1, Method, Status};
use quicprochat_rpc::RpcClient;

use crate::harness::{clone_identity, link_start_request, status_of, Harness, TestServer};

#[tokio::test]
async fn a_device_links_through_the_relay_and_only_it_opens_the_bundle() {
    // A pending wait answers after half the RPC deadline.
    let harness = Harness::start_with(|config| config.rpc_timeout = std::time::Duration::from_secs(1)).await;
    let (alice_rpc, alice) = harness.register("alice").await;

    // The new device: its keys, the code it shows, its published request.
    let (code, phone, keys) =
        (LinkCode::generate(), Identity::generate().expect("key"), LinkKeyPair::generate().expect("keys"));
    let newcomer = harness.connect().await;
    let start = link_start_request(&code, &phone, &keys);
    let started: v1::LinkStartResponse = newcomer.call(Method::LinkStart, &start).await.expect("start");
    assert!(started.expires_in_ms > 0);
    let pending: v1::LinkWaitResponse = newcomer
        .call(
            Method::LinkWait,
            &v1::LinkWaitRequest {
                link_id: code.link_id.to_vec().into(),
                proof: code.wait_proof().expect("proof").into(),
            },
        )
        .await
        .expect("wait");
    assert!(!pending.approved, "nothing approved yet");

    // The approving device reads the link with the code the user typed in.
    let typed = LinkCode::parse(&code.encode()).expect("code");
    let fetched: v1::LinkFetchResponse = alice_rpc
        .call(Method::LinkFetch, &v1::LinkFetchRequest { link_id: typed.link_id.to_vec().into() })
        .await
        .expect("fetch");
    let relayed = LinkRequest {
        device_key: fetched.device_key.to_vec(),
        link_key: fetched.link_key.to_vec(),
        label: fetched.label,
    };
    typed.check(&relayed, &fetched.mac).expect("the relayed request matches the code");
    assert_eq!(LinkCode::generate().check(&relayed, &fetched.mac), Err(LinkError::Mismatch), "a wrong code");

    let certificate = certify_device(&alice, "alice", &relayed.device_key).expect("certify");
    let add = v1::AddDeviceRequest {
        device_key: relayed.device_key.clone().into(),
        certificate: certificate.clone().into(),
        label: relayed.label.clone(),
    };
    let _: v1::AddDeviceResponse = alice_rpc.call(Method::AddDevice, &add).await.expect("add device");
    let bundle = LinkBundle { username: "alice".into(), account_key: alice.public_key().to_vec(), certificate };
    let sealed = seal_bundle(&typed, &relayed, &bundle).expect("seal");
    let approve = v1::LinkApproveRequest { link_id: typed.link_id.to_vec().into(), sealed: sealed.clone().into() };
    let _: v1::LinkApproveResponse = alice_rpc.call(Method::LinkApprove, &approve).await.expect("approve");
    let again = alice_rpc.call::<_, v1::LinkApproveResponse>(Method::LinkApprove, &approve).await;
    assert_eq!(status_of(again), Status::AlreadyExists, "a link is approved once");

    // The new device gets exactly the bytes the approver sealed, once.
    let wait =
        v1::LinkWaitRequest { link_id: code.link_id.to_vec().into(), proof: code.wait_proof().expect("proof").into() };
    let guess = v1::LinkWaitRequest { link_id: code.link_id.to_vec().into(), proof: vec![0; 32].into() };
    let stolen = alice_rpc.call::<_, v1::LinkWaitResponse>(Method::LinkWait, &guess).await;
    assert_eq!(status_of(stolen), Status::PermissionDenied, "only the device holding the code collects it");
    let approved: v1::LinkWaitResponse = newcomer.call(Method::LinkWait, &wait).await.expect("wait");
    assert!(approved.approved);
    assert_eq!((approved.username.as_str(), approved.sealed.as_ref()), ("alice", sealed.as_slice()));
    let replayed = newcomer.call::<_, v1::LinkWaitResponse>(Method::LinkWait, &wait).await;
    assert_eq!(status_of(replayed), Status::NotFound, "a used code is gone");
    let refetched = alice_rpc
        .call::<_, v1::LinkFetchResponse>(
            Method::LinkFetch,
            &v1::LinkFetchRequest { link_id: code.link_id.to_vec().into() },
        )
        .await;
    assert_eq!(status_of(refetched), Status::NotFound);

    // Only the new device, holding the code, opens what the server relayed.
    let opened = open_bundle(&code, &keys, phone.public_key(), &approved.sealed).expect("open");
    assert_eq!(opened.account_key, alice.public_key());
    let server_keys = LinkKeyPair::generate().expect("keys");
    assert_eq!(open_bundle(&code, &server_keys, phone.public_key(), &approved.sealed).err(), Some(LinkError::Unsealed));
    assert_eq!(
        open_bundle(&LinkCode::generate(), &keys, phone.public_key(), &approved.sealed).err(),
        Some(LinkError::Unsealed)
    );

    // The linked device logs in with its own key and sees its account's devices.
    let phone_rpc = harness.login_device("alice", &phone).await;
    let listed: v1::ListDevicesResponse =
        phone_rpc.call(Method::ListDevices, &v1::ListDevicesRequest {}).await.expect("list");
    let labels: Vec<&str> = listed.devices.iter().map(|device| device.label.as_str()).collect();
    assert_eq!(labels, ["first device", "phone"]);
}

async fn upload_key_packages(rpc: &RpcClient, key_packages: &[Vec<u8>], last_resort: Vec<u8>) {
    let request = v1::UploadKeyPackagesRequest {
        key_packages: key_packages.iter().cloned().map(Into::into).collect(),
        last_resort: last_resort.into(),
    };
    let _: v1::UploadKeyPackagesResponse = rpc.call(Method::UploadKeyPackages, &request).await.expect("upload");
}

#[tokio::test]
async fn a_key_package_fetch_answers_one_package_per_device() {
    let harness = Harness::start().await;
    let (alice_rpc, alice) = harness.register("alice").await;
    let (bob_rpc, _bob) = harness.register("bob").await;
    let phone = Identity::generate().expect("key");
    let certificate = certify_device(&alice, "alice", phone.public_key()).expect("certify");
    let add = v1::AddDeviceRequest {
        device_key: phone.public_key().to_vec().into(),
        certificate: certificate.clone().into(),
        label: "phone".into(),
    };
    let _: v1::AddDeviceResponse = alice_rpc.call(Method::AddDevice, &add).await.expect("add device");
    let phone_rpc = harness.login_device("alice", &phone).await;

    // Each device uploads its own: the first device one package, the phone
    // one and a last-resort package.
    let alice_mls = MlsClient::open(&harness.dir().join("alice.db"), clone_identity(&alice), "alice").expect("mls");
    let credential = MemberCredential::linked("alice", alice.public_key(), &certificate);
    let phone_mls = MlsClient::open(&harness.dir().join("phone.db"), clone_identity(&phone), "alice")
        .and_then(|client| client.as_linked_device(credential))
        .expect("linked mls");
    let first_packages = alice_mls.generate_key_packages(1).expect("kp");
    upload_key_packages(&alice_rpc, &first_packages, Vec::new()).await;
    let phone_packages = phone_mls.generate_key_packages(1).expect("kp");
    let phone_last_resort = phone_mls.generate_last_resort_key_package().expect("kp");
    upload_key_packages(&phone_rpc, &phone_packages, phone_last_resort.clone()).await;
    let stock: v1::KeyPackageStockResponse =
        phone_rpc.call(Method::KeyPackageStock, &v1::KeyPackageStockRequest {}).await.expect("stock");
    assert_eq!((stock.stock, stock.has_last_resort), (1, true), "the phone's own stock");

    let fetch = |device_id: Vec<u8>| {
        let request = v1::FetchKeyPackageRequest { username: "alice".into(), device_id: device_id.into() };
        let bob_rpc = &bob_rpc;
        async move {
            let response: v1::FetchKeyPackageResponse =
                bob_rpc.call(Method::FetchKeyPackage, &request).await.expect("fetch");
            let packages: Vec<Vec<u8>> = response.key_packages.iter().map(|package| package.to_vec()).collect();
            (response.key_package.to_vec(), response.last_resort, packages)
        }
    };
    // One per device, in device order; the first also where old clients read.
    let (first, last_resort, packages) = fetch(Vec::new()).await;
    assert_eq!(packages, [first_packages[0].clone(), phone_packages[0].clone()]);
    assert_eq!((first, last_resort), (first_packages[0].clone(), false));
    // Naming the phone: only its package, its last-resort one by now.
    let phone_id = DeviceId::of_key(phone.public_key());
    let (first, last_resort, packages) = fetch(phone_id.as_bytes().to_vec()).await;
    assert_eq!(packages, std::slice::from_ref(&phone_last_resort));
    assert_eq!((first, last_resort), (phone_last_resort.clone(), true));
    // The first device has nothing left: the phone's package comes first.
    let (first, last_resort, packages) = fetch(Vec::new()).await;
    assert_eq!((first, last_resort, packages.len()), (phone_last_resort, true, 1));
}
