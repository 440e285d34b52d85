//! The hub's side of a group with members on other servers: which of a
//! fan-out's recipients are devices of peers' users, and the stream entries
//! that carry an event to each peer (one per domain, naming its devices
//! there), written in the same store write as the local queue entries.
//!
//! A remote member's device appears in the group's device roster as
//! `name@domain#<device id>` (never a local queue: a local queue name has
//! no `@`). The server that hosts a group (its hub) is the only one that
//! fans its events out, so every entry here is of a group we host.

use std::collections::BTreeMap;

use quicprochat_core::names::split_qualified;
use quicprochat_core::DeviceId;

use super::apply::{GroupEvent, RelayedSend, SendRefused};
use crate::storage::{GroupKind, NewMessage, NewOutboundEntry, OutboundAppend};

/// What the domain needs to write for peers: this server's domain, and the
/// stream's wire form of an event (the transport's encoder; the domain
/// never sees Protobuf).
pub struct Outbox<'a> {
    pub home: &'a str,
    pub encode: &'a (dyn Fn(&GroupEvent) -> Vec<u8> + Send + Sync),
    pub encode_relay: &'a (dyn Fn(&RelayedSend) -> Vec<u8> + Send + Sync),
    pub encode_refused: &'a (dyn Fn(&SendRefused) -> Vec<u8> + Send + Sync),
}

/// The roster entry of device `device_id` of the remote user `name@domain`.
pub fn remote_device_entry(user: &str, device_id: &DeviceId) -> String {
    format!("{user}#{device_id}")
}

/// A fan-out's recipients, split: local queues, and per peer domain the
/// (name there, device id) of each of its users' devices.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recipients {
    pub local: Vec<String>,
    pub remote: BTreeMap<String, Vec<(String, Vec<u8>)>>,
}

/// Splits roster entries into local queues and remote devices. An entry
/// naming a remote user without a readable device id is dropped with a log
/// line (it cannot have been written by this server).
pub fn split_recipients<'a>(entries: impl IntoIterator<Item = &'a String>) -> Recipients {
    let mut split = Recipients::default();
    for entry in entries {
        let Some((user, device)) = entry.split_once('#').filter(|(user, _)| user.contains('@')) else {
            split.local.push(entry.clone());
            continue;
        };
        match (split_qualified(user), DeviceId::from_hex(device)) {
            (Some((name, domain)), Some(device_id)) => split
                .remote
                .entry(domain.to_owned())
                .or_default()
                .push((name.to_owned(), device_id.as_bytes().to_vec())),
            _ => tracing::error!(entry, "a roster entry of a remote device does not parse; skipped"),
        }
    }
    split
}

/// Whether `username` (as the hub reads it) is a user of another server.
pub fn is_remote(username: &str) -> bool {
    split_qualified(username).is_some()
}

/// The stream entries carrying `message` of the group (`name`, `kind`) to
/// each peer in `remote`, sent by our user `sender` (or, qualified, a
/// peer's user whose message we relay).
pub fn entries_for(
    outbox: &Outbox<'_>,
    (name, kind): (&str, GroupKind),
    message: &NewMessage,
    remote: &BTreeMap<String, Vec<(String, Vec<u8>)>>,
) -> Vec<OutboundAppend> {
    let sender =
        if is_remote(&message.sender) { message.sender.clone() } else { format!("{}@{}", message.sender, outbox.home) };
    remote
        .iter()
        .map(|(domain, devices)| {
            let event = GroupEvent {
                group_id: message.group_id.clone(),
                group_name: name.to_owned(),
                group_kind: kind,
                sender: sender.clone(),
                message_id: message.message_id.clone(),
                kind: message.kind,
                epoch: message.epoch,
                payload: message.payload.clone(),
                recipients: devices.clone(),
            };
            OutboundAppend {
                peer: domain.clone(),
                entry: NewOutboundEntry { accepted_at_ms: message.stored_at_ms, entry: (outbox.encode)(&event) },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_split_into_local_queues_and_remote_devices_by_domain() {
        let device = DeviceId::of_key(&[1; 32]);
        let entries = [
            "alice".to_owned(),
            format!("alice#{device}"),
            remote_device_entry("bob@b.example", &device),
            remote_device_entry("carol@c.example", &device),
            remote_device_entry("dave@b.example", &device),
            "eve@b.example#nothex".to_owned(),
        ];
        let split = split_recipients(&entries);
        assert_eq!(split.local, ["alice".to_owned(), format!("alice#{device}")]);
        let bytes = device.as_bytes().to_vec();
        assert_eq!(split.remote["b.example"], [("bob".to_owned(), bytes.clone()), ("dave".to_owned(), bytes.clone())]);
        assert_eq!(split.remote["c.example"], [("carol".to_owned(), bytes)]);
        assert_eq!(split.remote.len(), 2, "the malformed entry is dropped");
    }
}
