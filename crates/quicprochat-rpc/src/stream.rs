//! Reading and writing whole frames on quinn streams.
//!
//! The header is read first and validated against the method's size limit.
//! The body buffer then grows only as bytes actually arrive (never to the
//! declared length up front), so a hostile length prefix costs nothing and
//! a slow sender holds no more memory than it has really sent.

use bytes::BytesMut;
use quicprochat_proto::{Frame, FrameHeader, HEADER_LEN};
use quinn::{ReadExactError, RecvStream, SendStream};

use crate::RpcError;

/// Bytes reserved up front for a body; larger bodies grow as data arrives.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// Reads and validates a frame header. Returns `Ok(None)` if the stream
/// ended cleanly before the first byte (the peer finished the stream).
pub async fn read_header(recv: &mut RecvStream) -> Result<Option<FrameHeader>, RpcError> {
    let mut header_bytes = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header_bytes).await {
        Ok(()) => Ok(Some(FrameHeader::parse(header_bytes)?)),
        Err(ReadExactError::FinishedEarly(0)) => Ok(None),
        Err(ReadExactError::FinishedEarly(_)) => Err(RpcError::Truncated),
        Err(ReadExactError::ReadError(error)) => Err(RpcError::Read(error.to_string())),
    }
}

/// Reads the body announced by `header`.
pub async fn read_body(recv: &mut RecvStream, header: &FrameHeader) -> Result<Frame, RpcError> {
    let len = header.len as usize;
    let mut body = BytesMut::with_capacity(len.min(INITIAL_BODY_CAPACITY));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(RpcError::Truncated),
            Err(error) => return Err(RpcError::Read(error.to_string())),
        }
    }
    Ok(Frame { method: header.method, kind: header.kind, status: header.status, body: body.freeze() })
}

/// Reads one frame. Returns `Ok(None)` if the stream ended cleanly before
/// the first header byte (the peer finished the stream).
pub async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>, RpcError> {
    let Some(header) = read_header(recv).await? else {
        return Ok(None);
    };
    read_body(recv, &header).await.map(Some)
}

/// Writes one frame (does not finish the stream).
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), RpcError> {
    let mut out = BytesMut::new();
    frame.encode(&mut out)?;
    send.write_all(&out).await?;
    Ok(())
}
