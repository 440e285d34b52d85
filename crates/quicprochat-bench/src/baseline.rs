//! Baselines measured in the same run as the server, on the same machine:
//! a bare quinn echo (same TLS, same framing, one stream per call, no auth,
//! no storage) and a raw SQLite insert loop with the server's durability
//! settings (WAL, `synchronous=FULL`, one transaction per message).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use quicprochat_proto::{Frame, FrameKind, Status};
use quicprochat_rpc::stream::{read_frame, write_frame};
use quicprochat_rpc::tls::generate_server_identity;
use quicprochat_rpc::transport::{server_endpoint, IncomingLimits, TransportLimits};
use quicprochat_rpc::{CertFingerprint, PinnedServer};

/// A running echo server; dropped endpoints close.
pub(crate) struct EchoServer {
    pub(crate) addr: SocketAddr,
    pub(crate) fingerprint: CertFingerprint,
    _endpoint: quinn::Endpoint,
}

/// Starts the echo server: every request frame is answered `OK` with its own body.
pub(crate) fn start_echo() -> anyhow::Result<EchoServer> {
    let identity = generate_server_identity(&["localhost".to_owned()])?;
    let limits = TransportLimits { max_concurrent_rpcs: 1024, ..TransportLimits::default() };
    let incoming = IncomingLimits { max_pending_handshakes: 4096, incoming_buffer_bytes: 64 * 1024 * 1024 };
    let endpoint = server_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &identity, &limits, incoming)?;
    let addr = endpoint.local_addr()?;
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(Some(request)) = read_frame(&mut recv).await else { return };
                        if request.kind != FrameKind::Request {
                            return;
                        }
                        let response = Frame::response(request.method, Status::Ok, request.body);
                        let _ = write_frame(&mut send, &response).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    Ok(EchoServer { addr, fingerprint: identity.fingerprint(), _endpoint: endpoint })
}

impl EchoServer {
    pub(crate) fn pin(&self) -> PinnedServer {
        PinnedServer::new(Some(self.fingerprint))
    }
}

/// Durable single-row inserts per second, for `duration`, with `payload_len` bytes each.
pub(crate) fn sqlite_inserts_per_second(
    dir: &std::path::Path,
    payload_len: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let connection = rusqlite::Connection::open(dir.join("baseline.db")).context("open baseline db")?;
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "WAL not available: {mode}");
    connection.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);",
    )?;
    let payload = vec![b'x'; payload_len];
    let mut insert = connection.prepare("INSERT INTO messages (payload) VALUES (?1)")?;
    // One autocommit transaction per row: one fsync'd commit, like one
    // enqueue. The first half only grows the WAL to its steady size (a
    // growing file costs a metadata commit per fsync; the server's WAL is
    // long past that); the second half is measured.
    let started = Instant::now();
    let mut measured_from = None;
    let mut rows = 0u64;
    while started.elapsed() < duration {
        insert.execute([&payload])?;
        if measured_from.is_none() && started.elapsed() >= duration / 2 {
            measured_from = Some(Instant::now());
        } else if measured_from.is_some() {
            rows += 1;
        }
    }
    let measured = measured_from.map_or(Duration::ZERO, |from| from.elapsed());
    anyhow::ensure!(rows > 0, "no insert finished in the measured half of {duration:?}");
    Ok(rows as f64 / measured.as_secs_f64())
}
