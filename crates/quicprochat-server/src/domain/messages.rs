//! Application messages: checks that a ciphertext is a PrivateMessage for
//! the named group, that its sender may post (an active roster member), and
//! fans it out to the rest of the roster, idempotently on the message id.
//! Nothing here decrypts: the server cannot read application messages.

use quicprochat_core::ds::inspect_application;

use super::devices::{session_device, Caller};
use super::federation::outbox::{entries_for, split_recipients, Outbox};
use super::groups::{check_group_id, load_roster, others, require_active_member, require_member_device};
use super::{check_message_id, DomainError};
use crate::storage::{EntryKind, GroupKind, NewMessage, Store};

/// An application message to post.
#[derive(Debug, Clone, Copy)]
pub struct SendMessage<'a> {
    pub group_id: &'a [u8],
    pub message_id: &'a [u8],
    /// MlsMessage carrying a PrivateMessage.
    pub ciphertext: &'a [u8],
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// When the message was first made durable.
    pub stored_at_ms: u64,
    /// True when this was a retry of an already stored message.
    pub duplicate: bool,
    /// What was queued, for push; `None` for a retry (nothing new was queued).
    pub fanout: Option<Fanout>,
    /// Peer servers whose streams got an entry (their senders are woken).
    pub peers: Vec<String>,
}

/// The queue entries one new message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// `(recipient, seq)` of each queue entry written.
    pub deliveries: Vec<(String, u64)>,
    /// The group's name and kind, as recipients see them in queue entries.
    pub group_name: String,
    pub group_kind: GroupKind,
    /// The epoch the message was encrypted in.
    pub epoch: u64,
}

/// Stores an application message once and queues it for every other member.
pub fn send_message(
    store: &dyn Store,
    caller: Caller<'_>,
    request: &SendMessage<'_>,
    now_ms: u64,
) -> Result<SentMessage, DomainError> {
    send_message_federated(store, caller, request, now_ms, None)
}

/// [`send_message`] on a federating server (`outbox`): devices of peers'
/// users in the group get the message as stream entries, written with the
/// local queue entries (in a group this server hosts).
pub fn send_message_federated(
    store: &dyn Store,
    caller: Caller<'_>,
    request: &SendMessage<'_>,
    now_ms: u64,
    outbox: Option<&Outbox<'_>>,
) -> Result<SentMessage, DomainError> {
    let session_user = caller.username;
    check_message_id(request.message_id)?;
    check_group_id(request.group_id)?;
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
    let group = load_roster(store, request.group_id)?;
    session_device(store, caller)?;
    require_active_member(&group, session_user)?;
    require_member_device(&group, caller)?;
    if info.epoch > group.epoch {
        return Err(DomainError::invalid(format!(
            "the ciphertext is for epoch {}, the group is at epoch {}",
            info.epoch, group.epoch
        )));
    }
    let message = NewMessage {
        message_id: request.message_id.to_vec(),
        group_id: request.group_id.to_vec(),
        sender: session_user.to_owned(),
        kind: EntryKind::Application,
        payload: request.ciphertext.to_vec(),
        epoch: info.epoch,
        stored_at_ms: now_ms,
    };
    // Every device of the roster but the sending one: the sender's other
    // devices get a copy too; peers' users' devices through their servers.
    let recipients = split_recipients(&others(&group.devices, caller.queue));
    let outbound = match outbox {
        Some(outbox) => entries_for(outbox, (&group.name, group.kind), &message, &recipients.remote),
        None if recipients.remote.is_empty() => Vec::new(),
        None => return Err(DomainError::internal("a group with remote members on a server that does not federate")),
    };
    let outcome = store.enqueue_federated(&message, &recipients.local, &outbound)?;
    Ok(SentMessage {
        stored_at_ms: outcome.stored_at_ms,
        duplicate: outcome.duplicate,
        peers: if outcome.duplicate { Vec::new() } else { recipients.remote.into_keys().collect() },
        fanout: (!outcome.duplicate).then(|| Fanout {
            deliveries: outcome.deliveries.into_iter().map(|delivery| (delivery.queue, delivery.seq)).collect(),
            group_name: group.name,
            group_kind: group.kind,
            epoch: info.epoch,
        }),
    })
}
