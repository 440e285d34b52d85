//! Why an [`OutboundStream`](super::OutboundStream) refuses a persisted state or a report: each
//! is a caller's mistake (corrupt storage, a bug in the driver), never the peer's, and none is
//! retryable as is.

/// A persisted [`OutboundState`](super::OutboundState) that cannot be right: the storage is
/// corrupt or was written by a bug. Not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundStateError {
    /// The instance is 0, which no sender uses.
    #[error("the stream's instance is 0")]
    ZeroInstance,
    /// The peer cannot have applied entries that were never written.
    #[error("acked_through {acked_through} is past last_seq {last_seq}")]
    AckedPastLast {
        /// The stored `acked_through`.
        acked_through: u64,
        /// The stored `last_seq`.
        last_seq: u64,
    },
    /// Entries that were never written cannot have expired.
    #[error("expired_through {expired_through} is past last_seq {last_seq}")]
    ExpiredPastLast {
        /// The stored `expired_through`.
        expired_through: u64,
        /// The stored `last_seq`.
        last_seq: u64,
    },
}

/// [`OutboundStream::start_new_instance`](super::OutboundStream::start_new_instance) was given an
/// instance it cannot use (caller misuse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// 0 is not an instance.
    #[error("instance 0 cannot be used")]
    Zero,
    /// The new instance must differ from the current one, or the receiver cannot tell.
    #[error("instance {instance} is already the current one")]
    Unchanged {
        /// The instance given.
        instance: u64,
    },
}

/// [`OutboundStream::handle_sent`](super::OutboundStream::handle_sent) reported a batch the stream
/// did not ask for (caller misuse). The stream is unchanged; the caller reports
/// [`OutboundStream::handle_failure`](super::OutboundStream::handle_failure) for the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SentReportError {
    /// No batch with this id is waiting to be sent (stale, or never requested).
    #[error("batch {batch_id} was not requested or is stale")]
    NotRequested {
        /// The id given.
        batch_id: u64,
    },
    /// The batch must start at the requested `from_seq`; a row missing there means rows were
    /// deleted without
    /// [`OutboundStream::handle_expired`](super::OutboundStream::handle_expired).
    #[error("the batch starts at seq {first}, not at the requested {expected}")]
    WrongStart {
        /// The requested `from_seq`.
        expected: u64,
        /// The reported first seq.
        first: u64,
    },
    /// The last seq is below the first.
    #[error("the batch ends at seq {last}, before its first seq {first}")]
    Backwards {
        /// The reported first seq.
        first: u64,
        /// The reported last seq.
        last: u64,
    },
    /// More than [`MAX_BATCH_ENTRIES`](super::MAX_BATCH_ENTRIES) entries.
    #[error("the batch has {count} entries, more than {max}")]
    TooManyEntries {
        /// Entries in the reported range.
        count: u64,
        /// [`MAX_BATCH_ENTRIES`](super::MAX_BATCH_ENTRIES).
        max: usize,
    },
}
