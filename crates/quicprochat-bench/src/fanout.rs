//! B4 fan-out: one sender, a group of N members all online and subscribed;
//! for each message sent alone, the time until the last member has it
//! pushed; then a burst of messages sent together, for the deliveries per
//! second with messages in flight at once; and what the server stored per
//! message (the body once, plus one queue row per recipient).
//!
//! With D devices per account (`--devices-per-account`), every member and
//! the sender have D devices, all of them leaves and all online: each
//! message goes to N·D + D − 1 devices (every device but the sending one),
//! and "member" below reads "receiving device". Deliveries count copies.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quicprochat_core::MlsClient;
use quicprochat_proto::{v1, Method};
use quicprochat_rpc::RpcClient;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::devices::{add_devices, drain_queue, fetch_devices, fetch_every_device, upload_own, FirstDevice};
use crate::histogram::{Latencies, Summary};
use crate::setup::{add_and_merge, close_now, create_named_group, register, BenchServer, ServerAddress};
use crate::storage::held_for_group;

/// How long one message may take to reach every member before the run fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
pub(crate) struct FanoutResult {
    /// Accounts in the group besides the sender.
    pub(crate) members: usize,
    /// Devices of each account, the sender's included.
    pub(crate) devices_per_account: usize,
    /// Devices each message is pushed to: every device of the group but the sending one.
    pub(crate) receivers: usize,
    pub(crate) messages: usize,
    /// Send → the last receiving device's push, per message.
    pub(crate) last_recipient: Summary,
    /// Deliveries (copies pushed) per second while sending one message at a time.
    pub(crate) deliveries_per_s: f64,
    /// Messages sent at once after the one-at-a-time phase.
    pub(crate) burst_messages: usize,
    /// Deliveries per second of the burst: from its first send until the
    /// last member had every message of it.
    pub(crate) burst_deliveries_per_s: f64,
    pub(crate) ciphertext_bytes: usize,
    /// Stored message bodies per message (1 means stored once).
    pub(crate) bodies_per_message: f64,
    /// Queue rows per message (one per receiving device).
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

/// The fan-out group, built and with every receiving device subscribed.
struct Group {
    /// The sending device: the sender account's first device.
    sender: RpcClient,
    sender_mls: MlsClient,
    group_id: Vec<u8>,
    /// Every device the server pushes each message to.
    receivers: Vec<RpcClient>,
}

/// Builds the group: `members` accounts of `devices` devices each plus the
/// sender's other devices, every device a leaf, one commit adding them all.
async fn build_group(server: &BenchServer, members: usize, devices: usize) -> anyhow::Result<Group> {
    // One device per account keeps the names the suite always had.
    let prefix = if devices > 1 { format!("fan{devices}d") } else { "fan".to_owned() };
    let state = server.dir.path().join(format!("{prefix}out"));
    std::fs::create_dir_all(&state)?;
    let sender_name = format!("{prefix}-sender");
    let (sender, sender_identity) = register(server.address(), &sender_name).await?;
    let extra = devices.saturating_sub(1);
    let sender_first = FirstDevice { rpc: &sender, username: &sender_name, account: &sender_identity };
    let sender_others = add_devices(server.address(), &sender_first, extra, &state, "sender").await?;
    let sender_mls = MlsClient::open(&state.join("sender.db"), sender_identity, &sender_name)?;
    let mut receivers = Vec::with_capacity(members * devices + extra);
    let mut key_packages = Vec::with_capacity(members * devices + extra);
    for index in 0..members {
        let name = format!("{prefix}-m{index}");
        let member = Member { server: server.address(), sender: &sender, name: &name, devices, state: &state };
        let (member_receivers, member_packages) = member.join().await?;
        receivers.extend(member_receivers);
        key_packages.extend(member_packages);
        if index % 100 == 99 {
            eprint!(".");
        }
    }
    for device in &sender_others {
        upload_own(&device.rpc, &device.mls, 1, false).await?;
    }
    key_packages.extend(fetch_devices(&sender, &sender_name, &sender_others).await?);
    receivers.extend(sender_others.into_iter().map(|device| device.rpc));
    anyhow::ensure!(
        key_packages.len() == receivers.len(),
        "{} key packages for {} receiving devices",
        key_packages.len(),
        receivers.len()
    );

    let group_id = if devices > 1 { format!("fanout-group-{devices:03}") } else { "fanout-group-000".to_owned() };
    let group_id = group_id.into_bytes();
    create_named_group(&sender, &sender_mls, &group_id, "fan-out".into()).await?;
    add_and_merge(&sender, &sender_mls, &group_id, &key_packages, b"add-all").await.context("add every member")?;
    Ok(Group { sender, sender_mls, group_id, receivers })
}

/// One member account of the fan-out group, before it is added.
struct Member<'a> {
    server: ServerAddress,
    /// The sender's connection, which fetches the member's key packages.
    sender: &'a RpcClient,
    name: &'a str,
    devices: usize,
    state: &'a Path,
}

impl Member<'_> {
    /// Registers the member with its devices, each uploading one key
    /// package, and has the sender fetch them (one fetch serves one package
    /// per device). Returns every device's connection and the packages.
    async fn join(&self) -> anyhow::Result<(Vec<RpcClient>, Vec<Vec<u8>>)> {
        let (rpc, identity) = register(self.server, self.name).await?;
        let first = FirstDevice { rpc: &rpc, username: self.name, account: &identity };
        let others = add_devices(self.server, &first, self.devices.saturating_sub(1), self.state, self.name).await?;
        let mls = MlsClient::open(&self.state.join(format!("{}.db", self.name)), identity, self.name)?;
        upload_own(&rpc, &mls, 1, false).await?;
        for device in &others {
            upload_own(&device.rpc, &device.mls, 1, false).await?;
        }
        let key_packages = fetch_every_device(self.sender, self.name).await?;
        let connections = std::iter::once(rpc).chain(others.into_iter().map(|device| device.rpc)).collect();
        Ok((connections, key_packages))
    }
}

/// Subscribes every receiving device after what is queued for it (the
/// commit and the Welcome), each recording its pushes in `arrivals`.
async fn subscribe_all(receivers: &[RpcClient], arrivals: &Arc<Arrivals>, base: Instant) -> anyhow::Result<()> {
    for rpc in receivers {
        let head = drain_queue(rpc).await?;
        let _: v1::SubscribeResponse = rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq: head }).await?;
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
    Ok(())
}

/// Builds the group (one commit adding every device of every member),
/// subscribes every receiving device, then sends `messages` messages one
/// after another and `burst` at once.
pub(crate) async fn run(
    server: &BenchServer,
    members: usize,
    devices: usize,
    messages: usize,
    burst: usize,
) -> anyhow::Result<FanoutResult> {
    let Group { sender, sender_mls, group_id, receivers: receiver_rpcs } =
        build_group(server, members, devices).await?;
    let receivers = receiver_rpcs.len();
    let base = Instant::now();
    let arrivals = Arc::new(Arrivals::default());
    subscribe_all(&receiver_rpcs, &arrivals, base).await?;

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
        match arrivals.last_of(index, receivers, Instant::now() + ARRIVAL_TIMEOUT).await {
            Some(last) => {
                last_recipient.record(last.saturating_sub(sent_at));
                finished = finished.max(last);
            }
            None => lost += (receivers - arrivals.count(index).min(receivers)) as u64,
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
        match arrivals.last_of(index, receivers, deadline).await {
            Some(last) => burst_finished = burst_finished.max(last),
            None => lost += (receivers - arrivals.count(index).min(receivers)) as u64,
        }
    }
    let burst_elapsed = burst_finished.saturating_sub(burst_started).max(Duration::from_millis(1));
    let duplicates = arrivals
        .seen
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .values()
        .map(|(count, _)| count.saturating_sub(receivers) as u64)
        .sum::<u64>();
    let (bodies, rows) = held_for_group(server, &group_id)?;
    let stored = (messages + burst) as f64;
    // Each push reader holds its connection open: close them all, so that
    // what runs next (the baseline, another devices value) does not share
    // the cores with this group's idle connections.
    for rpc in receiver_rpcs.iter().chain([&sender]) {
        close_now(rpc);
    }
    Ok(FanoutResult {
        members,
        devices_per_account: devices,
        receivers,
        messages,
        last_recipient: last_recipient.summary(),
        deliveries_per_s: (messages * receivers) as f64 / elapsed.as_secs_f64(),
        burst_messages: burst,
        burst_deliveries_per_s: (burst * receivers) as f64 / burst_elapsed.as_secs_f64(),
        ciphertext_bytes: ciphertext.len(),
        bodies_per_message: bodies / stored,
        queue_rows_per_message: rows / stored,
        lost,
        duplicates,
        bare_quinn_last_recipient: None,
    })
}

/// One line for a B4 result.
pub(crate) fn describe(result: &FanoutResult) -> String {
    format!(
        "{} members x {} device(s), {} devices per message: last device after p50 {:.2} p99 {:.2} ms, {:.0} deliveries/s one at a time, {:.0}/s for {} at once, {:.2} bodies and {:.0} queue rows per message",
        result.members,
        result.devices_per_account,
        result.receivers,
        result.last_recipient.p50_ms,
        result.last_recipient.p99_ms,
        result.deliveries_per_s,
        result.burst_deliveries_per_s,
        result.burst_messages,
        result.bodies_per_message,
        result.queue_rows_per_message
    )
}

/// Deliveries (copies) per second with several devices per account against
/// one device per account, same members count, same run.
pub(crate) struct PerCopyRatio {
    devices: usize,
    /// One message at a time.
    one_at_a_time: f64,
    /// The burst.
    burst: f64,
    /// Send → last receiving device, p50 (a time: above 1 is slower).
    last_p50: f64,
}

impl std::fmt::Display for PerCopyRatio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} devices per account against 1: deliveries/s {:.2}x one at a time, {:.2}x in the burst; last device p50 {:.2}x",
            self.devices, self.one_at_a_time, self.burst, self.last_p50
        )
    }
}

/// Every result with more than one device per account against the
/// one-device result of the same members count, if there is one.
pub(crate) fn per_copy_ratios(results: &[FanoutResult]) -> Vec<PerCopyRatio> {
    let single = |members| results.iter().find(|r| r.devices_per_account == 1 && r.members == members);
    results
        .iter()
        .filter(|result| result.devices_per_account > 1)
        .filter_map(|result| {
            let single = single(result.members)?;
            Some(PerCopyRatio {
                devices: result.devices_per_account,
                one_at_a_time: result.deliveries_per_s / single.deliveries_per_s,
                burst: result.burst_deliveries_per_s / single.burst_deliveries_per_s,
                last_p50: result.last_recipient.p50_ms / single.last_recipient.p50_ms,
            })
        })
        .collect()
}
