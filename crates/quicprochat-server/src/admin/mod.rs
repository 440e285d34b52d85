//! Admin commands of `qpc-server` (binary side; `anyhow` errors).
//!
//! - `invite`: `invite create` writes a token into the data dir's database;
//! - `users`: `users list|disable|enable` on the data dir's database;
//! - `federation`: `federation fingerprint` prints the certificate pin
//!   peer servers configure (making the certificate on a new data dir);
//! - `status`: `status` asks a running server's HTTP endpoint
//!   (`server.metrics_listen`) for `/healthz` and `/metrics`.
//!
//! The database commands open `qpc-server.db` with [`SqliteStore::open`]
//! while the server may be running: SQLite (WAL mode, busy timeout) lets the
//! two share the file, and every change is one transaction. They never talk
//! to the server process, so they work when it is stopped too.

pub(crate) mod federation;
pub(crate) mod invite;
pub(crate) mod status;
pub(crate) mod users;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use quicprochat_server::storage::SqliteStore;
use quicprochat_server::ServerConfig;

/// The database file inside the data dir (as `RunningServer::start` names it).
const DATABASE_FILE: &str = "qpc-server.db";

fn database_path(config: &ServerConfig) -> PathBuf {
    config.data_dir.join(DATABASE_FILE)
}

/// Opens the database of a data dir that already has one; a missing file is
/// an error (most likely a wrong `--data-dir`), never silently created.
fn open_existing_store(config: &ServerConfig) -> anyhow::Result<SqliteStore> {
    let path = database_path(config);
    if !path.is_file() {
        anyhow::bail!(
            "no database at {}: is the data dir right? (--data-dir, QPC_DATA_DIR or server.data_dir)",
            path.display()
        );
    }
    SqliteStore::open(&path).with_context(|| format!("cannot open {}", path.display()))
}

/// Opens the data dir's database, creating the directory and the database
/// if needed (invites may be created before the first start).
fn open_or_create_store(config: &ServerConfig) -> anyhow::Result<SqliteStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let path = database_path(config);
    SqliteStore::open(&path).with_context(|| format!("cannot open {}", path.display()))
}

/// Milliseconds since the Unix epoch (the store's time unit).
fn now_ms() -> anyhow::Result<u64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock is before 1970")?;
    u64::try_from(since_epoch.as_millis()).context("system clock is out of range")
}
