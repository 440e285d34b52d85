//! Applying a peer's batch of stream entries (`FedPush`, the receiver side).
//!
//! The batch is planned by the [`InboundStream`] from the inbound state in
//! the store (which entries are new, duplicates, a gap, a jump), each new
//! entry is checked against the binding rules, and then every event that
//! passed is queued and the inbound state moved in **one** store write, so
//! the entries take effect exactly once: a batch applied is never applied
//! again (its seqs are at or below the recorded `applied_seq`), and a batch
//! whose write was lost is applied again in full. Resends across a sender's
//! instance change are caught by the enqueue's idempotency on
//! `(sender, message_id)`.
//!
//! A peer speaks only for the groups it hosts: a batch with an event for a
//! group whose id does not name the peer as its hub is refused whole with
//! `PERMISSION_DENIED`, and nothing of it is written (an honest peer never
//! sends one; the refusal stalls only that peer's own stream). Any other
//! entry that cannot take effect here is *applied as refused*: it is not
//! queued, but its seq advances like any other, so one entry this server
//! cannot use (an event kind it does not know, a malformed field, no
//! current device of the users it names, a `(sender, message id)` already
//! used in another group) never blocks the stream. Stream numbers beyond
//! what the store records (above `i64::MAX`) refuse the batch.
//!
//! Run it as one job on the storage executor: its reads and its write then
//! see one consistent state, and the answer goes out only once it is durable.

use std::collections::HashMap;

use quicprochat_core::names::{hub_of, split_qualified};
use quicprochat_core::DeviceId;

use super::outbox::Outbox;
use super::relay::{check_refusal, check_refusal_binding, check_relay, check_relay_binding, refusal_for};
use super::stream::{BatchError, InboundState, InboundStream};
use crate::domain::groups::MAX_GROUP_NAME_LEN;
use crate::domain::{DomainError, MAX_MESSAGE_ID_LEN};
use crate::storage::{EntryKind, GroupKind, InboundApply, InboundEvent, NewMessage, RemoteGroup, Store};

/// Most recipients one group event may name (devices of one destination).
pub const MAX_EVENT_RECIPIENTS: usize = 16 * 1024;

/// A batch of a peer's stream, as decoded from the wire.
#[derive(Debug, Clone)]
pub struct InboundBatch<'a> {
    /// The authenticated peer (from the TLS session, never the request).
    pub peer: &'a str,
    pub instance: u64,
    pub first_available_seq: u64,
    pub entries: &'a [StreamEntry],
}

/// One entry of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub seq: u64,
    /// When the origin accepted the event.
    pub accepted_at_ms: u64,
    pub event: StreamEvent,
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// An event of a group the peer hosts, for devices here.
    Group(GroupEvent),
    /// A message of one of the peer's users to a group we host.
    Relay(RelayedSend),
    /// The peer, a group's hub, refused a message one of our users relayed.
    Refused(SendRefused),
    /// An event this server does not know (a newer peer): applied as refused.
    Unknown,
}

/// A group's event for local devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    pub group_id: Vec<u8>,
    pub group_name: String,
    pub group_kind: GroupKind,
    /// `name@domain`.
    pub sender: String,
    pub message_id: Vec<u8>,
    pub kind: EntryKind,
    pub epoch: u64,
    pub payload: Vec<u8>,
    /// (local username, device id) pairs.
    pub recipients: Vec<(String, Vec<u8>)>,
}

/// A message a peer relays from one of its users to a group we host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedSend {
    pub group_id: Vec<u8>,
    /// `name@peer`.
    pub sender: String,
    pub sender_device: Vec<u8>,
    pub message_id: Vec<u8>,
    pub epoch: u64,
    pub payload: Vec<u8>,
}

/// A hub's refusal of a message one of our users relayed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRefused {
    pub group_id: Vec<u8>,
    /// `name@home`: our user.
    pub sender: String,
    pub message_id: Vec<u8>,
    /// A word (the hub's refusal label).
    pub reason: String,
}

/// An entry applied as refused, and why (a metric label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub seq: u64,
    pub reason: &'static str,
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchApplied {
    /// The answer to the peer: every seq through this one took effect.
    pub applied_through: u64,
    /// Entries queued now (kind, when the origin accepted them).
    pub queued: Vec<(EntryKind, u64)>,
    /// Entries at or below the applied seq, or events queued before.
    pub duplicates: usize,
    pub refused: Vec<Refusal>,
    /// Seqs the sender no longer had (expired there).
    pub skipped: u64,
    /// The device queues that got entries (their push tasks are woken).
    pub queues: Vec<String>,
    /// Peers whose streams got entries (relayed messages fanned out again).
    pub peers: Vec<String>,
}

/// Applies `batch` from its peer; see the module docs. Without `outbox`
/// (this server's domain and stream encoders) relayed messages are refused.
pub fn apply_batch(store: &dyn Store, batch: &InboundBatch<'_>, now_ms: u64) -> Result<BatchApplied, DomainError> {
    apply_batch_federated(store, batch, now_ms, None)
}

/// [`apply_batch`] on a server that hosts groups with members elsewhere:
/// a peer's relayed messages to our groups are checked and fanned out.
pub fn apply_batch_federated(
    store: &dyn Store,
    batch: &InboundBatch<'_>,
    now_ms: u64,
    outbox: Option<&Outbox<'_>>,
) -> Result<BatchApplied, DomainError> {
    check_ranges(batch)?;
    // Read without making the row: a refused batch writes nothing at all.
    let state = store.fed_stream(batch.peer)?.map_or(InboundState::default(), |stream| InboundState {
        instance: stream.in_instance,
        applied_seq: stream.in_applied,
    });
    let inbound = InboundStream::new(state);
    let seqs: Vec<u64> = batch.entries.iter().map(|entry| entry.seq).collect();
    let plan = inbound
        .plan(batch.instance, batch.first_available_seq, &seqs)
        .map_err(|error: BatchError| DomainError::invalid(format!("malformed batch: {error}")))?;
    let mut applied = BatchApplied {
        applied_through: plan.applied_through(),
        duplicates: plan.duplicates,
        skipped: plan.skipped,
        ..BatchApplied::default()
    };
    let mut events = Vec::new();
    let mut accepted = Vec::new();
    let mut outbound = Vec::new();
    // Refusals of relayed messages, back to the peer in the same write.
    let mut refusals = Vec::new();
    let mut devices = DeviceQueues::new(store);
    for entry in &batch.entries[plan.apply.clone()] {
        if let StreamEvent::Group(event) = &entry.event {
            if hub_of(&event.group_id) != Some(batch.peer) {
                return Err(DomainError::PermissionDenied {
                    message: format!("entry {}: {} does not host this group", entry.seq, batch.peer),
                });
            }
        }
        check_relay_binding(entry, batch.peer, outbox.map(|outbox| outbox.home))?;
        check_refusal_binding(entry, batch.peer, outbox.map(|outbox| outbox.home))?;
        let checked = match (&entry.event, outbox) {
            (StreamEvent::Relay(relay), Some(outbox)) => match check_relay(store, outbox, relay, now_ms)? {
                Ok(checked) => Ok(checked),
                Err(reason) => {
                    refusals.extend(refusal_for(batch.peer, relay, reason, now_ms, outbox));
                    Err(reason)
                }
            },
            (StreamEvent::Refused(refused), Some(_)) => {
                check_refusal(store, &mut devices, batch.peer, refused, now_ms)?.map(|event| (event, Vec::new()))
            }
            _ => check_entry(store, &mut devices, batch.peer, entry, now_ms)?.map(|event| (event, Vec::new())),
        };
        match checked {
            Ok((event, entries)) => {
                accepted.push((event.message.kind, entry.accepted_at_ms));
                events.push(event);
                outbound.push(entries);
            }
            Err(reason) => applied.refused.push(Refusal { seq: entry.seq, reason }),
        }
    }
    if plan.apply.is_empty() && plan.new_state == plan.previous {
        return Ok(applied);
    }
    // A relayed message already taken (resent across an instance change)
    // is not fanned out again: its stream entries are dropped with it.
    let mut fanned_out = Vec::new();
    for (event, entries) in events.iter().zip(outbound) {
        if store.lookup_message(&event.message.sender, &event.message.message_id)?.is_none() {
            fanned_out.extend(entries);
        }
    }
    fanned_out.extend(refusals);
    let write = InboundApply {
        peer: batch.peer,
        instance: plan.new_state.instance,
        applied_seq: plan.new_state.applied_seq,
        events: &events,
        outbound: &fanned_out,
    };
    let outcomes = store.apply_inbound(&write)?;
    applied.peers = fanned_out.iter().map(|append| append.peer.clone()).collect();
    applied.peers.sort();
    applied.peers.dedup();
    for ((event, outcome), kind_and_time) in events.iter().zip(&outcomes).zip(accepted) {
        if outcome.duplicate {
            applied.duplicates += 1;
            continue;
        }
        applied.queued.push(kind_and_time);
        applied.queues.extend(event.recipients.iter().cloned());
    }
    applied.queues.sort();
    applied.queues.dedup();
    Ok(applied)
}

/// Largest value a stored integer may take (SQLite integers are signed).
const MAX_STORED: u64 = i64::MAX as u64;

/// Refuses a batch whose stream numbers no store can record: an honest
/// peer never gets near them.
fn check_ranges(batch: &InboundBatch<'_>) -> Result<(), DomainError> {
    let too_large = batch.instance > MAX_STORED
        || batch.first_available_seq > MAX_STORED
        || batch.entries.iter().any(|entry| entry.seq > MAX_STORED);
    if too_large {
        return Err(DomainError::invalid(format!("malformed batch: stream numbers above {MAX_STORED}")));
    }
    Ok(())
}

/// The current device queues of local accounts, each account read once per batch.
pub(super) struct DeviceQueues<'a> {
    store: &'a dyn Store,
    known: HashMap<String, Vec<(DeviceId, String)>>,
}

impl<'a> DeviceQueues<'a> {
    fn new(store: &'a dyn Store) -> DeviceQueues<'a> {
        DeviceQueues { store, known: HashMap::new() }
    }

    /// The queue of `username`'s current device `device_id`, if it has one.
    fn queue(&mut self, username: &str, device_id: &[u8]) -> Result<Option<String>, DomainError> {
        let Some(device_id) = DeviceId::from_bytes(device_id) else { return Ok(None) };
        let devices = self.current(username)?;
        Ok(devices.iter().find(|(id, _)| *id == device_id).map(|(_, queue)| queue.clone()))
    }

    /// The queues of every current device of `username`.
    pub(super) fn all(&mut self, username: &str) -> Result<Vec<String>, DomainError> {
        Ok(self.current(username)?.iter().map(|(_, queue)| queue.clone()).collect())
    }

    fn current(&mut self, username: &str) -> Result<&[(DeviceId, String)], DomainError> {
        if !self.known.contains_key(username) {
            let current = self
                .store
                .devices(username)?
                .into_iter()
                .filter(|device| device.removed_at_ms.is_none())
                .map(|device| (device.device_id, device.queue))
                .collect();
            self.known.insert(username.to_owned(), current);
        }
        Ok(self.known.get(username).map(Vec::as_slice).unwrap_or_default())
    }
}

/// The event to queue for `entry`, or why it is refused; `Err` only for a
/// storage failure.
fn check_entry(
    store: &dyn Store,
    devices: &mut DeviceQueues<'_>,
    peer: &str,
    entry: &StreamEntry,
    now_ms: u64,
) -> Result<Result<InboundEvent, &'static str>, DomainError> {
    let StreamEvent::Group(event) = &entry.event else {
        // A relay here means we cannot fan it out (no outbox): unknown to us.
        return Ok(Err("unknown_event"));
    };
    if event.epoch > MAX_STORED {
        return Ok(Err("bad_epoch"));
    }
    if split_qualified(&event.sender).is_none() {
        return Ok(Err("bad_sender"));
    }
    if event.message_id.is_empty() || event.message_id.len() > MAX_MESSAGE_ID_LEN {
        return Ok(Err("bad_message_id"));
    }
    let name_length = event.group_name.chars().count();
    if name_length == 0 || name_length > MAX_GROUP_NAME_LEN || event.group_name.chars().any(char::is_control) {
        return Ok(Err("bad_group_name"));
    }
    if event.recipients.is_empty() || event.recipients.len() > MAX_EVENT_RECIPIENTS {
        return Ok(Err("bad_recipients"));
    }
    // The same (sender, message id) in another group is not a resend of
    // this one: a peer must not make us drop another hub's event.
    if let Some(record) = store.lookup_message(&event.sender, &event.message_id)? {
        if record.group_id != event.group_id {
            return Ok(Err("message_id_conflict"));
        }
    }
    let mut queues = Vec::with_capacity(event.recipients.len());
    for (username, device_id) in &event.recipients {
        if let Some(queue) = devices.queue(username, device_id)? {
            queues.push(queue);
        }
    }
    queues.sort();
    queues.dedup();
    if queues.is_empty() {
        return Ok(Err("no_recipients"));
    }
    Ok(Ok(InboundEvent {
        group: Some(RemoteGroup {
            group_id: event.group_id.clone(),
            hub: peer.to_owned(),
            name: event.group_name.clone(),
            kind: event.group_kind,
        }),
        message: NewMessage {
            message_id: event.message_id.clone(),
            group_id: event.group_id.clone(),
            sender: event.sender.clone(),
            kind: event.kind,
            payload: event.payload.clone(),
            epoch: event.epoch,
            stored_at_ms: now_ms,
        },
        recipients: queues,
    }))
}
