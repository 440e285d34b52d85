//! Names across servers (issue 19): clients of two home domains in a group
//! hosted by one of them. Each reads the names of its own domain bare and
//! every other as `name@domain`, whether a leaf carries a qualified name or
//! a bare one (a leaf made before its server federated), and a linked
//! device keeps the certificate made for its bare name.

use quicprochat_core::device::certify_device;
use quicprochat_core::names::group_id_hosted_by;
use quicprochat_core::{DsGroupView, Identity, Incoming, MemberCredential, MlsClient, DEFAULT_CIPHERSUITE};

use crate::harness::Party;

/// A client of `name` whose home server is `domain`.
fn federated(name: &str, domain: &str) -> Party {
    let party = Party::new(name, DEFAULT_CIPHERSUITE);
    let Party { client, dir, identity_bytes } = party;
    Party { client: client.with_home_domain(domain).unwrap(), dir, identity_bytes }
}

fn sender_of(incoming: Incoming) -> String {
    match incoming {
        Incoming::Application { sender, .. } | Incoming::CommitMerged { sender, .. } => sender,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn each_client_reads_its_own_domain_bare_and_others_qualified() {
    let alice = federated("alice", "a.example");
    let bob = federated("bob", "b.example");
    // A user of a.example whose client does not know its domain: bare leaf.
    let carol = Party::new("carol", DEFAULT_CIPHERSUITE);
    let group = group_id_hosted_by([7; 16], "a.example");

    let bootstrap = alice.create_group(&group).unwrap();
    let mut ds = DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree).unwrap();
    let packages =
        vec![bob.generate_key_packages(1).unwrap().remove(0), carol.generate_key_packages(1).unwrap().remove(0)];
    let pending = alice.add_members(&group, &packages).unwrap();
    ds.process_commit(&pending.commit).unwrap();
    alice.merge_pending_commit(&group).unwrap();
    let welcome = pending.welcome.unwrap();
    bob.join_from_welcome(&welcome).unwrap();
    carol.join_from_welcome(&welcome).unwrap();

    assert_eq!(alice.members(&group).unwrap(), ["alice", "bob@b.example", "carol"]);
    assert_eq!(bob.members(&group).unwrap(), ["alice@a.example", "bob", "carol@a.example"]);
    // Carol knows no domain: names read as the credentials carry them.
    assert_eq!(carol.members(&group).unwrap(), ["alice@a.example", "bob@b.example", "carol"]);
    // The DS runs on a.example, the hub: it reads names as a.example does.
    let ds_names: Vec<String> = ds.members().into_iter().map(|member| member.username).collect();
    assert_eq!(ds_names, ["alice", "bob@b.example", "carol"]);

    let from_bob = bob.encrypt(&group, b"hi from b").unwrap();
    assert_eq!(sender_of(alice.process_incoming(&group, &from_bob).unwrap()), "bob@b.example");
    let from_alice = alice.encrypt(&group, b"hi from a").unwrap();
    assert_eq!(sender_of(bob.process_incoming(&group, &from_alice).unwrap()), "alice@a.example");
    let from_carol = carol.encrypt(&group, b"hi").unwrap();
    assert_eq!(sender_of(bob.process_incoming(&group, &from_carol).unwrap()), "carol@a.example");
    assert_eq!(sender_of(alice.process_incoming(&group, &from_carol).unwrap()), "carol");

    // Names as each reads them address members: bob removes carol.
    let removal = bob.remove_members(&group, &["carol@a.example".to_owned()]).unwrap();
    ds.process_commit(&removal.commit).unwrap();
    bob.merge_pending_commit(&group).unwrap();
    assert_eq!(sender_of(alice.process_incoming(&group, &removal.commit).unwrap()), "bob@b.example");
    assert_eq!(alice.members(&group).unwrap(), ["alice", "bob@b.example"]);
    assert_eq!(alice.devices_of(&group, "bob@b.example").unwrap(), [bob.device_id()]);
    assert!(alice.member_account_key(&group, "bob@b.example").unwrap().is_some());
}

#[test]
fn a_linked_device_keeps_its_certificate_when_its_name_is_qualified() {
    let account = Identity::generate().unwrap();
    let device = Identity::generate().unwrap();
    // Certified before the server federated, for the bare name.
    let certificate = certify_device(&account, "alice", device.public_key()).unwrap();
    let credential = MemberCredential::linked("alice", account.public_key(), &certificate);
    let dir = tempfile::tempdir().unwrap();
    let linked = MlsClient::open(&dir.path().join("mls.db"), device, "alice")
        .unwrap()
        .as_linked_device(credential)
        .unwrap()
        .with_home_domain("a.example")
        .unwrap();
    let bob = federated("bob", "b.example");
    let group = group_id_hosted_by([8; 16], "b.example");
    let bootstrap = bob.create_group(&group).unwrap();
    let mut ds = DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree).unwrap();
    let package = linked.generate_key_packages(1).unwrap().remove(0);
    let pending = bob.add_members(&group, &[package]).unwrap();
    ds.process_commit(&pending.commit).unwrap();
    bob.merge_pending_commit(&group).unwrap();
    linked.join_from_welcome(&pending.welcome.unwrap()).unwrap();

    let devices = bob.member_devices(&group).unwrap();
    let alice = devices.iter().find(|leaf| leaf.member.username == "alice@a.example").expect("alice's device");
    assert_eq!(alice.member.account_key, account.public_key(), "certified by alice's account key");
    assert_eq!(linked.members(&group).unwrap(), ["alice", "bob@b.example"]);
    assert!(MlsClient::open(&dir.path().join("other.db"), Identity::generate().unwrap(), "alice")
        .unwrap()
        .with_home_domain("Not A Domain")
        .is_err());
}
