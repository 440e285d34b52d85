//! The receiver side of a stream: what an arriving batch means.
//!
//! [`InboundStream`] holds the persisted [`InboundState`] of one peer and plans batches against
//! it without changing it: [`InboundStream::plan`] is pure. The caller applies the planned
//! entries and stores [`ApplyPlan::new_state`] in one transaction, then reports the commit with
//! [`InboundStream::handle_applied`] and answers [`ApplyPlan::applied_through`]. The rules are
//! documented on [`InboundStream`].
//!
//! Planning one batch of a peer at a time is the caller's job (one storage job per peer).

use std::ops::Range;

use super::MAX_BATCH_ENTRIES;

/// What the receiver persists per peer, in the transaction that applies a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboundState {
    /// The sender instance `applied_seq` counts in; 0 before the first batch of this peer.
    pub instance: u64,
    /// The highest seq of `instance` applied (or skipped as no longer available); 0 before any.
    pub applied_seq: u64,
}

/// What an arriving batch means, from [`InboundStream::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyPlan {
    /// The indices (into the batch's entries) to apply, in this order; may be empty.
    pub apply: Range<usize>,
    /// How many entries were at or below `applied_seq`: already applied, not applied again.
    pub duplicates: usize,
    /// Set when the first new entry was not the next expected seq: nothing past it is applied.
    pub gap: Option<Gap>,
    /// How many seqs were skipped because the sender no longer has them (`first_available_seq`
    /// past `applied_seq + 1` within the same instance). 0 on an instance change.
    pub skipped: u64,
    /// The state the plan was made from.
    pub previous: InboundState,
    /// The state to store in the transaction that applies [`ApplyPlan::apply`].
    pub new_state: InboundState,
}

impl ApplyPlan {
    /// The answer to the sender: the highest seq applied once the plan is committed.
    pub fn applied_through(&self) -> u64 {
        self.new_state.applied_seq
    }

    /// Whether the batch came from another sender instance than the previous state's (also true
    /// for the first batch of a peer): the stream restarted at the batch's `first_available_seq`.
    pub fn instance_changed(&self) -> bool {
        self.previous.instance != self.new_state.instance
    }
}

/// A batch whose first new entry is not the next one expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The seq the receiver expected next (`applied_seq + 1`).
    pub expected: u64,
    /// The seq of the first entry past the duplicates.
    pub found: u64,
}

/// A structurally bad batch. The peer sent bad data: refused as a whole (nothing applied, the
/// state unchanged) and not retryable as is, since resending the same batch gives the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The batch names instance 0, which no sender uses.
    #[error("the batch's sender instance is 0")]
    ZeroInstance,
    /// `first_available_seq` is 0; seqs start at 1.
    #[error("first_available_seq is 0; seqs start at 1")]
    ZeroFirstAvailable,
    /// More entries than [`MAX_BATCH_ENTRIES`].
    #[error("the batch has {count} entries, more than {max}")]
    TooManyEntries {
        /// Entries in the batch.
        count: usize,
        /// [`MAX_BATCH_ENTRIES`].
        max: usize,
    },
    /// Entry seqs do not go up by exactly 1 from one entry to the next.
    #[error("entry {index} has seq {found} after seq {previous}; seqs must go up by 1")]
    NotContiguous {
        /// The index of the offending entry.
        index: usize,
        /// The seq of the entry before it.
        previous: u64,
        /// Its seq.
        found: u64,
    },
    /// The first entry is older than the `first_available_seq` the same batch announces.
    #[error("the first entry has seq {first_seq}, below first_available_seq {first_available_seq}")]
    BeforeFirstAvailable {
        /// The first entry's seq.
        first_seq: u64,
        /// The batch's `first_available_seq`.
        first_available_seq: u64,
    },
    /// No entries, and neither a new instance nor a jump to announce: the batch has no purpose.
    #[error("empty batch with nothing to announce (instance {instance}, first_available_seq {first_available_seq})")]
    Empty {
        /// The batch's instance (the current one).
        instance: u64,
        /// The batch's `first_available_seq` (not past `applied_seq + 1`).
        first_available_seq: u64,
    },
}

/// [`InboundStream::handle_applied`] was given a plan made from another state than the current
/// one: the caller planned two batches at once or skipped a commit. A bug in the caller; its
/// stored state is the truth and the stream must be rebuilt from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the plan was made from {planned_from:?} but the stream is at {current:?}")]
pub struct HandleAppliedError {
    /// The state the plan was made from.
    pub planned_from: InboundState,
    /// The stream's current state, left unchanged.
    pub current: InboundState,
}

/// The receiver side of one peer's stream; the [`stream`](super) docs give the call order.
///
/// The rules of [`InboundStream::plan`]:
///
/// - entries at or below `applied_seq` are duplicates: counted, not applied;
/// - the entries right after `applied_seq` are applied, in order;
/// - a batch whose first new entry starts past `applied_seq + 1` is a gap: nothing past it is
///   applied, and the answer (`applied_seq` unchanged) makes the sender rewind;
/// - a `first_available_seq` past `applied_seq + 1` means the sender no longer has the seqs in
///   between (expired by retention, or acknowledged before this receiver lost them in a
///   restore): they are skipped, counted, and `applied_seq` jumps to `first_available_seq − 1`;
/// - a batch of another sender instance restarts the stream at its `first_available_seq`.
#[derive(Debug, Clone)]
pub struct InboundStream {
    state: InboundState,
}

impl InboundStream {
    /// The stream as last persisted (`InboundState::default()` for a peer never heard from).
    pub fn new(state: InboundState) -> InboundStream {
        InboundStream { state }
    }

    /// The current state, as last committed through [`InboundStream::handle_applied`].
    pub fn state(&self) -> InboundState {
        self.state
    }

    /// What a batch of `batch_instance`, announcing `first_available_seq`, with entries of
    /// `entry_seqs` (in batch order) means. Pure: the stream does not change until
    /// [`InboundStream::handle_applied`]. A structurally bad batch is refused whole.
    pub fn plan(
        &self,
        batch_instance: u64,
        first_available_seq: u64,
        entry_seqs: &[u64],
    ) -> Result<ApplyPlan, BatchError> {
        check_structure(batch_instance, first_available_seq, entry_seqs)?;
        let previous = self.state;
        let announced_floor = first_available_seq - 1; // ≥ 0: checked nonzero above
        let (mut applied_seq, skipped) = if batch_instance != previous.instance {
            (announced_floor, 0)
        } else if announced_floor > previous.applied_seq {
            (announced_floor, announced_floor - previous.applied_seq)
        } else {
            (previous.applied_seq, 0)
        };
        let new_state = InboundState { instance: batch_instance, applied_seq };
        if entry_seqs.is_empty() && new_state == previous {
            return Err(BatchError::Empty { instance: batch_instance, first_available_seq });
        }
        let duplicates = entry_seqs.iter().take_while(|&&seq| seq <= applied_seq).count();
        let (apply, gap) = match entry_seqs.get(duplicates) {
            None => (duplicates..duplicates, None),
            Some(&first_new) if applied_seq.checked_add(1) == Some(first_new) => (duplicates..entry_seqs.len(), None),
            Some(&first_new) => {
                (duplicates..duplicates, Some(Gap { expected: applied_seq.saturating_add(1), found: first_new }))
            }
        };
        if let Some(&last_applied) = entry_seqs[apply.clone()].last() {
            applied_seq = last_applied;
        }
        let new_state = InboundState { instance: batch_instance, applied_seq };
        Ok(ApplyPlan { apply, duplicates, gap, skipped, previous, new_state })
    }

    /// The caller committed `plan` (applied its entries and stored its `new_state` in one
    /// transaction): move to `plan.new_state`. Refused, changing nothing, when the plan was made
    /// from another state than the current one.
    pub fn handle_applied(&mut self, plan: &ApplyPlan) -> Result<(), HandleAppliedError> {
        if plan.previous != self.state {
            return Err(HandleAppliedError { planned_from: plan.previous, current: self.state });
        }
        self.state = plan.new_state;
        Ok(())
    }
}

/// The checks that need no state: instance and first available seq nonzero, at most
/// [`MAX_BATCH_ENTRIES`] entries, seqs going up by 1 from at least `first_available_seq`.
fn check_structure(batch_instance: u64, first_available_seq: u64, entry_seqs: &[u64]) -> Result<(), BatchError> {
    if batch_instance == 0 {
        return Err(BatchError::ZeroInstance);
    }
    if first_available_seq == 0 {
        return Err(BatchError::ZeroFirstAvailable);
    }
    if entry_seqs.len() > MAX_BATCH_ENTRIES {
        return Err(BatchError::TooManyEntries { count: entry_seqs.len(), max: MAX_BATCH_ENTRIES });
    }
    if let Some(&first_seq) = entry_seqs.first() {
        if first_seq < first_available_seq {
            return Err(BatchError::BeforeFirstAvailable { first_seq, first_available_seq });
        }
    }
    for (index, pair) in (1..).zip(entry_seqs.windows(2)) {
        let (previous, found) = (pair[0], pair[1]);
        if previous.checked_add(1) != Some(found) {
            return Err(BatchError::NotContiguous { index, previous, found });
        }
    }
    Ok(())
}
