//! B2 (issue 6): MLS cost against group size, our wrapper vs raw OpenMLS.
//!
//! For N ∈ {2, 10, 100, 1000} and suites 0x0001 and 0x004F, one group of N is built per
//! implementation (outside any measurement) by the creator adding everyone in one
//! commit. The tree is therefore sparse: blank parent nodes everywhere except the
//! creator's path, the worst case for the next commit's path encryption. Only the
//! creator and one member (`m1`) hold state; the other N-2 leaves are key packages of
//! members who never join.
//!
//! Steps measured (benchmark `<step>/<suite>/<impl>/<N>`):
//! - `add_commit`: the creator validates a key package and creates the add commit and
//!   Welcome (the pending commit is discarded, untimed, after each iteration).
//! - `add_process`: member `m1` processes and merges that commit.
//! - `add_join`: the new member processes the Welcome (ratchet tree included).
//! - `update_commit`: the creator's self-update commit. `MlsClient` has no self-update,
//!   so this step is raw OpenMLS only.
//! - `update_process`: `m1` processes and merges an update commit. For `ours`, that commit
//!   is made by opening a copy of the creator's `MlsClient` database with raw OpenMLS.
//! - `remove_commit`: the creator removes the last member (for N = 2 that is `m1`).
//! - `remove_process`: `m1` processes and merges that commit (for N = 2: its own removal).
//!
//! Each processing iteration starts from a fresh copy of the member's stored state
//! (copying, opening and loading the group into memory are not timed), so every
//! iteration does the same work.
//! `ours` is `MlsClient` (SQLite, group held in memory between calls, state lock per call); `raw_sqlite`
//! is OpenMLS with the same storage, codec and durability, the group held in memory;
//! `raw_memory` is OpenMLS with its in-memory store.
//!
//! Run: `cargo bench -p quicprochat-core --bench group_size [-- --quick] [FILTER]`.
//! `QPC_BENCH_MAX_N=100` skips the groups larger than 100 (building and measuring N = 1000
//! takes minutes).

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use common::ours::{OursParty, OursSnapshot};
use common::raw::{self, Memory, Processed, RawParty, RawSnapshot, Sqlite, StorageKind};
use common::{scratch_dir, suite_label, GROUP_ID, SUITES};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use quicprochat_core::{Ciphersuite, Incoming, PendingCommit};
use tempfile::TempDir;

const GROUP_SIZES: [usize; 4] = [2, 10, 100, 1000];

/// One measured step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    AddCommit,
    AddProcess,
    AddJoin,
    UpdateCommit,
    UpdateProcess,
    RemoveCommit,
    RemoveProcess,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::AddCommit,
        Step::AddProcess,
        Step::AddJoin,
        Step::UpdateCommit,
        Step::UpdateProcess,
        Step::RemoveCommit,
        Step::RemoveProcess,
    ];

    fn label(self) -> &'static str {
        match self {
            Step::AddCommit => "add_commit",
            Step::AddProcess => "add_process",
            Step::AddJoin => "add_join",
            Step::UpdateCommit => "update_commit",
            Step::UpdateProcess => "update_process",
            Step::RemoveCommit => "remove_commit",
            Step::RemoveProcess => "remove_process",
        }
    }
}

/// The implementations compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ours,
    RawSqlite,
    RawMemory,
}

impl Side {
    const ALL: [Side; 3] = [Side::Ours, Side::RawSqlite, Side::RawMemory];

    fn label(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::RawSqlite => Sqlite::LABEL,
            Side::RawMemory => Memory::LABEL,
        }
    }

    fn supports(self, step: Step) -> bool {
        !(self == Side::Ours && step == Step::UpdateCommit)
    }

    fn build(self, suite: Ciphersuite, fillers: &[Vec<u8>]) -> Box<dyn GroupFixture> {
        let started = Instant::now();
        let fixture: Box<dyn GroupFixture> = match self {
            Side::Ours => Box::new(OursFixture::build(suite, fillers)),
            Side::RawSqlite => Box::new(RawFixture::<Sqlite>::build(suite, fillers)),
            Side::RawMemory => Box::new(RawFixture::<Memory>::build(suite, fillers)),
        };
        let (commit, welcome) = fixture.add_sizes();
        eprintln!(
            "built {} group of {} ({}) in {:.1?}; add commit {} B, Welcome {} B",
            self.label(),
            fillers.len() + 2,
            suite_label(suite),
            started.elapsed(),
            commit,
            welcome
        );
        fixture
    }
}

/// A group of N for one implementation, able to time each step once.
trait GroupFixture {
    /// Times one run of `step`; preparing and cleaning up around it are not timed.
    fn time(&mut self, step: Step) -> Duration;
    /// Sizes in bytes of the prepared add commit and Welcome.
    fn add_sizes(&self) -> (usize, usize);
}

/// Runs `step` and returns how long it took with its output (dropped by the caller, untimed).
fn timed<T>(step: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let output = step();
    (started.elapsed(), output)
}

/// The member removed by the remove steps: the last filler, or `m1` in a group of two.
fn victim(fillers: &[Vec<u8>]) -> String {
    match fillers.len() {
        0 => "m1".to_owned(),
        count => format!("f{}", count - 1),
    }
}

struct OursFixture {
    creator: OursParty,
    member: OursSnapshot,
    joiner: OursSnapshot,
    joiner_key_package: Vec<Vec<u8>>,
    add: PendingCommit,
    update_commit: Vec<u8>,
    remove_commit: Vec<u8>,
    victim: String,
    /// Last, so every file in it is closed before it goes.
    scratch: TempDir,
}

impl OursFixture {
    fn build(suite: Ciphersuite, fillers: &[Vec<u8>]) -> OursFixture {
        let scratch = scratch_dir();
        let dir = scratch.path();
        let creator = OursParty::new(dir, "m0", suite);
        let member = OursParty::new(dir, "m1", suite);
        creator.client.create_group(&GROUP_ID).expect("creating the group works");
        let mut key_packages = member.client.generate_key_packages(1).expect("m1 makes a key package");
        key_packages.extend_from_slice(fillers);
        let initial = creator.client.add_members(&GROUP_ID, &key_packages).expect("adding everyone works");
        creator.client.merge_pending_commit(&GROUP_ID).expect("the creator merges");
        member.client.join_from_welcome(&initial.welcome.expect("an add has a Welcome")).expect("m1 joins");

        let joiner = OursParty::new(dir, "joiner", suite);
        let joiner_key_package = joiner.client.generate_key_packages(1).expect("the joiner makes a key package");
        let add = creator.client.add_members(&GROUP_ID, &joiner_key_package).expect("adding works");
        creator.client.clear_pending_commit(&GROUP_ID).expect("clearing works");
        let victim = victim(fillers);
        let remove = creator.client.remove_members(&GROUP_ID, std::slice::from_ref(&victim)).expect("removing works");
        creator.client.clear_pending_commit(&GROUP_ID).expect("clearing works");
        let update_commit =
            raw::self_update_of_client_database(creator.database(), creator.client.identity().public_key(), dir);
        OursFixture {
            member: member.snapshot(dir),
            joiner: joiner.snapshot(dir),
            creator,
            joiner_key_package,
            add,
            update_commit,
            remove_commit: remove.commit,
            victim,
            scratch,
        }
    }

    fn time_process(&self, commit: &[u8]) -> Duration {
        let member = self.member.restore(self.scratch.path());
        // A running client holds the group in memory, like the raw side's
        // loaded `MlsGroup`: load it before the timer, as the raw side does.
        member.client.epoch(&GROUP_ID).expect("the member holds the group");
        let (elapsed, outcome) = timed(|| member.client.process_incoming(&GROUP_ID, commit));
        assert!(matches!(outcome, Ok(Incoming::CommitMerged { .. })), "m1 merges the commit: {outcome:?}");
        elapsed
    }

    /// Times creating a commit, then discards it (untimed).
    fn time_commit(&self, create: impl FnOnce(&OursParty) -> PendingCommit) -> Duration {
        let (elapsed, pending) = timed(|| create(&self.creator));
        black_box(pending);
        self.creator.client.clear_pending_commit(&GROUP_ID).expect("clearing works");
        elapsed
    }
}

impl GroupFixture for OursFixture {
    fn time(&mut self, step: Step) -> Duration {
        match step {
            Step::AddCommit => self.time_commit(|creator| {
                creator.client.add_members(&GROUP_ID, &self.joiner_key_package).expect("adding works")
            }),
            Step::AddProcess => self.time_process(&self.add.commit),
            Step::AddJoin => {
                let joiner = self.joiner.restore(self.scratch.path());
                let welcome = self.add.welcome.as_deref().expect("an add has a Welcome");
                let (elapsed, joined) = timed(|| joiner.client.join_from_welcome(welcome));
                assert_eq!(joined.expect("the joiner joins"), GROUP_ID.to_vec());
                elapsed
            }
            Step::UpdateCommit => unreachable!("MlsClient has no self-update; Side::supports excludes it"),
            Step::UpdateProcess => self.time_process(&self.update_commit),
            Step::RemoveCommit => self.time_commit(|creator| {
                creator.client.remove_members(&GROUP_ID, std::slice::from_ref(&self.victim)).expect("removing works")
            }),
            Step::RemoveProcess => self.time_process(&self.remove_commit),
        }
    }

    fn add_sizes(&self) -> (usize, usize) {
        (self.add.commit.len(), self.add.welcome.as_ref().map_or(0, Vec::len))
    }
}

struct RawFixture<K: StorageKind> {
    creator: RawParty<K>,
    member: RawSnapshot<K>,
    joiner: RawSnapshot<K>,
    joiner_key_package: Vec<Vec<u8>>,
    add_commit: Vec<u8>,
    add_welcome: Vec<u8>,
    update_commit: Vec<u8>,
    remove_commit: Vec<u8>,
    victim: String,
    /// Last, so every file in it is closed before it goes.
    scratch: TempDir,
}

impl<K: StorageKind> RawFixture<K> {
    fn build(suite: Ciphersuite, fillers: &[Vec<u8>]) -> RawFixture<K> {
        let scratch = scratch_dir();
        let dir = scratch.path();
        let mut creator = RawParty::<K>::new(dir, "m0", suite);
        let mut member = RawParty::<K>::new(dir, "m1", suite);
        creator.create_group();
        let mut key_packages = vec![member.key_package()];
        key_packages.extend_from_slice(fillers);
        let (_commit, welcome) = creator.add(&key_packages);
        creator.merge_pending();
        member.join(&welcome);

        let joiner = RawParty::<K>::new(dir, "joiner", suite);
        let joiner_key_package = vec![joiner.key_package()];
        let (add_commit, add_welcome) = creator.add(&joiner_key_package);
        creator.clear_pending();
        let victim = victim(fillers);
        let remove_commit = creator.remove(&victim);
        creator.clear_pending();
        let update_commit = creator.self_update();
        creator.clear_pending();
        RawFixture {
            member: member.snapshot(dir),
            joiner: joiner.snapshot(dir),
            creator,
            joiner_key_package,
            add_commit,
            add_welcome,
            update_commit,
            remove_commit,
            victim,
            scratch,
        }
    }

    fn time_process(member: &RawSnapshot<K>, scratch: &Path, commit: &[u8]) -> Duration {
        let mut member = member.restore(scratch);
        let (elapsed, outcome) = timed(|| member.process(commit));
        assert_eq!(outcome, Processed::CommitMerged);
        elapsed
    }

    /// Times creating a commit, then discards it (untimed).
    fn time_commit<T>(&mut self, create: impl FnOnce(&mut RawParty<K>, &[Vec<u8>], &str) -> T) -> Duration {
        let (elapsed, commit) = timed(|| create(&mut self.creator, &self.joiner_key_package, &self.victim));
        black_box(commit);
        self.creator.clear_pending();
        elapsed
    }
}

impl<K: StorageKind> GroupFixture for RawFixture<K> {
    fn time(&mut self, step: Step) -> Duration {
        let scratch = self.scratch.path();
        match step {
            Step::AddCommit => self.time_commit(|creator, key_package, _| creator.add(key_package)),
            Step::AddProcess => Self::time_process(&self.member, scratch, &self.add_commit),
            Step::AddJoin => {
                let mut joiner = self.joiner.restore(scratch);
                let (elapsed, ()) = timed(|| joiner.join(&self.add_welcome));
                elapsed
            }
            Step::UpdateCommit => self.time_commit(|creator, _, _| creator.self_update()),
            Step::UpdateProcess => Self::time_process(&self.member, scratch, &self.update_commit),
            Step::RemoveCommit => self.time_commit(|creator, _, victim| creator.remove(victim)),
            Step::RemoveProcess => Self::time_process(&self.member, scratch, &self.remove_commit),
        }
    }

    fn add_sizes(&self) -> (usize, usize) {
        (self.add_commit.len(), self.add_welcome.len())
    }
}

/// The group sizes to run: all of [`GROUP_SIZES`] up to `QPC_BENCH_MAX_N` (default 1000).
fn group_sizes() -> Vec<usize> {
    let max = match std::env::var("QPC_BENCH_MAX_N") {
        Ok(value) => value.trim().parse::<usize>().expect("QPC_BENCH_MAX_N is a whole number"),
        Err(_) => usize::MAX,
    };
    GROUP_SIZES.into_iter().filter(|&n| n <= max).collect()
}

/// Ten samples; big groups get more time, since one iteration can take a large part of a second.
fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(500));
    group.measurement_time(match n {
        0..=10 => Duration::from_secs(1),
        11..=100 => Duration::from_secs(2),
        _ => Duration::from_secs(4),
    });
}

fn group_size(c: &mut Criterion) {
    let sizes = group_sizes();
    let largest = sizes.iter().copied().max().unwrap_or(2);
    for suite in SUITES {
        // Made on first use, so a filter that skips this suite costs nothing.
        let mut all_fillers: Option<Vec<Vec<u8>>> = None;
        for &n in &sizes {
            // One fixture per implementation, built when its first benchmark runs and
            // dropped (files and all) before the next group size.
            let mut fixtures: [Option<Box<dyn GroupFixture>>; 3] = [None, None, None];
            for step in Step::ALL {
                let mut group = c.benchmark_group(format!("{}/{}", step.label(), suite_label(suite)));
                configure(&mut group, n);
                for (side, slot) in Side::ALL.into_iter().zip(fixtures.iter_mut()) {
                    if !side.supports(step) {
                        continue;
                    }
                    group.bench_function(BenchmarkId::new(side.label(), n), |b| {
                        let fixture = slot.get_or_insert_with(|| {
                            let fillers =
                                all_fillers.get_or_insert_with(|| raw::filler_key_packages(suite, "f", largest - 2));
                            side.build(suite, &fillers[..n - 2])
                        });
                        b.iter_custom(|iters| (0..iters).map(|_| fixture.time(step)).sum());
                    });
                }
                group.finish();
            }
        }
    }
}

criterion_group!(benches, group_size);
criterion_main!(benches);
