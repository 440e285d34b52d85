//! B7's client side, in a child process of its own (`qpc-bench
//! --memory-client-child`, started by the parent), so that the parent's
//! RSS holds the servers' memory only. The parent drives it over
//! stdin/stdout, one command per line:
//!
//! - `echo ADDR FINGERPRINT TOTAL`: connections to the echo server until
//!   TOTAL are open, each having made one call;
//! - `server ADDR FINGERPRINT TOTAL`: connections to qpc-server, each
//!   registered (so logged in) and subscribed with its push stream open,
//!   until TOTAL are open;
//! - `hostile ADDR FINGERPRINT STREAM_LIMIT`: the hostile connection (see
//!   the parent's doc), held until the end.
//!
//! Each command is answered on one line: `ok RSS_KIB [NUMBERS...]` (this
//! process's RSS after the command) or `error MESSAGE`. At end of input the
//! connections are closed and the process exits.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quicprochat_core::Identity;
use quicprochat_proto::{FrameHeader, FrameKind, Method, Status, HEADER_LEN};
use quicprochat_rpc::stream::read_frame;
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{CertFingerprint, PushStream, RpcClient};

use super::rss_kib;
use crate::setup::{bounded, close_now, connect_with, register_on, subscribe, ServerAddress};

/// Connections set up at once.
const IN_FLIGHT: usize = 32;
/// How long the hostile client waits for the server to grant another stream.
const STREAM_GRANT_TIMEOUT: Duration = Duration::from_secs(5);
/// Streams the hostile client keeps for claimed bodies (the rest hold partial headers).
const BODY_STREAMS: u32 = 8;
/// The hostile client's send window: unacknowledged bytes it may have out.
const HOSTILE_SEND_WINDOW: u32 = 64 * 1024;

#[derive(Default)]
struct Clients {
    echo: Vec<RpcClient>,
    idle: Vec<(RpcClient, PushStream)>,
    hostile: Vec<(RpcClient, Vec<(quinn::SendStream, quinn::RecvStream)>)>,
}

/// Serves the parent's commands until its end of input.
pub(crate) async fn serve_parent() -> anyhow::Result<()> {
    let mut clients = Clients::default();
    loop {
        let mut line = String::new();
        let read = tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut line))?;
        if read == 0 {
            break;
        }
        let reply = match clients.handle(line.trim()).await {
            Ok(numbers) => format!("ok {}", numbers.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")),
            Err(error) => format!("error {error:#}").replace('\n', " "),
        };
        tokio::task::block_in_place(|| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{reply}")?;
            out.flush()
        })?;
    }
    for rpc in clients.echo.iter().chain(clients.idle.iter().map(|(rpc, _)| rpc)) {
        close_now(rpc);
    }
    // The server must hear this close before it shuts down: its streams
    // count as in-flight requests, which a graceful shutdown waits for
    // until their read deadline.
    for (rpc, _held) in &clients.hostile {
        rpc.close().await;
    }
    Ok(())
}

impl Clients {
    async fn handle(&mut self, command: &str) -> anyhow::Result<Vec<u64>> {
        let words: Vec<&str> = command.split_whitespace().collect();
        let [kind, addr, fingerprint, count] = words[..] else {
            anyhow::bail!("expected KIND ADDR FINGERPRINT COUNT, got {command:?}");
        };
        let addr: SocketAddr = addr.parse().with_context(|| format!("address {addr:?}"))?;
        let fingerprint =
            CertFingerprint::parse(fingerprint).with_context(|| format!("fingerprint {fingerprint:?}"))?;
        let server = ServerAddress { addr, fingerprint };
        let count: usize = count.parse().with_context(|| format!("count {count:?}"))?;
        let mut numbers = Vec::new();
        match kind {
            "echo" => {
                let from = self.echo.len();
                self.echo.extend(open_echo(server, count.saturating_sub(from)).await?);
            }
            "server" => {
                let from = self.idle.len();
                self.idle.extend(open_idle(server, from, count).await?);
            }
            "hostile" => {
                let (rpc, held, stats) = hostile(server, u32::try_from(count)?).await?;
                self.hostile.push((rpc, held));
                numbers.extend(stats);
            }
            other => anyhow::bail!("unknown command {other:?}"),
        }
        numbers.insert(0, rss_kib()?);
        Ok(numbers)
    }
}

/// A connection with the default client limits, as the SDK's (the bench's
/// other suites allow more streams, which quinn pays for up front).
async fn connect_default(server: ServerAddress) -> anyhow::Result<RpcClient> {
    connect_with(server.addr, server.pin(), &TransportLimits::default()).await
}

/// `count` echo connections, each having made one call.
async fn open_echo(echo: ServerAddress, count: usize) -> anyhow::Result<Vec<RpcClient>> {
    bounded(count, IN_FLIGHT, |_| async move {
        let rpc = connect_default(echo).await?;
        rpc.call_raw(Method::Ping, Bytes::new()).await?;
        Ok(rpc)
    })
    .await
    .into_iter()
    .collect()
}

/// Registered, subscribed connections `from..to`.
async fn open_idle(server: ServerAddress, from: usize, to: usize) -> anyhow::Result<Vec<(RpcClient, PushStream)>> {
    bounded(to.saturating_sub(from), IN_FLIGHT, |offset| async move {
        let rpc = connect_default(server).await?;
        register_on(&rpc, &format!("mem-{}", from + offset), &Identity::generate()?).await?;
        let push = subscribe(&rpc).await?;
        Ok((rpc, push))
    })
    .await
    .into_iter()
    .collect()
}

type Held = Vec<(quinn::SendStream, quinn::RecvStream)>;

/// Opens the hostile connection and fills it. Returns it, its streams, and
/// [stream limit, partial headers held, bodies held, bodies refused, bytes
/// claimed per body, body bytes sent].
async fn hostile(server: ServerAddress, stream_limit: u32) -> anyhow::Result<(RpcClient, Held, Vec<u64>)> {
    let limits = TransportLimits { connection_receive_window: HOSTILE_SEND_WINDOW, ..TransportLimits::default() };
    let rpc = connect_with(server.addr, server.pin(), &limits).await?;
    // Logged in: before login the server reads no request over 4 KiB.
    register_on(&rpc, "mem-hostile", &Identity::generate()?).await?;

    let mut held = Vec::new();
    let mut partial_header = [0u8; HEADER_LEN - 1]; // length 0, method Ping, kind Request: never completed
    partial_header[4..6].copy_from_slice(&(Method::Ping as u16).to_be_bytes());
    for _ in 0..stream_limit.saturating_sub(BODY_STREAMS) {
        let Ok(Ok((mut send, recv))) = tokio::time::timeout(STREAM_GRANT_TIMEOUT, rpc.connection().open_bi()).await
        else {
            break;
        };
        send.write_all(&partial_header).await.context("partial header")?;
        held.push((send, recv));
    }
    let headers_held = held.len() as u64;

    let claimed = Method::SubmitCommit.max_request_len();
    let header =
        FrameHeader { len: claimed, method: Method::SubmitCommit, kind: FrameKind::Request, status: Status::Ok };
    let (mut bodies_held, mut refused, mut body_bytes) = (0u64, 0u64, 0u64);
    for _ in 0..BODY_STREAMS {
        let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(STREAM_GRANT_TIMEOUT, rpc.connection().open_bi()).await
        else {
            break;
        };
        send.write_all(&header.to_bytes()).await.context("body header")?;
        let body = u64::from(claimed.saturating_sub(1));
        // A refused stream is answered at once and never read: its body
        // write fails (the server stops the stream) or the answer arrives.
        let accepted = tokio::select! {
            written = write_zeros(&mut send, body) => written.is_ok(),
            _refusal = read_frame(&mut recv) => false,
        };
        if !accepted {
            refused += 1;
            break;
        }
        body_bytes += body;
        bodies_held += 1;
        held.push((send, recv));
    }
    let stats = vec![u64::from(stream_limit), headers_held, bodies_held, refused, u64::from(claimed), body_bytes];
    Ok((rpc, held, stats))
}

/// Writes `len` zero bytes from one small buffer (the client allocates no body).
async fn write_zeros(send: &mut quinn::SendStream, len: u64) -> anyhow::Result<()> {
    const CHUNK: [u8; 16 * 1024] = [0; 16 * 1024];
    let mut left = len;
    while left > 0 {
        let take = left.min(CHUNK.len() as u64) as usize;
        send.write_all(&CHUNK[..take]).await?;
        left -= take as u64;
    }
    Ok(())
}
