//! Parties that go through our layer, [`MlsClient`], each with its own SQLite file.

use std::path::Path;

use quicprochat_core::{Ciphersuite, Identity, MlsClient};
use tempfile::TempPath;

use super::{copy_database, scratch_file};

/// One member using `MlsClient`.
pub(crate) struct OursParty {
    pub(crate) client: MlsClient,
    /// Dropped after the client, so the database is closed before its file goes.
    database: TempPath,
    identity: Vec<u8>,
    name: String,
    suite: Ciphersuite,
}

impl OursParty {
    pub(crate) fn new(scratch: &Path, name: &str, suite: Ciphersuite) -> OursParty {
        let identity = Identity::generate().expect("Ed25519 key generation works");
        OursParty::open(scratch_file(scratch), identity.to_bytes(), name, suite)
    }

    fn open(database: TempPath, identity: Vec<u8>, name: &str, suite: Ciphersuite) -> OursParty {
        let key = Identity::from_bytes(&identity).expect("the identity was serialised by Identity::to_bytes");
        let client = MlsClient::open_with_ciphersuite(&database, key, name, suite).expect("MlsClient opens");
        OursParty { client, database, identity, name: name.to_owned(), suite }
    }

    /// The client's database file (idle between calls, so it can be copied).
    pub(crate) fn database(&self) -> &Path {
        &self.database
    }

    /// A frozen copy of this party's database.
    pub(crate) fn snapshot(&self, scratch: &Path) -> OursSnapshot {
        OursSnapshot {
            database: copy_database(&self.database, scratch),
            identity: self.identity.clone(),
            name: self.name.clone(),
            suite: self.suite,
        }
    }
}

/// A frozen `MlsClient` state, restored as often as a benchmark needs.
pub(crate) struct OursSnapshot {
    database: TempPath,
    identity: Vec<u8>,
    name: String,
    suite: Ciphersuite,
}

impl OursSnapshot {
    /// A live client opened on a fresh copy of the frozen database.
    pub(crate) fn restore(&self, scratch: &Path) -> OursParty {
        OursParty::open(copy_database(&self.database, scratch), self.identity.clone(), &self.name, self.suite)
    }
}
