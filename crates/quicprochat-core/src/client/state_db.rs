//! The client's state database: one SQLite connection shared by the MLS
//! state (OpenMLS's tables, through [`super::shared_storage`]) and the SDK's
//! local store, so that one transaction can cover both (see
//! [`super::MlsClient::batch`]).
//!
//! The connection sits behind a re-entrant lock: the thread running a batch
//! holds it for the whole batch and takes it again for each statement, so
//! no other thread's statement can slip into the batch's transaction, and
//! the handle is `Send + Sync` although a connection is not `Sync`.
//! Transactions of their own nest as savepoints ([`Savepoint`]), which
//! commit at once outside a batch and join it inside one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{ReentrantMutex, ReentrantMutexGuard};
use rusqlite::Connection;

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Write transactions committed by every state database this process
/// opened: each is one fsync of the write-ahead log (`synchronous=FULL`),
/// plus two per checkpoint.
static COMMITS: AtomicU64 = AtomicU64::new(0);

/// How many write transactions the state databases of this process have
/// committed so far (benchmarks divide it by the messages they moved).
pub fn state_commits() -> u64 {
    COMMITS.load(Ordering::Relaxed)
}

/// A shared handle on one state database (cheap to clone).
#[derive(Clone)]
pub struct StateDb {
    connection: Arc<ReentrantMutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("path", &self.path).finish_non_exhaustive()
    }
}

impl StateDb {
    /// Opens (creating) the database at `path`: write-ahead log, every
    /// commit fsynced (`synchronous=FULL`), a 5 s wait for another
    /// process's write lock. Creates no table.
    pub fn open(path: &Path) -> rusqlite::Result<StateDb> {
        let connection = open_connection(path)?;
        Ok(StateDb { connection: Arc::new(ReentrantMutex::new(connection)), path: Arc::new(path.to_path_buf()) })
    }

    /// The connection, for one statement or (held) for a batch.
    pub fn lock(&self) -> ReentrantMutexGuard<'_, Connection> {
        self.connection.lock()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A connection to `path` with the state database's settings.
pub(crate) fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    // Write-ahead log: a committed write costs one fsync of the log (the
    // default rollback journal costs four: the journal twice, its
    // directory, the database). The mode is kept in the file; processes
    // sharing a profile share the log (same host only, as SQLite needs).
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // A commit is durable when it returns: we report a message processed,
    // or acknowledge it to the server, only after that.
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.commit_hook(Some(|| {
        COMMITS.fetch_add(1, Ordering::Relaxed);
        false // let the commit go ahead
    }));
    Ok(connection)
}

/// A savepoint: its writes commit with [`Savepoint::commit`] (joining an
/// open transaction, such as a batch's, or as a transaction of their own
/// outside any) and are undone when it is dropped without. Derefs to the
/// connection, as rusqlite's `Transaction` does.
///
/// Outside any transaction it is a `BEGIN IMMEDIATE` transaction: it takes
/// the write lock first (waiting for another process's batch), where a
/// deferred one that read before writing would fail at once with
/// `SQLITE_BUSY_SNAPSHOT` had another process committed in between.
pub struct Savepoint<'a> {
    connection: &'a Connection,
    /// A transaction of its own (`BEGIN IMMEDIATE`), not a nested savepoint.
    outermost: bool,
    released: bool,
}

impl<'a> Savepoint<'a> {
    /// Opens a savepoint on `connection`.
    pub fn begin(connection: &'a Connection) -> rusqlite::Result<Savepoint<'a>> {
        let outermost = connection.is_autocommit();
        connection.execute_batch(if outermost { "BEGIN IMMEDIATE" } else { "SAVEPOINT qpc" })?;
        Ok(Savepoint { connection, outermost, released: false })
    }

    /// Keeps the savepoint's writes. If that fails, the savepoint is rolled
    /// back on drop.
    pub fn commit(mut self) -> rusqlite::Result<()> {
        self.connection.execute_batch(if self.outermost { "COMMIT" } else { "RELEASE qpc" })?;
        self.released = true;
        Ok(())
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        // SQLite may have ended the transaction on its own (e.g. a full
        // disk); then there is nothing left to undo.
        if self.released || self.connection.is_autocommit() {
            return;
        }
        let undo = if self.outermost { "ROLLBACK" } else { "ROLLBACK TO qpc; RELEASE qpc" };
        let _ = self.connection.execute_batch(undo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(db: &StateDb) -> i64 {
        db.lock().query_row("SELECT count(*) FROM t", [], |row| row.get(0)).unwrap()
    }

    #[test]
    fn every_commit_is_fsynced_write_ahead_logged() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("client.db")).unwrap();
        let connection = db.lock();
        let mode: String = connection.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        let synchronous: i64 = connection.query_row("PRAGMA synchronous", [], |row| row.get(0)).unwrap();
        assert_eq!((mode.as_str(), synchronous), ("wal", 2), "WAL with synchronous=FULL (2)");
    }

    #[test]
    fn commits_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("client.db")).unwrap();
        let connection = db.lock();
        connection.execute_batch("CREATE TABLE t (x)").unwrap();
        let before = state_commits();
        connection.execute_batch("BEGIN; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); COMMIT").unwrap();
        connection.execute("INSERT INTO t VALUES (3)", []).unwrap();
        // Other tests may commit at the same time: at least ours.
        assert!(state_commits() - before >= 2);
    }

    /// Another process committed between our read and our write: a
    /// top-level savepoint took the write lock first, so it neither fails
    /// nor writes from a stale read.
    #[test]
    fn a_top_level_savepoint_takes_the_write_lock_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.db");
        let ours = StateDb::open(&path).unwrap();
        ours.lock().execute_batch("CREATE TABLE t (x)").unwrap();
        let other = open_connection(&path).unwrap();
        other.busy_timeout(Duration::from_millis(10)).unwrap();
        let connection = ours.lock();
        let savepoint = Savepoint::begin(&connection).unwrap();
        let seen: i64 = savepoint.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).unwrap();
        assert!(other.execute("INSERT INTO t VALUES (1)", []).is_err(), "the other process waits for our lock");
        savepoint.execute("INSERT INTO t VALUES (?1)", [seen + 1]).unwrap();
        savepoint.commit().unwrap();
        assert_eq!(count(&ours), 1);
    }

    #[test]
    fn savepoints_commit_alone_and_nest_inside_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("client.db")).unwrap();
        db.lock().execute_batch("CREATE TABLE t (x)").unwrap();
        let insert = |db: &StateDb, fail: bool| -> rusqlite::Result<()> {
            let connection = db.lock();
            let savepoint = Savepoint::begin(&connection)?;
            savepoint.execute("INSERT INTO t VALUES (1)", [])?;
            if fail {
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
            savepoint.commit()
        };
        insert(&db, false).unwrap();
        assert!(insert(&db, true).is_err());
        assert_eq!(count(&db), 1, "a failed savepoint leaves nothing");
        assert!(db.lock().is_autocommit(), "and no transaction open");
        // Inside a transaction: a failed savepoint undoes only its own writes.
        let connection = db.lock();
        connection.execute_batch("BEGIN IMMEDIATE").unwrap();
        insert(&db, false).unwrap();
        assert!(insert(&db, true).is_err());
        assert!(!connection.is_autocommit(), "the transaction is still open");
        connection.execute_batch("ROLLBACK").unwrap();
        assert_eq!(count(&db), 1, "the transaction's savepoints went with it");
    }
}
