//! Messages across servers from the follower's side to the hub's: a user
//! of a follower sends to a group another server hosts ([`relay_message`]:
//! stored here as a stream entry to the hub, and answered `relayed`), and
//! the hub takes a peer's relayed message ([`check_relay`]: the sender must
//! be an active member with that device, then the message fans out to the
//! roster like a local one, back to the follower too for the sender's other
//! devices and its other users). A relayed message the hub refuses goes
//! back as a refusal ([`refusal_for`]), which the follower turns into a
//! `DELIVERY_FAILED` queue entry for the sender's devices
//! ([`check_refusal`]): the message shows as failed, not as sent.

use quicprochat_core::ds::inspect_application;
use quicprochat_core::names::{hub_of, local_part, split_qualified};
use quicprochat_core::DeviceId;

use super::apply::{DeviceQueues, RelayedSend, SendRefused, StreamEntry, StreamEvent};
use super::outbox::{entries_for, remote_device_entry, split_recipients, Outbox};
use crate::domain::devices::{session_device, Caller};
use crate::domain::groups::{check_group_id, others};
use crate::domain::messages::{SendMessage, SentMessage};
use crate::domain::{check_message_id, DomainError};
use crate::storage::{EntryKind, InboundEvent, NewMessage, NewOutboundEntry, OutboundAppend, Store};

/// Stores our user's message to a group hosted by `hub` as a stream entry
/// to it, idempotently on the message id. The hub checks membership (we
/// hold no roster of the group); a refusal comes back later.
pub fn relay_message(
    store: &dyn Store,
    caller: Caller<'_>,
    request: &SendMessage<'_>,
    now_ms: u64,
    (hub, outbox): (&str, &Outbox<'_>),
) -> Result<SentMessage, DomainError> {
    let session_user = caller.username;
    check_message_id(request.message_id)?;
    check_group_id(request.group_id)?;
    // A member here got the group's Welcome through this server.
    if store.remote_group(request.group_id)?.is_none_or(|group| group.hub != hub) {
        return Err(DomainError::not_found(format!(
            "no group {} of {hub} has members here",
            hex::encode(request.group_id)
        )));
    }
    if let Some(first) = store.lookup_message(session_user, request.message_id)? {
        if first.kind != EntryKind::Application || first.group_id != request.group_id {
            return Err(DomainError::invalid("message_id was already used for another message"));
        }
        return Ok(SentMessage { stored_at_ms: first.stored_at_ms, duplicate: true, fanout: None, peers: Vec::new() });
    }
    let info =
        inspect_application(request.ciphertext).map_err(|error| DomainError::from_ds("application message", error))?;
    if info.group_id != request.group_id {
        return Err(DomainError::invalid("the ciphertext is for another group than the request's"));
    }
    session_device(store, caller)?;
    let device =
        store.device(caller.queue)?.ok_or_else(|| DomainError::internal("the session's device is gone"))?.device_id;
    let relay = RelayedSend {
        group_id: request.group_id.to_vec(),
        sender: format!("{session_user}@{}", outbox.home),
        sender_device: device.as_bytes().to_vec(),
        message_id: request.message_id.to_vec(),
        epoch: info.epoch,
        payload: request.ciphertext.to_vec(),
    };
    let entry = OutboundAppend {
        peer: hub.to_owned(),
        entry: NewOutboundEntry { accepted_at_ms: now_ms, entry: (outbox.encode_relay)(&relay) },
    };
    // No queue here gets it (the hub fans it out); the id is recorded so a
    // retry is answered from it.
    let message = NewMessage {
        message_id: request.message_id.to_vec(),
        group_id: request.group_id.to_vec(),
        sender: session_user.to_owned(),
        kind: EntryKind::Application,
        payload: Vec::new(),
        epoch: info.epoch,
        stored_at_ms: now_ms,
    };
    let outcome = store.enqueue_federated(&message, &[], std::slice::from_ref(&entry))?;
    let peers = if outcome.duplicate { Vec::new() } else { vec![hub.to_owned()] };
    Ok(SentMessage { stored_at_ms: outcome.stored_at_ms, duplicate: outcome.duplicate, fanout: None, peers })
}

/// A relayed message the peer may send at all: for a group we host, from
/// one of its own users. Anything else refuses the whole batch.
pub(super) fn check_relay_binding(entry: &StreamEntry, peer: &str, home: Option<&str>) -> Result<(), DomainError> {
    let StreamEvent::Relay(relay) = &entry.event else { return Ok(()) };
    if home.is_none() || hub_of(&relay.group_id) != home {
        return Err(DomainError::denied(format!("entry {}: a relay for a group this server does not host", entry.seq)));
    }
    if split_qualified(&relay.sender).is_none_or(|(_, domain)| domain != peer) {
        return Err(DomainError::denied(format!(
            "entry {}: {peer} relays for {:?}, not one of its users",
            entry.seq, relay.sender
        )));
    }
    Ok(())
}

/// What a relayed message makes: its queue entries here and its stream
/// entries for peers, or why it is refused (the sender is no active member
/// with that device, the ciphertext is not for the group or its epoch).
pub(super) fn check_relay(
    store: &dyn Store,
    outbox: &Outbox<'_>,
    relay: &RelayedSend,
    now_ms: u64,
) -> Result<Result<(InboundEvent, Vec<OutboundAppend>), &'static str>, DomainError> {
    if relay.message_id.is_empty() || relay.message_id.len() > crate::domain::MAX_MESSAGE_ID_LEN {
        return Ok(Err("bad_message_id"));
    }
    let Some(device) = DeviceId::from_bytes(&relay.sender_device) else { return Ok(Err("bad_sender")) };
    let Some(group) = store.group_roster(&relay.group_id)? else { return Ok(Err("unknown_group")) };
    let sender_entry = remote_device_entry(&relay.sender, &device);
    let active = group.members.contains(&relay.sender) && !group.leaving.contains(&relay.sender);
    if !active || !group.devices.contains(&sender_entry) {
        return Ok(Err("not_a_member"));
    }
    match inspect_application(&relay.payload) {
        Ok(info) if info.group_id == relay.group_id && info.epoch <= group.epoch && info.epoch == relay.epoch => {}
        _ => return Ok(Err("bad_message")),
    }
    let message = NewMessage {
        message_id: relay.message_id.clone(),
        group_id: relay.group_id.clone(),
        sender: relay.sender.clone(),
        kind: EntryKind::Application,
        payload: relay.payload.clone(),
        epoch: relay.epoch,
        stored_at_ms: now_ms,
    };
    let recipients = split_recipients(&others(&group.devices, &sender_entry));
    let outbound = entries_for(outbox, (&group.name, group.kind), &message, &recipients.remote);
    Ok(Ok((InboundEvent { group: None, message, recipients: recipients.local }, outbound)))
}

/// The refusal to send back to `peer` for its relayed message refused for
/// `reason`; `None` when the message cannot be named (a malformed id).
pub(super) fn refusal_for(
    peer: &str,
    relay: &RelayedSend,
    reason: &'static str,
    now_ms: u64,
    outbox: &Outbox<'_>,
) -> Option<OutboundAppend> {
    if reason == "bad_message_id" {
        return None;
    }
    let refused = SendRefused {
        group_id: relay.group_id.clone(),
        sender: relay.sender.clone(),
        message_id: relay.message_id.clone(),
        reason: reason.to_owned(),
    };
    let entry = NewOutboundEntry { accepted_at_ms: now_ms, entry: (outbox.encode_refused)(&refused) };
    Some(OutboundAppend { peer: peer.to_owned(), entry })
}

/// A refusal the peer may send at all: of a group it hosts, for one of our
/// users. Anything else refuses the whole batch.
pub(super) fn check_refusal_binding(entry: &StreamEntry, peer: &str, home: Option<&str>) -> Result<(), DomainError> {
    let StreamEvent::Refused(refused) = &entry.event else { return Ok(()) };
    if hub_of(&refused.group_id) != Some(peer) {
        return Err(DomainError::denied(format!("entry {}: {peer} does not host this group", entry.seq)));
    }
    if home.is_none() || split_qualified(&refused.sender).map(|(_, domain)| domain) != home {
        return Err(DomainError::denied(format!(
            "entry {}: {peer} refuses a message of {:?}, not one of our users",
            entry.seq, refused.sender
        )));
    }
    Ok(())
}

/// Longest refusal reason passed on to the sender.
const MAX_REASON_LEN: usize = 64;

/// The `DELIVERY_FAILED` entry for every current device of the refused
/// message's sender, or why not (we relayed no such message).
pub(super) fn check_refusal(
    store: &dyn Store,
    devices: &mut DeviceQueues<'_>,
    peer: &str,
    refused: &SendRefused,
    now_ms: u64,
) -> Result<Result<InboundEvent, &'static str>, DomainError> {
    let sender = local_part(&refused.sender);
    if refused.message_id.is_empty() || refused.message_id.len() > crate::domain::MAX_MESSAGE_ID_LEN {
        return Ok(Err("bad_message_id"));
    }
    if store.remote_group(&refused.group_id)?.is_none_or(|group| group.hub != peer) {
        return Ok(Err("unknown_group"));
    }
    match store.lookup_message(sender, &refused.message_id)? {
        Some(record) if record.group_id == refused.group_id && record.kind == EntryKind::Application => {}
        _ => return Ok(Err("unknown_message")),
    }
    let recipients = devices.all(sender)?;
    if recipients.is_empty() {
        return Ok(Err("no_recipients"));
    }
    let reason: String = refused.reason.chars().filter(|c| !c.is_control()).take(MAX_REASON_LEN).collect();
    let message = NewMessage {
        message_id: refused.message_id.clone(),
        group_id: refused.group_id.clone(),
        // Not a username (none starts with '@'): the idempotency key of the
        // refusal, apart from the message it refers to.
        sender: format!("@{peer}"),
        kind: EntryKind::DeliveryFailed,
        payload: reason.into_bytes(),
        epoch: 0,
        stored_at_ms: now_ms,
    };
    Ok(Ok(InboundEvent { group: None, message, recipients }))
}
