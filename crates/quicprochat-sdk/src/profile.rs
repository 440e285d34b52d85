//! The profile directory: one account's identity, pinned server and files.
//!
//! Layout of a profile directory:
//! - `profile.json` (mode 0600): username, server address, pinned server
//!   certificate fingerprint, the Ed25519 identity key (secret).
//! - `mls.db`: OpenMLS state (groups, key packages), SQLite, JSON codec.
//! - `client.db`: conversations, message history, delivery cursor.
//!
//! The profile is written atomically (temp file + rename) so a crash never
//! leaves a half-written identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quicprochat_core::Identity;
use quicprochat_rpc::CertFingerprint;
use serde::{Deserialize, Serialize};

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
}

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
    /// The device's identity key.
    pub identity: Identity,
}

impl Profile {
    /// Path of the OpenMLS state database.
    pub fn mls_db_path(&self) -> PathBuf {
        self.dir.join("mls.db")
    }

    /// Path of the local conversation store.
    pub fn client_db_path(&self) -> PathBuf {
        self.dir.join("client.db")
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
        if file.version != 1 {
            return Err(damaged(format!("unsupported profile version {}", file.version)));
        }
        let server = file.server.parse().map_err(|_| damaged(format!("bad server address {:?}", file.server)))?;
        let server_fingerprint =
            CertFingerprint::parse(&file.server_fingerprint).ok_or_else(|| damaged("bad server fingerprint".into()))?;
        let identity_bytes = hex::decode(&file.identity).map_err(|_| damaged("bad identity encoding".into()))?;
        let identity = Identity::from_bytes(&identity_bytes)?;
        Ok(Profile { dir: dir.to_path_buf(), username: file.username, server, server_fingerprint, identity })
    }

    /// Writes the profile to its directory (atomically, owner-only).
    pub fn save(&self) -> Result<(), SdkError> {
        let path = self.dir.join(PROFILE_FILE);
        let failed =
            |error: std::io::Error| SdkError::Profile { path: path.display().to_string(), reason: error.to_string() };
        std::fs::create_dir_all(&self.dir).map_err(failed)?;
        let file = ProfileFile {
            version: 1,
            username: self.username.clone(),
            server: self.server.to_string(),
            server_fingerprint: self.server_fingerprint.to_string(),
            identity: hex::encode(self.identity.to_bytes()),
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
