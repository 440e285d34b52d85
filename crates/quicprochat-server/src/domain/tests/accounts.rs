//! Domain tests: registration, login and username rules.

use crate::domain::devices::Caller;
use quicprochat_core::identity::{AuthPurpose, Identity};

use super::{assert_status, register_open, sign, store, EXPORTER, NONCE, NOW};
use crate::domain::accounts::{login, resolve_user, validate_username, AuthProof};
use crate::storage::Store;

/// `expected`: `Ok(())`, or `Err(fragment)` of the error message.
#[track_caller]
fn check(input: &str, expected: Result<(), &str>) {
    match (validate_username(input), expected) {
        (Ok(()), Ok(())) => {}
        (Err(error), Err(fragment)) => {
            assert_eq!(error.status_name(), "INVALID_ARGUMENT");
            assert!(error.to_string().contains(fragment), "{input:?}: {error} does not mention {fragment:?}");
        }
        (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn username_rules() {
    check("alice", Ok(()));
    check("a", Ok(()));
    check("bob.smith-2_x", Ok(()));
    check(&"a".repeat(32), Ok(()));
    check("", Err("1 to 32 characters, got 0"));
    check(&"a".repeat(33), Err("got 33"));
    check("Alice", Err("start with a lowercase letter"));
    check("1alice", Err("start with a lowercase letter"));
    check("_alice", Err("start with a lowercase letter"));
    check(".alice", Err("start with a lowercase letter"));
    check("al ice", Err("found ' '"));
    check("alice!", Err("found '!'"));
    check("aliCe", Err("found 'C'"));
    check("alicé", Err("found 'é'"));
    check("al@ice", Err("found '@'"));
    check("admin", Err("reserved"));
    check("root", Err("reserved"));
    check("server", Err("reserved"));
    check("system", Err("reserved"));
    check("admin2", Ok(()));
}

struct Person {
    identity: Identity,
}

impl Person {
    fn new() -> Self {
        Person { identity: Identity::generate().unwrap() }
    }

    fn register(&self, store: &dyn Store, name: &str) -> Result<(), crate::domain::DomainError> {
        let signature = sign(&self.identity, AuthPurpose::Register, name, EXPORTER);
        let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
        register_open(store, name, self.identity.public_key(), &proof, NOW).map(|_| ())
    }

    fn login_signature(&self, name: &str, purpose: AuthPurpose, exporter: &[u8]) -> Vec<u8> {
        sign(&self.identity, purpose, name, exporter)
    }
}

fn try_login(
    store: &dyn Store,
    name: &str,
    signature: &[u8],
    exporter: &[u8],
) -> Result<(), crate::domain::DomainError> {
    let proof = AuthProof { nonce: NONCE, tls_exporter: exporter, signature };
    login(store, name, &[], &proof, &super::policy()).map(|_| ())
}

#[test]
fn register_then_login() {
    let store = store();
    let alice = Person::new();
    alice.register(&store, "alice").unwrap();
    let account = store.get_account("alice").unwrap().unwrap();
    assert_eq!(account.identity_key, alice.identity.public_key());

    let good = alice.login_signature("alice", AuthPurpose::Login, EXPORTER);
    let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &good };
    let outcome = login(&store, "alice", &[], &proof, &super::policy()).unwrap();
    assert_eq!(outcome.key_package_stock.count, 0);

    let resolved = resolve_user(&store, Caller::first_device("alice"), "alice").unwrap();
    assert_eq!(resolved.identity_key, alice.identity.public_key());
    assert_status(resolve_user(&store, Caller::first_device("alice"), "bob"), "NOT_FOUND", "bob");
}

#[test]
fn login_rejects_wrong_key_purpose_and_exporter_alike() {
    let store = store();
    let alice = Person::new();
    alice.register(&store, "alice").unwrap();
    let mallory = Person::new();

    let cases: Vec<(&str, Vec<u8>, &[u8])> = vec![
        ("wrong key", mallory.login_signature("alice", AuthPurpose::Login, EXPORTER), EXPORTER),
        ("wrong purpose", alice.login_signature("alice", AuthPurpose::Register, EXPORTER), EXPORTER),
        (
            "replayed on another connection",
            alice.login_signature("alice", AuthPurpose::Login, b"other-exporter"),
            EXPORTER,
        ),
        ("garbage", vec![0; 64], EXPORTER),
        ("empty", vec![], EXPORTER),
    ];
    let unknown_user = try_login(&store, "nobody", &cases[0].1, EXPORTER).unwrap_err();
    assert_eq!(unknown_user.status_name(), "UNAUTHENTICATED");
    for (case, signature, exporter) in cases {
        let error = try_login(&store, "alice", &signature, exporter).unwrap_err();
        assert_eq!(error, unknown_user, "{case}: must look like an unknown user");
    }
}

#[test]
fn disabled_account_is_denied_only_with_a_valid_signature() {
    let store = store();
    let alice = Person::new();
    alice.register(&store, "alice").unwrap();
    store.set_account_disabled("alice", true).unwrap();
    let good = alice.login_signature("alice", AuthPurpose::Login, EXPORTER);
    assert_status(try_login(&store, "alice", &good, EXPORTER), "PERMISSION_DENIED", "disabled");
    let bad = Person::new().login_signature("alice", AuthPurpose::Login, EXPORTER);
    assert_status(try_login(&store, "alice", &bad, EXPORTER), "UNAUTHENTICATED", "");
}

#[test]
fn register_checks_name_key_signature_and_uniqueness() {
    let store = store();
    let alice = Person::new();
    assert_status(alice.register(&store, "Alice"), "INVALID_ARGUMENT", "lowercase");
    assert_status(alice.register(&store, "admin"), "INVALID_ARGUMENT", "reserved");

    // A signature for another name or by another key does not register.
    let signature = sign(&alice.identity, AuthPurpose::Register, "alice", EXPORTER);
    let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
    assert_status(
        register_open(&store, "alicia", alice.identity.public_key(), &proof, NOW),
        "UNAUTHENTICATED",
        "signature",
    );
    let other = Identity::generate().unwrap();
    assert_status(register_open(&store, "alice", other.public_key(), &proof, NOW), "UNAUTHENTICATED", "signature");
    let login_signature = sign(&alice.identity, AuthPurpose::Login, "alice", EXPORTER);
    let login_proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &login_signature };
    assert_status(
        register_open(&store, "alice", alice.identity.public_key(), &login_proof, NOW),
        "UNAUTHENTICATED",
        "signature",
    );
    assert_status(register_open(&store, "alice", &[1; 31], &proof, NOW), "INVALID_ARGUMENT", "32 bytes");
    assert!(store.get_account("alice").unwrap().is_none());

    alice.register(&store, "alice").unwrap();
    assert_status(Person::new().register(&store, "alice"), "ALREADY_EXISTS", "taken");
}
