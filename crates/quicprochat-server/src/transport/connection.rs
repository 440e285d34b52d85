//! One task per connection and one per RPC stream.
//!
//! Per stream: the request must arrive within `stream_read_timeout`; before
//! login only small requests are read at all; large bodies draw on a
//! per-connection byte budget so one connection cannot make the server hold
//! more than [`BODY_BUDGET_BYTES`] of request bodies; the handler runs under
//! `rpc_timeout`. During shutdown streams are still accepted and answered
//! `UNAVAILABLE` until the endpoint closes the connection; a request still
//! arriving then has [`SHUTDOWN_READ_GRACE`] to arrive, after which it is
//! answered so (or its stream reset, if not even its header came) instead
//! of holding up the drain until its read deadline.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use quicprochat_proto::v1::ErrorBody;
use quicprochat_proto::{Frame, FrameError, FrameKind, Method, Status};
use quicprochat_rpc::stream::{read_body, read_header, write_frame};
use quicprochat_rpc::{RpcError, CLOSE_PROTOCOL_VIOLATION};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::admission::AdmissionGuard;
use super::dispatch::{dispatch, Reply};
use super::push::push_loop;
use super::session::Session;
use super::ServerState;

/// Largest request read before the connection has logged in.
pub(crate) const PRE_AUTH_MAX_LEN: u32 = 4 * 1024;
/// Request body bytes one connection may have the server hold at once.
pub(crate) const BODY_BUDGET_BYTES: u32 = 32 * 1024 * 1024;
/// Stream error code sent when a request stream is abandoned.
const STREAM_ABANDONED: u32 = 1;
/// Once shutdown began, how long a request still arriving may take.
const SHUTDOWN_READ_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Serves one incoming connection until it closes.
pub(crate) async fn handle_connection(incoming: quinn::Incoming, state: Arc<ServerState>, mut guard: AdmissionGuard) {
    let remote = incoming.remote_address();
    let handshake = incoming.await;
    guard.handshake_done();
    let connection = match handshake {
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
        state.metrics.connection_opened();
        let session = Arc::new(Session::new(exporter, remote));
        let budget = Arc::new(Semaphore::new(BODY_BUDGET_BYTES as usize));
        loop {
            let (send, recv) = match connection.accept_bi().await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "connection closed");
                    break;
                }
            };
            let stream = StreamContext {
                state: state.clone(),
                session: session.clone(),
                connection: connection.clone(),
                budget: budget.clone(),
            };
            state.tasks.spawn_rpc(handle_stream(send, recv, stream));
        }
        state.metrics.connection_closed();
        drop(guard);
    }
    .instrument(span)
    .await;
}

struct StreamContext {
    state: Arc<ServerState>,
    session: Arc<Session>,
    connection: quinn::Connection,
    budget: Arc<Semaphore>,
}

async fn handle_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, context: StreamContext) {
    let StreamContext { state, session, connection, budget } = context;
    let deadline = tokio::time::Instant::now() + state.config.connections.stream_read_timeout;
    let header = match read_request_part(&state, deadline, read_header(&mut recv)).await {
        Reading::Done(Ok(Some(header))) => header,
        Reading::Done(Ok(None)) => return,
        Reading::Done(Err(error)) => return reject_frame(error, &mut send, &connection).await,
        Reading::Late => return abandon(&mut send, &mut recv, "request header not received in time"),
        Reading::ShuttingDown => return abandon(&mut send, &mut recv, "shutting down before the request arrived"),
    };
    if header.kind != FrameKind::Request || header.method == Method::Push {
        tracing::debug!(kind = ?header.kind, "closing: a non-request frame on a request stream");
        connection.close(CLOSE_PROTOCOL_VIOLATION.into(), b"expected a request frame");
        return;
    }
    if header.len > PRE_AUTH_MAX_LEN && session.user().is_none() {
        let message = format!("log in before sending a {}-byte {} request", header.len, header.method);
        let _ = respond(&mut send, header.method, Status::Unauthenticated, error_body(&message)).await;
        state.metrics.record_rpc(header.method.name(), Status::Unauthenticated.name(), std::time::Duration::ZERO);
        return;
    }
    let Ok(_body_permit) = budget.try_acquire_many(header.len) else {
        let message = "too many large requests in flight on this connection";
        let _ = respond(&mut send, header.method, Status::ResourceExhausted, error_body(message)).await;
        state.metrics.record_rpc(header.method.name(), Status::ResourceExhausted.name(), std::time::Duration::ZERO);
        return;
    };
    let request = match read_request_part(&state, deadline, read_body(&mut recv, &header)).await {
        Reading::Done(Ok(frame)) => frame,
        Reading::Done(Err(error)) => {
            tracing::debug!(%error, "request stream failed");
            return;
        }
        Reading::Late => return abandon(&mut send, &mut recv, "request body not received in time"),
        Reading::ShuttingDown => {
            // The method is known: answer as a request arriving now would
            // be, then stop the rest (answering first, so a client still
            // sending reads the answer rather than a stopped stream).
            let reply = Reply::shutting_down();
            state.metrics.record_rpc(header.method.name(), reply.status.name(), std::time::Duration::ZERO);
            let _ = respond(&mut send, header.method, reply.status, reply.body).await;
            let _ = recv.stop(STREAM_ABANDONED.into());
            return;
        }
    };
    serve_request(&state, &session, &connection, &mut send, request).await;
}

/// How reading one part of a request ended.
enum Reading<T> {
    Done(T),
    /// The stream's read deadline passed.
    Late,
    /// Shutdown began first: a request still arriving must not hold up the
    /// drain (for up to the read deadline) when nothing has started on it.
    ShuttingDown,
}

/// Reads with `read` until it finishes, `deadline` passes or shutdown
/// began [`SHUTDOWN_READ_GRACE`] ago: a request already on its way (say its
/// header split over two packets) still arrives and is answered.
async fn read_request_part<T>(
    state: &ServerState,
    deadline: tokio::time::Instant,
    read: impl std::future::Future<Output = T>,
) -> Reading<T> {
    let shutting_down = async {
        state.shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_READ_GRACE).await;
    };
    tokio::select! {
        biased;
        read = tokio::time::timeout_at(deadline, read) => match read {
            Ok(value) => Reading::Done(value),
            Err(_) => Reading::Late,
        },
        () = shutting_down => Reading::ShuttingDown,
    }
}

async fn serve_request(
    state: &Arc<ServerState>,
    session: &Session,
    connection: &quinn::Connection,
    send: &mut quinn::SendStream,
    request: Frame,
) {
    let method = request.method;
    let started = std::time::Instant::now();
    state.metrics.rpc_started();
    let span = tracing::info_span!(
        "rpc",
        %method,
        user = session.user().map_or_else(|| "-".to_owned(), |user| user.queue),
        status = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    );
    let reply = tokio::time::timeout(state.config.rpc_timeout, dispatch(state, session, method, request.body))
        .instrument(span.clone())
        .await
        .unwrap_or_else(|_| Reply::error(Status::DeadlineExceeded, "the server's deadline for this request passed"));
    let status = reply.status;
    let subscribe_from = reply.subscribe_from;
    // Recorded before the answer leaves, so a client that saw the answer
    // also sees it counted in /metrics.
    state.metrics.record_rpc(method.name(), status.name(), started.elapsed());
    let sent = respond(send, method, reply.status, reply.body).await;
    state.metrics.rpc_finished();
    if sent.is_err() {
        return;
    }
    span.record("status", status.name());
    span.record("duration_us", started.elapsed().as_micros() as u64);
    span.in_scope(|| tracing::debug!("rpc done"));
    if let (Some(after_seq), Some(user)) = (subscribe_from, session.user()) {
        let ended = session.replace_push();
        state.tasks.spawn_connection_task(push_loop(connection.clone(), state.clone(), user.queue, after_seq, ended));
    }
}

/// Answers a frame that could not be parsed: too large → `INVALID_ARGUMENT`
/// on the stream; anything else breaks the protocol → close the connection.
async fn reject_frame(error: RpcError, send: &mut quinn::SendStream, connection: &quinn::Connection) {
    match error {
        RpcError::Frame(FrameError::TooLarge { len, max, method }) => {
            let message = format!("request of {len} bytes exceeds the {max}-byte limit of {method}");
            let _ = respond(send, method, Status::InvalidArgument, error_body(&message)).await;
        }
        RpcError::Frame(error) => {
            tracing::debug!(%error, "closing: malformed frame");
            connection.close(CLOSE_PROTOCOL_VIOLATION.into(), error.to_string().as_bytes());
        }
        error => tracing::debug!(%error, "request stream failed"),
    }
}

fn abandon(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, why: &str) {
    tracing::debug!(why, "abandoning a slow request stream");
    let _ = recv.stop(STREAM_ABANDONED.into());
    let _ = send.reset(STREAM_ABANDONED.into());
}

pub(crate) async fn respond(
    send: &mut quinn::SendStream,
    method: Method,
    status: Status,
    body: Bytes,
) -> Result<(), RpcError> {
    write_frame(send, &Frame::response(method, status, body)).await?;
    let _ = send.finish();
    Ok(())
}

pub(super) fn error_body(message: &str) -> Bytes {
    Bytes::from(ErrorBody { message: message.to_owned(), ..ErrorBody::default() }.encode_to_vec())
}
