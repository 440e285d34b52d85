//! Measures the memory one hostile, logged-in connection can make a running
//! `qpc-server` hold.
//!
//! The connection opens as many request streams as the server allows, each
//! announcing the largest body `SubmitCommit` permits (16 MiB) and sending
//! all of it but the last byte, then stalls. The server's per-connection
//! body budget, flow-control windows and stream read deadline bound what it
//! holds. The server's resident memory is read from `/proc` before and while
//! the attack holds, and its peak.
//!
//! ```text
//! qpc-server --data-dir /tmp/h --listen 127.0.0.1:7999 &
//! cargo run --release -p quicprochat-server --example hostile_connection -- 127.0.0.1:7999 $!
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use quicprochat_core::{auth_transcript, AuthPurpose, Identity};
use quicprochat_proto::v1;
use quicprochat_proto::{FrameKind, Method};
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{PinnedServer, RpcClient};

const STREAMS: usize = 64;
const BODY: u32 = 16 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// A `/proc/PID/status` field in KiB (`VmRSS` now, `VmHWM` peak).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc status")?;
    let line = status.lines().find(|line| line.starts_with(field)).context("no such status line")?;
    line.split_whitespace().nth(1).context("no value")?.parse().context("value")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quicprochat_rpc::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().context("usage: hostile_connection ADDR SERVER_PID")?.parse()?;
    let pid: u32 = args.next().context("usage: hostile_connection ADDR SERVER_PID")?.parse()?;
    let before = status_kib(pid, "VmRSS:")?;
    // Reset the peak-RSS mark so VmHWM reports the peak of this attack (needs write access).
    let peak_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();

    let rpc =
        RpcClient::connect(addr, PinnedServer::new(None), &TransportLimits::default(), Duration::from_secs(10)).await?;
    let identity = Identity::generate()?;
    let name = format!("hostile{}", rand::random::<u32>());
    let challenge: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await?;
    let transcript =
        auth_transcript(AuthPurpose::Register, &challenge.nonce, &rpc.auth_exporter()?, &name, identity.public_key());
    let register = v1::RegisterRequest {
        username: name,
        identity_key: identity.public_key().to_vec().into(),
        signature: identity.sign(&transcript)?.into(),
        invite_token: String::new(),
    };
    let _: v1::RegisterResponse = rpc.call(Method::Register, &register).await?;

    let mut header = BODY.to_be_bytes().to_vec();
    header.extend_from_slice(&(Method::SubmitCommit as u16).to_be_bytes());
    header.extend_from_slice(&[FrameKind::Request as u8, 0]);
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let (mut send, recv) = rpc.connection().open_bi().await?;
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            let chunk = vec![0u8; CHUNK];
            let mut sent = 0usize;
            if send.write_all(&header).await.is_err() {
                return (0, recv);
            }
            while sent + CHUNK < BODY as usize {
                match tokio::time::timeout(Duration::from_secs(2), send.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += CHUNK,
                    // Refused, reset, or stalled by flow control: hold what we have.
                    _ => break,
                }
            }
            (sent, recv)
        }));
    }
    let mut total_sent = 0usize;
    let mut held = Vec::new();
    for task in tasks {
        let (sent, recv) = task.await?;
        total_sent += sent;
        held.push(recv);
    }
    let during = status_kib(pid, "VmRSS:")?;
    let peak = status_kib(pid, "VmHWM:")?;
    println!("streams opened:        {STREAMS} (each announcing {} MiB)", BODY / (1024 * 1024));
    println!(
        "body bytes written:    {:.1} MiB (most into streams the server refused or stopped)",
        total_sent as f64 / (1024.0 * 1024.0)
    );
    println!("server RSS before:     {:.1} MiB", before as f64 / 1024.0);
    println!("server RSS during:     {:.1} MiB", during as f64 / 1024.0);
    println!(
        "server RSS peak:       {:.1} MiB{}",
        peak as f64 / 1024.0,
        if peak_reset { "" } else { " (process lifetime peak)" }
    );
    println!("held by the attacker:  {:.1} MiB at peak", peak.saturating_sub(before) as f64 / 1024.0);
    rpc.close().await;
    Ok(())
}
