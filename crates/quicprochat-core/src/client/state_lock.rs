//! Cross-process exclusion for one MLS state database, and the generation
//! number that tells a client its in-memory groups went stale.
//!
//! Every [`super::MlsClient`] operation (or batch of them) holds an exclusive advisory lock on
//! `<database>.lock` for its whole duration, so two processes sharing a
//! profile (say `qpc recv --follow` and `qpc send`) never interleave MLS
//! operations: interleaved, both could load the same sender ratchet and
//! encrypt two messages with the same generation's key and nonce.
//!
//! The lock file holds a counter that every operation which wrote state
//! bumps. A client that finds a counter other than the last one it saw drops
//! its cached groups and reloads them from the database, so a group cached in
//! memory is never older than what another process stored.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::MlsError;

/// The lock and generation counter of one MLS state database.
#[derive(Debug)]
pub(crate) struct StateLock {
    file: File,
    /// The counter as this client last read or wrote it.
    seen: Cell<u64>,
}

/// An operation's hold on the lock; released on drop.
pub(crate) struct Held<'a> {
    lock: &'a StateLock,
    stale: bool,
}

/// The lock file of the database at `db_path`.
pub(crate) fn lock_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StateLock {
    /// Opens (creating) the lock file at `path`.
    pub(crate) fn open(path: &Path) -> Result<StateLock, MlsError> {
        const OP: &str = "open";
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|err| MlsError::storage(OP, format!("{}: {err}", path.display())))?;
        let lock = StateLock { file, seen: Cell::new(0) };
        let held = lock.acquire(OP)?;
        drop(held);
        Ok(lock)
    }

    /// Waits for the lock (another process may hold it for one operation).
    pub(crate) fn acquire(&self, operation: &'static str) -> Result<Held<'_>, MlsError> {
        self.file.lock().map_err(|err| MlsError::storage(operation, format!("cannot lock the MLS state: {err}")))?;
        // Built first, so an error below still releases the lock.
        let mut held = Held { lock: self, stale: false };
        let current = self.read_counter(operation)?;
        held.stale = current != self.seen.get();
        self.seen.set(current);
        Ok(held)
    }

    fn read_counter(&self, operation: &'static str) -> Result<u64, MlsError> {
        let mut bytes = [0u8; 8];
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0)).map_err(|err| MlsError::storage(operation, err))?;
        // A new (empty) or short file reads as 0; any change still shows.
        let mut filled = 0;
        while filled < bytes.len() {
            match file.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(MlsError::storage(operation, err)),
            }
        }
        Ok(u64::from_le_bytes(bytes))
    }
}

impl Held<'_> {
    /// Another process wrote state since this client last looked.
    pub(crate) fn stale(&self) -> bool {
        self.stale
    }

    /// Records that this operation wrote state (bumps the counter).
    pub(crate) fn wrote(&self, operation: &'static str) -> Result<(), MlsError> {
        let next = self.lock.seen.get().wrapping_add(1);
        let mut file = &self.lock.file;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&next.to_le_bytes()))
            .map_err(|err| MlsError::storage(operation, err))?;
        self.lock.seen.set(next);
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an unlock error leaves the
        // lock held until then, which only delays other processes.
        let _ = self.lock.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_by_another_handle_makes_the_state_stale_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_path(&dir.path().join("mls.db"));
        let first = StateLock::open(&lock).unwrap();
        let second = StateLock::open(&lock).unwrap();
        assert!(!first.acquire("test").unwrap().stale());
        second.acquire("test").unwrap().wrote("test").unwrap();
        assert!(first.acquire("test").unwrap().stale(), "the other handle's write shows");
        assert!(!first.acquire("test").unwrap().stale(), "and only once");
        // Our own write does not make our state stale.
        first.acquire("test").unwrap().wrote("test").unwrap();
        assert!(!first.acquire("test").unwrap().stale());
        assert!(second.acquire("test").unwrap().stale());
    }

    #[test]
    fn the_lock_excludes_another_handle_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_path(&dir.path().join("mls.db"));
        let first = StateLock::open(&lock).unwrap();
        let second = StateLock::open(&lock).unwrap();
        let held = first.acquire("test").unwrap();
        assert!(matches!(second.file.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        drop(held);
        assert!(second.file.try_lock().is_ok());
        second.file.unlock().unwrap();
    }

    #[test]
    fn the_lock_file_sits_next_to_the_database() {
        assert_eq!(lock_path(Path::new("/p/mls.db")), PathBuf::from("/p/mls.db.lock"));
    }
}
