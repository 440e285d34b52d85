//! The OpenMLS provider of a client: RustCrypto for crypto and randomness, and
//! OpenMLS's tables in the client's state database ([`StateDb`], through
//! [`SharedStorage`]) with a serde_json codec; and the move of a profile's
//! earlier layout (MLS state in a database file of its own) into it.
//!
//! JSON is used because OpenMLS 0.9 group state contains untagged enums that
//! non-self-describing formats (bincode, postcard) cannot load back.

use std::io::{Read, Write};
use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::{params, Connection};

use super::shared_storage::SharedStorage;
use super::state_db::{open_connection, StateDb};
use super::MlsError;

/// serde_json codec for the SQLite storage provider.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// What replaces an earlier layout's MLS database once its rows moved: not
/// an SQLite file, so a `qpc` of that layout fails at open instead of
/// starting with no MLS state.
const TOMBSTONE: &[u8] = b"quicprochat: this profile's MLS state moved into client.db; \
this file is kept so that an older qpc refuses the profile instead of starting without it.\n";

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// RustCrypto + SQLite provider. `Send`, not `Sync`.
pub(crate) struct ClientProvider {
    crypto: RustCrypto,
    storage: SharedStorage,
}

impl ClientProvider {
    /// OpenMLS's tables in `db` (made or brought up to date), with the rows
    /// of `legacy` (an earlier layout's MLS database) moved in first if it
    /// still holds any. The caller holds the state's cross-process lock.
    pub(crate) fn open(db: StateDb, legacy: Option<&Path>) -> Result<ClientProvider, MlsError> {
        const OP: &str = "open";
        run_migrations(db.path()).map_err(|err| MlsError::storage(OP, err))?;
        if let Some(legacy) = legacy {
            merge_legacy(&db, legacy).map_err(|err| MlsError::storage(OP, format!("{}: {err}", legacy.display())))?;
        }
        Ok(ClientProvider { crypto: RustCrypto::default(), storage: SharedStorage::new(db) })
    }

    /// The state database.
    pub(crate) fn db(&self) -> &StateDb {
        self.storage.db()
    }
}

/// OpenMLS's migrations on a connection of our own (they need it mutable).
fn run_migrations(path: &Path) -> Result<(), String> {
    let mut connection = open_connection(path).map_err(|err| err.to_string())?;
    SqliteStorageProvider::<JsonCodec, &mut Connection>::new(&mut connection)
        .run_migrations()
        .map_err(|err| err.to_string())
}

/// Copies every row of OpenMLS's tables in the database at `legacy` into `db` in one
/// transaction, then replaces `legacy` by [`TOMBSTONE`]. A crash before
/// the replacement copies the same rows again at the next open (nothing
/// wrote MLS state in between: this runs at open, under the lock).
fn merge_legacy(db: &StateDb, legacy: &Path) -> Result<(), String> {
    let mut header = [0u8; 16];
    let read = match std::fs::File::open(legacy) {
        Ok(mut file) => file.read(&mut header).map_err(|err| err.to_string())?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err.to_string()),
    };
    if read == 0 {
        return replace_by_tombstone(legacy);
    }
    if &header != SQLITE_HEADER {
        // The tombstone, or something we did not write: left alone.
        return Ok(());
    }
    // Its schema as ours, should it come from an older storage version.
    run_migrations(legacy)?;
    let name = legacy.to_str().ok_or("the path is not UTF-8")?;
    let connection = db.lock();
    connection.execute("ATTACH DATABASE ?1 AS legacy", params![name]).map_err(|err| err.to_string())?;
    let copied = copy_legacy_rows(&connection);
    let detached = connection.execute_batch("DETACH DATABASE legacy");
    copied.map_err(|err| err.to_string())?;
    detached.map_err(|err| err.to_string())?;
    drop(connection);
    replace_by_tombstone(legacy)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = legacy.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.to_string()),
            _ => {}
        }
    }
    Ok(())
}

fn copy_legacy_rows(connection: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = {
        let mut statement = connection.prepare(
            "SELECT name FROM legacy.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             AND name <> 'openmls_sqlite_storage_migrations' ORDER BY name",
        )?;
        let rows = statement.query_map([], |row| row.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let transaction = rusqlite::Transaction::new_unchecked(connection, rusqlite::TransactionBehavior::Immediate)?;
    for table in &tables {
        let quoted = table.replace('"', "\"\"");
        transaction
            .execute(&format!("INSERT OR REPLACE INTO main.\"{quoted}\" SELECT * FROM legacy.\"{quoted}\""), [])?;
    }
    transaction.commit()
}

/// Replaces `path` by [`TOMBSTONE`] durably: a temporary file, fsynced,
/// renamed over it, and the directory fsynced.
fn replace_by_tombstone(path: &Path) -> Result<(), String> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".moving");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(|err| err.to_string())?;
    file.write_all(TOMBSTONE).and_then(|()| file.sync_all()).map_err(|err| err.to_string())?;
    std::fs::rename(&temporary, path).map_err(|err| err.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(|err| err.to_string())?;
    }
    Ok(())
}

impl OpenMlsProvider for ClientProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SharedStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_mode(path: &Path) -> String {
        let connection = Connection::open(path).expect("open");
        connection.query_row("PRAGMA journal_mode", [], |row| row.get(0)).expect("journal_mode")
    }

    /// The MLS state is written through a write-ahead log (one fsync per
    /// committed write instead of the rollback journal's four), and a
    /// database made before that switches on its next open.
    #[test]
    fn the_state_database_is_written_through_a_write_ahead_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.db");
        // A database of an earlier version, in the default rollback journal.
        Connection::open(&path).expect("create").execute_batch("CREATE TABLE earlier (x)").expect("write");
        assert_eq!(journal_mode(&path), "delete");
        let provider = ClientProvider::open(StateDb::open(&path).expect("open"), None).expect("provider");
        assert_eq!(journal_mode(&path), "wal");
        drop(provider);
    }

    fn group_rows(connection: &Connection) -> Vec<(Vec<u8>, String, Vec<u8>)> {
        let mut statement = connection
            .prepare("SELECT group_id, data_type, group_data FROM openmls_group_data ORDER BY data_type")
            .expect("select");
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).expect("rows");
        rows.collect::<rusqlite::Result<_>>().expect("read")
    }

    /// A profile of the earlier layout: its MLS rows move into the state
    /// database once, and the old file becomes a tombstone that SQLite (and
    /// so an older qpc) refuses.
    #[test]
    fn an_earlier_mls_database_moves_in_once_and_leaves_a_tombstone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir.path().join("mls.db");
        run_migrations(&legacy).expect("the earlier layout's tables");
        Connection::open(&legacy)
            .expect("open")
            .execute(
                "INSERT INTO openmls_group_data (provider_version, group_id, data_type, group_data) VALUES (1, ?1, 'tree', ?2)",
                params![b"g1".to_vec(), b"{\"tree\":1}".to_vec()],
            )
            .expect("a row of MLS state");
        let path = dir.path().join("client.db");
        let provider = ClientProvider::open(StateDb::open(&path).expect("open"), Some(&legacy)).expect("moved");
        let expected = vec![(b"g1".to_vec(), "tree".to_owned(), b"{\"tree\":1}".to_vec())];
        assert_eq!(group_rows(&provider.db().lock()), expected);
        assert_eq!(std::fs::read(&legacy).expect("tombstone"), TOMBSTONE);
        assert!(
            Connection::open(&legacy).and_then(|c| c.query_row("PRAGMA user_version", [], |_| Ok(()))).is_err(),
            "an older qpc cannot open the moved database"
        );
        drop(provider);
        // A second open finds the tombstone and moves nothing again.
        let provider = ClientProvider::open(StateDb::open(&path).expect("open"), Some(&legacy)).expect("again");
        assert_eq!(group_rows(&provider.db().lock()), expected);
    }
}
