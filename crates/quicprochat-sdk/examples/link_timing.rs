//! Measures linking a device (issue 18): the time from `approve_device`
//! until the approval returns (the new device came online and was added to
//! every group, one commit each) and until the new device holds every
//! group (it fetched and joined every Welcome), for an account in 1, 10
//! and 100 groups, each group shared with one other user.
//!
//! ```text
//! cargo build --release --bin qpc-server
//! cargo run --release -p quicprochat-sdk --example link_timing -- target/release/qpc-server 1,10,100
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use quicprochat_sdk::{ClientOptions, QpcClient};

#[path = "common/server.rs"]
mod server;
use server::start_server;

/// Rate limits raised: one account creates and commits to many groups in a burst here.
const LIMITS: &[(&str, &str)] = &[
    ("QPC_RATE_LIMITS_CREATE_GROUP_PER_ACCOUNT_BURST", "100000"),
    ("QPC_RATE_LIMITS_COMMIT_PER_ACCOUNT_BURST", "100000"),
    ("QPC_RATE_LIMITS_KEY_PACKAGE_FETCH_PER_REQUESTER_BURST", "100000"),
    ("QPC_RATE_LIMITS_KEY_PACKAGE_FETCH_PER_TARGET_BURST", "100000"),
];

/// One measurement: alice in `groups` groups with bob links a phone.
async fn measure(binary: &Path, groups: usize) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let (mut server, addr) = start_server(binary, &dir.path().join("server"), "127.0.0.1:0", LIMITS)?;
    let socket = addr.parse()?;
    let options = ClientOptions::default();
    let alice = QpcClient::register(&dir.path().join("alice"), socket, "alice", None, options.clone()).await?;
    let bob_options = ClientOptions { key_package_batch: 100, ..options.clone() };
    let bob = QpcClient::register(&dir.path().join("bob"), socket, "bob", None, bob_options).await?;
    for index in 0..groups {
        let name = format!("group-{index}");
        alice.create_group(&name).await?;
        alice.add_members(&name, &["bob".to_owned()]).await?;
    }
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let phone_profile = dir.path().join("alice-phone");
    let link = QpcClient::link_device(&phone_profile, socket, "phone", Duration::from_secs(60), options, move |code| {
        let _ = code_tx.send(code.to_owned());
    });
    let approve = async {
        let code = code_rx.await.context("no link code")?;
        let started = Instant::now();
        let approved = alice.approve_device(&code, Duration::from_secs(60)).await?;
        anyhow::ensure!(approved.groups == groups && approved.pending == 0, "added to {approved:?}");
        Ok::<_, anyhow::Error>((started, started.elapsed()))
    };
    let (phone, approved) = tokio::join!(link, approve);
    let (phone, (started, approve_took)) = (phone?, approved?);
    loop {
        phone.sync().await?;
        if phone.groups().await?.len() == groups {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "the phone did not get every group");
    }
    let held_after = started.elapsed();
    for client in [&alice, &bob, &phone] {
        client.disconnect().await;
    }
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status()?;
    server.wait()?;
    Ok((approve_took, held_after))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quicprochat_sdk::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let binary = args.next().unwrap_or_else(|| "target/release/qpc-server".into());
    let counts = args.next().unwrap_or_else(|| "1,10,100".into());
    println!("groups  approve returned  phone holds every group  per group");
    for groups in counts.split(',') {
        let groups: usize = groups.trim().parse()?;
        let (approve, held) = measure(Path::new(&binary), groups).await?;
        println!(
            "{groups:>6}  {:>13.1} ms  {:>20.1} ms  {:>7.1} ms",
            approve.as_secs_f64() * 1e3,
            held.as_secs_f64() * 1e3,
            held.as_secs_f64() * 1e3 / groups as f64
        );
    }
    Ok(())
}
