//! The frame: the unit every QUIC stream carries.
//!
//! Layout (8-byte header, big-endian, then the Protobuf body):
//!
//! ```text
//! | body length: u32 | method: u16 | kind: u8 | status: u8 | body ... |
//! ```
//!
//! `kind` is request (0), response (1) or push (2); `status` is a [`Status`]
//! on responses and 0 otherwise. The body length is checked against the
//! method's limit before any body byte is buffered, so a hostile length
//! prefix costs nothing. [`Frame::decode`] returns `Ok(None)` while the input
//! is incomplete.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Method, Status};

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 8;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A client request; one per stream.
    Request = 0,
    /// The server's answer to the request on the same stream.
    Response = 1,
    /// A server-initiated event on the push stream.
    Push = 2,
}

/// Why a frame could not be decoded. None of these is retryable: the peer
/// sent bytes that do not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The method number is not one this version knows.
    #[error("unknown method {0}")]
    UnknownMethod(u16),
    /// The kind byte is not request, response or push.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The status byte of a response is not a known status code.
    #[error("unknown status code {0}")]
    UnknownStatus(u8),
    /// A request or push frame carried a non-zero status byte.
    #[error("status byte {0} set on a frame that is not a response")]
    StatusOnNonResponse(u8),
    /// The body is longer than the method allows for this kind of frame.
    #[error("frame body of {len} bytes exceeds the {max}-byte limit of {method}")]
    TooLarge {
        /// Declared body length.
        len: u32,
        /// Limit for this method and kind.
        max: u32,
        /// The method the frame was for.
        method: Method,
    },
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Body length in bytes (already checked against the method limit).
    pub len: u32,
    /// The RPC method.
    pub method: Method,
    /// Request, response or push.
    pub kind: FrameKind,
    /// Response status; `Status::Ok` on requests and pushes.
    pub status: Status,
}

impl FrameHeader {
    /// Parses and validates a header, including the size limit.
    pub fn parse(bytes: [u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let method_number = u16::from_be_bytes([bytes[4], bytes[5]]);
        let method = Method::from_u16(method_number).ok_or(FrameError::UnknownMethod(method_number))?;
        let kind = match bytes[6] {
            0 => FrameKind::Request,
            1 => FrameKind::Response,
            2 => FrameKind::Push,
            other => return Err(FrameError::UnknownKind(other)),
        };
        let status = match kind {
            FrameKind::Response => Status::from_u8(bytes[7]).ok_or(FrameError::UnknownStatus(bytes[7]))?,
            _ if bytes[7] != 0 => return Err(FrameError::StatusOnNonResponse(bytes[7])),
            _ => Status::Ok,
        };
        let max = match kind {
            FrameKind::Request | FrameKind::Push => method.max_request_len(),
            FrameKind::Response if status == Status::Ok => method.max_response_len(),
            // Error bodies are small whatever the method.
            FrameKind::Response => 64 * 1024,
        };
        if len > max {
            return Err(FrameError::TooLarge { len, max, method });
        }
        Ok(FrameHeader { len, method, kind, status })
    }

    /// Encodes the header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&self.len.to_be_bytes());
        out[4..6].copy_from_slice(&(self.method as u16).to_be_bytes());
        out[6] = self.kind as u8;
        out[7] = self.status as u8;
        out
    }
}

/// A whole frame: header fields plus body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RPC method.
    pub method: Method,
    /// Request, response or push.
    pub kind: FrameKind,
    /// Response status (`Ok` for requests and pushes).
    pub status: Status,
    /// The Protobuf body.
    pub body: Bytes,
}

impl Frame {
    /// A request frame.
    pub fn request(method: Method, body: Bytes) -> Frame {
        Frame { method, kind: FrameKind::Request, status: Status::Ok, body }
    }

    /// A response frame.
    pub fn response(method: Method, status: Status, body: Bytes) -> Frame {
        Frame { method, kind: FrameKind::Response, status, body }
    }

    /// A push frame.
    pub fn push(body: Bytes) -> Frame {
        Frame { method: Method::Push, kind: FrameKind::Push, status: Status::Ok, body }
    }

    /// The header this frame encodes to; fails if the body exceeds the limit.
    pub fn header(&self) -> Result<FrameHeader, FrameError> {
        let len = u32::try_from(self.body.len()).unwrap_or(u32::MAX);
        let header = FrameHeader { len, method: self.method, kind: self.kind, status: self.status };
        // Validate through the same path a receiver uses.
        FrameHeader::parse(header.to_bytes())
    }

    /// Appends the encoded frame to `out`; fails if the body exceeds the limit.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        let header = self.header()?;
        out.reserve(HEADER_LEN + self.body.len());
        out.put_slice(&header.to_bytes());
        out.put_slice(&self.body);
        Ok(())
    }

    /// Decodes one frame from the front of `buf`, consuming it. Returns
    /// `Ok(None)` (consuming nothing) while the frame is incomplete.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header_bytes) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut header_array = [0u8; HEADER_LEN];
        header_array.copy_from_slice(header_bytes);
        let header = FrameHeader::parse(header_array)?;
        let total = HEADER_LEN + header.len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(header.len as usize).freeze();
        Ok(Some(Frame { method: header.method, kind: header.kind, status: header.status, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(&mut out).expect("test frames are within limits");
        out.to_vec()
    }

    #[test]
    fn snapshot_request() {
        let frame = Frame::request(Method::SendMessage, Bytes::from_static(b"\x0a\x02hi"));
        assert_eq!(hex::encode(encode(&frame)), "00000004001700000a026869");
    }

    #[test]
    fn snapshot_error_response() {
        let frame = Frame::response(Method::SubmitCommit, Status::StaleEpoch, Bytes::from_static(b"\x18\x05"));
        assert_eq!(hex::encode(encode(&frame)), "00000002001501071805");
    }

    #[test]
    fn snapshot_push() {
        let frame = Frame::push(Bytes::new());
        assert_eq!(hex::encode(encode(&frame)), "0000000000280200");
    }

    #[test]
    fn incomplete_input_is_none_and_consumes_nothing() {
        let bytes = encode(&Frame::request(Method::Fetch, Bytes::from_static(b"abc")));
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(Frame::decode(&mut buf), Ok(None));
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        for len in [u32::MAX, Method::Login.max_request_len() + 1] {
            let mut header =
                FrameHeader { len: 0, method: Method::Login, kind: FrameKind::Request, status: Status::Ok }.to_bytes();
            header[..4].copy_from_slice(&len.to_be_bytes());
            // Only the header is present: the limit is checked before any body is awaited.
            let mut buf = BytesMut::from(&header[..]);
            assert!(matches!(Frame::decode(&mut buf), Err(FrameError::TooLarge { .. })));
        }
        let at_limit = Frame::request(Method::Login, Bytes::from(vec![0u8; Method::Login.max_request_len() as usize]));
        assert!(at_limit.header().is_ok());
        let over = Frame::request(Method::Login, Bytes::from(vec![0u8; Method::Login.max_request_len() as usize + 1]));
        assert!(matches!(over.header(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let check = |bytes: [u8; 8], expected: FrameError| {
            assert_eq!(FrameHeader::parse(bytes), Err(expected));
        };
        check([0, 0, 0, 0, 0, 99, 0, 0], FrameError::UnknownMethod(99));
        check([0, 0, 0, 0, 0, 1, 7, 0], FrameError::UnknownKind(7));
        check([0, 0, 0, 0, 0, 1, 1, 200], FrameError::UnknownStatus(200));
        check([0, 0, 0, 0, 0, 1, 0, 3], FrameError::StatusOnNonResponse(3));
    }

    fn any_method() -> impl Strategy<Value = Method> {
        proptest::sample::select(Method::ALL.to_vec())
    }

    fn any_status() -> impl Strategy<Value = Status> {
        (0u8..=10).prop_map(|b| Status::from_u8(b).expect("0..=10 are defined"))
    }

    proptest! {
        #[test]
        fn round_trip(method in any_method(), status in any_status(), body in proptest::collection::vec(any::<u8>(), 0..512), kind in 0u8..3) {
            let frame = match kind {
                0 => Frame::request(method, Bytes::from(body)),
                1 => Frame::response(method, status, Bytes::from(body)),
                _ => Frame::push(Bytes::from(body)),
            };
            prop_assume!(frame.header().is_ok());
            let mut buf = BytesMut::from(&encode(&frame)[..]);
            buf.extend_from_slice(b"next");
            let decoded = Frame::decode(&mut buf).expect("valid frame").expect("complete frame");
            prop_assert_eq!(decoded, frame);
            prop_assert_eq!(&buf[..], b"next");
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = Frame::decode(&mut buf);
        }
    }
}
