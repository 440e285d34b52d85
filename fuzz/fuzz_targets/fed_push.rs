//! A peer's `FedPush` body, decoded as the federation port does (entries and
//! recipients counted on the wire first) and applied to an in-memory store
//! holding alice, as a batch of peer `b.example`'s stream. Never panics; an
//! applied batch leaves the stream's recorded position where the answer
//! says, and a refused one leaves nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quicprochat_server::fuzzing::fed_push;
use quicprochat_server::storage::{MemoryStore, Store};

const NOW: u64 = 1_800_000_000_000;
const PEER: &str = "b.example";

fuzz_target!(|data: &[u8]| {
    let store = MemoryStore::new();
    store.create_account("alice", &[7; 32], 1).expect("account");
    match fed_push(&store, PEER, data, NOW) {
        Ok(applied_through) => {
            let recorded = store.fed_streams().expect("streams").into_iter().find(|stream| stream.peer == PEER);
            assert_eq!(recorded.map_or(0, |stream| stream.in_applied), applied_through);
        }
        Err(_) => {
            assert!(store.fed_streams().expect("streams").is_empty(), "a refused batch writes nothing");
            assert_eq!(store.queue_depth("alice").expect("depth"), 0);
        }
    }
});
