//! One task per connection and one per RPC stream.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use quicprochat_proto::v1::ErrorBody;
use quicprochat_proto::{Frame, FrameError, FrameKind, Method, Status};
use quicprochat_rpc::stream::{read_frame, write_frame};
use quicprochat_rpc::{RpcError, CLOSE_PROTOCOL_VIOLATION};
use tracing::Instrument;

use super::dispatch::{dispatch, Reply};
use super::push::push_loop;
use super::session::Session;
use super::ServerState;

/// Serves one incoming connection until it closes or the server shuts down.
pub(crate) async fn handle_connection(incoming: quinn::Incoming, state: Arc<ServerState>) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%remote, %error, "handshake failed");
            return;
        }
    };
    let span = tracing::info_span!("connection", %remote, id = connection.stable_id());
    async move {
        let exporter = match quicprochat_rpc::auth_exporter(&connection) {
            Ok(exporter) => exporter,
            Err(error) => {
                tracing::warn!(%error, "closing: no TLS exporter");
                return;
            }
        };
        tracing::debug!("connected");
        let session = Arc::new(Session::new(exporter));
        loop {
            let (send, recv) = tokio::select! {
                _ = state.shutdown.cancelled() => break,
                stream = connection.accept_bi() => match stream {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%error, "connection closed");
                        return;
                    }
                },
            };
            if state.rpcs.is_closed() {
                break;
            }
            let (state, session, connection) = (state.clone(), session.clone(), connection.clone());
            state.rpcs.clone().spawn(async move { handle_stream(send, recv, state, session, connection).await });
        }
        // Shutting down: keep the connection until the endpoint closes it
        // with the shutdown code, so in-flight RPCs can still answer.
        connection.closed().await;
    }
    .instrument(span)
    .await;
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    state: Arc<ServerState>,
    session: Arc<Session>,
    connection: quinn::Connection,
) {
    let request = match read_frame(&mut recv).await {
        Ok(Some(frame)) if frame.kind == FrameKind::Request && frame.method != Method::Push => frame,
        Ok(Some(frame)) => {
            tracing::debug!(kind = ?frame.kind, "closing: a non-request frame on a request stream");
            connection.close(CLOSE_PROTOCOL_VIOLATION.into(), b"expected a request frame");
            return;
        }
        Ok(None) => return,
        Err(RpcError::Frame(FrameError::TooLarge { len, max, method })) => {
            let message = format!("request of {len} bytes exceeds the {max}-byte limit of {method}");
            let _ = respond(&mut send, method, Status::InvalidArgument, error_body(&message)).await;
            return;
        }
        Err(RpcError::Frame(error)) => {
            tracing::debug!(%error, "closing: malformed frame");
            connection.close(CLOSE_PROTOCOL_VIOLATION.into(), error.to_string().as_bytes());
            return;
        }
        Err(error) => {
            tracing::debug!(%error, "request stream failed");
            return;
        }
    };
    let method = request.method;
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("rpc", %method, user = session.user().as_deref().unwrap_or("-"));
    let reply = tokio::time::timeout(state.config.rpc_timeout, dispatch(&state, &session, method, request.body))
        .instrument(span.clone())
        .await
        .unwrap_or_else(|_| Reply::error(Status::DeadlineExceeded, "the server's deadline for this request passed"));
    let status = reply.status;
    let subscribe_from = reply.subscribe_from;
    if respond(&mut send, method, reply.status, reply.body).await.is_err() {
        return;
    }
    span.in_scope(|| tracing::debug!(%status, elapsed_us = started.elapsed().as_micros() as u64, "rpc done"));
    if let (Some(after_seq), Some(user)) = (subscribe_from, session.user()) {
        tokio::spawn(push_loop(connection, state, user, after_seq));
    }
}

async fn respond(send: &mut quinn::SendStream, method: Method, status: Status, body: Bytes) -> Result<(), RpcError> {
    write_frame(send, &Frame::response(method, status, body)).await?;
    let _ = send.finish();
    Ok(())
}

pub(super) fn error_body(message: &str) -> Bytes {
    Bytes::from(ErrorBody { message: message.to_owned(), ..ErrorBody::default() }.encode_to_vec())
}
