//! Measures what the client itself costs (issue 21; docs/design/client_cost.md),
//! on the disk its profiles are on: one `QpcClient` sending N messages to a
//! group one after another (the send rate and each `send`'s latency), a
//! second one catching up on those N after being offline (messages shown
//! per second, each once and in order), and send → shown of single messages
//! between two online clients.
//!
//! ```text
//! cargo build --release --bin qpc-server
//! cargo run --release -p quicprochat-sdk --example client_cost -- target/release/qpc-server 3000 200 [DIR]
//! ```
//! DIR (default: a temporary directory) holds the server's data and the
//! profiles: put it on the disk to measure (a RAM disk shows the CPU alone).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::ensure;
use quicprochat_sdk::{ClientOptions, QpcClient};

#[path = "common/server.rs"]
mod server;
use server::start_server;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn describe(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        samples.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quicprochat_sdk::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let binary = args.next().unwrap_or_else(|| "target/release/qpc-server".into());
    let backlog: usize = args.next().unwrap_or_else(|| "3000".into()).parse()?;
    let singles: usize = args.next().unwrap_or_else(|| "200".into()).parse()?;
    let temp = tempfile::tempdir()?;
    let dir = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => temp,
    };
    // Limits that do not throttle one fast client.
    let limits = [("QPC_RATE_LIMITS_SEND_PER_ACCOUNT_BURST", "1000000")];
    let (mut server, addr) = start_server(Path::new(&binary), &dir.path().join("server"), "127.0.0.1:0", &limits)?;
    let socket = addr.parse()?;
    let options = ClientOptions::default();
    let alice = QpcClient::register(&dir.path().join("alice"), socket, "alice", None, options.clone()).await?;
    let bob_profile = dir.path().join("bob");
    let bob = QpcClient::register(&bob_profile, socket, "bob", None, options.clone()).await?;
    alice.create_group("team").await?;
    alice.add_members("team", &["bob".to_owned()]).await?;
    bob.sync().await?;
    bob.disconnect().await;
    drop(bob);

    // Sending, while the recipient is offline.
    let mut latencies = Vec::with_capacity(backlog);
    let started = Instant::now();
    for index in 0..backlog {
        let sent = Instant::now();
        alice.send("team", &format!("m{index}")).await?;
        latencies.push(sent.elapsed());
    }
    let sending = started.elapsed();
    println!(
        "send: {backlog} messages one after another in {:.2} s: {:.0} msgs/s",
        sending.as_secs_f64(),
        backlog as f64 / sending.as_secs_f64()
    );
    describe("send: each send", latencies);

    // Catching up on them.
    let started = Instant::now();
    let bob = QpcClient::open(&bob_profile, options).await?;
    let mut shown = Vec::with_capacity(backlog);
    while shown.len() < backlog {
        let batch = bob.receive_wait(Duration::from_secs(10)).await?;
        ensure!(!batch.is_empty(), "catch-up stalled after {} messages", shown.len());
        shown.extend(batch.into_iter().map(|message| message.text));
    }
    let catching_up = started.elapsed();
    let expected: Vec<String> = (0..backlog).map(|index| format!("m{index}")).collect();
    ensure!(shown == expected, "the backlog was not shown once and in order");
    println!(
        "catch-up: {backlog} messages shown once and in order in {:.2} s (open included): {:.0} msgs/s",
        catching_up.as_secs_f64(),
        backlog as f64 / catching_up.as_secs_f64()
    );

    // Send → shown, both online, one message at a time.
    let mut latencies = Vec::with_capacity(singles);
    let mut seen = HashSet::new();
    for index in 0..singles {
        let text = format!("s{index}");
        let sent = Instant::now();
        alice.send("team", &text).await?;
        loop {
            let batch = bob.receive_wait(Duration::from_secs(10)).await?;
            ensure!(!batch.is_empty(), "message {text} not shown within 10 s");
            if batch.iter().any(|message| message.text == text) {
                break;
            }
        }
        latencies.push(sent.elapsed());
        ensure!(seen.insert(text), "shown twice");
    }
    describe("send → shown", latencies);
    alice.disconnect().await;
    bob.disconnect().await;
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status()?;
    server.wait()?;
    Ok(())
}
