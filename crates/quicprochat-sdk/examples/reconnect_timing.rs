//! Measures how the client side copes with the server going away:
//! time from a server restart until every client is connected again, and
//! time to detect a dead path (the server process frozen with SIGSTOP).
//!
//! ```text
//! cargo build --release --bin qpc-server
//! cargo run --release -p quicprochat-sdk --example reconnect_timing -- target/release/qpc-server 100
//! ```

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use quicprochat_sdk::{ClientOptions, ConnectionStatus, QpcClient};

#[path = "common/server.rs"]
mod server;
use server::start_server;

/// Many registrations come from one address here.
const LIMITS: &[(&str, &str)] =
    &[("QPC_RATE_LIMITS_REGISTER_PER_ADDRESS_BURST", "100000"), ("QPC_CONNECTIONS_PER_ADDRESS", "100000")];

fn signal(child: &Child, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").args([name, &child.id().to_string()]).status()?;
    if !status.success() {
        bail!("kill {name} failed");
    }
    Ok(())
}

async fn wait_all(clients: &[QpcClient], want: impl Fn(&ConnectionStatus) -> bool + Copy) -> anyhow::Result<()> {
    for client in clients {
        let mut status = client.status();
        tokio::time::timeout(Duration::from_secs(120), status.wait_for(|current| want(current)))
            .await
            .context("timed out")??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quicprochat_sdk::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let binary = args.next().unwrap_or_else(|| "target/release/qpc-server".into());
    let count: usize = args.next().unwrap_or_else(|| "10".into()).parse()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    let (mut server, addr) = start_server(Path::new(&binary), &data, "127.0.0.1:0", LIMITS)?;
    let socket = addr.parse()?;
    let mut clients = Vec::with_capacity(count);
    for index in 0..count {
        let profile = dir.path().join(format!("client{index}"));
        clients.push(
            QpcClient::register(&profile, socket, &format!("user{index}"), None, ClientOptions::default()).await?,
        );
    }
    println!("{count} clients connected to {addr}");

    // Restart: SIGTERM, then a new process on the same address and data dir.
    signal(&server, "-TERM")?;
    server.wait()?;
    wait_all(&clients, |status| matches!(status, ConnectionStatus::Reconnecting { .. })).await?;
    let (mut server, _) = start_server(Path::new(&binary), &data, &addr, LIMITS)?;
    let back = Instant::now();
    wait_all(&clients, |status| *status == ConnectionStatus::Connected).await?;
    println!(
        "server restart: all {count} clients reconnected and logged in {:?} after the server was back",
        back.elapsed()
    );

    // Dead path: freeze the server; heartbeats go unanswered.
    signal(&server, "-STOP")?;
    let frozen = Instant::now();
    wait_all(&clients[..1], |status| *status != ConnectionStatus::Connected).await?;
    println!("dead path detected after {:?} (server frozen with SIGSTOP)", frozen.elapsed());
    signal(&server, "-CONT")?;
    wait_all(&clients, |status| *status == ConnectionStatus::Connected).await?;
    println!("all {count} clients connected again {:?} after the freeze began", frozen.elapsed());
    for client in &clients {
        client.disconnect().await;
    }
    signal(&server, "-TERM")?;
    server.wait()?;
    Ok(())
}
