//! A stateful interaction test in the style of libsignal's interaction
//! fuzzer: three SDK clients (alice, bob, carol) and an in-process server
//! run a seeded random schedule of operations (sends, bursts to two groups
//! before any delivery, sends while offline, deliveries, adding and removing
//! carol, client restarts, receives and sends cut off mid-way, server
//! restarts), while a reference model (`interaction/model.rs`) predicts
//! exactly what every client must display.
//!
//! After every delivery, and after a final "deliver everything" (reopen the
//! offline clients, flush every outbox, receive until nothing is missing),
//! it checks that each client displayed exactly the messages the model
//! expects: each one sent to that group while the client was a member, with
//! its sender, group and text, once (over all `receive()` results across
//! restarts, and once in `history()`), nothing missing, nothing shown to a
//! non-member, and each sender's messages in the order they were sent. It
//! also checks that every member reports the model's member list. The SDK
//! does not expose the MLS epoch, so convergence is checked as member-list
//! agreement plus a round of messages from every member to every other
//! member after the final delivery.
//!
//! A failing schedule prints its seed and trace. Environment:
//! `QPC_INTERACTION_CASES` (schedules, default 8), `QPC_INTERACTION_SEED`
//! (first seed, default 1), `QPC_INTERACTION_OPS` (operations per schedule,
//! default 40), `QPC_INTERACTION_TRACE` (set: print the trace as it runs).

mod checks;
mod model;
mod schedule;
mod world;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use model::{ALICE, BOB, CAROL};
use schedule::{next_op, Op};
use world::World;

/// Longest time one operation may take before the schedule counts as hung.
const OP_DEADLINE: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_deliver_exactly_what_the_model_predicts() {
    let cases = env_or("QPC_INTERACTION_CASES", 8);
    let first_seed = env_or("QPC_INTERACTION_SEED", 1);
    let ops = env_or("QPC_INTERACTION_OPS", 40) as usize;
    let started = Instant::now();
    for seed in first_seed..first_seed + cases {
        let rerun = format!("QPC_INTERACTION_SEED={seed} QPC_INTERACTION_CASES=1 QPC_INTERACTION_OPS={ops}");
        let stats = run_reported(seed, Schedule::Random { ops }, &rerun).await;
        eprintln!("interaction seed {seed}: {ops} ops: {stats}");
    }
    eprintln!("interaction: {cases} schedules x {ops} ops in {:?}", started.elapsed());
}

/// Hand-written schedules for the edges of the model's delivery rules, so
/// they are covered on every run and not only when a seed happens on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_schedules_hit_the_edges_of_the_delivery_rules() {
    let (team, side) = (0, 1);
    let toggles = |count: usize| std::iter::repeat_n(Op::Commit { group: team }, count);
    let late = |commits: usize| -> Vec<Op> {
        let mut ops = vec![Op::SendWhileOffline { from: BOB, group: team }];
        ops.extend(toggles(commits));
        ops.extend([Op::Reconnect { who: BOB }, Op::Deliver { to: ALICE }, Op::Deliver { to: CAROL }]);
        ops
    };
    let scripts: Vec<(&str, Vec<Op>)> = vec![
        // MAX_PAST_EPOCHS behind: alice still reads it.
        ("five epochs late", late(5)),
        // One more: nobody can.
        ("six epochs late", late(6)),
        ("removed while offline: refused", {
            let mut ops = vec![Op::SendWhileOffline { from: CAROL, group: team }];
            ops.extend(toggles(1));
            ops.extend([Op::Reconnect { who: CAROL }, Op::Deliver { to: ALICE }, Op::Deliver { to: CAROL }]);
            ops
        }),
        ("removed and re-added while offline: accepted, read by the others", {
            let mut ops = vec![Op::SendWhileOffline { from: CAROL, group: team }];
            ops.extend(toggles(2));
            ops.extend([Op::Reconnect { who: CAROL }, Op::Deliver { to: ALICE }, Op::Deliver { to: BOB }]);
            ops
        }),
        ("queued before carol rejoined: she cannot read it", {
            let mut ops = vec![Op::Commit { group: side }, Op::SendWhileOffline { from: ALICE, group: side }];
            ops.extend([Op::Commit { group: side }, Op::Reconnect { who: ALICE }, Op::Deliver { to: CAROL }]);
            ops
        }),
        (
            "cut send and cut receive",
            vec![
                Op::CancelledSend { from: ALICE, group: team, after_ms: 3 },
                Op::CrashDuringReceive { who: BOB, after_ms: 2 },
                Op::Send { from: CAROL, group: side },
                Op::CrashDuringReceive { who: ALICE, after_ms: 5 },
            ],
        ),
    ];
    for (index, (name, ops)) in scripts.into_iter().enumerate() {
        let rerun = "cargo test -p quicprochat-sdk --test it interaction::scripted";
        let stats = run_reported(index as u64, Schedule::Script(ops), rerun).await;
        eprintln!("interaction script {name:?}: {stats}");
    }
}

/// Where a run's operations come from.
enum Schedule {
    /// `ops` operations drawn from an RNG seeded with the run's seed.
    Random { ops: usize },
    /// A fixed list.
    Script(Vec<Op>),
}

/// Runs one schedule in its own task; if it fails, prints the seed, the
/// trace and how to rerun it, then fails with the original panic.
async fn run_reported(seed: u64, schedule: Schedule, rerun: &str) -> Stats {
    let trace = Arc::new(Mutex::new(Vec::new()));
    match tokio::spawn(run_schedule(seed, schedule, trace.clone())).await {
        Ok(stats) => stats,
        Err(error) => {
            let trace = trace.lock().map(|trace| trace.join("\n  ")).unwrap_or_default();
            eprintln!("interaction schedule failed: seed {seed}; trace:\n  {trace}");
            eprintln!("rerun: {rerun}");
            match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("schedule {seed} did not finish: {error}"),
            }
        }
    }
}

async fn run_schedule(seed: u64, schedule: Schedule, trace: Arc<Mutex<Vec<String>>>) -> Stats {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let (count, mut script) = match schedule {
        Schedule::Random { ops } => (ops, None),
        Schedule::Script(ops) => (ops.len(), Some(ops.into_iter())),
    };
    let mut world = World::start(seed, trace).await;
    for index in 0..count {
        let op = match &mut script {
            Some(ops) => ops.next().expect("count is the script's length"),
            None => next_op(&mut rng, &world.model),
        };
        world.log(format!("#{index} {op}"));
        tokio::time::timeout(OP_DEADLINE, world.apply(index, op)).await.expect("operation finished in time");
        let state = world.model.describe();
        world.log(format!("   -> {state}"));
    }
    world.log("deliver everything".into());
    world.deliver_everything().await;
    world.log("final round".into());
    world.final_round().await;
    world.finish_stats(started.elapsed())
}

/// What one schedule did, for the log.
#[derive(Debug, Default)]
struct Stats {
    elapsed: Duration,
    /// Messages that reached their sender's history.
    messages: usize,
    /// Messages displayed by recipients, over all clients.
    displayed: usize,
    /// Queued messages the server refused (the sender had been removed).
    refused: usize,
    /// Deliveries to members who cannot decrypt (they joined after the
    /// message's epoch, or it is too many epochs old).
    withheld: usize,
    commits: usize,
    server_restarts: usize,
    /// Longest reconnect after a server restart.
    longest_reconnect: Duration,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}, {} messages ({} refused), {} displays ({} withheld), {} commits, {} server restarts \
             (reconnect up to {:?})",
            self.elapsed,
            self.messages,
            self.refused,
            self.displayed,
            self.withheld,
            self.commits,
            self.server_restarts,
            self.longest_reconnect
        )
    }
}
