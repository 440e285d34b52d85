//! A UDP relay in front of one server that forwards every datagram both
//! ways, or drops them all while cut: B9's partition between two servers.
//! Each client source address gets its own upstream socket, so the server
//! sees one stable peer per client and its answers come back through it.
//! The relay binds before it knows its server (two servers each need the
//! other's address before either starts): until [`Relay::aim`] it drops
//! everything.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The relay's own task and its switch.
pub(crate) struct Relay {
    addr: SocketAddr,
    server: Arc<OnceLock<SocketAddr>>,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// A relay on `127.0.0.1:0`, in front of no server yet.
    pub(crate) async fn bind() -> anyhow::Result<Relay> {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        let addr = front.local_addr()?;
        let (server, cut) = (Arc::new(OnceLock::new()), Arc::new(AtomicBool::new(false)));
        let task = tokio::spawn(forward(front, server.clone(), cut.clone()));
        Ok(Relay { addr, server, cut, task })
    }

    /// Puts the relay in front of `server` (the first call counts).
    pub(crate) fn aim(&self, server: SocketAddr) {
        let _ = self.server.set(server);
    }

    /// Where clients of the server send instead.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// While `on`, every datagram in both directions is dropped.
    pub(crate) fn set_cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(front: Arc<UdpSocket>, server: Arc<OnceLock<SocketAddr>>, cut: Arc<AtomicBool>) {
    let upstreams: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>> = Mutex::default();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, client)) = front.recv_from(&mut buffer).await else { return };
        let Some(&server) = server.get() else { continue };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        let known = upstreams.lock().ok().and_then(|map| map.get(&client).cloned());
        let upstream = match known {
            Some(upstream) => upstream,
            None => {
                let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await else { continue };
                if socket.connect(server).await.is_err() {
                    continue;
                }
                let socket = Arc::new(socket);
                tokio::spawn(answer(socket.clone(), front.clone(), client, cut.clone()));
                if let Ok(mut map) = upstreams.lock() {
                    map.insert(client, socket.clone());
                }
                socket
            }
        };
        let _ = upstream.send(&buffer[..len]).await;
    }
}

/// The server's datagrams on `upstream`, back to `client` through `front`.
async fn answer(upstream: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, cut: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 65_536];
    while let Ok(len) = upstream.recv(&mut buffer).await {
        if !cut.load(Ordering::SeqCst) {
            let _ = front.send_to(&buffer[..len], client).await;
        }
    }
}
