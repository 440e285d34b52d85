//! Plain records crossing the [`super::Store`] trait. No Protobuf, SQL or MLS
//! types: bytes, strings and integers only (and device ids).

use quicprochat_core::DeviceId;

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    /// Ed25519 public key (32 bytes) bound at registration.
    pub identity_key: Vec<u8>,
    pub disabled: bool,
}

/// A device of an account, with its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device's queue name: the username for the device keyed by the
    /// account key, `username#<device id>` for a linked device
    /// ([`queue_name`]). Every queue operation takes it.
    pub queue: String,
    pub username: String,
    pub device_id: DeviceId,
    /// Ed25519 public key; the device's MLS signature and login key.
    pub device_key: Vec<u8>,
    /// The account key's certificate (`None` for the device keyed by it).
    pub certificate: Option<Vec<u8>>,
    pub label: String,
    pub created_at_ms: u64,
    /// When the device was removed; it can no longer log in or receive.
    pub removed_at_ms: Option<u64>,
}

/// A device to add to an account ([`super::Store::add_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub username: String,
    pub device_id: DeviceId,
    pub device_key: Vec<u8>,
    pub certificate: Vec<u8>,
    pub label: String,
    pub created_at_ms: u64,
}

/// Result of [`super::Store::add_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAdded {
    /// Stored, with this queue name.
    Added { queue: String },
    /// The account has a device with this key already (removed or not).
    KeyInUse,
    /// The account has `max_devices` current devices already.
    TooMany { current: u64 },
    /// No such account.
    UnknownAccount,
}

/// Result of [`super::Store::remove_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRemoval {
    /// Removed; its queue was this.
    Removed { queue: String },
    /// No current device of the account has this id.
    NotFound,
    /// It is the account's only current device, which is never removed.
    LastDevice,
}

/// The label of an account's first device (the one registration makes).
pub const FIRST_DEVICE_LABEL: &str = "first device";

impl Device {
    /// Whether the device was not removed.
    pub fn is_current(&self) -> bool {
        self.removed_at_ms.is_none()
    }
}

/// The queue name of `username`'s device `device_id`: the username itself
/// for the device keyed by the account key (`account_keyed`), else
/// `username#<device id>` (no username contains `#`).
pub fn queue_name(username: &str, device_id: &DeviceId, account_keyed: bool) -> String {
    if account_keyed {
        username.to_owned()
    } else {
        format!("{username}#{device_id}")
    }
}

/// Result of [`super::Store::create_account`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountCreation {
    Created,
    UsernameTaken,
}

/// Key package stock of one device of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPackageStock {
    /// Ordinary (single-use) packages left; the last-resort one is not counted.
    pub count: u64,
    pub has_last_resort: bool,
}

/// A validated key package to store, in the stock of the device that made
/// it (the device is a parameter of [`super::Store::add_key_packages`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeyPackage {
    /// The serialized KeyPackage, served as is.
    pub data: Vec<u8>,
    /// Its HPKE init key: unique among every stored package.
    pub init_key: Vec<u8>,
}

/// Outcome of [`super::Store::add_key_packages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPackagesAdded {
    /// All packages were stored; the device's stock now.
    Stored(KeyPackageStock),
    /// One package's init key is already stored (its own or another upload's):
    /// nothing was stored.
    InitKeyInUse,
    /// The ordinary packages would take the device's stock past the cap
    /// the call gave; nothing was stored. Carries the stock now.
    StockFull { count: u64 },
}

/// A key package served by [`super::Store::take_key_package`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenKeyPackage {
    pub key_package: Vec<u8>,
    /// True when the device's stock was empty and its (kept) last-resort
    /// package was served.
    pub last_resort: bool,
}

/// A key package served to `requester`: the one use it may make of it is
/// a commit of its own that adds `target` with it (review F7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageServed {
    pub requester: String,
    /// The package's HPKE init key (unique among stored packages).
    pub init_key: Vec<u8>,
    pub target: String,
    /// Served from the last-resort slot of one of the target's devices.
    pub last_resort: bool,
    pub served_at_ms: u64,
}

/// Whether a group is a named group or a 1:1 conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Named,
    Direct,
}

/// A group to register at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    pub group_id: Vec<u8>,
    pub name: String,
    pub kind: GroupKind,
    pub creator: String,
    pub epoch: u64,
    /// Serialized DS public group view.
    pub state: Vec<u8>,
    pub members: Vec<String>,
    /// The queues of the members' devices (one per leaf).
    pub devices: Vec<String>,
    pub created_at_ms: u64,
}

/// Result of [`super::Store::create_group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCreation {
    Created,
    IdTaken,
}

/// A stored group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub group_id: Vec<u8>,
    pub name: String,
    pub kind: GroupKind,
    pub creator: String,
    pub epoch: u64,
    /// Bumped on every change of the group's state (commits and proposals);
    /// the compare-and-set token of [`super::Store::apply_proposal`].
    pub state_version: u64,
    /// Serialized DS public group view as of log entry `snapshot_through`
    /// (the view at creation when that is 0).
    pub state: Vec<u8>,
    pub snapshot_through: u64,
    /// The accepted commits and proposals after the snapshot, oldest first:
    /// the view now is `state` with each of them processed in turn.
    pub log: Vec<GroupLogEntry>,
    /// The MLS roster, sorted.
    pub members: Vec<String>,
    /// Members that asked to leave and may no longer post, sorted. Always a
    /// subset of `members`.
    pub leaving: Vec<String>,
    /// The queues of the members' devices, one per leaf, sorted: what the
    /// group's messages fan out to.
    pub devices: Vec<String>,
    pub created_at_ms: u64,
}

impl GroupRecord {
    /// The last entry of the group's log (the snapshot's when the log is empty).
    pub fn log_head(&self) -> u64 {
        self.log.last().map_or(self.snapshot_through, |entry| entry.seq)
    }
}

/// One accepted commit or proposal in a group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLogEntry {
    /// Position in the group's log, from 1, without gaps.
    pub seq: u64,
    /// [`EntryKind::Commit`] or [`EntryKind::Proposal`].
    pub kind: EntryKind,
    /// The MlsMessage as accepted.
    pub payload: Vec<u8>,
}

/// A serialised view that replaces a group's snapshot and the log entries it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub group_id: Vec<u8>,
    /// The last log entry the view includes.
    pub through: u64,
    pub state: Vec<u8>,
}

/// A group's roster without its MLS state: what the send path needs to
/// authorise and fan out a message, without copying the (for large PQ
/// groups, megabytes of) public group view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoster {
    pub name: String,
    pub kind: GroupKind,
    pub epoch: u64,
    /// Bumped on every change of the group's state (see [`GroupRecord`]).
    pub state_version: u64,
    /// The last entry of the group's log (0: none yet); changes together
    /// with `state_version`.
    pub log_head: u64,
    /// The last log entry the stored snapshot includes.
    pub snapshot_through: u64,
    /// Length of the stored snapshot.
    pub snapshot_bytes: u64,
    /// The MLS roster, sorted.
    pub members: Vec<String>,
    /// Members that asked to leave, sorted; a subset of `members`.
    pub leaving: Vec<String>,
    /// The queues of the members' devices, one per leaf, sorted.
    pub devices: Vec<String>,
}

impl From<GroupRecord> for GroupRoster {
    /// The record without its MLS state.
    fn from(record: GroupRecord) -> GroupRoster {
        let log_head = record.log_head();
        GroupRoster {
            name: record.name,
            kind: record.kind,
            epoch: record.epoch,
            state_version: record.state_version,
            log_head,
            snapshot_through: record.snapshot_through,
            snapshot_bytes: record.state.len() as u64,
            members: record.members,
            leaving: record.leaving,
            devices: record.devices,
        }
    }
}

/// A group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: Vec<u8>,
    pub name: String,
    pub kind: GroupKind,
    pub epoch: u64,
}

/// What a queue entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Application,
    Commit,
    Welcome,
    Proposal,
    /// A group's hub on another server refused a message this account
    /// relayed to it (the entry's id is that message's, its payload the reason).
    DeliveryFailed,
}

/// A message to store and fan out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Client-generated id; with `sender`, the idempotency key.
    pub message_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub sender: String,
    pub kind: EntryKind,
    pub payload: Vec<u8>,
    /// For commits: the epoch the commit moves the group out of; otherwise
    /// the epoch the message was sent in.
    pub epoch: u64,
    pub stored_at_ms: u64,
}

/// A message and the accounts whose queues receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    pub message: NewMessage,
    /// Duplicates are ignored.
    pub recipients: Vec<String>,
}

/// One queue entry written by an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The device queue it went to (see [`Device::queue`]).
    pub queue: String,
    pub seq: u64,
}

/// Result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueOutcome {
    /// Storage id of the message body (unique, never reused).
    pub message_row: u64,
    /// When the first enqueue of this message was made durable.
    pub stored_at_ms: u64,
    /// True when `(sender, message_id)` was already used: nothing was written.
    pub duplicate: bool,
    /// The queue entries written (empty for a duplicate).
    pub deliveries: Vec<Delivery>,
}

/// Idempotency record of a `(sender, message_id)` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub message_row: u64,
    pub group_id: Vec<u8>,
    pub kind: EntryKind,
    pub epoch: u64,
    pub stored_at_ms: u64,
}

/// An accepted commit to apply atomically. The commit's payload is
/// appended to the group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitWrite {
    pub group_id: Vec<u8>,
    /// The epoch the commit was created in; the write happens only if the
    /// group is still there.
    pub expected_epoch: u64,
    pub new_epoch: u64,
    /// The roster after the commit. Every leaving flag is cleared: a leave
    /// proposal the commit did not include is gone with its epoch (its
    /// member sends it again).
    pub new_members: Vec<String>,
    /// The queues of the devices in the roster after the commit.
    pub new_devices: Vec<String>,
    pub commit: Fanout,
    /// Enqueued before the commit, so an invitee sees its Welcome first.
    pub welcome: Option<Fanout>,
    /// Init keys of the key packages the commit adds members with: each
    /// must have been served to the committer (the commit's sender) and
    /// not used since; the write consumes them.
    pub served: Vec<Vec<u8>>,
    /// The group's view after the commit, stored as its snapshot (through
    /// the commit's log entry) in the same transaction: a commit that adds
    /// members carries one, so restoring the view never replays an Add
    /// (whose KeyPackage lifetime would be checked against the clock again).
    pub snapshot: Option<Vec<u8>>,
    /// Entries for peer servers (the commit and Welcome for their users'
    /// devices), appended to their streams in the same transaction.
    pub outbound: Vec<super::OutboundAppend>,
}

/// Result of [`super::Store::apply_commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    Applied(CommitApplied),
    /// Another commit moved the group on first; nothing was written.
    EpochMismatch {
        current_epoch: u64,
    },
    /// A key package the commit adds was not served to its sender, or was
    /// used already; nothing was written.
    NotServed {
        init_key: Vec<u8>,
    },
}

/// The queue writes of an applied commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitApplied {
    pub commit: EnqueueOutcome,
    pub welcome: Option<EnqueueOutcome>,
    /// The group's `state_version` after the commit.
    pub state_version: u64,
}

/// A processed proposal to store and fan out atomically. Its payload is
/// appended to the group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalWrite {
    pub group_id: Vec<u8>,
    /// The `state_version` the proposal was processed against.
    pub expected_state_version: u64,
    /// Members to mark as leaving (must be in the roster; others are ignored).
    pub leaving: Vec<String>,
    pub proposal: Fanout,
    /// Entries for peer servers (the proposal for their users' devices),
    /// appended to their streams in the same transaction.
    pub outbound: Vec<super::OutboundAppend>,
}

/// Result of [`super::Store::apply_proposal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalResult {
    Applied(EnqueueOutcome),
    /// The group state changed since it was read; nothing was written.
    StateChanged {
        current_epoch: u64,
        current_state_version: u64,
    },
}

/// One entry of a fetched queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    pub seq: u64,
    pub message_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub group_name: String,
    pub group_kind: GroupKind,
    pub sender: String,
    pub kind: EntryKind,
    pub payload: Vec<u8>,
    pub stored_at_ms: u64,
    pub epoch: u64,
}

/// Payload bytes one [`super::Store::fetch`] returns at most, beyond its
/// first entry: with the other fields, the answer fits the 16 MiB frame
/// limit even when the queue holds many large commits.
pub const MAX_FETCH_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Counts the payload of one fetch answer against
/// [`MAX_FETCH_PAYLOAD_BYTES`]; every store's `fetch` asks it before adding
/// an entry.
#[derive(Debug, Default)]
pub(crate) struct FetchBudget {
    used: usize,
    entries: usize,
}

impl FetchBudget {
    /// Whether an entry with `payload_len` bytes still fits (the first one
    /// always does); counts it if so.
    pub(crate) fn admit(&mut self, payload_len: usize) -> bool {
        if self.entries > 0 && self.used + payload_len > MAX_FETCH_PAYLOAD_BYTES {
            return false;
        }
        self.used += payload_len;
        self.entries += 1;
        true
    }
}

/// Result of [`super::Store::expire`]: what one call deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expired {
    /// Unacknowledged queue entries deleted with their message.
    pub queue_entries: u64,
    /// Message bodies deleted.
    pub messages: u64,
    /// Idempotency records forgotten.
    pub message_ids: u64,
    /// A limit was reached: more may be due.
    pub more: bool,
}

/// Result of [`super::Store::trim_queues`]: what one call deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrimmedQueues {
    /// Queues that were over their quota.
    pub queues: u64,
    /// Queue entries deleted from them.
    pub queue_entries: u64,
    /// A limit was reached: more may be over quota.
    pub more: bool,
}

/// Result of [`super::Store::fetch`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchedQueue {
    pub items: Vec<QueueItem>,
    /// Highest seq ever assigned in the queue (0 when none).
    pub head_seq: u64,
}

/// Result of [`super::Store::consume_invite`]. Refusals write nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteUse {
    /// One use was taken; `remaining` uses are left.
    Consumed { remaining: u32 },
    /// No invite has this token.
    Unknown,
    /// The invite's expiry time has passed (it still has uses left).
    Expired,
    /// Every use of the invite was taken (checked before expiry).
    Exhausted,
}

/// Result of [`super::Store::create_account_with_invite`]. Every outcome
/// but `Created` writes nothing: the invite keeps its uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitedAccountCreation {
    /// The account exists and one use of the invite was taken.
    Created { remaining_uses: u32 },
    /// The invite is valid but the username is taken.
    UsernameTaken,
    /// No invite has this token.
    InviteUnknown,
    /// The invite expired.
    InviteExpired,
    /// The invite has no uses left.
    InviteExhausted,
}
