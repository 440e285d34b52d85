//! Catalogue: push subscriptions as a flood (security review F2). A
//! connection holds at most one push task, an account a few; thousands of
//! `Subscribe` calls, on one connection or many, with a full queue and no
//! push stream ever read, leave the server's memory flat.

use std::net::SocketAddr;

use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::RpcClient;

use super::{Bench, Connection, Outcome};
use crate::harness::{group_of_two, http_get, sample, TestServer, WAIT};

/// Subscribe calls of the one-connection flood.
const SUBSCRIBES: usize = 2000;
/// Connections of one account in the many-connection flood.
const CONNECTIONS: usize = 20;
/// Payload of each queued message: 16 of them fill a push batch (4 MiB).
const MESSAGE_BYTES: usize = 256 * 1024;

/// The process's resident memory in bytes (server and client share it).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// `qpc_push_subscriptions` on the metrics endpoint.
async fn push_tasks(metrics: SocketAddr) -> f64 {
    let (_, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.expect("scrape");
    sample(&body, "qpc_push_subscriptions")
}

/// Waits until at most `bound` push tasks run; returns how many do.
async fn push_tasks_settle_at_most(metrics: SocketAddr, bound: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        let running = push_tasks(metrics).await;
        if running <= bound || tokio::time::Instant::now() >= deadline {
            return running;
        }
        poll.tick().await;
    }
}

async fn subscribe(rpc: &RpcClient) -> Outcome {
    Outcome::of(rpc.call::<_, v1::SubscribeResponse>(Method::Subscribe, &v1::SubscribeRequest { after_seq: 0 }).await)
}

#[tokio::test]
async fn subscriptions_catalogue() {
    let mut bench =
        Bench::start_with(|config| config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let metrics = bench.harness.server.metrics_addr().expect("metrics enabled");
    let group_id = vec![3u8; 16];
    let state_dir = bench.harness.dir().join("mls");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let pair = group_of_two(&bench.harness, &state_dir, &group_id).await;
    // Fill bob's queue: every push task of his would hold a 4 MiB batch.
    for index in 0..16u8 {
        let ciphertext = pair.alice_mls.encrypt(&group_id, &vec![index; MESSAGE_BYTES]).expect("encrypt");
        let request = v1::SendMessageRequest {
            group_id: group_id.clone().into(),
            message_id: vec![index; 16].into(),
            ciphertext: ciphertext.into(),
        };
        let _: v1::SendMessageResponse = pair.alice_rpc.call(Method::SendMessage, &request).await.expect("send");
    }
    let attacker = pair.bob_rpc.clone();
    let before = resident_bytes();

    let outcome = async {
        for _ in 1..SUBSCRIBES {
            let outcome = subscribe(&attacker).await;
            if outcome != Outcome::Served {
                return outcome;
            }
        }
        subscribe(&attacker).await
    };
    let name = format!("{SUBSCRIBES} Subscribes on one connection, push streams never read");
    bench.case(&name, &attacker, Outcome::Served, Connection::Survives, outcome).await;
    assert_eq!(push_tasks_settle_at_most(metrics, 1.0).await, 1.0, "one push task for the connection");

    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(bench.harness.login("bob", &pair.bob).await);
    }
    let outcome = async {
        for connection in &connections {
            let outcome = subscribe(connection).await;
            if outcome != Outcome::Served {
                return outcome;
            }
        }
        Outcome::Served
    };
    let name = format!("one account subscribing on {CONNECTIONS} connections");
    bench.case(&name, &attacker, Outcome::Served, Connection::Survives, outcome).await;
    // Eight subscriptions, plus the first connection's last task, which
    // waits (holding nothing) for stream credit its client never gives.
    let cap = 8.0 + 1.0;
    let running = push_tasks_settle_at_most(metrics, cap).await;
    assert!(running <= cap, "at most {cap} push tasks for the account, {running} run");

    // Old behaviour: about 100 tasks (the client's stream credit) each
    // holding a 4 MiB batch and its encoded copy, near 1 GiB.
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 256 * 1024 * 1024, "memory grew by {} MiB", grown / (1024 * 1024));
    assert_eq!(bench.cases(), 2);
}
