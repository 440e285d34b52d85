//! B3 with plugins (issue 20): the same C sender / recipient pairs and
//! open-loop ramp as B3, against four in-process servers in turn, in one
//! run: no plugin, the no-op `on_enqueue` plugin (what the machinery
//! itself costs a send: a queue, a thread hop and back), and the rate
//! limiter with limits far above the load (so it allows every message but
//! does its per-(sender, group) bookkeeping), and no plugin again (the
//! spread between the two servers without plugins is the run's own noise).
//! Reports each one's highest sustained rate against the first, and the p99
//! of send → push and the server's CPU per message at the highest rate all
//! sustained and at a quarter of it.
//!
//! The plugins are the workspace's examples, built here with `cargo build
//! --examples` (same profile as this binary) into `target/plugin-examples`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;
use quicprochat_server::config::PluginConfig;
use quicprochat_server::RunningServer;
use serde::Serialize;
use tokio::time::Instant;

use crate::cpu::ServerRuntime;
use crate::load::{start_receivers, Deliveries, Target};
use crate::pairs::make_pair;
use crate::setup::{bench_config, bench_transport, BenchServer};
use crate::throughput::{ramp, Ramp, RampTarget};
use crate::Args;

/// One server's ramp.
#[derive(Debug, Serialize)]
pub(crate) struct Variant {
    pub(crate) plugins: &'static str,
    pub(crate) ramp: Ramp,
}

/// What the suite measured.
#[derive(Debug, Serialize)]
pub(crate) struct PluginsResult {
    pub(crate) variants: Vec<Variant>,
}

pub(crate) async fn run(
    args: &Args,
    runtime: &ServerRuntime,
    rates: &[f64],
    base: Instant,
) -> anyhow::Result<PluginsResult> {
    let dir = tempfile::tempdir().context("a directory for the plugins")?;
    let built = build_examples().context("building the example plugins")?;
    let noop = copy(&built, "noop", dir.path())?;
    let ratelimit = copy(&built, "ratelimit", dir.path())?;
    let mut limiter = PluginConfig::new(ratelimit);
    limiter.config_json = r#"{"per_second": 1000000.0, "burst": 1000000}"#.to_owned();
    // No plugin again at the end: the spread between the two is this run's
    // noise, against which the plugins' differences are read.
    let variants: [(&'static str, Vec<PluginConfig>); 4] = [
        ("none", Vec::new()),
        ("noop", vec![PluginConfig::new(noop)]),
        ("ratelimit", vec![limiter]),
        ("none-2", Vec::new()),
    ];
    let connections = args.plugin_connections;
    let mut results = Vec::new();
    let mut step_id = 2_000_000;
    for (name, plugins) in variants {
        let server = start(runtime, plugins).await.with_context(|| format!("a server with plugins {name}"))?;
        eprint!("B3/plugins {name}: setting up {connections} pairs ");
        let deliveries = Arc::new(Deliveries::default());
        let mut pairs = Vec::new();
        for index in 0..connections {
            let pair = make_pair(&server, index, args.payload, 1).await.context("a pair")?;
            start_receivers(&pair, deliveries.clone(), base).await?;
            pairs.push(pair);
            eprint!(".");
        }
        eprintln!(" done");
        let target = Target::Server { pairs: &pairs, deliveries: &deliveries };
        let what = RampTarget { target: name, devices_per_account: Some(1) };
        let ramp = ramp(&target, what, connections, args, rates, base, &mut step_id).await;
        results.push(Variant { plugins: name, ramp });
        drop(pairs);
        server.server.shutdown().await;
    }
    Ok(PluginsResult { variants: results })
}

async fn start(runtime: &ServerRuntime, plugins: Vec<PluginConfig>) -> anyhow::Result<BenchServer> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let listen = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let mut config = bench_config(&dir.path().join("data"), listen, bench_transport());
    config.plugins = plugins;
    let server = runtime.handle().spawn(RunningServer::start(config)).await.context("start-up task")??;
    Ok(BenchServer { server, dir })
}

/// Builds the example plugins with this binary's profile; returns their directory.
fn build_examples() -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = workspace.join("target/plugin-examples");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(&workspace).args(["build", "--locked", "-p", "quicprochat-plugins", "--examples"]);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    if profile == "release" {
        command.arg("--release");
    }
    let status = command.arg("--target-dir").arg(&target).status().context("run cargo")?;
    anyhow::ensure!(status.success(), "cargo build of the example plugins failed");
    Ok(target.join(profile).join("examples"))
}

/// The example plugin `name` copied into `dir`, owner-writable only.
fn copy(built: &Path, name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let library = format!("libqpc_plugin_{name}.so");
    let copy = dir.join(&library);
    std::fs::copy(built.join(&library), &copy).with_context(|| format!("copy {library}"))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}

/// Lines of the summary: each variant's maximum against no plugin; at the
/// highest rate all sustained, and at a quarter of it (where p99 is
/// not dominated by queueing at the edge), the p99 of send → push and the
/// server's CPU per message.
pub(crate) fn describe(result: &PluginsResult) -> Vec<String> {
    let Some(none) = result.variants.first() else { return Vec::new() };
    let common = result.variants.iter().map(|variant| variant.ramp.max_sustained_per_s).fold(f64::INFINITY, f64::min);
    let quarter = none
        .ramp
        .steps
        .iter()
        .map(|step| step.offered_per_s)
        .filter(|rate| *rate <= common / 4.0)
        .fold(f64::NAN, f64::max);
    let at = |ramp: &Ramp, rate: f64| {
        let step = ramp.steps.iter().rev().find(|step| step.offered_per_s == rate);
        let p99 = step.and_then(|step| step.delivery).map_or(f64::NAN, |delivery| delivery.p99_ms);
        let us = step.and_then(|step| step.cpu).map_or(f64::NAN, |cpu| cpu.server_us_per_message);
        (p99, us)
    };
    let mut lines = Vec::new();
    for variant in &result.variants {
        let max = variant.ramp.max_sustained_per_s;
        let mut line = format!(
            "C={} plugins {:<9} max {:>7.0}/s ({:.2}x none)",
            variant.ramp.connections,
            variant.plugins,
            max,
            max / none.ramp.max_sustained_per_s
        );
        for rate in [quarter, common] {
            let ((p99, us), (base_p99, base_us)) = (at(&variant.ramp, rate), at(&none.ramp, rate));
            line.push_str(&format!(
                " | at {rate:.0}/s: push p99 {p99:.2} ms ({:+.2}), server CPU {us:.1} µs/msg ({:.2}x)",
                p99 - base_p99,
                us / base_us
            ));
        }
        lines.push(line);
    }
    lines
}

/// Messages lost and duplicated over every step.
pub(crate) fn lost_and_duplicates(result: &PluginsResult) -> (u64, u64) {
    let steps = result.variants.iter().flat_map(|variant| &variant.ramp.steps);
    steps.fold((0, 0), |(lost, dup), step| (lost + step.lost, dup + step.duplicates))
}
