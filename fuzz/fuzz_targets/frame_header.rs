//! `FrameHeader::parse` on every 8-byte header: never panics, a parsed
//! header honours its method's size limit and re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quicprochat_proto::{FrameHeader, FrameKind, Status, HEADER_LEN};

fuzz_target!(|bytes: [u8; HEADER_LEN]| {
    let Ok(header) = FrameHeader::parse(bytes) else {
        return;
    };
    let max = match header.kind {
        FrameKind::Request | FrameKind::Push => header.method.max_request_len(),
        FrameKind::Response if header.status == Status::Ok => header.method.max_response_len(),
        FrameKind::Response => 64 * 1024,
    };
    assert!(header.len <= max, "{header:?} exceeds its limit {max}");
    assert!(header.len <= quicprochat_proto::method::MAX_FRAME_LEN);
    assert_eq!(header.to_bytes(), bytes);
});
