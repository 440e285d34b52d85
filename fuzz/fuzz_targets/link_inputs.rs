//! What linking reads from users and the server: link codes as typed
//! (`LinkCode::parse`), relayed requests (`LinkCode::check`), and sealed
//! bundles (`open_bundle`), both as raw bytes and as any plaintext sealed
//! properly, so the parser behind the AEAD is reached. Never panics; a
//! parsed code re-encodes to the trimmed text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quicprochat_core::link::{open_bundle, seal_plaintext_for_fuzzing, LinkCode, LinkKeyPair, LinkRequest};

fn fixture() -> &'static (LinkCode, LinkKeyPair) {
    static FIXTURE: OnceLock<(LinkCode, LinkKeyPair)> = OnceLock::new();
    FIXTURE.get_or_init(|| (LinkCode::generate(), LinkKeyPair::generate().expect("link key pair")))
}

fuzz_target!(|input: (u8, &[u8])| {
    let (selector, bytes) = input;
    let (code, keys) = fixture();
    match selector % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(bytes) else { return };
            if let Ok(parsed) = LinkCode::parse(text) {
                assert_eq!(parsed.encode(), text.trim());
            }
        }
        1 => {
            let (mac, rest) = bytes.split_at(bytes.len().min(32));
            let (device_key, rest) = rest.split_at(rest.len().min(32));
            let request = LinkRequest {
                device_key: device_key.to_vec(),
                link_key: keys.public_key().to_vec(),
                label: String::from_utf8_lossy(rest).into_owned(),
            };
            assert!(code.check(&request, mac).is_err(), "a MAC the fuzzer made up never verifies");
        }
        2 => {
            let _ = open_bundle(code, keys, &[7; 32], bytes);
        }
        _ => {
            let sealed = seal_plaintext_for_fuzzing(code, keys.public_key(), bytes).expect("seal");
            let _ = open_bundle(code, keys, &[7; 32], &sealed);
        }
    }
});
