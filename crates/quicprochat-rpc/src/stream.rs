//! Reading and writing whole frames on quinn streams.
//!
//! The header is read first and validated against the method's size limit;
//! only then is the body buffer allocated, so a hostile length prefix costs
//! nothing.

use bytes::{Bytes, BytesMut};
use quicprochat_proto::{Frame, FrameHeader, HEADER_LEN};
use quinn::{ReadExactError, RecvStream, SendStream};

use crate::RpcError;

/// Reads one frame. Returns `Ok(None)` if the stream ended cleanly before
/// the first header byte (the peer finished the stream).
pub async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>, RpcError> {
    let mut header_bytes = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header_bytes).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(_)) => return Err(RpcError::Truncated),
        Err(ReadExactError::ReadError(error)) => return Err(RpcError::Read(error.to_string())),
    }
    let header = FrameHeader::parse(header_bytes)?;
    let mut body = vec![0u8; header.len as usize];
    match recv.read_exact(&mut body).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(_)) => return Err(RpcError::Truncated),
        Err(ReadExactError::ReadError(error)) => return Err(RpcError::Read(error.to_string())),
    }
    Ok(Some(Frame { method: header.method, kind: header.kind, status: header.status, body: Bytes::from(body) }))
}

/// Writes one frame (does not finish the stream).
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), RpcError> {
    let mut out = BytesMut::new();
    frame.encode(&mut out)?;
    send.write_all(&out).await?;
    Ok(())
}
