//! What the server tells plugins, as owned Rust values (moved to a
//! plugin's thread), and their `#[repr(C)]` form of ABI v1, built on that
//! thread for the length of one call. Metadata only: names, fingerprints,
//! ids, sizes, epochs, recipients, times; never a message's bytes.

use quicprochat_plugin_api::abi::*;
use quicprochat_plugin_api::host::bytes;
use quicprochat_plugin_api::host::{GateAnswer, GateError};
use quicprochat_plugin_api::instance::PluginInstance;

use crate::config::GateHook;

/// `on_register`: an account is about to be created.
#[derive(Debug, Clone)]
pub struct RegisterMeta {
    pub username: String,
    /// SHA-256 of the identity key.
    pub key_fingerprint: [u8; 32],
    /// Empty unless the plugin's `source_address` is on.
    pub source_address: String,
    pub invite_used: bool,
}

/// `on_login`: a device proved its key and is about to be logged in.
#[derive(Debug, Clone)]
pub struct LoginMeta {
    pub username: String,
    pub device_id: Vec<u8>,
    pub key_fingerprint: [u8; 32],
    pub source_address: String,
}

/// `on_group_create`: a group is about to be registered.
#[derive(Debug, Clone)]
pub struct GroupCreateMeta {
    pub direct: bool,
    pub creator: String,
    pub group_id: Vec<u8>,
    pub name: String,
}

/// `on_enqueue`: an application message is about to be stored.
#[derive(Debug, Clone)]
pub struct EnqueueMeta {
    pub sender: String,
    pub sender_device: Vec<u8>,
    pub group_id: Vec<u8>,
    pub message_id: Vec<u8>,
    pub payload_len: u64,
}

/// `on_stored`: an application message is durable and queued.
#[derive(Debug, Clone)]
pub struct StoredMeta {
    pub sender: String,
    pub group_id: Vec<u8>,
    pub message_id: Vec<u8>,
    pub payload_len: u64,
    pub epoch: u64,
    pub stored_at_ms: u64,
    /// The device queues it went to (`name` or `name#device`).
    pub recipients: Vec<String>,
}

/// `on_commit`: a commit was accepted.
#[derive(Debug, Clone)]
pub struct CommitMeta {
    pub committer: String,
    pub group_id: Vec<u8>,
    pub new_epoch: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// A question for a gate.
#[derive(Debug, Clone)]
pub enum GateEvent {
    Register(RegisterMeta),
    Login(LoginMeta),
    GroupCreate(GroupCreateMeta),
    Enqueue(EnqueueMeta),
}

impl GateEvent {
    pub fn hook(&self) -> GateHook {
        match self {
            GateEvent::Register(_) => GateHook::Register,
            GateEvent::Login(_) => GateHook::Login,
            GateEvent::GroupCreate(_) => GateHook::GroupCreate,
            GateEvent::Enqueue(_) => GateHook::Enqueue,
        }
    }

    /// The event with the client's address blanked (for a plugin that did
    /// not opt in to `source_address`); `None` if it carries none.
    pub(super) fn without_source_address(&self) -> Option<GateEvent> {
        match self {
            GateEvent::Register(e) if !e.source_address.is_empty() => {
                Some(GateEvent::Register(RegisterMeta { source_address: String::new(), ..e.clone() }))
            }
            GateEvent::Login(e) if !e.source_address.is_empty() => {
                Some(GateEvent::Login(LoginMeta { source_address: String::new(), ..e.clone() }))
            }
            _ => None,
        }
    }

    /// Asks `instance`'s gate; `None` if it has none or is poisoned.
    pub(super) fn ask(&self, instance: &mut PluginInstance) -> Option<Result<GateAnswer, GateError>> {
        match self {
            GateEvent::Register(e) => {
                let event = QpcRegisterEvent {
                    struct_size: size_of_u32::<QpcRegisterEvent>(),
                    invite_used: u32::from(e.invite_used),
                    username: bytes(e.username.as_bytes()),
                    key_fingerprint: bytes(&e.key_fingerprint),
                    source_address: bytes(e.source_address.as_bytes()),
                };
                instance.ask(|table| table.on_register, &event)
            }
            GateEvent::Login(e) => {
                let event = QpcLoginEvent {
                    struct_size: size_of_u32::<QpcLoginEvent>(),
                    username: bytes(e.username.as_bytes()),
                    device_id: bytes(&e.device_id),
                    key_fingerprint: bytes(&e.key_fingerprint),
                    source_address: bytes(e.source_address.as_bytes()),
                };
                instance.ask(|table| table.on_login, &event)
            }
            GateEvent::GroupCreate(e) => {
                let event = QpcGroupCreateEvent {
                    struct_size: size_of_u32::<QpcGroupCreateEvent>(),
                    kind: if e.direct { QPC_GROUP_DIRECT } else { QPC_GROUP_NAMED },
                    creator: bytes(e.creator.as_bytes()),
                    group_id: bytes(&e.group_id),
                    name: bytes(e.name.as_bytes()),
                };
                instance.ask(|table| table.on_group_create, &event)
            }
            GateEvent::Enqueue(e) => {
                let event = QpcEnqueueEvent {
                    struct_size: size_of_u32::<QpcEnqueueEvent>(),
                    kind: QPC_ENTRY_APPLICATION,
                    sender: bytes(e.sender.as_bytes()),
                    sender_device: bytes(&e.sender_device),
                    group_id: bytes(&e.group_id),
                    message_id: bytes(&e.message_id),
                    payload_len: e.payload_len,
                    epoch: 0,
                };
                instance.ask(|table| table.on_enqueue, &event)
            }
        }
    }
}

/// Something plugins are told.
#[derive(Debug, Clone)]
pub enum ObservedEvent {
    Stored(StoredMeta),
    Commit(CommitMeta),
}

impl ObservedEvent {
    /// The observer's name, for metrics.
    pub fn hook_name(&self) -> &'static str {
        match self {
            ObservedEvent::Stored(_) => "on_stored",
            ObservedEvent::Commit(_) => "on_commit",
        }
    }

    pub(super) fn tell(&self, instance: &mut PluginInstance) {
        match self {
            ObservedEvent::Stored(e) => {
                let recipients: Vec<QpcBytes> = e.recipients.iter().map(|r| bytes(r.as_bytes())).collect();
                let event = QpcStoredEvent {
                    struct_size: size_of_u32::<QpcStoredEvent>(),
                    kind: QPC_ENTRY_APPLICATION,
                    sender: bytes(e.sender.as_bytes()),
                    group_id: bytes(&e.group_id),
                    message_id: bytes(&e.message_id),
                    payload_len: e.payload_len,
                    epoch: e.epoch,
                    stored_at_ms: e.stored_at_ms,
                    recipients: recipients.as_ptr(),
                    recipients_len: recipients.len(),
                };
                instance.tell(|table| table.on_stored, &event);
            }
            ObservedEvent::Commit(e) => {
                let added: Vec<QpcBytes> = e.added.iter().map(|name| bytes(name.as_bytes())).collect();
                let removed: Vec<QpcBytes> = e.removed.iter().map(|name| bytes(name.as_bytes())).collect();
                let event = QpcCommitEvent {
                    struct_size: size_of_u32::<QpcCommitEvent>(),
                    committer: bytes(e.committer.as_bytes()),
                    group_id: bytes(&e.group_id),
                    new_epoch: e.new_epoch,
                    added: added.as_ptr(),
                    added_len: added.len(),
                    removed: removed.as_ptr(),
                    removed_len: removed.len(),
                };
                instance.tell(|table| table.on_commit, &event);
            }
        }
    }
}

/// An event struct's size, as its `struct_size` field says it.
fn size_of_u32<T>() -> u32 {
    u32::try_from(core::mem::size_of::<T>()).unwrap_or(u32::MAX)
}

/// Whether a plugin with this table has the gate.
pub(super) fn has_gate(table: &QpcPluginV1, hook: GateHook) -> bool {
    match hook {
        GateHook::Register => table.on_register.is_some(),
        GateHook::Login => table.on_login.is_some(),
        GateHook::GroupCreate => table.on_group_create.is_some(),
        GateHook::Enqueue => table.on_enqueue.is_some(),
    }
}
