//! Durable state of the server: accounts, invites, key packages, groups (the DS's
//! public MLS view and roster) and the per-account delivery queues.
//!
//! This module owns the [`Store`] trait, the plain record types that cross it
//! and [`StoreError`]. Two implementations live here: [`SqliteStore`] (the
//! default, durable) and [`MemoryStore`] (tests and fuzzing); both pass the
//! same conformance suite. [`TimedStore`] decorates any store with latency
//! metrics.
//!
//! It deliberately knows nothing about MLS, Protobuf, QUIC or authorization:
//! the `domain` module decides *whether* something may be written; the store
//! only makes each write atomic and durable. Every method is synchronous and
//! may block on disk; async callers run it on `spawn_blocking`, or hand
//! a [`Job`] to a [`StorageExecutor`] (the SQLite store's storage thread),
//! which runs jobs in batches and completes each once it is durable.
//!
//! Invariants every implementation keeps:
//! - a message is stored once and referenced from each recipient's queue;
//! - queue sequence numbers are strictly increasing per account and never
//!   reused, not even after an ack;
//! - enqueue is idempotent on `(sender, message_id)`;
//! - a commit is applied only if the group is still at the expected epoch,
//!   and its log entry, roster change and fan-out (commit and welcome)
//!   happen in one transaction;
//! - a group's view is its snapshot followed by its log: every accepted
//!   commit and proposal is appended durably; snapshots (written later,
//!   off the request path) only shorten the log.

mod error;
mod federation;
pub mod memory;
pub mod sqlite;
mod timed;
mod types;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod conformance;

pub use error::StoreError;
pub use federation::{
    new_stream_instance, FedStream, InboundApply, InboundEvent, NewOutboundEntry, OutboundAppend, OutboundEntry,
    RemoteGroup,
};
use quicprochat_core::DeviceId;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use timed::TimedStore;
pub(crate) use types::FetchBudget;
pub use types::{
    queue_name, Account, AccountCreation, CommitApplied, CommitResult, CommitWrite, Delivery, Device, DeviceAdded,
    DeviceRemoval, EnqueueOutcome, EntryKind, Expired, Fanout, FetchedQueue, GroupCreation, GroupKind, GroupLogEntry,
    GroupRecord, GroupRoster, GroupSnapshot, GroupSummary, InviteUse, InvitedAccountCreation, KeyPackageServed,
    KeyPackageStock, KeyPackagesAdded, MessageRecord, NewDevice, NewGroup, NewKeyPackage, NewMessage, ProposalResult,
    ProposalWrite, QueueItem, TakenKeyPackage, TrimmedQueues, FIRST_DEVICE_LABEL, MAX_FETCH_PAYLOAD_BYTES,
};

/// Work for a [`StorageExecutor`]: runs against a store and returns what to
/// do once its writes are durable.
pub type Job = Box<dyn FnOnce(&dyn Store) -> Completion + Send>;

/// Called with `Ok` once every write of its job is durable, or with the
/// error that lost them (then nothing the job wrote is kept).
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs [`Job`]s without a thread blocked per job: the executor runs many
/// jobs' writes in one transaction and calls their completions after it.
pub trait StorageExecutor: Send + Sync {
    /// Queues `job`; its completion runs on the executor's thread. A job
    /// that is dropped unrun drops its completion uncalled.
    fn submit(&self, job: Job);
}

/// The storage operations the domain needs. Implementations are `Send + Sync`
/// and internally synchronised; every method is one atomic unit.
pub trait Store: Send + Sync {
    // --- accounts ---

    /// Binds `username` to `identity_key`, unless the name is taken, and
    /// gives it its first device: keyed by `identity_key` (the account key),
    /// its queue named `username`.
    fn create_account(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
    ) -> Result<AccountCreation, StoreError>;

    fn get_account(&self, username: &str) -> Result<Option<Account>, StoreError>;

    /// Fails with [`StoreError::UnknownAccount`] if there is no such account.
    fn set_account_disabled(&self, username: &str, disabled: bool) -> Result<(), StoreError>;

    /// The devices of `username` (removed ones included), oldest first.
    fn devices(&self, username: &str) -> Result<Vec<Device>, StoreError>;

    /// The device whose queue is `queue`, removed or not.
    fn device(&self, queue: &str) -> Result<Option<Device>, StoreError>;

    /// The device of `username` keyed by `device_key`, removed or not.
    fn device_by_key(&self, username: &str, device_key: &[u8]) -> Result<Option<Device>, StoreError>;

    /// Adds a linked device to an account, its queue named
    /// `username#<device id>`, unless the key is in use on the account or
    /// the account has `max_devices` current devices. Checks first, then
    /// writes: a refusal writes nothing.
    fn add_device(&self, device: &NewDevice, max_devices: u64) -> Result<DeviceAdded, StoreError>;

    /// Marks the device of `username` with `device_id` removed at `now_ms`
    /// and drops its queue (entries and the bodies no other queue holds) and
    /// its key packages (its last-resort one included), unless it is the account's only current device: checked in the same
    /// transaction, so two removals at once never leave an account without
    /// a device.
    fn remove_device(&self, username: &str, device_id: &DeviceId, now_ms: u64) -> Result<DeviceRemoval, StoreError>;

    /// Every account, ordered by username.
    fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// The usernames of disabled accounts, in order.
    fn disabled_accounts(&self) -> Result<Vec<String>, StoreError>;

    // --- federation ---

    /// Records `domain` as the domain of this database's names and groups
    /// when none is recorded yet. Returns the recorded domain when it is
    /// another one (nothing is changed then).
    fn pin_domain(&self, domain: &str) -> Result<Option<String>, StoreError>;

    /// The streams with `peer`, if made (a read: nothing is written). The
    /// first write of either stream makes them, with a new random outbound
    /// instance.
    fn fed_stream(&self, peer: &str) -> Result<Option<FedStream>, StoreError>;

    /// Every peer's streams, by domain.
    fn fed_streams(&self) -> Result<Vec<FedStream>, StoreError>;

    /// The label of a group a peer hosts, known here once one of its
    /// events reached a local device.
    fn remote_group(&self, group_id: &[u8]) -> Result<Option<RemoteGroup>, StoreError>;

    /// Appends `entries` to the outbound stream towards `peer` (made if
    /// needed), each taking the next seq; returns the last seq.
    fn append_outbound(&self, peer: &str, entries: &[NewOutboundEntry]) -> Result<u64, StoreError>;

    /// Outbound entries towards `peer` from `from_seq` on, in order: at most
    /// `max_entries`, stopping before the one that would take the payload
    /// past `max_bytes` (the first is always returned).
    fn read_outbound(
        &self,
        peer: &str,
        from_seq: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboundEntry>, StoreError>;

    /// Records that `peer` applied every outbound seq through `through_seq`
    /// and deletes those entries. Never moves backwards.
    fn ack_outbound(&self, peer: &str, through_seq: u64) -> Result<(), StoreError>;

    /// Deletes the outbound entries towards `peer` that waited since before
    /// `before_ms` (retention), with every entry before them: a prefix of
    /// the stream. Records and returns the highest seq deleted so
    /// (`out_expired`), and how many entries went now.
    fn expire_outbound(&self, peer: &str, before_ms: u64) -> Result<(u64, u64), StoreError>;

    /// Starts a new outbound instance towards `peer` (our database went
    /// back in time): the entries held keep their seqs.
    fn set_outbound_instance(&self, peer: &str, instance: u64) -> Result<(), StoreError>;

    /// Queues each event of a peer's batch (idempotently on `(sender,
    /// message_id)`; a removed device gets nothing) and moves the inbound
    /// stream of `apply.peer` to `(instance, applied_seq)`, in one write.
    /// Returns each event's enqueue outcome.
    fn apply_inbound(&self, apply: &InboundApply<'_>) -> Result<Vec<EnqueueOutcome>, StoreError>;

    // --- invites ---

    /// Stores an invite `token` good for `uses` registrations until
    /// `expires_at_ms` (exclusive; `None`: no expiry). Fails with
    /// [`StoreError::Conflict`] if the token exists.
    fn create_invite(
        &self,
        token: &str,
        uses: u32,
        expires_at_ms: Option<u64>,
        created_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// Atomically takes one use of `token` at time `now_ms`. An invite is
    /// exhausted (checked first) at zero uses left and expired once
    /// `now_ms >= expires_at_ms`; refusals write nothing.
    fn consume_invite(&self, token: &str, now_ms: u64) -> Result<InviteUse, StoreError>;

    /// [`Store::create_account`] gated by an invite, in one transaction: the
    /// invite is checked as in [`Store::consume_invite`] at `created_at_ms`,
    /// then the account is created and one use taken. Any refusal (invite or
    /// username) writes nothing.
    fn create_account_with_invite(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
        invite_token: &str,
    ) -> Result<InvitedAccountCreation, StoreError>;

    // --- key packages ---
    //
    // Every device of an account has a stock of its own: ordinary
    // (single-use) packages and at most one last-resort package, keyed by
    // (username, device id). The store does not check that the device is a
    // current device of the account; the domain does, before each call.

    /// Appends `key_packages` to the stock of `username`'s device
    /// `device_id` and, when `last_resort` is set, replaces that device's
    /// last-resort package. All or nothing: when any init key is already
    /// stored (or repeats within the call; the replaced last-resort package
    /// does not count), or the device's ordinary stock would pass
    /// `max_stock`, nothing changes.
    fn add_key_packages(
        &self,
        username: &str,
        device_id: &DeviceId,
        key_packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        max_stock: u64,
    ) -> Result<KeyPackagesAdded, StoreError>;

    /// Atomically removes and returns the oldest ordinary key package of
    /// `username`'s device `device_id`; when none is left, returns that
    /// device's last-resort one without removing it. `None` if there is
    /// neither.
    fn take_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<TakenKeyPackage>, StoreError>;

    /// Records that a key package was served (see [`KeyPackageServed`]);
    /// serving the same package to the same requester again renews the
    /// record. Records of the requester older than `forget_before_ms` are
    /// dropped in the same call.
    fn record_served(&self, served: &KeyPackageServed, forget_before_ms: u64) -> Result<(), StoreError>;

    /// Whether the key package with `init_key` was served to `requester`
    /// and not used since.
    fn was_served(&self, requester: &str, init_key: &[u8]) -> Result<bool, StoreError>;

    /// The last-resort package of `username`'s device `device_id`, without
    /// touching its ordinary stock (served when a per-target fetch limit is
    /// exhausted).
    fn last_resort_key_package(&self, username: &str, device_id: &DeviceId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stock of `username`'s device `device_id` (zero for an unknown
    /// account or device).
    fn key_package_stock(&self, username: &str, device_id: &DeviceId) -> Result<KeyPackageStock, StoreError>;

    // --- groups ---

    /// Registers a new group, unless its id is taken.
    fn create_group(&self, group: &NewGroup) -> Result<GroupCreation, StoreError>;

    fn get_group(&self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError>;

    /// The group's name, kind, epoch and roster, without its MLS state.
    fn group_roster(&self, group_id: &[u8]) -> Result<Option<GroupRoster>, StoreError>;

    /// Groups whose roster contains `username` (leaving members included),
    /// ordered by group id.
    fn groups_of(&self, username: &str) -> Result<Vec<GroupSummary>, StoreError>;

    /// Applies an accepted commit in one transaction: compare-and-set on the
    /// epoch, the commit appended to the group's log, new roster, welcome
    /// fan-out, then commit fan-out. On an epoch mismatch nothing is written.
    fn apply_commit(&self, write: &CommitWrite) -> Result<CommitResult, StoreError>;

    /// Appends a proposal to the group's log (compare-and-set on the state
    /// version), marks `write.leaving` as leaving and fans the proposal out,
    /// in one transaction. A duplicate `(sender, message_id)` writes nothing
    /// and returns the first outcome.
    fn apply_proposal(&self, write: &ProposalWrite) -> Result<ProposalResult, StoreError>;

    /// Replaces the group's snapshot with `snapshot` and drops the log
    /// entries it covers, unless the stored snapshot already covers as much
    /// (or the log does not reach `snapshot.through`). Returns whether it
    /// was written. The state version does not change: the view is the same.
    fn write_snapshot(&self, snapshot: &GroupSnapshot) -> Result<bool, StoreError>;

    /// Groups whose log holds entries that no snapshot covers yet.
    fn groups_with_log(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    // --- delivery ---

    /// Stores `message` once and appends it to each recipient queue (a
    /// device's queue name, [`Device::queue`]).
    /// Idempotent on `(message.sender, message.message_id)`: a repeat writes
    /// nothing and returns the first outcome with `duplicate: true` and no
    /// deliveries. Every recipient must be a device's queue; a removed
    /// device's is skipped (it gets nothing).
    fn enqueue(&self, message: &NewMessage, recipients: &[String]) -> Result<EnqueueOutcome, StoreError>;

    /// [`Store::enqueue`], and the entries `outbound` for peer servers
    /// appended to their streams in the same write (nothing is appended
    /// for a duplicate).
    fn enqueue_federated(
        &self,
        message: &NewMessage,
        recipients: &[String],
        outbound: &[OutboundAppend],
    ) -> Result<EnqueueOutcome, StoreError>;

    /// The idempotency record of `(sender, message_id)`, if that pair was used.
    fn lookup_message(&self, sender: &str, message_id: &[u8]) -> Result<Option<MessageRecord>, StoreError>;

    /// Up to `limit` entries of the device queue `queue` with `seq > after_seq`, in
    /// order, and the highest seq ever assigned in that queue. The entries
    /// stop before one whose payload would take their total past
    /// [`MAX_FETCH_PAYLOAD_BYTES`] (the first entry is always returned), so
    /// fewer than `limit` entries with `head_seq` beyond the last means
    /// "fetch again".
    fn fetch(&self, queue: &str, after_seq: u64, limit: u32) -> Result<FetchedQueue, StoreError>;

    /// Deletes the entries with `seq <= up_to_seq` from the device queue `queue` and
    /// every message no queue references any more. Returns how many entries
    /// were deleted.
    fn ack(&self, queue: &str, up_to_seq: u64) -> Result<u64, StoreError>;

    /// Number of unacked entries in the device queue `queue`.
    fn queue_depth(&self, queue: &str) -> Result<u64, StoreError>;

    /// Number of unacked entries across every queue (for metrics).
    fn total_queue_depth(&self) -> Result<u64, StoreError>;

    /// Number of message bodies currently stored (for metrics and tests).
    fn stored_message_count(&self) -> Result<u64, StoreError>;

    /// Deletes what was stored before `before_ms`, oldest first: up to
    /// `limit` messages (`stored_at_ms < before_ms`) with every queue entry
    /// still holding them, and up to `limit` idempotency records. A store
    /// may stop sooner at a budget of its own (queue entries or payload
    /// bytes per call); `more` then says so. Age is taken in store order:
    /// the walk stops at the first message or record not old enough, so a
    /// row stored with a clock that was wrong holds back those after it
    /// until the cutoff passes its time.
    fn expire(&self, before_ms: u64, limit: u32) -> Result<Expired, StoreError>;

    /// Holds every queue to its quota: from each queue whose entries span
    /// more than `max_entries` sequence numbers (its head minus its oldest
    /// entry), deletes the oldest entries so that at most `max_entries`
    /// remain, and the messages no queue references any more, as an ack
    /// would. One call trims at most `limit` queues and about
    /// [`TRIM_ENTRY_BUDGET`] entries per queue; `more` says when it stopped
    /// at either bound. The owner's client sees the gap in its sequence
    /// numbers and reports the entries as expired.
    fn trim_queues(&self, max_entries: u64, limit: u32) -> Result<TrimmedQueues, StoreError>;
}

/// Most entries one [`Store::trim_queues`] call deletes from one queue.
pub const TRIM_ENTRY_BUDGET: u64 = 10_000;
