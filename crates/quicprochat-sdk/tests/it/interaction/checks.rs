//! The interaction test's checks: what each client displayed, its history,
//! its member lists, and the final "deliver everything" and message round.

use std::collections::BTreeMap;

use quicprochat_sdk::MessageState;

use super::model::{Shown, GROUPS, NAMES};
use super::world::World;
use crate::harness::WAIT;

impl World {
    pub(super) async fn deliver(&mut self, client: usize) {
        let result = self.client(client).receive().await;
        if !self.model.is_online(client) {
            let error = result.expect_err("an offline client cannot receive");
            assert!(error.is_retryable(), "offline receive: {error}");
            return;
        }
        self.record_shown(client, result.expect("receive"));
        self.check_shown(client);
        self.check_members(client).await;
    }

    pub(super) fn record_shown(&mut self, client: usize, messages: Vec<quicprochat_sdk::StoredMessage>) {
        for message in messages {
            assert_eq!(message.state, MessageState::Received, "{message:?}");
            self.shown[client].push(Shown { group: message.group, from: message.from, text: message.text });
        }
    }

    /// What the client displayed equals what the model expects (each once),
    /// and each sender's messages came in the order they were sent.
    pub(super) fn check_shown(&self, client: usize) {
        let mut shown = self.shown[client].clone();
        shown.sort();
        let expected = self.model.expected_shown(client);
        if shown != expected {
            let missing: Vec<&Shown> = expected.iter().filter(|message| !shown.contains(message)).collect();
            let mut counts: BTreeMap<&Shown, usize> = BTreeMap::new();
            for message in &shown {
                *counts.entry(message).or_default() += 1;
            }
            let wrong: Vec<_> =
                counts.iter().filter(|(message, count)| **count > 1 || !expected.contains(message)).collect();
            panic!(
                "{} displayed the wrong messages.\n missing: {missing:#?}\n unexpected or repeated (count): {wrong:#?}",
                NAMES[client]
            );
        }
        let order = self.model.send_index();
        let mut last: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for message in &self.shown[client] {
            let index = order[message.text.as_str()];
            if let Some(previous) = last.insert((&message.from, &message.group), index) {
                assert!(
                    previous < index,
                    "{} displayed {:?} after a later message of its sender",
                    NAMES[client],
                    message.text
                );
            }
        }
    }

    /// A synced client reports the model's member list for its groups and
    /// has no active conversation for the others.
    pub(super) async fn check_members(&self, client: usize) {
        for (group, name) in GROUPS.iter().enumerate() {
            let members = self.client(client).members(name).await;
            if self.model.is_member(client, group) {
                assert_eq!(members.expect("members"), self.model.members(group), "{}'s view of {name}", NAMES[client]);
            } else {
                assert!(members.is_err(), "{} is not in {name} but sees members {members:?}", NAMES[client]);
            }
        }
    }

    /// Reopens the offline clients, flushes every outbox, and receives until
    /// every client displayed everything the model expects.
    pub(super) async fn deliver_everything(&mut self) {
        for client in 0..3 {
            if !self.model.is_online(client) {
                self.reopen(client).await;
            }
        }
        for (client, name) in NAMES.iter().enumerate() {
            assert_eq!(self.client(client).flush_outbox().await.expect("flush"), 0, "{name}'s outbox");
            assert!(!self.model.has_queued(client));
        }
        for client in 0..3 {
            let expected = self.model.expected_shown(client).len();
            let deadline = tokio::time::Instant::now() + WAIT;
            let received = self.client(client).receive().await.expect("receive");
            self.record_shown(client, received);
            while self.shown[client].len() < expected {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                if remaining.is_zero() {
                    break;
                }
                let received = self.client(client).receive_wait(remaining).await.expect("receive");
                self.record_shown(client, received);
            }
            // Anything unexpected or repeated would be waiting by now as well.
            let received = self.client(client).receive().await.expect("receive");
            self.record_shown(client, received);
            self.check_shown(client);
            self.check_members(client).await;
        }
    }

    /// Every member of every group sends once more; everyone else must get
    /// it. Then histories are checked: every message once, with its state.
    pub(super) async fn final_round(&mut self) {
        for (group, group_name) in GROUPS.iter().enumerate() {
            let members: Vec<usize> = (0..3).filter(|&client| self.model.is_member(client, group)).collect();
            for client in members {
                let text = format!("s{} final from {} to {group_name}", self.seed, NAMES[client]);
                self.send(client, group, text).await;
            }
        }
        self.deliver_everything().await;
        for (client, client_name) in NAMES.iter().enumerate() {
            for (group, name) in GROUPS.iter().enumerate() {
                let history = self.client(client).history(name, u32::MAX).await.expect("history");
                let mut actual: Vec<(Shown, &'static str)> = history
                    .into_iter()
                    .map(|message| {
                        let state = match message.state {
                            MessageState::Pending => "pending",
                            MessageState::Sent => "sent",
                            MessageState::Failed => "failed",
                            MessageState::Received => "received",
                        };
                        (Shown { group: message.group, from: message.from, text: message.text }, state)
                    })
                    .collect();
                actual.sort();
                assert_eq!(actual, self.model.expected_history(client, group), "{client_name}'s history of {name}");
            }
        }
    }
}
