//! The profile directory: one account's identity, pinned server and files.
//!
//! Layout of a profile directory:
//! - `profile.json` (mode 0600): username, server address, pinned server
//!   certificate fingerprint, this device's Ed25519 key (secret), and on a
//!   linked device the account's public key and the device's certificate.
//!   Version 1 (before devices) has no account key: its identity key is
//!   both the account key and the device key, as on every first device.
//! - `client.db`: the state database (SQLite, write-ahead log): OpenMLS's
//!   tables (groups, key packages; JSON codec) and the local store's
//!   (conversations, message history, delivery cursor, outbox), on one
//!   connection so that a batch of processed entries is one transaction.
//! - `mls.db.lock`: the cross-process lock of the MLS state (and its
//!   generation counter).
//! - `mls.db`: before the MLS state moved into `client.db`, its own
//!   database; the first open of this version moves its rows and leaves a
//!   short text in its place, which older versions refuse to open.
//!
//! The profile is written atomically (temp file + rename) so a crash never
//! leaves a half-written identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quicprochat_core::{Identity, MemberCredential, MlsClient, StateDb, DEFAULT_CIPHERSUITE};
use quicprochat_rpc::CertFingerprint;
use serde::{Deserialize, Serialize};

use crate::local_store::LocalStore;
use crate::SdkError;

const PROFILE_FILE: &str = "profile.json";
/// Profiles larger than this are refused (they hold one key and a few names).
const MAX_PROFILE_LEN: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct ProfileFile {
    version: u32,
    username: String,
    server: String,
    server_fingerprint: String,
    identity: String,
    /// Version 2, linked devices only: the account's public key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account_key: Option<String>,
    /// Version 2, linked devices only: the account key's certificate of
    /// this device's key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
}

/// The profile version this release writes; it reads 1 and 2.
const PROFILE_VERSION: u32 = 2;

/// A loaded profile.
pub struct Profile {
    /// The profile directory.
    pub dir: PathBuf,
    /// The account name on the server.
    pub username: String,
    /// The server address.
    pub server: SocketAddr,
    /// The pinned server certificate.
    pub server_fingerprint: CertFingerprint,
    /// This device's key: its MLS signature key and its login key.
    pub identity: Identity,
    /// The account key's certificate of `identity`, on a linked device;
    /// `None` on the device keyed by the account key.
    pub link: Option<LinkedDevice>,
}

/// What makes a profile a linked device of its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedDevice {
    /// The account's public key.
    pub account_key: Vec<u8>,
    /// The account key's signature over (username, device id, device key).
    pub certificate: Vec<u8>,
}

impl Profile {
    /// Path of the earlier layout's OpenMLS database (now a tombstone).
    pub fn mls_db_path(&self) -> PathBuf {
        self.dir.join("mls.db")
    }

    /// Path of the MLS state's cross-process lock.
    pub fn mls_lock_path(&self) -> PathBuf {
        self.dir.join("mls.db.lock")
    }

    /// Path of the state database (MLS state and local store).
    pub fn client_db_path(&self) -> PathBuf {
        self.dir.join("client.db")
    }

    /// Opens this profile's state: the MLS state (as a linked device if
    /// this is one) and the local store, on one connection to
    /// `client.db`. Another handle (another process, say) may be open on
    /// it: they take turns on the MLS state's lock.
    pub fn open_state(&self) -> Result<(MlsClient, LocalStore), SdkError> {
        let identity = Identity::from_bytes(&self.identity.to_bytes())?;
        let db = StateDb::open(&self.client_db_path())?;
        let mut mls = MlsClient::open_on(
            db.clone(),
            &self.mls_lock_path(),
            Some(&self.mls_db_path()),
            identity,
            &self.username,
            DEFAULT_CIPHERSUITE,
        )?;
        if let Some(link) = &self.link {
            let credential = MemberCredential::linked(&self.username, &link.account_key, &link.certificate);
            mls = mls.as_linked_device(credential)?;
        }
        Ok((mls, LocalStore::on(db)?))
    }

    /// The account's public key: the identity key itself on the device
    /// keyed by it.
    pub fn account_key(&self) -> &[u8] {
        match &self.link {
            Some(link) => &link.account_key,
            None => self.identity.public_key(),
        }
    }

    /// Fails with [`SdkError::ProfileExists`] when `dir` holds an account
    /// (before a new one is made in it).
    pub fn refuse_existing(dir: &Path) -> Result<(), SdkError> {
        if !Profile::exists(dir) {
            return Ok(());
        }
        let existing = Profile::load(dir)?;
        Err(SdkError::ProfileExists { path: dir.display().to_string(), username: existing.username })
    }

    /// Whether `dir` already holds an account.
    pub fn exists(dir: &Path) -> bool {
        dir.join(PROFILE_FILE).exists()
    }

    /// Loads the profile in `dir`.
    pub fn load(dir: &Path) -> Result<Profile, SdkError> {
        let path = dir.join(PROFILE_FILE);
        let damaged = |reason: String| SdkError::Profile { path: path.display().to_string(), reason };
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(SdkError::NoProfile { path: dir.display().to_string() })
            }
            Err(error) => return Err(damaged(error.to_string())),
        };
        if metadata.len() > MAX_PROFILE_LEN {
            return Err(damaged(format!("{} bytes is too large for a profile", metadata.len())));
        }
        let text = std::fs::read_to_string(&path).map_err(|error| damaged(error.to_string()))?;
        let file: ProfileFile = serde_json::from_str(&text).map_err(|error| damaged(error.to_string()))?;
        if !(1..=PROFILE_VERSION).contains(&file.version) {
            return Err(damaged(format!("unsupported profile version {}", file.version)));
        }
        let server = file.server.parse().map_err(|_| damaged(format!("bad server address {:?}", file.server)))?;
        let server_fingerprint =
            CertFingerprint::parse(&file.server_fingerprint).ok_or_else(|| damaged("bad server fingerprint".into()))?;
        let identity_bytes = hex::decode(&file.identity).map_err(|_| damaged("bad identity encoding".into()))?;
        let identity = Identity::from_bytes(&identity_bytes)?;
        let link = match (file.account_key, file.certificate) {
            (None, None) => None,
            (Some(account_key), Some(certificate)) => {
                let decode = |field: &str, text: &str| hex::decode(text).map_err(|_| damaged(format!("bad {field}")));
                let link = LinkedDevice {
                    account_key: decode("account key", &account_key)?,
                    certificate: decode("certificate", &certificate)?,
                };
                quicprochat_core::device::verify_certificate(
                    &link.account_key,
                    &file.username,
                    identity.public_key(),
                    &link.certificate,
                )
                .map_err(|error| damaged(format!("the device certificate does not verify: {error}")))?;
                Some(link)
            }
            _ => return Err(damaged("an account key without a certificate, or the reverse".into())),
        };
        Ok(Profile { dir: dir.to_path_buf(), username: file.username, server, server_fingerprint, identity, link })
    }

    /// Writes the profile to its directory (atomically, owner-only).
    pub fn save(&self) -> Result<(), SdkError> {
        let path = self.dir.join(PROFILE_FILE);
        let failed =
            |error: std::io::Error| SdkError::Profile { path: path.display().to_string(), reason: error.to_string() };
        std::fs::create_dir_all(&self.dir).map_err(failed)?;
        let file = ProfileFile {
            version: PROFILE_VERSION,
            username: self.username.clone(),
            server: self.server.to_string(),
            server_fingerprint: self.server_fingerprint.to_string(),
            identity: hex::encode(self.identity.to_bytes()),
            account_key: self.link.as_ref().map(|link| hex::encode(&link.account_key)),
            certificate: self.link.as_ref().map(|link| hex::encode(&link.certificate)),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|error| failed(std::io::Error::other(error)))?;
        let temp = self.dir.join(format!("{PROFILE_FILE}.tmp"));
        write_owner_only(&temp, text.as_bytes()).map_err(failed)?;
        std::fs::rename(&temp, &path).map_err(failed)?;
        Ok(())
    }
}

fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The default profile directory: `$QPC_PROFILE`, else `<config dir>/quicprochat`.
pub fn default_profile_dir(config_dir: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("QPC_PROFILE") {
        return Some(PathBuf::from(dir));
    }
    config_dir.map(|dir| dir.join("quicprochat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_profile_of_the_release_before_devices_is_its_accounts_first_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::generate().expect("key");
        let old = serde_json::json!({
            "version": 1,
            "username": "alice",
            "server": "127.0.0.1:7000",
            "server_fingerprint": FINGERPRINT,
            "identity": hex::encode(identity.to_bytes()),
        });
        std::fs::write(dir.path().join(PROFILE_FILE), old.to_string()).expect("write");
        let profile = Profile::load(dir.path()).expect("a version 1 profile loads");
        assert_eq!(profile.link, None);
        assert_eq!(profile.account_key(), identity.public_key(), "its key is the account key");
        profile.save().expect("save");
        let saved = Profile::load(dir.path()).expect("reload");
        assert_eq!((saved.username.as_str(), saved.account_key()), ("alice", identity.public_key()));
    }

    #[test]
    fn a_linked_profile_keeps_its_certificate_and_refuses_a_forged_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let account = Identity::generate().expect("account key");
        let device = Identity::generate().expect("device key");
        let certificate =
            quicprochat_core::device::certify_device(&account, "alice", device.public_key()).expect("certificate");
        let link = LinkedDevice { account_key: account.public_key().to_vec(), certificate };
        let profile = Profile {
            dir: dir.path().to_path_buf(),
            username: "alice".into(),
            server: "127.0.0.1:7000".parse().expect("address"),
            server_fingerprint: CertFingerprint::parse(FINGERPRINT).expect("fingerprint"),
            identity: device,
            link: Some(link.clone()),
        };
        profile.save().expect("save");
        let loaded = Profile::load(dir.path()).expect("load");
        assert_eq!(loaded.link, Some(link));
        assert_eq!(loaded.account_key(), account.public_key());

        let path = dir.path().join(PROFILE_FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        let other = Identity::generate().expect("key");
        let forged = text.replace(&hex::encode(account.public_key()), &hex::encode(other.public_key()));
        std::fs::write(&path, forged).expect("write");
        let refused = Profile::load(dir.path()).err().map(|error| error.to_string()).unwrap_or_default();
        assert!(refused.contains("certificate does not verify"), "{refused}");
    }
}
