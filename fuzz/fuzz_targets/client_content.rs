//! `Content::decode` (the decrypted payload from a peer): never panics, and
//! accepted content re-encodes to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quicprochat_sdk::content::Content;

fuzz_target!(|data: &[u8]| {
    let Ok(content) = Content::decode(data) else {
        return;
    };
    let again = Content::decode(&content.encode()).expect("re-encoded content decodes");
    assert_eq!(again, content);
});
