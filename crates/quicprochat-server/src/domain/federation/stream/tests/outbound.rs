//! The sender's rules, one test each.

use super::*;

#[test]
fn pending_entries_go_out_with_one_batch_in_flight() {
    let mut sender = Sender::new(outbound_state(0, 0));
    assert_eq!(sender.poll(), None, "nothing written");
    assert_eq!(sender.stream.poll_timeout(), None);

    sender.stream.handle_written(5);
    let request = sender.request();
    assert_eq!(request, BatchRequest { batch_id: 1, instance: INSTANCE, from_seq: 1, first_available_seq: 1 });
    assert_eq!(sender.poll(), None, "requested, not yet reported sent");
    sender.stream.handle_sent(1, 1, 5, sender.now).unwrap();
    sender.stream.handle_written(9);
    assert_eq!(sender.poll(), None, "a batch is in flight");
    assert_eq!(sender.stream.status().in_flight, Some((1, 5)));

    sender.advance(ms(30));
    assert_eq!(sender.answer(1, 5), AnswerOutcome::Acked { acked_through: 5, newly_acked: 5 });
    let status = sender.stream.status();
    assert_eq!((status.acked_through, status.pending, status.link), (5, 4, Link::Up));
    assert_eq!(status.last_round_trip, Some(ms(30)));
    let request = sender.request();
    assert_eq!((request.batch_id, request.from_seq, request.first_available_seq), (2, 6, 6));
}

#[test]
fn a_partly_applied_batch_is_resent_from_the_first_entry_not_applied() {
    let mut sender = Sender::new(outbound_state(0, 10));
    let (batch_id, ..) = sender.send(10);
    assert_eq!(sender.answer(batch_id, 4), AnswerOutcome::Acked { acked_through: 4, newly_acked: 4 });
    assert_eq!(sender.request().from_seq, 5, "rewound to after what was applied");
}

#[test]
fn an_answer_past_the_batch_acknowledges_up_to_it() {
    let mut sender = Sender::new(outbound_state(0, 10));
    let (batch_id, ..) = sender.send(3);
    assert_eq!(sender.answer(batch_id, 7), AnswerOutcome::Acked { acked_through: 7, newly_acked: 7 });
    assert_eq!(sender.request().from_seq, 8);
}

#[test]
fn an_answer_behind_the_batch_stalls_and_resends_it_after_a_backoff() {
    let mut sender = Sender::new(outbound_state(10, 20));
    let (batch_id, first, _) = sender.send(10);
    assert_eq!(first, 11);
    assert_eq!(sender.answer(batch_id, 3), AnswerOutcome::Stalled { applied_through: 3, resend_from: 11 });
    let status = sender.stream.status();
    assert_eq!((status.acked_through, status.link, status.consecutive_failures), (10, Link::Up, 1));
    assert!(sender.retry_delay() <= ms(250));
    assert_eq!(sender.poll(), None, "not before the backoff ends");
    sender.fire();
    let request = sender.request();
    assert_eq!((request.from_seq, request.first_available_seq), (11, 11), "the jump is offered again");
}

#[test]
fn a_receiver_ahead_asks_for_a_new_instance_that_restarts_at_the_first_stored_seq() {
    let mut sender = Sender::new(outbound_state(30, 50));
    let (batch_id, ..) = sender.send(20);
    assert_eq!(sender.answer(batch_id, 80), AnswerOutcome::ReceiverAhead { applied_through: 80, last_seq: 50 });
    assert!(sender.stream.status().needs_new_instance);
    assert_eq!(sender.poll(), None, "nothing is sent on the old instance");
    assert_eq!(sender.stream.poll_timeout(), None);
    sender.stream.handle_written(55);
    assert_eq!(sender.poll(), None, "not even new entries");

    assert_eq!(sender.stream.start_new_instance(0), Err(InstanceError::Zero));
    assert_eq!(sender.stream.start_new_instance(INSTANCE), Err(InstanceError::Unchanged { instance: INSTANCE }));
    sender.stream.start_new_instance(7).unwrap();
    let request = sender.request();
    assert_eq!((request.instance, request.from_seq, request.first_available_seq), (7, 31, 31));
    assert_eq!(sender.answer(batch_id, 80), AnswerOutcome::Ignored, "the old instance's answer is stale");
    assert_eq!(
        sender.stream.state(),
        OutboundState { instance: 7, acked_through: 30, last_seq: 55, expired_through: 0 }
    );
}

#[test]
fn failures_back_off_within_growing_bounds_up_to_retry_max_and_never_give_up() {
    let mut sender = Sender::new(outbound_state(0, 1));
    let mut delays = Vec::new();
    for failures in 1..=40u32 {
        let (batch_id, first, last) = sender.send(1);
        assert_eq!((first, last), (1, 1), "the same batch again");
        sender.fail(batch_id);
        let status = sender.stream.status();
        assert_eq!((status.link, status.consecutive_failures), (Link::Down, failures));
        let delay = sender.retry_delay();
        let highest = ms(250u64.saturating_mul(1 << (failures - 1).min(20))).min(ms(30_000));
        assert!(delay >= ms(62) && delay <= highest, "failure {failures}: {delay:?} over {highest:?}");
        delays.push(delay);
        assert_eq!(sender.poll(), None, "waiting");
        sender.fire();
    }
    assert!(delays.iter().any(|delay| *delay > ms(4_000)), "the bound grew: {delays:?}");
    assert!(delays[20..].iter().all(|delay| *delay <= ms(30_000)));
}

#[test]
fn an_answer_resets_the_backoff() {
    let mut sender = Sender::new(outbound_state(0, 10));
    for _ in 0..8 {
        let (batch_id, ..) = sender.send(1);
        sender.fail(batch_id);
        sender.fire();
    }
    assert_eq!(sender.stream.status().consecutive_failures, 8);
    let (batch_id, ..) = sender.send(1);
    assert!(matches!(sender.answer(batch_id, 1), AnswerOutcome::Acked { .. }));
    assert_eq!(sender.stream.status().consecutive_failures, 0);
    let (batch_id, ..) = sender.send(1);
    sender.fail(batch_id);
    assert!(sender.retry_delay() <= ms(250), "back to retry_min: {:?}", sender.retry_delay());
}

#[test]
fn an_unanswered_batch_fails_at_its_deadline_and_is_resent() {
    let mut sender = Sender::new(outbound_state(0, 5));
    let sent_at = sender.now;
    let (batch_id, ..) = sender.send(5);
    assert_eq!(sender.stream.poll_timeout(), Some(sent_at + ms(10_000)), "the answer deadline");
    sender.advance(ms(9_999));
    sender.stream.handle_timeout(sender.now);
    assert_eq!(sender.stream.status().in_flight, Some((1, 5)), "not yet");
    sender.fire();
    let status = sender.stream.status();
    assert_eq!((status.in_flight, status.link, status.consecutive_failures), (None, Link::Down, 1));
    assert_eq!(sender.answer(batch_id, 5), AnswerOutcome::Ignored, "too late");
    sender.fire();
    let (_, first, last) = sender.send(5);
    assert_eq!((first, last), (1, 5));
}

#[test]
fn a_wake_retries_at_once_while_backing_off_and_changes_nothing_else() {
    let mut sender = Sender::new(outbound_state(0, 5));
    sender.stream.handle_wake(sender.now);
    let (batch_id, ..) = sender.send(5);
    sender.stream.handle_wake(sender.now);
    assert_eq!(sender.stream.status().in_flight, Some((1, 5)), "a wake does not abandon the batch in flight");
    sender.fail(batch_id);
    assert_eq!(sender.poll(), None);
    sender.stream.handle_wake(sender.now);
    assert_eq!(sender.stream.poll_timeout(), None);
    assert_eq!(sender.request().from_seq, 1, "retried at once");
    assert_eq!(sender.stream.status().consecutive_failures, 1, "only an answer resets the count");
}

#[test]
fn reports_for_another_batch_are_ignored() {
    let mut sender = Sender::new(outbound_state(0, 5));
    assert_eq!(sender.answer(1, 5), AnswerOutcome::Ignored, "nothing sent yet");
    let request = sender.request();
    assert_eq!(sender.answer(request.batch_id, 5), AnswerOutcome::Ignored, "requested but not sent");
    sender.stream.handle_sent(request.batch_id, 1, 5, sender.now).unwrap();
    let before = sender.stream.status();
    assert_eq!(sender.answer(request.batch_id + 1, 5), AnswerOutcome::Ignored);
    sender.fail(request.batch_id + 1);
    assert_eq!(sender.stream.status(), before);

    sender.fail(request.batch_id);
    sender.fire();
    let request = sender.request();
    sender.fail(request.batch_id); // reading its rows failed
    assert_eq!(sender.stream.status().consecutive_failures, 2);
}

#[test]
fn expired_entries_move_the_start_forward_and_out_of_pending() {
    let mut sender = Sender::new(outbound_state(0, 20));
    sender.stream.handle_expired(8);
    sender.stream.handle_expired(3);
    let status = sender.stream.status();
    assert_eq!((status.expired_through, status.pending), (8, 12));
    let request = sender.request();
    assert_eq!((request.from_seq, request.first_available_seq), (9, 9));
    sender.stream.handle_sent(request.batch_id, 9, 20, sender.now).unwrap();
    assert_eq!(sender.answer(request.batch_id, 20), AnswerOutcome::Acked { acked_through: 20, newly_acked: 12 });
    assert_eq!(sender.stream.pending(), 0);

    sender.stream.handle_expired(25);
    assert_eq!((sender.stream.state().last_seq, sender.stream.pending()), (25, 0), "rows that existed were written");
}

#[test]
fn handle_sent_refuses_a_batch_it_did_not_ask_for() {
    let mut sender = Sender::new(outbound_state(0, 300));
    assert_eq!(sender.stream.handle_sent(1, 1, 1, sender.now), Err(SentReportError::NotRequested { batch_id: 1 }));
    let request = sender.request();
    let now = sender.now;
    let stream = &mut sender.stream;
    assert_eq!(stream.handle_sent(9, 1, 1, now), Err(SentReportError::NotRequested { batch_id: 9 }));
    assert_eq!(stream.handle_sent(1, 2, 2, now), Err(SentReportError::WrongStart { expected: 1, first: 2 }));
    assert_eq!(stream.handle_sent(1, 1, 0, now), Err(SentReportError::Backwards { first: 1, last: 0 }));
    let too_many = Err(SentReportError::TooManyEntries { count: 257, max: MAX_BATCH_ENTRIES });
    assert_eq!(stream.handle_sent(1, 1, 257, now), too_many);
    assert_eq!(stream.status().in_flight, None, "still waiting for a valid report");
    assert_eq!(request.batch_id, 1);
    stream.handle_sent(1, 1, 256, now).unwrap();
    assert_eq!(stream.status().in_flight, Some((1, 256)));

    let mut sender = Sender::new(outbound_state(0, 3));
    let request = sender.request();
    sender.stream.handle_sent(request.batch_id, 1, 6, sender.now).unwrap();
    assert_eq!(sender.stream.state().last_seq, 6, "rows past last_seq exist, so they were written");
}

#[test]
fn a_persisted_state_that_cannot_be_right_is_refused() {
    let build = |state| OutboundStream::new(state, RetryPolicy::default(), SEED).map(|_| ());
    let state = outbound_state(3, 5);
    assert_eq!(build(OutboundState { instance: 0, ..state }), Err(OutboundStateError::ZeroInstance));
    assert_eq!(
        build(OutboundState { acked_through: 6, ..state }),
        Err(OutboundStateError::AckedPastLast { acked_through: 6, last_seq: 5 })
    );
    assert_eq!(
        build(OutboundState { expired_through: 9, ..state }),
        Err(OutboundStateError::ExpiredPastLast { expired_through: 9, last_seq: 5 })
    );
    assert_eq!(build(OutboundState { expired_through: 5, ..state }), Ok(()));
}

#[test]
fn the_same_seed_gives_the_same_delays() {
    let delays = |seed| {
        let mut sender = Sender::with_policy(outbound_state(0, 1), RetryPolicy::default(), seed);
        (0..20)
            .map(|_| {
                let (batch_id, ..) = sender.send(1);
                sender.fail(batch_id);
                let delay = sender.retry_delay();
                sender.fire();
                delay
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(delays(SEED), delays(SEED));
    assert_ne!(delays(SEED), delays(SEED + 1));
}

#[test]
fn out_of_range_policy_values_are_clamped() {
    let policy = RetryPolicy { retry_min: Duration::ZERO, retry_max: Duration::ZERO, answer_timeout: Duration::ZERO };
    let mut sender = Sender::with_policy(outbound_state(0, 1), policy, SEED);
    let sent_at = sender.now;
    let (batch_id, ..) = sender.send(1);
    assert_eq!(sender.stream.poll_timeout(), Some(sent_at + ms(10)), "answer_timeout raised to 10 ms");
    sender.fail(batch_id);
    assert!(sender.retry_delay() <= ms(10), "retry_max raised to retry_min, raised to 10 ms");

    let policy = RetryPolicy { answer_timeout: Duration::MAX, ..RetryPolicy::default() };
    let mut sender = Sender::with_policy(outbound_state(0, 1), policy, SEED);
    let sent_at = sender.now;
    sender.send(1);
    assert_eq!(sender.stream.poll_timeout(), Some(sent_at + Duration::from_secs(24 * 60 * 60)));
}
