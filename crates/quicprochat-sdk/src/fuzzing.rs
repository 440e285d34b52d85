//! Entry points for the fuzz targets in `fuzz/`, not an API for apps: the
//! processing `recv` runs on every queue entry (joining, checking a join,
//! decrypting, merging, noticing a fork), on a profile's local state,
//! without a server.

use std::path::Path;

use quicprochat_core::{Identity, MlsClient};
use quicprochat_proto::v1;

use crate::client::Local;
use crate::local_store::LocalStore;
use crate::SdkError;

/// One account's local state fed queue entries as `recv` gets them.
pub struct EntryProcessor {
    local: Local,
}

impl EntryProcessor {
    /// Opens (creating) the MLS state and local store of `username` in `dir`.
    pub fn open(dir: &Path, identity: Identity, username: &str) -> Result<EntryProcessor, SdkError> {
        let account_key = identity.public_key().to_vec();
        let mls = MlsClient::open(&dir.join("client.db"), identity, username)?;
        let store = LocalStore::on(mls.state_db().clone())?;
        let local = Local { username: username.to_owned(), account_key, mls, store };
        local.pin_known_accounts()?;
        Ok(EntryProcessor { local })
    }

    /// A key package of this account, so a peer can add it to a group.
    pub fn key_package(&self) -> Result<Vec<u8>, SdkError> {
        let mut packages = self.local.mls.generate_key_packages(1)?;
        packages.pop().ok_or_else(|| SdkError::InvalidInput("no key package generated".into()))
    }

    /// Decodes `bytes` as a queue entry (as `Fetch` and push carry them) and
    /// processes it as `recv` does, a fork check on failure included.
    pub fn process(&mut self, bytes: &[u8]) -> Result<(), SdkError> {
        let entry: v1::QueueEntry = quicprochat_proto::decode_message(bytes)
            .map_err(|error| SdkError::InvalidInput(format!("not a queue entry: {error}")))?;
        self.local.take_entry(&entry).map(drop)
    }
}
