//! Domain tests: registration policy (`open`, `invite`, `closed`) and every
//! invite outcome (single use, N uses, expiry, unknown).

use std::time::Duration;

use quicprochat_core::identity::{AuthPurpose, Identity};

use super::{assert_status, sign, store, EXPORTER, NONCE, NOW};
use crate::config::RegistrationPolicy;
use crate::domain::accounts::{register, AuthProof, Registration, INVITE_REQUIRED, REGISTRATION_CLOSED};
use crate::domain::invites::{self, NewInvite};
use crate::domain::DomainError;
use crate::storage::{InviteUse, Store};

use RegistrationPolicy::{Closed, Invite, Open};

/// Registers `name` with a fresh identity under `policy` with `token`, at `now`.
fn join(
    store: &dyn Store,
    policy: RegistrationPolicy,
    name: &str,
    token: Option<&str>,
    now: u64,
) -> Result<(), DomainError> {
    let identity = Identity::generate().unwrap();
    let signature = sign(&identity, AuthPurpose::Register, name, EXPORTER);
    let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
    let request = Registration { username: name, identity_key: identity.public_key(), proof, invite_token: token };
    register(store, policy, &request, now).map(|account| assert_eq!(account.username, name))
}

fn invite(store: &dyn Store, uses: u32, expires_in: Option<Duration>) -> String {
    invites::create(store, NewInvite { uses, expires_in }, &mut rand::rng(), NOW).unwrap().token
}

fn exists(store: &dyn Store, name: &str) -> bool {
    store.get_account(name).unwrap().is_some()
}

#[test]
fn open_policy_needs_no_token_and_ignores_one() {
    let store = store();
    join(&store, Open, "alice", None, NOW).unwrap();
    let token = invite(&store, 1, None);
    join(&store, Open, "bob", Some(&token), NOW).unwrap();
    join(&store, Open, "carol", Some("not-a-token"), NOW).unwrap();
    assert_eq!(store.consume_invite(&token, NOW).unwrap(), InviteUse::Consumed { remaining: 0 }, "not consumed");
}

#[test]
fn closed_policy_refuses_everyone() {
    let store = store();
    let token = invite(&store, 1, None);
    assert_status(join(&store, Closed, "alice", None, NOW), "PERMISSION_DENIED", REGISTRATION_CLOSED);
    assert_status(join(&store, Closed, "alice", Some(&token), NOW), "PERMISSION_DENIED", "closed");
    assert!(!exists(&store, "alice"));
}

#[test]
fn invite_policy_requires_a_token() {
    let store = store();
    assert_status(join(&store, Invite, "alice", None, NOW), "PERMISSION_DENIED", INVITE_REQUIRED);
    assert_status(join(&store, Invite, "alice", Some(""), NOW), "PERMISSION_DENIED", "needs an invite token");
    assert_status(join(&store, Invite, "alice", Some("nope"), NOW), "PERMISSION_DENIED", "not valid");
    let long = "x".repeat(invites::MAX_TOKEN_LEN + 1);
    assert_status(join(&store, Invite, "alice", Some(&long), NOW), "INVALID_ARGUMENT", "at most 128");
    assert!(!exists(&store, "alice"));
}

#[test]
fn single_use_invite() {
    let store = store();
    let token = invite(&store, 1, None);
    join(&store, Invite, "alice", Some(&token), NOW).unwrap();
    assert!(exists(&store, "alice"));
    assert_status(join(&store, Invite, "bob", Some(&token), NOW), "PERMISSION_DENIED", "used up");
    assert!(!exists(&store, "bob"));
}

#[test]
fn invite_with_n_uses() {
    let store = store();
    let token = invite(&store, 3, None);
    for name in ["alice", "bob", "carol"] {
        join(&store, Invite, name, Some(&token), NOW).unwrap();
    }
    assert_status(join(&store, Invite, "dave", Some(&token), NOW), "PERMISSION_DENIED", "used up");
    assert_eq!(store.list_accounts().unwrap().len(), 3);
}

#[test]
fn expired_invite() {
    let store = store();
    let token = invite(&store, 5, Some(Duration::from_secs(60)));
    join(&store, Invite, "alice", Some(&token), NOW + 59_999).unwrap();
    assert_status(join(&store, Invite, "bob", Some(&token), NOW + 60_000), "PERMISSION_DENIED", "expired");
    assert!(!exists(&store, "bob"));
}

#[test]
fn refused_registration_spends_no_use() {
    let store = store();
    let token = invite(&store, 1, None);
    join(&store, Open, "alice", None, NOW).unwrap();
    // Name taken, bad name, bad signature: the invite keeps its use.
    assert_status(join(&store, Invite, "alice", Some(&token), NOW), "ALREADY_EXISTS", "taken");
    assert_status(join(&store, Invite, "Bob", Some(&token), NOW), "INVALID_ARGUMENT", "lowercase");
    let identity = Identity::generate().unwrap();
    let signature = sign(&identity, AuthPurpose::Register, "someone-else", EXPORTER);
    let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
    let request =
        Registration { username: "bob", identity_key: identity.public_key(), proof, invite_token: Some(&token) };
    assert_status(register(&store, Invite, &request, NOW), "UNAUTHENTICATED", "signature");

    join(&store, Invite, "bob", Some(&token), NOW).unwrap();
}
