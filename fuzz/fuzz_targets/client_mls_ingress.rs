//! What a member's client does with bytes from the Delivery Service: bob is
//! in a real group with alice (made once at start-up) and processes the
//! input with `MlsClient::process_incoming`. The first byte may instead
//! splice the input into a real application message or commit from alice
//! (overwriting from an offset), so the fuzzer reaches past the TLS
//! decoding into framing, decryption and commit processing. Every input
//! must end in a value or a typed error, never a panic.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use quicprochat_core::{Identity, MlsClient};

struct World {
    bob: Mutex<MlsClient>,
    group_id: Vec<u8>,
    message: Vec<u8>,
    commit: Vec<u8>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qpc-fuzz-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let alice = MlsClient::open(&dir.join("alice.db"), Identity::generate().expect("key"), "alice").expect("mls");
        let bob = MlsClient::open(&dir.join("bob.db"), Identity::generate().expect("key"), "bob").expect("mls");
        let group_id = vec![9u8; 16];
        alice.create_group(&group_id).expect("group");
        let key_package = bob.generate_key_packages(1).expect("kp").remove(0);
        let added = alice.add_members(&group_id, &[key_package]).expect("add");
        alice.merge_pending_commit(&group_id).expect("merge");
        bob.join_from_welcome(&added.welcome.expect("welcome")).expect("join");
        // Many messages: bob never sees most of them, so each stays decryptable.
        let message = alice.encrypt(&group_id, b"hello bob").expect("encrypt");
        let removal = alice.remove_members(&group_id, &["bob".to_owned()]).expect("commit");
        alice.clear_pending_commit(&group_id).expect("clear");
        World { bob: Mutex::new(bob), group_id, message, commit: removal.commit }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let world = world();
    let input = match selector % 3 {
        0 => rest.to_vec(),
        choice => {
            let mut base = if choice == 1 { world.message.clone() } else { world.commit.clone() };
            let Some((&offset, patch)) = rest.split_first() else {
                return;
            };
            let start = usize::from(offset) * base.len() / 256;
            for (byte, new) in base.iter_mut().skip(start).zip(patch) {
                *byte = *new;
            }
            base
        }
    };
    let bob = world.bob.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let _ = bob.process_incoming(&world.group_id, &input);
});
