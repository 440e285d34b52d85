//! Operations of the interaction test and their seeded generator.
//!
//! The generator looks only at the model (who is online), never at what the
//! system did, so a seed always yields the same schedule.

use std::fmt;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

use super::model::{Model, COMMITTER, GROUPS, NAMES};

/// One step of a schedule.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `from` sends one message to `group` (online: sent; offline: queued).
    Send { from: usize, group: usize },
    /// Several sends from several clients to both groups, before anyone receives.
    Burst(Vec<(usize, usize)>),
    /// `from` syncs and disconnects (if online), then sends: the message is queued.
    SendWhileOffline { from: usize, group: usize },
    /// `to` receives what is waiting.
    Deliver { to: usize },
    /// The group's committer adds carol if she is out, removes her if she is in.
    Commit { group: usize },
    /// An offline client opens its profile again (its outbox is flushed).
    Reconnect { who: usize },
    /// Close and reopen a client's profile.
    ClientRestart { who: usize },
    /// A receive cut off after `after_ms` (possibly after storing, before
    /// acknowledging or displaying), then a client restart and a delivery.
    CrashDuringReceive { who: usize, after_ms: u64 },
    /// A send cut off after `after_ms` (possibly queued, possibly stored by
    /// the server without the answer arriving), then the outbox is flushed.
    CancelledSend { from: usize, group: usize, after_ms: u64 },
    /// The server stops and starts again on the same address and data.
    ServerRestart,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Send { from, group } => write!(f, "Send {} -> {}", NAMES[*from], GROUPS[*group]),
            Op::Burst(sends) => {
                let sends: Vec<String> =
                    sends.iter().map(|(from, group)| format!("{}->{}", NAMES[*from], GROUPS[*group])).collect();
                write!(f, "Burst [{}]", sends.join(", "))
            }
            Op::SendWhileOffline { from, group } => {
                write!(f, "SendWhileOffline {} -> {}", NAMES[*from], GROUPS[*group])
            }
            Op::Deliver { to } => write!(f, "Deliver {}", NAMES[*to]),
            Op::Commit { group } => write!(f, "Commit toggle carol in {}", GROUPS[*group]),
            Op::Reconnect { who } => write!(f, "Reconnect {}", NAMES[*who]),
            Op::ClientRestart { who } => write!(f, "ClientRestart {}", NAMES[*who]),
            Op::CrashDuringReceive { who, after_ms } => {
                write!(f, "CrashDuringReceive {} after {after_ms} ms", NAMES[*who])
            }
            Op::CancelledSend { from, group, after_ms } => {
                write!(f, "CancelledSend {} -> {} after {after_ms} ms", NAMES[*from], GROUPS[*group])
            }
            Op::ServerRestart => write!(f, "ServerRestart"),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Send,
    Burst,
    SendWhileOffline,
    Deliver,
    Commit,
    Reconnect,
    ClientRestart,
    CrashDuringReceive,
    CancelledSend,
    ServerRestart,
}

/// Relative frequencies of the operations.
const WEIGHTS: &[(Kind, u32)] = &[
    (Kind::Send, 10),
    (Kind::Burst, 2),
    (Kind::SendWhileOffline, 2),
    (Kind::Deliver, 8),
    (Kind::Commit, 4),
    (Kind::Reconnect, 3),
    (Kind::ClientRestart, 1),
    (Kind::CrashDuringReceive, 1),
    (Kind::CancelledSend, 2),
    (Kind::ServerRestart, 1),
];

/// The next operation, chosen by `rng` among those that apply in `model`'s state.
pub(crate) fn next_op(rng: &mut StdRng, model: &Model) -> Op {
    let total: u32 = WEIGHTS.iter().map(|(_, weight)| weight).sum();
    let online: Vec<usize> = (0..3).filter(|&client| model.is_online(client)).collect();
    let offline: Vec<usize> = (0..3).filter(|&client| !model.is_online(client)).collect();
    loop {
        let mut roll = rng.random_range(0..total);
        let kind = WEIGHTS
            .iter()
            .find(|(_, weight)| {
                let hit = roll < *weight;
                roll = roll.saturating_sub(*weight);
                hit
            })
            .map(|(kind, _)| *kind)
            .expect("the roll is below the total weight");
        let any_client = rng.random_range(0..3);
        let group = rng.random_range(0..GROUPS.len());
        return match kind {
            Kind::Send => Op::Send { from: any_client, group },
            Kind::Burst => {
                let count = rng.random_range(3..=6);
                Op::Burst((0..count).map(|_| (rng.random_range(0..3), rng.random_range(0..GROUPS.len()))).collect())
            }
            Kind::SendWhileOffline => Op::SendWhileOffline { from: any_client, group },
            Kind::Deliver => Op::Deliver { to: any_client },
            // A commit by an offline committer fails only after the SDK's
            // resubmission backoff (~6 s), so most such rolls are redrawn.
            Kind::Commit if !model.is_online(COMMITTER[group]) && rng.random_bool(0.9) => continue,
            Kind::Commit => Op::Commit { group },
            Kind::Reconnect => match offline.choose(rng) {
                Some(&who) => Op::Reconnect { who },
                None => continue,
            },
            Kind::ClientRestart => Op::ClientRestart { who: any_client },
            Kind::CrashDuringReceive => match online.choose(rng) {
                Some(&who) => Op::CrashDuringReceive { who, after_ms: rng.random_range(0..30) },
                None => continue,
            },
            Kind::CancelledSend => Op::CancelledSend { from: any_client, group, after_ms: rng.random_range(0..30) },
            Kind::ServerRestart => Op::ServerRestart,
        };
    }
}
