//! The server-to-server stream: an ordered, exactly-once, durable stream of entries from an
//! origin server to one destination server, as two sans-IO state machines.
//!
//! Each direction between two servers is one stream. Its entries (a relayed message, a group
//! event, ...) carry a contiguous `seq`, from 1, within a sender `instance` (a nonzero random id
//! that changes only when the sender's database went back in time, e.g. restored from a backup).
//! The entries themselves live in the caller's storage: these machines deal in seq numbers and
//! state only, and that state is plain data the caller persists.
//!
//! - [`OutboundStream`] (sender side) decides what to send next, what an answer acknowledges
//!   (rows the caller may now delete), and when to retry: one batch in flight at a time, resent
//!   after a transport error or an unanswered deadline with full-jitter exponential backoff from
//!   `retry_min` to `retry_max`, never giving up (entries leave by acknowledgement or retention).
//! - [`InboundStream`] (receiver side, one per peer) says what an arriving batch means:
//!   [`InboundStream::plan`] lists the entries to apply, in order, the duplicates, a gap, the
//!   seqs skipped because the sender no longer has them, and the new [`InboundState`] the caller
//!   stores in the transaction that applies the entries. The answer is that state's
//!   `applied_seq`: applying and recording it atomically is what makes every entry take effect
//!   exactly once, in order.
//!
//! Neither does IO: no sockets, no tokio, no storage, no clock reads and no global randomness.
//! Time comes in as the `now` argument and the backoff jitter from the seed given to
//! [`OutboundStream::new`], so the same inputs always give the same outputs.
//!
//! # Call order for the sender's driver (one per peer)
//!
//! ```text
//! let mut stream = OutboundStream::new(persisted_state, policy, seed)?;
//! loop {
//!     // 1. Send what is due (at most one batch is ever in flight).
//!     if let Some(OutboundAction::Send(request)) = stream.poll_action(now) {
//!         read ≤ MAX_BATCH_ENTRIES / ≤ MAX_BATCH_BYTES rows from request.from_seq (one entry
//!         always fits); stream.handle_sent(request.batch_id, first, last, now)?;
//!         send (request.instance, request.first_available_seq, rows) to the peer;
//!         on a reading error: stream.handle_failure(request.batch_id, now);
//!     }
//!     // 2. Wait for whichever comes first.
//!     select! {
//!         _ = sleep_until(stream.poll_timeout()) => stream.handle_timeout(now),
//!         answer(batch_id, applied_through) => match stream.handle_answer(batch_id, applied_through, now) {
//!             Acked { acked_through, .. } => delete rows ≤ acked_through, persist it,
//!             ReceiverAhead { .. }        => persist a fresh instance, stream.start_new_instance(it),
//!             Stalled { .. } | Ignored    => nothing,
//!         },
//!         transport error, UNAVAILABLE   => stream.handle_failure(batch_id, now),
//!         rows written (accepting txn)    => stream.handle_written(last_seq),
//!         rows deleted by retention       => stream.handle_expired(through_seq),
//!         the peer got in touch (hello)   => stream.handle_wake(now),
//!     }
//! }
//! ```
//!
//! # Call order for the receiver (one batch of a peer at a time)
//!
//! ```text
//! let plan = inbound.plan(batch.instance, batch.first_available_seq, &entry_seqs)?; // refused: bad batch
//! in one transaction: apply entries[plan.apply] in order, store plan.new_state; commit (fsync);
//! inbound.handle_applied(&plan)?;
//! answer plan.applied_through();
//! ```
//!
//! An entry the receiver refuses for good (bad content, a binding rule broken) is still applied
//! *as refused*: the caller records the refusal (or drops it) in the same transaction and the seq
//! advances regardless, so a poison entry never blocks the stream. The machine does not need to
//! know which entries were refused.
//!
//! # Limits of what seq numbers can tell
//!
//! A sender whose database was restored notices it only when the receiver answers past the
//! sender's `last_seq` ([`AnswerOutcome::ReceiverAhead`]); it then starts a new instance and the
//! receiver restarts at that batch's `first_available_seq`. Entries resent across an instance
//! change (and a batch of an old instance arriving late, which reads as one more change) are
//! removed by the message-id idempotency of the apply, not by these machines. A restored sender
//! that wrote past the receiver's `applied_seq` before reconnecting cannot be told apart by seq
//! numbers at all: a restore procedure must start a new instance itself.

mod backoff;
mod inbound;
mod outbound;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub(crate) use backoff::delay as retry_delay;
pub use backoff::RetryPolicy;
pub use inbound::{ApplyPlan, BatchError, Gap, HandleAppliedError, InboundState, InboundStream};
pub use outbound::{
    AnswerOutcome, BatchRequest, InstanceError, Link, OutboundAction, OutboundState, OutboundStateError,
    OutboundStatus, OutboundStream, SentReportError,
};

/// The most entries one batch may carry; a larger batch is refused by the receiver.
pub const MAX_BATCH_ENTRIES: usize = 256;

/// The most bytes of entries the sender puts in one batch, unless a single entry is larger (one
/// entry always fits, so a large one cannot block the stream).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
