//! What the Delivery Service parses from clients: KeyPackages, application
//! messages, and its own stored group views. The first byte picks the decoder:
//! 0 `validate_key_package`, 1 `inspect_application`, 2 `DsGroupView::from_bytes`
//! on the raw rest, 3 the same with magic and a valid checksum added, so the
//! fuzzer reaches the entry parser and OpenMLS's state loading.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quicprochat_core::ds::{inspect_application, validate_key_package, DsGroupView};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let _ = validate_key_package(rest);
        }
        1 => {
            let _ = inspect_application(rest);
        }
        2 => {
            let _ = DsGroupView::from_bytes(rest);
        }
        _ => {
            let mut blob = b"QPCDSV1\0".to_vec();
            blob.extend_from_slice(rest);
            let digest = Sha256::digest(&blob);
            blob.extend_from_slice(&digest);
            // `from_bytes` contains a known panic of openmls_memory_storage 0.6
            // (it unwraps JSON decoding of stored entries) with catch_unwind;
            // libfuzzer's panic hook would abort before that unwinding, so it is
            // swapped out for this call. A panic that escapes `from_bytes` still
            // reaches libfuzzer's own catch_unwind and counts as a crash.
            let fuzzer_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let restored = DsGroupView::from_bytes(&blob);
            std::panic::set_hook(fuzzer_hook);
            if let Ok(view) = restored {
                // A restored view serialises to a blob that restores again.
                let again = DsGroupView::from_bytes(&view.to_bytes().expect("view serialises")).expect("re-serialised view restores");
                assert_eq!(again.epoch(), view.epoch());
                assert_eq!(again.group_id(), view.group_id());
            }
        }
    }
});
