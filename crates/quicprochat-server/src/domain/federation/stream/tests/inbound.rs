//! The receiver's rules, one test each, plus the two restores (either side from a backup)
//! played between a sender and a receiver.

use super::*;

fn receiver(instance: u64, applied_seq: u64) -> InboundStream {
    InboundStream::new(InboundState { instance, applied_seq })
}

fn seqs(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    range.collect()
}

#[test]
fn the_next_entries_are_applied_in_order_once_committed() {
    let mut stream = receiver(1, 4);
    let plan = stream.plan(1, 5, &[5, 6, 7]).unwrap();
    let expected = ApplyPlan {
        apply: 0..3,
        duplicates: 0,
        gap: None,
        skipped: 0,
        previous: InboundState { instance: 1, applied_seq: 4 },
        new_state: InboundState { instance: 1, applied_seq: 7 },
    };
    assert_eq!(plan, expected);
    assert_eq!((plan.applied_through(), plan.instance_changed()), (7, false));
    assert_eq!(stream.state().applied_seq, 4, "planning changes nothing");

    stream.handle_applied(&plan).unwrap();
    assert_eq!(stream.state(), InboundState { instance: 1, applied_seq: 7 });
    let stale = HandleAppliedError { planned_from: plan.previous, current: stream.state() };
    assert_eq!(stream.handle_applied(&plan), Err(stale), "a plan is committed once");
    assert_eq!(stream.state().applied_seq, 7);
}

#[test]
fn duplicates_are_counted_not_applied() {
    let stream = receiver(1, 10);
    let plan = stream.plan(1, 1, &seqs(1..=10)).unwrap();
    assert_eq!((plan.apply.clone(), plan.duplicates, plan.applied_through()), (10..10, 10, 10));
    assert_eq!(plan.new_state, plan.previous);

    let plan = stream.plan(1, 6, &seqs(6..=15)).unwrap();
    assert_eq!((plan.apply.clone(), plan.duplicates, plan.gap, plan.applied_through()), (5..10, 5, None, 15));
}

#[test]
fn a_gap_applies_nothing_past_it() {
    let stream = receiver(1, 4);
    let plan = stream.plan(1, 5, &[8, 9]).unwrap();
    assert_eq!(plan.gap, Some(Gap { expected: 5, found: 8 }));
    assert_eq!(
        (plan.apply.clone(), plan.duplicates, plan.applied_through()),
        (0..0, 0, 4),
        "answered 4: the sender rewinds"
    );
    assert_eq!(plan.new_state, plan.previous);
}

#[test]
fn a_first_available_seq_past_the_expected_one_jumps_and_counts_the_skipped() {
    let stream = receiver(1, 4);
    let plan = stream.plan(1, 10, &[10, 11]).unwrap();
    assert_eq!((plan.skipped, plan.apply.clone(), plan.gap, plan.applied_through()), (5, 0..2, None, 11));

    let plan = stream.plan(1, 20, &[]).unwrap();
    assert_eq!((plan.skipped, plan.applied_through()), (15, 19), "an empty batch may announce a jump");

    let plan = stream.plan(1, 3, &[3, 4, 5]).unwrap();
    assert_eq!((plan.skipped, plan.duplicates, plan.apply), (0, 2, 2..3), "an old first_available_seq is no jump");
}

#[test]
fn a_new_instance_restarts_at_its_first_available_seq() {
    let stream = receiver(1, 80);
    let plan = stream.plan(2, 31, &seqs(31..=50)).unwrap();
    assert!(plan.instance_changed());
    assert_eq!((plan.duplicates, plan.skipped, plan.apply), (0, 0, 0..20), "nothing is a duplicate across instances");
    assert_eq!(plan.new_state, InboundState { instance: 2, applied_seq: 50 });

    let first_contact = InboundStream::new(InboundState::default());
    let plan = first_contact.plan(9, 1, &[1, 2]).unwrap();
    assert!(plan.instance_changed());
    assert_eq!(plan.new_state, InboundState { instance: 9, applied_seq: 2 });
    let plan = first_contact.plan(9, 5, &[]).unwrap();
    assert_eq!(plan.new_state, InboundState { instance: 9, applied_seq: 4 }, "an empty batch may announce it");
}

#[test]
fn malformed_batches_are_refused_whole() {
    let stream = receiver(1, 4);
    let refused = |instance, first_available_seq, entries: &[u64]| stream.plan(instance, first_available_seq, entries);
    assert_eq!(refused(0, 5, &[5]), Err(BatchError::ZeroInstance));
    assert_eq!(refused(1, 0, &[5]), Err(BatchError::ZeroFirstAvailable));
    let too_many = seqs(5..=261);
    assert_eq!(refused(1, 5, &too_many), Err(BatchError::TooManyEntries { count: 257, max: MAX_BATCH_ENTRIES }));
    assert!(refused(1, 5, &too_many[..MAX_BATCH_ENTRIES]).is_ok(), "256 entries fit");
    assert_eq!(refused(1, 5, &[5, 7]), Err(BatchError::NotContiguous { index: 1, previous: 5, found: 7 }));
    assert_eq!(refused(1, 5, &[5, 6, 6]), Err(BatchError::NotContiguous { index: 2, previous: 6, found: 6 }));
    assert_eq!(refused(1, 5, &[6, 5]), Err(BatchError::NotContiguous { index: 1, previous: 6, found: 5 }));
    let overflow = [u64::MAX, 0];
    assert_eq!(refused(1, 5, &overflow), Err(BatchError::NotContiguous { index: 1, previous: u64::MAX, found: 0 }));
    assert_eq!(refused(1, 5, &[4, 5]), Err(BatchError::BeforeFirstAvailable { first_seq: 4, first_available_seq: 5 }));
    assert_eq!(refused(1, 5, &[]), Err(BatchError::Empty { instance: 1, first_available_seq: 5 }));
    assert_eq!(refused(1, 2, &[]), Err(BatchError::Empty { instance: 1, first_available_seq: 2 }));
    assert_eq!(stream.state(), InboundState { instance: 1, applied_seq: 4 });
}

/// The receiver lost entries it had acknowledged (restored from a backup); the sender no longer
/// has them, so the next batch makes the receiver jump rather than wait forever.
#[test]
fn a_receiver_restored_from_a_backup_jumps_to_what_the_sender_still_has() {
    let mut sender = Sender::new(outbound_state(10, 20));
    let mut inbound = receiver(INSTANCE, 5);
    let request = sender.request();
    sender.stream.handle_sent(request.batch_id, request.from_seq, 20, sender.now).unwrap();
    let plan = inbound.plan(request.instance, request.first_available_seq, &seqs(request.from_seq..=20)).unwrap();
    assert_eq!((plan.skipped, plan.apply.clone(), plan.applied_through()), (5, 0..10, 20));
    inbound.handle_applied(&plan).unwrap();
    let outcome = sender.answer(request.batch_id, plan.applied_through());
    assert_eq!(outcome, AnswerOutcome::Acked { acked_through: 20, newly_acked: 10 });
}

/// The sender went back in time (restored from a backup) and resends seqs the receiver applied
/// long ago: the receiver answers past the sender's last seq, the sender starts a new instance,
/// and the receiver follows it from the first seq still stored.
#[test]
fn a_sender_restored_from_a_backup_starts_a_new_instance_the_receiver_follows() {
    let mut sender = Sender::new(outbound_state(30, 50));
    let mut inbound = receiver(INSTANCE, 80);
    let exchange = |sender: &mut Sender, inbound: &mut InboundStream, last: u64| {
        let request = sender.request();
        sender.stream.handle_sent(request.batch_id, request.from_seq, last, sender.now).unwrap();
        let plan = inbound.plan(request.instance, request.first_available_seq, &seqs(request.from_seq..=last)).unwrap();
        inbound.handle_applied(&plan).unwrap();
        (plan.clone(), sender.answer(request.batch_id, plan.applied_through()))
    };
    let (plan, outcome) = exchange(&mut sender, &mut inbound, 50);
    assert_eq!((plan.duplicates, plan.applied_through()), (20, 80));
    assert_eq!(outcome, AnswerOutcome::ReceiverAhead { applied_through: 80, last_seq: 50 });

    sender.stream.start_new_instance(INSTANCE + 1).unwrap();
    let (plan, outcome) = exchange(&mut sender, &mut inbound, 50);
    assert!(plan.instance_changed());
    assert_eq!((plan.apply.clone(), plan.applied_through()), (0..20, 50));
    assert_eq!(outcome, AnswerOutcome::Acked { acked_through: 50, newly_acked: 20 });

    sender.stream.handle_written(60);
    let (plan, outcome) = exchange(&mut sender, &mut inbound, 60);
    assert_eq!((plan.apply.clone(), plan.applied_through()), (0..10, 60));
    assert_eq!(outcome, AnswerOutcome::Acked { acked_through: 60, newly_acked: 10 });
}
