//! A seeded UDP relay between QUIC clients and the server that impairs the
//! path: it drops a fraction of datagrams, delays them, reorders them by
//! holding some back longer, and can blackhole everything.
//!
//! Clients are given the relay's address as the server address. Each client
//! source address gets its own upstream socket (connected to the server), so
//! the server sees one stable peer per client and its replies come back
//! through the socket that client talks to. Decisions (drop, delay, hold
//! back) come from one seeded RNG per direction, so a seed always yields the
//! same sequence of decisions; which datagram meets which decision still
//! depends on timing. Delays are `tokio::time::sleep` in a spawned task:
//! that is the impairment itself, not synchronisation.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// How the relay treats datagrams (the same in both directions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Impairment {
    /// Probability that a datagram is dropped.
    pub(crate) loss: f64,
    /// Each datagram is delayed by a uniform number of milliseconds in this range.
    pub(crate) delay_ms: (u64, u64),
    /// Probability that a datagram is held back a further 1–2 × the maximum
    /// delay, so that later datagrams overtake it.
    pub(crate) reorder: f64,
}

impl Impairment {
    /// A clean path (still blackholable).
    pub(crate) const NONE: Impairment = Impairment { loss: 0.0, delay_ms: (0, 0), reorder: 0.0 };
}

/// Counters of one direction.
#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    reordered: AtomicU64,
}

/// What happened to the datagrams of one direction so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirectionStats {
    pub(crate) forwarded: u64,
    pub(crate) dropped: u64,
    pub(crate) reordered: u64,
}

/// One direction's decisions.
struct Lane {
    rng: Mutex<StdRng>,
    counters: Counters,
}

struct Control {
    impairment: Impairment,
    blackhole: AtomicBool,
    to_server: Lane,
    to_client: Lane,
}

impl Control {
    /// `None`: drop the datagram; otherwise send it after this delay.
    fn decide(&self, lane: &Lane) -> Option<Duration> {
        if self.blackhole.load(Ordering::SeqCst) {
            lane.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let Impairment { loss, delay_ms: (min, max), reorder } = self.impairment;
        let mut rng = lane.rng.lock().expect("relay rng lock is never poisoned");
        if rng.random_bool(loss) {
            lane.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut delay = rng.random_range(min..=max);
        if rng.random_bool(reorder) {
            delay += max + rng.random_range(1..=max.max(1));
            lane.counters.reordered.fetch_add(1, Ordering::Relaxed);
        }
        lane.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        Some(Duration::from_millis(delay))
    }
}

/// Where a datagram goes.
#[derive(Clone)]
enum Target {
    /// Upstream: the client's own socket, connected to the server.
    Server(Arc<UdpSocket>),
    /// Downstream: from the relay's public socket to the client.
    Client(Arc<UdpSocket>, SocketAddr),
}

impl Target {
    async fn send(&self, datagram: &[u8]) {
        // A failed send is a lost datagram; QUIC copes.
        let _ = match self {
            Target::Server(socket) => socket.send(datagram).await,
            Target::Client(socket, peer) => socket.send_to(datagram, *peer).await,
        };
    }
}

/// Applies the lane's decision to one datagram.
async fn pass(control: &Control, lane: &Lane, datagram: &[u8], target: &Target) {
    match control.decide(lane) {
        None => {}
        Some(delay) if delay.is_zero() => target.send(datagram).await,
        Some(delay) => {
            let (datagram, target) = (datagram.to_vec(), target.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                target.send(&datagram).await;
            });
        }
    }
}

/// A running relay; stops when dropped.
pub(crate) struct Relay {
    addr: SocketAddr,
    control: Arc<Control>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts a relay on `127.0.0.1:0` in front of `server`.
    pub(crate) async fn start(server: SocketAddr, impairment: Impairment, seed: u64) -> Relay {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind relay"));
        let addr = front.local_addr().expect("relay address");
        let lane = |seed| Lane { rng: Mutex::new(StdRng::seed_from_u64(seed)), counters: Counters::default() };
        let control = Arc::new(Control {
            impairment,
            blackhole: AtomicBool::new(false),
            to_server: lane(seed),
            to_client: lane(seed ^ 0x5eed_0fc1_1e47),
        });
        let task = tokio::spawn(run(front, server, control.clone()));
        Relay { addr, control, task }
    }

    /// The address clients use as the server address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// While set, every datagram in both directions is dropped.
    pub(crate) fn set_blackhole(&self, on: bool) {
        self.control.blackhole.store(on, Ordering::SeqCst);
    }

    /// (client → server, server → client) counters.
    pub(crate) fn stats(&self) -> (DirectionStats, DirectionStats) {
        let snapshot = |lane: &Lane| DirectionStats {
            forwarded: lane.counters.forwarded.load(Ordering::Relaxed),
            dropped: lane.counters.dropped.load(Ordering::Relaxed),
            reordered: lane.counters.reordered.load(Ordering::Relaxed),
        };
        (snapshot(&self.control.to_server), snapshot(&self.control.to_client))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads from clients and forwards upstream; starts a downstream task per client.
async fn run(front: Arc<UdpSocket>, server: SocketAddr, control: Arc<Control>) {
    let mut upstream: HashMap<SocketAddr, Target> = HashMap::new();
    // Owned here, so aborting the relay task aborts every downstream task.
    let mut downstream = JoinSet::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok((len, peer)) = front.recv_from(&mut buffer).await else { continue };
        let target = match upstream.get(&peer) {
            Some(target) => target.clone(),
            None => {
                let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind upstream socket");
                socket.connect(server).await.expect("connect upstream socket");
                let socket = Arc::new(socket);
                let back = Target::Client(front.clone(), peer);
                downstream.spawn(relay_down(socket.clone(), back, control.clone()));
                let target = Target::Server(socket);
                upstream.insert(peer, target.clone());
                target
            }
        };
        pass(&control, &control.to_server, &buffer[..len], &target).await;
    }
}

/// Forwards the server's datagrams for one client back to it.
async fn relay_down(socket: Arc<UdpSocket>, back: Target, control: Arc<Control>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // Errors (e.g. ICMP "port unreachable" while the server is down) are transient.
        let Ok(len) = socket.recv(&mut buffer).await else { continue };
        pass(&control, &control.to_client, &buffer[..len], &back).await;
    }
}
