//! One transaction for a run of MLS calls and the local store's writes
//! between them: [`MlsClient::batch`]. A batch of processed queue entries
//! then costs one fsync instead of several per entry, and its effects (the
//! ratchet steps, the history rows, the cursor past them) are durable
//! together or not at all.

use super::state_db::Savepoint;
use super::{MlsClient, MlsError};

impl MlsClient {
    /// Runs `work` as one transaction of the state database: every MLS
    /// write it makes, and every write to the same database through
    /// [`MlsClient::state_db`] (the SDK's local store), commits together
    /// when it succeeds, with one fsync, and none does when it fails. The
    /// cross-process lock is held throughout, taken before the database's
    /// write lock (as every call takes them). After a failure the groups
    /// held in memory are dropped (OpenMLS may have moved them past what
    /// storage now holds); the next call reloads them.
    ///
    /// Inside a batch, a statement that fails in a way SQLite answers by
    /// rolling the whole transaction back (a full disk, say) leaves later
    /// statements committing one by one: call [`MlsClient::check_batch`]
    /// before each step whose writes must not outlive earlier ones. A batch
    /// inside a batch is part of it.
    pub fn batch<T, E: From<MlsError>>(&self, work: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        const OP: &str = "batch";
        if self.in_batch.get() {
            return work();
        }
        let held = self.lock_state(OP)?;
        // Before any write, as a single call does: should this batch die
        // half way, other processes still know to reload.
        held.wrote(OP)?;
        let db = self.state_db().clone();
        let connection = db.lock();
        // Outside any transaction, a savepoint is `BEGIN IMMEDIATE`; dropped
        // uncommitted (an error, a panic in the work) it rolls back.
        let transaction = Savepoint::begin(&connection).map_err(|err| MlsError::storage(OP, err))?;
        let mut running = Running { client: self, committed: false };
        self.in_batch.set(true);
        let value = work()?;
        self.check_batch()?;
        crate::crash_point::crash_point("batch_before_commit");
        transaction.commit().map_err(|err| MlsError::storage(OP, err))?;
        running.committed = true;
        drop(running);
        drop(held);
        Ok(value)
    }

    /// Fails when the running batch's transaction is no longer open (SQLite
    /// rolled it back after a failed statement); nothing of the batch is
    /// then kept. Outside a batch: `Ok`.
    pub fn check_batch(&self) -> Result<(), MlsError> {
        if self.in_batch.get() && self.state_db().lock().is_autocommit() {
            return Err(MlsError::storage(
                "batch",
                "the database rolled the batch's transaction back after a failed write; nothing of it was kept",
            ));
        }
        Ok(())
    }
}

/// A running batch; dropped without committing (an error, or a panic in
/// the work), it forgets the groups held in memory, whose writes its
/// savepoint rolls back.
struct Running<'a> {
    client: &'a MlsClient,
    committed: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.client.in_batch.set(false);
        if !self.committed {
            self.client.groups.borrow_mut().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ciphersuite::CLASSICAL_CIPHERSUITE;
    use crate::client::Incoming;
    use crate::identity::Identity;

    const GROUP: [u8; 16] = [7; 16];

    /// Alice's group with Bob in it, and three messages from Alice.
    fn bob_with_three_messages(dir: &tempfile::TempDir) -> (MlsClient, Vec<Vec<u8>>) {
        let open = |name: &str| {
            let path = dir.path().join(format!("{name}.db"));
            MlsClient::open_with_ciphersuite(&path, Identity::generate().unwrap(), name, CLASSICAL_CIPHERSUITE).unwrap()
        };
        let (alice, bob) = (open("alice"), open("bob"));
        alice.create_group(&GROUP).unwrap();
        let package = bob.generate_key_packages(1).unwrap().remove(0);
        let commit = alice.add_members(&GROUP, &[package]).unwrap();
        alice.merge_pending_commit(&GROUP).unwrap();
        bob.join_from_welcome(&commit.welcome.unwrap()).unwrap();
        let messages = (0..3).map(|n| alice.encrypt(&GROUP, format!("m{n}").as_bytes()).unwrap()).collect();
        (bob, messages)
    }

    fn decrypts(bob: &MlsClient, message: &[u8]) -> bool {
        matches!(bob.process_incoming(&GROUP, message), Ok(Incoming::Application { .. }))
    }

    #[test]
    fn a_failed_batch_keeps_nothing_and_its_messages_decrypt_again() {
        let dir = tempfile::tempdir().unwrap();
        let (bob, messages) = bob_with_three_messages(&dir);
        let failed: Result<(), MlsError> = bob.batch(|| {
            for message in &messages {
                assert!(decrypts(&bob, message));
            }
            Err(MlsError::storage("test", "the batch fails after its work"))
        });
        assert!(failed.is_err());
        assert!(bob.state_db().lock().is_autocommit(), "no transaction left open");
        for message in &messages {
            assert!(decrypts(&bob, message), "the keys the failed batch used are still there");
        }
    }

    #[test]
    fn a_committed_batch_is_durable_and_used_keys_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (bob, messages) = bob_with_three_messages(&dir);
        bob.batch(|| {
            for message in &messages {
                assert!(decrypts(&bob, message));
            }
            Ok::<_, MlsError>(())
        })
        .unwrap();
        // Another handle on the same database (as another process) sees it.
        let again = MlsClient::open(
            &dir.path().join("bob.db"),
            Identity::from_bytes(&bob.identity().to_bytes()).unwrap(),
            "bob",
        )
        .unwrap();
        for message in &messages {
            assert!(!decrypts(&again, message), "a message's key is used once");
        }
    }

    #[test]
    fn a_batch_whose_transaction_ended_under_it_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (bob, messages) = bob_with_three_messages(&dir);
        let failed: Result<(), MlsError> = bob.batch(|| {
            assert!(decrypts(&bob, &messages[0]));
            // As SQLite does after a full disk: the transaction is gone.
            bob.state_db().lock().execute_batch("ROLLBACK").unwrap();
            assert!(bob.check_batch().is_err());
            Ok(())
        });
        assert!(failed.is_err(), "the batch reports it");
        assert!(decrypts(&bob, &messages[0]), "and the message decrypts again");
    }
}
