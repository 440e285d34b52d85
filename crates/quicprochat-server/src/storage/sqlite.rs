//! [`SqliteStore`]: the durable [`Store`](super::Store) on an embedded SQLite file.
//!
//! One connection serves every write. Writes are group-committed
//! (`group_commit`): concurrent writes share one `IMMEDIATE` transaction and
//! one fsync. The database runs in WAL mode with `synchronous=FULL`, and a
//! write returns only once the transaction holding it is on disk: an
//! acknowledged enqueue survives a crash or `kill -9`. Reads use a second
//! connection, so they neither wait for nor see an uncommitted batch.
//!
//! Hot requests do not block a thread per write: they go to the storage
//! thread (`storage_thread`, the [`StorageExecutor`] side of this store),
//! which runs a whole queue of them in one batch and answers each once the
//! batch is durable.
//!
//! Submodules: `schema` (pragmas and migrations), `checkpoint` (WAL
//! checkpoints on a thread of their own), `operations` (every [`Store`](super::Store)
//! method as SQL, over an [`operations::Access`]), `accounts` (accounts and
//! key packages), `invites`, `groups` (groups, commits, proposals),
//! `delivery` (message fan-out and queues), `expiry` (retention) and
//! `quota` (queue quotas). This file owns the connections
//! and error mapping only.

mod accounts;
mod checkpoint;
mod delivery;
mod expiry;
mod federation;
mod group_commit;
mod groups;
mod invites;
mod operations;
mod quota;
mod schema;
mod storage_thread;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, ErrorCode};

use group_commit::GroupCommit;
use storage_thread::StorageThread;

use super::{Job, StorageExecutor, StoreError};

/// How long a statement waits for a lock held by another connection (for
/// example an operator's `sqlite3` shell) before failing with `Busy`.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Prepared statements kept per connection (the store uses about 35).
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Durable [`Store`](super::Store) on one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Arc<GroupCommit>,
    /// Runs queued jobs in batches on the write connection.
    storage_thread: StorageThread,
    /// A second, `query_only` connection for reads: in WAL mode it sees
    /// exactly the committed (durable) state and never waits for a batch.
    reader: Mutex<Connection>,
    /// Runs WAL checkpoints on a thread of its own (`checkpoint`).
    _checkpointer: checkpoint::Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to
    /// the current schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let mut connection = Connection::open(path.as_ref()).during("open")?;
        connection.busy_timeout(BUSY_TIMEOUT).during("open")?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        // SQLite silently falls back to read-only when the file cannot be
        // written; a server that cannot store anything must not start.
        if connection.is_readonly(rusqlite::MAIN_DB).during("open")? {
            return Err(StoreError::NoSpace {
                operation: "open",
                detail: format!("{} is read-only (file, directory or filesystem)", path.as_ref().display()),
            });
        }
        schema::configure(&connection)?;
        schema::migrate(&mut connection)?;
        let reader = Connection::open(path.as_ref()).during("open")?;
        reader.busy_timeout(BUSY_TIMEOUT).during("open")?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        reader.execute_batch("PRAGMA query_only = ON;").during("open")?;
        let checkpointer = checkpoint::Checkpointer::start(path.as_ref())?;
        let connection = Arc::new(GroupCommit::new(connection));
        let storage_thread = StorageThread::start(Arc::clone(&connection))?;
        Ok(Self { connection, storage_thread, reader: Mutex::new(reader), _checkpointer: checkpointer })
    }

    /// The read connection: every write acknowledged so far is visible.
    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.reader.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl StorageExecutor for SqliteStore {
    fn submit(&self, job: Job) {
        self.storage_thread.submit(job);
    }
}

impl operations::Access for SqliteStore {
    /// A savepoint in the current batch; returns once the batch holding it
    /// is committed.
    fn write<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.connection.write(operation, body)
    }

    /// A deferred transaction on the read connection.
    fn read<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.lock()?;
        let transaction = connection.transaction().during(operation)?;
        let value = body(&transaction)?;
        transaction.finish().during(operation)?;
        Ok(value)
    }

    fn query<T>(&self, body: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        body(&*self.lock()?)
    }
}

/// Maps rusqlite errors onto [`StoreError`] with the operation's name.
pub(crate) trait SqlResultExt<T> {
    fn during(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlResultExt<T> for Result<T, rusqlite::Error> {
    fn during(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|error| map_sql_error(operation, error))
    }
}

fn map_sql_error(operation: &'static str, error: rusqlite::Error) -> StoreError {
    let detail = error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            return StoreError::Busy { operation };
        }
        Some(ErrorCode::DiskFull | ErrorCode::ReadOnly) => return StoreError::NoSpace { operation, detail },
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed,
        ) => return StoreError::Io { operation, detail },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            return StoreError::Corrupt { operation, detail };
        }
        Some(ErrorCode::ConstraintViolation) => {
            return StoreError::Conflict { operation, detail };
        }
        _ => {}
    }
    match error {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt { operation, detail },
        _ => StoreError::Backend { operation, detail },
    }
}
