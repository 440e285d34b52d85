//! The server's sockets: the metrics/health TCP listener and the QUIC UDP
//! sockets (client port, federation port), bound on quinn's driver runtime
//! with the receive buffer asked of the kernel.

use std::net::SocketAddr;
use std::sync::Arc;

use quicprochat_rpc::RpcError;

use super::ServerError;
use crate::transport::DriverTasks;

/// Binds the metrics/health listener; returns it with its bound address.
pub(super) async fn bind_metrics(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::MetricsListen { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::MetricsListen { addr, source })?;
    Ok((listener, bound))
}

/// Binds the QUIC endpoint, whose tasks quinn spawns on `drivers`; returns
/// it with its bound address.
pub(super) fn bind_endpoint(
    listen: SocketAddr,
    receive_buffer_bytes: u64,
    quic_config: quinn::ServerConfig,
    drivers: &DriverTasks,
) -> Result<(quinn::Endpoint, SocketAddr), RpcError> {
    let socket = std::net::UdpSocket::bind(listen)?;
    let local_addr = socket.local_addr()?;
    set_receive_buffer(&socket, receive_buffer_bytes);
    let runtime = Arc::new(drivers.clone());
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(quic_config), socket, runtime)?;
    Ok((endpoint, local_addr))
}

/// Asks the kernel for a UDP receive buffer of `bytes`; says so when it
/// grants less (the default, about 208 KiB, drops packets when many clients
/// handshake at once, e.g. right after a restart).
fn set_receive_buffer(socket: &std::net::UdpSocket, bytes: u64) {
    let requested = usize::try_from(bytes).unwrap_or(usize::MAX);
    let state = match quinn::udp::UdpSocketState::new(socket.into()) {
        Ok(state) => state,
        Err(error) => {
            tracing::warn!(%error, "cannot inspect the UDP socket; keeping the system's receive buffer");
            return;
        }
    };
    if let Err(error) = state.set_recv_buffer_size(socket.into(), requested) {
        tracing::warn!(%error, requested, "cannot set the UDP receive buffer");
    }
    match state.recv_buffer_size(socket.into()) {
        Ok(reported) => {
            // Linux reports twice what it reserved (its bookkeeping included).
            let granted = if cfg!(target_os = "linux") { reported / 2 } else { reported };
            if granted < requested {
                tracing::warn!(
                    requested,
                    granted,
                    "the kernel granted a smaller UDP receive buffer than connections.udp_receive_buffer_bytes; \
                     raise net.core.rmem_max to avoid dropped handshakes under bursts"
                );
            } else {
                tracing::info!(granted, "UDP receive buffer");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the UDP receive buffer size"),
    }
}
