//! Pinned account keys (`known_accounts`): the account key this device
//! first saw for each username (in a group's verified roster, a key package
//! the server served, or the server's answer to `verify`). From then on a
//! device of that username is accepted only when its certificate verifies
//! under the pinned key: a server can register devices, but it cannot sign
//! with someone's account key. Also the devices of our own account that
//! this device removed (`removed_devices`): never added back, whatever
//! the server lists.

use rusqlite::{params, OptionalExtension};

use super::LocalStore;

/// The outcome of offering a username's account key for pinning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinned {
    /// No key was pinned for the username; this one is now.
    New,
    /// This key was pinned already.
    Same,
    /// Another key is pinned; it is kept.
    Other {
        /// The key pinned for the username.
        account_key: Vec<u8>,
        /// When it was pinned (ms since the Unix epoch).
        first_seen_ms: u64,
    },
}

impl LocalStore {
    /// The account key pinned for `username`, with when it was pinned.
    pub fn pinned_account_key(&self, username: &str) -> rusqlite::Result<Option<(Vec<u8>, u64)>> {
        self.conn()
            .query_row(
                "SELECT account_key, first_seen_ms FROM known_accounts WHERE username = ?1",
                params![username],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)? as u64)),
            )
            .optional()
    }

    /// Pins `account_key` for `username` unless a key is pinned already,
    /// and says which case it was. A pinned key is never replaced here.
    pub fn pin_account_key(&self, username: &str, account_key: &[u8], now_ms: u64) -> rusqlite::Result<Pinned> {
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO known_accounts (username, account_key, first_seen_ms) VALUES (?1, ?2, ?3)",
            params![username, account_key, now_ms as i64],
        )?;
        if inserted == 1 {
            return Ok(Pinned::New);
        }
        match self.pinned_account_key(username)? {
            Some((pinned, _)) if pinned == account_key => Ok(Pinned::Same),
            Some((pinned, first_seen_ms)) => Ok(Pinned::Other { account_key: pinned, first_seen_ms }),
            // Deleted in between by another process: pin it now.
            None => self.pin_account_key(username, account_key, now_ms),
        }
    }
}

impl LocalStore {
    /// Records that this device removed `device_id` from our account.
    pub fn note_removed_device(&self, device_id: &[u8], now_ms: u64) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO removed_devices (device_id, removed_at_ms) VALUES (?1, ?2)",
            params![device_id, now_ms as i64],
        )?;
        Ok(())
    }

    /// The devices this device removed from our account.
    pub fn removed_devices(&self) -> rusqlite::Result<Vec<Vec<u8>>> {
        let connection = self.conn();
        let mut statement = connection.prepare_cached("SELECT device_id FROM removed_devices")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_key_seen_stays_pinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&dir.path().join("client.db")).expect("open");
        assert_eq!(store.pinned_account_key("bob").expect("read"), None);
        assert_eq!(store.pin_account_key("bob", b"key one", 10).expect("pin"), Pinned::New);
        assert_eq!(store.pin_account_key("bob", b"key one", 20).expect("pin"), Pinned::Same);
        assert_eq!(
            store.pin_account_key("bob", b"key two", 30).expect("pin"),
            Pinned::Other { account_key: b"key one".to_vec(), first_seen_ms: 10 }
        );
        assert_eq!(store.pinned_account_key("bob").expect("read"), Some((b"key one".to_vec(), 10)));
        assert_eq!(store.pin_account_key("carol", b"key two", 40).expect("pin"), Pinned::New);
    }

    #[test]
    fn removed_devices_are_remembered_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&dir.path().join("client.db")).expect("open");
        assert!(store.removed_devices().expect("read").is_empty());
        store.note_removed_device(b"device1", 1).expect("note");
        store.note_removed_device(b"device1", 2).expect("again");
        assert_eq!(store.removed_devices().expect("read"), [b"device1".to_vec()]);
    }
}
