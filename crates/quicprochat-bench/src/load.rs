//! Open-loop load: sends are scheduled at a fixed arrival rate and each is
//! started at its scheduled time whether or not earlier ones were answered,
//! and every latency is measured from the scheduled time, so a slow server
//! cannot hide its queueing (no coordinated omission).
//!
//! A message id carries (step, sequence number, scheduled time, dispatch
//! time), so the recipients can attribute each push to its send without
//! shared state. With several devices per account each message reaches
//! several receiving devices (`pairs.rs`); each counts its own copy, and a
//! step checks that every receiving device got every acknowledged message
//! exactly once. Latencies from the dispatch time are reported too: they
//! leave out the load generator's own timer lateness (about 1 ms with
//! tokio's timer), which the echo baseline shows as its floor.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use quicprochat_proto::{v1, Method};
use quicprochat_rpc::RpcClient;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cpu::CpuMeter;
use crate::histogram::{Latencies, Summary};
use crate::pairs::Pair;
use crate::wire::{StepWire, WireCount};

/// How long a step waits for pushes of acknowledged sends before counting them lost.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// Most receiving devices per message a step can count (one bit each).
pub(crate) const MAX_COPIES: usize = 64;

/// What one step sends and to whom.
pub(crate) enum Target<'a> {
    /// `SendMessage` to qpc-server; every receiving device records its pushes in `deliveries`.
    Server { pairs: &'a [Pair], deliveries: &'a Deliveries },
    /// A framed request/response to the bare echo baseline.
    Echo { clients: &'a [RpcClient] },
}

/// The outcome of one step at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepResult {
    pub(crate) offered_per_s: f64,
    pub(crate) achieved_per_s: f64,
    pub(crate) sent: u64,
    pub(crate) acknowledged: u64,
    pub(crate) errors: u64,
    /// Scheduled send → acknowledgement.
    pub(crate) ack: Summary,
    /// Actual dispatch → acknowledgement.
    pub(crate) ack_service: Summary,
    /// Scheduled send → pushed to a receiving device, every copy (server target only).
    pub(crate) delivery: Option<Summary>,
    /// Actual dispatch → pushed to a receiving device, every copy (server target only).
    pub(crate) delivery_service: Option<Summary>,
    /// Devices each message is pushed to (server target only): 1 with one
    /// device per account, 2N − 1 with N.
    pub(crate) copies_per_message: Option<usize>,
    /// Copies delivered per second: achieved messages/s × copies per message.
    pub(crate) copies_per_s: Option<f64>,
    /// Copies of acknowledged messages never pushed within the grace period.
    pub(crate) lost: u64,
    /// Copies pushed more than once to the same device.
    pub(crate) duplicates: u64,
    /// The server's CPU time during the step, where `/proc` tells it.
    pub(crate) cpu: Option<StepCpu>,
    /// Datagrams and QUIC frames per message (server target only).
    pub(crate) wire: Option<StepWire>,
}

/// CPU time of one step per acknowledged message: the server's threads
/// (its runtime's, its storage and checkpoint threads) against the whole
/// process's, which adds the load generator's clients on the same cores.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct StepCpu {
    /// The server's CPU per acknowledged message, microseconds.
    pub(crate) server_us_per_message: f64,
    /// The whole process's CPU per acknowledged message, microseconds.
    pub(crate) process_us_per_message: f64,
    /// Cores the server kept busy during the step.
    pub(crate) server_cores: f64,
    /// Messages per second the server alone could take on every core of
    /// the machine at this cost (cores ÷ CPU per message).
    pub(crate) server_alone_per_s: f64,
}

impl StepCpu {
    fn new(split: crate::cpu::CpuSplit, messages: u64) -> Option<StepCpu> {
        if messages == 0 || split.server.is_zero() {
            return None;
        }
        let us = |time: Duration| time.as_secs_f64() * 1e6 / messages as f64;
        Some(StepCpu {
            server_us_per_message: us(split.server),
            process_us_per_message: us(split.process),
            server_cores: split.server.as_secs_f64() / split.wall.as_secs_f64().max(f64::MIN_POSITIVE),
            server_alone_per_s: split.server_alone_per_s(messages),
        })
    }
}

/// Pushes seen by every receiving device, per step.
#[derive(Default)]
pub(crate) struct Deliveries {
    inner: Mutex<DeliveryState>,
    arrived: Notify,
}

#[derive(Default)]
struct DeliveryState {
    step: u32,
    /// Receiving devices per message in this step (at most 64).
    copies: usize,
    /// Message sequence number → the receiving devices (bit `copy`) that have it.
    seen: HashMap<u64, u64>,
    duplicates: u64,
    latencies: Latencies,
    service: Latencies,
}

impl Deliveries {
    fn start_step(&self, step: u32, copies: usize) {
        let mut state = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *state = DeliveryState { step, copies: copies.clamp(1, MAX_COPIES), ..DeliveryState::default() };
    }

    /// Records one entry pushed to the receiving device numbered `copy`
    /// (0 .. copies) of its pair, by its message id; ids of other steps are ignored.
    pub(crate) fn record(&self, copy: usize, message_id: &[u8], now: Duration) {
        let Some((step, seq, scheduled, dispatched)) = parse_id(message_id) else { return };
        let mut state = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if step != state.step {
            return;
        }
        let bit = 1u64 << copy.min(MAX_COPIES - 1);
        let devices = state.seen.entry(seq).or_insert(0);
        if *devices & bit == 0 {
            *devices |= bit;
            state.latencies.record(now.saturating_sub(scheduled));
            state.service.record(now.saturating_sub(dispatched));
        } else {
            state.duplicates += 1;
        }
    }

    pub(crate) fn notify(&self) {
        self.arrived.notify_waiters();
    }

    /// Copies of the `acked` messages not pushed yet, over every receiving device.
    fn missing(&self, acked: &HashSet<u64>) -> u64 {
        let state = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let copies = state.copies as u64;
        acked
            .iter()
            .map(|seq| copies.saturating_sub(state.seen.get(seq).map_or(0, |devices| u64::from(devices.count_ones()))))
            .sum()
    }

    fn finish(&self) -> (Summary, Summary, u64) {
        let state = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (state.latencies.summary(), state.service.summary(), state.duplicates)
    }
}

fn message_id(step: u32, seq: u64, scheduled: Duration, dispatched: Duration) -> Bytes {
    let micros = |at: Duration| u64::try_from(at.as_micros()).unwrap_or(u64::MAX).to_be_bytes();
    let mut id = Vec::with_capacity(28);
    id.extend_from_slice(&step.to_be_bytes());
    id.extend_from_slice(&seq.to_be_bytes());
    id.extend_from_slice(&micros(scheduled));
    id.extend_from_slice(&micros(dispatched));
    id.into()
}

fn parse_id(id: &[u8]) -> Option<(u32, u64, Duration, Duration)> {
    let step = u32::from_be_bytes(id.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(id.get(4..12)?.try_into().ok()?);
    let scheduled = u64::from_be_bytes(id.get(12..20)?.try_into().ok()?);
    let dispatched = u64::from_be_bytes(id.get(20..28)?.try_into().ok()?);
    Some((step, seq, Duration::from_micros(scheduled), Duration::from_micros(dispatched)))
}

/// Runs one step: `rate` sends per second for `duration`, spread round-robin.
/// The servers run on [`crate::cpu::server_runtime`], so the step's CPU
/// time is split between them and the load generator.
pub(crate) async fn run_step(
    target: &Target<'_>,
    step: u32,
    rate: f64,
    duration: Duration,
    base: Instant,
) -> StepResult {
    run_step_then(target, (step, rate, duration, base), || {}, DELIVERY_GRACE).await.0
}

/// [`run_step`] that calls `after_sends` once every send was answered (B9
/// heals a partition there), then waits up to `grace` for the pushes;
/// also returns how long that wait took (until the last push, or `grace`).
pub(crate) async fn run_step_then(
    target: &Target<'_>,
    (step, rate, duration, base): (u32, f64, Duration, Instant),
    after_sends: impl FnOnce(),
    grace: Duration,
) -> (StepResult, Duration) {
    let copies = match target {
        Target::Server { pairs, deliveries } => {
            let copies = pairs.first().map_or(1, |pair| pair.receivers.len());
            deliveries.start_step(step, copies);
            Some(copies)
        }
        Target::Echo { .. } => None,
    };
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let meter = CpuMeter::start();
    let wire_at_start = match target {
        Target::Server { pairs, .. } => Some(wire_count(pairs)),
        Target::Echo { .. } => None,
    };
    let start = base.elapsed() + Duration::from_millis(20);
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..total {
        let scheduled = start + Duration::from_secs_f64(seq as f64 / rate);
        tokio::time::sleep_until(base + scheduled).await;
        let dispatched = base.elapsed();
        let id = message_id(step, seq, scheduled, dispatched);
        let (client, method, body) = match target {
            Target::Server { pairs, .. } => {
                let pair = &pairs[(seq % pairs.len() as u64) as usize];
                let request = v1::SendMessageRequest {
                    group_id: pair.group_id.clone(),
                    message_id: id,
                    ciphertext: pair.ciphertext.clone(),
                };
                (pair.sender.clone(), Method::SendMessage, Bytes::from(request.encode_to_vec()))
            }
            Target::Echo { clients } => {
                let client = clients[(seq % clients.len() as u64) as usize].clone();
                (client, Method::Ping, id)
            }
        };
        tasks.spawn(async move {
            let ok = client.call_raw(method, body).await.is_ok();
            let now = base.elapsed();
            (seq, ok, now.saturating_sub(scheduled), now.saturating_sub(dispatched))
        });
    }
    let mut acked = HashSet::new();
    let (mut errors, mut ack_latencies, mut ack_service, mut last_ack) = (0, Latencies::new(), Latencies::new(), start);
    while let Some(joined) = tasks.join_next().await {
        let Ok((seq, ok, latency, service)) = joined else {
            errors += 1;
            continue;
        };
        if ok {
            acked.insert(seq);
            ack_latencies.record(latency);
            ack_service.record(service);
            last_ack = last_ack.max(base.elapsed());
        } else {
            errors += 1;
        }
    }
    let elapsed = last_ack.saturating_sub(start).max(Duration::from_millis(1));
    let mut result = StepResult {
        offered_per_s: rate,
        achieved_per_s: acked.len() as f64 / elapsed.as_secs_f64(),
        sent: total,
        acknowledged: acked.len() as u64,
        errors,
        ack: ack_latencies.summary(),
        ack_service: ack_service.summary(),
        delivery: None,
        delivery_service: None,
        copies_per_message: copies,
        copies_per_s: None,
        lost: 0,
        duplicates: 0,
        cpu: None,
        wire: None,
    };
    after_sends();
    let waiting = Instant::now();
    if let Target::Server { deliveries, .. } = target {
        let deadline = waiting + grace;
        loop {
            let arrived = deliveries.arrived.notified();
            if deliveries.missing(&acked) == 0 || Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
        let (delivery, service, duplicates) = deliveries.finish();
        result.lost = deliveries.missing(&acked);
        result.delivery = Some(delivery);
        result.delivery_service = Some(service);
        result.duplicates = duplicates;
        result.copies_per_s = copies.map(|copies| result.achieved_per_s * copies as f64);
    }
    let waited = waiting.elapsed();
    // The window ends once every push is in (or the grace is over), so it
    // holds each message's whole server-side cost, its Ack included but
    // for the last few.
    result.cpu = meter.finish().and_then(|split| StepCpu::new(split, result.acknowledged));
    if let (Target::Server { pairs, .. }, Some(start)) = (target, wire_at_start) {
        result.wire = wire_count(pairs).since(start, result.acknowledged);
    }
    (result, waited)
}

/// The wire counters of every sending and receiving connection.
fn wire_count(pairs: &[Pair]) -> WireCount {
    WireCount::read(pairs.iter().flat_map(|pair| std::iter::once(&pair.sender).chain(&pair.receivers)))
}

/// Subscribes every receiving device of `pair` (see [`start_receiver`]).
pub(crate) async fn start_receivers(pair: &Pair, deliveries: Arc<Deliveries>, base: Instant) -> anyhow::Result<()> {
    for (copy, receiver) in pair.receivers.iter().enumerate() {
        start_receiver(receiver.clone(), copy, deliveries.clone(), base).await?;
    }
    Ok(())
}

/// Subscribes the receiving device `copy` of a pair on its connection
/// `recipient` and records every push until the connection ends. Its
/// acknowledgements are batched as a well-behaved client's are:
/// at most one `Ack` is in flight, and the next one covers every entry that
/// arrived meanwhile, while the pushes go on being read (and timed) as they
/// arrive. A recipient that stopped reading until its `Ack` was answered (as
/// `QpcClient::receive_wait` does) would be timed late by a slow `Ack`, and
/// under overload could take no more than one batch per `Ack` round trip.
async fn start_receiver(
    recipient: RpcClient,
    copy: usize,
    deliveries: Arc<Deliveries>,
    base: Instant,
) -> anyhow::Result<()> {
    let _: v1::SubscribeResponse = recipient.call(Method::Subscribe, &v1::SubscribeRequest { after_seq: 0 }).await?;
    let mut push = recipient.accept_push().await?;
    let (seen, mut to_ack) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        // Ends when the reader below drops `seen`.
        while to_ack.changed().await.is_ok() {
            // A real client acknowledges what it stored; the server deletes it.
            // A failed Ack (a deadline under overload) is covered by the next.
            let ack = v1::AckRequest { up_to_seq: *to_ack.borrow_and_update() };
            let _ = recipient.call::<_, v1::AckResponse>(Method::Ack, &ack).await;
        }
    });
    tokio::spawn(async move {
        while let Ok(Some(event)) = push.next().await {
            let now = base.elapsed();
            let mut last_seq = 0;
            for entry in &event.entries {
                deliveries.record(copy, &entry.message_id, now);
                last_seq = last_seq.max(entry.seq);
            }
            deliveries.notify();
            if last_seq > 0 {
                seen.send_replace(last_seq);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// With three receiving devices, a message counts as delivered once
    /// each of them has it; a second copy to one device is a duplicate, not
    /// another device's copy; other steps' ids are ignored.
    #[test]
    fn every_receiving_device_counts_its_own_copy() {
        let deliveries = Deliveries::default();
        deliveries.start_step(7, 3);
        let id = |step, seq| message_id(step, seq, Duration::ZERO, Duration::ZERO);
        let acked: HashSet<u64> = [0, 1].into();
        assert_eq!(deliveries.missing(&acked), 6);
        for copy in 0..3 {
            deliveries.record(copy, &id(7, 0), Duration::from_millis(1));
        }
        deliveries.record(0, &id(7, 1), Duration::from_millis(1));
        deliveries.record(0, &id(7, 1), Duration::from_millis(1));
        deliveries.record(1, &id(6, 1), Duration::from_millis(1));
        assert_eq!(deliveries.missing(&acked), 2, "message 1 still lacks devices 1 and 2");
        let (latencies, _, duplicates) = deliveries.finish();
        assert_eq!((latencies.count, duplicates), (4, 1));
    }
}
