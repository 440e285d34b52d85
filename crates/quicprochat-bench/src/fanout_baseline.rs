//! B4's baseline, measured in the same run: the same fan-out over bare
//! quinn. One connection per member (the same TLS, the same client
//! endpoints as B4), each with a server-opened stream and one task writing
//! to it; per message, every task is woken and writes one push frame of the
//! size B4's pushes have. No auth, no storage, no MLS, no queue: what quinn,
//! tokio and the kernel cost to reach N connections on this machine, which
//! bounds what the server's fan-out can reach.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use quicprochat_proto::v1::{PushEvent, QueueEntry};
use quicprochat_proto::Frame;
use quicprochat_rpc::stream::write_frame;
use quicprochat_rpc::tls::generate_server_identity;
use quicprochat_rpc::transport::{server_endpoint, IncomingLimits};
use quicprochat_rpc::PinnedServer;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::histogram::{Latencies, Summary};
use crate::setup::{bench_transport, connect};

/// How long one message may take to reach every member before the run fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Arrivals {
    /// (message index, members that have it, when the last one got it).
    state: Mutex<(u64, usize, Duration)>,
    changed: Notify,
}

/// Time from "write" until the last of `members` connections has read one
/// push frame carrying `payload_len` bytes, over `messages` messages sent one
/// after another.
pub(crate) async fn run(members: usize, messages: usize, payload_len: usize) -> anyhow::Result<Summary> {
    let identity = generate_server_identity(&["localhost".to_owned()])?;
    let incoming = IncomingLimits { max_pending_handshakes: 4096, incoming_buffer_bytes: 64 * 1024 * 1024 };
    let endpoint =
        server_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &identity, &bench_transport(), incoming)?;
    let addr = endpoint.local_addr()?;
    let pin = PinnedServer::new(Some(identity.fingerprint()));
    let (release, released) = watch::channel(0u64);
    let base = Instant::now();
    let arrivals = Arc::new(Arrivals::default());
    let frame = {
        // The fields a B4 push carries, with the same lengths.
        let entry = QueueEntry {
            seq: 1_000_000,
            message_id: vec![0u8; 4].into(),
            group_id: b"fanout-group-000".to_vec().into(),
            group_name: "fan-out".into(),
            sender: "fan-sender".into(),
            payload: vec![b'x'; payload_len].into(),
            stored_at_ms: 1_800_000_000_000,
            epoch: 1,
            ..QueueEntry::default()
        };
        Frame::push(Bytes::from(PushEvent { entries: vec![entry] }.encode_to_vec()))
    };
    let opening = Frame::push(Bytes::from(PushEvent { entries: Vec::new() }.encode_to_vec()));
    let mut clients = Vec::with_capacity(members);
    for _ in 0..members {
        let accept = async {
            let incoming = endpoint.accept().await.context("the endpoint closed")?;
            anyhow::Ok(incoming.await.context("handshake")?)
        };
        let (client, connection) = tokio::join!(connect(addr, pin.clone()), accept);
        let (client, connection) = (client?, connection?);
        let mut send = connection.open_uni().await.context("open the push stream")?;
        // QUIC announces a stream with its first bytes: an empty event, read
        // below, so every stream is open before the clock starts.
        write_frame(&mut send, &opening).await.context("write the opening event")?;
        let mut released = released.clone();
        let frame = frame.clone();
        tokio::spawn(async move {
            let _connection = connection;
            while released.changed().await.is_ok() {
                if write_frame(&mut send, &frame).await.is_err() {
                    return;
                }
            }
        });
        let mut push = client.accept_push().await.context("accept the push stream")?;
        push.next().await.context("read the opening event")?;
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(Some(_event)) = push.next().await {
                let now = base.elapsed();
                {
                    let mut state = arrivals.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    state.1 += 1;
                    state.2 = state.2.max(now);
                }
                arrivals.changed.notify_waiters();
            }
        });
        clients.push(client);
    }
    let mut latencies = Latencies::new();
    for index in 1..=messages as u64 {
        {
            let mut state = arrivals.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *state = (index, 0, Duration::ZERO);
        }
        let sent_at = base.elapsed();
        release.send(index).context("writer tasks are gone")?;
        let deadline = Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let changed = arrivals.changed.notified();
            let (_, count, last) = *arrivals.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if count >= members {
                latencies.record(last.saturating_sub(sent_at));
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "message {index} reached {count} of {members} members");
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }
    drop(clients);
    endpoint.close(0u32.into(), b"done");
    Ok(latencies.summary())
}
