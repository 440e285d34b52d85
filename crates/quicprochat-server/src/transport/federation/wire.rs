//! Stream entries between their wire form (`v1::FedEntry` in a `FedPush`)
//! and the domain's ([`StreamEntry`]). An outbound entry is stored as an
//! encoded `FedEntry` whose `seq` and `accepted_at_ms` are filled in from
//! its row when it is sent.

use prost::Message;
use quicprochat_proto::shape::check_push_shape;
use quicprochat_proto::v1;

use crate::domain::federation::apply::{GroupEvent, RelayedSend, SendRefused, StreamEntry, StreamEvent};
use crate::domain::DomainError;
use crate::storage::{EntryKind, GroupKind, OutboundEntry};
use crate::transport::dispatch::{wire_entry_kind, wire_group_kind};

/// A `FedPush` request, decoded and in the domain's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedPush {
    pub(crate) origin: String,
    pub(crate) destination: String,
    pub(crate) instance: u64,
    pub(crate) first_available_seq: u64,
    pub(crate) entries: Vec<StreamEntry>,
}

/// Decodes a `FedPush` body: its entries and recipients are counted on the
/// wire first ([`check_push_shape`]), so decoding is bounded by the limits,
/// not by the frame size.
pub(crate) fn decode_push(body: &[u8]) -> Result<DecodedPush, DomainError> {
    check_push_shape(body).map_err(|error| DomainError::invalid(format!("malformed batch: {error}")))?;
    let request = v1::FedPushRequest::decode(body)
        .map_err(|error| DomainError::invalid(format!("malformed request: {error}")))?;
    Ok(DecodedPush {
        origin: request.origin,
        destination: request.destination,
        instance: request.instance,
        first_available_seq: request.first_available_seq,
        entries: stream_entries(request.entries),
    })
}

/// The domain form of a batch's entries. An event this server does not
/// know, or one with an unknown kind, becomes [`StreamEvent::Unknown`]
/// (applied as refused: the stream moves on).
fn stream_entries(entries: Vec<v1::FedEntry>) -> Vec<StreamEntry> {
    entries
        .into_iter()
        .map(|entry| StreamEntry {
            seq: entry.seq,
            accepted_at_ms: entry.accepted_at_ms,
            event: match entry.event {
                Some(v1::fed_entry::Event::GroupEvent(event)) => {
                    group_event(event).map_or(StreamEvent::Unknown, StreamEvent::Group)
                }
                Some(v1::fed_entry::Event::RelaySend(relay)) => StreamEvent::Relay(RelayedSend {
                    group_id: relay.group_id.to_vec(),
                    sender: relay.sender,
                    sender_device: relay.sender_device.to_vec(),
                    message_id: relay.message_id.to_vec(),
                    epoch: relay.epoch,
                    payload: relay.payload.to_vec(),
                }),
                Some(v1::fed_entry::Event::SendRefused(refused)) => StreamEvent::Refused(SendRefused {
                    group_id: refused.group_id.to_vec(),
                    sender: refused.sender,
                    message_id: refused.message_id.to_vec(),
                    reason: refused.reason,
                }),
                None => StreamEvent::Unknown,
            },
        })
        .collect()
}

fn group_event(event: v1::FedGroupEvent) -> Option<GroupEvent> {
    let group_kind = match v1::GroupKind::try_from(event.group_kind).ok()? {
        v1::GroupKind::Named => GroupKind::Named,
        v1::GroupKind::Direct => GroupKind::Direct,
    };
    let kind = match v1::EntryKind::try_from(event.kind).ok()? {
        v1::EntryKind::Application => EntryKind::Application,
        v1::EntryKind::Commit => EntryKind::Commit,
        v1::EntryKind::Welcome => EntryKind::Welcome,
        v1::EntryKind::Proposal => EntryKind::Proposal,
        // Only a follower makes these, for its own users.
        v1::EntryKind::DeliveryFailed => return None,
    };
    Some(GroupEvent {
        group_id: event.group_id.to_vec(),
        group_name: event.group_name,
        group_kind,
        sender: event.sender,
        message_id: event.message_id.to_vec(),
        kind,
        epoch: event.epoch,
        payload: event.payload.to_vec(),
        recipients: event.recipients.into_iter().map(|r| (r.username, r.device_id.to_vec())).collect(),
    })
}

/// The stored form of a group event in a peer's stream (a `FedEntry` whose
/// `seq` and `accepted_at_ms` come from its row when it is sent).
pub(crate) fn encode_group_event(event: &GroupEvent) -> Vec<u8> {
    let wire = v1::FedGroupEvent {
        group_id: event.group_id.clone().into(),
        group_name: event.group_name.clone(),
        group_kind: wire_group_kind(event.group_kind),
        sender: event.sender.clone(),
        message_id: event.message_id.clone().into(),
        kind: wire_entry_kind(event.kind),
        epoch: event.epoch,
        payload: event.payload.clone().into(),
        recipients: event
            .recipients
            .iter()
            .map(|(username, device_id)| v1::FedRecipient {
                username: username.clone(),
                device_id: device_id.clone().into(),
            })
            .collect(),
    };
    v1::FedEntry { seq: 0, accepted_at_ms: 0, event: Some(v1::fed_entry::Event::GroupEvent(wire)) }.encode_to_vec()
}

/// The stored form of a relayed message in the hub's stream.
pub(crate) fn encode_relay(relay: &RelayedSend) -> Vec<u8> {
    let wire = v1::FedRelaySend {
        group_id: relay.group_id.clone().into(),
        sender: relay.sender.clone(),
        sender_device: relay.sender_device.clone().into(),
        message_id: relay.message_id.clone().into(),
        epoch: relay.epoch,
        payload: relay.payload.clone().into(),
    };
    v1::FedEntry { seq: 0, accepted_at_ms: 0, event: Some(v1::fed_entry::Event::RelaySend(wire)) }.encode_to_vec()
}

/// The stored form of a relayed message's refusal in the hub's stream back
/// to the follower.
pub(crate) fn encode_refused(refused: &SendRefused) -> Vec<u8> {
    let wire = v1::FedSendRefused {
        group_id: refused.group_id.clone().into(),
        sender: refused.sender.clone(),
        message_id: refused.message_id.clone().into(),
        reason: refused.reason.clone(),
    };
    v1::FedEntry { seq: 0, accepted_at_ms: 0, event: Some(v1::fed_entry::Event::SendRefused(wire)) }.encode_to_vec()
}

/// The largest stored entry sent as it is: with the batch's own fields it
/// still fits the largest frame.
pub(crate) const MAX_ENTRY_BYTES: usize = quicprochat_proto::method::MAX_FRAME_LEN as usize - 64 * 1024;

/// The wire entry of a stored outbound row. A row that does not decode or
/// cannot fit a frame (neither should happen: we wrote it) goes out without
/// an event, which the peer applies as refused, so it cannot block the
/// stream.
pub(crate) fn outbound_entry(row: &OutboundEntry) -> v1::FedEntry {
    let decoded = if row.entry.len() > MAX_ENTRY_BYTES {
        Err(format!("{} bytes, more than a frame holds", row.entry.len()))
    } else {
        v1::FedEntry::decode(row.entry.as_slice()).map_err(|error| error.to_string())
    };
    let mut entry = decoded.unwrap_or_else(|error| {
        tracing::error!(seq = row.seq, %error, "an outbound federation entry cannot be sent; sending it empty");
        v1::FedEntry::default()
    });
    entry.seq = row.seq;
    entry.accepted_at_ms = row.accepted_at_ms;
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_group_event_goes_out_and_comes_back_as_it_was() {
        let event = GroupEvent {
            group_id: vec![1; 20],
            group_name: "team".into(),
            group_kind: GroupKind::Direct,
            sender: "alice@a.example".into(),
            message_id: b"m1".to_vec(),
            kind: EntryKind::Commit,
            epoch: 4,
            payload: b"commit".to_vec(),
            recipients: vec![("bob".into(), vec![2; 8])],
        };
        let row = OutboundEntry { seq: 7, accepted_at_ms: 99, entry: encode_group_event(&event) };
        let sent = outbound_entry(&row);
        assert_eq!((sent.seq, sent.accepted_at_ms), (7, 99));
        let received = stream_entries(vec![sent]);
        assert_eq!(received, [StreamEntry { seq: 7, accepted_at_ms: 99, event: StreamEvent::Group(event) }]);
        let garbage = OutboundEntry { seq: 8, accepted_at_ms: 1, entry: vec![0xff; 3] };
        assert_eq!(stream_entries(vec![outbound_entry(&garbage)])[0].event, StreamEvent::Unknown);
    }
}
