//! `qpc demo`: an in-process server on a temporary directory and three
//! clients holding a real end-to-end encrypted conversation.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use quicprochat_sdk::{ClientOptions, QpcClient, StoredMessage};
use quicprochat_server::{RunningServer, ServerConfig};
use serde_json::json;

use crate::output::{message_json, message_line};

/// One line of the demo conversation: sender, text, who waits for it.
type ScriptLine<'a> = (&'a Arc<QpcClient>, &'a str, Vec<&'a Arc<QpcClient>>);

const WAIT: Duration = Duration::from_secs(10);

/// Runs the demo; prints what happens (JSON lines with `--json`).
pub(crate) async fn run(json: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server = RunningServer::start(ServerConfig::new(dir.path().join("server"), listen))
        .await
        .context("cannot start the in-process server")?;
    let addr = server.local_addr();
    say(
        json,
        json!({ "event": "server", "addr": addr.to_string(), "fingerprint": server.fingerprint().to_string() }),
        &format!(
            "server  listening on {addr} (QUIC, TLS 1.3, key exchange X25519MLKEM768)\n        data in {}",
            dir.path().display()
        ),
    );
    let mut clients = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let client = QpcClient::register(&dir.path().join(name), addr, name, None, ClientOptions::default())
            .await
            .with_context(|| format!("cannot register {name}"))?;
        clients.push(Arc::new(client));
    }
    say(
        json,
        json!({ "event": "registered", "users": ["alice", "bob", "carol"] }),
        "clients alice, bob, carol registered (Ed25519 identity keys, key packages uploaded)",
    );
    let [alice, bob, carol] = [clients[0].clone(), clients[1].clone(), clients[2].clone()];

    alice.create_group("demo").await?;
    alice.add_members("demo", &["bob".into(), "carol".into()]).await?;
    bob.sync().await?;
    carol.sync().await?;
    say(
        json,
        json!({ "event": "group", "group": "demo", "members": alice.members("demo").await? }),
        &format!(
            "group   demo: {} (MLS ciphersuite MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)",
            alice.members("demo").await?.join(", ")
        ),
    );

    let mut latencies = Vec::new();
    let script: [ScriptLine<'_>; 3] = [
        (&alice, "Hello bob and carol! This is end-to-end encrypted with ML-KEM-768 + X25519.", vec![&bob, &carol]),
        (&bob, "Hi alice, loud and clear.", vec![&alice, &carol]),
        (&carol, "Hello both. The server only ever sees ciphertext.", vec![&alice, &bob]),
    ];
    for (sender, text, receivers) in script {
        latencies.extend(exchange(sender, "demo", text, &receivers, json).await?);
    }
    latencies.extend(
        exchange(&bob, "@carol", "carol, a private word: this one is just between us.", &[&carol], json).await?,
    );

    alice.remove_members("demo", &["carol".into()]).await?;
    say(json, json!({ "event": "removed", "group": "demo", "user": "carol" }), "group   alice removed carol from demo");
    latencies.extend(exchange(&alice, "demo", "carol can no longer read this group.", &[&bob], json).await?);
    let carol_sees = carol.receive_wait(Duration::from_millis(200)).await?;
    say(
        json,
        json!({ "event": "removed_member_received", "messages": carol_sees.len() }),
        &format!(
            "carol   received {} new messages after her removal; her groups: {:?}",
            carol_sees.len(),
            carol.groups().await?.into_iter().map(|group| group.name).collect::<Vec<_>>()
        ),
    );

    let safety = alice.safety_number("bob").await?;
    say(
        json,
        json!({ "event": "safety_number", "users": ["alice", "bob"], "digits": safety.digits }),
        &format!("verify  alice and bob's safety number: {}", safety.digits),
    );

    latencies.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (latencies.first(), latencies.last()) {
        let median = latencies[latencies.len() / 2];
        say(json, json!({ "event": "latency", "deliveries": latencies.len(), "median_ms": median, "min_ms": first, "max_ms": last }), &format!(
            "latency {} deliveries, send → recipient decrypted: median {median:.2} ms, min {first:.2} ms, max {last:.2} ms",
            latencies.len()
        ));
    }
    for client in &clients {
        client.disconnect().await;
    }
    server.shutdown().await;
    say(json, json!({ "event": "done" }), "done    server stopped, temporary data removed");
    Ok(())
}

/// `sender` sends `text` to `target` while `receivers` wait for it; returns
/// each receiver's delivery latency in milliseconds.
async fn exchange(
    sender: &Arc<QpcClient>,
    target: &str,
    text: &str,
    receivers: &[&Arc<QpcClient>],
    json: bool,
) -> anyhow::Result<Vec<f64>> {
    let started = Instant::now();
    let waiting: Vec<_> = receivers
        .iter()
        .map(|receiver| {
            let receiver = Arc::clone(receiver);
            tokio::spawn(async move {
                let messages = receiver.receive_wait(WAIT).await;
                (receiver.username().to_owned(), messages, started.elapsed())
            })
        })
        .collect();
    sender.send(target, text).await?;
    let mut latencies = Vec::new();
    for task in waiting {
        let (name, messages, elapsed) = task.await.context("receiver task failed")?;
        let messages: Vec<StoredMessage> = messages?;
        anyhow::ensure!(!messages.is_empty(), "{name} did not receive the message within {WAIT:?}");
        for message in messages {
            let ms = elapsed.as_secs_f64() * 1000.0;
            latencies.push(ms);
            let mut value = message_json(&message);
            value["to"] = json!(name);
            value["latency_ms"] = json!(ms);
            say(json, value, &format!("{name:<7} {}  ({ms:.2} ms)", message_line(&message)));
        }
    }
    Ok(latencies)
}

fn say(json: bool, value: serde_json::Value, text: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}
