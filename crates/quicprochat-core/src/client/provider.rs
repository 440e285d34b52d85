//! The OpenMLS provider of a client: RustCrypto for crypto and randomness, SQLite
//! (through `openmls_sqlite_storage`) with a serde_json codec for storage.
//!
//! JSON is used because OpenMLS 0.9 group state contains untagged enums that
//! non-self-describing formats (bincode, postcard) cannot load back.

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

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

/// The client storage type.
pub(crate) type ClientStorage = SqliteStorageProvider<JsonCodec, Connection>;

/// RustCrypto + SQLite provider. `Send`, not `Sync`.
pub(crate) struct ClientProvider {
    crypto: RustCrypto,
    storage: ClientStorage,
}

impl ClientProvider {
    /// Opens the database file (creating it) and runs the storage migrations.
    pub(crate) fn open(db_path: &Path) -> Result<ClientProvider, MlsError> {
        const OP: &str = "open";
        let connection = Connection::open(db_path).map_err(|err| MlsError::storage(OP, err))?;
        // Write-ahead log: a committed write costs one fsync of the log (the
        // default rollback journal costs four: the journal twice, its
        // directory, the database). The mode is kept in the file; processes
        // sharing a profile share the log (same host only, as SQLite needs).
        connection.pragma_update(None, "journal_mode", "WAL").map_err(|err| MlsError::storage(OP, err))?;
        // Writes must be durable before we report a commit merged or a message processed.
        connection.pragma_update(None, "synchronous", "FULL").map_err(|err| MlsError::storage(OP, err))?;
        let mut storage = ClientStorage::new(connection);
        storage.run_migrations().map_err(|err| MlsError::storage(OP, err))?;
        Ok(ClientProvider { crypto: RustCrypto::default(), storage })
    }
}

impl OpenMlsProvider for ClientProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = ClientStorage;

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

    /// The MLS state is written through a write-ahead log (one fsync per
    /// committed write instead of the rollback journal's four), and a
    /// database made before that switches on its next open.
    #[test]
    fn the_mls_database_is_written_through_a_write_ahead_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mls.db");
        let journal_mode = |path: &Path| -> String {
            let connection = Connection::open(path).expect("open");
            connection.query_row("PRAGMA journal_mode", [], |row| row.get(0)).expect("journal_mode")
        };
        // A database of an earlier version, in the default rollback journal.
        Connection::open(&path).expect("create").execute_batch("CREATE TABLE earlier (x)").expect("write");
        assert_eq!(journal_mode(&path), "delete");
        let provider = ClientProvider::open(&path).expect("open");
        assert_eq!(journal_mode(&path), "wal");
        drop(provider);
    }
}
