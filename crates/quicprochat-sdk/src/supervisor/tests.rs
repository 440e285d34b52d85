//! Supervisor tests with a manual clock: a start `Instant` plus offsets, and a fixed seed.
//!
//! Every event goes through [`Sim::step`], which also checks two invariants after each one:
//! `StatusChanged` is queued exactly when the status changed (and carries the new status), and
//! `poll_timeout()` is `None` exactly while connecting or offline.

use super::ConnectionStatus::{Connected, Connecting, Offline, Reconnecting};
use super::SupervisorAction::{CloseConnection, Connect, Resync, SendHeartbeat, StatusChanged};
use super::*;

const SEED: u64 = 42;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A supervisor driven by a manual clock.
struct Sim {
    supervisor: Supervisor,
    start: Instant,
    now: Instant,
}

impl Sim {
    fn new(config: SupervisorConfig) -> Sim {
        Sim::with_seed(config, SEED)
    }

    fn with_seed(config: SupervisorConfig, seed: u64) -> Sim {
        let start = Instant::now();
        let mut supervisor = Supervisor::new(config, seed, start);
        assert_eq!(supervisor.status(), Connecting);
        assert_eq!(drain(&mut supervisor), [Connect { attempt: 1 }]);
        Sim { supervisor, start, now: start }
    }

    /// Time since the start.
    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Feed one event at the current time and return the actions it queued.
    fn step(&mut self, event: impl FnOnce(&mut Supervisor, Instant)) -> Vec<SupervisorAction> {
        let before = self.supervisor.status();
        event(&mut self.supervisor, self.now);
        let actions = drain(&mut self.supervisor);
        let after = self.supervisor.status();
        let announced: Vec<_> = actions.iter().filter(|action| matches!(action, StatusChanged(_))).cloned().collect();
        if before == after {
            assert!(announced.is_empty(), "status stayed {after:?} but {announced:?} was queued");
        } else {
            assert_eq!(announced, [StatusChanged(after.clone())], "status went {before:?} → {after:?}");
        }
        let idle = matches!(after, Connecting | Offline);
        assert_eq!(self.supervisor.poll_timeout().is_none(), idle, "poll_timeout in {after:?}");
        actions
    }

    /// Advance to `poll_timeout()` and call `handle_timeout` there.
    fn fire(&mut self) -> Vec<SupervisorAction> {
        let deadline = self.supervisor.poll_timeout().expect("a timeout is pending");
        assert!(deadline >= self.now, "deadlines never lie in the past");
        self.now = deadline;
        self.step(Supervisor::handle_timeout)
    }

    fn connected(&mut self) -> Vec<SupervisorAction> {
        self.step(Supervisor::handle_connected)
    }

    fn failed(&mut self) -> Vec<SupervisorAction> {
        self.step(|supervisor, now| supervisor.handle_connect_failed(now, true))
    }

    fn lost(&mut self) -> Vec<SupervisorAction> {
        self.step(Supervisor::handle_connection_lost)
    }

    /// Wait for the next heartbeat and answer it after `rtt`.
    fn pong_after(&mut self, rtt: Duration) {
        let [SendHeartbeat { id }] = self.fire()[..] else { panic!("a heartbeat was due") };
        self.advance(rtt);
        assert_eq!(self.step(|supervisor, now| supervisor.handle_heartbeat_ok(id, now)), []);
    }

    /// From backoff: wait for the retry and expect `Connect { attempt }`.
    fn retry(&mut self, attempt: u32) {
        assert_eq!(self.fire(), [StatusChanged(Connecting), Connect { attempt }]);
    }
}

fn drain(supervisor: &mut Supervisor) -> Vec<SupervisorAction> {
    std::iter::from_fn(|| supervisor.poll_action()).collect()
}

/// The `Reconnecting` announcement among `actions`: (attempt, delay from `now`).
fn reconnecting(actions: &[SupervisorAction], now: Instant) -> (u32, Duration) {
    match actions.last() {
        Some(StatusChanged(Reconnecting { attempt, next_try })) => (*attempt, *next_try - now),
        other => panic!("expected Reconnecting last, got {other:?} in {actions:?}"),
    }
}

/// The upper jitter bound after the `failures`-th failure with the default config, computed independently.
fn default_highest(failures: u32) -> Duration {
    ms(250 * 2u64.pow(failures - 1)).min(ms(15_000))
}

#[test]
fn backoff_stays_within_jitter_bounds_and_under_the_ceiling() {
    let mut sim = Sim::new(SupervisorConfig::default());
    for failures in 1..=20 {
        let (attempt, delay) = reconnecting(&sim.failed(), sim.now);
        assert_eq!(attempt, failures + 1);
        assert!(delay >= ms(62) && delay <= default_highest(failures), "failure {failures}: {delay:?}");
        assert!(delay <= ms(15_000));
        sim.retry(attempt);
    }
}

#[test]
fn backoff_saturates_after_a_thousand_failures() {
    let mut sim = Sim::new(SupervisorConfig { backoff_floor: ms(10), backoff_ceiling: ms(40), ..Default::default() });
    for failures in 1..=1000 {
        let (attempt, delay) = reconnecting(&sim.failed(), sim.now);
        assert_eq!(attempt, failures + 1);
        assert!(delay <= ms(40), "failure {failures}: {delay:?}");
        sim.retry(attempt);
    }
    sim.supervisor.failures = u32::MAX - 1;
    let (_, delay) = reconnecting(&sim.failed(), sim.now);
    assert!(delay <= ms(40));
    assert_eq!(sim.supervisor.failures, u32::MAX);
}

#[test]
fn the_same_seed_gives_the_same_delays() {
    let delays = |seed| {
        let mut sim = Sim::with_seed(SupervisorConfig::default(), seed);
        (1..=20)
            .map(|attempt| {
                let (_, delay) = reconnecting(&sim.failed(), sim.now);
                sim.retry(attempt + 1);
                delay
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(delays(SEED), delays(SEED));
    assert_ne!(delays(SEED), delays(SEED + 1));
}

#[test]
fn a_connection_lost_before_its_first_pong_keeps_growing_the_backoff() {
    let mut sim = Sim::new(SupervisorConfig::default());
    let mut delays = Vec::new();
    for failures in 1..=8 {
        assert_eq!(sim.connected(), [StatusChanged(Connected), Resync]);
        sim.advance(ms(1500)); // up for a while, but no pong yet
        let actions = sim.lost();
        assert_eq!(actions[0], CloseConnection { reason: CloseReason::ConnectionLost });
        let (attempt, delay) = reconnecting(&actions, sim.now);
        assert_eq!((attempt, sim.supervisor.failures), (failures + 1, failures));
        assert!(delay <= default_highest(failures), "failure {failures}: {delay:?}");
        delays.push(delay);
        sim.retry(attempt);
    }
    assert!(delays.iter().any(|delay| *delay > ms(250)), "the bound grew past the floor: {delays:?}");
}

#[test]
fn a_connection_lost_after_a_pong_restarts_at_attempt_1() {
    let mut sim = Sim::new(SupervisorConfig::default());
    for attempt in 1..=5 {
        sim.failed();
        sim.retry(attempt + 1);
    }
    sim.connected();
    sim.pong_after(ms(40));
    assert_eq!(sim.supervisor.failures, 0);
    let (attempt, delay) = reconnecting(&sim.lost(), sim.now);
    assert_eq!(attempt, 1);
    assert!(delay <= ms(250), "{delay:?}");
    sim.retry(1);
    let (attempt, delay) = reconnecting(&sim.failed(), sim.now);
    assert_eq!(attempt, 2);
    assert!(delay <= ms(500), "{delay:?}");
}

#[test]
fn heartbeats_follow_the_interval_and_measure_the_rtt() {
    let mut sim = Sim::new(SupervisorConfig::default());
    sim.connected();
    assert_eq!(sim.supervisor.poll_timeout(), Some(sim.now + ms(2000)));
    assert_eq!(sim.fire(), [SendHeartbeat { id: 1 }]);
    assert_eq!(sim.elapsed(), ms(2000));
    assert_eq!(sim.supervisor.poll_timeout(), Some(sim.now + ms(6000)), "the pong deadline");
    sim.advance(ms(50));
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(1, now)), []);
    assert_eq!(sim.supervisor.last_rtt(), Some(ms(50)));
    assert_eq!(sim.supervisor.poll_timeout(), Some(sim.now + ms(2000)));
    assert_eq!(sim.fire(), [SendHeartbeat { id: 2 }]);
    assert_eq!(sim.elapsed(), ms(4050));
}

/// Time from the last proof of life (a pong) to the dead-path verdict when nothing answers.
fn detection_time(config: SupervisorConfig) -> Duration {
    let mut sim = Sim::new(config);
    sim.connected();
    sim.pong_after(ms(30));
    let last_proof = sim.now;
    assert!(matches!(sim.fire()[..], [SendHeartbeat { .. }]));
    let actions = sim.fire();
    assert_eq!(actions[0], CloseConnection { reason: CloseReason::HeartbeatTimeout });
    assert_eq!(reconnecting(&actions, sim.now).0, 1, "the connection had proved healthy");
    sim.now - last_proof
}

#[test]
fn a_dead_path_is_detected_within_interval_plus_timeout() {
    let check = |interval, timeout, expected: Duration| {
        let config =
            SupervisorConfig { heartbeat_interval: ms(interval), heartbeat_timeout: ms(timeout), ..Default::default() };
        assert_eq!(detection_time(config), expected, "interval {interval} ms, timeout {timeout} ms");
    };
    check(2000, 6000, ms(8000));
    check(1000, 3000, ms(4000));
    check(500, 500, ms(1000));
    assert!(detection_time(SupervisorConfig::default()) <= Duration::from_secs(10));
}

#[test]
fn a_dead_path_before_the_first_pong_counts_as_a_failed_attempt() {
    let mut sim = Sim::new(SupervisorConfig::default());
    sim.connected();
    assert_eq!(sim.fire(), [SendHeartbeat { id: 1 }]);
    let actions = sim.fire();
    assert_eq!(actions[0], CloseConnection { reason: CloseReason::HeartbeatTimeout });
    assert_eq!(reconnecting(&actions, sim.now).0, 2);
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(1, now)), [], "a late pong is stale");
    assert_eq!(sim.supervisor.failures, 1);
}

#[test]
fn activity_postpones_the_heartbeat_once_healthy() {
    let mut sim = Sim::new(SupervisorConfig::default());
    sim.connected();
    sim.pong_after(ms(10));
    let pong = sim.now;
    sim.advance(ms(1500));
    assert_eq!(sim.step(Supervisor::handle_activity), []);
    assert_eq!(sim.supervisor.poll_timeout(), Some(pong + ms(3500)));
    sim.now = pong + ms(2000);
    assert_eq!(sim.step(Supervisor::handle_timeout), [], "the old deadline no longer applies");
    assert_eq!(sim.fire(), [SendHeartbeat { id: 2 }]);
    assert_eq!(sim.now, pong + ms(3500));
}

#[test]
fn activity_does_not_postpone_the_first_heartbeat() {
    let mut sim = Sim::new(SupervisorConfig::default());
    sim.connected();
    let connected = sim.now;
    sim.advance(ms(1000));
    assert_eq!(sim.step(Supervisor::handle_activity), []);
    assert_eq!(sim.supervisor.poll_timeout(), Some(connected + ms(2000)));
}

#[test]
fn activity_while_awaiting_a_pong_extends_its_deadline() {
    let mut sim = Sim::new(SupervisorConfig::default());
    sim.connected();
    assert_eq!(sim.fire(), [SendHeartbeat { id: 1 }]);
    let sent = sim.now;
    sim.advance(ms(5000));
    assert_eq!(sim.step(Supervisor::handle_activity), []);
    assert_eq!(sim.supervisor.poll_timeout(), Some(sent + ms(11_000)));
    sim.advance(ms(100));
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(1, now)), []);
    assert_eq!(sim.supervisor.failures, 0, "the same heartbeat still proves health");
}

#[test]
fn every_connect_is_followed_by_a_resync() {
    let mut sim = Sim::new(SupervisorConfig::default());
    assert_eq!(sim.connected(), [StatusChanged(Connected), Resync]);
    for round in 0..3 {
        sim.pong_after(ms(20));
        let (attempt, _) = reconnecting(&sim.lost(), sim.now);
        sim.retry(attempt);
        if round == 1 {
            sim.failed(); // a failed attempt in between does not resync
            sim.retry(2);
        }
        assert_eq!(sim.connected(), [StatusChanged(Connected), Resync]);
    }
}

#[test]
fn max_attempts_exhausted_goes_offline() {
    let mut sim = Sim::new(SupervisorConfig { max_attempts: Some(3), ..Default::default() });
    sim.failed();
    sim.retry(2);
    sim.failed();
    sim.retry(3);
    assert_eq!(sim.failed(), [StatusChanged(Offline)]);
    assert_eq!(sim.supervisor.poll_timeout(), None);
    sim.advance(ms(60_000));
    assert_eq!(sim.step(Supervisor::handle_timeout), []);
}

#[test]
fn max_attempts_counts_connections_lost_before_their_first_pong() {
    let mut sim = Sim::new(SupervisorConfig { max_attempts: Some(2), ..Default::default() });
    sim.connected();
    let (attempt, _) = reconnecting(&sim.lost(), sim.now);
    sim.retry(attempt);
    sim.connected();
    assert_eq!(sim.lost(), [CloseConnection { reason: CloseReason::ConnectionLost }, StatusChanged(Offline)]);
}

#[test]
fn max_attempts_restarts_after_a_healthy_connection() {
    let mut sim = Sim::new(SupervisorConfig { max_attempts: Some(2), ..Default::default() });
    sim.failed();
    sim.retry(2);
    sim.connected();
    sim.pong_after(ms(20));
    let (attempt, _) = reconnecting(&sim.lost(), sim.now);
    assert_eq!(attempt, 1);
    sim.retry(1);
    sim.failed();
    sim.retry(2);
    assert_eq!(sim.failed(), [StatusChanged(Offline)]);
}

#[test]
fn a_non_retryable_failure_goes_offline() {
    let mut sim = Sim::new(SupervisorConfig::default());
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_connect_failed(now, false)), [StatusChanged(Offline)]);
    assert_eq!(sim.supervisor.poll_timeout(), None);
    sim.advance(ms(60_000));
    assert_eq!(sim.step(Supervisor::handle_timeout), []);
    assert_eq!(
        sim.step(|supervisor, now| supervisor.handle_connect_requested(now)).last(),
        Some(&Connect { attempt: 1 })
    );
}

/// Every event except `handle_connect_requested`, with ids and times that could matter.
fn every_other_event(sim: &mut Sim) -> Vec<SupervisorAction> {
    let mut actions = Vec::new();
    for id in 0..4 {
        actions.extend(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(id, now)));
    }
    actions.extend(sim.step(Supervisor::handle_connected));
    actions.extend(sim.step(|supervisor, now| supervisor.handle_connect_failed(now, true)));
    actions.extend(sim.step(|supervisor, now| supervisor.handle_connect_failed(now, false)));
    actions.extend(sim.step(Supervisor::handle_connection_lost));
    actions.extend(sim.step(Supervisor::handle_activity));
    actions.extend(sim.step(Supervisor::handle_disconnect));
    sim.advance(ms(3_600_000));
    actions.extend(sim.step(Supervisor::handle_timeout));
    actions
}

#[test]
fn disconnect_is_terminal_until_a_connect_request() {
    let mut sim = Sim::new(SupervisorConfig::default());
    sim.connected();
    sim.failed(); // stale while connected
    assert!(matches!(sim.fire()[..], [SendHeartbeat { id: 1 }]));
    let actions = sim.step(Supervisor::handle_disconnect);
    assert_eq!(actions, [CloseConnection { reason: CloseReason::Disconnect }, StatusChanged(Offline)]);
    assert_eq!(every_other_event(&mut sim), []);
    assert_eq!(sim.supervisor.status(), Offline);
    assert_eq!(sim.supervisor.poll_timeout(), None);

    sim.supervisor.failures = 7;
    assert_eq!(sim.step(Supervisor::handle_connect_requested), [StatusChanged(Connecting), Connect { attempt: 1 }]);
    assert_eq!(sim.supervisor.failures, 0);
    assert_eq!(sim.step(Supervisor::handle_connect_requested), [], "already connecting");
    assert_eq!(sim.connected(), [StatusChanged(Connected), Resync]);
}

#[test]
fn disconnect_while_connecting_or_backing_off_abandons_the_attempt() {
    let mut sim = Sim::new(SupervisorConfig::default());
    sim.step(Supervisor::handle_disconnect);
    assert_eq!(sim.connected(), [], "the attempt in flight finishing late is stale");

    sim.step(Supervisor::handle_connect_requested);
    sim.failed();
    let actions = sim.step(Supervisor::handle_disconnect);
    assert_eq!(actions, [CloseConnection { reason: CloseReason::Disconnect }, StatusChanged(Offline)]);
    assert_eq!(every_other_event(&mut sim), []);
}

#[test]
fn disconnect_drops_queued_work_but_keeps_status_changes() {
    let start = Instant::now();
    let mut supervisor = Supervisor::new(SupervisorConfig::default(), SEED, start);
    supervisor.handle_disconnect(start);
    assert_eq!(drain(&mut supervisor), [CloseConnection { reason: CloseReason::Disconnect }, StatusChanged(Offline)]);

    supervisor.handle_connect_requested(start);
    supervisor.handle_connected(start);
    supervisor.handle_disconnect(start);
    assert_eq!(
        drain(&mut supervisor),
        [
            StatusChanged(Connecting),
            StatusChanged(Connected),
            CloseConnection { reason: CloseReason::Disconnect },
            StatusChanged(Offline)
        ]
    );
}

#[test]
fn stale_events_are_ignored() {
    let mut sim = Sim::new(SupervisorConfig::default());
    assert_eq!(sim.lost(), [], "no connection yet");
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(1, now)), []);
    sim.connected();
    assert_eq!(sim.connected(), [], "already connected");
    assert_eq!(sim.failed(), [], "no attempt in flight");
    assert_eq!(sim.step(Supervisor::handle_connect_requested), []);
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(1, now)), [], "nothing sent yet");
    assert!(matches!(sim.fire()[..], [SendHeartbeat { id: 1 }]));
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(99, now)), [], "unknown id");
    assert_eq!(sim.supervisor.last_rtt(), None);
    sim.lost();
    let backoff = sim.supervisor.status();
    assert_eq!(sim.lost(), [], "already backing off");
    assert_eq!(sim.connected(), [], "no attempt in flight");
    assert_eq!(sim.step(|supervisor, now| supervisor.handle_heartbeat_ok(1, now)), []);
    assert_eq!(sim.step(Supervisor::handle_activity), []);
    assert_eq!(sim.supervisor.status(), backoff);
    assert_eq!(sim.supervisor.failures, 1);
}

#[test]
fn out_of_range_settings_are_clamped() {
    let config = SupervisorConfig {
        backoff_floor: Duration::ZERO,
        backoff_ceiling: Duration::ZERO,
        max_attempts: Some(0),
        heartbeat_interval: Duration::ZERO,
        heartbeat_timeout: Duration::MAX,
    };
    let mut sim = Sim::new(config);
    let clamped = &sim.supervisor.config;
    assert_eq!((clamped.backoff_floor, clamped.backoff_ceiling), (MIN_BACKOFF_FLOOR, MIN_BACKOFF_FLOOR));
    assert_eq!(clamped.max_attempts, Some(1));
    assert_eq!((clamped.heartbeat_interval, clamped.heartbeat_timeout), (MIN_HEARTBEAT, MAX_SETTING));
    sim.connected();
    assert_eq!(sim.fire(), [SendHeartbeat { id: 1 }]);
    assert_eq!(sim.supervisor.poll_timeout(), Some(sim.now + MAX_SETTING));
    assert_eq!(sim.lost(), [CloseConnection { reason: CloseReason::ConnectionLost }, StatusChanged(Offline)]);
}
