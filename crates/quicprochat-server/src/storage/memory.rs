//! [`MemoryStore`]: the [`Store`] semantics in process memory, for domain
//! tests and fuzzing. Nothing survives the process; one mutex makes every
//! operation atomic. Each write validates everything before mutating, so a
//! failed call leaves no partial state (the SQLite store gets the same from
//! transactions).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use quicprochat_core::DeviceId;

use crate::storage::RemoteGroup;

use super::{
    queue_name, Account, AccountCreation, CommitApplied, CommitResult, CommitWrite, Delivery, Device, DeviceAdded,
    EnqueueOutcome, EntryKind, Expired, FetchBudget, FetchedQueue, GroupCreation, GroupLogEntry, GroupRecord,
    GroupRoster, GroupSnapshot, GroupSummary, InviteUse, InvitedAccountCreation, KeyPackageServed, KeyPackageStock,
    KeyPackagesAdded, MessageRecord, NewGroup, NewKeyPackage, NewMessage, ProposalResult, ProposalWrite, QueueItem,
    Store, StoreError, TakenKeyPackage, TrimmedQueues, FIRST_DEVICE_LABEL, TRIM_ENTRY_BUDGET,
};
use super::{DeviceRemoval, NewDevice};
use super::{FedStream, InboundApply, NewOutboundEntry, OutboundAppend, OutboundEntry};

mod federation;

/// In-memory [`Store`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The domain recorded by `pin_domain`.
    domain: Option<String>,
    accounts: BTreeMap<String, Account>,
    /// Devices by queue name.
    devices: BTreeMap<String, DeviceRow>,
    invites: HashMap<String, InviteRow>,
    /// Key package stocks by (username, device id).
    key_packages: HashMap<(String, DeviceId), KeyPackageRow>,
    groups: BTreeMap<Vec<u8>, GroupRecord>,
    messages: HashMap<u64, StoredMessage>,
    message_ids: HashMap<(String, Vec<u8>), MessageRecord>,
    queues: HashMap<String, BTreeMap<u64, u64>>,
    last_message_row: u64,
    /// Key packages served and not used, by (requester, init key): when.
    served: HashMap<(String, Vec<u8>), u64>,
    federation: federation::FederationTables,
}

#[derive(Debug)]
struct DeviceRow {
    device: Device,
    last_seq: u64,
}

#[derive(Debug)]
struct InviteRow {
    uses_left: u32,
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct KeyPackageRow {
    ordinary: VecDeque<NewKeyPackage>,
    last_resort: Option<NewKeyPackage>,
}

#[derive(Debug)]
struct StoredMessage {
    message: NewMessage,
    references: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Replaces a group's stored snapshot with bytes no view decodes from.
    #[cfg(test)]
    pub(crate) fn corrupt_snapshot_for_tests(&self, group_id: &[u8]) {
        if let Some(group) = self.inner.lock().expect("store lock").groups.get_mut(group_id) {
            group.state = b"not a view".to_vec();
        }
    }
}

/// `names` sorted, each once (as the SQLite store lists them).
fn sorted_unique(names: &[String]) -> Vec<String> {
    names.iter().cloned().collect::<BTreeSet<String>>().into_iter().collect()
}

impl Inner {
    fn stock(&self, username: &str, device_id: &DeviceId) -> KeyPackageStock {
        self.key_packages
            .get(&(username.to_owned(), *device_id))
            .map(|row| KeyPackageStock { count: row.ordinary.len() as u64, has_last_resort: row.last_resort.is_some() })
            .unwrap_or_default()
    }

    /// The outcome of using `token` at `now_ms`, without using it.
    fn check_invite(&self, token: &str, now_ms: u64) -> InviteUse {
        match self.invites.get(token) {
            None => InviteUse::Unknown,
            Some(row) if row.uses_left == 0 => InviteUse::Exhausted,
            Some(InviteRow { expires_at_ms: Some(expires_at_ms), .. }) if now_ms >= *expires_at_ms => {
                InviteUse::Expired
            }
            Some(row) => InviteUse::Consumed { remaining: row.uses_left - 1 },
        }
    }

    fn take_invite_use(&mut self, token: &str) {
        if let Some(row) = self.invites.get_mut(token) {
            row.uses_left = row.uses_left.saturating_sub(1);
        }
    }

    fn insert_account(&mut self, username: &str, identity_key: &[u8], created_at_ms: u64) -> AccountCreation {
        if self.accounts.contains_key(username) {
            return AccountCreation::UsernameTaken;
        }
        let account = Account { username: username.to_owned(), identity_key: identity_key.to_vec(), disabled: false };
        self.accounts.insert(username.to_owned(), account);
        let device = Device {
            queue: username.to_owned(),
            username: username.to_owned(),
            device_id: DeviceId::of_key(identity_key),
            device_key: identity_key.to_vec(),
            certificate: None,
            label: FIRST_DEVICE_LABEL.to_owned(),
            created_at_ms,
            removed_at_ms: None,
        };
        self.devices.insert(username.to_owned(), DeviceRow { device, last_seq: 0 });
        AccountCreation::Created
    }

    /// The device row of a queue that may receive (not removed).
    fn receiving_device(&mut self, queue: &str) -> Option<&mut DeviceRow> {
        self.devices.get_mut(queue).filter(|row| row.device.removed_at_ms.is_none())
    }

    fn duplicate_of(&self, message: &NewMessage) -> Option<EnqueueOutcome> {
        let key = (message.sender.clone(), message.message_id.clone());
        self.message_ids.get(&key).map(|record| EnqueueOutcome {
            message_row: record.message_row,
            stored_at_ms: record.stored_at_ms,
            duplicate: true,
            deliveries: Vec::new(),
        })
    }

    fn check_recipients(&self, recipients: &[String]) -> Result<(), StoreError> {
        // A removed device gets nothing (`insert_fanout` skips it); an unknown queue fails.
        match recipients.iter().find(|r| !self.devices.contains_key(*r)) {
            Some(unknown) => Err(StoreError::UnknownAccount { username: unknown.clone() }),
            None => Ok(()),
        }
    }

    /// Stores `message` and queues it; recipients must have been checked.
    /// `record_id` registers `(sender, message_id)` for idempotency.
    fn insert_fanout(&mut self, message: &NewMessage, recipients: &[String], record_id: bool) -> EnqueueOutcome {
        self.last_message_row += 1;
        let row = self.last_message_row;
        let unique: BTreeSet<&String> = recipients.iter().collect();
        let mut deliveries = Vec::with_capacity(unique.len());
        for username in unique {
            if let Some(device) = self.receiving_device(username) {
                device.last_seq += 1;
                let seq = device.last_seq;
                self.queues.entry(username.clone()).or_default().insert(seq, row);
                deliveries.push(Delivery { queue: username.clone(), seq });
            }
        }
        if !deliveries.is_empty() {
            self.messages.insert(row, StoredMessage { message: message.clone(), references: deliveries.len() as u64 });
        }
        if record_id {
            self.message_ids.insert(
                (message.sender.clone(), message.message_id.clone()),
                MessageRecord {
                    message_row: row,
                    group_id: message.group_id.clone(),
                    kind: message.kind,
                    epoch: message.epoch,
                    stored_at_ms: message.stored_at_ms,
                },
            );
        }
        EnqueueOutcome { message_row: row, stored_at_ms: message.stored_at_ms, duplicate: false, deliveries }
    }

    /// Deletes `username`'s entries up to `up_to_seq` and the messages no
    /// queue references any more; how many entries went.
    fn ack(&mut self, username: &str, up_to_seq: u64) -> u64 {
        let Some(queue) = self.queues.get_mut(username) else {
            return 0;
        };
        let kept = queue.split_off(&up_to_seq.saturating_add(1));
        let acked = std::mem::replace(queue, kept);
        for row in acked.values() {
            let unreferenced = match self.messages.get_mut(row) {
                Some(stored) => {
                    stored.references = stored.references.saturating_sub(1);
                    stored.references == 0
                }
                None => false,
            };
            if unreferenced {
                self.messages.remove(row);
            }
        }
        acked.len() as u64
    }

    fn queue_item(&self, seq: u64, row: u64) -> Result<QueueItem, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { operation: "fetch", detail };
        let stored = self
            .messages
            .get(&row)
            .ok_or_else(|| corrupt(format!("queue entry {seq} references missing message {row}")))?;
        let message = &stored.message;
        let (group_name, group_kind) = match self.groups.get(&message.group_id) {
            Some(group) => (group.name.clone(), group.kind),
            None => match self.federation.remote_groups.get(&message.group_id) {
                Some((_, name, kind)) => (name.clone(), *kind),
                None => return Err(corrupt(format!("message {row} references a missing group"))),
            },
        };
        Ok(QueueItem {
            seq,
            message_id: message.message_id.clone(),
            group_id: message.group_id.clone(),
            group_name,
            group_kind,
            sender: message.sender.clone(),
            kind: message.kind,
            payload: message.payload.clone(),
            stored_at_ms: message.stored_at_ms,
            epoch: message.epoch,
        })
    }
}

impl Store for MemoryStore {
    fn create_account(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
    ) -> Result<AccountCreation, StoreError> {
        Ok(self.lock()?.insert_account(username, identity_key, created_at_ms))
    }

    fn get_account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.lock()?.accounts.get(username).cloned())
    }

    fn set_account_disabled(&self, username: &str, disabled: bool) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let row = inner
            .accounts
            .get_mut(username)
            .ok_or_else(|| StoreError::UnknownAccount { username: username.to_owned() })?;
        row.disabled = disabled;
        Ok(())
    }

    fn devices(&self, username: &str) -> Result<Vec<Device>, StoreError> {
        let inner = self.lock()?;
        let mut devices: Vec<Device> = inner
            .devices
            .values()
            .filter(|row| row.device.username == username)
            .map(|row| row.device.clone())
            .collect();
        devices.sort_by(|a, b| (a.created_at_ms, &a.queue).cmp(&(b.created_at_ms, &b.queue)));
        Ok(devices)
    }

    fn device(&self, queue: &str) -> Result<Option<Device>, StoreError> {
        Ok(self.lock()?.devices.get(queue).map(|row| row.device.clone()))
    }

    fn device_by_key(&self, username: &str, device_key: &[u8]) -> Result<Option<Device>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .devices
            .values()
            .find(|row| row.device.username == username && row.device.device_key == device_key)
            .map(|row| row.device.clone()))
    }

    fn add_device(&self, device: &NewDevice, max_devices: u64) -> Result<DeviceAdded, StoreError> {
        let mut inner = self.lock()?;
        if !inner.accounts.contains_key(&device.username) {
            return Ok(DeviceAdded::UnknownAccount);
        }
        let of_account = || inner.devices.values().filter(|row| row.device.username == device.username);
        if of_account().any(|row| row.device.device_key == device.device_key) {
            return Ok(DeviceAdded::KeyInUse);
        }
        let current = of_account().filter(|row| row.device.removed_at_ms.is_none()).count() as u64;
        if current >= max_devices {
            return Ok(DeviceAdded::TooMany { current });
        }
        let queue = queue_name(&device.username, &device.device_id, false);
        let row = DeviceRow {
            device: Device {
                queue: queue.clone(),
                username: device.username.clone(),
                device_id: device.device_id,
                device_key: device.device_key.clone(),
                certificate: Some(device.certificate.clone()),
                label: device.label.clone(),
                created_at_ms: device.created_at_ms,
                removed_at_ms: None,
            },
            last_seq: 0,
        };
        inner.devices.insert(queue.clone(), row);
        Ok(DeviceAdded::Added { queue })
    }

    fn remove_device(&self, username: &str, device_id: &DeviceId, now_ms: u64) -> Result<DeviceRemoval, StoreError> {
        let mut inner = self.lock()?;
        let current = |row: &DeviceRow| row.device.username == username && row.device.removed_at_ms.is_none();
        let count = inner.devices.values().filter(|row| current(row)).count();
        let Some(row) = inner.devices.values_mut().find(|row| current(row) && row.device.device_id == *device_id)
        else {
            return Ok(DeviceRemoval::NotFound);
        };
        if count <= 1 {
            return Ok(DeviceRemoval::LastDevice);
        }
        row.device.removed_at_ms = Some(now_ms);
        let queue = row.device.queue.clone();
        inner.ack(&queue, u64::MAX);
        inner.key_packages.remove(&(username.to_owned(), *device_id));
        Ok(DeviceRemoval::Removed { queue })
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        Ok(self.lock()?.accounts.values().cloned().collect())
    }

    fn disabled_accounts(&self) -> Result<Vec<String>, StoreError> {
        let state = self.lock()?;
        let mut disabled: Vec<String> = state
            .accounts
            .values()
            .filter(|account| account.disabled)
            .map(|account| account.username.clone())
            .collect();
        disabled.sort();
        Ok(disabled)
    }

    fn fed_stream(&self, peer: &str) -> Result<Option<FedStream>, StoreError> {
        Ok(self.lock()?.federation.fed_stream(peer))
    }

    fn remote_group(&self, group_id: &[u8]) -> Result<Option<RemoteGroup>, StoreError> {
        let state = self.lock()?;
        Ok(state.federation.remote_groups.get(group_id).map(|(hub, name, kind)| RemoteGroup {
            group_id: group_id.to_vec(),
            hub: hub.clone(),
            name: name.clone(),
            kind: *kind,
        }))
    }

    fn fed_streams(&self) -> Result<Vec<FedStream>, StoreError> {
        Ok(self.lock()?.federation.fed_streams())
    }

    fn append_outbound(&self, peer: &str, entries: &[NewOutboundEntry]) -> Result<u64, StoreError> {
        Ok(self.lock()?.federation.append_outbound(peer, entries))
    }

    fn read_outbound(
        &self,
        peer: &str,
        from_seq: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboundEntry>, StoreError> {
        Ok(self.lock()?.federation.read_outbound(peer, from_seq, max_entries, max_bytes))
    }

    fn ack_outbound(&self, peer: &str, through_seq: u64) -> Result<(), StoreError> {
        self.lock()?.federation.ack_outbound(peer, through_seq);
        Ok(())
    }

    fn expire_outbound(&self, peer: &str, before_ms: u64) -> Result<(u64, u64), StoreError> {
        Ok(self.lock()?.federation.expire_outbound(peer, before_ms))
    }

    fn set_outbound_instance(&self, peer: &str, instance: u64) -> Result<(), StoreError> {
        self.lock()?.federation.set_outbound_instance(peer, instance);
        Ok(())
    }

    fn apply_inbound(&self, apply: &InboundApply<'_>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.lock()?.apply_inbound(apply)
    }

    fn pin_domain(&self, domain: &str) -> Result<Option<String>, StoreError> {
        let mut state = self.lock()?;
        match &state.domain {
            Some(recorded) if recorded != domain => Ok(Some(recorded.clone())),
            Some(_) => Ok(None),
            None => {
                state.domain = Some(domain.to_owned());
                Ok(None)
            }
        }
    }

    fn create_invite(
        &self,
        token: &str,
        uses: u32,
        expires_at_ms: Option<u64>,
        _created_at_ms: u64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.invites.contains_key(token) {
            return Err(StoreError::Conflict {
                operation: "create_invite",
                detail: "invite token already exists".to_owned(),
            });
        }
        inner.invites.insert(token.to_owned(), InviteRow { uses_left: uses, expires_at_ms });
        Ok(())
    }

    fn consume_invite(&self, token: &str, now_ms: u64) -> Result<InviteUse, StoreError> {
        let mut inner = self.lock()?;
        let outcome = inner.check_invite(token, now_ms);
        if matches!(outcome, InviteUse::Consumed { .. }) {
            inner.take_invite_use(token);
        }
        Ok(outcome)
    }

    fn create_account_with_invite(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
        invite_token: &str,
    ) -> Result<InvitedAccountCreation, StoreError> {
        let mut inner = self.lock()?;
        let remaining_uses = match inner.check_invite(invite_token, created_at_ms) {
            InviteUse::Consumed { remaining } => remaining,
            InviteUse::Unknown => return Ok(InvitedAccountCreation::InviteUnknown),
            InviteUse::Expired => return Ok(InvitedAccountCreation::InviteExpired),
            InviteUse::Exhausted => return Ok(InvitedAccountCreation::InviteExhausted),
        };
        if inner.insert_account(username, identity_key, created_at_ms) == AccountCreation::UsernameTaken {
            return Ok(InvitedAccountCreation::UsernameTaken);
        }
        inner.take_invite_use(invite_token);
        Ok(InvitedAccountCreation::Created { remaining_uses })
    }

    fn add_key_packages(
        &self,
        username: &str,
        device_id: &DeviceId,
        key_packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        max_stock: u64,
    ) -> Result<KeyPackagesAdded, StoreError> {
        let mut inner = self.lock()?;
        inner.check_recipients(&[username.to_owned()])?;
        let key = (username.to_owned(), *device_id);
        let count = inner.stock(username, device_id).count;
        if count.saturating_add(key_packages.len() as u64) > max_stock {
            return Ok(KeyPackagesAdded::StockFull { count });
        }
        let replaced = last_resort.and_then(|_| inner.key_packages.get(&key)?.last_resort.as_ref());
        let mut in_use: BTreeSet<&[u8]> = inner
            .key_packages
            .values()
            .flat_map(|row| row.ordinary.iter().chain(row.last_resort.as_ref()))
            .filter(|stored| Some(*stored) != replaced)
            .map(|stored| stored.init_key.as_slice())
            .collect();
        if !key_packages.iter().chain(last_resort).all(|new| in_use.insert(&new.init_key)) {
            return Ok(KeyPackagesAdded::InitKeyInUse);
        }
        let row = inner.key_packages.entry(key).or_default();
        row.ordinary.extend(key_packages.iter().cloned());
        if let Some(last_resort) = last_resort {
            row.last_resort = Some(last_resort.clone());
        }
        Ok(KeyPackagesAdded::Stored(inner.stock(username, device_id)))
    }

    fn take_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<TakenKeyPackage>, StoreError> {
        let mut inner = self.lock()?;
        let Some(row) = inner.key_packages.get_mut(&(username.to_owned(), *device_id)) else {
            return Ok(None);
        };
        if let Some(taken) = row.ordinary.pop_front() {
            return Ok(Some(TakenKeyPackage { key_package: taken.data, last_resort: false }));
        }
        Ok(row.last_resort.as_ref().map(|kept| TakenKeyPackage { key_package: kept.data.clone(), last_resort: true }))
    }

    fn record_served(&self, served: &KeyPackageServed, forget_before_ms: u64) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.served.retain(|(requester, _), at| requester != &served.requester || *at >= forget_before_ms);
        inner.served.insert((served.requester.clone(), served.init_key.clone()), served.served_at_ms);
        Ok(())
    }

    fn was_served(&self, requester: &str, init_key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.lock()?.served.contains_key(&(requester.to_owned(), init_key.to_vec())))
    }

    fn last_resort_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()?
            .key_packages
            .get(&(username.to_owned(), *device_id))
            .and_then(|row| row.last_resort.as_ref().map(|kept| kept.data.clone())))
    }

    fn key_package_stock(&self, username: &str, device_id: &DeviceId) -> Result<KeyPackageStock, StoreError> {
        Ok(self.lock()?.stock(username, device_id))
    }

    fn create_group(&self, group: &NewGroup) -> Result<GroupCreation, StoreError> {
        let mut inner = self.lock()?;
        if inner.groups.contains_key(&group.group_id) {
            return Ok(GroupCreation::IdTaken);
        }
        inner.check_recipients(std::slice::from_ref(&group.creator))?;
        let members: BTreeSet<String> = group.members.iter().cloned().collect();
        let record = GroupRecord {
            group_id: group.group_id.clone(),
            name: group.name.clone(),
            kind: group.kind,
            creator: group.creator.clone(),
            epoch: group.epoch,
            state_version: 0,
            state: group.state.clone(),
            snapshot_through: 0,
            log: Vec::new(),
            members: members.into_iter().collect(),
            leaving: Vec::new(),
            devices: sorted_unique(&group.devices),
            created_at_ms: group.created_at_ms,
        };
        inner.groups.insert(group.group_id.clone(), record);
        Ok(GroupCreation::Created)
    }

    fn get_group(&self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
        Ok(self.lock()?.groups.get(group_id).cloned())
    }

    fn group_roster(&self, group_id: &[u8]) -> Result<Option<GroupRoster>, StoreError> {
        Ok(self.lock()?.groups.get(group_id).cloned().map(GroupRoster::from))
    }

    fn groups_of(&self, username: &str) -> Result<Vec<GroupSummary>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .groups
            .values()
            .filter(|group| group.members.iter().any(|m| m == username))
            .map(|group| GroupSummary {
                group_id: group.group_id.clone(),
                name: group.name.clone(),
                kind: group.kind,
                epoch: group.epoch,
            })
            .collect())
    }

    fn apply_commit(&self, write: &CommitWrite) -> Result<CommitResult, StoreError> {
        let mut inner = self.lock()?;
        let group = inner.groups.get(&write.group_id).ok_or_else(|| StoreError::unknown_group(&write.group_id))?;
        if group.epoch != write.expected_epoch {
            return Ok(CommitResult::EpochMismatch { current_epoch: group.epoch });
        }
        if inner.duplicate_of(&write.commit.message).is_some() {
            return Err(StoreError::Conflict {
                operation: "apply_commit",
                detail: "message id already used by this sender".to_owned(),
            });
        }
        inner.check_recipients(&write.commit.recipients)?;
        if let Some(welcome) = &write.welcome {
            inner.check_recipients(&welcome.recipients)?;
        }
        let sender = &write.commit.message.sender;
        if let Some(missing) =
            write.served.iter().find(|key| !inner.served.contains_key(&(sender.clone(), key.to_vec())))
        {
            return Ok(CommitResult::NotServed { init_key: missing.clone() });
        }
        for key in &write.served {
            inner.served.remove(&(sender.clone(), key.clone()));
        }
        let members: BTreeSet<String> = write.new_members.iter().cloned().collect();
        if let Some(group) = inner.groups.get_mut(&write.group_id) {
            group.epoch = write.new_epoch;
            append_to_log(group, EntryKind::Commit, &write.commit.message.payload);
            if let Some(state) = &write.snapshot {
                group.state = state.clone();
                group.snapshot_through = group.log_head();
                group.log.clear();
            }
            group.leaving.clear();
            group.members = members.into_iter().collect();
            group.devices = sorted_unique(&write.new_devices);
        }
        let state_version = inner.groups.get(&write.group_id).map_or(0, |group| group.state_version);
        let welcome = write.welcome.as_ref().map(|w| inner.insert_fanout(&w.message, &w.recipients, false));
        let commit = inner.insert_fanout(&write.commit.message, &write.commit.recipients, true);
        inner.federation.append_all(&write.outbound);
        Ok(CommitResult::Applied(CommitApplied { commit, welcome, state_version }))
    }

    fn apply_proposal(&self, write: &ProposalWrite) -> Result<ProposalResult, StoreError> {
        let mut inner = self.lock()?;
        if let Some(first) = inner.duplicate_of(&write.proposal.message) {
            return Ok(ProposalResult::Applied(first));
        }
        let group = inner.groups.get(&write.group_id).ok_or_else(|| StoreError::unknown_group(&write.group_id))?;
        if group.state_version != write.expected_state_version {
            return Ok(ProposalResult::StateChanged {
                current_epoch: group.epoch,
                current_state_version: group.state_version,
            });
        }
        inner.check_recipients(&write.proposal.recipients)?;
        if let Some(group) = inner.groups.get_mut(&write.group_id) {
            append_to_log(group, EntryKind::Proposal, &write.proposal.message.payload);
            let mut leaving: BTreeSet<String> = group.leaving.iter().cloned().collect();
            leaving.extend(write.leaving.iter().filter(|name| group.members.contains(name)).cloned());
            group.leaving = leaving.into_iter().collect();
        }
        let outcome = inner.insert_fanout(&write.proposal.message, &write.proposal.recipients, true);
        inner.federation.append_all(&write.outbound);
        Ok(ProposalResult::Applied(outcome))
    }

    fn write_snapshot(&self, snapshot: &GroupSnapshot) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(group) = inner.groups.get_mut(&snapshot.group_id) else {
            return Ok(false);
        };
        if group.snapshot_through >= snapshot.through || group.log_head() < snapshot.through {
            return Ok(false);
        }
        group.state = snapshot.state.clone();
        group.snapshot_through = snapshot.through;
        group.log.retain(|entry| entry.seq > snapshot.through);
        Ok(true)
    }

    fn groups_with_log(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.lock()?.groups.values().filter(|group| !group.log.is_empty()).map(|g| g.group_id.clone()).collect())
    }

    fn enqueue(&self, message: &NewMessage, recipients: &[String]) -> Result<EnqueueOutcome, StoreError> {
        self.enqueue_federated(message, recipients, &[])
    }

    fn enqueue_federated(
        &self,
        message: &NewMessage,
        recipients: &[String],
        outbound: &[OutboundAppend],
    ) -> Result<EnqueueOutcome, StoreError> {
        let mut inner = self.lock()?;
        if let Some(first) = inner.duplicate_of(message) {
            return Ok(first);
        }
        inner.check_recipients(recipients)?;
        let outcome = inner.insert_fanout(message, recipients, true);
        inner.federation.append_all(outbound);
        Ok(outcome)
    }

    fn lookup_message(&self, sender: &str, message_id: &[u8]) -> Result<Option<MessageRecord>, StoreError> {
        let key = (sender.to_owned(), message_id.to_vec());
        Ok(self.lock()?.message_ids.get(&key).cloned())
    }

    fn fetch(&self, username: &str, after_seq: u64, limit: u32) -> Result<FetchedQueue, StoreError> {
        let inner = self.lock()?;
        let head_seq = inner.devices.get(username).map_or(0, |row| row.last_seq);
        let Some(queue) = inner.queues.get(username) else {
            return Ok(FetchedQueue { items: Vec::new(), head_seq });
        };
        let mut items = Vec::new();
        let mut budget = FetchBudget::default();
        for (seq, row) in queue.range(after_seq.saturating_add(1)..).take(limit as usize) {
            let item = inner.queue_item(*seq, *row)?;
            if !budget.admit(item.payload.len()) {
                break;
            }
            items.push(item);
        }
        Ok(FetchedQueue { items, head_seq })
    }

    fn ack(&self, username: &str, up_to_seq: u64) -> Result<u64, StoreError> {
        Ok(self.lock()?.ack(username, up_to_seq))
    }

    fn queue_depth(&self, username: &str) -> Result<u64, StoreError> {
        Ok(self.lock()?.queues.get(username).map_or(0, |queue| queue.len() as u64))
    }

    fn total_queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.queues.values().map(|queue| queue.len() as u64).sum())
    }

    fn stored_message_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.messages.len() as u64)
    }

    fn trim_queues(&self, max_entries: u64, limit: u32) -> Result<TrimmedQueues, StoreError> {
        let mut inner = self.lock()?;
        let mut over: Vec<(String, u64, u64)> = inner
            .queues
            .iter()
            .filter_map(|(username, queue)| {
                let oldest = *queue.keys().next()?;
                let cut = inner.devices.get(username)?.last_seq.checked_sub(max_entries)?;
                (oldest <= cut).then(|| (username.clone(), oldest, cut))
            })
            .collect();
        // In name order, as on SQLite.
        over.sort_unstable();
        let mut trimmed = TrimmedQueues { more: over.len() > limit as usize, ..TrimmedQueues::default() };
        for (username, oldest, cut) in over.into_iter().take(limit as usize) {
            let budget_cut = oldest.saturating_add(TRIM_ENTRY_BUDGET - 1);
            trimmed.more |= budget_cut < cut;
            trimmed.queue_entries += inner.ack(&username, cut.min(budget_cut));
            trimmed.queues += 1;
        }
        Ok(trimmed)
    }

    fn expire(&self, before_ms: u64, limit: u32) -> Result<Expired, StoreError> {
        let mut guard = self.lock()?;
        let inner = &mut *guard;
        let limit = limit as usize;
        let mut expired = Expired::default();
        // Store order is row order, as on SQLite.
        let mut messages: Vec<(u64, u64)> =
            inner.messages.iter().map(|(row, stored)| (*row, stored.message.stored_at_ms)).collect();
        messages.sort_unstable();
        let due: Vec<u64> =
            messages.into_iter().take(limit).take_while(|&(_, at)| at < before_ms).map(|(row, _)| row).collect();
        expired.more = limit > 0 && due.len() == limit;
        for row in &due {
            inner.messages.remove(row);
            expired.messages += 1;
            for queue in inner.queues.values_mut() {
                let held = queue.len();
                queue.retain(|_, message_row| message_row != row);
                expired.queue_entries += (held - queue.len()) as u64;
            }
        }
        let mut records: Vec<(u64, u64, (String, Vec<u8>))> = inner
            .message_ids
            .iter()
            .map(|(key, record)| (record.message_row, record.stored_at_ms, key.clone()))
            .collect();
        records.sort_unstable_by_key(|(row, _, _)| *row);
        let due: Vec<(String, Vec<u8>)> =
            records.into_iter().take(limit).take_while(|(_, at, _)| *at < before_ms).map(|(_, _, key)| key).collect();
        expired.more |= limit > 0 && due.len() == limit;
        for key in &due {
            expired.message_ids += u64::from(inner.message_ids.remove(key).is_some());
        }
        Ok(expired)
    }
}

/// Bumps the group's state version and appends `payload` to its log.
fn append_to_log(group: &mut GroupRecord, kind: EntryKind, payload: &[u8]) {
    let seq = group.log_head() + 1;
    group.state_version += 1;
    group.log.push(GroupLogEntry { seq, kind, payload: payload.to_vec() });
}
