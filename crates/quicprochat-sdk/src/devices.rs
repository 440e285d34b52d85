//! The devices of this account: linking a new device (a new profile becomes
//! a device of an existing account through the server's link relay, end to
//! end: `quicprochat_core::link`), approving a link on the device keyed by
//! the account key, listing and removing devices, and keeping the groups in
//! step with the account's devices (`reconcile`): a device linked since is
//! added to every group, a removed one's leaves removed.

mod reconcile;

pub(crate) use reconcile::Reconciled;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use quicprochat_core::device::{certify_device, check_device_label, verify_certificate};
use quicprochat_core::link::{open_bundle, seal_bundle, LinkBundle, LinkCode, LinkKeyPair, LinkRequest};
use quicprochat_core::{DeviceId, Identity};
use quicprochat_proto::{v1, Method, Status};
use quicprochat_rpc::{PinnedServer, RpcClient};

use crate::client::{ClientOptions, Inner, QpcClient};
use crate::profile::{LinkedDevice, Profile};
use crate::{now_ms, SdkError};

/// How often the approving device asks whether the new device is online,
/// and the new device at most asks whether it was approved.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One device of the account, as `device list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The device id (16 hex digits).
    pub id: String,
    /// The label given when it was linked.
    pub label: String,
    /// When the server registered it (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Whether it is the device this client runs on.
    pub current: bool,
    /// Whether its key is the account key or certified by it. A device
    /// that is neither was not added by this account (a server lying).
    pub certified: bool,
}

/// What approving a link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkApproved {
    /// The new device's id.
    pub device: String,
    /// Its label.
    pub label: String,
    /// The groups it was added to.
    pub groups: usize,
    /// Groups it could not be added to yet (it was not online in time, or
    /// a group refused): the next open of any device of the account retries.
    pub pending: usize,
}

impl QpcClient {
    /// Makes `profile_dir` (which must hold no account) a new device of an
    /// existing account: shows a link code (`show_code`), waits up to `wait`
    /// for a device of the account to approve it, then opens the sealed
    /// bundle, stores the profile and logs in as the new device. The server
    /// relays public keys, a MAC and ciphertext only.
    pub async fn link_device(
        profile_dir: &Path,
        server: SocketAddr,
        label: &str,
        wait: Duration,
        options: ClientOptions,
        show_code: impl FnOnce(&str),
    ) -> Result<QpcClient, SdkError> {
        Profile::refuse_existing(profile_dir)?;
        check_device_label(label).map_err(|problem| SdkError::InvalidInput(format!("device label: {problem}")))?;
        let rpc = RpcClient::connect(server, PinnedServer::new(None), &options.transport, options.call_timeout)
            .await?
            .with_retry_budget(options.retry_budget);
        let (device, code, keys) = (Identity::generate()?, LinkCode::generate(), LinkKeyPair::generate()?);
        let request = LinkRequest {
            device_key: device.public_key().to_vec(),
            link_key: keys.public_key().to_vec(),
            label: label.to_owned(),
        };
        let start = v1::LinkStartRequest {
            link_id: code.link_id.to_vec().into(),
            mac: code.authenticate(&request)?.into(),
            wait_proof_hash: code.wait_proof_hash()?.into(),
            device_key: request.device_key.clone().into(),
            link_key: request.link_key.clone().into(),
            label: request.label.clone(),
        };
        let started: v1::LinkStartResponse = rpc.call(Method::LinkStart, &start).await?;
        show_code(&code.encode());
        let wait = wait.min(Duration::from_millis(started.expires_in_ms));
        let approved = wait_for_approval(&rpc, &code, wait).await?;
        let bundle = open_bundle(&code, &keys, device.public_key(), &approved.sealed)?;
        if bundle.username != approved.username {
            return Err(SdkError::Refused(format!(
                "the link was approved for {:?} but sealed for {:?}",
                approved.username, bundle.username
            )));
        }
        verify_certificate(&bundle.account_key, &bundle.username, device.public_key(), &bundle.certificate)
            .map_err(|error| SdkError::Refused(format!("the approved device certificate does not verify: {error}")))?;
        let profile = Profile {
            dir: profile_dir.to_path_buf(),
            username: bundle.username,
            server,
            server_fingerprint: rpc.server_fingerprint(),
            identity: device,
            link: Some(LinkedDevice { account_key: bundle.account_key, certificate: bundle.certificate }),
        };
        profile.save()?;
        rpc.close().await;
        // The approving device adds this one to every group of the account
        // at once, one key package each: start with a full upload.
        let batch = options.key_package_batch.max(options.linked_key_package_batch);
        QpcClient::open(profile_dir, ClientOptions { key_package_batch: batch, ..options }).await
    }

    /// Approves the link code `code` shown by a new device: checks that the
    /// server relayed the new device's request unchanged, certifies its key
    /// with the account key, registers it and sends it the sealed bundle.
    /// Then waits up to `wait` for the new device to come online and adds
    /// it to every group of the account. Only the device keyed by the
    /// account key (the account's first device) holds that key.
    pub async fn approve_device(&self, code: &str, wait: Duration) -> Result<LinkApproved, SdkError> {
        let code = LinkCode::parse(code.trim())?;
        let inner = self.inner.lock().await;
        if inner.mls.identity().public_key() != inner.account_key.as_slice() {
            return Err(SdkError::InvalidInput(
                "only the account's first device holds the account key that certifies devices; approve there".into(),
            ));
        }
        let fetch = v1::LinkFetchRequest { link_id: code.link_id.to_vec().into() };
        let fetched: v1::LinkFetchResponse =
            inner.rpc().call(Method::LinkFetch, &fetch).await.map_err(|error| match error.status() {
                Some(Status::NotFound) => SdkError::InvalidInput(
                    "no pending link has this code: it expired, was approved already or was mistyped".into(),
                ),
                _ => error.into(),
            })?;
        let relayed = LinkRequest {
            device_key: fetched.device_key.to_vec(),
            link_key: fetched.link_key.to_vec(),
            label: fetched.label,
        };
        code.check(&relayed, &fetched.mac).map_err(|_| {
            SdkError::Refused("the link code does not match what the server relayed; nothing was approved".into())
        })?;
        relayed.check_form()?;
        let username = inner.username.clone();
        let certificate = certify_device(inner.mls.identity(), &username, &relayed.device_key)?;
        let add = v1::AddDeviceRequest {
            device_key: relayed.device_key.clone().into(),
            certificate: certificate.clone().into(),
            label: relayed.label.clone(),
        };
        let _: v1::AddDeviceResponse = inner.rpc().call(Method::AddDevice, &add).await?;
        let bundle = LinkBundle { username, account_key: inner.account_key.clone(), certificate };
        let sealed = seal_bundle(&code, &relayed, &bundle)?;
        let approve = v1::LinkApproveRequest { link_id: code.link_id.to_vec().into(), sealed: sealed.into() };
        let _: v1::LinkApproveResponse = inner.rpc().call(Method::LinkApprove, &approve).await?;
        drop(inner);
        // Approved: from here on nothing fails the approval; what could not
        // be done yet is `pending` (the next open of any device retries).
        let device = DeviceId::of_key(&relayed.device_key);
        let mut fetched = HashMap::new();
        if let Some(package) = self.wait_for_key_package(device, wait).await {
            fetched.insert(device, package);
        }
        let mut inner = self.inner.lock().await;
        let outcome = match inner.reconcile_devices(fetched).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(%error, "the new device is approved; its groups wait for the next reconcile");
                Reconciled { pending: 1, ..Reconciled::default() }
            }
        };
        Ok(LinkApproved {
            device: device.to_hex(),
            label: relayed.label,
            groups: outcome.added,
            pending: outcome.pending,
        })
    }

    /// Waits (up to `wait`) until `device` of our account has uploaded key
    /// packages, and returns the one fetched to find out (the first group
    /// uses it). `None` when it did not come online in time: the groups it
    /// misses are added on a later reconcile. The client is not locked
    /// between two tries.
    async fn wait_for_key_package(&self, device: DeviceId, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let fetched = {
                let mut inner = self.inner.lock().await;
                let username = inner.username.clone();
                inner.fetch_key_packages(&username, Some(device)).await
            };
            match fetched {
                Ok(mut fetched) => return fetched.pop(),
                Err(error) if error.status() == Some(Status::NotFound) => {}
                Err(error) => tracing::debug!(%error, "waiting for the new device's key packages"),
            }
            if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
                tracing::info!(%device, "the new device did not come online in time; its groups wait");
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// This device's id (16 hex digits), as `device list` shows it.
    pub async fn device_id(&self) -> String {
        self.inner.lock().await.mls.device_id().to_hex()
    }

    /// The account's current devices, oldest first, each certificate checked.
    pub async fn devices(&self) -> Result<Vec<DeviceSummary>, SdkError> {
        let mut inner = self.inner.lock().await;
        inner.list_devices().await
    }

    /// Removes a device of this account (`id`, as `device list` shows it):
    /// the server stops serving it at once, and every group it is in gets a
    /// commit removing its leaf, so it reads nothing sent afterwards.
    /// Returns how many groups it was removed from.
    pub async fn remove_device(&self, id: &str) -> Result<usize, SdkError> {
        let device = DeviceId::from_hex(id.trim())
            .ok_or_else(|| SdkError::InvalidInput(format!("{id:?} is not a device id (16 hex digits)")))?;
        let mut inner = self.inner.lock().await;
        if device == inner.mls.device_id() {
            return Err(SdkError::InvalidInput(
                "this is the device you are on; remove it from another device of the account".into(),
            ));
        }
        let request = v1::RemoveDeviceRequest { device_id: device.as_bytes().to_vec().into() };
        let _: v1::RemoveDeviceResponse = inner.rpc().call(Method::RemoveDevice, &request).await?;
        // Kept here, whatever the server lists later: a removed device is
        // never added back by this device, and its leaves go now.
        inner.store.note_removed_device(device.as_bytes(), now_ms())?;
        let outcome = inner.reconcile_devices(HashMap::new()).await?;
        if outcome.pending > 0 {
            tracing::warn!(pending = outcome.pending, "some groups still hold the removed device");
        }
        Ok(outcome.removed)
    }
}

impl Inner {
    /// The account's current devices, each certificate checked against our
    /// account key. (`&mut`: a future holding `&Inner` would not be `Send`.)
    pub(crate) async fn list_devices(&mut self) -> Result<Vec<DeviceSummary>, SdkError> {
        let listed: v1::ListDevicesResponse = self.rpc().call(Method::ListDevices, &v1::ListDevicesRequest {}).await?;
        let own = self.mls.device_id();
        Ok(listed
            .devices
            .into_iter()
            .map(|device| {
                let id = DeviceId::of_key(&device.device_key);
                let certified = device.device_key.as_ref() == self.account_key.as_slice()
                    || verify_certificate(&self.account_key, &self.username, &device.device_key, &device.certificate)
                        .is_ok();
                DeviceSummary {
                    id: id.to_hex(),
                    label: device.label,
                    created_at_ms: device.created_at_ms,
                    current: id == own,
                    certified,
                }
            })
            .collect())
    }
}

/// Asks the relay until the link is approved or `wait` is over.
async fn wait_for_approval(rpc: &RpcClient, code: &LinkCode, wait: Duration) -> Result<v1::LinkWaitResponse, SdkError> {
    let started = now_ms();
    let deadline = tokio::time::Instant::now() + wait;
    let request = v1::LinkWaitRequest { link_id: code.link_id.to_vec().into(), proof: code.wait_proof()?.into() };
    let not_approved = || SdkError::NotApproved { waited_secs: now_ms().saturating_sub(started) / 1000 };
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(not_approved());
        }
        let asked = tokio::time::Instant::now();
        match rpc.call::<_, v1::LinkWaitResponse>(Method::LinkWait, &request).await {
            Ok(response) if response.approved => return Ok(response),
            // The server held the request as long as it would: ask again.
            Ok(_) => {}
            Err(error) if error.status() == Some(Status::NotFound) => return Err(not_approved()),
            Err(error) if error.is_retryable() => tracing::debug!(%error, "waiting for the link's approval"),
            Err(error) => return Err(error.into()),
        }
        // A server that answers at once is not asked in a tight loop.
        tokio::time::sleep_until(asked + POLL_INTERVAL).await;
    }
}
