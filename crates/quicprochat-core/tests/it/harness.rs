//! Shared setup: clients with temporary databases, a group bootstrap and membership checks.

use quicprochat_core::{Ciphersuite, DsGroupView, Identity, Incoming, MlsClient};

/// One test user: an MLS client and the directory holding its database.
pub(crate) struct Party {
    pub(crate) client: MlsClient,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) identity_bytes: Vec<u8>,
}

impl Party {
    pub(crate) fn new(name: &str, ciphersuite: Ciphersuite) -> Party {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate().unwrap();
        let identity_bytes = identity.to_bytes();
        let client = MlsClient::open_with_ciphersuite(&dir.path().join("mls.db"), identity, name, ciphersuite).unwrap();
        Party { client, dir, identity_bytes }
    }
}

impl std::ops::Deref for Party {
    type Target = MlsClient;
    fn deref(&self) -> &MlsClient {
        &self.client
    }
}

pub(crate) const GROUP: [u8; 16] = *b"0123456789abcdef";

/// Alice creates GROUP and adds every other party in one commit accepted by the DS.
pub(crate) fn group_of(creator: &Party, others: &[&Party]) -> DsGroupView {
    let bootstrap = creator.create_group(&GROUP).unwrap();
    let mut ds = DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree).unwrap();
    let packages: Vec<Vec<u8>> = others.iter().map(|p| p.generate_key_packages(1).unwrap().remove(0)).collect();
    let pending = creator.add_members(&GROUP, &packages).unwrap();
    ds.process_commit(&pending.commit).unwrap();
    creator.merge_pending_commit(&GROUP).unwrap();
    let welcome = pending.welcome.unwrap();
    for other in others {
        assert_eq!(other.join_from_welcome(&welcome).unwrap(), GROUP.to_vec());
    }
    ds
}

/// Every party and the DS agree on the roster and the epoch.
pub(crate) fn assert_roster(ds: &DsGroupView, parties: &[&Party], expected: &[&str]) {
    let ds_names: Vec<String> = ds.members().into_iter().map(|m| m.username).collect();
    assert_eq!(ds_names, expected);
    for party in parties {
        assert_eq!(party.members(&GROUP).unwrap(), expected, "{}", party.username());
        assert_eq!(party.epoch(&GROUP).unwrap(), ds.epoch(), "{}", party.username());
    }
}

/// `to` decrypts a message `from` sends.
pub(crate) fn assert_delivers(from: &Party, to: &Party, text: &[u8]) {
    let message = from.encrypt(&GROUP, text).unwrap();
    match to.process_incoming(&GROUP, &message).unwrap() {
        Incoming::Application { sender, plaintext, .. } => {
            assert_eq!(sender, from.username());
            assert_eq!(plaintext, text);
        }
        other => panic!("expected an application message, got {other:?}"),
    }
}

/// `party` processes a commit by `sender` and lands at `epoch`.
pub(crate) fn assert_merges(party: &Party, commit: &[u8], sender: &str, epoch: u64, removed_self: bool) {
    assert_eq!(
        party.process_incoming(&GROUP, commit).unwrap(),
        Incoming::CommitMerged { sender: sender.to_owned(), new_epoch: epoch, removed_self },
        "{}",
        party.username()
    );
}
