//! Property tests: a sender and a receiver over a network that drops, duplicates, delays and
//! reorders batches and answers, with restarts of either side from what it had persisted, time
//! advancing through `poll_timeout`, then a lossless phase. Every case is one seed: the schedule
//! (entry count 1..=300, loss rate, write bursts, every network and restart event) is drawn from it, so a
//! failing case is replayed by running [`run`] with the seed in its panic message.
//!
//! Properties: without retention, the receiver applies exactly `1..=N`, each once, in order, and
//! the sender ends with nothing pending. With retention expiring unacknowledged entries at the
//! sender, applied seqs strictly increase, every skipped seq had expired, every seq that never
//! expired is applied, and the sender ends with nothing pending.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Random schedules per property.
const CASES: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retention {
    Off,
    ExpiresUnacked,
}

/// A batch on its way, sent by the sender process of generation `epoch`.
#[derive(Debug, Clone)]
struct SentBatch {
    epoch: u32,
    batch_id: u64,
    instance: u64,
    first_available_seq: u64,
    seqs: Vec<u64>,
}

#[derive(Debug, Clone)]
enum Message {
    Batch(SentBatch),
    /// Its answer, for the sender process of generation `epoch` (another process has other
    /// connections: the answer cannot reach it).
    Answer {
        epoch: u32,
        batch_id: u64,
        applied_through: u64,
    },
}

/// Events seen over all cases, to check the schedules exercised what they should.
#[derive(Debug, Default)]
struct Seen {
    duplicates: usize,
    skipped: u64,
    deadlines: usize,
    sender_restarts: usize,
    receiver_crashes: usize,
}

struct World {
    rng: SmallRng,
    now: Instant,
    total: u64,
    retention: Retention,
    /// The chance that a batch or an answer is lost on its way, in the lossy phase.
    loss: f64,
    /// The sender's database: its persisted state and the stored rows.
    sender_db: OutboundState,
    rows: BTreeSet<u64>,
    /// Seqs deleted by retention before they were acknowledged.
    expired: BTreeSet<u64>,
    sender: OutboundStream,
    epoch: u32,
    /// The last batch the sender's driver sent.
    current_batch: Option<u64>,
    /// The receiver's database: its persisted state and the seqs applied, in order.
    receiver_db: InboundState,
    applied: Vec<u64>,
    receiver: InboundStream,
    network: Vec<Message>,
    seen: Seen,
}

impl World {
    fn new(seed: u64, retention: Retention) -> World {
        let mut rng = SmallRng::seed_from_u64(seed);
        let total = rng.random_range(1..=300);
        let loss = rng.random_range(0.0..0.5);
        let sender_db = outbound_state(0, 0);
        let sender = OutboundStream::new(sender_db, RetryPolicy::default(), rng.random()).unwrap();
        World {
            rng,
            now: Instant::now(),
            total,
            retention,
            loss,
            sender_db,
            rows: BTreeSet::new(),
            expired: BTreeSet::new(),
            sender,
            epoch: 0,
            current_batch: None,
            receiver_db: InboundState::default(),
            applied: Vec::new(),
            receiver: InboundStream::new(InboundState::default()),
            network: Vec::new(),
            seen: Seen::default(),
        }
    }

    /// Write up to `burst` entries (committed rows, then the stream told).
    fn write(&mut self, burst: u64) {
        let from = self.sender_db.last_seq + 1;
        let through = self.total.min(self.sender_db.last_seq + burst);
        self.rows.extend(from..=through);
        self.sender_db.last_seq = self.sender_db.last_seq.max(through);
        self.sender.handle_written(self.sender_db.last_seq);
    }

    /// Let the sender's driver act: read and send the batch the stream asks for, if any.
    fn drive_sender(&mut self, lossy: bool) {
        let Some(OutboundAction::Send(request)) = self.sender.poll_action(self.now) else { return };
        assert_eq!((request.instance, request.first_available_seq), (INSTANCE, request.from_seq));
        let cap = if self.rng.random_bool(0.5) { self.rng.random_range(1..=8) } else { MAX_BATCH_ENTRIES };
        let seqs: Vec<u64> = self.rows.range(request.from_seq..).take(cap).copied().collect();
        assert_eq!(seqs.first(), Some(&request.from_seq), "the stream asks only for stored rows");
        let last = *seqs.last().unwrap();
        self.sender.handle_sent(request.batch_id, request.from_seq, last, self.now).unwrap();
        assert_eq!(self.sender.poll_action(self.now), None, "one batch in flight");
        self.current_batch = Some(request.batch_id);
        if lossy && self.rng.random_bool(0.05) {
            self.sender.handle_failure(request.batch_id, self.now); // connection refused
        } else if !lossy || !self.rng.random_bool(self.loss) {
            let (epoch, batch_id, instance) = (self.epoch, request.batch_id, request.instance);
            let first_available_seq = request.first_available_seq;
            self.network.push(Message::Batch(SentBatch { epoch, batch_id, instance, first_available_seq, seqs }));
        }
    }

    fn deliver(&mut self, message: Message, lossy: bool) {
        match message {
            Message::Batch(batch) => self.receive_batch(&batch, lossy),
            Message::Answer { epoch, batch_id, applied_through } if epoch == self.epoch => {
                self.receive_answer(batch_id, applied_through)
            }
            Message::Answer { .. } => {}
        }
    }

    fn receive_batch(&mut self, batch: &SentBatch, lossy: bool) {
        let SentBatch { epoch, batch_id, instance, first_available_seq, ref seqs } = *batch;
        let plan =
            self.receiver.plan(instance, first_available_seq, seqs).expect("our sender sends well-formed batches");
        assert_eq!(plan.gap, None, "our sender never leaves a gap");
        assert!(!plan.instance_changed() || plan.previous.instance == 0, "one instance only");
        if lossy && self.rng.random_bool(0.03) {
            self.restart_receiver(); // crashed before its transaction committed
            return;
        }
        // One transaction: the entries applied and the state moved.
        let skipped = plan.previous.applied_seq + 1..=plan.previous.applied_seq + plan.skipped;
        assert!(skipped.clone().all(|seq| self.expired.contains(&seq)), "skipped {skipped:?}: not all expired");
        for &seq in &seqs[plan.apply.clone()] {
            assert!(
                self.applied.last().is_none_or(|&last| last < seq),
                "{seq} applied after {:?}",
                self.applied.last()
            );
            self.applied.push(seq);
        }
        self.receiver_db = plan.new_state;
        self.receiver.handle_applied(&plan).unwrap();
        self.seen.duplicates += plan.duplicates;
        self.seen.skipped += plan.skipped;
        if lossy && self.rng.random_bool(0.03) {
            self.restart_receiver(); // crashed after the commit, before answering
            return;
        }
        if !lossy || !self.rng.random_bool(self.loss) {
            self.network.push(Message::Answer { epoch, batch_id, applied_through: plan.applied_through() });
        }
    }

    fn receive_answer(&mut self, batch_id: u64, applied_through: u64) {
        match self.sender.handle_answer(batch_id, applied_through, self.now) {
            AnswerOutcome::Acked { acked_through, .. } => {
                assert!(acked_through <= self.receiver_db.applied_seq, "acknowledged only what was applied");
                // One transaction: the rows deleted and acked_through stored.
                self.rows.retain(|&seq| seq > acked_through);
                self.sender_db.acked_through = acked_through;
            }
            AnswerOutcome::Ignored => {}
            other => panic!("our receiver never answers {other:?}"),
        }
    }

    /// Retention deletes some of the rows not yet acknowledged.
    fn expire(&mut self) {
        let first = self.sender_db.acked_through.max(self.sender_db.expired_through) + 1;
        if first > self.sender_db.last_seq {
            return;
        }
        let through = self.rng.random_range(first..=self.sender_db.last_seq);
        self.expired.extend(first..=through);
        self.rows.retain(|&seq| seq > through);
        self.sender_db.expired_through = through;
        self.sender.handle_expired(through);
    }

    fn restart_sender(&mut self) {
        self.seen.sender_restarts += 1;
        self.epoch += 1;
        self.current_batch = None;
        let seed = self.rng.random();
        self.sender = OutboundStream::new(self.sender_db, RetryPolicy::default(), seed).unwrap();
    }

    fn restart_receiver(&mut self) {
        self.seen.receiver_crashes += 1;
        self.receiver = InboundStream::new(self.receiver_db);
    }

    /// Advance to the sender's next deadline, if any, and fire it.
    fn fire(&mut self) {
        if let Some(deadline) = self.sender.poll_timeout() {
            if self.sender.status().in_flight.is_some() {
                self.seen.deadlines += 1;
            }
            self.now = self.now.max(deadline);
            self.sender.handle_timeout(self.now);
        }
    }

    fn random_message(&mut self) -> Option<usize> {
        (!self.network.is_empty()).then(|| self.rng.random_range(0..self.network.len()))
    }

    /// One random event of the lossy phase.
    fn chaos_step(&mut self) {
        match self.rng.random_range(0..100) {
            0..10 => {
                let burst = self.rng.random_range(1..=10);
                self.write(burst);
            }
            10..35 => self.drive_sender(true),
            35..60 => {
                if let Some(index) = self.random_message() {
                    let message = self.network.swap_remove(index);
                    self.deliver(message, true);
                }
            }
            60..65 => {
                if let Some(index) = self.random_message() {
                    self.network.swap_remove(index);
                }
            }
            65..70 => {
                if let Some(index) = self.random_message() {
                    self.network.push(self.network[index].clone());
                }
            }
            70..80 => self.fire(),
            80..88 => self.now += ms(self.rng.random_range(0..2_000)),
            88..92 => {
                if let Some(batch_id) = self.current_batch {
                    self.sender.handle_failure(batch_id, self.now);
                }
            }
            92..95 => self.sender.handle_wake(self.now),
            95..97 => self.restart_sender(),
            97..99 => self.restart_receiver(),
            _ if self.retention == Retention::ExpiresUnacked => self.expire(),
            _ => {}
        }
    }

    /// Everything written, nothing lost: deliver in order until the sender has nothing pending.
    fn settle(&mut self) {
        self.write(self.total);
        for _ in 0..100_000 {
            self.drive_sender(false);
            if !self.network.is_empty() {
                let message = self.network.remove(0);
                self.deliver(message, false);
            } else if self.sender.pending() == 0 {
                return;
            } else {
                assert!(self.sender.poll_timeout().is_some(), "stuck: {:?}", self.sender.status());
                self.fire();
            }
        }
        panic!("did not settle: {:?}", self.sender.status());
    }
}

/// One case: the chaos phase, the lossless phase, then the properties.
fn run(seed: u64, retention: Retention) -> Seen {
    let mut world = World::new(seed, retention);
    let steps = world.rng.random_range(0..=world.total * 6);
    for _ in 0..steps {
        world.chaos_step();
    }
    world.settle();
    let total = world.total;
    assert_eq!(world.sender.pending(), 0);
    assert!(world.rows.is_empty(), "every row acknowledged or expired: {:?}", world.rows);
    assert!(world.applied.windows(2).all(|pair| pair[0] < pair[1]), "applied in order, each once");
    match retention {
        Retention::Off => {
            assert_eq!(world.applied, (1..=total).collect::<Vec<_>>());
            assert_eq!(world.sender.status().acked_through, total);
            assert!(world.expired.is_empty());
        }
        Retention::ExpiresUnacked => {
            let applied: BTreeSet<u64> = world.applied.iter().copied().collect();
            let missed: Vec<u64> = (1..=total).filter(|seq| !applied.contains(seq)).collect();
            assert!(missed.iter().all(|seq| world.expired.contains(seq)), "missed without expiring: {missed:?}");
            assert!(applied.iter().all(|seq| (1..=total).contains(seq)));
        }
    }
    world.seen
}

/// Runs every case, naming the seed of a failing one; returns what all of them saw.
fn run_cases(retention: Retention) -> Seen {
    let mut seen = Seen::default();
    for seed in 0..CASES {
        let case = catch_unwind(AssertUnwindSafe(|| run(seed, retention)))
            .unwrap_or_else(|_| panic!("case seed {seed} ({retention:?}) failed; replay with run({seed}, …)"));
        seen.duplicates += case.duplicates;
        seen.skipped += case.skipped;
        seen.deadlines += case.deadlines;
        seen.sender_restarts += case.sender_restarts;
        seen.receiver_crashes += case.receiver_crashes;
    }
    seen
}

#[test]
fn every_entry_is_applied_once_in_order_despite_loss_duplication_reordering_and_restarts() {
    let seen = run_cases(Retention::Off);
    assert!(seen.duplicates > 0 && seen.deadlines > 0, "{seen:?}");
    assert!(seen.sender_restarts > 0 && seen.receiver_crashes > 0, "{seen:?}");
    assert_eq!(seen.skipped, 0);
}

#[test]
fn with_retention_applied_entries_increase_and_only_expired_ones_are_missed() {
    let seen = run_cases(Retention::ExpiresUnacked);
    assert!(seen.skipped > 0 && seen.duplicates > 0, "{seen:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// The same properties over schedules proptest draws anew on every run
    /// (the fixed seeds above stay the regression set).
    #[test]
    fn any_schedule_applies_each_entry_once_in_order(seed in proptest::prelude::any::<u64>(), expires in proptest::prelude::any::<bool>()) {
        run(seed, if expires { Retention::ExpiresUnacked } else { Retention::Off });
    }
}
