//! `qpc-bench`: the server suites of BENCHMARKS.md (B3–B7) against an
//! in-process `qpc-server` (embedded SQLite, `synchronous=FULL`). B3 starts
//! C sender / recipient pairs each in a two-member MLS group and steps an
//! open-loop arrival rate up until the p99 of send → push exceeds a bound
//! (`throughput.rs`; one step is `load.rs`); in the same run it measures
//! the baselines: a bare quinn echo with the same framing, and a raw SQLite
//! insert loop with the same durability. B4
//! is fan-out (`fanout.rs`), B5 commit sequencing (`commits.rs`), B6
//! handshakes and restart (`connections.rs`), B7 memory (`memory.rs`);
//! `disk` times the data directory's fsyncs alone, the floor under every
//! durable figure (`disk.rs`); `wire.rs` counts B3's datagrams per message.
//! B9 is federation between two in-process servers (`federation.rs`);
//! `plugins` is B3 against servers with no plugin, a no-op and the rate
//! limiter (`plugins.rs`). B8 is the client's own cost through `QpcClient`
//! beside raw OpenMLS on the same storage (`client_cost/`).
//! `--only` / `--skip` pick suites. `--devices-per-account 1,2` runs B3 and
//! B4 once per value in the same process (`pairs.rs`, `devices.rs`): with N
//! devices per account every device is a leaf and online, and each message
//! is delivered to every device but the sending one. `--quick` is the CI
//! check: a few seconds, failing only on lost or duplicated messages or
//! errors.

mod baseline;
mod client_cost;
mod commits;
mod connections;
mod cpu;
mod devices;
mod disk;
mod fanout;
mod fanout_baseline;
mod federation;
mod histogram;
mod load;
mod memory;
mod pairs;
mod plugins;
mod relay;
mod setup;
mod storage;
mod throughput;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::load::MAX_COPIES;
use crate::throughput::Ramp;

/// Load generator for qpc-server: open-loop durable message throughput and
/// send → push latency at several connection counts, with baselines (B3);
/// fan-out (B4); commit sequencing (B5); handshakes and restart (B6); memory
/// per connection (B7). Every suite runs unless --only / --skip say otherwise.
#[derive(Debug, Parser)]
#[command(name = "qpc-bench", version)]
struct Args {
    /// The CI check, a few seconds per suite: B3 at C = 1 and 10 at low rates, tiny B4–B7
    /// (overrides their sizes); fails only on lost or duplicated messages or errors.
    #[arg(long)]
    quick: bool,
    /// Sender connections (each with its own recipient connection), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    connections: Vec<usize>,
    /// First offered rate of each ramp, messages per second.
    #[arg(long, default_value_t = 500.0)]
    start_rate: f64,
    /// Factor between consecutive offered rates.
    #[arg(long, default_value_t = 1.5)]
    rate_factor: f64,
    /// The ramp stops once send → push p99 exceeds this many milliseconds.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// A step that misses the bound is run again this many times before the
    /// ramp stops (every run is kept in the results): a single disk stall of
    /// 100 ms or more (see BENCHMARKS.md) should not end a ramp at a low rate.
    #[arg(long, default_value_t = 1)]
    step_retries: u32,
    /// Length of each rate step, seconds.
    #[arg(long, default_value_t = 3.0)]
    step_secs: f64,
    /// Plaintext bytes per message (the ciphertext is larger).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// B4: members of the fan-out group (0 skips B4).
    #[arg(long, default_value_t = 1000)]
    fanout_members: usize,
    /// B4: messages sent to the fan-out group, one after another.
    #[arg(long, default_value_t = 20)]
    fanout_messages: usize,
    /// B4: messages then sent to the group all at once, for deliveries/s with messages in flight together.
    #[arg(long, default_value_t = 50)]
    fanout_burst: usize,
    /// B3 and B4: devices per account, comma-separated; each value is run in
    /// turn, in this order, in the same process. With N, each account has N
    /// devices, all leaves of its groups and all online, and a message goes
    /// to every device but the sending one (2N − 1 per B3 pair).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    devices_per_account: Vec<usize>,
    /// B5: group sizes N whose commit acceptance (SubmitCommit round trip) is measured.
    #[arg(long, value_delimiter = ',', default_value = "2,100,1000")]
    commit_sizes: Vec<usize>,
    /// B5: successive commits measured per group size (alternately adding and removing one member).
    #[arg(long, default_value_t = 30)]
    commits: usize,
    /// B6: clients per handshake phase (connect; connect + register; connect + login).
    #[arg(long, default_value_t = 500)]
    handshake_clients: usize,
    /// B6: handshakes in flight at once (also while setting up the restart's idle clients).
    #[arg(long, default_value_t = 32)]
    handshake_concurrency: usize,
    /// B6: idle subscribed clients that must come back after a server restart (0 skips the restart).
    #[arg(long, default_value_t = 1000)]
    restart_clients: usize,
    /// Disk: seconds of WAL-sized appends and fsyncs timed in the data directory's file system.
    #[arg(long, default_value_t = 30.0)]
    disk_secs: f64,
    /// B7: numbers of idle, logged-in, subscribed connections at which RSS is measured.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    memory_connections: Vec<usize>,
    /// B9: sender connections of the local and of the federated ramp (each sender's recipient on the other server).
    #[arg(long, default_value_t = 10)]
    federation_connections: usize,
    /// B9: seconds the link between the two servers stays cut while the federated pairs send.
    #[arg(long, default_value_t = 60.0)]
    federation_partition_secs: f64,
    /// B9: messages per second sent to the other server during the cut.
    #[arg(long, default_value_t = 1000.0)]
    federation_partition_rate: f64,
    /// B3 with plugins: sender connections of each server's ramp.
    #[arg(long, default_value_t = 10)]
    plugin_connections: usize,
    /// B8: messages one client sends and another catches up on.
    #[arg(long, default_value_t = 10_000)]
    b8_messages: usize,
    /// B8: groups the second catch-up spreads the messages over.
    #[arg(long, default_value_t = 100)]
    b8_groups: usize,
    /// B8: send -> shown samples between two online clients.
    #[arg(long, default_value_t = 500)]
    b8_singles: usize,
    /// Run only these suites (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Suite>,
    /// Skip these suites (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Suite>,
    /// Internal: B7's client process, driven over stdin/stdout by the parent run.
    #[arg(long, hide = true)]
    memory_client_child: bool,
    /// Where to write the machine-readable results.
    #[arg(long, default_value = "qpc-bench.json")]
    out: PathBuf,
}

/// A suite of BENCHMARKS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// Durable message throughput and send → push latency, with baselines.
    B3,
    /// Fan-out to a group of online members.
    B4,
    /// Commit sequencing: SubmitCommit acceptance at several group sizes.
    B5,
    /// Handshakes (+ register / login) per second, and resubscription after a restart.
    B6,
    /// RSS per idle subscribed connection, and RSS held by one hostile connection.
    B7,
    /// The data directory's disk alone: fsync latency and stalls over the p99 bound.
    Disk,
    /// Federation: send → push and throughput across two servers beside one, and a partition's backlog.
    B9,
    /// B3 against servers with no plugin, the no-op plugin and the rate limiter, in one run.
    Plugins,
    /// The client's own cost: catch-up, sending and send -> shown through QpcClient beside raw OpenMLS.
    B8,
}

impl Args {
    fn runs(&self, suite: Suite) -> bool {
        (self.only.is_empty() || self.only.contains(&suite)) && !self.skip.contains(&suite)
    }

    /// Refuses numbers that would stop the run part-way (a duration out of
    /// range) or make it meaningless (a rate or bound of zero).
    fn check(&self) -> anyhow::Result<()> {
        let positive = [
            ("--start-rate", self.start_rate),
            ("--rate-factor", self.rate_factor),
            ("--max-p99-ms", self.max_p99_ms),
            ("--step-secs", self.step_secs),
            ("--federation-partition-secs", self.federation_partition_secs),
            ("--federation-partition-rate", self.federation_partition_rate),
        ];
        for (flag, value) in positive {
            anyhow::ensure!(value.is_finite() && value > 0.0, "{flag} must be a positive number, not {value}");
        }
        let durations = [
            ("--step-secs", self.step_secs),
            ("--disk-secs", self.disk_secs),
            ("--federation-partition-secs", self.federation_partition_secs),
        ];
        for (flag, seconds) in durations {
            flag_duration(flag, seconds)?;
        }
        let most_devices = MAX_COPIES.div_ceil(2);
        anyhow::ensure!(!self.devices_per_account.is_empty(), "--devices-per-account needs at least one value");
        for &devices in &self.devices_per_account {
            anyhow::ensure!(
                (1..=most_devices).contains(&devices),
                "--devices-per-account must be 1 to {most_devices}, not {devices}"
            );
        }
        Ok(())
    }
}

/// `seconds` given by `flag` as a duration; an error naming the flag if it
/// is negative, not a number or too large.
fn flag_duration(flag: &str, seconds: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(seconds).with_context(|| format!("{flag} {seconds}"))
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    durability: &'static str,
    payload_bytes: usize,
    ciphertext_bytes: usize,
    max_p99_ms: f64,
    ramps: Vec<Ramp>,
    /// The SQLite baseline of B3 (absent when B3 is skipped).
    sqlite_inserts_per_s: Option<f64>,
    /// Latency of each of those inserts (one fsync'd commit).
    sqlite_commit_latency: Option<histogram::Summary>,
    /// B4, one entry per value of `--devices-per-account`.
    fanout: Vec<fanout::FanoutResult>,
    /// B5, one entry per group size.
    commits: Vec<commits::CommitResult>,
    /// B6.
    connections: Option<connections::ConnectionsResult>,
    /// B7.
    memory: Option<memory::MemoryResult>,
    /// The disk alone, before any other suite.
    disk: Option<disk::DiskResult>,
    /// B9.
    federation: Option<federation::FederationResult>,
    /// B3 with plugins.
    plugins: Option<plugins::PluginsResult>,
    /// B8.
    client_cost: Option<client_cost::ClientCostResult>,
    lost: u64,
    duplicates: u64,
    /// Failed handshakes and clients that did not come back (B6; B3 counts
    /// its errors per step, and B5 and B7 stop at the first error).
    errors: u64,
}

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
    qpc_version: &'static str,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Machine {
        nproc: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        cpu,
        qpc_version: env!("CARGO_PKG_VERSION"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quicprochat_rpc::install_crypto_provider();
    // The in-process server's warnings (a slow storage batch, a small UDP
    // buffer) go to stderr; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let mut args = Args::parse();
    if args.memory_client_child {
        return memory::serve_parent().await;
    }
    args.check()?;
    let rates: Vec<f64> = if args.quick {
        args.connections = vec![1, 10];
        args.step_secs = 1.0;
        args.fanout_members = args.fanout_members.min(20);
        args.fanout_messages = args.fanout_messages.min(5);
        args.fanout_burst = args.fanout_burst.min(5);
        args.commit_sizes = vec![2, 10];
        args.commits = args.commits.min(3);
        args.handshake_clients = args.handshake_clients.min(20);
        args.restart_clients = args.restart_clients.min(20);
        args.memory_connections = vec![50];
        args.disk_secs = args.disk_secs.min(1.0);
        args.federation_connections = args.federation_connections.min(2);
        args.federation_partition_secs = args.federation_partition_secs.min(1.0);
        args.plugin_connections = args.plugin_connections.min(2);
        args.b8_messages = args.b8_messages.min(300);
        args.b8_singles = args.b8_singles.min(20);
        args.b8_groups = args.b8_groups.min(3);
        vec![200.0, 1000.0]
    } else {
        (0..40).map(|i| args.start_rate * args.rate_factor.powi(i)).take_while(|rate| *rate < 2_000_000.0).collect()
    };
    // The disk first, while nothing else uses it or the cores.
    let disk = if args.runs(Suite::Disk) && args.disk_secs > 0.0 {
        let dir = tempfile::tempdir().context("temporary dir for the disk probe")?;
        eprintln!("disk: timing fsyncs in {} for {:.0} s", dir.path().display(), args.disk_secs);
        let duration = flag_duration("--disk-secs", args.disk_secs)?;
        let bound = flag_duration("--max-p99-ms", args.max_p99_ms / 1e3)?;
        // Blocking file I/O and sleeps: off the runtime's threads.
        let result = tokio::task::spawn_blocking(move || disk::run(dir.path(), duration, bound))
            .await
            .context("the disk probe's thread")?
            .context("disk probe")?;
        eprintln!("disk: {}", disk::describe(&result));
        Some(result)
    } else {
        None
    };
    // B7 first among the server suites: RSS deltas mean something only before the allocator holds
    // memory freed by earlier suites (see memory.rs).
    let memory = if args.runs(Suite::B7) && !args.memory_connections.is_empty() {
        eprintln!("B7: RSS of idle subscribed connections at N = {:?}", args.memory_connections);
        let result = memory::run(&args.memory_connections).await.context("B7 memory")?;
        eprintln!("B7: {}", memory::describe(&result));
        Some(result)
    } else {
        None
    };
    let base = Instant::now();
    // The server (and B3's echo) run on a runtime of their own, so that B3
    // can split each step's CPU time between the server and the load.
    let servers = cpu::server_runtime().context("start the servers' runtime")?;
    let server = servers.handle().spawn(setup::start_server()).await.context("the server's start-up task")??;
    let b3 =
        if args.runs(Suite::B3) { Some(throughput::run(&args, &server, &servers, &rates, base).await?) } else { None };
    let fanout =
        if args.runs(Suite::B4) && args.fanout_members > 0 { run_b4(&args, &server).await? } else { Vec::new() };
    let mut commit_results = Vec::new();
    if args.runs(Suite::B5) {
        for &members in &args.commit_sizes {
            let result = commits::run(&server, members, args.commits).await.context("B5 commit sequencing")?;
            eprintln!("B5: {}", commits::describe(&result));
            commit_results.push(result);
        }
    }
    let connections = if args.runs(Suite::B6) {
        let result = connections::run(args.handshake_clients, args.handshake_concurrency, args.restart_clients)
            .await
            .context("B6 connections")?;
        eprintln!("B6: {}", connections::describe(&result));
        Some(result)
    } else {
        None
    };
    let federation = if args.runs(Suite::B9) && args.federation_connections > 0 {
        let result = federation::run(&args, &servers, &rates, base).await.context("B9 federation")?;
        for line in federation::describe(&result) {
            eprintln!("B9: {line}");
        }
        Some(result)
    } else {
        None
    };
    let plugins = if args.runs(Suite::Plugins) && args.plugin_connections > 0 {
        let result = plugins::run(&args, &servers, &rates, base).await.context("B3 with plugins")?;
        for line in plugins::describe(&result) {
            eprintln!("B3/plugins: {line}");
        }
        Some(result)
    } else {
        None
    };
    let client_cost = if args.runs(Suite::B8) && args.b8_messages > 0 {
        let result = client_cost::run(&server.address(), args.b8_messages, args.b8_groups, args.b8_singles)
            .await
            .context("B8 client cost")?;
        for line in client_cost::describe(&result) {
            eprintln!("B8: {line}");
        }
        Some(result)
    } else {
        None
    };
    let (federation_lost, federation_duplicates) = federation.as_ref().map_or((0, 0), federation::lost_and_duplicates);
    let (plugins_lost, plugins_duplicates) = plugins.as_ref().map_or((0, 0), plugins::lost_and_duplicates);
    let ramps = b3.as_ref().map_or(&[][..], |b3| &b3.ramps[..]);
    let lost = ramps.iter().flat_map(|ramp| &ramp.steps).map(|step| step.lost).sum::<u64>()
        + fanout.iter().map(|f| f.lost).sum::<u64>()
        + federation_lost
        + plugins_lost;
    let duplicates = ramps.iter().flat_map(|ramp| &ramp.steps).map(|step| step.duplicates).sum::<u64>()
        + fanout.iter().map(|f| f.duplicates).sum::<u64>()
        + federation_duplicates
        + plugins_duplicates;
    let errors = connections.as_ref().map_or(0, connections::ConnectionsResult::errors);
    let report = Report {
        machine: machine(),
        durability: "SQLite WAL, synchronous=FULL, one transaction per enqueue",
        payload_bytes: args.payload,
        ciphertext_bytes: b3.as_ref().map_or(0, |b3| b3.ciphertext_bytes),
        max_p99_ms: args.max_p99_ms,
        sqlite_inserts_per_s: b3.as_ref().map(|b3| b3.sqlite_inserts_per_s),
        sqlite_commit_latency: b3.as_ref().map(|b3| b3.sqlite_commit_latency),
        ramps: b3.map_or_else(Vec::new, |b3| b3.ramps),
        fanout,
        commits: commit_results,
        connections,
        memory,
        disk,
        federation,
        plugins,
        client_cost,
        lost,
        duplicates,
        errors,
    };
    print_summary(&report);
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("write {}", args.out.display()))?;
    eprintln!("results: {}", args.out.display());
    server.server.shutdown().await;
    drop(servers);
    if lost > 0 || duplicates > 0 {
        anyhow::bail!("{lost} copies of acknowledged messages lost, {duplicates} delivered twice to one device");
    }
    if errors > 0 {
        anyhow::bail!("{errors} B6 handshakes or reconnects failed");
    }
    Ok(())
}

/// B4 once per value of `--devices-per-account`, each followed by its
/// baseline: the same fan-out over bare quinn to as many connections as
/// the group has receiving devices.
async fn run_b4(args: &Args, server: &setup::BenchServer) -> anyhow::Result<Vec<fanout::FanoutResult>> {
    let mut results = Vec::new();
    for &devices in &args.devices_per_account {
        eprint!("B4: a group of {} members, {devices} device(s) per account ", args.fanout_members);
        let mut result =
            fanout::run(server, args.fanout_members, devices, args.fanout_messages, args.fanout_burst).await?;
        eprintln!(" {}", fanout::describe(&result));
        let bare = fanout_baseline::run(result.receivers, args.fanout_messages, result.ciphertext_bytes)
            .await
            .context("B4 baseline: fan-out over bare quinn")?;
        eprintln!(
            "B4 baseline, bare quinn to {} connections: last member after p50 {:.2} p99 {:.2} ms (server / bare: {:.2}x at p50)",
            result.receivers,
            bare.p50_ms,
            bare.p99_ms,
            result.last_recipient.p50_ms / bare.p50_ms.max(f64::MIN_POSITIVE)
        );
        result.bare_quinn_last_recipient = Some(bare);
        results.push(result);
    }
    Ok(results)
}

fn print_summary(report: &Report) {
    throughput::print_summary(&report.ramps);
    if let Some(sqlite) = report.sqlite_inserts_per_s {
        println!(
            "sqlite durable inserts/s: {:.0}  (server max / sqlite: {:.2})",
            sqlite,
            report
                .ramps
                .iter()
                .filter(|ramp| ramp.what.devices_per_account == Some(1))
                .map(|ramp| ramp.max_sustained_per_s)
                .fold(0.0, f64::max)
                / sqlite
        );
    }
    for result in &report.fanout {
        println!("B4 {}", fanout::describe(result));
    }
    for ratio in fanout::per_copy_ratios(&report.fanout) {
        println!("B4 {ratio}");
    }
    for result in &report.commits {
        println!("B5 {}", commits::describe(result));
    }
    if let Some(result) = &report.connections {
        println!("B6 {}", connections::describe(result));
    }
    if let Some(result) = &report.memory {
        println!("B7 {}", memory::describe(result));
    }
    if let Some(result) = &report.disk {
        println!("disk {}", disk::describe(result));
    }
    if let Some(result) = &report.federation {
        for line in federation::describe(result) {
            println!("B9 {line}");
        }
    }
    if let Some(result) = &report.plugins {
        for line in plugins::describe(result) {
            println!("B3/plugins {line}");
        }
    }
    if let Some(result) = &report.client_cost {
        for line in client_cost::describe(result) {
            println!("B8 {line}");
        }
    }
    println!("lost {} duplicates {} errors {}", report.lost, report.duplicates, report.errors);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("qpc-bench").chain(extra.iter().copied())).unwrap()
    }

    /// Numbers that would panic as a duration or make a ramp meaningless
    /// are refused up front, with the flag named; the defaults pass.
    #[test]
    fn bad_numbers_are_refused_before_the_run() {
        assert!(args(&[]).check().is_ok());
        assert!(args(&["--disk-secs=0"]).check().is_ok(), "0 skips the disk probe");
        assert!(args(&["--devices-per-account=2,1"]).check().is_ok());
        for bad in [
            "--step-secs=-1",
            "--step-secs=0",
            "--max-p99-ms=NaN",
            "--start-rate=inf",
            "--disk-secs=1e300",
            "--devices-per-account=0",
            "--devices-per-account=1,33",
        ] {
            let error = args(&[bad]).check().unwrap_err();
            let flag = bad.split('=').next().unwrap();
            assert!(format!("{error:#}").contains(flag), "{bad}: {error:#}");
        }
    }
}
