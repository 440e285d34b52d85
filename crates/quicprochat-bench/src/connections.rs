//! B6 connections: how many new clients per second the server takes, and
//! how fast a crowd of idle clients is back after a restart.
//!
//! Handshakes: M clients, at most C in flight, each a fresh client endpoint
//! and a full QUIC + TLS 1.3 handshake (X25519MLKEM768, no resumption), in
//! three phases on one server in one run: connect only; connect + register
//! (`Challenge`, then `Register` with an Ed25519 signature over the
//! challenge and the connection's TLS exporter); connect + log in the same
//! accounts (`Challenge`, `Login`), which is what every SDK reconnect does.
//! Each phase reports clients per second (M over the phase's wall time),
//! the per-client latency from the start of the connect to the last
//! answer, and the datagrams the kernel dropped on the server's UDP socket
//! (`/proc/net/udp`). Identity keys are generated before the timer; signing
//! is in it. Connections are closed after their timer stops, without
//! waiting. A few connections to each server before the first phase warm
//! the process up and are not counted. Baseline: the same connect-only
//! phase against the bare quinn echo server, whose socket asks for a large
//! receive buffer as qpc-server's does. The clients share the process
//! and its cores with the server, so every rate includes their half of
//! the handshake; so that the server's own cost can be told apart, both
//! servers run on a runtime of their own and each phase reports the CPU
//! time of the server's threads and of the rest per client, and what the
//! server alone could take on these cores ([`crate::cpu`]).
//!
//! Restart: R clients registered, logged in and subscribed, idle; the
//! server is shut down gracefully (`RunningServer::shutdown`) and a new one
//! started on the same data dir, certificate and port. Each client waits
//! for its connection to close, then for the new server to be listening (an
//! in-process signal: every client retries at the best possible moment, so
//! this measures the server's recovery, not a client backoff policy), then
//! connects, logs in and subscribes again from its cursor, as the SDK's
//! supervisor does, with the SDK's default deadlines and backoff. (With the
//! SDK itself, an attempt made while the server is down would likely wait
//! out its 5 s handshake deadline first: client policy, not measured here.)
//! Reported: the time from the new server listening until 50 %, 99 % and
//! 100 % are subscribed again, the same from the start of the shutdown (the
//! outage), how long shutdown and start-up took, and the socket's drops.
//! Baseline (the herd): as many clients connecting all at once to the bare
//! quinn echo server, with the system's default UDP receive buffer (which
//! qpc-server's socket has) and with a larger one.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use quicprochat_core::Identity;
use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::{PushStream, RpcClient};
use quicprochat_server::RunningServer;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::cpu::{CpuMeter, CpuSplit};
use crate::histogram::{Latencies, Summary};
use crate::setup::{
    bench_config, bench_transport, bounded, close_now, connect, connect_with, login_on, register, register_on,
    subscribe, ServerAddress,
};

/// The SDK's defaults for a reconnect: the handshake's deadline
/// (`connect_timeout`), the whole attempt's (`connect_timeout` +
/// `call_timeout`), and the backoff after a failed attempt (full jitter,
/// from 250 ms doubling up to 15 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
const BACKOFF_FLOOR: Duration = Duration::from_millis(250);
const BACKOFF_CEILING: Duration = Duration::from_secs(15);
/// Attempts per client after the restart before it gives up.
const MAX_ATTEMPTS: usize = 8;
/// How long the clients may take to see the old server's close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the whole crowd may take to be back.
const RESUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(120);

/// One phase of handshakes.
#[derive(Debug, Serialize)]
pub(crate) struct HandshakePhase {
    pub(crate) per_s: f64,
    /// Start of the connect → the phase's last answer, per client.
    pub(crate) latency: Summary,
    pub(crate) errors: u64,
    /// Why clients failed, by error text, with counts.
    pub(crate) error_kinds: BTreeMap<String, u64>,
    /// From the phase's start until 99 % of its clients were done (NaN if
    /// fewer succeeded): with every client at once, the crowd's figure.
    pub(crate) to_99_percent_ms: f64,
    /// Datagrams the kernel dropped on the server's UDP socket during the
    /// phase (receive buffer full; `/proc/net/udp`). A dropped handshake
    /// packet costs its client a retransmission timeout, about 1 s before
    /// any round trip has been measured.
    pub(crate) server_socket_drops: Option<u64>,
    /// CPU time per successful client, server threads and clients apart
    /// (`None` where the server shares the clients' runtime, or off Linux).
    pub(crate) cpu: Option<PhaseCpu>,
}

/// A phase's CPU time per successful client (see [`crate::cpu`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct PhaseCpu {
    /// The server's threads: its half of the handshake and what follows.
    pub(crate) server_ms_per_client: f64,
    /// Every other thread: the clients' half, and the load generator.
    pub(crate) clients_ms_per_client: f64,
    /// What the server's threads alone could take on this machine's cores
    /// if the clients ran elsewhere: cores / server CPU per client.
    pub(crate) server_ceiling_per_s: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ConnectionsResult {
    pub(crate) clients: usize,
    pub(crate) in_flight: usize,
    /// The baseline: handshakes with the bare quinn echo server.
    pub(crate) echo_connect_only: HandshakePhase,
    pub(crate) connect_only: HandshakePhase,
    pub(crate) connect_register: HandshakePhase,
    pub(crate) connect_login: HandshakePhase,
    /// Connect + login per second over connect only per second.
    pub(crate) login_over_connect: f64,
    /// `None` when `--restart-clients 0`.
    pub(crate) restart: Option<RestartResult>,
    /// The restart's baseline (`None` with it).
    pub(crate) herd: Option<Herd>,
}

/// As many clients as the restart has, connecting all at once to the bare
/// quinn echo server: with the system's default UDP receive buffer (as
/// qpc-server's socket has) and with a larger one.
#[derive(Debug, Serialize)]
pub(crate) struct Herd {
    pub(crate) default_buffer_bytes: usize,
    pub(crate) default_buffer: HandshakePhase,
    pub(crate) large_buffer_bytes: usize,
    pub(crate) large_buffer: HandshakePhase,
}

#[derive(Debug, Serialize)]
pub(crate) struct RestartResult {
    pub(crate) clients: usize,
    /// `RunningServer::shutdown` with the clients connected, until it returned.
    pub(crate) shutdown_ms: f64,
    /// `RunningServer::start` on the same data dir and port.
    pub(crate) start_ms: f64,
    pub(crate) resubscribed: usize,
    /// From the new server listening (NaN if never reached).
    pub(crate) to_50_percent_ms: f64,
    pub(crate) to_99_percent_ms: f64,
    pub(crate) to_100_percent_ms: f64,
    /// From the start of the shutdown to 99 % subscribed again.
    pub(crate) outage_to_99_percent_ms: f64,
    pub(crate) failed_attempts: u64,
    /// Why attempts failed, by error text, with counts.
    pub(crate) attempt_errors: BTreeMap<String, u64>,
    /// Clients that were not back after every attempt.
    pub(crate) gave_up: usize,
    /// Datagrams dropped on the new server's socket while the clients came back.
    pub(crate) server_socket_drops: Option<u64>,
}

impl ConnectionsResult {
    /// Failures that fail the run: the herd's, with the system's default
    /// receive buffer, are a finding, not a fault of the run.
    pub(crate) fn errors(&self) -> u64 {
        self.echo_connect_only.errors
            + self.connect_only.errors
            + self.connect_register.errors
            + self.connect_login.errors
            + self.restart.as_ref().map_or(0, |restart| restart.gave_up as u64)
            + self.herd.as_ref().map_or(0, |herd| herd.large_buffer.errors)
    }
}

/// Runs the three handshake phases, then the restart (unless `restart_clients` is 0).
pub(crate) async fn run(clients: usize, in_flight: usize, restart_clients: usize) -> anyhow::Result<ConnectionsResult> {
    // The servers of the handshake phases run on threads of their own, so
    // their CPU time can be told from the clients'.
    let servers = crate::cpu::server_runtime().context("start the servers' runtime")?;
    handshakes_and_restart(servers.handle(), clients, in_flight, restart_clients).await
}

async fn handshakes_and_restart(
    servers: &tokio::runtime::Handle,
    clients: usize,
    in_flight: usize,
    restart_clients: usize,
) -> anyhow::Result<ConnectionsResult> {
    let server = servers.spawn(crate::setup::start_server()).await.context("the server's start-up task")??;
    let address = server.address();
    let identities: Arc<Vec<Identity>> =
        Arc::new((0..clients).map(|_| Identity::generate()).collect::<Result<_, _>>()?);
    let name = |index: usize| format!("hs-{index}");

    // The baseline's socket gets a large receive buffer like qpc-server's
    // (which asks for 8 MiB), so both phases measure handshakes, not drops.
    let echo = {
        let _on_servers = servers.enter();
        crate::baseline::start_echo_with(&bench_transport(), Some(LARGE_RECEIVE_BUFFER))?
    };
    let bare = ServerAddress { addr: echo.addr, fingerprint: echo.fingerprint };
    // Warm-up, not counted: the first handshakes of a process pay one-time costs.
    for target in [bare, address] {
        phase(in_flight, in_flight, target.addr, true, |_| async move { connect(target.addr, target.pin()).await })
            .await;
    }
    let echo_connect_only =
        phase(clients, in_flight, bare.addr, true, |_| async move { connect(bare.addr, bare.pin()).await }).await;
    let connect_only =
        phase(clients, in_flight, address.addr, true, |_| async move { connect(address.addr, address.pin()).await })
            .await;
    let connect_register = phase(clients, in_flight, address.addr, true, |index| {
        let identities = identities.clone();
        async move {
            let rpc = connect(address.addr, address.pin()).await?;
            register_on(&rpc, &name(index), &identities[index]).await?;
            Ok(rpc)
        }
    })
    .await;
    let connect_login = phase(clients, in_flight, address.addr, true, |index| {
        let identities = identities.clone();
        async move {
            let rpc = connect(address.addr, address.pin()).await?;
            login_on(&rpc, &name(index), &identities[index]).await?;
            Ok(rpc)
        }
    })
    .await;
    server.server.shutdown().await;
    let (restart, herd) = if restart_clients > 0 {
        (Some(restart(restart_clients, in_flight).await?), Some(herd(restart_clients).await?))
    } else {
        (None, None)
    };
    Ok(ConnectionsResult {
        clients,
        in_flight,
        echo_connect_only,
        login_over_connect: connect_login.per_s / connect_only.per_s,
        connect_only,
        connect_register,
        connect_login,
        restart,
        herd,
    })
}

/// The receive buffer asked for in the herd's second run.
const LARGE_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

async fn herd(clients: usize) -> anyhow::Result<Herd> {
    let mut runs = Vec::new();
    for buffer in [None, Some(LARGE_RECEIVE_BUFFER)] {
        let echo = crate::baseline::start_echo_with(&bench_transport(), buffer)?;
        let bare = ServerAddress { addr: echo.addr, fingerprint: echo.fingerprint };
        let connected =
            phase(clients, clients, bare.addr, false, |_| async move { connect(bare.addr, bare.pin()).await }).await;
        runs.push((echo.receive_buffer_bytes, connected));
    }
    let (large_buffer_bytes, large_buffer) = runs.pop().context("the large-buffer run")?;
    let (default_buffer_bytes, default_buffer) = runs.pop().context("the default-buffer run")?;
    Ok(Herd { default_buffer_bytes, default_buffer, large_buffer_bytes, large_buffer })
}

/// Runs `open(index)` for every client, at most `in_flight` at once; each
/// connection is closed once its time is taken. `server` is the socket
/// whose kernel drops are counted; `on_server_threads` says whether that
/// server runs on [`crate::cpu::server_runtime`], so its CPU time is told apart.
async fn phase<F, Fut>(
    clients: usize,
    in_flight: usize,
    server: SocketAddr,
    on_server_threads: bool,
    open: F,
) -> HandshakePhase
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<RpcClient>> + Send + 'static,
{
    let drops_before = socket_drops(server);
    let cpu = on_server_threads.then(CpuMeter::start);
    let started = Instant::now();
    let results = bounded(clients, in_flight, |index| {
        let opening = open(index);
        async move {
            let began = Instant::now();
            let rpc = opening.await?;
            let elapsed = began.elapsed();
            close_now(&rpc);
            Ok((elapsed, started.elapsed(), rpc))
        }
    })
    .await;
    let wall = started.elapsed().max(Duration::from_micros(1));
    // Closing is part of a connection's cost: the phase's CPU time runs
    // until every client endpoint has finished its close (the server's
    // side ends at about the same time), so none of it is charged to the
    // next phase.
    let mut closing = tokio::task::JoinSet::new();
    for (_, _, rpc) in results.iter().flatten() {
        let rpc = rpc.clone();
        closing.spawn(async move { rpc.close().await });
    }
    while closing.join_next().await.is_some() {}
    let cpu = cpu.as_ref().and_then(CpuMeter::finish);
    let mut latency = Latencies::new();
    let (mut errors, mut error_kinds, mut done) = (0, BTreeMap::new(), Vec::new());
    for result in results {
        match result {
            Ok((elapsed, finished, _)) => {
                latency.record(elapsed);
                done.push(finished);
            }
            Err(error) => {
                errors += 1;
                *error_kinds.entry(format!("{error:#}")).or_insert(0) += 1;
            }
        }
    }
    let latency = latency.summary();
    let server_socket_drops = drops_before.zip(socket_drops(server)).map(|(before, after)| after - before);
    let per_s = latency.count as f64 / wall.as_secs_f64();
    done.sort();
    let to_99_percent_ms = time_to(&done, 0.99, clients);
    let cpu = cpu.filter(|_| latency.count > 0).map(|split| per_client(split, latency.count));
    HandshakePhase { per_s, latency, errors, error_kinds, to_99_percent_ms, server_socket_drops, cpu }
}

/// `split` spread over `clients` successful clients.
fn per_client(split: CpuSplit, clients: u64) -> PhaseCpu {
    let ms = |time: Duration| time.as_secs_f64() * 1000.0 / clients as f64;
    PhaseCpu {
        server_ms_per_client: ms(split.server),
        clients_ms_per_client: ms(split.process.saturating_sub(split.server)),
        server_ceiling_per_s: split.server_alone_per_s(clients),
    }
}

/// Datagrams dropped so far on the local IPv4 UDP socket bound to `addr`,
/// from `/proc/net/udp` (`None` where that is not available).
fn socket_drops(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = addr else { return None };
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port());
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str())).then(|| fields.last()?.parse().ok()).flatten()
    })
}

/// A registered, subscribed, idle client.
struct Idle {
    rpc: RpcClient,
    push: PushStream,
    name: String,
    identity: Identity,
}

/// Counts clients that saw the old server close their connection.
#[derive(Default)]
struct Closed {
    count: Mutex<usize>,
    changed: Notify,
}

impl Closed {
    fn add_one(&self) {
        *self.count.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
        self.changed.notify_waiters();
    }

    async fn wait_for(&self, target: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let count = *self.count.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if count >= target || Instant::now() >= deadline {
                return count;
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }
}

/// What one client's reconnect came to.
struct Back {
    rpc: RpcClient,
    at: Duration,
    failed: Vec<String>,
}

async fn restart(clients: usize, in_flight: usize) -> anyhow::Result<RestartResult> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let data = dir.path().join("data");
    let first =
        RunningServer::start(bench_config(&data, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), bench_transport()))
            .await
            .context("start qpc-server")?;
    let address = ServerAddress { addr: first.local_addr(), fingerprint: first.fingerprint() };
    let idle: Vec<Idle> = bounded(clients, in_flight, |index| async move {
        let name = format!("idle-{index}");
        let (rpc, identity) = register(address, &name).await?;
        let push = subscribe(&rpc).await?;
        Ok(Idle { rpc, push, name, identity })
    })
    .await
    .into_iter()
    .collect::<anyhow::Result<_>>()?;

    let base = Instant::now();
    let (up_sender, up) = watch::channel(false);
    let closed = Arc::new(Closed::default());
    let tasks: Vec<_> = idle
        .into_iter()
        .enumerate()
        .map(|(index, client)| tokio::spawn(come_back(index, client, address, up.clone(), closed.clone(), base)))
        .collect();
    let shutdown_started = base.elapsed();
    first.shutdown().await;
    let shutdown_done = base.elapsed();
    let seen = closed.wait_for(clients, CLOSE_TIMEOUT).await;
    anyhow::ensure!(seen == clients, "only {seen} of {clients} clients saw the server close within {CLOSE_TIMEOUT:?}");
    let second = RunningServer::start(bench_config(&data, address.addr, bench_transport()))
        .await
        .context("restart qpc-server on the same data dir and port")?;
    let up_at = base.elapsed();
    anyhow::ensure!(second.fingerprint() == address.fingerprint, "the restarted server has another certificate");
    let drops_before = socket_drops(address.addr);
    let _ = up_sender.send(true);

    let deadline = Instant::now() + RESUBSCRIBE_TIMEOUT;
    let (mut times, mut back, mut failed_attempts, mut gave_up) = (Vec::new(), Vec::new(), 0u64, 0);
    let mut attempt_errors = BTreeMap::new();
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(client))) => {
                times.push(client.at.saturating_sub(up_at));
                failed_attempts += client.failed.len() as u64;
                for error in client.failed {
                    *attempt_errors.entry(error).or_insert(0) += 1;
                }
                back.push(client.rpc);
            }
            Ok(Ok(Err(error))) => {
                gave_up += 1;
                eprintln!("B6 restart: a client did not come back: {error:#}");
            }
            Ok(Err(_)) | Err(_) => gave_up += 1,
        }
    }
    let server_socket_drops = drops_before.zip(socket_drops(address.addr)).map(|(before, after)| after - before);
    times.sort();
    let to = |fraction: f64| time_to(&times, fraction, clients);
    let result = RestartResult {
        clients,
        shutdown_ms: ms(shutdown_done.saturating_sub(shutdown_started)),
        start_ms: ms(up_at.saturating_sub(shutdown_done)),
        resubscribed: times.len(),
        to_50_percent_ms: to(0.50),
        to_99_percent_ms: to(0.99),
        to_100_percent_ms: to(1.0),
        outage_to_99_percent_ms: to(0.99) + ms(up_at.saturating_sub(shutdown_started)),
        failed_attempts,
        attempt_errors,
        gave_up,
        server_socket_drops,
    };
    for rpc in &back {
        close_now(rpc);
    }
    second.shutdown().await;
    Ok(result)
}

/// Waits for the close, then for the new server, then reconnects.
async fn come_back(
    index: usize,
    client: Idle,
    server: ServerAddress,
    mut up: watch::Receiver<bool>,
    closed: Arc<Closed>,
    base: Instant,
) -> anyhow::Result<Back> {
    let Idle { rpc, push, name, identity } = client;
    rpc.connection().closed().await;
    drop(push);
    closed.add_one();
    up.wait_for(|up| *up).await.context("the bench stopped before the restart")?;
    let mut failed = Vec::new();
    loop {
        let attempt = async {
            let limits = TransportLimits::default();
            let rpc = tokio::time::timeout(CONNECT_TIMEOUT, connect_with(server.addr, server.pin(), &limits))
                .await
                .map_err(|_| anyhow::anyhow!("handshake timed out after {CONNECT_TIMEOUT:?}"))??;
            login_on(&rpc, &name, &identity).await?;
            let push = subscribe(&rpc).await?;
            anyhow::Ok((rpc, push))
        };
        let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok((rpc, _push))) => return Ok(Back { rpc, at: base.elapsed(), failed }),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!("attempt timed out after {ATTEMPT_TIMEOUT:?}"),
        };
        failed.push(error.chars().take(100).collect());
        if failed.len() >= MAX_ATTEMPTS {
            anyhow::bail!("{MAX_ATTEMPTS} attempts failed, the last: {error}");
        }
        // The SDK's retry delay, not a synchronisation.
        tokio::time::sleep(backoff(index, failed.len())).await;
    }
}

/// Full jitter: uniform in [0, min(ceiling, floor · 2^(failures − 1))),
/// from a hash of (client, failures) instead of a random number generator.
fn backoff(client: usize, failures: usize) -> Duration {
    let cap = BACKOFF_FLOOR.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(BACKOFF_CEILING);
    let mut hash = (client as u64) << 8 ^ failures as u64;
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    cap.mul_f64(hash as f64 / u64::MAX as f64)
}

/// Time until `fraction` of `total` clients were back; NaN if never.
fn time_to(sorted: &[Duration], fraction: f64, total: usize) -> f64 {
    let needed = ((fraction * total as f64).ceil() as usize).max(1);
    sorted.get(needed - 1).map_or(f64::NAN, |at| ms(*at))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn drops(phase: &HandshakePhase) -> String {
    phase.server_socket_drops.map_or("?".to_owned(), |drops| drops.to_string())
}

/// The one-line stderr summary.
pub(crate) fn describe(result: &ConnectionsResult) -> String {
    let phase = |phase: &HandshakePhase| {
        let cpu = phase.cpu.map_or(String::new(), |cpu| {
            format!(
                "; CPU per client: server {:.2} ms, clients {:.2} ms; server alone {:.0}/s",
                cpu.server_ms_per_client, cpu.clients_ms_per_client, cpu.server_ceiling_per_s
            )
        });
        format!(
            "{:.0}/s (p50 {:.2} p99 {:.2} ms, {} dropped{cpu})",
            phase.per_s,
            phase.latency.p50_ms,
            phase.latency.p99_ms,
            drops(phase)
        )
    };
    let restart = match &result.restart {
        Some(restart) => format!(
            "; restart of {} subscribed: 99% back {:.0} ms after listening (100% {:.0} ms, outage {:.0} ms; \
             shutdown {:.0} ms, start {:.0} ms; {} failed attempts, {} dropped)",
            restart.clients,
            restart.to_99_percent_ms,
            restart.to_100_percent_ms,
            restart.outage_to_99_percent_ms,
            restart.shutdown_ms,
            restart.start_ms,
            restart.failed_attempts,
            restart.server_socket_drops.map_or("?".to_owned(), |drops| drops.to_string())
        ),
        None => "; restart not measured".to_owned(),
    };
    let herd = match &result.herd {
        Some(herd) => format!(
            "; the same crowd at once to bare quinn: 99% connected after {:.0} ms ({} dropped, {} failed) with a \
             {} KiB receive buffer, {:.0} ms ({} dropped) with {} KiB",
            herd.default_buffer.to_99_percent_ms,
            drops(&herd.default_buffer),
            herd.default_buffer.errors,
            herd.default_buffer_bytes / 1024,
            herd.large_buffer.to_99_percent_ms,
            drops(&herd.large_buffer),
            herd.large_buffer_bytes / 1024
        ),
        None => String::new(),
    };
    format!(
        "{} clients, {} in flight: bare quinn connect {}; connect {}, +register {}, +login {}{restart}{herd}",
        result.clients,
        result.in_flight,
        phase(&result.echo_connect_only),
        phase(&result.connect_only),
        phase(&result.connect_register),
        phase(&result.connect_login)
    )
}
