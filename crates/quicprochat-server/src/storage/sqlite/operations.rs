//! The [`Store`] operations over SQL, written once for every way of
//! reaching the write connection: [`Access`] says how a write, a
//! multi-query read and a single query reach a connection, and every type
//! implementing it is a [`Store`]. [`super::SqliteStore`] writes through the
//! group commit and reads on its read connection; the storage thread's
//! `BatchStore` runs everything on the write connection inside its batch.

use quicprochat_core::DeviceId;
use rusqlite::Connection;

use super::{accounts, delivery, expiry, federation, groups, invites, quota};
use crate::storage::{
    Account, AccountCreation, CommitResult, CommitWrite, Device, EnqueueOutcome, Expired, FetchedQueue, GroupCreation,
    GroupRecord, GroupRoster, GroupSnapshot, GroupSummary, InviteUse, InvitedAccountCreation, KeyPackageServed,
    KeyPackageStock, KeyPackagesAdded, MessageRecord, NewGroup, NewKeyPackage, NewMessage, ProposalResult,
    ProposalWrite, Store, StoreError, TakenKeyPackage, TrimmedQueues,
};
use crate::storage::{DeviceAdded, DeviceRemoval, NewDevice};
use crate::storage::{FedStream, InboundApply, NewOutboundEntry, OutboundAppend, OutboundEntry, RemoteGroup};

/// How the SQL operations reach a connection.
pub trait Access: Send + Sync {
    /// Runs `body` as one atomic write; an `Err` rolls back its changes.
    /// Returns once the write is as durable as this access promises.
    fn write<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    /// Runs `body` on one consistent snapshot (several queries).
    fn read<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    /// Runs a single query.
    fn query<T>(&self, body: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError>;
}

impl<A: Access> Store for A {
    fn create_account(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
    ) -> Result<AccountCreation, StoreError> {
        self.write("create_account", |tx| accounts::create_account(tx, username, identity_key, created_at_ms))
    }

    fn get_account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.query(|connection| accounts::get_account(connection, username))
    }

    fn set_account_disabled(&self, username: &str, disabled: bool) -> Result<(), StoreError> {
        self.write("set_account_disabled", |tx| accounts::set_disabled(tx, username, disabled))
    }

    fn devices(&self, username: &str) -> Result<Vec<Device>, StoreError> {
        self.query(|connection| accounts::devices(connection, username))
    }

    fn device(&self, queue: &str) -> Result<Option<Device>, StoreError> {
        self.query(|connection| accounts::device(connection, queue))
    }

    fn device_by_key(&self, username: &str, device_key: &[u8]) -> Result<Option<Device>, StoreError> {
        self.query(|connection| accounts::device_by_key(connection, username, device_key))
    }

    fn add_device(&self, device: &NewDevice, max_devices: u64) -> Result<DeviceAdded, StoreError> {
        self.write("add_device", |tx| accounts::add_device(tx, device, max_devices))
    }

    fn remove_device(&self, username: &str, device_id: &DeviceId, now_ms: u64) -> Result<DeviceRemoval, StoreError> {
        self.write("remove_device", |tx| accounts::remove_device(tx, username, device_id, now_ms))
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.query(accounts::list_accounts)
    }

    fn disabled_accounts(&self) -> Result<Vec<String>, StoreError> {
        self.query(accounts::disabled_accounts)
    }

    fn pin_domain(&self, domain: &str) -> Result<Option<String>, StoreError> {
        self.write("pin_domain", |tx| federation::pin_domain(tx, domain))
    }

    fn fed_stream(&self, peer: &str) -> Result<Option<FedStream>, StoreError> {
        self.query(|connection| federation::fed_stream(connection, peer))
    }

    fn remote_group(&self, group_id: &[u8]) -> Result<Option<RemoteGroup>, StoreError> {
        self.query(|connection| federation::remote_group(connection, group_id))
    }

    fn fed_streams(&self) -> Result<Vec<FedStream>, StoreError> {
        self.read("fed_streams", federation::fed_streams)
    }

    fn append_outbound(&self, peer: &str, entries: &[NewOutboundEntry]) -> Result<u64, StoreError> {
        self.write("append_outbound", |tx| federation::append_outbound(tx, peer, entries))
    }

    fn read_outbound(
        &self,
        peer: &str,
        from_seq: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboundEntry>, StoreError> {
        self.query(|connection| federation::read_outbound(connection, peer, from_seq, max_entries, max_bytes))
    }

    fn ack_outbound(&self, peer: &str, through_seq: u64) -> Result<(), StoreError> {
        self.write("ack_outbound", |tx| federation::ack_outbound(tx, peer, through_seq))
    }

    fn expire_outbound(&self, peer: &str, before_ms: u64) -> Result<(u64, u64), StoreError> {
        self.write("expire_outbound", |tx| federation::expire_outbound(tx, peer, before_ms))
    }

    fn set_outbound_instance(&self, peer: &str, instance: u64) -> Result<(), StoreError> {
        self.write("set_outbound_instance", |tx| federation::set_outbound_instance(tx, peer, instance))
    }

    fn apply_inbound(&self, apply: &InboundApply<'_>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.write("apply_inbound", |tx| federation::apply_inbound(tx, apply))
    }

    fn create_invite(
        &self,
        token: &str,
        uses: u32,
        expires_at_ms: Option<u64>,
        created_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write("create_invite", |tx| invites::create_invite(tx, token, uses, expires_at_ms, created_at_ms))
    }

    fn consume_invite(&self, token: &str, now_ms: u64) -> Result<InviteUse, StoreError> {
        self.write("consume_invite", |tx| invites::consume_invite(tx, token, now_ms))
    }

    fn create_account_with_invite(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
        invite_token: &str,
    ) -> Result<InvitedAccountCreation, StoreError> {
        const OPERATION: &str = "create_account_with_invite";
        self.write(OPERATION, |tx| {
            let remaining_uses = match invites::check_invite(tx, invite_token, created_at_ms, OPERATION)? {
                InviteUse::Consumed { remaining } => remaining,
                InviteUse::Unknown => return Ok(InvitedAccountCreation::InviteUnknown),
                InviteUse::Expired => return Ok(InvitedAccountCreation::InviteExpired),
                InviteUse::Exhausted => return Ok(InvitedAccountCreation::InviteExhausted),
            };
            if accounts::create_account(tx, username, identity_key, created_at_ms)? == AccountCreation::UsernameTaken {
                return Ok(InvitedAccountCreation::UsernameTaken);
            }
            invites::take_use(tx, invite_token, OPERATION)?;
            Ok(InvitedAccountCreation::Created { remaining_uses })
        })
    }

    fn add_key_packages(
        &self,
        username: &str,
        device_id: &DeviceId,
        key_packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        max_stock: u64,
    ) -> Result<KeyPackagesAdded, StoreError> {
        self.write("add_key_packages", |tx| {
            accounts::add_key_packages(tx, username, device_id, key_packages, last_resort, max_stock)
        })
    }

    fn take_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<TakenKeyPackage>, StoreError> {
        self.write("take_key_package", |tx| accounts::take_key_package(tx, username, device_id))
    }

    fn record_served(&self, served: &KeyPackageServed, forget_before_ms: u64) -> Result<(), StoreError> {
        self.write("record_served", |tx| accounts::record_served(tx, served, forget_before_ms))
    }

    fn was_served(&self, requester: &str, init_key: &[u8]) -> Result<bool, StoreError> {
        self.query(|connection| accounts::was_served(connection, requester, init_key))
    }

    fn last_resort_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(|connection| accounts::last_resort_key_package(connection, username, device_id))
    }

    fn key_package_stock(&self, username: &str, device_id: &DeviceId) -> Result<KeyPackageStock, StoreError> {
        self.query(|connection| accounts::key_package_stock(connection, username, device_id, "key_package_stock"))
    }

    fn create_group(&self, group: &NewGroup) -> Result<GroupCreation, StoreError> {
        self.write("create_group", |tx| groups::create_group(tx, group))
    }

    fn get_group(&self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
        self.read("get_group", |tx| groups::get_group(tx, group_id))
    }

    fn group_roster(&self, group_id: &[u8]) -> Result<Option<GroupRoster>, StoreError> {
        self.read("group_roster", |tx| groups::group_roster(tx, group_id))
    }

    fn groups_of(&self, username: &str) -> Result<Vec<GroupSummary>, StoreError> {
        self.query(|connection| groups::groups_of(connection, username))
    }

    fn apply_commit(&self, write: &CommitWrite) -> Result<CommitResult, StoreError> {
        self.write("apply_commit", |tx| groups::apply_commit(tx, write))
    }

    fn apply_proposal(&self, write: &ProposalWrite) -> Result<ProposalResult, StoreError> {
        self.write("apply_proposal", |tx| groups::apply_proposal(tx, write))
    }

    fn write_snapshot(&self, snapshot: &GroupSnapshot) -> Result<bool, StoreError> {
        self.write("write_snapshot", |tx| groups::write_snapshot(tx, snapshot))
    }

    fn groups_with_log(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.query(groups::groups_with_log)
    }

    fn enqueue(&self, message: &NewMessage, recipients: &[String]) -> Result<EnqueueOutcome, StoreError> {
        self.write("enqueue", |tx| {
            if let Some(first) = delivery::duplicate_of(tx, message, "enqueue")? {
                return Ok(first);
            }
            delivery::insert_fanout(tx, message, recipients, true, "enqueue")
        })
    }

    fn enqueue_federated(
        &self,
        message: &NewMessage,
        recipients: &[String],
        outbound: &[OutboundAppend],
    ) -> Result<EnqueueOutcome, StoreError> {
        self.write("enqueue", |tx| {
            if let Some(first) = delivery::duplicate_of(tx, message, "enqueue")? {
                return Ok(first);
            }
            let outcome = delivery::insert_fanout(tx, message, recipients, true, "enqueue")?;
            federation::append_all(tx, outbound)?;
            Ok(outcome)
        })
    }

    fn lookup_message(&self, sender: &str, message_id: &[u8]) -> Result<Option<MessageRecord>, StoreError> {
        self.query(|connection| delivery::lookup_message(connection, sender, message_id, "lookup_message"))
    }

    fn fetch(&self, username: &str, after_seq: u64, limit: u32) -> Result<FetchedQueue, StoreError> {
        self.read("fetch", |tx| delivery::fetch(tx, username, after_seq, limit))
    }

    fn ack(&self, username: &str, up_to_seq: u64) -> Result<u64, StoreError> {
        self.write("ack", |tx| delivery::ack(tx, username, up_to_seq))
    }

    fn queue_depth(&self, username: &str) -> Result<u64, StoreError> {
        self.query(|connection| delivery::queue_depth(connection, username))
    }

    fn total_queue_depth(&self) -> Result<u64, StoreError> {
        self.query(delivery::total_queue_depth)
    }

    fn stored_message_count(&self) -> Result<u64, StoreError> {
        self.query(delivery::stored_message_count)
    }

    fn expire(&self, before_ms: u64, limit: u32) -> Result<Expired, StoreError> {
        self.write("expire", |tx| expiry::expire(tx, before_ms, limit))
    }

    fn trim_queues(&self, max_entries: u64, limit: u32) -> Result<TrimmedQueues, StoreError> {
        // Found on the read side, so the scan never holds the writer; a
        // queue acknowledged meanwhile only makes the trim smaller.
        let over = self.read("trim_queues", |connection| quota::queues_over_quota(connection, max_entries, limit))?;
        if over.is_empty() {
            return Ok(TrimmedQueues::default());
        }
        self.write("trim_queues", |tx| quota::trim_queues(tx, &over))
    }
}
