//! Devices in the domain: who a request comes from ([`Caller`], an account
//! and the device its session logged in with), which queue a group
//! member's device has, whether a device may join a group, and an
//! account's device list ([`add_device`], [`list_devices`],
//! [`remove_device`]).
//!
//! A group's roster holds one device per MLS leaf; messages fan out to the
//! devices' queues, except the sending device's (the sender's other
//! devices get a copy). A device's queue name is the username for the
//! device keyed by the account key and `username#<device id>` for a linked
//! device ([`crate::storage::queue_name`]).

use crate::domain::federation::outbox::{is_remote, remote_device_entry};
use quicprochat_core::device::{check_device_label, verify_certificate, DEVICE_ID_LEN};
use quicprochat_core::ds::{AddedMember, MemberInfo};
use quicprochat_core::DeviceId;

use super::accounts::session_account;
use super::DomainError;
use crate::storage::{queue_name, Account, Device, DeviceAdded, DeviceRemoval, NewDevice, Store};

/// Who makes a request: the session's account and the queue of the device
/// it logged in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub username: &'a str,
    pub queue: &'a str,
}

impl<'a> Caller<'a> {
    /// The account's first device (keyed by the account key), whose queue
    /// is named after the account.
    pub fn first_device(username: &'a str) -> Caller<'a> {
        Caller { username, queue: username }
    }
}

/// The queue of the device of `username` with `device_id`, certified by
/// `account_key`.
fn member_queue(username: &str, account_key: &[u8], device_id: &DeviceId) -> String {
    if is_remote(username) {
        // A device of a peer's user: named with its id, never a local queue.
        return remote_device_entry(username, device_id);
    }
    queue_name(username, device_id, *device_id == DeviceId::of_key(account_key))
}

/// The device queues of a roster (the view's members, one per leaf), sorted.
pub(crate) fn queues_of(members: &[MemberInfo]) -> Vec<String> {
    let mut queues: Vec<String> =
        members.iter().map(|member| member_queue(&member.username, &member.identity_key, &member.device_id)).collect();
    queues.sort();
    queues.dedup();
    queues
}

/// The queue of a device a commit adds.
pub(crate) fn added_queue(member: &AddedMember) -> String {
    member_queue(&member.username, &member.identity_key, &member.device_id())
}

/// Fails unless the device a commit adds is a current device of its
/// account: the server never lets a leaf in for a device the account did
/// not register (the account's clients check its certificate too).
pub(crate) fn check_added_device(store: &dyn Store, member: &AddedMember) -> Result<(), DomainError> {
    let not_a_device = || {
        DomainError::denied(format!(
            "the key package adding {:?} is not from a device of that account",
            member.username
        ))
    };
    let device = store.device_by_key(&member.username, &member.device_key)?.ok_or_else(not_a_device)?;
    if !device.is_current() {
        return Err(DomainError::denied(format!(
            "the key package adding {:?} is from a device removed from that account",
            member.username
        )));
    }
    if device.queue != added_queue(member) {
        return Err(not_a_device());
    }
    Ok(())
}

/// The caller's account ([`session_account`]: it exists and is not
/// disabled), once its device is checked to be current too: every request
/// of a session starts here.
pub(crate) fn session_device(store: &dyn Store, caller: Caller<'_>) -> Result<Account, DomainError> {
    let account = session_account(store, caller.username)?;
    require_current_device(store, caller)?;
    Ok(account)
}

/// Fails unless the caller's device is still a current device of its
/// account (a removed device's session may still be open).
pub fn require_current_device(store: &dyn Store, caller: Caller<'_>) -> Result<(), DomainError> {
    current_device(store, caller).map(drop)
}

/// The caller's device, unless it is no longer a current device of its
/// account ([`require_current_device`]).
pub(crate) fn current_device(store: &dyn Store, caller: Caller<'_>) -> Result<Device, DomainError> {
    match store.device(caller.queue)? {
        Some(device) if device.username == caller.username && device.is_current() => Ok(device),
        _ => Err(DomainError::denied(format!("this device was removed from {:?}'s account", caller.username))),
    }
}

/// Registers a linked device of the caller's account: `certificate` must
/// be the account key's certificate of `device_key` (see
/// `quicprochat_core::device`). Returns the new device's id.
pub fn add_device(
    store: &dyn Store,
    caller: Caller<'_>,
    request: &AddDevice<'_>,
    max_devices: u64,
    now_ms: u64,
) -> Result<DeviceId, DomainError> {
    let account = session_device(store, caller)?;
    check_device_label(request.label).map_err(DomainError::invalid)?;
    verify_certificate(&account.identity_key, caller.username, request.device_key, request.certificate)
        .map_err(|error| DomainError::invalid(format!("the device certificate is refused: {error}")))?;
    let device_id = DeviceId::of_key(request.device_key);
    let new = NewDevice {
        username: caller.username.to_owned(),
        device_id,
        device_key: request.device_key.to_vec(),
        certificate: request.certificate.to_vec(),
        label: request.label.to_owned(),
        created_at_ms: now_ms,
    };
    match store.add_device(&new, max_devices)? {
        DeviceAdded::Added { .. } => Ok(device_id),
        DeviceAdded::KeyInUse => {
            Err(DomainError::AlreadyExists { message: "this key is a device of your account already".to_owned() })
        }
        DeviceAdded::TooMany { current } => Err(DomainError::ResourceExhausted {
            message: format!("an account has at most {max_devices} devices, yours has {current}; remove one first"),
            retry_after_ms: 0,
        }),
        DeviceAdded::UnknownAccount => {
            Err(DomainError::Unauthenticated { message: "session account no longer exists".to_owned() })
        }
    }
}

/// A device to register ([`add_device`]).
#[derive(Debug, Clone, Copy)]
pub struct AddDevice<'a> {
    pub device_key: &'a [u8],
    pub certificate: &'a [u8],
    pub label: &'a str,
}

/// Fails unless `device_key` (a link's new device) is a current device of
/// the caller's account: a device approves a link only after registering
/// the new device ([`add_device`]).
pub fn check_link_approval(store: &dyn Store, caller: Caller<'_>, device_key: &[u8]) -> Result<(), DomainError> {
    session_device(store, caller)?;
    match store.device_by_key(caller.username, device_key)? {
        Some(device) if device.is_current() => Ok(()),
        _ => Err(DomainError::invalid("register the new device (AddDevice) before approving its link")),
    }
}

/// The current devices of the caller's account, oldest first.
pub fn list_devices(store: &dyn Store, caller: Caller<'_>) -> Result<Vec<Device>, DomainError> {
    session_device(store, caller)?;
    Ok(store.devices(caller.username)?.into_iter().filter(Device::is_current).collect())
}

/// Removes the device `device_id` of the caller's account; returns its
/// queue (so the transport ends its pushes). An account keeps at least one
/// device.
pub fn remove_device(
    store: &dyn Store,
    caller: Caller<'_>,
    device_id: &[u8],
    now_ms: u64,
) -> Result<String, DomainError> {
    session_device(store, caller)?;
    let device_id = DeviceId::from_bytes(device_id)
        .ok_or_else(|| DomainError::invalid(format!("a device id is {DEVICE_ID_LEN} bytes")))?;
    match store.remove_device(caller.username, &device_id, now_ms)? {
        DeviceRemoval::Removed { queue } => Ok(queue),
        DeviceRemoval::NotFound => Err(DomainError::not_found(format!("your account has no device {device_id}"))),
        DeviceRemoval::LastDevice => {
            Err(DomainError::invalid("this is your account's only device; an account keeps at least one"))
        }
    }
}
