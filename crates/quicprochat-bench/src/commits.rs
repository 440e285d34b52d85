//! B5 commit sequencing: how long the Delivery Service takes to accept one
//! `SubmitCommit` in a group of N members, with a `Ping` round trip on the
//! same connection as the transport baseline.
//!
//! The group is built like B4's: the creator adds N − 1 registered members
//! in one commit (the members are not connected; their accounts exist, so
//! the DS's registry check passes and the commit is queued for each). Then
//! the creator makes K successive commits, alternately adding and removing
//! one extra member (`MlsClient` has no self-update yet, so an add/remove
//! pair stands in for it; the group alternates between N and N + 1 leaves).
//!
//! Timed: the `SubmitCommit` round trip only, i.e. the frame over QUIC, the
//! DS validating the commit against its public group view, the epoch
//! compare-and-set, the durable (fsync'd) write of the commit, its queue
//! row for every other member and, on an add, the Welcome, and the answer.
//! Not timed: making the commit and merging it on the client (client MLS
//! crypto and storage, reported separately as `client_prepare` and
//! `client_merge`), and encoding the request.
//!
//! Baselines, same run: a `Ping` on the same connection after each commit
//! (transport and dispatch, no work); the very request bytes sent to the
//! bare quinn echo server, which answers with an empty body (moving a
//! commit this size over QUIC); and OpenMLS validating and merging the same
//! commit in this process (`DsGroupView::process_commit` on a view of the
//! same group, the check the DS cannot skip). Echo plus validation is the
//! floor for a commit's acceptance. Also read back: the size of the group's
//! latest snapshot (the serialised view the DS stores after commits, off
//! their path).

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use quicprochat_core::{DsGroupView, Identity, MlsClient};
use quicprochat_proto::{v1, Method};
use quicprochat_rpc::RpcClient;
use serde::Serialize;

use crate::histogram::{Latencies, Summary};
use crate::setup::{
    add_and_merge, close_now, create_named_group, register, register_many, serve_key_packages, BenchServer,
};

/// Registrations in flight while building a group.
const REGISTER_IN_FLIGHT: usize = 32;

/// Commit acceptance at one group size.
#[derive(Debug, Serialize)]
pub(crate) struct CommitResult {
    /// Members after the group was built (N); N + 1 while the extra member is in.
    pub(crate) members: usize,
    pub(crate) commits: usize,
    /// `SubmitCommit` round trip, every commit.
    pub(crate) commit: Summary,
    /// The commits adding the extra member (each with a Welcome).
    pub(crate) add: Summary,
    /// The commits removing it again.
    pub(crate) remove: Summary,
    /// `Ping` round trip on the same connection (no session work, no storage).
    pub(crate) ping: Summary,
    /// Commit p50 over ping p50: server cost over transport cost.
    pub(crate) commit_over_ping_p50: f64,
    /// The same request bytes to the bare quinn echo server (answered with
    /// an empty body): moving a commit this size over QUIC, no work.
    pub(crate) echo_same_size: Summary,
    /// OpenMLS validating and merging the same commit in this process, on
    /// a `DsGroupView` of the same group: the DS's own check, no IO.
    pub(crate) ds_validation: Summary,
    /// Echo p50 plus validation p50: what a commit costs before any storage.
    pub(crate) floor_p50_ms: f64,
    /// The group's latest snapshot (the serialised view), bytes.
    pub(crate) stored_state_bytes: u64,
    /// Largest add commit (MlsMessage bytes), its Welcome, and remove commit.
    pub(crate) add_commit_bytes: usize,
    pub(crate) welcome_bytes: usize,
    pub(crate) remove_commit_bytes: usize,
    /// Client-side, not in the figures above: making a commit, merging it.
    pub(crate) client_prepare: Summary,
    pub(crate) client_merge: Summary,
}

/// One group: the creator's connection and MLS state, the extra member's
/// name and its key packages (one per add, made before any timing).
struct Group {
    creator: RpcClient,
    mls: MlsClient,
    group_id: Vec<u8>,
    extra: String,
    extra_key_packages: Vec<Vec<u8>>,
}

/// Builds a group of `members` and times `commits` successive commits in it.
pub(crate) async fn run(server: &BenchServer, members: usize, commits: usize) -> anyhow::Result<CommitResult> {
    anyhow::ensure!(members >= 2, "a commit-sequencing group needs at least 2 members, not {members}");
    let group = build_group(server, members, commits.div_ceil(2)).await?;
    let echo = crate::baseline::start_echo()?;
    let echo_client = crate::setup::connect(echo.addr, echo.pin()).await?;
    let mut echo_same_size = Latencies::new();
    let (mut add, mut remove, mut all) = (Latencies::new(), Latencies::new(), Latencies::new());
    let (mut ping, mut prepare, mut merge) = (Latencies::new(), Latencies::new(), Latencies::new());
    let (mut add_commit_bytes, mut welcome_bytes, mut remove_commit_bytes) = (0, 0, 0);
    let ping_body = Bytes::from(v1::PingRequest {}.encode_to_vec());
    let bootstrap = group.mls.export_group_bootstrap(&group.group_id)?;
    let mut ds_view = DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree)
        .context("a DS view of the built group")?;
    let mut ds_validation = Latencies::new();
    for index in 0..commits {
        let adding = index % 2 == 0;
        let prepared = Instant::now();
        let pending = if adding {
            let key_package = group.extra_key_packages.get(index / 2).context("an extra key package per add")?;
            group.mls.add_members(&group.group_id, std::slice::from_ref(key_package))?
        } else {
            group.mls.remove_members(&group.group_id, std::slice::from_ref(&group.extra))?
        };
        prepare.record(prepared.elapsed());
        let welcome = pending.welcome.unwrap_or_default();
        if adding {
            add_commit_bytes = add_commit_bytes.max(pending.commit.len());
            welcome_bytes = welcome_bytes.max(welcome.len());
        } else {
            remove_commit_bytes = remove_commit_bytes.max(pending.commit.len());
        }
        let commit = pending.commit;
        let request = v1::SubmitCommitRequest {
            group_id: group.group_id.clone().into(),
            epoch: pending.epoch,
            commit: commit.clone().into(),
            welcome: welcome.into(),
            message_id: format!("commit-{index}").into_bytes().into(),
        };
        let body = Bytes::from(request.encode_to_vec());
        let echo_body = body.clone();

        let started = Instant::now();
        group
            .creator
            .call_raw(Method::SubmitCommit, body)
            .await
            .with_context(|| format!("commit {index} in the group of {members}"))?;
        let elapsed = started.elapsed();
        all.record(elapsed);
        if adding { &mut add } else { &mut remove }.record(elapsed);

        let merged = Instant::now();
        group.mls.merge_pending_commit(&group.group_id)?;
        merge.record(merged.elapsed());

        let started = Instant::now();
        group.creator.call_raw(Method::Ping, ping_body.clone()).await.context("ping")?;
        ping.record(started.elapsed());

        let started = Instant::now();
        echo_client.call_raw(Method::SubmitCommit, echo_body).await.context("echo")?;
        echo_same_size.record(started.elapsed());

        let started = Instant::now();
        ds_view.process_commit(&commit).with_context(|| format!("validating commit {index} in this process"))?;
        ds_validation.record(started.elapsed());
    }
    close_now(&group.creator);
    close_now(&echo_client);
    let stored_state_bytes = stored_state_bytes(server, &group.group_id)?;
    let (commit, ping) = (all.summary(), ping.summary());
    let (echo_same_size, ds_validation) = (echo_same_size.summary(), ds_validation.summary());
    Ok(CommitResult {
        members,
        commits,
        commit,
        add: add.summary(),
        remove: remove.summary(),
        ping,
        commit_over_ping_p50: ratio(commit.p50_ms, ping.p50_ms),
        echo_same_size,
        ds_validation,
        floor_p50_ms: echo_same_size.p50_ms + ds_validation.p50_ms,
        stored_state_bytes,
        add_commit_bytes,
        welcome_bytes,
        remove_commit_bytes,
        client_prepare: prepare.summary(),
        client_merge: merge.summary(),
    })
}

/// The size of the group state the server holds for `group_id` (read-only).
fn stored_state_bytes(server: &BenchServer, group_id: &[u8]) -> anyhow::Result<u64> {
    let path = server.dir.path().join("data").join("qpc-server.db");
    let db = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let bytes: i64 =
        db.query_row("SELECT snapshot_bytes FROM groups WHERE group_id = ?1", [group_id], |row| row.get(0))?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}

/// Registers the creator, N − 1 members and the extra member, creates the
/// group and adds the members in one commit (not timed).
async fn build_group(server: &BenchServer, members: usize, extra_adds: usize) -> anyhow::Result<Group> {
    let prefix = format!("c{members}");
    let state = server.dir.path().join(format!("commits-{members}"));
    std::fs::create_dir_all(&state)?;
    let (creator, creator_identity) = register(server.address(), &format!("{prefix}-creator")).await?;
    let extra = format!("{prefix}-extra");
    let (extra_rpc, extra_identity) = register(server.address(), &extra).await?;
    let names: Vec<String> = (1..members).map(|index| format!("{prefix}-m{index}")).collect();
    let registered = register_many(server.address(), &names, REGISTER_IN_FLIGHT).await?;
    let (rpcs, identities): (Vec<RpcClient>, Vec<Identity>) = registered.into_iter().unzip();

    // Member key packages and the extra member's, on a blocking thread: each
    // is an MLS key generation plus a few SQLite writes.
    let key_state = state.clone();
    let extra_name = extra.clone();
    let key_names = names.clone();
    let (member_packages, extra_key_packages) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut packages = Vec::with_capacity(identities.len());
        for (identity, name) in identities.into_iter().zip(&key_names) {
            let mls = MlsClient::open(&key_state.join(format!("{name}.db")), identity, name)?;
            packages.push(mls.generate_key_packages(1)?.remove(0));
        }
        let extra_mls = MlsClient::open(&key_state.join("extra.db"), extra_identity, &extra_name)?;
        Ok((packages, extra_mls.generate_key_packages(extra_adds)?))
    })
    .await
    .context("key package task")??;
    // The server adds a member only with a package served to the committer.
    let mut served = Vec::with_capacity(member_packages.len());
    for ((rpc, name), package) in rpcs.iter().zip(&names).zip(member_packages) {
        served.extend(serve_key_packages(rpc, name, vec![package], &creator).await?);
        close_now(rpc);
    }
    let member_packages = served;
    let extra_key_packages = serve_key_packages(&extra_rpc, &extra, extra_key_packages, &creator).await?;
    close_now(&extra_rpc);

    let mls = MlsClient::open(&state.join("creator.db"), creator_identity, &format!("{prefix}-creator"))?;
    let group_id = format!("commit-grp{members:06}").into_bytes(); // 16 bytes
    create_named_group(&creator, &mls, &group_id, format!("commits {members}")).await?;
    if !member_packages.is_empty() {
        add_and_merge(&creator, &mls, &group_id, &member_packages, b"add-all").await.context("add every member")?;
    }
    Ok(Group { creator, mls, group_id, extra, extra_key_packages })
}

/// The one-line stderr summary.
pub(crate) fn describe(result: &CommitResult) -> String {
    format!(
        "N={}: SubmitCommit p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms (add p50 {:.2}, remove p50 {:.2}); \
         ping p50 {:.2} ms; commit/ping {:.1}x; same bytes to bare quinn echo p50 {:.2} ms; OpenMLS validation \
         alone p50 {:.2} ms; floor (echo + validation) p50 {:.2} ms; add commit {} B + Welcome {} B, remove \
         commit {} B; group snapshot {} B; client prepare p50 {:.1} ms (not timed)",
        result.members,
        result.commit.p50_ms,
        result.commit.p99_ms,
        result.commit.p999_ms,
        result.commit.max_ms,
        result.add.p50_ms,
        result.remove.p50_ms,
        result.ping.p50_ms,
        result.commit_over_ping_p50,
        result.echo_same_size.p50_ms,
        result.ds_validation.p50_ms,
        result.floor_p50_ms,
        result.add_commit_bytes,
        result.welcome_bytes,
        result.remove_commit_bytes,
        result.stored_state_bytes,
        result.client_prepare.p50_ms,
    )
}
