//! The in-memory store's federation state: streams with each peer, their
//! outbound entries, and the labels of groups peers host. Mirrors
//! `sqlite/federation.rs` (the conformance suite holds both to it).

use std::collections::BTreeMap;

use super::Inner;
use crate::storage::{
    new_stream_instance, EnqueueOutcome, EntryKind, FedStream, GroupKind, InboundApply, NewOutboundEntry,
    OutboundAppend, OutboundEntry, StoreError,
};

/// Federation tables of [`Inner`].
#[derive(Debug, Default)]
pub(super) struct FederationTables {
    streams: BTreeMap<String, FedStream>,
    outbound: BTreeMap<(String, u64), OutboundEntry>,
    /// Group id → (hub, name, kind).
    pub(super) remote_groups: BTreeMap<Vec<u8>, (String, String, GroupKind)>,
}

impl FederationTables {
    fn stream(&mut self, peer: &str) -> &mut FedStream {
        self.streams.entry(peer.to_owned()).or_insert_with(|| FedStream {
            peer: peer.to_owned(),
            out_instance: new_stream_instance(),
            out_acked: 0,
            out_last: 0,
            out_expired: 0,
            oldest_pending_ms: None,
            in_instance: 0,
            in_applied: 0,
        })
    }

    fn with_oldest(&self, stream: &FedStream) -> FedStream {
        // The first entry of the stream, as SQLite reads it.
        let oldest = self
            .outbound
            .range((stream.peer.clone(), 0)..=(stream.peer.clone(), u64::MAX))
            .map(|(_, entry)| entry.accepted_at_ms)
            .next();
        FedStream { oldest_pending_ms: oldest, ..stream.clone() }
    }

    pub(super) fn fed_stream(&self, peer: &str) -> Option<FedStream> {
        self.streams.get(peer).map(|stream| self.with_oldest(stream))
    }

    pub(super) fn fed_streams(&self) -> Vec<FedStream> {
        self.streams.values().map(|stream| self.with_oldest(stream)).collect()
    }

    pub(super) fn append_outbound(&mut self, peer: &str, entries: &[NewOutboundEntry]) -> u64 {
        let mut last = self.stream(peer).out_last;
        for entry in entries {
            last += 1;
            let stored = OutboundEntry { seq: last, accepted_at_ms: entry.accepted_at_ms, entry: entry.entry.clone() };
            self.outbound.insert((peer.to_owned(), last), stored);
        }
        self.stream(peer).out_last = last;
        last
    }

    pub(super) fn append_all(&mut self, outbound: &[OutboundAppend]) {
        for append in outbound {
            self.append_outbound(&append.peer, std::slice::from_ref(&append.entry));
        }
    }

    pub(super) fn read_outbound(
        &self,
        peer: &str,
        from_seq: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Vec<OutboundEntry> {
        let (mut entries, mut bytes) = (Vec::new(), 0usize);
        for (_, entry) in self.outbound.range((peer.to_owned(), from_seq)..=(peer.to_owned(), u64::MAX)) {
            bytes = bytes.saturating_add(entry.entry.len());
            if entries.len() == max_entries || (!entries.is_empty() && bytes > max_bytes) {
                break;
            }
            entries.push(entry.clone());
        }
        entries
    }

    pub(super) fn ack_outbound(&mut self, peer: &str, through_seq: u64) {
        let stream = self.stream(peer);
        stream.out_acked = stream.out_acked.max(through_seq);
        self.outbound.retain(|(owner, seq), _| owner != peer || *seq > through_seq);
    }

    pub(super) fn expire_outbound(&mut self, peer: &str, before_ms: u64) -> (u64, u64) {
        let range = (peer.to_owned(), 0)..=(peer.to_owned(), u64::MAX);
        let last_old = self
            .outbound
            .range(range)
            .filter(|(_, entry)| entry.accepted_at_ms < before_ms)
            .map(|((_, seq), _)| *seq)
            .max();
        let mut deleted = 0;
        if let Some(through) = last_old {
            let before = self.outbound.len();
            self.outbound.retain(|(owner, seq), _| owner != peer || *seq > through);
            deleted = (before - self.outbound.len()) as u64;
            let stream = self.stream(peer);
            stream.out_expired = stream.out_expired.max(through);
        }
        (self.stream(peer).out_expired, deleted)
    }

    pub(super) fn set_outbound_instance(&mut self, peer: &str, instance: u64) {
        self.stream(peer).out_instance = instance;
    }
}

impl Inner {
    pub(super) fn apply_inbound(&mut self, apply: &InboundApply<'_>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        // Check first, so that a refusal changes nothing (one write).
        for event in apply.events {
            if self.duplicate_of(&event.message).is_none() {
                self.check_recipients(&event.recipients)?;
            }
        }
        let mut outcomes = Vec::with_capacity(apply.events.len());
        for event in apply.events {
            if let Some(group) = &event.group {
                let label = (group.hub.clone(), group.name.clone(), group.kind);
                let remote = &mut self.federation.remote_groups;
                match remote.get(&group.group_id) {
                    Some((hub, _, _)) if *hub != group.hub => {}
                    _ => {
                        remote.insert(group.group_id.clone(), label);
                    }
                }
            }
            // As in SQLite: only the commit records the id it shares with its Welcome.
            let record_id = event.message.kind != EntryKind::Welcome;
            let outcome = match self.duplicate_of(&event.message) {
                Some(first) => first,
                None => self.insert_fanout(&event.message, &event.recipients, record_id),
            };
            outcomes.push(outcome);
        }
        self.federation.append_all(apply.outbound);
        let stream = self.federation.stream(apply.peer);
        stream.in_instance = apply.instance;
        stream.in_applied = apply.applied_seq;
        Ok(outcomes)
    }
}
