//! WAL checkpoints off the write path. By default SQLite checkpoints inside
//! the commit that pushes the WAL past 1000 pages: that commit copies the
//! WAL into the database and fsyncs it while every other writer waits
//! (stalls of 100–500 ms on the project's VM disk under load). Here the
//! writer connection has automatic checkpoints turned off and a thread of
//! its own, on its own connection, runs `PASSIVE` checkpoints, which never
//! wait for or block writers or readers; writers reuse the WAL from its
//! start once a checkpoint has caught up.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::SqlResultExt;
use crate::storage::StoreError;

/// How often the checkpointer runs.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// A checkpoint taking longer than this is logged.
const SLOW_CHECKPOINT: Duration = Duration::from_millis(100);

/// The checkpoint thread; stopped and joined on drop.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Checkpoints completed so far, for tests to wait on (the thread
    /// counts them in every build).
    #[cfg_attr(not(test), allow(dead_code))]
    done: Arc<(Mutex<u64>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection to `path` and starts checkpointing it.
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> Result<Checkpointer, StoreError> {
        let connection = Connection::open(path).during("open")?;
        connection.busy_timeout(busy_timeout).during("open")?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let done = Arc::new((Mutex::new(0), Condvar::new()));
        let (signal, progress) = (Arc::clone(&stop), Arc::clone(&done));
        let thread = std::thread::Builder::new()
            .name("qpc-sqlite-checkpoint".to_owned())
            .spawn(move || run(&connection, &signal, &progress))
            .map_err(|error| StoreError::Io { operation: "open", detail: format!("checkpoint thread: {error}") })?;
        Ok(Checkpointer { stop, done, thread: Some(thread) })
    }

    /// Waits until `count` more checkpoints than `since` have completed.
    #[cfg(test)]
    pub(super) fn wait_for(&self, since: u64, count: u64, timeout: Duration) -> bool {
        let (done, changed) = &*self.done;
        let guard = done.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |completed| *completed < since + count)
            .unwrap_or_else(PoisonError::into_inner);
        *guard >= since + count
    }

    /// Checkpoints completed so far.
    #[cfg(test)]
    pub(super) fn completed(&self) -> u64 {
        *self.done.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn run(connection: &Connection, stop: &(Mutex<bool>, Condvar), done: &(Mutex<u64>, Condvar)) {
    let (stopped, changed) = stop;
    let mut guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        // A timed wait on the stop flag paces the loop and ends it at once on drop.
        let (next, _) = changed.wait_timeout(guard, CHECKPOINT_INTERVAL).unwrap_or_else(PoisonError::into_inner);
        guard = next;
        if *guard {
            return;
        }
        drop(guard);
        let started = std::time::Instant::now();
        match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(2)) {
            Ok(pages) => {
                let took = started.elapsed();
                if took >= SLOW_CHECKPOINT {
                    tracing::warn!(pages, took_ms = took.as_millis(), "slow WAL checkpoint");
                }
                let (completed, changed) = done;
                *completed.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                changed.notify_all();
            }
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed; retrying"),
        }
        guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, changed) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_copies_the_wal_into_the_database_and_writers_never_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        crate::storage::sqlite::schema::configure(&writer).unwrap();
        let autocheckpoint: i64 = writer.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0)).unwrap();
        assert_eq!(autocheckpoint, 0, "commits never checkpoint");
        writer.execute_batch("CREATE TABLE t (payload BLOB NOT NULL)").unwrap();
        let payload = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            writer.execute("INSERT INTO t (payload) VALUES (?1)", [&payload]).unwrap();
        }
        let database_size = || std::fs::metadata(&path).unwrap().len();
        assert!(database_size() < 1024 * 1024, "4 MiB written, still in the WAL");

        let checkpointer = Checkpointer::start(&path, Duration::from_secs(5)).unwrap();
        let since = checkpointer.completed();
        assert!(checkpointer.wait_for(since, 1, Duration::from_secs(10)), "a checkpoint ran");
        assert!(database_size() >= 4 * 1024 * 1024, "the checkpoint copied the WAL into the database");
        drop(checkpointer);
    }
}
