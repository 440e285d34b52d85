//! The reference model of the interaction test: who is in which group at
//! which MLS epoch, which client is online, what each client has queued, and
//! from that, exactly which messages every client must display.
//!
//! It is plain data with no IO, and it encodes the delivery rules the SDK
//! and server actually implement (see `messaging.rs`, `sync.rs`, `groups.rs`
//! and the server's `domain/messages.rs`):
//!
//! - A client encrypts in the epoch it last synced to. Online, `send` syncs
//!   first, so that is the group's current epoch; offline (after
//!   `disconnect()`), it is the epoch it had when it went offline.
//! - The server accepts a message only if its sender is on the roster when
//!   the message arrives, and fans it out to the rest of that roster.
//! - A recipient decrypts it only if it was in the group at the epoch the
//!   message was encrypted in (the same membership: a member re-added later
//!   has no secrets of earlier epochs) and that epoch is at most
//!   [`MAX_PAST_EPOCHS`] behind the group's epoch when the message arrived
//!   (OpenMLS keeps that many past epochs for late messages).

use std::collections::{BTreeMap, BTreeSet};

/// Past epochs whose secrets a member keeps (`quicprochat-core`'s `MAX_PAST_EPOCHS`).
pub(crate) const MAX_PAST_EPOCHS: u64 = 5;

/// The clients, by index.
pub(crate) const NAMES: [&str; 3] = ["alice", "bob", "carol"];
pub(crate) const ALICE: usize = 0;
pub(crate) const BOB: usize = 1;
pub(crate) const CAROL: usize = 2;

/// The groups, by index: "team" (created and changed by alice), "side" (by bob).
pub(crate) const GROUPS: [&str; 2] = ["team", "side"];
/// Who commits membership changes in each group.
pub(crate) const COMMITTER: [usize; 2] = [ALICE, BOB];

/// A message as a client displays it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Shown {
    pub(crate) group: String,
    pub(crate) from: String,
    pub(crate) text: String,
}

/// What the server did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Still in the sender's outbox (the sender is offline).
    Queued,
    /// Accepted; `recipients` can decrypt it, `withheld` (other members when
    /// it arrived) cannot.
    Accepted { recipients: BTreeSet<usize>, withheld: BTreeSet<usize> },
    /// Refused: the sender was not on the roster when it arrived.
    Refused,
}

/// One message that made it into its sender's history.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) from: usize,
    pub(crate) group: usize,
    pub(crate) text: String,
    pub(crate) epoch: u64,
    pub(crate) outcome: Outcome,
}

/// What `send` must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendExpectation {
    /// Accepted at once (`MessageState::Sent`).
    Sent,
    /// Queued locally (`MessageState::Pending`), encrypted in this epoch.
    Pending { epoch: u64 },
    /// An error: the sender has no active conversation of that name.
    NotMember,
}

#[derive(Debug, Clone)]
struct Group {
    epoch: u64,
    /// The roster, with the epoch each member's current membership started.
    joined: BTreeMap<usize, u64>,
}

#[derive(Debug, Clone, Default)]
struct Client {
    /// `Some` while disconnected: per group, the epoch the client had synced
    /// to if it was a member when it went offline.
    offline_view: Option<[Option<u64>; 2]>,
    /// Messages in the outbox, oldest first (indices into `messages`).
    queued: Vec<usize>,
}

/// The expected state of the whole system.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    groups: [Group; 2],
    clients: [Client; 3],
    pub(crate) messages: Vec<Message>,
}

impl Model {
    /// The state after the setup: alice created "team" and added bob and carol
    /// in one commit; bob created "side" and added alice and carol.
    pub(crate) fn new() -> Model {
        let team = Group { epoch: 1, joined: BTreeMap::from([(ALICE, 0), (BOB, 1), (CAROL, 1)]) };
        let side = Group { epoch: 1, joined: BTreeMap::from([(BOB, 0), (ALICE, 1), (CAROL, 1)]) };
        Model { groups: [team, side], clients: Default::default(), messages: Vec::new() }
    }

    pub(crate) fn is_online(&self, client: usize) -> bool {
        self.clients[client].offline_view.is_none()
    }

    pub(crate) fn is_member(&self, client: usize, group: usize) -> bool {
        self.groups[group].joined.contains_key(&client)
    }

    /// The roster of a group, sorted by name (as `QpcClient::members` answers).
    pub(crate) fn members(&self, group: usize) -> Vec<String> {
        let mut names: Vec<String> = self.groups[group].joined.keys().map(|&client| NAMES[client].to_owned()).collect();
        names.sort();
        names
    }

    /// What a send by `from` to `group` must answer now.
    pub(crate) fn expect_send(&self, from: usize, group: usize) -> SendExpectation {
        match &self.clients[from].offline_view {
            None if self.is_member(from, group) => SendExpectation::Sent,
            None => SendExpectation::NotMember,
            Some(view) => match view[group] {
                Some(epoch) => SendExpectation::Pending { epoch },
                None => SendExpectation::NotMember,
            },
        }
    }

    /// Records a message that reached the sender's history; an accepted one
    /// is fanned out now.
    pub(crate) fn record_send(&mut self, from: usize, group: usize, text: String, expectation: SendExpectation) {
        let index = self.messages.len();
        let (epoch, outcome) = match expectation {
            SendExpectation::Sent => {
                let epoch = self.groups[group].epoch;
                (epoch, self.arrival(from, group, epoch))
            }
            SendExpectation::Pending { epoch } => {
                self.clients[from].queued.push(index);
                (epoch, Outcome::Queued)
            }
            SendExpectation::NotMember => panic!("a refused send is not recorded"),
        };
        self.messages.push(Message { from, group, text, epoch, outcome });
    }

    /// A message of `from` encrypted in `epoch`, arriving now: fanned out to
    /// the other members, decryptable by those who can.
    fn arrival(&self, from: usize, group: usize, epoch: u64) -> Outcome {
        let state = &self.groups[group];
        let (recipients, withheld): (Vec<_>, Vec<_>) = state
            .joined
            .iter()
            .filter(|&(&member, _)| member != from)
            .partition(|&(_, &joined)| joined <= epoch && state.epoch - epoch <= MAX_PAST_EPOCHS);
        let members = |list: Vec<(&usize, &u64)>| list.into_iter().map(|(&member, _)| member).collect();
        Outcome::Accepted { recipients: members(recipients), withheld: members(withheld) }
    }

    /// The client synced and then disconnected.
    pub(crate) fn go_offline(&mut self, client: usize) {
        assert!(self.is_online(client), "{} is already offline", NAMES[client]);
        let view = [0, 1].map(|group| self.is_member(client, group).then_some(self.groups[group].epoch));
        self.clients[client].offline_view = Some(view);
    }

    /// The client opened its profile again: its outbox is flushed in order.
    pub(crate) fn reconnect(&mut self, client: usize) {
        self.clients[client].offline_view = None;
        for index in std::mem::take(&mut self.clients[client].queued) {
            let Message { from, group, epoch, .. } = self.messages[index];
            let outcome = if self.is_member(from, group) { self.arrival(from, group, epoch) } else { Outcome::Refused };
            self.messages[index].outcome = outcome;
        }
    }

    /// The committer of `group` adds carol if she is out, removes her if she
    /// is in. `None` when the committer is offline: the commit must fail and
    /// change nothing. Otherwise whether carol was added.
    pub(crate) fn toggle_carol(&mut self, group: usize) -> Option<bool> {
        if !self.is_online(COMMITTER[group]) {
            return None;
        }
        let state = &mut self.groups[group];
        state.epoch += 1;
        let add = !state.joined.contains_key(&CAROL);
        if add {
            state.joined.insert(CAROL, state.epoch);
        } else {
            state.joined.remove(&CAROL);
        }
        Some(add)
    }

    /// Whether `client` has queued messages.
    pub(crate) fn has_queued(&self, client: usize) -> bool {
        !self.clients[client].queued.is_empty()
    }

    /// Everything `client` must have displayed by now, sorted.
    pub(crate) fn expected_shown(&self, client: usize) -> Vec<Shown> {
        let mut shown: Vec<Shown> = self
            .messages
            .iter()
            .filter(
                |message| matches!(&message.outcome, Outcome::Accepted { recipients, .. } if recipients.contains(&client)),
            )
            .map(|message| self.shown(message))
            .collect();
        shown.sort();
        shown
    }

    /// The history `client` must hold for `group`: what it received and what
    /// it sent (with the state the outbox must report), sorted.
    pub(crate) fn expected_history(&self, client: usize, group: usize) -> Vec<(Shown, &'static str)> {
        let mut history: Vec<(Shown, &'static str)> = self
            .messages
            .iter()
            .filter(|message| message.group == group)
            .filter_map(|message| {
                let state = match (&message.outcome, message.from == client) {
                    (Outcome::Queued, true) => "pending",
                    (Outcome::Accepted { .. }, true) => "sent",
                    (Outcome::Refused, true) => "failed",
                    (Outcome::Accepted { recipients, .. }, false) if recipients.contains(&client) => "received",
                    _ => return None,
                };
                Some((self.shown(message), state))
            })
            .collect();
        history.sort();
        history
    }

    /// (messages refused by the server, member deliveries withheld because the
    /// member cannot decrypt), for the log.
    pub(crate) fn refusals(&self) -> (usize, usize) {
        let refused = self.messages.iter().filter(|message| message.outcome == Outcome::Refused).count();
        let withheld = self
            .messages
            .iter()
            .map(|message| match &message.outcome {
                Outcome::Accepted { withheld, .. } => withheld.len(),
                _ => 0,
            })
            .sum();
        (refused, withheld)
    }

    /// The send order of every message, by text (for per-sender order checks).
    pub(crate) fn send_index(&self) -> BTreeMap<&str, usize> {
        self.messages.iter().enumerate().map(|(index, message)| (message.text.as_str(), index)).collect()
    }

    fn shown(&self, message: &Message) -> Shown {
        Shown {
            group: GROUPS[message.group].to_owned(),
            from: NAMES[message.from].to_owned(),
            text: message.text.clone(),
        }
    }

    /// A one-line summary of the membership, for the trace.
    pub(crate) fn describe(&self) -> String {
        let groups: Vec<String> = (0..2)
            .map(|group| format!("{}@{}={:?}", GROUPS[group], self.groups[group].epoch, self.members(group)))
            .collect();
        let offline: Vec<&str> = (0..3).filter(|&client| !self.is_online(client)).map(|client| NAMES[client]).collect();
        format!("{} offline={offline:?}", groups.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_message_follows_the_roster_at_arrival_and_the_epoch_window() {
        let mut model = Model::new();
        model.go_offline(BOB);
        let pending = model.expect_send(BOB, 0);
        assert_eq!(pending, SendExpectation::Pending { epoch: 1 });
        model.record_send(BOB, 0, "late".into(), pending);
        assert_eq!(model.toggle_carol(0), Some(false));
        assert_eq!(model.toggle_carol(0), Some(true));
        model.reconnect(BOB);
        // carol's new membership started after the message's epoch.
        let expected = Outcome::Accepted { recipients: BTreeSet::from([ALICE]), withheld: BTreeSet::from([CAROL]) };
        assert_eq!(model.messages[0].outcome, expected);
    }
}
