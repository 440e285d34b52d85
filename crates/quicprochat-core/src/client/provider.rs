//! The OpenMLS provider of a client: RustCrypto for crypto and randomness, and
//! OpenMLS's tables in the client's state database ([`StateDb`], through
//! [`SharedStorage`]) with a serde_json codec (an earlier layout's tables
//! moved in first: [`super::legacy_layout`]).
//!
//! JSON is used because OpenMLS 0.9 group state contains untagged enums that
//! non-self-describing formats (bincode, postcard) cannot load back.

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

use super::legacy_layout::merge_legacy;
use super::shared_storage::SharedStorage;
use super::state_db::{open_connection, StateDb};
use super::MlsError;

/// The serde_json codec the client's OpenMLS state is stored with (public
/// so that benchmarks' raw OpenMLS baselines store the same bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

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
pub(super) fn run_migrations(path: &Path) -> Result<(), String> {
    let mut connection = open_connection(path).map_err(|err| err.to_string())?;
    SqliteStorageProvider::<JsonCodec, &mut Connection>::new(&mut connection)
        .run_migrations()
        .map_err(|err| err.to_string())
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
}
