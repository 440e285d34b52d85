//! The storage thread: runs queued [`Job`]s in batches on the write
//! connection and completes each once its batch is durable.
//!
//! A request handled here costs no blocking thread parked until its fsync:
//! the caller queues a job and awaits its completion. The thread takes every
//! job queued so far (up to the batch limit), runs each against a
//! `BatchStore` (the write connection inside the open batch: reads see the
//! batch's own writes), commits once, then calls every job's completion with
//! the commit's outcome. While it commits, the next jobs queue up, so the
//! batch grows with the load and a lone job is committed at once.
//!
//! Each job runs in a savepoint of its own: a job that panics is rolled
//! back alone (its caller sees its answer channel close) and the others in
//! the batch go on. Only a savepoint that cannot be ended makes the whole
//! batch roll back, and then every job in it completes with an error. A
//! completion that panics is caught too; the thread always goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::group_commit::{in_savepoint, GroupCommit, JOB_SAVEPOINT, MAX_BATCH_WRITES};
use super::operations::Access;
use crate::storage::{Completion, Job, StoreError};

/// A batch taking longer than this is logged: every request in it waited
/// that long for its answer.
const SLOW_BATCH: Duration = Duration::from_millis(100);

/// Handle of the storage thread; dropping it lets the thread finish the
/// queued jobs and joins it.
pub(super) struct StorageThread {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StorageThread {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("StorageThread").finish_non_exhaustive()
    }
}

impl StorageThread {
    pub(super) fn start(connection: Arc<GroupCommit>) -> Result<StorageThread, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("qpc-storage".into())
            .spawn(move || run(&connection, &queue))
            .map_err(|error| StoreError::Backend { operation: "open", detail: format!("storage thread: {error}") })?;
        Ok(StorageThread { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Queues `job`. If the thread is gone the job is dropped unrun, and so
    /// is its completion: the caller sees its answer channel close.
    pub(super) fn submit(&self, job: Job) {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job).is_ok());
        if sent != Some(true) {
            tracing::error!("the storage thread is gone; a request was dropped");
        }
    }
}

impl Drop for StorageThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // Dropped by a completion on the storage thread itself: it ends
            // once the queue is empty; joining would wait for ourselves.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Runs batches until every sender is gone and the queue is empty.
fn run(connection: &GroupCommit, queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = Vec::with_capacity(16);
        jobs.push(first);
        while jobs.len() < MAX_BATCH_WRITES {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        run_batch(connection, jobs);
    }
}

/// Runs `jobs` in one batch, commits it and completes every job.
fn run_batch(connection: &GroupCommit, mut jobs: Vec<Job>) {
    let mut completions: Vec<Completion> = Vec::with_capacity(jobs.len());
    let started = Instant::now();
    let mut ran = Duration::ZERO;
    let outcome = connection.run_batch(|connection| {
        let store = BatchStore { connection, sound: AtomicBool::new(true) };
        let running = Instant::now();
        for job in jobs.drain(..) {
            if let Some(completion) = run_job(&store, job) {
                completions.push(completion);
            }
        }
        ran = running.elapsed();
        store.sound.load(Ordering::Relaxed)
    });
    let took = started.elapsed();
    if took >= SLOW_BATCH {
        let (jobs, ran_ms, total_ms) = (completions.len(), ran.as_millis(), took.as_millis());
        tracing::warn!(jobs, ran_ms, total_ms, "slow storage batch (total: waiting for the writer, jobs, commit)");
    }
    if let Err(error) = &outcome {
        tracing::error!(%error, jobs = completions.len() + jobs.len(), "a storage batch failed");
        // Jobs of a batch that could not even start see its error from
        // every store call, so they answer as they would to a failed write.
        let failing = FailingStore(error);
        for job in jobs.drain(..) {
            if let Ok(completion) = catch_unwind(AssertUnwindSafe(|| job(&failing))) {
                completions.push(completion);
            }
        }
    }
    for completion in completions {
        let durable = outcome.as_ref().map(|_| ()).map_err(StoreError::replicate);
        if catch_unwind(AssertUnwindSafe(|| completion(durable))).is_err() {
            tracing::error!("a storage job's completion panicked");
        }
    }
}

/// Runs `job` in a savepoint of its own; a job that panics is rolled back
/// alone and has no completion. If that rollback fails, the store is
/// marked unsound and the whole batch rolls back.
fn run_job(store: &BatchStore<'_>, job: Job) -> Option<Completion> {
    if let Err(error) = JOB_SAVEPOINT.open(&store.lock()) {
        tracing::error!(%error, "could not open a job's savepoint; its batch is rolled back");
        store.sound.store(false, Ordering::Relaxed);
    }
    let completion = catch_unwind(AssertUnwindSafe(|| job(store)));
    if completion.is_err() {
        tracing::error!("a storage job panicked; its writes are rolled back");
        store.connection.clear_poison();
    }
    if store.sound.load(Ordering::Relaxed) {
        if let Err(error) = JOB_SAVEPOINT.end(&store.lock(), completion.is_ok()) {
            tracing::error!(%error, "could not end a job's savepoint; its batch is rolled back");
            store.sound.store(false, Ordering::Relaxed);
        }
    }
    completion.ok()
}

/// The write connection inside the storage thread's open batch, as a
/// store: each write is a savepoint (a failing one undoes only itself) and
/// is durable once the batch commits; reads see the batch's writes.
struct BatchStore<'batch> {
    connection: &'batch Mutex<Connection>,
    /// Cleared when a savepoint could not be ended: the batch must roll back.
    sound: AtomicBool,
}

impl BatchStore<'_> {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // Only this thread locks it, under the batch. A job panicking
        // mid-write poisons it; `run_job` rolls that job back and clears
        // the poison.
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Access for BatchStore<'_> {
    fn write<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.sound.load(Ordering::Relaxed) {
            return Err(StoreError::Backend { operation, detail: "the batch is being rolled back".into() });
        }
        match in_savepoint(&self.lock(), operation, body) {
            Ok(result) => result,
            Err(broken) => {
                self.sound.store(false, Ordering::Relaxed);
                Err(broken)
            }
        }
    }

    fn read<T>(
        &self,
        _operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // Inside the batch's transaction: already one snapshot.
        body(&self.lock())
    }

    fn query<T>(&self, body: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        body(&self.lock())
    }
}

/// A store whose every call fails with one error.
struct FailingStore<'error>(&'error StoreError);

impl Access for FailingStore<'_> {
    fn write<T>(
        &self,
        _operation: &'static str,
        _body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        Err(self.0.replicate())
    }

    fn read<T>(
        &self,
        _operation: &'static str,
        _body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        Err(self.0.replicate())
    }

    fn query<T>(&self, _body: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        Err(self.0.replicate())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::mpsc::Receiver;
    use std::time::Duration;

    use super::*;
    use crate::storage::{AccountCreation, EntryKind, NewMessage, SqliteStore, StorageExecutor, Store};

    const WAIT: Duration = Duration::from_secs(10);

    /// Queues `work`; the receiver gets `(work's result, the batch's outcome)`.
    fn submit<T: Send + 'static>(
        store: &SqliteStore,
        work: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Receiver<(T, Result<(), StoreError>)> {
        let (answer, answered) = mpsc::channel();
        store.submit(Box::new(move |store| {
            let value = work(store);
            Box::new(move |durable| {
                let _ = answer.send((value, durable));
            })
        }));
        answered
    }

    /// Queues a job that blocks the thread until the returned sender is
    /// dropped or used, and waits until it runs: jobs queued meanwhile all
    /// land in the next batch.
    fn hold_the_thread(store: &SqliteStore) -> Sender<()> {
        let (started, has_started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let _ = submit(store, move |_| {
            started.send(()).unwrap();
            let _ = released.recv();
        });
        has_started.recv_timeout(WAIT).unwrap();
        release
    }

    /// A message to nobody in particular.
    fn orphan(n: usize) -> NewMessage {
        NewMessage {
            message_id: n.to_be_bytes().to_vec(),
            group_id: b"group".to_vec(),
            sender: format!("user{n}"),
            kind: EntryKind::Application,
            payload: vec![7; 100],
            epoch: 0,
            stored_at_ms: 1,
        }
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    /// Every completion runs only once its write is visible to another
    /// connection (committed), and failing writes undo only themselves.
    #[test]
    fn completions_run_after_commit_and_failures_stay_their_own() {
        let (dir, store) = open();
        let observer = Arc::new(Mutex::new(Connection::open(dir.path().join("s.db")).unwrap()));
        let release = hold_the_thread(&store);
        let answers: Vec<_> = (0..100)
            .map(|n| {
                let observer = Arc::clone(&observer);
                let (answer, answered) = mpsc::channel();
                store.submit(Box::new(move |store| {
                    let name = format!("user{n}");
                    let created = store.create_account(&name, &[n as u8; 32], 1).unwrap();
                    // Odd jobs also make a write that stores a body, then
                    // fails (unknown recipient): it must undo only itself.
                    let failed = n % 2 == 1 && store.enqueue(&orphan(n), &["nobody".to_owned()]).is_err();
                    Box::new(move |durable: Result<(), StoreError>| {
                        let visible: i64 = observer
                            .lock()
                            .unwrap()
                            .query_row("SELECT COUNT(*) FROM accounts WHERE username = ?1", [&name], |row| row.get(0))
                            .unwrap();
                        answer.send((created, failed, durable.is_ok(), visible)).unwrap();
                    })
                }));
                answered
            })
            .collect();
        drop(release);
        for (n, answered) in answers.into_iter().enumerate() {
            let (created, failed, durable, visible) = answered.recv_timeout(WAIT).unwrap();
            assert_eq!(created, AccountCreation::Created, "job {n}");
            assert_eq!(failed, n % 2 == 1, "job {n}");
            assert!(durable, "job {n}");
            assert_eq!(visible, 1, "job {n}: completed before its account was committed");
        }
        assert_eq!(store.stored_message_count().unwrap(), 0, "the failed enqueues left no body");
        // All 100 queued behind the held job ran in one batch.
        assert_eq!(store.connection.batches_started(), 2, "the held job, then one batch of 100");
    }

    /// A panicking job is rolled back alone: the others in its batch commit,
    /// and the thread goes on with the next batch.
    #[test]
    fn a_panicking_job_is_rolled_back_alone_and_the_thread_goes_on() {
        let (_dir, store) = open();
        let release = hold_the_thread(&store);
        let earlier = submit(&store, |store| store.create_account("bob", &[2; 32], 1).unwrap());
        let panicking = submit(&store, |store| {
            store.create_account("carol", &[3; 32], 1).unwrap();
            panic!("a bug in a job");
        });
        let later = submit(&store, |store| store.create_account("dave", &[4; 32], 1));
        drop(release);
        assert!(panicking.recv_timeout(WAIT).is_err(), "the panicking job's completion is dropped");
        let (created, durable) = earlier.recv_timeout(WAIT).unwrap();
        assert_eq!((created, durable.is_ok()), (AccountCreation::Created, true));
        let (created, durable) = later.recv_timeout(WAIT).unwrap();
        assert_eq!((created.unwrap(), durable.is_ok()), (AccountCreation::Created, true));
        assert_eq!(store.get_account("carol").unwrap(), None, "the panicking job's write was rolled back");
        assert!(store.get_account("bob").unwrap().is_some());
        assert!(store.get_account("dave").unwrap().is_some());
        assert_eq!(store.connection.batches_started(), 2, "bob, carol and dave shared one batch");

        let after = submit(&store, |store| store.create_account("erin", &[5; 32], 1).unwrap());
        let (created, durable) = after.recv_timeout(WAIT).unwrap();
        assert_eq!((created, durable.is_ok()), (AccountCreation::Created, true));
        assert!(store.get_account("erin").unwrap().is_some());
    }
}
