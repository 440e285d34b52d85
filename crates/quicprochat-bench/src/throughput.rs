//! B3 as a suite: at each connections count C, C sender/recipient pairs
//! for every value of `--devices-per-account` (all set up, and every
//! receiving device subscribed, before the first ramp, so each ramp runs
//! beside the same idle connections), then a ramp of the offered rate
//! against the server for each value in the order given, then one against
//! the bare quinn echo; and at the end the SQLite baseline. Each server
//! ramp also counts what the server stored over it (`storage.rs`).
//!
//! One step of a ramp is `load.rs`; the pairs are `pairs.rs`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cpu::ServerRuntime;
use crate::histogram::Summary;
use crate::load::{run_step, start_receivers, Deliveries, StepResult, Target};
use crate::pairs::{make_pair, Pair};
use crate::setup::BenchServer;
use crate::storage::{Assigned, StoredPerMessage};
use crate::{baseline, setup, Args};

/// What B3 measured.
pub(crate) struct ThroughputResult {
    /// Per connections count: the server's ramps (one per devices value), then the echo's.
    pub(crate) ramps: Vec<Ramp>,
    pub(crate) sqlite_inserts_per_s: f64,
    /// Latency of each SQLite baseline insert (one fsync'd commit).
    pub(crate) sqlite_commit_latency: Summary,
    /// Bytes of the pre-encrypted message the pairs send.
    pub(crate) ciphertext_bytes: usize,
}

/// The pairs of one devices-per-account value.
struct Pool {
    devices: usize,
    pairs: Vec<Pair>,
}

/// Runs B3 against `server` (on `servers`, with the echo beside it) at
/// every connections count and devices value of `args`.
pub(crate) async fn run(
    args: &Args,
    server: &BenchServer,
    servers: &ServerRuntime,
    rates: &[f64],
    base: Instant,
) -> anyhow::Result<ThroughputResult> {
    let echo = {
        let _on_servers = servers.handle().enter();
        baseline::start_echo()?
    };
    let deliveries = Arc::new(Deliveries::default());
    let mut pools: Vec<Pool> =
        args.devices_per_account.iter().map(|&devices| Pool { devices, pairs: Vec::new() }).collect();
    let mut echo_clients = Vec::new();
    let mut ramps = Vec::new();
    let mut step_id = 0;
    for &connections in &args.connections {
        for pool in &mut pools {
            eprint!("setting up {connections} sender/recipient pairs, {} device(s) per account ", pool.devices);
            while pool.pairs.len() < connections {
                let pair = make_pair(server, pool.pairs.len(), args.payload, pool.devices).await?;
                start_receivers(&pair, deliveries.clone(), base).await?;
                pool.pairs.push(pair);
                if pool.pairs.len() % 50 == 0 {
                    eprint!(".");
                    let _ = std::io::stderr().flush();
                }
            }
            eprintln!(" done");
        }
        while echo_clients.len() < connections {
            echo_clients.push(setup::connect(echo.addr, echo.pin()).await?);
        }
        for pool in &pools {
            let target = Target::Server { pairs: &pool.pairs[..connections], deliveries: &deliveries };
            let before = Assigned::read(server)?;
            let mut server_ramp =
                ramp(&target, RampTarget::server(pool.devices), connections, args, rates, base, &mut step_id).await;
            let acknowledged = server_ramp.steps.iter().map(|step| step.acknowledged).sum();
            server_ramp.stored = Assigned::read(server)?.since(before, acknowledged);
            ramps.push(server_ramp);
        }
        let target = Target::Echo { clients: &echo_clients[..connections] };
        ramps.push(ramp(&target, RampTarget::ECHO, connections, args, rates, base, &mut step_id).await);
    }
    let sqlite_seconds = if args.quick { 1.0 } else { 6.0 };
    let (sqlite_inserts_per_s, sqlite_commit_latency) =
        baseline::sqlite_inserts_per_second(server.dir.path(), args.payload, Duration::from_secs_f64(sqlite_seconds))?;
    eprintln!(
        "sqlite durable single-row inserts: {sqlite_inserts_per_s:.0}/s; each commit p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
        sqlite_commit_latency.p50_ms,
        sqlite_commit_latency.p99_ms,
        sqlite_commit_latency.p999_ms,
        sqlite_commit_latency.max_ms
    );
    let ciphertext_bytes =
        pools.iter().flat_map(|pool| pool.pairs.first()).map(|pair| pair.ciphertext.len()).next().unwrap_or(0);
    Ok(ThroughputResult { ramps, sqlite_inserts_per_s, sqlite_commit_latency, ciphertext_bytes })
}

/// What a ramp loads: the server, with its devices per account, or the echo.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RampTarget {
    pub(crate) target: &'static str,
    /// Devices per account (server ramps only).
    pub(crate) devices_per_account: Option<usize>,
}

impl RampTarget {
    const ECHO: RampTarget = RampTarget { target: "echo", devices_per_account: None };
    /// B9's pairs of one server's own users, and its pairs across two servers.
    pub(crate) const LOCAL: RampTarget = RampTarget { target: "local", devices_per_account: Some(1) };
    pub(crate) const FEDERATED: RampTarget = RampTarget { target: "fed", devices_per_account: Some(1) };

    fn server(devices: usize) -> RampTarget {
        RampTarget { target: "server", devices_per_account: Some(devices) }
    }

    /// How progress lines name it: `server`, `server/2d`, `echo`.
    fn label(&self) -> String {
        match self.devices_per_account {
            Some(devices) if devices > 1 => format!("{}/{devices}d", self.target),
            _ => self.target.to_owned(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Ramp {
    pub(crate) connections: usize,
    #[serde(flatten)]
    pub(crate) what: RampTarget,
    pub(crate) steps: Vec<StepResult>,
    /// Highest offered rate served with p99 within the bound and ≥ 95 % achieved.
    pub(crate) max_sustained_per_s: f64,
    /// Copies delivered per second at that rate (server ramps): the rate ×
    /// devices each message went to.
    pub(crate) max_copies_per_s: Option<f64>,
    /// Steps that missed the bound and were run again (see `--step-retries`).
    pub(crate) retried_steps: u32,
    /// What the server stored over the whole ramp (server ramps).
    pub(crate) stored: Option<StoredPerMessage>,
}

impl Ramp {
    fn is_server(&self) -> bool {
        self.what.devices_per_account.is_some()
    }
}

fn print_step(label: &str, connections: usize, step: &StepResult) {
    let copies = match (step.copies_per_message, step.copies_per_s) {
        (Some(copies), Some(per_s)) if copies > 1 => format!(" ({copies} copies each: {per_s:.0} copies/s)"),
        _ => String::new(),
    };
    let delivery = match (step.delivery, step.delivery_service) {
        (Some(d), Some(service)) => format!(
            " | push p50 {:.2} p99 {:.2} p99.9 {:.2} ms (from dispatch p50 {:.2} p99 {:.2})",
            d.p50_ms, d.p99_ms, d.p999_ms, service.p50_ms, service.p99_ms
        ),
        _ => String::new(),
    };
    let cpu = step.cpu.map_or(String::new(), |cpu| {
        format!(
            " | server CPU {:.1} µs/msg ({:.2} cores; alone {:.0}/s), process {:.1} µs/msg",
            cpu.server_us_per_message, cpu.server_cores, cpu.server_alone_per_s, cpu.process_us_per_message
        )
    });
    let wire = step.wire.map_or(String::new(), |wire| {
        format!(
            " | {:.2} datagrams/msg ({:.2} ACK frames, {} lost)",
            wire.datagrams_per_message, wire.ack_frames_per_message, wire.lost_packets
        )
    });
    eprintln!(
        "{label:<6} C={connections:<5} offered {:>8.0}/s achieved {:>8.0}/s{copies} | ack p50 {:.2} p99 {:.2} ms (from dispatch p50 {:.2}){delivery}{cpu}{wire} | errors {} lost {} dup {}",
        step.offered_per_s,
        step.achieved_per_s,
        step.ack.p50_ms,
        step.ack.p99_ms,
        step.ack_service.p50_ms,
        step.errors,
        step.lost,
        step.duplicates
    );
}

/// The last run at the ramp's highest passed rate: the one that passed.
fn passed_step_at_max(ramp: &Ramp) -> Option<&StepResult> {
    ramp.steps.iter().rev().find(|step| step.offered_per_s == ramp.max_sustained_per_s)
}

fn within_bound(step: &StepResult, max_p99_ms: f64) -> bool {
    let p99 = step.delivery.map_or(step.ack.p99_ms, |d| d.p99_ms);
    p99 <= max_p99_ms && step.achieved_per_s >= 0.95 * step.offered_per_s && step.errors == 0
}

/// Steps the offered rate up from `start` until a step misses the bound (or `max_steps`).
pub(crate) async fn ramp(
    target: &Target<'_>,
    what: RampTarget,
    connections: usize,
    args: &Args,
    rates: &[f64],
    base: Instant,
    step_id: &mut u32,
) -> Ramp {
    let label = what.label();
    let mut steps = Vec::new();
    let mut max_sustained = 0.0f64;
    let mut retried_steps = 0;
    for &rate in rates {
        let mut retries = 0;
        let ok = loop {
            *step_id += 1;
            let step = run_step(target, *step_id, rate, Duration::from_secs_f64(args.step_secs), base).await;
            print_step(&label, connections, &step);
            let ok = within_bound(&step, args.max_p99_ms);
            steps.push(step);
            if ok || args.quick || retries >= args.step_retries {
                break ok;
            }
            retries += 1;
            retried_steps += 1;
            eprintln!("{label:<6} C={connections:<5} missed the bound at {rate:.0}/s; running that step again");
        };
        if ok {
            max_sustained = max_sustained.max(rate);
        } else if !args.quick {
            break;
        }
    }
    let mut ramp = Ramp {
        connections,
        what,
        steps,
        max_sustained_per_s: max_sustained,
        max_copies_per_s: None,
        retried_steps,
        stored: None,
    };
    ramp.max_copies_per_s =
        passed_step_at_max(&ramp).and_then(|step| step.copies_per_message).map(|copies| max_sustained * copies as f64);
    ramp
}

/// Prints B3's table: per connections count, a line per server ramp (with
/// its devices per account, copies per message and copies/s, and what it
/// stored) against the echo of the same count; then, where the same count
/// ran with one device per account and with more, the copies/s of each
/// against the one-device figure.
pub(crate) fn print_summary(ramps: &[Ramp]) {
    println!(
        "C      dev copies  server max/s  copies/s  echo max/s  ratio   server p99 push at max (ms)  steps run again  CPU µs/msg at max (server/echo)  server alone/s (copies)  stored: bodies/msg, rows/body"
    );
    for server in ramps.iter().filter(|ramp| ramp.is_server()) {
        let echo = ramps.iter().find(|ramp| !ramp.is_server() && ramp.connections == server.connections);
        let echo_max = echo.map_or(f64::NAN, |echo| echo.max_sustained_per_s);
        let at_max = passed_step_at_max(server);
        let copies = at_max.and_then(|step| step.copies_per_message).unwrap_or(1);
        let p99 = at_max.and_then(|step| step.delivery).map_or(f64::NAN, |d| d.p99_ms);
        let ratio = if echo_max > 0.0 { server.max_sustained_per_s / echo_max } else { f64::NAN };
        let server_cpu = at_max.and_then(|step| step.cpu);
        let echo_cpu = echo.and_then(passed_step_at_max).and_then(|step| step.cpu);
        let alone = server_cpu.map_or(f64::NAN, |cpu| cpu.server_alone_per_s);
        let (bodies, rows) =
            server.stored.map_or((f64::NAN, f64::NAN), |s| (s.bodies_per_message, s.queue_rows_per_body));
        println!(
            "{:<6} {:>3} {:>6} {:>13.0} {:>9.0} {:>11.0} {:>6.2}   {:>6.2}                       {}/{}              {:>6.1} / {:<6.1}                  {:>8.0} ({:.0})        {:.3}, {:.2}",
            server.connections,
            server.what.devices_per_account.unwrap_or(1),
            copies,
            server.max_sustained_per_s,
            server.max_copies_per_s.unwrap_or(f64::NAN),
            echo_max,
            ratio,
            p99,
            server.retried_steps,
            echo.map_or(0, |echo| echo.retried_steps),
            server_cpu.map_or(f64::NAN, |cpu| cpu.server_us_per_message),
            echo_cpu.map_or(f64::NAN, |cpu| cpu.server_us_per_message),
            alone,
            alone * copies as f64,
            bodies,
            rows,
        );
    }
    for ratio in per_copy_ratios(ramps) {
        println!(
            "C={} {} devices per account: copies/s at max {:.2}x the 1-device figure; server alone, copies/s {:.2}x",
            ratio.connections, ratio.devices, ratio.end_to_end, ratio.server_alone
        );
    }
}

/// Copies delivered per second with `devices` per account against one
/// device per account, at the same connections count of the same run.
pub(crate) struct PerCopyRatio {
    pub(crate) connections: usize,
    pub(crate) devices: usize,
    /// Highest passed rate × copies per message, over the 1-device ramp's.
    pub(crate) end_to_end: f64,
    /// The server's capacity alone at its highest passed step × copies, over the 1-device ramp's.
    pub(crate) server_alone: f64,
}

fn per_copy_ratios(ramps: &[Ramp]) -> Vec<PerCopyRatio> {
    let alone_copies = |ramp: &Ramp| {
        let at_max = passed_step_at_max(ramp);
        let copies = at_max.and_then(|step| step.copies_per_message).unwrap_or(1) as f64;
        at_max.and_then(|step| step.cpu).map_or(f64::NAN, |cpu| cpu.server_alone_per_s * copies)
    };
    let mut ratios = Vec::new();
    for ramp in ramps.iter().filter(|ramp| ramp.what.devices_per_account.is_some_and(|devices| devices > 1)) {
        let Some(single) = ramps
            .iter()
            .find(|other| other.connections == ramp.connections && other.what.devices_per_account == Some(1))
        else {
            continue;
        };
        ratios.push(PerCopyRatio {
            connections: ramp.connections,
            devices: ramp.what.devices_per_account.unwrap_or(1),
            end_to_end: ramp.max_copies_per_s.unwrap_or(f64::NAN) / single.max_copies_per_s.unwrap_or(f64::NAN),
            server_alone: alone_copies(ramp) / alone_copies(single),
        });
    }
    ratios
}
