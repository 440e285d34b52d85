//! Group commit: concurrent writes share one SQLite transaction and so one
//! fsync, and each caller returns only after that commit is on disk.
//!
//! A write runs its body on the caller's thread, under the connection lock,
//! inside a `SAVEPOINT` of the open batch transaction (a failing body rolls
//! back only itself). Then, if no other thread is waiting for the lock (or
//! the batch is big or old enough), it commits the batch; otherwise it
//! leaves the batch open for the next writer and waits until some thread
//! has committed it. The last writer of a burst commits for everyone; a
//! lone writer commits at once, so an idle server pays no extra latency.
//! Reads do not come here: `SqliteStore` reads on a second connection,
//! which in WAL mode sees only committed batches.
//!
//! The storage thread joins in through [`GroupCommit::run_batch`]: it runs
//! a whole queue of jobs in the open batch and commits it, with no thread
//! parked per write.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{map_sql_error, SqlResultExt};
use crate::storage::StoreError;

/// A batch is committed once it holds this many writes...
pub(super) const MAX_BATCH_WRITES: usize = 256;
/// ...or has been open this long, even while more writers queue up.
const MAX_BATCH_AGE: Duration = Duration::from_millis(5);
/// Commit failures remembered for writers that have not looked yet.
const REMEMBERED_FAILURES: usize = 64;

/// The connection and its batching state.
pub(super) struct GroupCommit {
    state: Mutex<State>,
    /// Threads waiting for `state`: while there are any, a writer leaves
    /// the batch open for them.
    waiting: AtomicUsize,
    committed: Mutex<Committed>,
    committed_changed: Condvar,
}

struct State {
    /// Behind a mutex of its own only so that the storage thread can lend
    /// it to jobs as a `Sync` store; it is locked only while `State` is
    /// held, so that lock is never contended.
    connection: Mutex<Connection>,
    open: Option<OpenBatch>,
    next_batch: u64,
}

impl State {
    fn connection(&mut self) -> &mut Connection {
        // A storage job that panicked mid-write poisons it; the storage
        // thread rolls that job back and clears the poison.
        self.connection.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a batch unless one is open; returns its id.
    fn open_batch(&mut self, operation: &'static str) -> Result<u64, StoreError> {
        if let Some(open) = &self.open {
            return Ok(open.id);
        }
        if !self.connection().is_autocommit() {
            // A transaction left over by a failed rollback: undo it first.
            control(self.connection(), "ROLLBACK").during(operation)?;
        }
        control(self.connection(), "BEGIN IMMEDIATE").during(operation)?;
        let id = self.next_batch;
        self.next_batch += 1;
        self.open = Some(OpenBatch { id, writes: 0, opened: Instant::now() });
        Ok(id)
    }
}

struct OpenBatch {
    id: u64,
    writes: usize,
    opened: Instant,
}

#[derive(Default)]
struct Committed {
    /// Every batch with an id up to this one has finished (committed or failed).
    through: u64,
    failures: VecDeque<(u64, StoreError)>,
    /// The newest failed batch no longer in `failures`.
    forgotten_through: u64,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub(super) fn new(connection: Connection) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State { connection: Mutex::new(connection), open: None, next_batch: 1 }),
            waiting: AtomicUsize::new(0),
            committed: Mutex::new(Committed::default()),
            committed_changed: Condvar::new(),
        }
    }

    fn lock_state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let state = self.state.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        state.map_err(|_| StoreError::Poisoned)
    }

    /// Runs `body` as part of a batch and returns once the batch is durable.
    pub(super) fn write<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock_state()?;
        let batch = state.open_batch(operation)?;
        let result = self.run_in_savepoint(&mut state, operation, body);
        if let Some(open) = state.open.as_mut() {
            open.writes += usize::from(result.is_ok());
            let due = open.writes >= MAX_BATCH_WRITES || open.opened.elapsed() >= MAX_BATCH_AGE;
            if due || self.waiting.load(Ordering::SeqCst) == 0 {
                self.commit(&mut state)?;
            }
        }
        drop(state);
        let value = result?;
        self.wait_for(batch)?;
        Ok(value)
    }

    /// How many batches have been opened so far.
    #[cfg(test)]
    pub(super) fn batches_started(&self) -> u64 {
        self.lock_state().map_or(0, |state| state.next_batch - 1)
    }

    /// Runs `work` on the connection inside the open batch (opening one if
    /// needed), then commits the batch, whoever else wrote into it. `work`
    /// returns whether the batch is still sound; an unsound batch is rolled
    /// back. Returns the batch's outcome.
    pub(super) fn run_batch(&self, work: impl FnOnce(&Mutex<Connection>) -> bool) -> Result<(), StoreError> {
        let mut state = self.lock_state()?;
        state.open_batch("batch")?;
        if work(&state.connection) {
            return self.commit(&mut state);
        }
        let failure = StoreError::Backend { operation: "batch", detail: "a job left the batch unsound".into() };
        self.finish(&mut state, Some(failure.replicate()));
        Err(failure)
    }

    fn run_in_savepoint<T>(
        &self,
        state: &mut State,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match in_savepoint(state.connection(), operation, body) {
            Ok(result) => result,
            Err(broken) => {
                // The batch is in an unknown state: abandon all of it.
                self.finish(state, Some(broken.replicate()));
                Err(broken)
            }
        }
    }

    /// Commits the open batch (if any) and wakes the writers waiting for it.
    fn commit(&self, state: &mut State) -> Result<(), StoreError> {
        if state.open.is_none() {
            return Ok(());
        }
        let failure = control(state.connection(), "COMMIT").err().map(|error| map_sql_error("commit", error));
        self.finish(state, failure.as_ref().map(StoreError::replicate));
        failure.map_or(Ok(()), Err)
    }

    /// Closes the open batch with `failure` (rolling back) or success, and publishes it.
    fn finish(&self, state: &mut State, failure: Option<StoreError>) {
        let Some(open) = state.open.take() else { return };
        if failure.is_some() && !state.connection().is_autocommit() {
            let _ = control(state.connection(), "ROLLBACK");
        }
        let mut committed = self.committed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        committed.through = open.id;
        if let Some(failure) = failure {
            committed.failures.push_back((open.id, failure));
            if committed.failures.len() > REMEMBERED_FAILURES {
                if let Some((forgotten, _)) = committed.failures.pop_front() {
                    committed.forgotten_through = forgotten;
                }
            }
        }
        self.committed_changed.notify_all();
    }

    /// Waits until batch `id` has finished; its failure, if it failed.
    fn wait_for(&self, id: u64) -> Result<(), StoreError> {
        let mut committed = self.committed.lock().map_err(|_| StoreError::Poisoned)?;
        while committed.through < id {
            committed = self.committed_changed.wait(committed).map_err(|_| StoreError::Poisoned)?;
        }
        match committed.failures.iter().find(|(failed, _)| *failed == id) {
            Some((_, error)) => Err(error.replicate()),
            // Too old to tell whether it failed: never claim it durable.
            None if id <= committed.forgotten_through => Err(StoreError::Backend {
                operation: "commit",
                detail: "the outcome of this write's batch is no longer known; retry".into(),
            }),
            None => Ok(()),
        }
    }
}

/// Runs `body` inside a savepoint of `connection`'s open transaction:
/// released when `body` succeeds, rolled back when it fails, so a failing
/// write undoes only itself. The outer `Err` means the savepoint could not
/// be ended and the whole transaction is in an unknown state.
pub(super) fn in_savepoint<T>(
    connection: &Connection,
    operation: &'static str,
    body: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    WRITE_SAVEPOINT.open(connection).during(operation)?;
    let result = body(connection);
    WRITE_SAVEPOINT.end(connection, result.is_ok()).map_err(|error| map_sql_error(operation, error))?;
    Ok(result)
}

/// A named savepoint's statements, static so the statement cache keeps them.
pub(super) struct Savepoint {
    open: &'static str,
    rollback: &'static str,
    release: &'static str,
}

/// The savepoint of one write ([`in_savepoint`]).
const WRITE_SAVEPOINT: Savepoint =
    Savepoint { open: "SAVEPOINT qpc_write", rollback: "ROLLBACK TO qpc_write", release: "RELEASE qpc_write" };
/// The savepoint of one storage-thread job, around its writes' own.
pub(super) const JOB_SAVEPOINT: Savepoint =
    Savepoint { open: "SAVEPOINT qpc_job", rollback: "ROLLBACK TO qpc_job", release: "RELEASE qpc_job" };

impl Savepoint {
    pub(super) fn open(&self, connection: &Connection) -> rusqlite::Result<()> {
        control(connection, self.open)
    }

    /// Ends the savepoint: its writes kept, or (`keep` false) undone first.
    pub(super) fn end(&self, connection: &Connection, keep: bool) -> rusqlite::Result<()> {
        if !keep {
            control(connection, self.rollback)?;
        }
        control(connection, self.release)
    }
}

/// Runs a transaction-control statement (`BEGIN`, `COMMIT`, `SAVEPOINT`,
/// `RELEASE`, `ROLLBACK`) from the connection's statement cache. Every
/// storage job opens and ends two savepoints ([`Savepoint`]); `execute_batch` parsed those
/// statements anew each time (the storage thread used about 5 % less CPU
/// without that, in one pair of qpc-bench runs at C = 10).
fn control(connection: &Connection, sql: &'static str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn store(dir: &std::path::Path) -> Arc<GroupCommit> {
        let connection = Connection::open(dir.join("g.db")).unwrap();
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE t (n INTEGER PRIMARY KEY);",
            )
            .unwrap();
        Arc::new(GroupCommit::new(connection))
    }

    /// Eight threads write 400 rows: each write returns after its batch
    /// committed, odd ones fail and roll back only themselves. (How many
    /// batches that took depends on scheduling; qpc-bench measures it.)
    #[test]
    fn concurrent_writes_share_commits_and_failures_stay_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let n = thread * 50 + i;
                        let result = store.write("insert", |connection| {
                            connection.execute("INSERT INTO t (n) VALUES (?1)", [n]).during("insert")?;
                            if n % 2 == 1 {
                                return Err(StoreError::Conflict { operation: "insert", detail: "odd".into() });
                            }
                            Ok(n)
                        });
                        assert_eq!(result.is_ok(), n % 2 == 0, "write {n}");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let batches = store.lock_state().unwrap().next_batch - 1;
        // A second connection sees exactly the committed rows.
        let reader = Connection::open(dir.path().join("g.db")).unwrap();
        let (rows, odd): (i64, i64) =
            reader.query_row("SELECT COUNT(*), SUM(n % 2) FROM t", [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
        assert_eq!((rows, odd), (200, 0));
        eprintln!("group commit: 400 writes in {batches} batches");
    }

    /// A lone writer commits its batch itself: when `write` returns nothing
    /// is left open, and another connection already sees the row.
    #[test]
    fn a_lone_write_is_committed_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .write("insert", |connection| connection.execute("INSERT INTO t (n) VALUES (1)", []).during("insert"))
            .unwrap();
        assert!(store.lock_state().unwrap().open.is_none(), "no batch left open");
        let reader = Connection::open(dir.path().join("g.db")).unwrap();
        let rows: i64 = reader.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 1);
    }
}
