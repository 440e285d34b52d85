//! `qpc-server`: command-line entry point.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quicprochat_server::{RunningServer, ServerConfig};

/// The quicprochat server: MLS Authentication and Delivery Service over QUIC.
#[derive(Parser, Debug)]
#[command(name = "qpc-server", version, about)]
struct Args {
    /// Directory for the database and the TLS certificate (created if missing).
    #[arg(long, env = "QPC_DATA_DIR", default_value = "./qpc-data")]
    data_dir: PathBuf,
    /// Address to listen on (UDP).
    #[arg(long, env = "QPC_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// This server's domain name (users are name@domain).
    #[arg(long, env = "QPC_DOMAIN", default_value = "localhost")]
    domain: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    quicprochat_rpc::install_crypto_provider();
    let args = Args::parse();
    let mut config = ServerConfig::new(args.data_dir, args.listen);
    config.domain = args.domain;
    let server = RunningServer::start(config).await.context("cannot start qpc-server")?;
    // Machine-readable readiness line for scripts and tests.
    println!("listening on {} fingerprint {}", server.local_addr(), server.fingerprint());
    let token = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        token.cancel();
    });
    server.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
