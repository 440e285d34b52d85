//! Linking a device through the relay, end to end over QUIC (issue 18):
//! the server relays only public keys, a MAC and ciphertext; the bundle
//! opens only on the new device holding the code; a wrong code is caught by
//! the approving device, and a used code is refused; the new device then
//! logs in with its own key.

use quicprochat_core::device::certify_device;
use quicprochat_core::identity::Identity;
use quicprochat_core::link::{open_bundle, seal_bundle, LinkBundle, LinkCode, LinkError, LinkKeyPair, LinkRequest};
use quicprochat_proto::{v1, Method, Status};

use crate::harness::{link_start_request, status_of, Harness, TestServer};

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
