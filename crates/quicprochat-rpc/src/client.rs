//! The client end: one QUIC connection, one bidirectional stream per call,
//! a deadline on every call, and the server's push stream.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use quicprochat_proto::v1::{ErrorBody, PushEvent};
use quicprochat_proto::{Frame, FrameKind, Method, Status};

use crate::stream::{read_frame, write_frame};
use crate::tls::{CertFingerprint, PinnedServer};
use crate::transport::{client_config, client_endpoint, TransportLimits};
use crate::{RpcError, CLOSE_CLIENT_DONE};

/// A connected RPC client.
#[derive(Debug, Clone)]
pub struct RpcClient {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    call_timeout: Duration,
    retry_budget: Duration,
    fingerprint: CertFingerprint,
}

impl RpcClient {
    /// Connects to `addr`, checking the server certificate against `pin`
    /// (trust on first use when the pin is empty).
    pub async fn connect(
        addr: SocketAddr,
        pin: PinnedServer,
        limits: &TransportLimits,
        call_timeout: Duration,
    ) -> Result<RpcClient, RpcError> {
        let endpoint = client_endpoint(addr)?;
        let config = client_config(pin.clone(), limits)?;
        let connecting = endpoint.connect_with(config, addr, "qpc-server")?;
        let connection = match tokio::time::timeout(call_timeout, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                return Err(match (pin.expected, pin.seen()) {
                    (Some(expected), Some(seen)) if expected != seen => RpcError::Tls(format!(
                        "the server at {addr} presented certificate {seen}, but {expected} is pinned for it: \
                         the server's key changed or someone is intercepting the connection"
                    )),
                    _ => RpcError::Connection(error),
                });
            }
            Err(_) => {
                return Err(RpcError::Timeout {
                    method: Method::Challenge,
                    timeout_ms: call_timeout.as_millis() as u64,
                })
            }
        };
        let fingerprint =
            pin.seen().ok_or_else(|| RpcError::Tls("handshake finished without a server certificate".into()))?;
        Ok(RpcClient { endpoint, connection, call_timeout, retry_budget: Duration::ZERO, fingerprint })
    }

    /// A client over a connection made elsewhere (a federation dial, whose
    /// TLS config and pins are the caller's); `fingerprint` is the
    /// certificate the other side presented.
    pub fn from_connection(
        endpoint: quinn::Endpoint,
        connection: quinn::Connection,
        call_timeout: Duration,
        fingerprint: CertFingerprint,
    ) -> RpcClient {
        RpcClient { endpoint, connection, call_timeout, retry_budget: Duration::ZERO, fingerprint }
    }

    /// Lets calls wait out the server's retry-after hints (on
    /// `RESOURCE_EXHAUSTED` and `UNAVAILABLE`) for up to `budget` in total
    /// before giving up with the error. Zero (the default) never waits.
    pub fn with_retry_budget(mut self, budget: Duration) -> RpcClient {
        self.retry_budget = budget;
        self
    }

    /// How long calls may wait out retry-after hints in total (see
    /// [`RpcClient::with_retry_budget`]); for callers that meet the hints
    /// in a response's parts rather than its status.
    pub fn retry_budget(&self) -> Duration {
        self.retry_budget
    }

    /// The fingerprint of the certificate the server presented.
    pub fn server_fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// The underlying QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// The underlying endpoint (for rebinding to a new socket).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Keying material binding a login proof to this connection.
    pub fn auth_exporter(&self) -> Result<[u8; 32], RpcError> {
        crate::auth_exporter(&self.connection)
    }

    /// Calls `method` with `request`, decoding the response as `Resp`.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: Method,
        request: &Req,
    ) -> Result<Resp, RpcError> {
        let request = Bytes::from(request.encode_to_vec());
        let mut waited = Duration::ZERO;
        loop {
            match self.call_raw(method, request.clone()).await {
                Ok(body) => {
                    return Resp::decode(body).map_err(|source| RpcError::Decode { what: method.name(), source })
                }
                Err(RpcError::Status { status, retry_after_ms, .. })
                    if matches!(status, Status::ResourceExhausted | Status::Unavailable)
                        && retry_after_ms > 0
                        && waited + Duration::from_millis(retry_after_ms) <= self.retry_budget =>
                {
                    let pause = Duration::from_millis(retry_after_ms);
                    tracing::debug!(%method, %status, ?pause, "server asked to retry later");
                    tokio::time::sleep(pause).await;
                    waited += pause;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Calls `method` with an encoded body; returns the encoded OK response.
    pub async fn call_raw(&self, method: Method, body: Bytes) -> Result<Bytes, RpcError> {
        let exchange = async {
            let (mut send, mut recv) = self.connection.open_bi().await?;
            write_frame(&mut send, &Frame::request(method, body)).await?;
            // The server reads exactly one frame; finishing is a courtesy.
            let _ = send.finish();
            read_frame(&mut recv).await?.ok_or(RpcError::Truncated)
        };
        let frame = tokio::time::timeout(self.call_timeout, exchange)
            .await
            .map_err(|_| RpcError::Timeout { method, timeout_ms: self.call_timeout.as_millis() as u64 })??;
        if frame.kind != FrameKind::Response || frame.method != method {
            return Err(RpcError::Unexpected(format!(
                "asked {method}, got a {:?} frame for {}",
                frame.kind, frame.method
            )));
        }
        if frame.status == Status::Ok {
            return Ok(frame.body);
        }
        let error = ErrorBody::decode(frame.body).unwrap_or_default();
        Err(RpcError::Status {
            method,
            status: frame.status,
            message: error.message,
            retry_after_ms: error.retry_after_ms,
            current_epoch: error.current_epoch,
        })
    }

    /// Waits for the server to open the push stream (after `Subscribe`).
    pub async fn accept_push(&self) -> Result<PushStream, RpcError> {
        let recv = self.connection.accept_uni().await?;
        Ok(PushStream { recv, pending: BytesMut::new() })
    }

    /// Closes the connection with the normal close code and waits briefly
    /// for the close to reach the server.
    pub async fn close(&self) {
        self.connection.close(CLOSE_CLIENT_DONE.into(), b"client closed");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Most bytes a push stream takes from quinn per read.
const PUSH_READ_BYTES: usize = 64 * 1024;

/// The server-opened stream of push events.
///
/// Reading is cancel-safe: bytes of a frame that has not fully arrived stay
/// in `pending`, so a `next()` dropped at a deadline (or polled once by
/// [`PushStream::ready`]) loses nothing. `pending` holds at most one frame,
/// whose header has passed the size limit, plus one read of
/// [`PUSH_READ_BYTES`].
#[derive(Debug)]
pub struct PushStream {
    recv: quinn::RecvStream,
    pending: BytesMut,
}

impl PushStream {
    /// The next push event; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<PushEvent>, RpcError> {
        loop {
            if let Some(frame) = Frame::decode(&mut self.pending)? {
                return decode_push(frame).map(Some);
            }
            match self.recv.read_chunk(PUSH_READ_BYTES, true).await {
                Ok(Some(chunk)) => self.pending.extend_from_slice(&chunk.bytes),
                Ok(None) if self.pending.is_empty() => return Ok(None),
                Ok(None) => return Err(RpcError::Truncated),
                Err(error) => return Err(RpcError::Read(error.to_string())),
            }
        }
    }

    /// The next push event if it has already arrived, without waiting:
    /// `None` when nothing (or only part of an event) is there yet.
    pub fn ready(&mut self) -> Option<Result<Option<PushEvent>, RpcError>> {
        let mut context = Context::from_waker(Waker::noop());
        match pin!(self.next()).poll(&mut context) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        }
    }
}

fn decode_push(frame: Frame) -> Result<PushEvent, RpcError> {
    if frame.kind != FrameKind::Push {
        return Err(RpcError::Unexpected(format!("a {:?} frame on the push stream", frame.kind)));
    }
    PushEvent::decode(frame.body).map_err(|source| RpcError::Decode { what: "PushEvent", source })
}
