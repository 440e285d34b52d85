//! Domain tests: group creation, commits (ordering, fan-out, welcomes) and leaving.

use super::{
    add, alice_bob_carol, assert_status, commit_request, drain, finish, gid, inbox, kinds, new_group, store, user, NOW,
};
use super::{leave, policy, submit};
use crate::domain::commits::{submit_commit, LeaveGroup, SubmitCommit, MAX_ENTRY_PAYLOAD_LEN};
use crate::domain::devices::Caller;
use crate::domain::groups::{create_group, members, CreateGroup};
use crate::domain::messages::{send_message, SendMessage};
use crate::domain::views::ViewCache;
use crate::storage::{EntryKind, GroupKind, Store};

#[test]
fn create_group_checks_id_name_and_creator() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let group_id = gid(1);
    let bootstrap = alice.client.create_group(&group_id).unwrap();
    let request = |group_id: &'static [u8], name: &'static str| CreateGroup {
        group_id,
        name,
        kind: GroupKind::Named,
        group_info: &[],
        ratchet_tree: &[],
        home: None,
    };
    let mut good = request(&[1; 16], "friends");
    good.group_info = &bootstrap.group_info;
    good.ratchet_tree = &bootstrap.ratchet_tree;

    assert_status(
        create_group(&store, Caller::first_device("alice"), &request(&[1; 15], "x"), NOW),
        "INVALID_ARGUMENT",
        "16 bytes",
    );
    assert_status(
        create_group(&store, Caller::first_device("alice"), &CreateGroup { name: "", ..good }, NOW),
        "INVALID_ARGUMENT",
        "1 to 64",
    );
    let long = "n".repeat(65);
    assert_status(
        create_group(&store, Caller::first_device("alice"), &CreateGroup { name: &long, ..good }, NOW),
        "INVALID_ARGUMENT",
        "1 to 64",
    );
    assert_status(
        create_group(&store, Caller::first_device("alice"), &CreateGroup { name: "a\nb", ..good }, NOW),
        "INVALID_ARGUMENT",
        "control",
    );
    assert_status(
        create_group(&store, Caller::first_device("alice"), &CreateGroup { group_id: &[2; 16], ..good }, NOW),
        "INVALID_ARGUMENT",
        "another group id",
    );
    assert_status(
        create_group(&store, Caller::first_device("alice"), &CreateGroup { group_info: b"junk", ..good }, NOW),
        "INVALID_ARGUMENT",
        "group info",
    );
    assert_status(
        create_group(&store, Caller::first_device("bob"), &good, NOW),
        "INVALID_ARGUMENT",
        "exactly one member",
    );

    assert_eq!(create_group(&store, Caller::first_device("alice"), &good, NOW).unwrap(), 0);
    assert_eq!(create_group(&store, Caller::first_device("alice"), &good, NOW).unwrap(), 0, "creator retry");
    let bob_bootstrap = bob.client.create_group(&group_id).unwrap();
    let taken =
        CreateGroup { group_info: &bob_bootstrap.group_info, ratchet_tree: &bob_bootstrap.ratchet_tree, ..good };
    assert_status(create_group(&store, Caller::first_device("bob"), &taken, NOW), "ALREADY_EXISTS", "already exists");

    let roster = members(&store, Caller::first_device("alice"), &group_id).unwrap();
    assert_eq!((roster.name.as_str(), roster.epoch, roster.members), ("friends", 0, vec!["alice".to_owned()]));
    assert_status(members(&store, Caller::first_device("bob"), &group_id), "PERMISSION_DENIED", "only members");
    assert_status(members(&store, Caller::first_device("bob"), &gid(9)), "NOT_FOUND", "no group");
}

/// Review F1, defence in depth: a direct group is named for its two
/// accounts, one of them its creator, and takes nobody else.
#[test]
fn a_direct_group_names_its_two_accounts_and_takes_nobody_else() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let mallory = user(&store, "mallory");
    let group_id = gid(1);
    let bootstrap = mallory.client.create_group(&group_id).unwrap();
    let request = |name| CreateGroup {
        group_id: &group_id,
        name,
        kind: GroupKind::Direct,
        group_info: &bootstrap.group_info,
        ratchet_tree: &bootstrap.ratchet_tree,
        home: None,
    };
    for forged in ["dm:alice:", "dm:alice:bob", "dm:mallory:bob", "dm:bob:mallory:x", "dm::mallory", "mallory"] {
        assert_status(
            create_group(&store, Caller::first_device("mallory"), &request(forged), NOW),
            "INVALID_ARGUMENT",
            "dm:<a>:<b>",
        );
    }
    assert_eq!(create_group(&store, Caller::first_device("mallory"), &request("dm:alice:mallory"), NOW).unwrap(), 0);
    assert_status(add(&store, &mallory, &group_id, &[&bob], b"add-bob"), "PERMISSION_DENIED", "not one of the two");
    assert_eq!(add(&store, &mallory, &group_id, &[&alice], b"add-alice").unwrap(), 1);
}

/// Review F4: an Add whose KeyPackage expires before every member could
/// process it (within the retention) is refused; one that lasts is taken.
#[test]
fn an_add_with_a_key_package_about_to_expire_is_refused() {
    let store = store();
    let alice = user(&store, "alice");
    let erin = user(&store, "erin");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    let day = 24 * 3600;
    let short = erin.client.generate_key_packages_expiring_in(1, 29 * day).unwrap();
    let pending = alice.client.add_members(&group_id, &short).unwrap();
    let request = commit_request(&group_id, &pending, b"add-erin-short");
    assert_status(finish(&alice, &group_id, submit(&store, "alice", &request, NOW)), "INVALID_ARGUMENT", "expires in");
    // One that lasts, served to alice as the server's stock serves it.
    assert_eq!(add(&store, &alice, &group_id, &[&erin], b"add-erin").unwrap(), 1);
}

/// Review F7: an Add must use a key package the committer was served, and
/// uses it up; a package taken from elsewhere (reused, or never fetched)
/// is refused.
#[test]
fn an_add_must_use_a_key_package_served_to_the_committer_once() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let carol = user(&store, "carol");
    let (first, second) = (gid(1), gid(2));
    new_group(&store, &alice, &first);
    new_group(&store, &alice, &second);
    // Never fetched: bob's own package, handed to alice out of band.
    let unserved = bob.client.generate_key_packages(1).unwrap();
    let pending = alice.client.add_members(&first, &unserved).unwrap();
    let request = commit_request(&first, &pending, b"add-bob-unserved");
    assert_status(finish(&alice, &first, submit(&store, "alice", &request, NOW)), "PERMISSION_DENIED", "not served");
    // Served to carol, used by alice.
    let to_carol = super::fetch_one(&store, "carol", "bob", &policy(), &super::unlimited).unwrap().key_package;
    let pending = alice.client.add_members(&first, &[to_carol]).unwrap();
    let request = commit_request(&first, &pending, b"add-bob-carols");
    assert_status(finish(&alice, &first, submit(&store, "alice", &request, NOW)), "PERMISSION_DENIED", "not served");
    // Served to alice: used once, then no more (the same package in a second group).
    let served = super::fetch_one(&store, "alice", "bob", &policy(), &super::unlimited).unwrap().key_package;
    let pending = alice.client.add_members(&first, std::slice::from_ref(&served)).unwrap();
    let request = commit_request(&first, &pending, b"add-bob");
    assert_eq!(finish(&alice, &first, submit(&store, "alice", &request, NOW)).unwrap(), 1);
    let pending = alice.client.add_members(&second, &[served]).unwrap();
    let request = commit_request(&second, &pending, b"add-bob-again");
    assert_status(finish(&alice, &second, submit(&store, "alice", &request, NOW)), "PERMISSION_DENIED", "used already");
    let _ = carol;
}

#[test]
fn add_delivers_welcome_only_to_the_invitee() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let carol = user(&store, "carol");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);

    assert_eq!(add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap(), 1);
    assert_eq!(kinds(&inbox(&store, &bob)), [EntryKind::Welcome, EntryKind::Commit]);
    assert!(inbox(&store, &alice).is_empty(), "the sender gets nothing");
    assert!(inbox(&store, &carol).is_empty(), "outsiders get nothing");
    drain(&store, &bob);
    assert_eq!(bob.client.epoch(&group_id).unwrap(), 1);
    assert_eq!(members(&store, Caller::first_device("bob"), &group_id).unwrap().members, ["alice", "bob"]);

    // Retrying the accepted commit is answered from the idempotency record.
    let retry =
        SubmitCommit { group_id: &group_id, epoch: 0, commit: b"ignored", welcome: None, message_id: b"add-bob" };
    assert_eq!(submit(&store, "alice", &retry, NOW).unwrap(), 1);
    assert!(inbox(&store, &bob).is_empty());
}

#[test]
fn commit_rules_welcome_sender_and_epoch() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let carol = user(&store, "carol");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);

    let package = super::fetch_one(&store, "alice", "bob", &policy(), &super::unlimited).unwrap().key_package;
    let pending = alice.client.add_members(&group_id, &[package]).unwrap();
    let mut request =
        SubmitCommit { group_id: &group_id, epoch: 0, commit: &pending.commit, welcome: None, message_id: b"c1" };
    assert_status(submit(&store, "alice", &request, NOW), "INVALID_ARGUMENT", "no welcome");
    request.welcome = pending.welcome.as_deref();
    assert_status(submit(&store, "carol", &request, NOW), "PERMISSION_DENIED", "not a member");
    assert_status(submit(&store, "alice", &SubmitCommit { epoch: 3, ..request }, NOW), "STALE_EPOCH", "epoch 0");
    assert_status(
        submit(&store, "alice", &SubmitCommit { commit: b"junk", ..request }, NOW),
        "INVALID_ARGUMENT",
        "commit",
    );
    assert_status(
        submit(&store, "alice", &SubmitCommit { message_id: b"", ..request }, NOW),
        "INVALID_ARGUMENT",
        "message_id",
    );
    // A Welcome (opaque to the server) too large to be fetched as one entry:
    // bob's queue would be stuck behind it.
    let oversized = vec![0u8; MAX_ENTRY_PAYLOAD_LEN + 1];
    assert_status(
        submit(&store, "alice", &SubmitCommit { welcome: Some(&oversized), ..request }, NOW),
        "INVALID_ARGUMENT",
        "can be delivered",
    );
    assert!(inbox(&store, &bob).is_empty(), "nothing written by rejected commits");
    assert_eq!(finish(&alice, &group_id, submit(&store, "alice", &request, NOW)).unwrap(), 1);
    let _ = carol;
}

#[test]
fn second_commit_of_an_epoch_is_stale() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let carol = user(&store, "carol");
    let dave = user(&store, "dave");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap();
    drain(&store, &bob);

    // Both commit at epoch 1; alice's arrives first.
    let package = super::fetch_one(&store, "bob", "dave", &policy(), &super::unlimited).unwrap().key_package;
    let bob_pending = bob.client.add_members(&group_id, &[package]).unwrap();
    assert_eq!(add(&store, &alice, &group_id, &[&carol], b"add-carol").unwrap(), 2);
    let request = commit_request(&group_id, &bob_pending, b"add-dave");
    let result = finish(&bob, &group_id, submit(&store, "bob", &request, NOW));
    assert_eq!(result.unwrap_err().current_epoch(), 2);
    assert!(inbox(&store, &dave).is_empty(), "the losing welcome is not delivered");
    assert_eq!(members(&store, Caller::first_device("bob"), &group_id).unwrap().members, ["alice", "bob", "carol"]);

    // Bob catches up and retries successfully.
    drain(&store, &bob);
    assert_eq!(bob.client.epoch(&group_id).unwrap(), 2);
    assert_eq!(add(&store, &bob, &group_id, &[&dave], b"add-dave-2").unwrap(), 3);
}

#[test]
fn leave_flow() {
    let store = store();
    let group_id = gid(1);
    let (alice, bob, carol) = alice_bob_carol(&store, &group_id);

    let late_ciphertext = bob.client.encrypt(&group_id, b"still here?").unwrap();
    let proposal = bob.client.leave_group(&group_id).unwrap();
    let request = LeaveGroup { group_id: &group_id, proposal: &proposal, message_id: b"bye" };
    assert_status(leave(&store, "carol", &request, NOW), "INVALID_ARGUMENT", "own sender");
    leave(&store, "bob", &request, NOW).unwrap();
    leave(&store, "bob", &request, NOW).unwrap();
    assert_eq!(kinds(&inbox(&store, &alice)), [EntryKind::Proposal], "fanned out once");
    assert_eq!(kinds(&inbox(&store, &carol)), [EntryKind::Proposal]);
    assert!(inbox(&store, &bob).is_empty());
    let group = store.get_group(&group_id).unwrap().unwrap();
    assert_eq!(group.leaving, ["bob"]);

    // Bob can no longer post, even with a message encrypted before leaving.
    let late = SendMessage { group_id: &group_id, message_id: b"late", ciphertext: &late_ciphertext };
    assert_status(send_message(&store, Caller::first_device("bob"), &late, NOW), "PERMISSION_DENIED", "leaving");

    // Alice commits the pending removal; the DS validates it by reference.
    drain(&store, &alice);
    let pending = alice.client.commit_pending_proposals(&group_id).unwrap().unwrap();
    let commit = commit_request(&group_id, &pending, b"remove-bob");
    assert_eq!(finish(&alice, &group_id, submit(&store, "alice", &commit, NOW)).unwrap(), 2);
    assert_eq!(members(&store, Caller::first_device("alice"), &group_id).unwrap().members, ["alice", "carol"]);
    assert!(store.get_group(&group_id).unwrap().unwrap().leaving.is_empty());
    assert_eq!(kinds(&inbox(&store, &bob)), [EntryKind::Commit], "the removed member learns it");
    drain(&store, &bob);
    assert!(!bob.client.is_active(&group_id).unwrap());
    drain(&store, &carol);
    assert_eq!(carol.client.epoch(&group_id).unwrap(), 2);
    assert_status(members(&store, Caller::first_device("bob"), &group_id), "PERMISSION_DENIED", "only members");
}

#[test]
fn an_accepted_commit_names_everyone_who_got_an_entry() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let _carol = user(&store, "carol");
    let group_id = gid(3);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap();

    let package = super::fetch_one(&store, "alice", "carol", &policy(), &super::unlimited).unwrap().key_package;
    let pending = alice.client.add_members(&group_id, &[package]).unwrap();
    let request = commit_request(&group_id, &pending, b"add-carol");
    let views = ViewCache::default();
    let accepted = submit_commit(&store, &views, Caller::first_device("alice"), &request, NOW, &policy()).unwrap();
    let mut recipients = accepted.recipients.clone();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients, ["bob", "carol"], "bob gets the commit, carol the Welcome");
    assert!(!accepted.recipients.iter().any(|name| name == "alice"), "not the committer");
    let retry = submit_commit(&store, &views, Caller::first_device("alice"), &request, NOW, &policy()).unwrap();
    assert_eq!((retry.epoch, retry.recipients.len()), (accepted.epoch, 0), "a retry writes nothing");
}
