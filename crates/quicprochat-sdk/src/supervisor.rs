//! The connection supervisor: a sans-IO state machine that decides when to connect, when to give
//! up, when to ping, when a path is dead, and when to resynchronise.
//!
//! It owns the connection *lifecycle*: the state (connecting, connected, backing off, offline), the
//! reconnect backoff (exponential with full jitter, reset only once a connection proved healthy by
//! answering a heartbeat), the heartbeat schedule and dead-path detection, and the status the app sees.
//!
//! It deliberately does no IO: no sockets, no tokio, no clock reads and no global randomness. Time
//! comes in as the `now` argument of every `handle_*` call and randomness from the seed given to
//! [`Supervisor::new`], so the same inputs always give the same outputs. Connecting, logging in,
//! pinging, resubscribing and closing are done by a driver (`QpcClient`), which the supervisor
//! tells what to do through [`SupervisorAction`]s.
//!
//! # Call order for a driver
//!
//! ```text
//! let mut supervisor = Supervisor::new(config, seed, Instant::now());
//! loop {
//!     // 1. Perform every queued action, in order.
//!     while let Some(action) = supervisor.poll_action() {
//!         match action {
//!             Connect { attempt }     => start connect + login; its outcome is reported later,
//!             SendHeartbeat { id }    => send a Ping RPC; a pong → handle_heartbeat_ok(id, now),
//!             Resync                  => resubscribe from the cursor, fetch missed, flush the outbox,
//!             CloseConnection { .. }  => close the connection and abandon any connect in flight,
//!             StatusChanged(status)   => publish to the app's status stream,
//!         }
//!     }
//!     // 2. Wait for whichever comes first: the supervisor's deadline or an IO event.
//!     select! {
//!         _ = sleep_until(supervisor.poll_timeout()) => supervisor.handle_timeout(Instant::now()),
//!         event = io_events => feed it: handle_connected / handle_connect_failed /
//!                              handle_connection_lost / handle_heartbeat_ok / handle_activity,
//!         request = app     => handle_disconnect / handle_connect_requested,
//!     }
//! }
//! ```
//!
//! `poll_timeout()` is `None` while a connect attempt is in flight (the driver bounds the attempt
//! itself and reports a timeout as a retryable [`Supervisor::handle_connect_failed`]) and while
//! [`ConnectionStatus::Offline`]. Events that do not fit the current state (a pong with an old id,
//! a loss reported while already backing off, anything after a disconnect) are stale and ignored.

mod backoff;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

/// The smallest backoff floor accepted; a lower one is raised to it so a client cannot spin.
pub const MIN_BACKOFF_FLOOR: Duration = Duration::from_millis(10);
/// The smallest heartbeat interval and timeout accepted; lower ones are raised to it.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// The largest duration accepted for any setting; larger ones are lowered to it.
pub const MAX_SETTING: Duration = Duration::from_secs(24 * 60 * 60);

/// Tuning of a [`Supervisor`]. Out-of-range values are clamped by [`Supervisor::new`] (see the
/// field docs), never rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// The longest wait before the first retry after a failure; doubles with each further failure.
    /// Default 250 ms; at least [`MIN_BACKOFF_FLOOR`].
    pub backoff_floor: Duration,
    /// The longest wait between attempts, however many failed. Default 15 s; at least the floor.
    pub backoff_ceiling: Duration,
    /// How many attempts in a row may fail (without a healthy connection in between) before the
    /// supervisor gives up and goes [`ConnectionStatus::Offline`] until
    /// [`Supervisor::handle_connect_requested`]. Default `None`: retry forever. `Some(0)` counts as `Some(1)`.
    pub max_attempts: Option<u32>,
    /// How long a connection may stay quiet before a heartbeat is sent. Default 2 s.
    pub heartbeat_interval: Duration,
    /// How long a heartbeat may stay unanswered before the path counts as dead. Default 6 s, so a
    /// dead path is detected at most `heartbeat_interval + heartbeat_timeout` (8 s) after the last
    /// proof of life.
    pub heartbeat_timeout: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff_floor: Duration::from_millis(250),
            backoff_ceiling: Duration::from_secs(15),
            max_attempts: None,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(6),
        }
    }
}

impl SupervisorConfig {
    /// This config with every value clamped into its documented range.
    fn clamped(self) -> Self {
        let backoff_floor = self.backoff_floor.clamp(MIN_BACKOFF_FLOOR, MAX_SETTING);
        SupervisorConfig {
            backoff_floor,
            backoff_ceiling: self.backoff_ceiling.clamp(backoff_floor, MAX_SETTING),
            max_attempts: self.max_attempts.map(|max| max.max(1)),
            heartbeat_interval: self.heartbeat_interval.clamp(MIN_HEARTBEAT, MAX_SETTING),
            heartbeat_timeout: self.heartbeat_timeout.clamp(MIN_HEARTBEAT, MAX_SETTING),
        }
    }
}

/// The connection state as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// A connection attempt (transport and login) is in progress.
    Connecting,
    /// Connected and logged in.
    Connected,
    /// The last attempt failed or the connection was lost; attempt number `attempt` (1-based,
    /// counted since the last healthy connection or connect request) starts at `next_try`.
    Reconnecting {
        /// The number of the next attempt.
        attempt: u32,
        /// When the next attempt starts.
        next_try: Instant,
    },
    /// Not connected and not trying: after a disconnect, a non-retryable failure or too many
    /// failed attempts. Only [`Supervisor::handle_connect_requested`] leaves it.
    Offline,
}

/// Why the supervisor asks for the connection to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A heartbeat went unanswered for `heartbeat_timeout`: the path is dead. A reconnect follows.
    HeartbeatTimeout,
    /// The connection was reported lost; closing makes sure a half-broken one (e.g. its push stream
    /// is gone) is not used again. A reconnect follows.
    ConnectionLost,
    /// The app asked to disconnect: close with the normal application close code, end background
    /// tasks and abandon any connect attempt in flight. Nothing follows.
    Disconnect,
}

/// What the driver must do next; drained in order with [`Supervisor::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorAction {
    /// Open a connection and log in (attempt number, 1-based). Report the outcome with
    /// [`Supervisor::handle_connected`] or [`Supervisor::handle_connect_failed`].
    Connect {
        /// The attempt number since the last healthy connection or connect request, from 1.
        attempt: u32,
    },
    /// Send one heartbeat (Ping RPC) with this id; report the answer with
    /// [`Supervisor::handle_heartbeat_ok`]`(id, now)`.
    SendHeartbeat {
        /// Identifies the heartbeat; answers with another id are stale.
        id: u64,
    },
    /// After every successful (re)connect: resubscribe from the stored cursor, fetch what was
    /// missed, flush the outbox.
    Resync,
    /// Close the current connection (dead path detected, loss reported, or disconnect requested).
    CloseConnection {
        /// Why; decides the close code and whether a reconnect follows.
        reason: CloseReason,
    },
    /// The status changed; surface it to the app. Emitted exactly when [`Supervisor::status`] changes.
    StatusChanged(ConnectionStatus),
}

/// Where the supervisor is in the connection lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Attempt `attempt` is in flight; waiting for its outcome.
    Connecting { attempt: u32 },
    /// Connected and logged in.
    Connected { health: Health, heartbeat: Heartbeat },
    /// Waiting until `until` before attempt `attempt`.
    Backoff { attempt: u32, until: Instant },
    /// Doing nothing until asked to connect.
    Offline,
}

/// Whether the current connection has answered a heartbeat yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Not yet: if it dies now, it counts as failed attempt `attempt` and the backoff keeps growing.
    Unproven { attempt: u32 },
    /// It answered a heartbeat: the failure counter was reset; a loss starts again at attempt 1.
    Proven,
}

/// The heartbeat schedule of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heartbeat {
    /// No heartbeat outstanding; send one at `next_ping`.
    Idle { next_ping: Instant },
    /// Heartbeat `id` was sent at `sent_at`; the path is dead if it is unanswered at `deadline`.
    AwaitingPong { id: u64, sent_at: Instant, deadline: Instant },
}

/// The connection supervisor; see the [module docs](self) for the driver's call order.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorConfig,
    state: State,
    /// Failures since the last healthy connection (or connect request); sets the backoff bound.
    /// Reset only by a heartbeat answer or [`Supervisor::handle_connect_requested`].
    failures: u32,
    next_heartbeat_id: u64,
    last_rtt: Option<Duration>,
    rng: SmallRng,
    actions: VecDeque<SupervisorAction>,
}

impl Supervisor {
    /// A supervisor in [`ConnectionStatus::Connecting`] with `Connect { attempt: 1 }` queued.
    /// `seed` drives the backoff jitter: the same seed and inputs give the same delays. No
    /// `StatusChanged` is queued for the initial status; read it with [`Supervisor::status`].
    pub fn new(config: SupervisorConfig, seed: u64, now: Instant) -> Supervisor {
        let _ = now; // Part of the uniform signature; nothing is scheduled before the first outcome.
        Supervisor {
            config: config.clamped(),
            state: State::Connecting { attempt: 1 },
            failures: 0,
            next_heartbeat_id: 1,
            last_rtt: None,
            rng: SmallRng::seed_from_u64(seed),
            actions: VecDeque::from([SupervisorAction::Connect { attempt: 1 }]),
        }
    }

    /// The transport is up and logged in: go [`ConnectionStatus::Connected`], queue `Resync` and
    /// schedule the first heartbeat one interval from now. Ignored unless an attempt is in flight.
    pub fn handle_connected(&mut self, now: Instant) {
        let State::Connecting { attempt } = self.state else { return };
        let heartbeat = Heartbeat::Idle { next_ping: later(now, self.config.heartbeat_interval) };
        self.set_state(State::Connected { health: Health::Unproven { attempt }, heartbeat });
        self.actions.push_back(SupervisorAction::Resync);
    }

    /// The attempt in flight failed. Retryable (timeout, refused, server busy): back off and retry,
    /// or go offline if `max_attempts` is used up. Not retryable (pinned certificate changed,
    /// account disabled): go [`ConnectionStatus::Offline`]. Ignored unless an attempt is in flight.
    pub fn handle_connect_failed(&mut self, now: Instant, retryable: bool) {
        let State::Connecting { attempt } = self.state else { return };
        if retryable {
            self.fail_attempt(now, attempt);
        } else {
            self.set_state(State::Offline);
        }
    }

    /// The connection died (quinn reported it closed, or the push stream broke): queue
    /// `CloseConnection` and reconnect after a backoff. Ignored unless connected; a failure during
    /// a connect attempt is reported with [`Supervisor::handle_connect_failed`] instead.
    pub fn handle_connection_lost(&mut self, now: Instant) {
        let State::Connected { health, .. } = self.state else { return };
        self.actions.push_back(SupervisorAction::CloseConnection { reason: CloseReason::ConnectionLost });
        self.lose_connection(now, health);
    }

    /// Heartbeat `id` was answered: record the round-trip time, and the connection has proved
    /// healthy, so the failure counter resets (this is the only event that resets it). Answers to
    /// any other id, or when not connected, are stale and ignored.
    pub fn handle_heartbeat_ok(&mut self, id: u64, now: Instant) {
        let State::Connected { heartbeat: Heartbeat::AwaitingPong { id: awaited, sent_at, .. }, .. } = self.state
        else {
            return;
        };
        if id != awaited {
            return;
        }
        self.last_rtt = Some(now.saturating_duration_since(sent_at));
        self.failures = 0;
        let heartbeat = Heartbeat::Idle { next_ping: later(now, self.config.heartbeat_interval) };
        self.state = State::Connected { health: Health::Proven, heartbeat };
    }

    /// An RPC succeeded: proof that the path is alive. Pushes the next heartbeat one interval past
    /// `now`, or the deadline of an outstanding one one timeout past `now`. Before the connection's
    /// first pong the first heartbeat is not postponed: that pong is what proves it healthy.
    pub fn handle_activity(&mut self, now: Instant) {
        let State::Connected { health, heartbeat } = self.state else { return };
        let heartbeat = match heartbeat {
            Heartbeat::Idle { next_ping } if health == Health::Proven => {
                Heartbeat::Idle { next_ping: next_ping.max(later(now, self.config.heartbeat_interval)) }
            }
            Heartbeat::Idle { .. } => heartbeat,
            Heartbeat::AwaitingPong { id, sent_at, deadline } => Heartbeat::AwaitingPong {
                id,
                sent_at,
                deadline: deadline.max(later(now, self.config.heartbeat_timeout)),
            },
        };
        self.state = State::Connected { health, heartbeat };
    }

    /// The app called `disconnect()`: drop every queued action except status changes, queue
    /// `CloseConnection { Disconnect }` and go [`ConnectionStatus::Offline`]. After it, only
    /// [`Supervisor::handle_connect_requested`] has any effect. Ignored when already offline.
    pub fn handle_disconnect(&mut self, now: Instant) {
        let _ = now; // Part of the uniform signature; disconnecting schedules nothing.
        if self.state == State::Offline {
            return;
        }
        self.actions.retain(|action| matches!(action, SupervisorAction::StatusChanged(_)));
        self.actions.push_back(SupervisorAction::CloseConnection { reason: CloseReason::Disconnect });
        self.set_state(State::Offline);
    }

    /// The app asked to connect: leave [`ConnectionStatus::Offline`] and start again at attempt 1
    /// with a fresh backoff. Ignored when not offline (already connected or trying).
    pub fn handle_connect_requested(&mut self, now: Instant) {
        let _ = now; // Part of the uniform signature; the first attempt starts immediately.
        if self.state != State::Offline {
            return;
        }
        self.failures = 0;
        self.set_state(State::Connecting { attempt: 1 });
        self.actions.push_back(SupervisorAction::Connect { attempt: 1 });
    }

    /// Call when [`Supervisor::poll_timeout`] has passed (calling early is harmless). A due retry
    /// queues `Connect`; a due heartbeat queues `SendHeartbeat`; an overdue one queues
    /// `CloseConnection { HeartbeatTimeout }` and backs off.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Backoff { attempt, until } if now >= until => {
                self.set_state(State::Connecting { attempt });
                self.actions.push_back(SupervisorAction::Connect { attempt });
            }
            State::Connected { health, heartbeat: Heartbeat::Idle { next_ping } } if now >= next_ping => {
                let id = self.next_heartbeat_id;
                self.next_heartbeat_id = self.next_heartbeat_id.wrapping_add(1);
                let deadline = later(now, self.config.heartbeat_timeout);
                let heartbeat = Heartbeat::AwaitingPong { id, sent_at: now, deadline };
                self.state = State::Connected { health, heartbeat };
                self.actions.push_back(SupervisorAction::SendHeartbeat { id });
            }
            State::Connected { health, heartbeat: Heartbeat::AwaitingPong { deadline, .. } } if now >= deadline => {
                self.actions.push_back(SupervisorAction::CloseConnection { reason: CloseReason::HeartbeatTimeout });
                self.lose_connection(now, health);
            }
            _ => {}
        }
    }

    /// The next action for the driver, oldest first; `None` when there is nothing to do.
    pub fn poll_action(&mut self) -> Option<SupervisorAction> {
        self.actions.pop_front()
    }

    /// When [`Supervisor::handle_timeout`] must be called next; `None` while an attempt is in
    /// flight (its outcome is awaited) and while offline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Backoff { until, .. } => Some(until),
            State::Connected { heartbeat: Heartbeat::Idle { next_ping }, .. } => Some(next_ping),
            State::Connected { heartbeat: Heartbeat::AwaitingPong { deadline, .. }, .. } => Some(deadline),
            State::Connecting { .. } | State::Offline => None,
        }
    }

    /// The current status, as last announced by `StatusChanged` (or `Connecting` initially).
    pub fn status(&self) -> ConnectionStatus {
        match self.state {
            State::Connecting { .. } => ConnectionStatus::Connecting,
            State::Connected { .. } => ConnectionStatus::Connected,
            State::Backoff { attempt, until } => ConnectionStatus::Reconnecting { attempt, next_try: until },
            State::Offline => ConnectionStatus::Offline,
        }
    }

    /// The round-trip time of the last answered heartbeat, if any.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// The connection is gone: count it as a failure, unless it had proved healthy, in which case
    /// a new series of attempts starts at 1.
    fn lose_connection(&mut self, now: Instant, health: Health) {
        let attempt = match health {
            Health::Unproven { attempt } => attempt,
            Health::Proven => 0,
        };
        self.fail_attempt(now, attempt);
    }

    /// Attempt `attempt` failed (0: a healthy connection was lost): back off before the next one,
    /// or go offline when `max_attempts` is used up.
    fn fail_attempt(&mut self, now: Instant, attempt: u32) {
        self.failures = self.failures.saturating_add(1);
        if self.config.max_attempts.is_some_and(|max| attempt >= max) {
            self.set_state(State::Offline);
            return;
        }
        let delay = backoff::delay(&self.config, self.failures, &mut self.rng);
        self.set_state(State::Backoff { attempt: attempt.saturating_add(1), until: later(now, delay) });
    }

    /// Enter `state`, queueing `StatusChanged` if the visible status differs.
    fn set_state(&mut self, state: State) {
        let before = self.status();
        self.state = state;
        let after = self.status();
        if after != before {
            self.actions.push_back(SupervisorAction::StatusChanged(after));
        }
    }
}

/// `now + by`. Settings are clamped to [`MAX_SETTING`], so this cannot overflow on any real clock;
/// should it ever, the deadline is `now` (act at once) rather than a panic.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by).unwrap_or(now)
}
