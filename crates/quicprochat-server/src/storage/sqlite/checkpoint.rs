//! WAL checkpoints off the write path. By default SQLite checkpoints inside
//! the commit that pushes the WAL past 1000 pages: that commit copies the
//! WAL into the database and fsyncs it while every other writer waits
//! (stalls of 100–500 ms on the project's VM disk under load). Here the
//! writer connection has automatic checkpoints turned off and a thread of
//! its own, on its own connection, runs `PASSIVE` checkpoints, which never
//! wait for or block writers or readers; writers reuse the WAL from its
//! start once a checkpoint has caught up.
//!
//! Under continuous writes a passive checkpoint never catches up: writers
//! append while it copies, so the WAL is never reused from its start and
//! grows without bound (195,684 pages, 764 MB, in one `qpc-bench` B3 ramp).
//! Every commit then extends the file (its fsync writes the inode too),
//! and each fsync ends in a disk cache flush that waits for every write the
//! disk took before it, the checkpoint's too: the 100–500 ms commit stalls
//! of BENCHMARKS.md. So once the WAL holds
//! [`RESTART_AFTER_PAGES`], the thread follows the passive checkpoint with
//! a `RESTART` one: it holds new writers back only while it copies what
//! was appended since (little, just after the passive one) and the
//! readers of older snapshots finish (at most [`RESTART_WAIT`]), and the
//! next writer starts the WAL from its beginning again.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::SqlResultExt;
use crate::storage::StoreError;

/// How often the checkpointer runs. Often, so each checkpoint is small:
/// its writes to the database file hold up the commits' fsync of the WAL
/// (one disk, whose cache flush waits for them), and with 250 ms rounds that stalled
/// commits for 100-290 ms at low rates in `qpc-bench` B3 (BENCHMARKS.md,
/// "Fewer acknowledgements"). A round with nothing to copy costs one
/// `wal_checkpoint` call.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);

/// A checkpoint taking longer than this is logged.
const SLOW_CHECKPOINT: Duration = Duration::from_millis(100);

/// WAL size, in pages (4 KiB each), from which the WAL is restarted.
const RESTART_AFTER_PAGES: i64 = 4096;

/// How long a `RESTART` checkpoint waits for a writer or reader before it
/// gives up until the next round (the checkpoint connection's busy timeout;
/// passive checkpoints never wait).
const RESTART_WAIT: Duration = Duration::from_millis(50);

/// The checkpoint thread; stopped and joined on drop.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// What the thread did so far, for tests to wait on (the thread counts
    /// in every build).
    #[cfg_attr(not(test), allow(dead_code))]
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Progress {
    counts: Mutex<Counts>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    /// Rounds completed (each a passive checkpoint, maybe a restart).
    pub(super) rounds: u64,
    /// `RESTART` checkpoints that finished: the WAL is reused from its start.
    pub(super) restarts: u64,
}

impl Progress {
    fn count(&self, restarted: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.rounds += 1;
        counts.restarts += u64::from(restarted);
        self.changed.notify_all();
    }
}

impl Checkpointer {
    /// Opens a connection to `path` and starts checkpointing it.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let connection = Connection::open(path).during("open")?;
        connection.busy_timeout(RESTART_WAIT).during("open")?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let progress = Arc::new(Progress::default());
        let (signal, counter) = (Arc::clone(&stop), Arc::clone(&progress));
        let thread = std::thread::Builder::new()
            .name("qpc-sqlite-checkpoint".to_owned())
            .spawn(move || run(&connection, &signal, &counter))
            .map_err(|error| StoreError::Io { operation: "open", detail: format!("checkpoint thread: {error}") })?;
        Ok(Checkpointer { stop, progress, thread: Some(thread) })
    }

    /// Waits until `count` more rounds than `since` have completed.
    #[cfg(test)]
    pub(super) fn wait_for(&self, since: u64, count: u64, timeout: Duration) -> bool {
        let guard = self.progress.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .progress
            .changed
            .wait_timeout_while(guard, timeout, |counts| counts.rounds < since + count)
            .unwrap_or_else(PoisonError::into_inner);
        guard.rounds >= since + count
    }

    /// What the thread did so far.
    #[cfg(test)]
    pub(super) fn counts(&self) -> Counts {
        *self.progress.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn run(connection: &Connection, stop: &(Mutex<bool>, Condvar), progress: &Progress) {
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
        match checkpoint(connection, "PASSIVE") {
            Ok(passive) => {
                let restarted = passive.wal_pages >= RESTART_AFTER_PAGES
                    && match checkpoint(connection, "RESTART") {
                        // Busy: a writer or reader outlasted the wait; next round.
                        Ok(restart) => !restart.busy,
                        Err(error) => {
                            tracing::warn!(%error, "WAL restart failed; retrying");
                            false
                        }
                    };
                progress.count(restarted);
            }
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed; retrying"),
        }
        guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
    }
}

/// What one `PRAGMA wal_checkpoint` reported.
struct Checkpointed {
    /// It could not finish (a writer or reader was in the way).
    busy: bool,
    /// Pages in the WAL when it ran.
    wal_pages: i64,
}

/// Runs one checkpoint in `mode`; a slow one is logged.
fn checkpoint(connection: &Connection, mode: &'static str) -> Result<Checkpointed, rusqlite::Error> {
    let started = std::time::Instant::now();
    let (busy, wal_pages, copied): (i64, i64, i64) =
        connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    let took = started.elapsed();
    if took >= SLOW_CHECKPOINT {
        tracing::warn!(mode, wal_pages, copied, took_ms = took.as_millis(), "slow WAL checkpoint");
    }
    Ok(Checkpointed { busy: busy != 0, wal_pages })
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

    /// A database at `path` configured like the store's, with one table,
    /// and a function that writes that many MiB to it in 64 KiB rows.
    fn writer(path: &Path) -> (Connection, impl Fn(&Connection, usize)) {
        let writer = Connection::open(path).unwrap();
        crate::storage::sqlite::schema::configure(&writer).unwrap();
        writer.execute_batch("CREATE TABLE t (payload BLOB NOT NULL)").unwrap();
        let payload = vec![7u8; 64 * 1024];
        let write_mebibytes = move |writer: &Connection, count: usize| {
            for _ in 0..count * 16 {
                writer.execute("INSERT INTO t (payload) VALUES (?1)", [&payload]).unwrap();
            }
        };
        (writer, write_mebibytes)
    }

    #[test]
    fn the_thread_copies_the_wal_into_the_database_and_writers_never_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (writer, write_mebibytes) = writer(&path);
        let autocheckpoint: i64 = writer.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0)).unwrap();
        assert_eq!(autocheckpoint, 0, "commits never checkpoint");
        write_mebibytes(&writer, 4);
        let database_size = || std::fs::metadata(&path).unwrap().len();
        assert!(database_size() < 1024 * 1024, "4 MiB written, still in the WAL");

        let checkpointer = Checkpointer::start(&path).unwrap();
        let since = checkpointer.counts().rounds;
        assert!(checkpointer.wait_for(since, 1, Duration::from_secs(10)), "a checkpoint ran");
        assert!(database_size() >= 4 * 1024 * 1024, "the checkpoint copied the WAL into the database");
        assert_eq!(checkpointer.counts().restarts, 0, "a small WAL is left to the writers to reuse");
        drop(checkpointer);
    }

    /// Past `RESTART_AFTER_PAGES` the thread restarts the WAL itself, so the
    /// next writer starts from the WAL's beginning and the file stops growing.
    #[test]
    fn a_large_wal_is_restarted_and_then_reused_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (writer, write_mebibytes) = writer(&path);
        write_mebibytes(&writer, 20); // over RESTART_AFTER_PAGES (16 MiB)
        let wal = dir.path().join("t.db-wal");
        let wal_size = || std::fs::metadata(&wal).unwrap().len();
        let grown = wal_size();
        assert!(grown >= 20 * 1024 * 1024);

        let checkpointer = Checkpointer::start(&path).unwrap();
        let since = checkpointer.counts().rounds;
        assert!(checkpointer.wait_for(since, 1, Duration::from_secs(10)), "a round ran");
        assert_eq!(checkpointer.counts().restarts, 1, "the large WAL was restarted");
        drop(checkpointer);
        write_mebibytes(&writer, 10);
        assert_eq!(wal_size(), grown, "the next writes reused the WAL from its start");
        let (_, frames, _): (i64, i64, i64) = writer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap();
        assert!(frames < i64::try_from(grown / 4096).unwrap(), "{frames} frames: only the new writes");
    }
}
