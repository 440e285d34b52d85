//! quinn endpoint construction with explicit transport limits.
//!
//! quinn's defaults let one connection hold large receive windows and many
//! streams; quicprochat sets every limit explicitly (see [`TransportLimits`]).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{AckFrequencyConfig, IdleTimeout, TransportConfig, VarInt};

use crate::tls::{client_tls_config, server_tls_config, PinnedServer, ServerIdentity};
use crate::RpcError;

/// Ack-eliciting packets the peer may receive before it must send an ACK
/// (QUIC's ACK frequency extension, which quinn speaks at both ends; each
/// end asks this of the other). QUIC's default is 1, an ACK for every
/// second packet; an RPC's answer carries the ACK of its request anyway,
/// so most of those ACKs went out in datagrams of their own. With 9, B3
/// moved 13 % fewer datagrams per message near idle and 15–25 % fewer at
/// 15,000 msgs/s, and near idle send → push p50 fell by 0.03–0.05 ms
/// (BENCHMARKS.md, "Fewer QUIC ACKs"). The peer still acknowledges within
/// its `max_ack_delay` (25 ms), which loss detection already allows for.
const ACK_ELICITING_THRESHOLD: u32 = 9;

/// Per-connection QUIC limits.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Concurrent client-opened bidirectional streams (= in-flight RPCs).
    pub max_concurrent_rpcs: u32,
    /// Receive window of one stream, bytes.
    pub stream_receive_window: u32,
    /// Receive window of the whole connection, bytes.
    pub connection_receive_window: u32,
    /// Idle timeout; a connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval; must be below the idle timeout.
    pub keep_alive: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_concurrent_rpcs: 64,
            stream_receive_window: 2 * 1024 * 1024,
            connection_receive_window: 8 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

impl TransportLimits {
    pub(crate) fn transport_config(&self, accept_uni_streams: u32) -> Result<TransportConfig, RpcError> {
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| RpcError::Tls(format!("idle timeout {:?} is out of range", self.idle_timeout)))?;
        let mut config = TransportConfig::default();
        config
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_rpcs))
            .max_concurrent_uni_streams(VarInt::from_u32(accept_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.connection_receive_window))
            .send_window(u64::from(self.connection_receive_window))
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive.min(self.idle_timeout / 2)));
        let mut ack_frequency = AckFrequencyConfig::default();
        ack_frequency.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
        config.ack_frequency_config(Some(ack_frequency));
        Ok(config)
    }
}

/// Endpoint-wide limits on connections not yet accepted.
#[derive(Debug, Clone, Copy)]
pub struct IncomingLimits {
    /// Connection attempts (handshakes) held at once; more are refused.
    pub max_pending_handshakes: u32,
    /// Bytes buffered for all connection attempts together.
    pub incoming_buffer_bytes: u64,
}

/// Binds a server endpoint on `addr` with the given certificate and limits.
pub fn server_endpoint(
    addr: SocketAddr,
    identity: &ServerIdentity,
    limits: &TransportLimits,
    incoming: IncomingLimits,
) -> Result<quinn::Endpoint, RpcError> {
    Ok(quinn::Endpoint::server(server_config(identity, limits, incoming)?, addr)?)
}

/// The server configuration [`server_endpoint`] uses, for a caller that
/// builds the endpoint itself (e.g. with its own [`quinn::Runtime`]).
pub fn server_config(
    identity: &ServerIdentity,
    limits: &TransportLimits,
    incoming: IncomingLimits,
) -> Result<quinn::ServerConfig, RpcError> {
    let tls = server_tls_config(identity)?;
    let quic_tls = QuicServerConfig::try_from(tls).map_err(|error| RpcError::Tls(error.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
    config
        .max_incoming(incoming.max_pending_handshakes as usize)
        .incoming_buffer_size(incoming.incoming_buffer_bytes.min(1024 * 1024))
        .incoming_buffer_size_total(incoming.incoming_buffer_bytes);
    // Clients never open unidirectional streams; the server opens the push stream.
    config.transport_config(Arc::new(limits.transport_config(0)?));
    Ok(config)
}

/// A client endpoint bound to an ephemeral port on the address family (and,
/// for loopback targets, the interface) of `server`.
pub fn client_endpoint(server: SocketAddr) -> Result<quinn::Endpoint, RpcError> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(v6) if v6.ip().is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    Ok(quinn::Endpoint::client(bind)?)
}

/// quinn client config pinning the server certificate.
pub fn client_config(pin: PinnedServer, limits: &TransportLimits) -> Result<quinn::ClientConfig, RpcError> {
    let tls = client_tls_config(pin)?;
    let quic_tls = QuicClientConfig::try_from(tls).map_err(|error| RpcError::Tls(error.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic_tls));
    // One push stream at a time, plus slack for a replacement.
    config.transport_config(Arc::new(limits.transport_config(4)?));
    Ok(config)
}
