//! Stream tests with a manual clock (a start `Instant` plus offsets) and fixed seeds: no sleeps,
//! fully repeatable.
//!
//! - `outbound`: the sender's rules one by one (one batch in flight, what an answer
//!   acknowledges, rewind, stall, receiver ahead, backoff, deadline, wake, expiry, misuse);
//! - `inbound`: the receiver's rules (apply in order, duplicates, gap, jump, new instance,
//!   malformed batches);
//! - `simulation`: both machines over a lossy, duplicating, reordering network with restarts
//!   of either side, checked against the exactly-once property over many random schedules.

mod inbound;
mod outbound;
mod simulation;

use std::time::{Duration, Instant};

use super::*;

const SEED: u64 = 42;
const INSTANCE: u64 = 0x1157_a9ce;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn outbound_state(acked_through: u64, last_seq: u64) -> OutboundState {
    OutboundState { instance: INSTANCE, acked_through, last_seq, expired_through: 0 }
}

/// A sender driven by a manual clock.
struct Sender {
    stream: OutboundStream,
    now: Instant,
}

impl Sender {
    fn new(state: OutboundState) -> Sender {
        Sender::with_policy(state, RetryPolicy::default(), SEED)
    }

    fn with_policy(state: OutboundState, policy: RetryPolicy, seed: u64) -> Sender {
        Sender { stream: OutboundStream::new(state, policy, seed).unwrap(), now: Instant::now() }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn poll(&mut self) -> Option<OutboundAction> {
        self.stream.poll_action(self.now)
    }

    /// The batch the stream asks for now; fails if it asks for none.
    fn request(&mut self) -> BatchRequest {
        match self.poll() {
            Some(OutboundAction::Send(request)) => request,
            other => panic!("expected a batch to send, got {other:?} in {:?}", self.stream.status()),
        }
    }

    /// Request a batch and report `count` entries of it sent; returns (batch id, first, last).
    fn send(&mut self, count: u64) -> (u64, u64, u64) {
        let request = self.request();
        let last = request.from_seq + count - 1;
        self.stream.handle_sent(request.batch_id, request.from_seq, last, self.now).unwrap();
        assert_eq!(self.poll(), None, "one batch in flight");
        (request.batch_id, request.from_seq, last)
    }

    fn answer(&mut self, batch_id: u64, applied_through: u64) -> AnswerOutcome {
        self.stream.handle_answer(batch_id, applied_through, self.now)
    }

    fn fail(&mut self, batch_id: u64) {
        self.stream.handle_failure(batch_id, self.now);
    }

    /// The wait from now until the retry, while backing off.
    fn retry_delay(&self) -> Duration {
        let next_retry = self.stream.status().next_retry.expect("backing off");
        next_retry - self.now
    }

    /// Advance to `poll_timeout()` and call `handle_timeout` there.
    fn fire(&mut self) {
        let deadline = self.stream.poll_timeout().expect("a timeout is pending");
        assert!(deadline >= self.now, "deadlines never lie in the past");
        self.now = deadline;
        self.stream.handle_timeout(self.now);
    }
}
