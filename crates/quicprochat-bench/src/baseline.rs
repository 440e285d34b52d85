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
use quicprochat_rpc::transport::{server_config, IncomingLimits, TransportLimits};
use quicprochat_rpc::{CertFingerprint, PinnedServer};

use crate::histogram::{Latencies, Summary};

/// A running echo server; dropped endpoints close.
pub(crate) struct EchoServer {
    pub(crate) addr: SocketAddr,
    pub(crate) fingerprint: CertFingerprint,
    /// The UDP socket's receive buffer as the kernel reports it (it doubles what is asked).
    pub(crate) receive_buffer_bytes: usize,
    _endpoint: quinn::Endpoint,
}

/// Starts the echo server: every request frame is answered `OK` with its own
/// body, or with an empty one where the body exceeds the method's response limit.
pub(crate) fn start_echo() -> anyhow::Result<EchoServer> {
    start_echo_with(&crate::setup::bench_transport(), None)
}

/// Like [`start_echo`], with the given transport limits (B7 compares
/// memory at the same limits as the server's: quinn allocates state for
/// every stream a peer may open up front) and, if given, a UDP receive
/// buffer of that size instead of the system default (B6 compares both).
pub(crate) fn start_echo_with(limits: &TransportLimits, receive_buffer: Option<usize>) -> anyhow::Result<EchoServer> {
    let identity = generate_server_identity(&["localhost".to_owned()])?;
    let incoming = IncomingLimits { max_pending_handshakes: 4096, incoming_buffer_bytes: 64 * 1024 * 1024 };
    let socket = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).context("bind echo socket")?;
    let udp = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Some(bytes) = receive_buffer {
        udp.set_recv_buffer_size((&socket).into(), bytes).context("set the echo socket's receive buffer")?;
    }
    let receive_buffer_bytes = udp.recv_buffer_size((&socket).into())?;
    let config = server_config(&identity, limits, incoming)?;
    let runtime = std::sync::Arc::new(quinn::TokioRuntime);
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, runtime)?;
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
                        // Bodies larger than the method's response limit
                        // (a commit) are answered empty: the upload is the cost.
                        let fits = request.body.len() <= request.method.max_response_len() as usize;
                        let body = if fits { request.body } else { bytes::Bytes::new() };
                        let response = Frame::response(request.method, Status::Ok, body);
                        let _ = write_frame(&mut send, &response).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    Ok(EchoServer { addr, fingerprint: identity.fingerprint(), receive_buffer_bytes, _endpoint: endpoint })
}

impl EchoServer {
    pub(crate) fn pin(&self) -> PinnedServer {
        PinnedServer::new(Some(self.fingerprint))
    }
}

/// Durable single-row inserts per second, for `duration`, with `payload_len`
/// bytes each, and the latency of each (one commit and its fsync): the
/// disk's own stalls, measured in the same run as the server.
pub(crate) fn sqlite_inserts_per_second(
    dir: &std::path::Path,
    payload_len: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Summary)> {
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
    let mut latencies = Latencies::new();
    while started.elapsed() < duration {
        let insert_started = Instant::now();
        insert.execute([&payload])?;
        if measured_from.is_none() && started.elapsed() >= duration / 2 {
            measured_from = Some(Instant::now());
        } else if measured_from.is_some() {
            rows += 1;
            latencies.record(insert_started.elapsed());
        }
    }
    let measured = measured_from.map_or(Duration::ZERO, |from| from.elapsed());
    anyhow::ensure!(rows > 0, "no insert finished in the measured half of {duration:?}");
    Ok((rows as f64 / measured.as_secs_f64(), latencies.summary()))
}
