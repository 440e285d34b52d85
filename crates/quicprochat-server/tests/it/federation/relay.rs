//! A UDP relay between two servers' federation ports, so a test can cut the
//! link between them and heal it (no root, no network namespace).
//!
//! A server dials the relay's address as if it were the peer; each client
//! address gets an upstream socket of its own towards the target, and
//! replies come back the same way. While cut, every datagram in either
//! direction is dropped: to both QUIC ends the path is dead.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub(crate) struct UdpRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    target: Mutex<Option<SocketAddr>>,
    cut: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl UdpRelay {
    /// A relay on `127.0.0.1:0` with no target yet (datagrams are dropped
    /// until [`UdpRelay::set_target`]).
    pub(crate) async fn bind() -> UdpRelay {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind relay"));
        let addr = front.local_addr().expect("relay address");
        let shared =
            Arc::new(Shared { target: Mutex::new(None), cut: AtomicBool::new(false), tasks: Mutex::default() });
        let task = tokio::spawn(forward_from_clients(front, shared.clone()));
        UdpRelay { addr, shared, task }
    }

    /// The address to give as the peer's.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where datagrams go.
    pub(crate) fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("relay lock") = Some(target);
    }

    /// Drops every datagram from now on, both ways.
    #[allow(dead_code)] // used by the partition tests of step 6
    pub(crate) fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards again.
    #[allow(dead_code)]
    pub(crate) fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
        for task in self.shared.tasks.lock().expect("relay lock").drain(..) {
            task.abort();
        }
    }
}

async fn forward_from_clients(front: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, client)) = front.recv_from(&mut buffer).await else { return };
        let target = *shared.target.lock().expect("relay lock");
        let Some(target) = target else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            continue;
        }
        let upstream = match upstreams.get(&client) {
            Some(upstream) => upstream.clone(),
            None => {
                let upstream = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind upstream"));
                let back = tokio::spawn(forward_to_client(upstream.clone(), front.clone(), client, shared.clone()));
                shared.tasks.lock().expect("relay lock").push(back);
                upstreams.insert(client, upstream.clone());
                upstream
            }
        };
        let _ = upstream.send_to(&buffer[..len], target).await;
    }
}

async fn forward_to_client(upstream: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, shared: Arc<Shared>) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, _)) = upstream.recv_from(&mut buffer).await else { return };
        if shared.cut.load(Ordering::SeqCst) {
            continue;
        }
        let _ = front.send_to(&buffer[..len], client).await;
    }
}
