//! Keeping every group in step with the account's devices: the devices
//! of ours that are current (listed by the server, certified, and not
//! removed from here) are added where they are missing, one commit per
//! group; the leaves of the others are removed. It runs after an approval
//! or a removal, after a group is made, and at open when the device set
//! changed or a group was joined since the last complete run.

use std::collections::HashMap;

use quicprochat_core::DeviceId;
use quicprochat_proto::Status;

use crate::client::{Inner, Local};
use crate::local_store::Conversation;
use crate::SdkError;

/// The `meta` key of the device set groups were last brought in step with.
const RECONCILED_DEVICES: &str = "reconciled_devices";
/// The `meta` counter of requests for a reconcile at the next open.
const RECONCILE_REQUESTS: &str = "reconcile_requests";

/// A digest of a set of device ids (any order), to notice that it changed
/// (never 0, the value that asks for a reconcile).
fn devices_digest(devices: &[DeviceId]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut sorted = devices.to_vec();
    sorted.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    sorted.hash(&mut hasher);
    hasher.finish().max(1)
}

/// The outcome of [`Inner::reconcile_devices`]: groups changed.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    pub(crate) added: usize,
    pub(crate) removed: usize,
    pub(crate) pending: usize,
}

impl Inner {
    /// Brings every active group in step with the account's devices: adds
    /// each current device of ours that is not a leaf (one commit per
    /// group, all missing devices at once) and removes the leaves of our
    /// devices that are no longer current. `fetched` holds key packages of
    /// our devices fetched already (each used once).
    pub(crate) async fn reconcile_devices(
        &mut self,
        fetched: HashMap<DeviceId, Vec<u8>>,
    ) -> Result<Reconciled, SdkError> {
        let current = self.current_devices().await?;
        self.reconcile_recorded(&current, fetched).await
    }

    /// [`Inner::reconcile_with`], recorded as complete for `current` unless
    /// something is left or a new one was asked for while it ran (a group
    /// joined meanwhile).
    async fn reconcile_recorded(
        &mut self,
        current: &[DeviceId],
        fetched: HashMap<DeviceId, Vec<u8>>,
    ) -> Result<Reconciled, SdkError> {
        let requested = self.store.meta(RECONCILE_REQUESTS)?;
        let outcome = self.reconcile_with(current, fetched).await?;
        if outcome.pending == 0 && self.store.meta(RECONCILE_REQUESTS)? == requested {
            self.store.set_meta(RECONCILED_DEVICES, devices_digest(current))?;
        }
        Ok(outcome)
    }

    /// At open: [`Inner::reconcile_devices`] when the account's devices
    /// changed since the last complete one (one `ListDevices` call otherwise).
    pub(crate) async fn reconcile_devices_if_changed(&mut self) -> Result<(), SdkError> {
        let current = self.current_devices().await?;
        if self.store.meta(RECONCILED_DEVICES)? == devices_digest(&current) {
            return Ok(());
        }
        self.reconcile_recorded(&current, HashMap::new()).await.map(drop)
    }

    /// Our account's current devices: those the server lists whose
    /// certificates verify, but none this device removed. A list without
    /// this very device is the server's error (or lie): refused.
    async fn current_devices(&mut self) -> Result<Vec<DeviceId>, SdkError> {
        let removed = self.store.removed_devices()?;
        let current: Vec<DeviceId> = self
            .list_devices()
            .await?
            .into_iter()
            .filter(|device| device.certified)
            .filter_map(|device| DeviceId::from_hex(&device.id))
            .filter(|device| !removed.iter().any(|gone| gone.as_slice() == device.as_bytes()))
            .collect();
        if !current.contains(&self.mls.device_id()) {
            return Err(SdkError::Refused("the server's list of our devices leaves out this device".into()));
        }
        Ok(current)
    }

    async fn reconcile_with(
        &mut self,
        current: &[DeviceId],
        fetched: HashMap<DeviceId, Vec<u8>>,
    ) -> Result<Reconciled, SdkError> {
        let mut outcome = Reconciled::default();
        let mut packages = OwnPackages { fetched, without: Vec::new() };
        for conversation in self.store.conversations()?.into_iter().filter(|c| c.active) {
            let group_id = conversation.group_id.clone();
            if !self.mls.has_group(&group_id)?
                || !self.mls.is_active(&group_id)?
                || self.store.broken(&group_id)?.is_some()
            {
                continue;
            }
            let ours = self.mls.devices_of(&group_id, &self.username)?;
            let gone: Vec<DeviceId> = ours.iter().copied().filter(|device| !current.contains(device)).collect();
            if !gone.is_empty() {
                match self.submit_commit_with_retry(&conversation, |mls| mls.remove_devices(&group_id, &gone)).await {
                    Ok(()) => outcome.removed += 1,
                    Err(error) => {
                        tracing::warn!(group = %conversation.display_name(), %error, "removed device left in group");
                        outcome.pending += 1;
                    }
                }
            }
            let missing: Vec<DeviceId> = current.iter().copied().filter(|device| !ours.contains(device)).collect();
            if !missing.is_empty() {
                match self.add_own_devices(&conversation, &missing, &mut packages).await {
                    Ok(true) => outcome.added += 1,
                    Ok(false) => outcome.pending += 1,
                    Err(error) => {
                        tracing::warn!(group = %conversation.display_name(), %error, "own device not added to group");
                        outcome.pending += 1;
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// Adds `devices` of our own account to a group, one commit. Devices
    /// without a key package yet (not online since they were linked) are
    /// left for later; `false` when none could be added.
    async fn add_own_devices(
        &mut self,
        conversation: &Conversation,
        devices: &[DeviceId],
        packages: &mut OwnPackages,
    ) -> Result<bool, SdkError> {
        let username = self.username.clone();
        let mut adding: Vec<(DeviceId, Vec<u8>)> = Vec::new();
        for device in devices {
            if packages.without.contains(device) {
                continue;
            }
            if let Some(package) = packages.fetched.remove(device) {
                adding.push((*device, package));
                continue;
            }
            match self.fetch_key_packages(&username, Some(*device)).await {
                Ok(fetched) => adding.extend(fetched.into_iter().map(|package| (*device, package))),
                Err(error) if error.status() == Some(Status::NotFound) => {
                    tracing::debug!(%device, "own device has no key package yet");
                    packages.without.push(*device);
                }
                Err(error) => return Err(error),
            }
        }
        if adding.is_empty() {
            return Ok(false);
        }
        let group_id = conversation.group_id.clone();
        let own = self.username.clone();
        self.submit_commit_with_retry(conversation, |mls| {
            // Rebuilt after a lost epoch: another device of ours may have
            // added some of them meanwhile.
            let present = mls.devices_of(&group_id, &own)?;
            let still: Vec<Vec<u8>> = adding
                .iter()
                .filter(|(device, _)| !present.contains(device))
                .map(|(_, package)| package.clone())
                .collect();
            if still.is_empty() {
                return Ok(None);
            }
            mls.add_members(&group_id, &still).map(Some)
        })
        .await?;
        Ok(true)
    }

    /// After creating a group or direct conversation: our other current
    /// devices join it at once. Best effort: what fails is left to the
    /// reconcile of the next open.
    pub(crate) async fn add_our_other_devices(&mut self, conversation: &Conversation) {
        let outcome = async {
            let own = self.mls.device_id();
            let others: Vec<DeviceId> =
                self.current_devices().await?.into_iter().filter(|device| *device != own).collect();
            if others.is_empty() {
                return Ok(true);
            }
            let mut packages = OwnPackages::default();
            self.add_own_devices(conversation, &others, &mut packages).await.map(|_| packages.without.is_empty())
        }
        .await;
        let complete = match outcome {
            Ok(complete) => complete,
            Err(error) => {
                tracing::warn!(group = %conversation.display_name(), %error, "our other devices not added yet");
                false
            }
        };
        if !complete {
            if let Err(error) = self.reconcile_at_next_open() {
                tracing::warn!(%error, "cannot mark the next open to reconcile");
            }
        }
    }
}

/// Key packages of our own devices during one reconcile: those fetched
/// already (each used once), and the devices found without any, not asked
/// again in the same run.
#[derive(Default)]
struct OwnPackages {
    fetched: HashMap<DeviceId, Vec<u8>>,
    without: Vec<DeviceId>,
}

impl Local {
    /// Makes the next open reconcile every group, whether or not the
    /// account's devices changed: a group was joined or made, perhaps
    /// without every device of ours (one had no key package then).
    pub(crate) fn reconcile_at_next_open(&self) -> Result<(), SdkError> {
        let requests = self.store.meta(RECONCILE_REQUESTS)?;
        self.store.set_metas(&[(RECONCILE_REQUESTS, requests.wrapping_add(1)), (RECONCILED_DEVICES, 0)])?;
        Ok(())
    }
}
