//! The sender side of a stream: what to send next, what an answer acknowledges, when to retry.
//!
//! [`OutboundStream`] keeps exactly one batch in flight. A batch always starts at the first seq
//! the sender still has (`max(acked_through, expired_through) + 1`), which is also the batch's
//! `first_available_seq`, so a receiver that is behind (it lost state, or the entries in between
//! expired here) jumps instead of waiting for seqs nobody can send. The answer `applied_through`
//! moves `acked_through`, and the next batch starts right after it: a partly applied batch is
//! resent from the first entry not applied.
//!
//! Every batch has a `batch_id`; [`OutboundStream::handle_sent`], [`OutboundStream::handle_answer`]
//! and [`OutboundStream::handle_failure`] name it, and reports for any other batch than the
//! current one (a late answer, a batch of an abandoned instance) are stale and ignored.
//! Batch ids start at 1 in each `OutboundStream`: a driver that restarts drops the answers of
//! the previous one's connections (a new process has new connections, so it does anyway).

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{backoff, RetryPolicy, MAX_BATCH_ENTRIES};

mod errors;

pub use errors::{InstanceError, OutboundStateError, SentReportError};

/// What the sender persists per peer (the caller's rows; the stream only reads it at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundState {
    /// This sender's instance, nonzero; a fresh random one after a restore.
    pub instance: u64,
    /// The highest seq the peer confirmed applied; 0 before any.
    pub acked_through: u64,
    /// The highest seq written; 0 before any.
    pub last_seq: u64,
    /// The highest seq deleted by retention before it was acknowledged; 0 if none. A caller that
    /// does not store it may give `lowest stored seq − 1` (or `last_seq` when none is stored).
    pub expired_through: u64,
}

/// What the driver must do, from [`OutboundStream::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundAction {
    /// Read a batch and send it; report it with [`OutboundStream::handle_sent`] first.
    Send(BatchRequest),
}

/// The batch to send next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRequest {
    /// Names this batch in [`OutboundStream::handle_sent`], `handle_answer` and `handle_failure`.
    pub batch_id: u64,
    /// The sender instance the batch carries.
    pub instance: u64,
    /// Read up to [`MAX_BATCH_ENTRIES`](super::MAX_BATCH_ENTRIES) rows (≤
    /// [`MAX_BATCH_BYTES`](super::MAX_BATCH_BYTES), but at least one) starting at this seq.
    pub from_seq: u64,
    /// The batch's `first_available_seq` field: the first seq the sender still has. Equal to
    /// `from_seq`, since the sender always sends from there.
    pub first_available_seq: u64,
}

/// What an answer meant, from [`OutboundStream::handle_answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerOutcome {
    /// The peer applied through `acked_through`: delete rows up to it and persist it. The next
    /// batch starts after it (resending the rest of a partly applied batch). `newly_acked` is 0
    /// when the batch held only duplicates.
    Acked {
        /// The new `acked_through`.
        acked_through: u64,
        /// How many pending entries this answer acknowledged (not counting expired ones).
        newly_acked: u64,
    },
    /// The peer answered but applied nothing of the batch: it is behind the batch's
    /// `first_available_seq` and did not jump there. Nothing before the batch can be sent (those
    /// rows are gone), so the same batch is resent after a backoff, as after a failure.
    Stalled {
        /// What the peer answered.
        applied_through: u64,
        /// Where the resend starts (the first seq the sender still has).
        resend_from: u64,
    },
    /// The peer applied past anything written here: this database went back in time (a restore).
    /// Nothing is sent until the caller persists a fresh instance and calls
    /// [`OutboundStream::start_new_instance`].
    ReceiverAhead {
        /// What the peer answered.
        applied_through: u64,
        /// The highest seq written here.
        last_seq: u64,
    },
    /// Not the batch in flight (stale, duplicated, or of an abandoned instance): nothing changed.
    Ignored,
}

/// Whether the peer answered the last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// No attempt finished since the stream was built.
    Unknown,
    /// The last attempt was answered.
    Up,
    /// The last attempt failed (transport error, `UNAVAILABLE`, no answer in time).
    Down,
}

/// The stream's state for metrics and `federation status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundStatus {
    /// The current instance.
    pub instance: u64,
    /// The highest seq the peer confirmed applied.
    pub acked_through: u64,
    /// The highest seq deleted by retention before it was acknowledged.
    pub expired_through: u64,
    /// The highest seq written.
    pub last_seq: u64,
    /// Entries written and still to deliver: `last_seq − max(acked_through, expired_through)`.
    pub pending: u64,
    /// Whether the last attempt was answered.
    pub link: Link,
    /// Failed attempts since the last answer that made progress.
    pub consecutive_failures: u32,
    /// When the next attempt starts, while backing off.
    pub next_retry: Option<Instant>,
    /// The seqs of the batch in flight (first, last).
    pub in_flight: Option<(u64, u64)>,
    /// The peer is ahead of us: waiting for [`OutboundStream::start_new_instance`].
    pub needs_new_instance: bool,
    /// The time from sending the last answered batch to its answer.
    pub last_round_trip: Option<Duration>,
}

/// Where the stream is between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing in flight: a batch is requested as soon as something is pending.
    Ready,
    /// Batch `batch_id` was requested from `from_seq`; waiting for [`OutboundStream::handle_sent`].
    Reading { batch_id: u64, from_seq: u64 },
    /// Batch `batch_id` (`first..=last`) was sent at `sent_at`; it fails if unanswered at `deadline`.
    InFlight { batch_id: u64, first: u64, last: u64, sent_at: Instant, deadline: Instant },
    /// The last attempt failed; the next starts at `until` (or at a wake).
    Backoff { until: Instant },
    /// The peer answered past our `last_seq`; waiting for a new instance.
    NeedsNewInstance,
}

/// The sender side of one peer's stream; see the [module docs](super) for the driver's call order.
#[derive(Debug)]
pub struct OutboundStream {
    policy: RetryPolicy,
    instance: u64,
    acked_through: u64,
    expired_through: u64,
    last_seq: u64,
    phase: Phase,
    link: Link,
    /// Failed attempts (and stalled answers) since the last answer that made progress.
    failures: u32,
    last_round_trip: Option<Duration>,
    next_batch_id: u64,
    rng: SmallRng,
}

impl OutboundStream {
    /// The stream as last persisted, ready to send whatever is pending. `seed` drives the backoff
    /// jitter: the same seed and inputs give the same delays.
    pub fn new(state: OutboundState, policy: RetryPolicy, seed: u64) -> Result<OutboundStream, OutboundStateError> {
        let OutboundState { instance, acked_through, last_seq, expired_through } = state;
        if instance == 0 {
            return Err(OutboundStateError::ZeroInstance);
        }
        if acked_through > last_seq {
            return Err(OutboundStateError::AckedPastLast { acked_through, last_seq });
        }
        if expired_through > last_seq {
            return Err(OutboundStateError::ExpiredPastLast { expired_through, last_seq });
        }
        Ok(OutboundStream {
            policy: policy.clamped(),
            instance,
            acked_through,
            expired_through,
            last_seq,
            phase: Phase::Ready,
            link: Link::Unknown,
            failures: 0,
            last_round_trip: None,
            next_batch_id: 1,
            rng: SmallRng::seed_from_u64(seed),
        })
    }

    /// Entries up to `last_seq` were written (committed). A lower value than already known is
    /// ignored. A batch goes out at the next [`OutboundStream::poll_action`] if nothing is in flight.
    pub fn handle_written(&mut self, last_seq: u64) {
        self.last_seq = self.last_seq.max(last_seq);
    }

    /// Retention deleted the entries up to `through_seq` (acknowledged or not): the next batch
    /// starts after them and announces so, and the receiver jumps ahead. Lower values than already
    /// known are ignored; a batch already in flight is not affected.
    pub fn handle_expired(&mut self, through_seq: u64) {
        self.expired_through = self.expired_through.max(through_seq);
        self.last_seq = self.last_seq.max(through_seq);
    }

    /// The next thing to do, first doing what [`OutboundStream::handle_timeout`]`(now)` would:
    /// `Send` when nothing is in flight, nothing blocks and something is pending; else `None`.
    /// After a `Send`, it returns `None` until that batch is answered or failed.
    pub fn poll_action(&mut self, now: Instant) -> Option<OutboundAction> {
        self.handle_timeout(now);
        if self.phase != Phase::Ready || self.pending() == 0 {
            return None;
        }
        let batch_id = self.next_batch_id;
        self.next_batch_id = self.next_batch_id.wrapping_add(1);
        let from_seq = self.first_available_seq();
        self.phase = Phase::Reading { batch_id, from_seq };
        let instance = self.instance;
        Some(OutboundAction::Send(BatchRequest { batch_id, instance, from_seq, first_available_seq: from_seq }))
    }

    /// Batch `batch_id` holding seqs `first..=last` is about to go out (call it before sending):
    /// its answer is awaited until `now + answer_timeout`. A `last` past the known `last_seq`
    /// counts as [`OutboundStream::handle_written`]`(last)`: the rows exist.
    pub fn handle_sent(&mut self, batch_id: u64, first: u64, last: u64, now: Instant) -> Result<(), SentReportError> {
        let Phase::Reading { batch_id: requested, from_seq } = self.phase else {
            return Err(SentReportError::NotRequested { batch_id });
        };
        if batch_id != requested {
            return Err(SentReportError::NotRequested { batch_id });
        }
        if first != from_seq {
            return Err(SentReportError::WrongStart { expected: from_seq, first });
        }
        if last < first {
            return Err(SentReportError::Backwards { first, last });
        }
        let count = (last - first).saturating_add(1);
        if count > MAX_BATCH_ENTRIES as u64 {
            return Err(SentReportError::TooManyEntries { count, max: MAX_BATCH_ENTRIES });
        }
        self.handle_written(last);
        let deadline = later(now, self.policy.answer_timeout);
        self.phase = Phase::InFlight { batch_id, first, last, sent_at: now, deadline };
        Ok(())
    }

    /// The peer answered batch `batch_id` with `applied_through` (its `applied_seq` after the
    /// batch). See [`AnswerOutcome`] for what the caller does next; answers to any other batch
    /// than the one in flight are [`AnswerOutcome::Ignored`].
    pub fn handle_answer(&mut self, batch_id: u64, applied_through: u64, now: Instant) -> AnswerOutcome {
        let Phase::InFlight { batch_id: in_flight, first, sent_at, .. } = self.phase else {
            return AnswerOutcome::Ignored;
        };
        if batch_id != in_flight {
            return AnswerOutcome::Ignored;
        }
        self.link = Link::Up;
        self.last_round_trip = Some(now.saturating_duration_since(sent_at));
        if applied_through > self.last_seq {
            self.failures = 0;
            self.phase = Phase::NeedsNewInstance;
            return AnswerOutcome::ReceiverAhead { applied_through, last_seq: self.last_seq };
        }
        if applied_through < first {
            self.back_off(now);
            return AnswerOutcome::Stalled { applied_through, resend_from: self.first_available_seq() };
        }
        self.failures = 0;
        self.phase = Phase::Ready;
        let newly_acked = applied_through.saturating_sub(self.acked_through.max(self.expired_through));
        self.acked_through = self.acked_through.max(applied_through);
        AnswerOutcome::Acked { acked_through: self.acked_through, newly_acked }
    }

    /// Batch `batch_id` failed: a transport error, `UNAVAILABLE`, the driver's own timeout, or
    /// reading its rows failed. Back off (full jitter, growing with each consecutive failure, up
    /// to `retry_max`; never giving up) and resend from the first unacknowledged seq. Ignored
    /// for any other batch than the current one.
    pub fn handle_failure(&mut self, batch_id: u64, now: Instant) {
        match self.phase {
            Phase::Reading { batch_id: current, .. } | Phase::InFlight { batch_id: current, .. }
                if current == batch_id =>
            {
                self.link = Link::Down;
                self.back_off(now);
            }
            _ => {}
        }
    }

    /// The peer got in touch (an inbound hello or batch, or a new connection): while backing off, retry at once (the
    /// failure count stays, only an answer resets it). Otherwise nothing changes.
    pub fn handle_wake(&mut self, now: Instant) {
        let _ = now; // Part of the uniform signature; the retry is due immediately.
        if let Phase::Backoff { .. } = self.phase {
            self.phase = Phase::Ready;
        }
    }

    /// Call when [`OutboundStream::poll_timeout`] has passed (calling early is harmless): a batch
    /// unanswered at its deadline fails like [`OutboundStream::handle_failure`]; a backoff that
    /// ended makes the next batch due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::InFlight { deadline, .. } if now >= deadline => {
                self.link = Link::Down;
                self.back_off(now);
            }
            Phase::Backoff { until } if now >= until => self.phase = Phase::Ready,
            _ => {}
        }
    }

    /// When [`OutboundStream::handle_timeout`] must be called next: the answer deadline of the
    /// batch in flight or the end of the backoff; `None` otherwise (nothing timed is pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::InFlight { deadline, .. } => Some(deadline),
            Phase::Backoff { until } => Some(until),
            Phase::Ready | Phase::Reading { .. } | Phase::NeedsNewInstance => None,
        }
    }

    /// Continue as `new_instance`, which the caller has persisted: abandon the batch in flight
    /// (its answer will be ignored) and send from the first seq still stored, which the receiver
    /// takes as the new instance's start. Used after [`AnswerOutcome::ReceiverAhead`].
    pub fn start_new_instance(&mut self, new_instance: u64) -> Result<(), InstanceError> {
        if new_instance == 0 {
            return Err(InstanceError::Zero);
        }
        if new_instance == self.instance {
            return Err(InstanceError::Unchanged { instance: new_instance });
        }
        self.instance = new_instance;
        self.phase = Phase::Ready;
        Ok(())
    }

    /// The persisted part of the stream, as it stands.
    pub fn state(&self) -> OutboundState {
        OutboundState {
            instance: self.instance,
            acked_through: self.acked_through,
            last_seq: self.last_seq,
            expired_through: self.expired_through,
        }
    }

    /// Entries written and still to deliver.
    pub fn pending(&self) -> u64 {
        self.last_seq.saturating_sub(self.acked_through.max(self.expired_through))
    }

    /// The stream's state for metrics.
    pub fn status(&self) -> OutboundStatus {
        let (next_retry, in_flight) = match self.phase {
            Phase::Backoff { until } => (Some(until), None),
            Phase::InFlight { first, last, .. } => (None, Some((first, last))),
            Phase::Ready | Phase::Reading { .. } | Phase::NeedsNewInstance => (None, None),
        };
        OutboundStatus {
            instance: self.instance,
            acked_through: self.acked_through,
            expired_through: self.expired_through,
            last_seq: self.last_seq,
            pending: self.pending(),
            link: self.link,
            consecutive_failures: self.failures,
            next_retry,
            in_flight,
            needs_new_instance: self.phase == Phase::NeedsNewInstance,
            last_round_trip: self.last_round_trip,
        }
    }

    /// The first seq the sender still has: entries up to `acked_through` may be deleted, and
    /// those up to `expired_through` have been.
    fn first_available_seq(&self) -> u64 {
        self.acked_through.max(self.expired_through).saturating_add(1)
    }

    /// Count a failed attempt and wait before the next one.
    fn back_off(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff::delay(&self.policy, self.failures, &mut self.rng);
        self.phase = Phase::Backoff { until: later(now, delay) };
    }
}

/// `now + by`. Settings are clamped to a day, so this cannot overflow on any real clock; should it
/// ever, the deadline is `now` (act at once) rather than a panic.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by).unwrap_or(now)
}
