//! [`TimedStore`]: a [`Store`] decorator that records how long each call to
//! the wrapped store takes, as `Metrics::storage_op(method_name, elapsed)`.
//!
//! It changes no semantics: every call is forwarded unchanged and its result
//! returned as is (failed calls are timed too). It does not enforce the
//! storage deadline; the caller wraps the blocking call for that.

use std::ops::Deref;
use std::time::Instant;

use quicprochat_core::DeviceId;

use super::{
    Account, AccountCreation, CommitResult, CommitWrite, Device, EnqueueOutcome, Expired, FetchedQueue, GroupCreation,
    GroupRecord, GroupRoster, GroupSnapshot, GroupSummary, InviteUse, InvitedAccountCreation, KeyPackageServed,
    KeyPackageStock, KeyPackagesAdded, MessageRecord, NewGroup, NewKeyPackage, NewMessage, ProposalResult,
    ProposalWrite, Store, StoreError, TakenKeyPackage, TrimmedQueues,
};
use super::{DeviceAdded, DeviceRemoval, NewDevice};
use super::{FedStream, InboundApply, NewOutboundEntry, OutboundAppend, OutboundEntry, RemoteGroup};
use crate::metrics::Metrics;

/// Times every call to the store `inner` points to (an `Arc` of a store, or
/// a `&dyn Store` lent to a storage job) into `metrics`.
pub struct TimedStore<P> {
    metrics: Metrics,
    inner: P,
}

impl<P> TimedStore<P>
where
    P: Deref + Send + Sync,
    P::Target: Store,
{
    /// Wraps the store `inner` points to.
    pub fn new(inner: P, metrics: Metrics) -> Self {
        TimedStore { metrics, inner }
    }

    fn timed<T>(&self, operation: &'static str, call: impl FnOnce(&P::Target) -> T) -> T {
        let started = Instant::now();
        let result = call(&self.inner);
        self.metrics.storage_op(operation, started.elapsed());
        result
    }
}

impl<P> std::fmt::Debug for TimedStore<P> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("TimedStore").finish_non_exhaustive()
    }
}

impl<P> Store for TimedStore<P>
where
    P: Deref + Send + Sync,
    P::Target: Store,
{
    fn create_account(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
    ) -> Result<AccountCreation, StoreError> {
        self.timed("create_account", |s| s.create_account(username, identity_key, created_at_ms))
    }

    fn get_account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.timed("get_account", |s| s.get_account(username))
    }

    fn set_account_disabled(&self, username: &str, disabled: bool) -> Result<(), StoreError> {
        self.timed("set_account_disabled", |s| s.set_account_disabled(username, disabled))
    }

    fn devices(&self, username: &str) -> Result<Vec<Device>, StoreError> {
        self.timed("devices", |s| s.devices(username))
    }

    fn device(&self, queue: &str) -> Result<Option<Device>, StoreError> {
        self.timed("device", |s| s.device(queue))
    }

    fn device_by_key(&self, username: &str, device_key: &[u8]) -> Result<Option<Device>, StoreError> {
        self.timed("device_by_key", |s| s.device_by_key(username, device_key))
    }

    fn add_device(&self, device: &NewDevice, max_devices: u64) -> Result<DeviceAdded, StoreError> {
        self.timed("add_device", |s| s.add_device(device, max_devices))
    }

    fn remove_device(&self, username: &str, device_id: &DeviceId, now_ms: u64) -> Result<DeviceRemoval, StoreError> {
        self.timed("remove_device", |s| s.remove_device(username, device_id, now_ms))
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.timed("list_accounts", |s| s.list_accounts())
    }

    fn disabled_accounts(&self) -> Result<Vec<String>, StoreError> {
        self.timed("disabled_accounts", |s| s.disabled_accounts())
    }

    fn pin_domain(&self, domain: &str) -> Result<Option<String>, StoreError> {
        self.timed("pin_domain", |s| s.pin_domain(domain))
    }

    fn fed_stream(&self, peer: &str) -> Result<Option<FedStream>, StoreError> {
        self.timed("fed_stream", |s| s.fed_stream(peer))
    }

    fn remote_group(&self, group_id: &[u8]) -> Result<Option<RemoteGroup>, StoreError> {
        self.timed("remote_group", |s| s.remote_group(group_id))
    }

    fn fed_streams(&self) -> Result<Vec<FedStream>, StoreError> {
        self.timed("fed_streams", |s| s.fed_streams())
    }

    fn append_outbound(&self, peer: &str, entries: &[NewOutboundEntry]) -> Result<u64, StoreError> {
        self.timed("append_outbound", |s| s.append_outbound(peer, entries))
    }

    fn read_outbound(
        &self,
        peer: &str,
        from_seq: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboundEntry>, StoreError> {
        self.timed("read_outbound", |s| s.read_outbound(peer, from_seq, max_entries, max_bytes))
    }

    fn ack_outbound(&self, peer: &str, through_seq: u64) -> Result<(), StoreError> {
        self.timed("ack_outbound", |s| s.ack_outbound(peer, through_seq))
    }

    fn expire_outbound(&self, peer: &str, before_ms: u64) -> Result<(u64, u64), StoreError> {
        self.timed("expire_outbound", |s| s.expire_outbound(peer, before_ms))
    }

    fn set_outbound_instance(&self, peer: &str, instance: u64) -> Result<(), StoreError> {
        self.timed("set_outbound_instance", |s| s.set_outbound_instance(peer, instance))
    }

    fn apply_inbound(&self, apply: &InboundApply<'_>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.timed("apply_inbound", |s| s.apply_inbound(apply))
    }

    fn create_invite(
        &self,
        token: &str,
        uses: u32,
        expires_at_ms: Option<u64>,
        created_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.timed("create_invite", |s| s.create_invite(token, uses, expires_at_ms, created_at_ms))
    }

    fn consume_invite(&self, token: &str, now_ms: u64) -> Result<InviteUse, StoreError> {
        self.timed("consume_invite", |s| s.consume_invite(token, now_ms))
    }

    fn create_account_with_invite(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
        invite_token: &str,
    ) -> Result<InvitedAccountCreation, StoreError> {
        self.timed("create_account_with_invite", |s| {
            s.create_account_with_invite(username, identity_key, created_at_ms, invite_token)
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
        self.timed("add_key_packages", |s| {
            s.add_key_packages(username, device_id, key_packages, last_resort, max_stock)
        })
    }

    fn take_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<TakenKeyPackage>, StoreError> {
        self.timed("take_key_package", |s| s.take_key_package(username, device_id))
    }

    fn record_served(&self, served: &KeyPackageServed, forget_before_ms: u64) -> Result<(), StoreError> {
        self.timed("record_served", |s| s.record_served(served, forget_before_ms))
    }

    fn was_served(&self, requester: &str, init_key: &[u8]) -> Result<bool, StoreError> {
        self.timed("was_served", |s| s.was_served(requester, init_key))
    }

    fn last_resort_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("last_resort_key_package", |s| s.last_resort_key_package(username, device_id))
    }

    fn key_package_stock(&self, username: &str, device_id: &DeviceId) -> Result<KeyPackageStock, StoreError> {
        self.timed("key_package_stock", |s| s.key_package_stock(username, device_id))
    }

    fn create_group(&self, group: &NewGroup) -> Result<GroupCreation, StoreError> {
        self.timed("create_group", |s| s.create_group(group))
    }

    fn get_group(&self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
        self.timed("get_group", |s| s.get_group(group_id))
    }

    fn group_roster(&self, group_id: &[u8]) -> Result<Option<GroupRoster>, StoreError> {
        self.timed("group_roster", |s| s.group_roster(group_id))
    }

    fn groups_of(&self, username: &str) -> Result<Vec<GroupSummary>, StoreError> {
        self.timed("groups_of", |s| s.groups_of(username))
    }

    fn apply_commit(&self, write: &CommitWrite) -> Result<CommitResult, StoreError> {
        self.timed("apply_commit", |s| s.apply_commit(write))
    }

    fn apply_proposal(&self, write: &ProposalWrite) -> Result<ProposalResult, StoreError> {
        self.timed("apply_proposal", |s| s.apply_proposal(write))
    }

    fn write_snapshot(&self, snapshot: &GroupSnapshot) -> Result<bool, StoreError> {
        self.timed("write_snapshot", |s| s.write_snapshot(snapshot))
    }

    fn groups_with_log(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.timed("groups_with_log", |s| s.groups_with_log())
    }

    fn enqueue(&self, message: &NewMessage, recipients: &[String]) -> Result<EnqueueOutcome, StoreError> {
        self.timed("enqueue", |s| s.enqueue(message, recipients))
    }

    fn enqueue_federated(
        &self,
        message: &NewMessage,
        recipients: &[String],
        outbound: &[OutboundAppend],
    ) -> Result<EnqueueOutcome, StoreError> {
        self.timed("enqueue", |s| s.enqueue_federated(message, recipients, outbound))
    }

    fn lookup_message(&self, sender: &str, message_id: &[u8]) -> Result<Option<MessageRecord>, StoreError> {
        self.timed("lookup_message", |s| s.lookup_message(sender, message_id))
    }

    fn fetch(&self, username: &str, after_seq: u64, limit: u32) -> Result<FetchedQueue, StoreError> {
        self.timed("fetch", |s| s.fetch(username, after_seq, limit))
    }

    fn ack(&self, username: &str, up_to_seq: u64) -> Result<u64, StoreError> {
        self.timed("ack", |s| s.ack(username, up_to_seq))
    }

    fn queue_depth(&self, username: &str) -> Result<u64, StoreError> {
        self.timed("queue_depth", |s| s.queue_depth(username))
    }

    fn total_queue_depth(&self) -> Result<u64, StoreError> {
        self.timed("total_queue_depth", |s| s.total_queue_depth())
    }

    fn stored_message_count(&self) -> Result<u64, StoreError> {
        self.timed("stored_message_count", |s| s.stored_message_count())
    }

    fn expire(&self, before_ms: u64, limit: u32) -> Result<Expired, StoreError> {
        self.timed("expire", |s| s.expire(before_ms, limit))
    }

    fn trim_queues(&self, max_entries: u64, limit: u32) -> Result<TrimmedQueues, StoreError> {
        self.timed("trim_queues", |s| s.trim_queues(max_entries, limit))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::MemoryStore;

    fn count(metrics: &Metrics, operation: &str) -> Option<u64> {
        let series = format!("qpc_storage_operation_duration_seconds_count{{operation=\"{operation}\"}} ");
        metrics.encode().lines().find_map(|line| line.strip_prefix(&series)?.parse().ok())
    }

    #[test]
    fn records_each_call_and_forwards_results() {
        let metrics = Metrics::new();
        let store = TimedStore::new(Arc::new(MemoryStore::new()), metrics.clone());
        assert_eq!(count(&metrics, "create_account"), None);

        assert_eq!(store.create_account("alice", &[1; 32], 1).unwrap(), AccountCreation::Created);
        assert_eq!(store.create_account("alice", &[1; 32], 1).unwrap(), AccountCreation::UsernameTaken);
        assert_eq!(store.get_account("alice").unwrap().unwrap().username, "alice");
        assert_eq!(count(&metrics, "create_account"), Some(2));
        assert_eq!(count(&metrics, "get_account"), Some(1));

        // Failures are timed and passed through unchanged.
        let error = store.set_account_disabled("nobody", true).unwrap_err();
        assert!(matches!(error, StoreError::UnknownAccount { .. }), "{error:?}");
        assert_eq!(count(&metrics, "set_account_disabled"), Some(1));
    }

    #[test]
    fn wraps_a_shared_dyn_store() {
        let metrics = Metrics::new();
        let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = Arc::new(TimedStore::new(Arc::clone(&shared), metrics.clone()));
        store.create_invite("token", 1, None, 0).unwrap();
        assert_eq!(shared.consume_invite("token", 0).unwrap(), InviteUse::Consumed { remaining: 0 });
        assert_eq!(store.consume_invite("token", 0).unwrap(), InviteUse::Exhausted);
        assert_eq!(count(&metrics, "create_invite"), Some(1));
        assert_eq!(count(&metrics, "consume_invite"), Some(1));
    }
}
