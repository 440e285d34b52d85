//! B8: what the client itself costs (issue 21, docs/design/client_cost.md),
//! through `QpcClient` against the in-process server: one client sending N
//! messages to a group, half one after another and half with 64 calls in
//! flight (a bot's load: concurrent calls leave as bursts); a second client, offline
//! meanwhile, catching up on them (from `open` to the last shown, each once
//! and in order); send → shown of single messages between two online
//! clients. Beside them, in the same run, raw OpenMLS with the same storage
//! ([`raw`]) and the SQLite commits per message on each side (each commit
//! is one fsync of the write-ahead log under `synchronous=FULL`).

mod raw;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures_util::stream::{self, StreamExt};
use quicprochat_core::client::state_commits;
use quicprochat_core::DEFAULT_CIPHERSUITE;
use quicprochat_sdk::{ClientOptions, MessageState, QpcClient};
use serde::Serialize;

use crate::histogram::{Latencies, Summary};
use crate::setup::ServerAddress;

/// The bytes raw OpenMLS encrypts per message: about what the SDK's
/// content encoding of B8's texts takes.
const RAW_PAYLOAD: usize = 96;

/// `send` calls at once in the concurrent sending figure.
const IN_FLIGHT: usize = 64;

/// One figure of ours: messages per second and SQLite commits per message.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Measured {
    pub(crate) per_s: f64,
    pub(crate) commits_per_message: f64,
}

/// B8's figures.
#[derive(Debug, Serialize)]
pub(crate) struct ClientCostResult {
    pub(crate) ciphersuite: String,
    pub(crate) messages: usize,
    /// One client sending one message after another (each `send` awaited):
    /// the first half of the messages.
    pub(crate) send: Measured,
    /// The same client with [`IN_FLIGHT`] `send` calls at once, started in
    /// order: the second half.
    pub(crate) send_concurrent: Measured,
    /// A client catching up on `messages` queued messages.
    pub(crate) catch_up: Measured,
    /// The same over `groups` groups, the messages sent to them in turn.
    pub(crate) groups: usize,
    pub(crate) catch_up_groups: Measured,
    /// Single messages between two online clients, from the `send` call to
    /// the receiver's `receive_wait` (waiting in a task of its own)
    /// returning it.
    pub(crate) send_to_shown: Summary,
    pub(crate) raw: raw::RawBaselines,
}

/// Runs B8 with `messages` queued messages (in one group, then spread over
/// `groups` groups) and `singles` send → shown samples.
pub(crate) async fn run(
    server: &ServerAddress,
    messages: usize,
    groups: usize,
    singles: usize,
) -> anyhow::Result<ClientCostResult> {
    let dir = tempfile::Builder::new().prefix("qpc-bench-b8-").tempdir().context("B8's profiles")?;
    let tag = std::process::id();
    let (alice_name, bob_name) = (format!("b8a{tag}"), format!("b8b{tag}"));
    let options = ClientOptions::default;
    let alice = QpcClient::register(&dir.path().join("alice"), server.addr, &alice_name, None, options())
        .await
        .context("register alice")?;
    let bob = QpcClient::register(&dir.path().join("bob"), server.addr, &bob_name, None, options())
        .await
        .context("register bob")?;
    alice.create_group("team").await.context("create the group")?;
    alice.add_members("team", std::slice::from_ref(&bob_name)).await.context("add bob")?;
    bob.receive().await.context("bob joins")?;
    bob.disconnect().await;
    drop(bob);

    let texts: Vec<String> = (0..messages).map(|n| format!("b8 message {n:06}")).collect();
    // alice holds a push stream, as the REPL, the TUI and an app with a
    // receive loop do (a send then makes no catch-up fetch).
    alice.receive_wait(Duration::from_millis(50)).await.context("alice subscribes")?;
    let (one_by_one, concurrent) = texts.split_at(messages / 2);
    let commits = state_commits();
    let started = Instant::now();
    for text in one_by_one {
        alice.send("team", text).await.context("send")?;
    }
    let send = measured(one_by_one.len(), started.elapsed(), state_commits() - commits);
    let commits = state_commits();
    let started = Instant::now();
    let answers: Vec<_> =
        stream::iter(concurrent).map(|text| alice.send("team", text)).buffered(IN_FLIGHT).collect().await;
    let send_concurrent = measured(concurrent.len(), started.elapsed(), state_commits() - commits);
    for answer in answers {
        ensure!(answer.context("send")?.state == MessageState::Sent, "a concurrent send was not acknowledged");
    }

    let (catch_up, bob) = catch_up(&dir.path().join("bob"), &texts, "in one group").await?;

    let (latencies, bob) = send_to_shown(&alice, bob, singles).await?;
    bob.disconnect().await;
    drop(bob);
    let catch_up_groups = catch_up_in_groups(&alice, &dir.path().join("bob"), &bob_name, messages, groups).await?;
    alice.disconnect().await;

    let raw_dir = dir.path().to_path_buf();
    let raw = tokio::task::spawn_blocking(move || raw::run(&raw_dir, DEFAULT_CIPHERSUITE, messages, RAW_PAYLOAD))
        .await
        .context("B8's raw baselines' thread")??;
    Ok(ClientCostResult {
        ciphersuite: format!("0x{:04X}", u16::from(DEFAULT_CIPHERSUITE)),
        messages,
        send,
        send_concurrent,
        catch_up,
        groups,
        catch_up_groups,
        send_to_shown: latencies.summary(),
        raw,
    })
}

/// Send → shown, `singles` times: bob waits for messages in a task of his
/// own (as an app's receive loop does), alice (holding a push stream since
/// before her sends) sends one and waits until bob showed it before the next. Returns the latencies and bob.
async fn send_to_shown(alice: &QpcClient, bob: QpcClient, singles: usize) -> anyhow::Result<(Latencies, QpcClient)> {
    let (shown_tx, mut shown_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let receiver = tokio::spawn(async move {
        let mut seen = 0;
        while seen < singles {
            let batch = bob.receive_wait(Duration::from_secs(10)).await.context("receive a single")?;
            ensure!(!batch.is_empty(), "B8: no single shown within 10 s after {seen}");
            let now = Instant::now();
            seen += batch.len();
            for message in batch {
                // The sender stopped waiting: it reports why.
                let _ = shown_tx.send((message.text, now));
            }
        }
        anyhow::Ok(bob)
    });
    let mut latencies = Latencies::new();
    for index in 0..singles {
        let text = format!("b8 single {index:06}");
        let sent = Instant::now();
        alice.send("team", &text).await.context("send a single")?;
        let shown = tokio::time::timeout(Duration::from_secs(10), shown_rx.recv()).await;
        let Ok(Some((shown_text, at))) = shown else {
            // The receiver's error, if it stopped with one.
            receiver.await.context("B8's receiver")??;
            anyhow::bail!("B8: {text} not shown within 10 s");
        };
        ensure!(shown_text == text, "B8: {shown_text:?} shown where {text:?} was due");
        latencies.record(at.duration_since(sent));
    }
    let bob = receiver.await.context("B8's receiver")??;
    Ok((latencies, bob))
}

/// Alice makes `groups` groups with bob (offline in `bob_profile`), sends
/// `messages` to them in turn, and bob catches up on all of them: shown
/// once each, in the order sent.
async fn catch_up_in_groups(
    alice: &QpcClient,
    bob_profile: &std::path::Path,
    bob_name: &str,
    messages: usize,
    groups: usize,
) -> anyhow::Result<Measured> {
    let names: Vec<String> = (0..groups.max(1)).map(|n| format!("b8g{n:03}")).collect();
    for name in &names {
        alice.create_group(name).await.context("create a group")?;
        alice.add_members(name, &[bob_name.to_owned()]).await.context("add bob to a group")?;
    }
    let texts: Vec<String> = (0..messages).map(|n| format!("b8 spread {n:06}")).collect();
    for (index, text) in texts.iter().enumerate() {
        alice.send(&names[index % names.len()], text).await.context("send to a group")?;
    }
    let (result, bob) = catch_up(bob_profile, &texts, &format!("over {groups} groups")).await?;
    bob.disconnect().await;
    Ok(result)
}

/// Opens the offline client of `profile` and receives until `texts` are
/// shown, checked once each and in order; measured from the open. Returns
/// the figure and the client, still online.
async fn catch_up(profile: &std::path::Path, texts: &[String], what: &str) -> anyhow::Result<(Measured, QpcClient)> {
    let commits = state_commits();
    let started = Instant::now();
    let client = QpcClient::open(profile, ClientOptions::default()).await.context("open the offline profile")?;
    let mut shown = Vec::with_capacity(texts.len());
    while shown.len() < texts.len() {
        let batch = client.receive_wait(Duration::from_secs(10)).await.context("catch up")?;
        ensure!(!batch.is_empty(), "B8: the catch-up {what} stalled after {} messages", shown.len());
        shown.extend(batch.into_iter().map(|message| message.text));
    }
    let result = measured(texts.len(), started.elapsed(), state_commits() - commits);
    ensure!(shown == texts, "B8: the backlog {what} was not shown once and in order");
    Ok((result, client))
}

fn measured(messages: usize, elapsed: Duration, commits: u64) -> Measured {
    Measured {
        per_s: messages as f64 / elapsed.as_secs_f64().max(1e-9),
        commits_per_message: commits as f64 / messages.max(1) as f64,
    }
}

/// B8 in a few lines, each figure beside its raw baseline.
pub(crate) fn describe(result: &ClientCostResult) -> Vec<String> {
    let raw = &result.raw;
    let line = |label: &str, ours: Measured, base: raw::Baseline, base_label: &str| {
        format!(
            "{label}: {:.0} msgs/s, {:.3} commits/msg; {base_label}: {:.0} msgs/s, {:.3} commits/msg ({:.2}x)",
            ours.per_s,
            ours.commits_per_message,
            base.per_s,
            base.commits_per_message,
            ours.per_s / base.per_s.max(1e-9)
        )
    };
    vec![
        format!("suite {}, {} messages", result.ciphersuite, result.messages),
        line("catch-up", result.catch_up, raw.receive_autocommit, "raw OpenMLS, a commit per write"),
        line(
            &format!("catch-up over {} groups (joined at once)", result.groups),
            result.catch_up_groups,
            raw.receive_autocommit,
            "raw OpenMLS, one group",
        ),
        format!(
            "catch-up floors: raw OpenMLS in one transaction {:.0} msgs/s ({:.3} commits/msg), in memory {:.0} msgs/s",
            raw.receive_one_transaction.per_s,
            raw.receive_one_transaction.commits_per_message,
            raw.receive_memory.per_s
        ),
        line("send, one after another", result.send, raw.encrypt_autocommit, "raw OpenMLS encrypting"),
        line(
            &format!("send, {IN_FLIGHT} in flight"),
            result.send_concurrent,
            raw.encrypt_autocommit,
            "raw OpenMLS encrypting",
        ),
        format!(
            "send -> shown: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({} samples)",
            result.send_to_shown.p50_ms,
            result.send_to_shown.p99_ms,
            result.send_to_shown.p999_ms,
            result.send_to_shown.count
        ),
    ]
}
