//! B4 fan-out: one sender, a group of N members all online and subscribed;
//! for each message sent alone, the time until the last member has it
//! pushed; then a burst of messages sent together, for the deliveries per
//! second with messages in flight at once; and what the server stored per
//! message (the body once, plus one queue row per recipient).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quicprochat_core::MlsClient;
use quicprochat_proto::{v1, Method};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::histogram::{Latencies, Summary};
use crate::setup::{register, serve_key_packages, BenchServer};

/// How long one message may take to reach every member before the run fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
pub(crate) struct FanoutResult {
    pub(crate) members: usize,
    pub(crate) messages: usize,
    /// Send → the last member's push, per message.
    pub(crate) last_recipient: Summary,
    /// Deliveries per second while sending one message at a time.
    pub(crate) deliveries_per_s: f64,
    /// Messages sent at once after the one-at-a-time phase.
    pub(crate) burst_messages: usize,
    /// Deliveries per second of the burst: from its first send until the
    /// last member had every message of it.
    pub(crate) burst_deliveries_per_s: f64,
    pub(crate) ciphertext_bytes: usize,
    /// Stored message bodies per message (1 means stored once).
    pub(crate) bodies_per_message: f64,
    /// Queue rows per message (one per recipient).
    pub(crate) queue_rows_per_message: f64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    /// The same fan-out over bare quinn (`fanout_baseline`), same run.
    pub(crate) bare_quinn_last_recipient: Option<Summary>,
}

#[derive(Default)]
struct Arrivals {
    /// message index → members that have it.
    seen: Mutex<HashMap<u32, (usize, Duration)>>,
    changed: Notify,
}

impl Arrivals {
    /// When the last of `members` got message `index`, or `None` if some
    /// had not got it by `deadline`.
    async fn last_of(&self, index: u32, members: usize, deadline: Instant) -> Option<Duration> {
        loop {
            let changed = self.changed.notified();
            let state = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&index).copied();
            match state {
                Some((count, last)) if count >= members => return Some(last),
                _ if Instant::now() >= deadline => return None,
                _ => {
                    let _ = tokio::time::timeout_at(deadline, changed).await;
                }
            }
        }
    }

    /// Members that have message `index`.
    fn count(&self, index: u32) -> usize {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&index).map_or(0, |seen| seen.0)
    }
}

/// Builds the group (one commit adding every member), subscribes everyone,
/// then sends `messages` messages one after another and `burst` at once.
pub(crate) async fn run(
    server: &BenchServer,
    members: usize,
    messages: usize,
    burst: usize,
) -> anyhow::Result<FanoutResult> {
    let state = server.dir.path().join("fanout");
    std::fs::create_dir_all(&state)?;
    let (sender, sender_identity) = register(server.address(), "fan-sender").await?;
    let sender_mls = MlsClient::open(&state.join("sender.db"), sender_identity, "fan-sender")?;
    let mut member_rpcs = Vec::with_capacity(members);
    let mut key_packages = Vec::with_capacity(members);
    for index in 0..members {
        let name = format!("fan-m{index}");
        let (rpc, identity) = register(server.address(), &name).await?;
        let mls = MlsClient::open(&state.join(format!("{name}.db")), identity, &name)?;
        let package = mls.generate_key_packages(1)?;
        key_packages.extend(serve_key_packages(&rpc, &name, package, &sender).await?);
        member_rpcs.push(rpc);
        if index % 100 == 99 {
            eprint!(".");
        }
    }
    let group_id = b"fanout-group-000".to_vec();
    let bootstrap = sender_mls.create_group(&group_id)?;
    let create = v1::CreateGroupRequest {
        group_id: group_id.clone().into(),
        name: "fan-out".into(),
        kind: v1::GroupKind::Named as i32,
        group_info: bootstrap.group_info.into(),
        ratchet_tree: bootstrap.ratchet_tree.into(),
    };
    let _: v1::CreateGroupResponse = sender.call(Method::CreateGroup, &create).await?;
    let pending = sender_mls.add_members(&group_id, &key_packages)?;
    let submit = v1::SubmitCommitRequest {
        group_id: group_id.clone().into(),
        epoch: pending.epoch,
        commit: pending.commit.into(),
        welcome: pending.welcome.unwrap_or_default().into(),
        message_id: b"add-all".to_vec().into(),
    };
    let _: v1::SubmitCommitResponse = sender.call(Method::SubmitCommit, &submit).await.context("add every member")?;
    sender_mls.merge_pending_commit(&group_id)?;

    let base = Instant::now();
    let arrivals = Arc::new(Arrivals::default());
    for rpc in &member_rpcs {
        let fetched: v1::FetchResponse = rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 10 }).await?;
        let _: v1::AckResponse = rpc.call(Method::Ack, &v1::AckRequest { up_to_seq: fetched.head_seq }).await?;
        let _: v1::SubscribeResponse =
            rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq: fetched.head_seq }).await?;
        let mut push = rpc.accept_push().await?;
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = push.next().await {
                let now = base.elapsed();
                {
                    let mut seen = arrivals.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    for entry in &event.entries {
                        let Some(index) = entry.message_id.get(..4).and_then(|b| b.try_into().ok()) else { continue };
                        let slot = seen.entry(u32::from_be_bytes(index)).or_insert((0, Duration::ZERO));
                        slot.0 += 1;
                        slot.1 = slot.1.max(now);
                    }
                }
                arrivals.changed.notify_waiters();
                // No acks during the run: what the server stored per message
                // is read from its database afterwards.
            }
        });
    }

    let ciphertext = Bytes::from(sender_mls.encrypt(&group_id, &[b'x'; 100])?);
    let mut last_recipient = Latencies::new();
    let mut lost = 0u64;
    let started = base.elapsed();
    let mut finished = started;
    for index in 0..messages as u32 {
        let sent_at = base.elapsed();
        let request = v1::SendMessageRequest {
            group_id: group_id.clone().into(),
            message_id: Bytes::copy_from_slice(&index.to_be_bytes()),
            ciphertext: ciphertext.clone(),
        };
        let _: v1::SendMessageResponse = sender.call(Method::SendMessage, &request).await?;
        match arrivals.last_of(index, members, Instant::now() + ARRIVAL_TIMEOUT).await {
            Some(last) => {
                last_recipient.record(last.saturating_sub(sent_at));
                finished = finished.max(last);
            }
            None => lost += (members - arrivals.count(index).min(members)) as u64,
        }
    }
    let elapsed = finished.saturating_sub(started).max(Duration::from_millis(1));

    // The burst: every send in flight at once.
    let burst_started = base.elapsed();
    let mut sends = tokio::task::JoinSet::new();
    for index in messages as u32..(messages + burst) as u32 {
        let (sender, group_id, ciphertext) = (sender.clone(), group_id.clone(), ciphertext.clone());
        sends.spawn(async move {
            let request = v1::SendMessageRequest {
                group_id: group_id.into(),
                message_id: Bytes::copy_from_slice(&index.to_be_bytes()),
                ciphertext,
            };
            sender.call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    let mut burst_finished = burst_started;
    for index in messages as u32..(messages + burst) as u32 {
        match arrivals.last_of(index, members, deadline).await {
            Some(last) => burst_finished = burst_finished.max(last),
            None => lost += (members - arrivals.count(index).min(members)) as u64,
        }
    }
    let burst_elapsed = burst_finished.saturating_sub(burst_started).max(Duration::from_millis(1));
    let duplicates = arrivals
        .seen
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .values()
        .map(|(count, _)| count.saturating_sub(members) as u64)
        .sum::<u64>();
    let (bodies, rows) = stored_per_message(server, &group_id)?;
    let stored = (messages + burst) as f64;
    Ok(FanoutResult {
        members,
        messages,
        last_recipient: last_recipient.summary(),
        deliveries_per_s: (messages * members) as f64 / elapsed.as_secs_f64(),
        burst_messages: burst,
        burst_deliveries_per_s: (burst * members) as f64 / burst_elapsed.as_secs_f64(),
        ciphertext_bytes: ciphertext.len(),
        bodies_per_message: bodies / stored,
        queue_rows_per_message: rows / stored,
        lost,
        duplicates,
        bare_quinn_last_recipient: None,
    })
}

/// Message bodies and queue rows the server holds for `group_id`'s
/// application messages (read from its database, read-only).
fn stored_per_message(server: &BenchServer, group_id: &[u8]) -> anyhow::Result<(f64, f64)> {
    let path = server.dir.path().join("data").join("qpc-server.db");
    let db = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let bodies: f64 =
        db.query_row("SELECT COUNT(*) FROM messages WHERE group_id = ?1 AND kind = 0", [group_id], |row| row.get(0))?;
    let rows: f64 = db.query_row(
        "SELECT COUNT(*) FROM queue JOIN messages ON messages.id = queue.message_row
         WHERE messages.group_id = ?1 AND messages.kind = 0",
        [group_id],
        |row| row.get(0),
    )?;
    Ok((bodies, rows))
}
