//! Accounts with several devices (issue 18), for the suites run with
//! `--devices-per-account N`: a linked device is added to an account from
//! its first device (`AddDevice` with a certificate signed by the account
//! key), logs in on a connection of its own with its own key, has an MLS
//! client of its own presenting the linked credential, and uploads its own
//! key packages (stock is per device). A fetch by username then serves one
//! package per current device, which is how a group gets every device of
//! an account as a leaf.
//!
//! This module does not link through the relay (`LinkStart` …
//! `LinkApprove`): the link's cost is the SDK's `link_timing` example's;
//! here only the steady state after linking is measured.

use std::path::Path;

use anyhow::Context;
use quicprochat_core::device::certify_device;
use quicprochat_core::{auth_transcript, AuthPurpose, Identity, MemberCredential, MlsClient};
use quicprochat_proto::{v1, Method};
use quicprochat_rpc::RpcClient;

use crate::setup::{connect, ServerAddress};

/// One device of an account beyond the first, logged in.
pub(crate) struct LinkedDevice {
    /// Its own connection, logged in with its own key.
    pub(crate) rpc: RpcClient,
    /// Its MLS client, whose leaves carry the account's certificate for it.
    pub(crate) mls: MlsClient,
}

/// An account's first device, from which further devices are added.
pub(crate) struct FirstDevice<'a> {
    pub(crate) rpc: &'a RpcClient,
    pub(crate) username: &'a str,
    pub(crate) account: &'a Identity,
}

/// Adds `count` devices to `first`'s account, each logged in on a new
/// connection to `server`; their MLS state goes to `state_dir`, one file
/// per device named after `file_prefix`.
pub(crate) async fn add_devices(
    server: ServerAddress,
    first: &FirstDevice<'_>,
    count: usize,
    state_dir: &Path,
    file_prefix: &str,
) -> anyhow::Result<Vec<LinkedDevice>> {
    let mut devices = Vec::with_capacity(count);
    for index in 0..count {
        let label = format!("device {}", index + 2);
        let state = state_dir.join(format!("{file_prefix}-d{}.db", index + 2));
        devices.push(add_device(server, first, &label, &state).await?);
    }
    Ok(devices)
}

/// Registers a new device with the account (`AddDevice` from its first
/// device), logs it in and opens its MLS client on `state`.
async fn add_device(
    server: ServerAddress,
    first: &FirstDevice<'_>,
    label: &str,
    state: &Path,
) -> anyhow::Result<LinkedDevice> {
    let device = Identity::generate()?;
    let certificate = certify_device(first.account, first.username, device.public_key())?;
    let add = v1::AddDeviceRequest {
        device_key: device.public_key().to_vec().into(),
        certificate: certificate.clone().into(),
        label: label.to_owned(),
    };
    let _: v1::AddDeviceResponse =
        first.rpc.call(Method::AddDevice, &add).await.with_context(|| format!("add a device to {}", first.username))?;
    let rpc = connect(server.addr, server.pin()).await?;
    login_device_on(&rpc, first.username, &device).await?;
    let credential = MemberCredential::linked(first.username, first.account.public_key(), &certificate);
    let mls = MlsClient::open(state, device, first.username)?.as_linked_device(credential)?;
    Ok(LinkedDevice { rpc, mls })
}

/// Logs in on `rpc` as the device keyed by `device` of the account `name`
/// (the transcript and the request name the device's key).
pub(crate) async fn login_device_on(rpc: &RpcClient, name: &str, device: &Identity) -> anyhow::Result<()> {
    let challenge: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await?;
    let exporter = rpc.auth_exporter()?;
    let transcript = auth_transcript(AuthPurpose::Login, &challenge.nonce, &exporter, name, device.public_key());
    let request = v1::LoginRequest {
        username: name.into(),
        signature: device.sign(&transcript)?.into(),
        device_key: device.public_key().to_vec().into(),
    };
    let _: v1::LoginResponse =
        rpc.call(Method::Login, &request).await.with_context(|| format!("log in a device of {name}"))?;
    Ok(())
}

/// Uploads `count` key packages of `mls` (and, if `last_resort`, its
/// last-resort package) on its device's own connection `rpc`.
pub(crate) async fn upload_own(
    rpc: &RpcClient,
    mls: &MlsClient,
    count: usize,
    last_resort: bool,
) -> anyhow::Result<()> {
    let last_resort = if last_resort { mls.generate_last_resort_key_package()? } else { Vec::new() };
    let upload = v1::UploadKeyPackagesRequest {
        key_packages: mls.generate_key_packages(count)?.into_iter().map(Into::into).collect(),
        last_resort: last_resort.into(),
    };
    let _: v1::UploadKeyPackagesResponse =
        rpc.call(Method::UploadKeyPackages, &upload).await.context("upload key packages")?;
    Ok(())
}

/// One key package of each current device of `username`, fetched by
/// `fetcher` (so served to it, which the server requires of every add).
pub(crate) async fn fetch_every_device(fetcher: &RpcClient, username: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    fetch_packages(fetcher, username, Vec::new()).await
}

/// One key package of each of `devices` (devices of `username`), fetched by `fetcher`.
pub(crate) async fn fetch_devices(
    fetcher: &RpcClient,
    username: &str,
    devices: &[LinkedDevice],
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut packages = Vec::with_capacity(devices.len());
    for device in devices {
        let device_id = quicprochat_core::DeviceId::of_key(device.mls.identity().public_key());
        packages.extend(fetch_packages(fetcher, username, device_id.as_bytes().to_vec()).await?);
    }
    Ok(packages)
}

async fn fetch_packages(fetcher: &RpcClient, username: &str, device_id: Vec<u8>) -> anyhow::Result<Vec<Vec<u8>>> {
    let request = v1::FetchKeyPackageRequest { username: username.to_owned(), device_id: device_id.into() };
    let fetched: v1::FetchKeyPackageResponse = fetcher
        .call(Method::FetchKeyPackage, &request)
        .await
        .with_context(|| format!("fetch key packages of {username}"))?;
    Ok(fetched.key_packages.iter().map(|package| package.to_vec()).collect())
}

/// Fetches and acknowledges what is queued for `rpc`'s device (the group's
/// commit and Welcome), so the measurement starts from an empty queue.
/// Returns the head of the queue.
pub(crate) async fn drain_queue(rpc: &RpcClient) -> anyhow::Result<u64> {
    let fetched: v1::FetchResponse = rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 10 }).await?;
    let _: v1::AckResponse = rpc.call(Method::Ack, &v1::AckRequest { up_to_seq: fetched.head_seq }).await?;
    Ok(fetched.head_seq)
}
