//! A device's MLS credential identity and leaf key (the first 32 bytes are
//! the key, the rest the identity) through `verify_member`, as the server
//! and every client read them from key packages and leaves: never panics,
//! anything parsed re-encodes to the same bytes, and a linked device is
//! accepted only with a certificate that verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quicprochat_core::device::{verify_certificate, MemberCredential, MAX_CREDENTIAL_IDENTITY_LEN};
use quicprochat_core::verify_member;

fuzz_target!(|input: (&[u8], [u8; 32])| {
    let (identity, key) = input;
    let parsed = MemberCredential::parse(identity);
    if let Ok(credential) = &parsed {
        assert!(identity.len() <= MAX_CREDENTIAL_IDENTITY_LEN);
        assert_eq!(credential.to_identity(), identity, "a parsed credential re-encodes to its bytes");
    }
    let Ok(member) = verify_member(identity, &key) else {
        return;
    };
    match parsed {
        Ok(MemberCredential::AccountKeyed { username }) => {
            assert_eq!((member.username, member.account_key), (username, key.to_vec()));
        }
        Ok(MemberCredential::Linked { username, account_key, certificate }) => {
            assert_eq!(member.account_key, account_key);
            assert!(verify_certificate(&account_key, &username, &key, &certificate).is_ok());
        }
        Err(error) => panic!("verify_member accepted what parse refused: {error}"),
    }
});
