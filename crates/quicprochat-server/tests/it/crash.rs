//! Crash consistency: `kill -9` of the real `qpc-server` at random points
//! while sends are in flight, then a restart on the same data dir. Every
//! iteration checks that SQLite's `integrity_check` passes, that every send
//! the server acknowledged is in the recipient's queue, and that resending
//! the sends left in doubt (same message ids) stores nothing twice.
//!
//! `QPC_CRASH_ITERATIONS` (default 10) and `QPC_CRASH_SEED` (default: random,
//! printed) control the run; `docs/TESTING.md` has the long-run command.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::RpcClient;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use crate::harness::{
    assert_integrity, group_of_two, queue_in_order, queued_message_ids, GroupOfTwo, TestServer, WAIT,
};
use crate::process::ServerProcess;

const SENDERS: usize = 8;
const SENDS_PER_SENDER: usize = 40;
const GROUP: [u8; 16] = [0xc7; 16];

struct Tally {
    acked: Vec<Vec<u8>>,
    in_doubt: Vec<Vec<u8>>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// Sends its share of `messages` until one fails; records which were acknowledged.
async fn sender(
    rpc: RpcClient,
    messages: Vec<(Vec<u8>, Vec<u8>)>,
    acks: Arc<AtomicUsize>,
    kill_at: usize,
    kill: Arc<Notify>,
) -> Tally {
    let mut tally = Tally { acked: Vec::new(), in_doubt: Vec::new() };
    let mut messages = messages.into_iter();
    for (message_id, ciphertext) in messages.by_ref() {
        let request = v1::SendMessageRequest {
            group_id: GROUP.to_vec().into(),
            message_id: message_id.clone().into(),
            ciphertext: ciphertext.into(),
        };
        match rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await {
            Ok(_) => {
                tally.acked.push(message_id);
                if acks.fetch_add(1, Ordering::SeqCst) + 1 == kill_at {
                    kill.notify_one();
                }
            }
            Err(_) => {
                tally.in_doubt.push(message_id);
                break;
            }
        }
    }
    tally.in_doubt.extend(messages.map(|(message_id, _)| message_id));
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    quicprochat_rpc::install_crypto_provider();
    let iterations: usize = env_or("QPC_CRASH_ITERATIONS", 10);
    let seed: u64 = env_or("QPC_CRASH_SEED", rand::random());
    eprintln!("crash consistency: {iterations} iterations, QPC_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    let server = ServerProcess::start(&data);
    let GroupOfTwo { alice, alice_mls, bob_rpc, bob, .. } = group_of_two(&server, dir.path(), &GROUP).await;
    ack_all(&bob_rpc).await; // the Welcome and the commit: only sends are counted below
    let mut server = Some(server);

    let (mut total_acked, mut total_in_doubt, mut in_doubt_stored) = (0, 0, 0);
    for iteration in 0..iterations {
        let running = server.take().unwrap_or_else(|| ServerProcess::start(&data));
        let rpc = running.login("alice", &alice).await;
        let messages: Vec<(Vec<u8>, Vec<u8>)> = (0..SENDERS * SENDS_PER_SENDER)
            .map(|n| {
                let id = format!("i{iteration}-m{n}").into_bytes();
                (id, alice_mls.encrypt(&GROUP, b"durable?").expect("encrypt"))
            })
            .collect();
        let ciphertexts: HashMap<Vec<u8>, Vec<u8>> = messages.iter().cloned().collect();
        let kill_at = rng.random_range(1..=SENDERS * SENDS_PER_SENDER / 2);
        let (acks, kill) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let mut senders = tokio::task::JoinSet::new();
        for share in messages.chunks(SENDS_PER_SENDER) {
            senders.spawn(sender(rpc.clone(), share.to_vec(), acks.clone(), kill_at, kill.clone()));
        }
        tokio::time::timeout(WAIT, kill.notified()).await.expect("the load reached the kill point");
        running.kill();
        // A killed server sends no close frame; rather than wait out the idle
        // timeout, the client gives up on the connection now.
        rpc.connection().close(quinn::VarInt::from_u32(0), b"server killed");
        let mut tally = Tally { acked: Vec::new(), in_doubt: Vec::new() };
        while let Some(done) = tokio::time::timeout(WAIT, senders.join_next()).await.expect("senders stop") {
            let done = done.expect("sender task");
            tally.acked.extend(done.acked);
            tally.in_doubt.extend(done.in_doubt);
        }
        assert_integrity(&data, "after kill -9");

        let restarted = ServerProcess::start(&data);
        let bob_rpc = restarted.login("bob", &bob).await;
        let queued = queued_message_ids(&bob_rpc).await;
        let lost: Vec<_> = tally.acked.iter().filter(|id| !queued.contains(*id)).collect();
        assert!(lost.is_empty(), "iteration {iteration} (seed {seed}): {} acknowledged sends lost", lost.len());
        in_doubt_stored += tally.in_doubt.iter().filter(|id| queued.contains(*id)).count();

        // The client retries what it was not sure of, with the same ids.
        let alice_rpc = restarted.login("alice", &alice).await;
        for id in &tally.in_doubt {
            let request = v1::SendMessageRequest {
                group_id: GROUP.to_vec().into(),
                message_id: id.clone().into(),
                ciphertext: ciphertexts[id].clone().into(),
            };
            let _: v1::SendMessageResponse = alice_rpc.call(Method::SendMessage, &request).await.expect("retry");
        }
        let entries = queue_in_order(&bob_rpc).await;
        let unique: HashSet<&Vec<u8>> = entries.iter().collect();
        assert_eq!(unique.len(), entries.len(), "iteration {iteration} (seed {seed}): an id queued twice");
        assert_eq!(entries.len(), SENDERS * SENDS_PER_SENDER, "iteration {iteration}: every send queued once");
        ack_all(&bob_rpc).await;

        total_acked += tally.acked.len();
        total_in_doubt += tally.in_doubt.len();
        server = Some(restarted);
    }
    eprintln!(
        "crash consistency: {iterations} kill -9, {total_acked} acknowledged sends, 0 lost; \
         {total_in_doubt} in doubt at the kill, {in_doubt_stored} of them stored anyway; \
         integrity_check ok every time; retries stored nothing twice"
    );
}

async fn ack_all(rpc: &RpcClient) {
    let fetched: v1::FetchResponse =
        rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 1 }).await.expect("fetch");
    let _: v1::AckResponse = rpc.call(Method::Ack, &v1::AckRequest { up_to_seq: fetched.head_seq }).await.expect("ack");
}
