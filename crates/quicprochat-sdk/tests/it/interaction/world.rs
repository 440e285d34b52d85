//! The system under test of the interaction test (server, three clients)
//! with its model, and the operations that drive both in step.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quicprochat_sdk::{ClientOptions, ConnectionStatus, MessageState, QpcClient, SupervisorConfig};

use super::model::{Model, SendExpectation, Shown, ALICE, BOB, CAROL, COMMITTER, GROUPS, NAMES};
use super::schedule::Op;
use super::Stats;
use crate::harness::{Harness, WAIT};

/// A short backoff ceiling so reconnects after a server restart are quick;
/// default heartbeats so a loaded machine does not see spurious reconnects.
/// The connect timeout stays at its default (5 s): an attempt that reaches
/// the server while it shuts down is answered only by stateless resets and
/// succeeds with the retransmitted Initial (~1 s later) once the new server
/// listens; a 1 s timeout would abandon it at about that moment.
fn options() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(5),
        supervisor: SupervisorConfig { backoff_ceiling: Duration::from_secs(1), ..SupervisorConfig::default() },
        ..ClientOptions::default()
    }
}

/// The system under test plus its model.
pub(super) struct World {
    pub(super) seed: u64,
    pub(super) harness: Harness,
    pub(super) clients: [Option<QpcClient>; 3],
    pub(super) model: Model,
    /// Everything each client's `receive()` returned, in order, across restarts.
    pub(super) shown: [Vec<Shown>; 3],
    pub(super) trace: Arc<Mutex<Vec<String>>>,
    pub(super) stats: Stats,
}

impl World {
    /// alice creates "team" with bob and carol; bob creates "side" with alice and carol.
    pub(super) async fn start(seed: u64, trace: Arc<Mutex<Vec<String>>>) -> World {
        let harness = Harness::start().await;
        let mut clients = [None, None, None];
        for (slot, name) in clients.iter_mut().zip(NAMES) {
            let client = QpcClient::register(&harness.profile(name), harness.addr, name, None, options())
                .await
                .unwrap_or_else(|error| panic!("register {name}: {error}"));
            *slot = Some(client);
        }
        let world = World {
            seed,
            harness,
            clients,
            model: Model::new(),
            shown: Default::default(),
            trace,
            stats: Stats::default(),
        };
        world.client(ALICE).create_group("team").await.expect("create team");
        world.client(ALICE).add_members("team", &["bob".into(), "carol".into()]).await.expect("add to team");
        world.client(BOB).sync().await.expect("bob joins team");
        world.client(BOB).create_group("side").await.expect("create side");
        world.client(BOB).add_members("side", &["alice".into(), "carol".into()]).await.expect("add to side");
        for client in [ALICE, CAROL] {
            world.client(client).sync().await.expect("join");
        }
        world
    }

    pub(super) fn client(&self, client: usize) -> &QpcClient {
        self.clients[client].as_ref().expect("every client slot is filled between operations")
    }

    pub(super) fn log(&self, line: String) {
        if std::env::var_os("QPC_INTERACTION_TRACE").is_some() {
            eprintln!("{line}");
        }
        if let Ok(mut trace) = self.trace.lock() {
            trace.push(line);
        }
    }

    pub(super) async fn apply(&mut self, index: usize, op: Op) {
        match op {
            Op::Send { from, group } => self.send(from, group, self.text(index, 0, from, group)).await,
            Op::Burst(sends) => {
                for (sub, (from, group)) in sends.into_iter().enumerate() {
                    self.send(from, group, self.text(index, sub, from, group)).await;
                }
            }
            Op::SendWhileOffline { from, group } => {
                if self.model.is_online(from) {
                    self.go_offline(from).await;
                }
                self.send(from, group, self.text(index, 0, from, group)).await;
            }
            Op::Deliver { to } => self.deliver(to).await,
            Op::Commit { group } => self.commit(group).await,
            Op::Reconnect { who } | Op::ClientRestart { who } => self.reopen(who).await,
            Op::CrashDuringReceive { who, after_ms } => {
                let cut = tokio::time::timeout(Duration::from_millis(after_ms), self.client(who).receive()).await;
                if let Ok(received) = cut {
                    self.record_shown(who, received.expect("an online client receives"));
                }
                self.reopen(who).await;
                // Whatever was stored but not displayed before the cut is displayed now, once.
                self.deliver(who).await;
            }
            Op::CancelledSend { from, group, after_ms } => {
                self.cancelled_send(from, group, self.text(index, 0, from, group), after_ms).await
            }
            Op::ServerRestart => self.server_restart().await,
        }
    }

    /// A text unique in the whole run.
    pub(super) fn text(&self, index: usize, sub: usize, from: usize, group: usize) -> String {
        format!("s{}-op{index}.{sub} {} to {}", self.seed, NAMES[from], GROUPS[group])
    }

    pub(super) async fn send(&mut self, from: usize, group: usize, text: String) {
        let expectation = self.model.expect_send(from, group);
        let result = self.client(from).send(GROUPS[group], &text).await;
        self.check_send(from, group, text, expectation, result);
    }

    pub(super) fn check_send(
        &mut self,
        from: usize,
        group: usize,
        text: String,
        expectation: SendExpectation,
        result: Result<quicprochat_sdk::StoredMessage, quicprochat_sdk::SdkError>,
    ) {
        let who = NAMES[from];
        match (expectation, result) {
            (SendExpectation::NotMember, Err(error)) => {
                assert!(!error.is_retryable(), "{who}: not a member, yet a retryable error: {error}");
            }
            (SendExpectation::NotMember, Ok(message)) => {
                panic!("{who} is not in {}, yet sent {message:?}", GROUPS[group])
            }
            (expected, Err(error)) => panic!("{who} -> {}: expected {expected:?}, got error {error}", GROUPS[group]),
            (expected, Ok(message)) => {
                let state = match expected {
                    SendExpectation::Sent => MessageState::Sent,
                    _ => MessageState::Pending,
                };
                assert_eq!(message.state, state, "{who} -> {}: {text}", GROUPS[group]);
                assert_eq!((message.group.as_str(), message.text.as_str()), (GROUPS[group], text.as_str()));
                self.model.record_send(from, group, text, expected);
            }
        }
    }

    /// A send cut off at an arbitrary point: afterwards the message is either
    /// nowhere (cut before it was queued) or in the history, and once the
    /// outbox is flushed it behaves like a normal send.
    pub(super) async fn cancelled_send(&mut self, from: usize, group: usize, text: String, after_ms: u64) {
        let expectation = self.model.expect_send(from, group);
        let cut =
            tokio::time::timeout(Duration::from_millis(after_ms), self.client(from).send(GROUPS[group], &text)).await;
        if let Ok(result) = cut {
            return self.check_send(from, group, text, expectation, result);
        }
        let history = self.client(from).history(GROUPS[group], u32::MAX).await.expect("history");
        let Some(stored) = history.iter().find(|message| message.text == text) else {
            self.log(format!("   cut before the message was queued: {text}"));
            return;
        };
        assert_ne!(expectation, SendExpectation::NotMember, "{} queued a message to a group it is not in", NAMES[from]);
        self.log(format!("   cut with the message {:?}: {text}", stored.state));
        if expectation == SendExpectation::Sent {
            assert_eq!(self.client(from).flush_outbox().await.expect("flush"), 0, "the outbox drained");
        }
        self.model.record_send(from, group, text, expectation);
    }

    /// Syncs (so the local epoch is the server's), then disconnects.
    pub(super) async fn go_offline(&mut self, client: usize) {
        self.client(client).sync().await.expect("sync before going offline");
        self.client(client).disconnect().await;
        self.model.go_offline(client);
    }

    /// Closes the client (if open) and opens its profile again, which logs in
    /// and flushes the outbox.
    pub(super) async fn reopen(&mut self, client: usize) {
        if let Some(old) = self.clients[client].take() {
            old.disconnect().await;
        }
        let profile = self.harness.profile(NAMES[client]);
        let reopened = QpcClient::open(&profile, options()).await.expect("open profile");
        assert_eq!(reopened.flush_outbox().await.expect("flush"), 0, "{}'s outbox drained", NAMES[client]);
        self.clients[client] = Some(reopened);
        self.model.reconnect(client);
    }

    pub(super) async fn commit(&mut self, group: usize) {
        let committer = COMMITTER[group];
        let carol = ["carol".to_owned()];
        let client = self.client(committer);
        let result = if self.model.is_member(CAROL, group) {
            client.remove_members(GROUPS[group], &carol).await
        } else {
            client.add_members(GROUPS[group], &carol).await
        };
        match self.model.toggle_carol(group) {
            None => {
                let error = result.expect_err("an offline committer cannot commit");
                assert!(error.is_retryable(), "offline commit: {error}");
            }
            Some(added) => {
                self.stats.commits += 1;
                result.unwrap_or_else(|error| panic!("{} toggling carol (add: {added}): {error}", NAMES[committer]));
                let members = self.client(committer).members(GROUPS[group]).await.expect("members");
                assert_eq!(members, self.model.members(group));
            }
        }
    }

    /// Restarts the server and waits until every online client reconnected.
    pub(super) async fn server_restart(&mut self) {
        let mut watchers = Vec::new();
        for client in (0..3).filter(|&client| self.model.is_online(client)) {
            let mut status = self.client(client).status();
            status.mark_unchanged();
            watchers.push((client, status));
        }
        let restarted = Instant::now();
        // `shutdown()` returns with the port closed, so the new server binds it at once.
        self.harness.stop_server().await;
        self.stats.server_restarts += 1;
        self.harness.start_server().await;
        for (client, mut status) in watchers {
            // The server closed the connection, so the status must change, and
            // the first Connected after that is the new connection.
            let reconnected = async {
                loop {
                    status.changed().await.expect("status channel");
                    if *status.borrow_and_update() == ConnectionStatus::Connected {
                        break;
                    }
                }
            };
            tokio::time::timeout(WAIT, reconnected).await.expect("reconnected after the server restart");
            let elapsed = restarted.elapsed();
            self.stats.longest_reconnect = self.stats.longest_reconnect.max(elapsed);
            self.log(format!("   {} reconnected after {elapsed:?}", NAMES[client]));
        }
    }

    /// The run's statistics, completed from the model and the displays.
    pub(super) fn finish_stats(mut self, elapsed: Duration) -> Stats {
        self.stats.elapsed = elapsed;
        self.stats.messages = self.model.messages.len();
        self.stats.displayed = self.shown.iter().map(Vec::len).sum();
        (self.stats.refused, self.stats.withheld) = self.model.refusals();
        self.stats
    }
}
