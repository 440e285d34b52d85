//! B9: federation. Two in-process servers, `a.bench` and `b.bench`, each
//! the other's peer and each reached through a relay that can be cut
//! (`relay.rs`); C senders on a whose recipients are on b, each pair in a
//! group a hosts (the message crosses a's stream to b), beside C pairs of
//! a's own users, in the same run and on the same two cores:
//! - idle send → push latency, local and federated, one pair each;
//! - a ramp of each as B3 runs them: the federated maximum against the local;
//! - a partition's backlog: both relays cut while the federated pairs send
//!   at a fixed rate, then healed; the time from the heal until every
//!   message was pushed to its recipient, and until a saw b again.
//!
//! Servers keep the default federation retry bounds (the full run; `--quick`
//! shortens them), so the drain includes the redial a real server makes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quicprochat_core::names::group_id_hosted_by;
use quicprochat_core::MlsClient;
use quicprochat_proto::{v1, Method};
use quicprochat_rpc::RpcClient;
use quicprochat_server::config::{PeerConfig, RateLimit};
use quicprochat_server::RunningServer;
use serde::Serialize;
use tokio::time::Instant;

use crate::cpu::ServerRuntime;
use crate::devices::{fetch_every_device, upload_own};
use crate::histogram::Summary;
use crate::load::{run_step, run_step_then, start_receivers, Deliveries, StepResult, Target};
use crate::pairs::{make_pair, Pair};
use crate::relay::Relay;
use crate::setup::{add_and_merge, bench_config, bench_transport, create_named_group, register, BenchServer};
use crate::throughput::{ramp, Ramp, RampTarget};
use crate::Args;

const A: &str = "a.bench";
const B: &str = "b.bench";

/// How long the partition's backlog may take to arrive after the heal.
const DRAIN_GRACE: Duration = Duration::from_secs(600);

/// What B9 measured.
#[derive(Debug, Serialize)]
pub(crate) struct FederationResult {
    /// One pair, a few messages a second: a's own users, then a → b.
    pub(crate) idle_local: StepResult,
    pub(crate) idle_federated: StepResult,
    /// The local ramp, then the federated one.
    pub(crate) ramps: Vec<Ramp>,
    pub(crate) partition: PartitionResult,
}

/// The backlog of a partition.
#[derive(Debug, Serialize)]
pub(crate) struct PartitionResult {
    pub(crate) seconds: f64,
    pub(crate) offered_per_s: f64,
    /// Messages a took (and kept for b) during the cut.
    pub(crate) acknowledged: u64,
    /// From the heal until a's connection to b was up again (0 when the
    /// cut was too short to close it).
    pub(crate) reconnect_s: f64,
    /// From the heal until the last message was pushed on b.
    pub(crate) drain_s: f64,
    /// Send → push of the backlog's messages.
    pub(crate) delivery: Option<Summary>,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
}

/// The two servers and the relays in front of them.
struct Servers {
    a: BenchServer,
    b: BenchServer,
    to_a: Relay,
    to_b: Relay,
}

pub(crate) async fn run(
    args: &Args,
    runtime: &ServerRuntime,
    rates: &[f64],
    base: Instant,
) -> anyhow::Result<FederationResult> {
    let servers = start_servers(runtime, args.quick).await?;
    let connections = args.federation_connections;
    eprint!("B9: setting up {connections} local and {connections} federated pairs ");
    let deliveries = Arc::new(Deliveries::default());
    let (mut local, mut federated) = (Vec::new(), Vec::new());
    for index in 0..connections {
        let pair = make_pair(&servers.a, index, args.payload, 1).await.context("a local pair")?;
        start_receivers(&pair, deliveries.clone(), base).await?;
        local.push(pair);
        let pair = federated_pair(&servers, index, args.payload).await.context("a federated pair")?;
        start_receivers(&pair, deliveries.clone(), base).await?;
        federated.push(pair);
        eprint!(".");
    }
    eprintln!(" done");
    let mut step_id = 1_000_000;
    let idle_rate = if args.quick { 20.0 } else { 50.0 };
    let idle_duration = Duration::from_secs(if args.quick { 1 } else { 10 });
    let mut idle = Vec::new();
    for pairs in [&local[..1], &federated[..1]] {
        step_id += 1;
        let target = Target::Server { pairs, deliveries: &deliveries };
        idle.push(run_step(&target, step_id, idle_rate, idle_duration, base).await);
    }
    let (idle_federated, idle_local) = (idle.remove(1), idle.remove(0));
    eprintln!("B9 idle: {}", describe_idle(&idle_local, &idle_federated));

    let mut ramps = Vec::new();
    for (pairs, what) in [(&local, RampTarget::LOCAL), (&federated, RampTarget::FEDERATED)] {
        let target = Target::Server { pairs, deliveries: &deliveries };
        ramps.push(ramp(&target, what, connections, args, rates, base, &mut step_id).await);
    }

    let partition =
        partition(&servers, Target::Server { pairs: &federated, deliveries: &deliveries }, args, step_id + 1, base)
            .await?;
    eprintln!("B9 partition: {}", describe_partition(&partition));
    for server in [servers.a, servers.b] {
        server.server.shutdown().await;
    }
    Ok(FederationResult { idle_local, idle_federated, ramps, partition })
}

/// Cuts both relays, sends to b at the partition rate for the partition's
/// length, heals, and waits for every message to be pushed on b.
async fn partition(
    servers: &Servers,
    target: Target<'_>,
    args: &Args,
    step_id: u32,
    base: Instant,
) -> anyhow::Result<PartitionResult> {
    let seconds = args.federation_partition_secs;
    let rate = if args.quick { 200.0 } else { args.federation_partition_rate };
    eprintln!("B9 partition: both relays cut, {rate:.0} msgs/s to b for {seconds:.0} s, then healed");
    servers.to_a.set_cut(true);
    servers.to_b.set_cut(true);
    let healed = std::sync::Mutex::new(None);
    let heal = || {
        servers.to_a.set_cut(false);
        servers.to_b.set_cut(false);
        if let Ok(mut healed) = healed.lock() {
            *healed = Some(Instant::now());
        }
    };
    let duration = crate::flag_duration("--federation-partition-secs", seconds)?;
    // A cut longer than QUIC's idle timeout closes a's connection to b;
    // after the heal a redials. A shorter one leaves it up (0 s).
    let reconnected = async {
        servers.a.server.wait_for_peer(B, DRAIN_GRACE, |status| !status.reachable).await?;
        servers.a.server.wait_for_peer(B, DRAIN_GRACE, |status| status.reachable).await?;
        Some(Instant::now())
    };
    let sending = run_step_then(&target, (step_id, rate, duration, base), heal, DRAIN_GRACE);
    tokio::pin!(reconnected, sending);
    let mut reconnected_at = None;
    let (step, drain) = loop {
        tokio::select! {
            done = &mut sending => break done,
            at = &mut reconnected, if reconnected_at.is_none() => reconnected_at = Some(at),
        }
    };
    let healed_at = healed.lock().ok().and_then(|healed| *healed);
    let reconnect_s = match (healed_at, reconnected_at.flatten()) {
        (Some(healed), Some(up)) => up.saturating_duration_since(healed).as_secs_f64(),
        (Some(_), None) => 0.0,
        (None, _) => f64::NAN,
    };
    Ok(PartitionResult {
        seconds,
        offered_per_s: rate,
        acknowledged: step.acknowledged,
        reconnect_s,
        drain_s: drain.as_secs_f64(),
        delivery: step.delivery,
        lost: step.lost,
        duplicates: step.duplicates,
    })
}

/// Starts b, then a, each configured with the other behind its relay.
async fn start_servers(runtime: &ServerRuntime, quick: bool) -> anyhow::Result<Servers> {
    let (to_a, to_b) = (Relay::bind().await?, Relay::bind().await?);
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut configs = Vec::new();
    for (dir, domain) in dirs.iter().zip([A, B]) {
        let mut config =
            bench_config(&dir.path().join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), bench_transport());
        config.domain = domain.to_owned();
        config.federation.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        config.rate_limits.key_package_claim_per_peer = RateLimit { burst: 1_000_000, period: Duration::from_secs(1) };
        if quick {
            config.federation.retry_min = Duration::from_millis(50);
            config.federation.retry_max = Duration::from_secs(1);
        }
        std::fs::create_dir_all(&config.data_dir)?;
        configs.push(config);
    }
    let pins = [
        quicprochat_server::server_identity(&configs[0])?.fingerprint(),
        quicprochat_server::server_identity(&configs[1])?.fingerprint(),
    ];
    let peer = |domain: &str, relay: &Relay, pin| PeerConfig {
        domain: domain.to_owned(),
        address: relay.addr().to_string(),
        fingerprints: vec![pin],
    };
    configs[0].federation.peers = vec![peer(B, &to_b, pins[1])];
    configs[1].federation.peers = vec![peer(A, &to_a, pins[0])];
    let mut started = Vec::new();
    for config in configs {
        let server = runtime.handle().spawn(RunningServer::start(config)).await.context("start-up task")??;
        started.push(server);
    }
    let (b_server, a_server) = (started.remove(1), started.remove(0));
    to_a.aim(a_server.federation_addr().context("a's federation port")?);
    to_b.aim(b_server.federation_addr().context("b's federation port")?);
    let [dir_a, dir_b] = dirs;
    for (server, peer) in [(&a_server, B), (&b_server, A)] {
        server.wait_for_peer(peer, Duration::from_secs(30), |status| status.reachable).await.context("peering")?;
    }
    Ok(Servers {
        a: BenchServer { server: a_server, dir: dir_a },
        b: BenchServer { server: b_server, dir: dir_b },
        to_a,
        to_b,
    })
}

/// A sender on a and its recipient on b in a group a hosts; the
/// recipient's queue drained of the Welcome that crossed the stream.
async fn federated_pair(servers: &Servers, index: usize, payload_len: usize) -> anyhow::Result<Pair> {
    let (sender_name, recipient_name) = (format!("fs{index}"), format!("fr{index}"));
    let (sender, sender_identity) = register(servers.a.address(), &sender_name).await?;
    let (recipient, recipient_identity) = register(servers.b.address(), &recipient_name).await?;
    let state = servers.a.dir.path().join(format!("federated-clients-{index}"));
    std::fs::create_dir_all(&state)?;
    let sender_mls = MlsClient::open(&state.join("s.db"), sender_identity, &sender_name)?.with_home_domain(A)?;
    let recipient_mls =
        MlsClient::open(&state.join("r.db"), recipient_identity, &recipient_name)?.with_home_domain(B)?;
    upload_own(&recipient, &recipient_mls, 1, true).await?;
    let mut random = [0u8; 16];
    random.copy_from_slice(format!("fedbench{index:08}").as_bytes());
    let group_id = group_id_hosted_by(random, A);
    create_named_group(&sender, &sender_mls, &group_id, format!("federated {index}")).await?;
    let key_packages = fetch_every_device(&sender, &format!("{recipient_name}@{B}")).await?;
    add_and_merge(&sender, &sender_mls, &group_id, &key_packages, b"add").await?;
    let ciphertext = sender_mls.encrypt(&group_id, &vec![b'x'; payload_len])?;
    wait_for_welcome(&recipient).await?;
    Ok(Pair { sender, receivers: vec![recipient], group_id: group_id.into(), ciphertext: ciphertext.into() })
}

/// Fetches until the Welcome is queued, then acknowledges it.
async fn wait_for_welcome(rpc: &RpcClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    loop {
        let request = v1::FetchRequest { after_seq: 0, limit: 10 };
        let fetched: v1::FetchResponse = rpc.call(Method::Fetch, &request).await?;
        if fetched.entries.iter().any(|entry| entry.kind == v1::EntryKind::Welcome as i32) {
            let _: v1::AckResponse = rpc.call(Method::Ack, &v1::AckRequest { up_to_seq: fetched.head_seq }).await?;
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the Welcome never reached b");
        poll.tick().await;
    }
}

fn describe_idle(local: &StepResult, federated: &StepResult) -> String {
    let push = |step: &StepResult| step.delivery.map_or((f64::NAN, f64::NAN), |d| (d.p50_ms, d.p99_ms));
    let ((local_p50, local_p99), (fed_p50, fed_p99)) = (push(local), push(federated));
    format!(
        "send → push at {:.0} msgs/s: local p50 {local_p50:.2} p99 {local_p99:.2} ms, federated p50 {fed_p50:.2} p99 {fed_p99:.2} ms ({:.2}x at p50)",
        local.offered_per_s,
        fed_p50 / local_p50.max(f64::MIN_POSITIVE)
    )
}

fn describe_partition(partition: &PartitionResult) -> String {
    format!(
        "{} messages kept during {:.0} s; after the heal a saw b in {:.1} s and the last was pushed in {:.1} s (push p50 {:.0} ms from its send); lost {} duplicates {}",
        partition.acknowledged,
        partition.seconds,
        partition.reconnect_s,
        partition.drain_s,
        partition.delivery.map_or(f64::NAN, |d| d.p50_ms),
        partition.lost,
        partition.duplicates
    )
}

/// B9's lines of the summary.
pub(crate) fn describe(result: &FederationResult) -> Vec<String> {
    let mut lines = vec![describe_idle(&result.idle_local, &result.idle_federated)];
    if let [local, federated] = &result.ramps[..] {
        lines.push(format!(
            "C={} max sustained: local {:.0}/s, federated {:.0}/s ({:.2}x)",
            local.connections,
            local.max_sustained_per_s,
            federated.max_sustained_per_s,
            federated.max_sustained_per_s / local.max_sustained_per_s.max(f64::MIN_POSITIVE)
        ));
    }
    lines.push(describe_partition(&result.partition));
    lines
}

/// Copies lost or pushed twice over B9.
pub(crate) fn lost_and_duplicates(result: &FederationResult) -> (u64, u64) {
    let steps = [&result.idle_local, &result.idle_federated]
        .into_iter()
        .chain(result.ramps.iter().flat_map(|ramp| &ramp.steps));
    let (lost, duplicates) = steps.fold((0, 0), |(lost, dup), step| (lost + step.lost, dup + step.duplicates));
    (lost + result.partition.lost, duplicates + result.partition.duplicates)
}
