//! Records of federation that cross the [`Store`](super::Store) trait: the
//! stream with each peer server (our outbound side and its inbound side),
//! the outbound entries not yet acknowledged, and what applying a peer's
//! batch writes.
//!
//! An outbound entry is kept as the encoded event (the store never looks
//! inside); its `seq` is assigned when it is appended.

use super::{GroupKind, NewMessage};

/// A new outbound stream instance: random, nonzero, and within a signed
/// 64-bit integer (what SQLite stores).
pub fn new_stream_instance() -> u64 {
    (rand::random::<u64>() >> 1).max(1)
}

/// The streams between this server and one peer, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FedStream {
    /// The peer's domain.
    pub peer: String,
    /// Our outbound stream's instance (nonzero, random, made with the row).
    pub out_instance: u64,
    /// Highest outbound seq the peer confirmed applied.
    pub out_acked: u64,
    /// Highest outbound seq written.
    pub out_last: u64,
    /// Highest outbound seq deleted by retention before it was acknowledged.
    pub out_expired: u64,
    /// When the oldest unacknowledged outbound entry was accepted, if any.
    pub oldest_pending_ms: Option<u64>,
    /// The peer's inbound stream instance we last applied (0: never).
    pub in_instance: u64,
    /// Highest inbound seq of that instance applied here.
    pub in_applied: u64,
}

impl FedStream {
    /// Outbound entries written and neither acknowledged nor expired.
    pub fn pending(&self) -> u64 {
        self.out_last.saturating_sub(self.out_acked.max(self.out_expired))
    }
}

/// An entry to append to the outbound stream towards a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboundEntry {
    /// When the event was accepted here.
    pub accepted_at_ms: u64,
    /// The encoded event.
    pub entry: Vec<u8>,
}

/// An entry for the stream towards `peer`, appended in the same write as
/// the event that made it (the transactional outbox: an event accepted
/// here always has its entries for the peers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundAppend {
    pub peer: String,
    pub entry: NewOutboundEntry,
}

/// An outbound entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEntry {
    pub seq: u64,
    pub accepted_at_ms: u64,
    pub entry: Vec<u8>,
}

/// A group hosted by a peer, as its events label it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteGroup {
    pub group_id: Vec<u8>,
    /// The peer hosting it.
    pub hub: String,
    pub name: String,
    pub kind: GroupKind,
}

/// One event of a peer's batch, to queue for local devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEvent {
    /// The peer's group it belongs to (its label is upserted); `None` for
    /// a message of a group we host (a relayed send).
    pub group: Option<RemoteGroup>,
    /// The message; enqueued idempotently on `(sender, message_id)`.
    pub message: NewMessage,
    /// Device queues (current devices of local accounts).
    pub recipients: Vec<String>,
}

/// A batch's effect, written in one transaction: the events queued and the
/// inbound stream state moved to `(instance, applied_seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundApply<'a> {
    pub peer: &'a str,
    pub instance: u64,
    pub applied_seq: u64,
    pub events: &'a [InboundEvent],
    /// Entries for peers' streams (relayed messages fanned out again),
    /// appended in the same write.
    pub outbound: &'a [OutboundAppend],
}
