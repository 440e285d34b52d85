//! Whole queue entries through the SDK (security review F9): bob's client
//! processes each input as `recv` processes what `Fetch` or a push brings —
//! a Welcome, a commit, a proposal or an application message, with a group
//! id, name, kind and sender the server supplies. The first byte may put a
//! real Welcome, commit, application message or removal of a group alice
//! made (once, at start-up) into the entry, patched from an offset, and its
//! group id, so the fuzzer reaches past decoding into joining, the join
//! check, decryption, merging and fork detection. Every input must end in a
//! value or a typed error, never a panic.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quicprochat_core::{Identity, MlsClient};
use quicprochat_proto::v1;
use quicprochat_sdk::fuzzing::EntryProcessor;

struct World {
    bob: Mutex<EntryProcessor>,
    group_id: Vec<u8>,
    /// Welcome, the add commit, an application message, a removal.
    real: [Vec<u8>; 4],
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qpc-fuzz-entries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let alice = MlsClient::open(&dir.join("alice.db"), Identity::generate().expect("key"), "alice").expect("mls");
        let bob_dir = dir.join("bob");
        std::fs::create_dir_all(&bob_dir).expect("bob's dir");
        let bob = EntryProcessor::open(&bob_dir, Identity::generate().expect("key"), "bob").expect("bob");
        let group_id = vec![0x42u8; 16];
        alice.create_group(&group_id).expect("group");
        let added = alice.add_members(&group_id, &[bob.key_package().expect("kp")]).expect("add");
        alice.merge_pending_commit(&group_id).expect("merge");
        let message = alice.encrypt(&group_id, br#"{"v":1,"id":"00","text":"hi","sent_at":1}"#).expect("encrypt");
        let removal = alice.remove_members(&group_id, &["bob".to_owned()]).expect("commit");
        alice.clear_pending_commit(&group_id).expect("clear");
        let real = [added.welcome.expect("welcome"), added.commit, message, removal.commit];
        World { bob: Mutex::new(bob), group_id, real }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let world = world();
    // The rest is the entry itself (a Protobuf QueueEntry) or, when it does
    // not decode, the payload of an otherwise empty entry.
    let mut entry = v1::QueueEntry::decode(rest)
        .unwrap_or_else(|_| v1::QueueEntry { payload: rest.to_vec().into(), ..v1::QueueEntry::default() });
    let template = usize::from(selector & 0x07);
    if let Some(real) = world.real.get(template.wrapping_sub(1)) {
        let mut payload = real.clone();
        let start = usize::from(selector >> 3) * payload.len() / 32;
        for (byte, new) in payload.iter_mut().skip(start).zip(entry.payload.iter()) {
            *byte = *new;
        }
        if entry.payload.is_empty() || selector & 0x80 != 0 {
            payload = real.clone();
        }
        entry.payload = payload.into();
        entry.group_id = world.group_id.clone().into();
        entry.kind = match template {
            1 => v1::EntryKind::Welcome,
            3 => v1::EntryKind::Application,
            _ => v1::EntryKind::Commit,
        } as i32;
    }
    let Ok(mut bob) = world.bob.lock() else {
        return;
    };
    let _ = bob.process(&entry.encode_to_vec());
});
