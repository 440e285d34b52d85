//! [`SqliteStore`]: the durable [`Store`] on an embedded SQLite file.
//!
//! One connection serves every call. Writes are group-committed
//! (`group_commit`): concurrent writes share one `IMMEDIATE` transaction and
//! one fsync. The database runs in WAL mode with `synchronous=FULL`, and a
//! write returns only once the transaction holding it is on disk: an
//! acknowledged enqueue survives a crash or `kill -9`. Reads use a second
//! connection, so they neither wait for nor see an uncommitted batch.
//!
//! Submodules: `schema` (pragmas and migrations), `checkpoint` (WAL
//! checkpoints on a thread of their own), `accounts` (accounts and
//! key packages), `invites`, `groups` (groups, commits, proposals), `delivery` (message
//! fan-out and queues). This file owns the connection and error mapping only.

mod accounts;
mod checkpoint;
mod delivery;
mod group_commit;
mod groups;
mod invites;
mod schema;

use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, ErrorCode, Transaction};
use std::path::Path;

use group_commit::GroupCommit;

use super::{
    Account, AccountCreation, CommitResult, CommitWrite, EnqueueOutcome, FetchedQueue, GroupCreation, GroupRecord,
    GroupRoster, GroupSummary, InviteUse, InvitedAccountCreation, KeyPackageStock, KeyPackagesAdded, MessageRecord,
    NewGroup, NewKeyPackage, NewMessage, ProposalResult, ProposalWrite, Store, StoreError, TakenKeyPackage,
};

/// How long a statement waits for a lock held by another connection (for
/// example an operator's `sqlite3` shell) before failing with `Busy`.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Prepared statements kept per connection (the store uses about 35).
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Durable [`Store`] on one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    connection: GroupCommit,
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
        let checkpointer = checkpoint::Checkpointer::start(path.as_ref(), BUSY_TIMEOUT)?;
        Ok(Self { connection: GroupCommit::new(connection), reader: Mutex::new(reader), _checkpointer: checkpointer })
    }

    /// The read connection: every write acknowledged so far is visible.
    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.reader.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Runs `body` as one atomic write (a savepoint in the current batch)
    /// and returns once the batch holding it is committed; an `Err` rolls
    /// back the body's changes only.
    fn write<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.connection.write(operation, body)
    }

    /// Runs `body` in a deferred transaction, for a consistent multi-query read.
    fn read<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.lock()?;
        let transaction = connection.transaction().during(operation)?;
        let value = body(&transaction)?;
        transaction.finish().during(operation)?;
        Ok(value)
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

impl Store for SqliteStore {
    fn create_account(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
    ) -> Result<AccountCreation, StoreError> {
        self.write("create_account", |tx| accounts::create_account(tx, username, identity_key, created_at_ms))
    }

    fn get_account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        accounts::get_account(&*self.lock()?, username)
    }

    fn set_account_disabled(&self, username: &str, disabled: bool) -> Result<(), StoreError> {
        self.write("set_account_disabled", |tx| accounts::set_disabled(tx, username, disabled))
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        accounts::list_accounts(&*self.lock()?)
    }

    fn create_invite(
        &self,
        token: &str,
        uses: u32,
        expires_at_ms: Option<u64>,
        created_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write("create_invite", |tx| invites::create_invite(tx, token, uses, expires_at_ms, created_at_ms))
    }

    fn consume_invite(&self, token: &str, now_ms: u64) -> Result<InviteUse, StoreError> {
        self.write("consume_invite", |tx| invites::consume_invite(tx, token, now_ms))
    }

    fn create_account_with_invite(
        &self,
        username: &str,
        identity_key: &[u8],
        created_at_ms: u64,
        invite_token: &str,
    ) -> Result<InvitedAccountCreation, StoreError> {
        const OPERATION: &str = "create_account_with_invite";
        self.write(OPERATION, |tx| {
            let remaining_uses = match invites::check_invite(tx, invite_token, created_at_ms, OPERATION)? {
                InviteUse::Consumed { remaining } => remaining,
                InviteUse::Unknown => return Ok(InvitedAccountCreation::InviteUnknown),
                InviteUse::Expired => return Ok(InvitedAccountCreation::InviteExpired),
                InviteUse::Exhausted => return Ok(InvitedAccountCreation::InviteExhausted),
            };
            if accounts::create_account(tx, username, identity_key, created_at_ms)? == AccountCreation::UsernameTaken {
                return Ok(InvitedAccountCreation::UsernameTaken);
            }
            invites::take_use(tx, invite_token, OPERATION)?;
            Ok(InvitedAccountCreation::Created { remaining_uses })
        })
    }

    fn add_key_packages(
        &self,
        username: &str,
        key_packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
    ) -> Result<KeyPackagesAdded, StoreError> {
        self.write("add_key_packages", |tx| accounts::add_key_packages(tx, username, key_packages, last_resort))
    }

    fn take_key_package(&self, username: &str) -> Result<Option<TakenKeyPackage>, StoreError> {
        self.write("take_key_package", |tx| accounts::take_key_package(tx, username))
    }

    fn last_resort_key_package(&self, username: &str) -> Result<Option<Vec<u8>>, StoreError> {
        accounts::last_resort_key_package(&*self.lock()?, username)
    }

    fn key_package_stock(&self, username: &str) -> Result<KeyPackageStock, StoreError> {
        accounts::key_package_stock(&*self.lock()?, username, "key_package_stock")
    }

    fn create_group(&self, group: &NewGroup) -> Result<GroupCreation, StoreError> {
        self.write("create_group", |tx| groups::create_group(tx, group))
    }

    fn get_group(&self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
        self.read("get_group", |tx| groups::get_group(tx, group_id))
    }

    fn group_roster(&self, group_id: &[u8]) -> Result<Option<GroupRoster>, StoreError> {
        self.read("group_roster", |tx| groups::group_roster(tx, group_id))
    }

    fn groups_of(&self, username: &str) -> Result<Vec<GroupSummary>, StoreError> {
        groups::groups_of(&*self.lock()?, username)
    }

    fn apply_commit(&self, write: &CommitWrite) -> Result<CommitResult, StoreError> {
        self.write("apply_commit", |tx| groups::apply_commit(tx, write))
    }

    fn apply_proposal(&self, write: &ProposalWrite) -> Result<ProposalResult, StoreError> {
        self.write("apply_proposal", |tx| groups::apply_proposal(tx, write))
    }

    fn enqueue(&self, message: &NewMessage, recipients: &[String]) -> Result<EnqueueOutcome, StoreError> {
        self.write("enqueue", |tx| {
            if let Some(first) = delivery::duplicate_of(tx, message, "enqueue")? {
                return Ok(first);
            }
            delivery::insert_fanout(tx, message, recipients, true, "enqueue")
        })
    }

    fn lookup_message(&self, sender: &str, message_id: &[u8]) -> Result<Option<MessageRecord>, StoreError> {
        delivery::lookup_message(&*self.lock()?, sender, message_id, "lookup_message")
    }

    fn fetch(&self, username: &str, after_seq: u64, limit: u32) -> Result<FetchedQueue, StoreError> {
        self.read("fetch", |tx| delivery::fetch(tx, username, after_seq, limit))
    }

    fn ack(&self, username: &str, up_to_seq: u64) -> Result<u64, StoreError> {
        self.write("ack", |tx| delivery::ack(tx, username, up_to_seq))
    }

    fn queue_depth(&self, username: &str) -> Result<u64, StoreError> {
        delivery::queue_depth(&*self.lock()?, username)
    }

    fn total_queue_depth(&self) -> Result<u64, StoreError> {
        delivery::total_queue_depth(&*self.lock()?)
    }

    fn stored_message_count(&self) -> Result<u64, StoreError> {
        delivery::stored_message_count(&*self.lock()?)
    }
}
