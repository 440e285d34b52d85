//! B7 memory: resident memory per idle subscribed connection, and what one
//! hostile connection can make the server hold.
//!
//! Method: the servers run in this process and every client in a child
//! process (`clients.rs`), so this process's `VmRSS` (`/proc/self/status`)
//! grows by server-side memory only; the child reports its own RSS, which
//! gives the client side. Two servers: qpc-server (default transport
//! limits, rate limits raised) and, as the baseline, the bare quinn echo
//! server of `baseline.rs` (same TLS and framing, no session, no storage).
//! The child first opens a few connections of each kind that are not
//! counted (one-time costs: first handshake, SQLite cache, blocking
//! threads), then steps alternate — echo connections up to N₁, qpc
//! connections up to N₁, echo up to N₂, ... — and nothing is closed in
//! between, so every delta is growth, not reuse of freed memory. An echo
//! connection has made one call; a qpc connection is registered (so logged
//! in) and subscribed with its push stream open. Per connection: growth ÷ N
//! of each kind, in KiB. The qpc figure includes the account's share of
//! SQLite's page cache (bounded by the cache size). B7 runs before every
//! other suite, because once this process's allocator holds memory freed by
//! earlier work, new connections reuse it and RSS does not move.
//!
//! Hostile: one logged-in connection opens as many request streams as the
//! server allows per connection (`max_concurrent_rpcs`). All but a few send
//! 7 of a frame header's 8 bytes and stop, so the server holds each stream
//! until its read deadline; the rest each claim a `SubmitCommit` of the
//! largest allowed length and send all of it but the last byte, until the
//! server's per-connection body budget refuses one (`RESOURCE_EXHAUSTED`).
//! The hostile client's send window is 64 KiB, so when its writes return
//! the server has acknowledged all but that much. Reported: this process's
//! RSS growth while the connection holds all that.

mod clients;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::Context;
use quicprochat_rpc::transport::TransportLimits;
use serde::Serialize;

pub(crate) use clients::serve_parent;

/// Connections of each kind opened before measuring, not counted.
const WARM_UP: usize = 10;

#[derive(Debug, Serialize)]
pub(crate) struct MemoryStep {
    pub(crate) connections: usize,
    /// Server side, qpc-server.
    pub(crate) server_kib_per_connection: f64,
    /// Server side, the bare quinn echo baseline.
    pub(crate) echo_kib_per_connection: f64,
    /// Client side of a qpc connection (the child process's growth).
    pub(crate) client_kib_per_connection: f64,
    /// This process's RSS after the step.
    pub(crate) rss_kib: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct HostileResult {
    /// The server's stream limit per connection.
    pub(crate) stream_limit: u64,
    pub(crate) partial_headers_held: u64,
    pub(crate) bodies_held: u64,
    /// Body streams the server refused (its budget was spent).
    pub(crate) bodies_refused: u64,
    pub(crate) claimed_bytes_per_body: u64,
    pub(crate) body_bytes_sent: u64,
    pub(crate) rss_growth_kib: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct MemoryResult {
    pub(crate) method: &'static str,
    pub(crate) steps: Vec<MemoryStep>,
    pub(crate) hostile: HostileResult,
}

/// This process's resident set size, KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status (Linux only)")?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:")).context("no VmRSS in /proc/self/status")?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("VmRSS {kib:?}"))
}

/// The child process holding the clients.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ClientProcess {
    fn spawn() -> anyhow::Result<ClientProcess> {
        let exe = std::env::current_exe().context("path of qpc-bench")?;
        let mut child = Command::new(exe)
            .arg("--memory-client-child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the B7 client process")?;
        let stdin = child.stdin.take().context("client process stdin")?;
        let stdout = child.stdout.take().context("client process stdout")?;
        Ok(ClientProcess { child, stdin: Some(stdin), stdout: BufReader::new(stdout) })
    }

    /// Sends one command and returns the numbers of its `ok` answer (RSS first).
    fn ask(&mut self, command: &str) -> anyhow::Result<Vec<u64>> {
        let stdin = self.stdin.as_mut().context("client process already finished")?;
        let mut line = String::new();
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            writeln!(stdin, "{command}")?;
            stdin.flush()?;
            anyhow::ensure!(self.stdout.read_line(&mut line)? > 0, "the client process exited");
            Ok(())
        })?;
        let answer = line.trim();
        let numbers = answer.strip_prefix("ok ").with_context(|| format!("{command:?}: {answer}"))?;
        numbers.split_whitespace().map(|n| n.parse().with_context(|| format!("number {n:?}"))).collect()
    }

    /// Ends the child's input and waits for it to exit.
    fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = tokio::task::block_in_place(|| self.child.wait())?;
        anyhow::ensure!(status.success(), "the client process failed: {status}");
        Ok(())
    }
}

/// Opens idle connections at each size in `sizes` (ascending), then the hostile one.
pub(crate) async fn run(sizes: &[usize]) -> anyhow::Result<MemoryResult> {
    let transport = TransportLimits::default();
    let server = crate::setup::start_server_with(transport.clone()).await?;
    let echo = crate::baseline::start_echo_with(&transport, None)?;
    let qpc = format!("{} {}", server.server.local_addr(), server.server.fingerprint());
    let bare = format!("{} {}", echo.addr, echo.fingerprint);
    let mut clients = ClientProcess::spawn()?;
    clients.ask(&format!("echo {bare} {WARM_UP}"))?;
    clients.ask(&format!("server {qpc} {WARM_UP}"))?;

    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    let (mut echo_growth, mut server_growth, mut client_growth) = (0u64, 0u64, 0u64);
    let mut steps = Vec::new();
    for &size in &sizes {
        let before = rss_kib()?;
        let child_before = first(&clients.ask(&format!("echo {bare} {}", WARM_UP + size))?)?;
        let middle = rss_kib()?;
        let child_after = first(&clients.ask(&format!("server {qpc} {}", WARM_UP + size))?)?;
        let after = rss_kib()?;
        echo_growth += middle.saturating_sub(before);
        server_growth += after.saturating_sub(middle);
        client_growth += child_after.saturating_sub(child_before);
        let per = |growth: u64| growth as f64 / size.max(1) as f64;
        steps.push(MemoryStep {
            connections: size,
            server_kib_per_connection: per(server_growth),
            echo_kib_per_connection: per(echo_growth),
            client_kib_per_connection: per(client_growth),
            rss_kib: after,
        });
    }

    let before = rss_kib()?;
    let stats = clients.ask(&format!("hostile {qpc} {}", transport.max_concurrent_rpcs))?;
    let after = rss_kib()?;
    let stat = |index: usize| stats.get(index).copied().context("hostile statistics");
    let hostile = HostileResult {
        stream_limit: stat(1)?,
        partial_headers_held: stat(2)?,
        bodies_held: stat(3)?,
        bodies_refused: stat(4)?,
        claimed_bytes_per_body: stat(5)?,
        body_bytes_sent: stat(6)?,
        rss_growth_kib: after.saturating_sub(before),
    };
    clients.finish()?;
    server.server.shutdown().await;
    Ok(MemoryResult {
        method: "VmRSS growth of the server process (clients in a child process), echo = bare quinn server",
        steps,
        hostile,
    })
}

fn first(numbers: &[u64]) -> anyhow::Result<u64> {
    numbers.first().copied().context("an RSS figure")
}

/// The one-line stderr summary.
pub(crate) fn describe(result: &MemoryResult) -> String {
    let steps: Vec<String> = result
        .steps
        .iter()
        .map(|step| {
            format!(
                "N={}: server {:.1} KiB/connection (bare quinn echo {:.1}; client side {:.1})",
                step.connections,
                step.server_kib_per_connection,
                step.echo_kib_per_connection,
                step.client_kib_per_connection
            )
        })
        .collect();
    let hostile = &result.hostile;
    format!(
        "{}; one hostile connection: +{:.1} MiB ({} bodies held, {} refused, {:.1} MiB sent; {} partial headers held)",
        steps.join(", "),
        hostile.rss_growth_kib as f64 / 1024.0,
        hostile.bodies_held,
        hostile.bodies_refused,
        hostile.body_bytes_sent as f64 / (1024.0 * 1024.0),
        hostile.partial_headers_held
    )
}
